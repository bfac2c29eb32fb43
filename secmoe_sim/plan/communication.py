"""What a collective and each of its messages cost in software, by the stack that moves them.

Pure functions of the stack's parameters (:mod:`secmoe_sim.spec.communication`), the collective's
kind and size and the link class its messages cross; the engine applies them
(:mod:`secmoe_sim.engine.collectives`). A collective costs:

* ``start_s``, paid by every participant before it posts anything: the NCCL protocol's launch
  latency, or the GPU-initiated kernel plus its per-peer set-up (``ceil(peers / parallel_peers)``
  rounds of ``per_peer``); nothing for a host-staged library;
* per message: ``post_s`` at the sender, serial (the host-staged ``message_overhead``); a latency
  floor (the NCCL protocol's step latency, end to end: the fabric's own latency still applies and
  the larger of the two is paid); and ``wire_factor``, bytes on the wire per payload byte,
  ``1 / (bandwidth_fraction x efficiency(size))``, so a message that achieves 80% of a link takes
  1.25 times as long as its bytes alone (over the network, NCCL collectives of one rank per node
  also pay the stack's ``single_rank_node_bandwidth``).

NCCL's all-to-all (grouped send/receive) prices each message by NCCL's point-to-point rule: the LL
protocol up to the stack's ``p2p_ll_threshold`` bytes, Simple above (its start: LL's launch when every
message is small, Simple's otherwise). For rings the protocol is chosen per collective by NCCL's own
rule: the lowest predicted time,
``launch + steps x step_latency + moved_bytes / (bandwidth x bandwidth_fraction x efficiency)``,
with ``steps`` = ``2 (n - 1)`` for an all-reduce, ``n - 1`` for an all-gather or reduce-scatter and 1
for an all-to-all (every peer at once, as NCCL's grouped send/receive does; used where the stack
lacks LL or Simple).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from secmoe_sim.plan.steps import AllGather, AllReduce, AllToAll, Collective, ReduceScatter
from secmoe_sim.plan.topology import Topology
from secmoe_sim.spec.communication import (
    CollectiveKind,
    Communication,
    EfficiencyKnot,
    GpuInitiatedStack,
    HostStagedStack,
    LinkClass,
    NcclStack,
    Protocol,
    Stack,
)


@dataclass(frozen=True)
class MessageCost:
    """What one message pays in software; see the module docstring."""

    post_s: float = 0.0
    latency_floor_s: float = 0.0
    wire_factor: float = 1.0


FREE = MessageCost()  # no software cost: the fabric alone


class MessageCosts(NamedTuple):
    """The :class:`MessageCost` of many messages, field by field in arrays (one entry per message)."""

    post_s: np.ndarray
    latency_floor_s: np.ndarray
    wire_factor: np.ndarray

    def take(self, chosen: np.ndarray | slice) -> MessageCosts:
        """The costs of the messages ``chosen`` (indices, a mask or a slice)."""
        return MessageCosts(self.post_s[chosen], self.latency_floor_s[chosen], self.wire_factor[chosen])

    def of(self, index: int) -> MessageCost:
        """The cost of message ``index`` alone."""
        return MessageCost(float(self.post_s[index]), float(self.latency_floor_s[index]), float(self.wire_factor[index]))


@dataclass(frozen=True)
class CollectiveCost:
    """The software cost of one collective: its start, and how to price each of its messages."""

    stack: Stack
    start_s: float
    protocol: Protocol | None = None
    kind: CollectiveKind = "all_to_all"
    network_share: float = 1.0  # of the network bandwidth, for an NCCL collective of one rank per node
    small_message_protocol: Protocol | None = None  # NCCL all-to-all: the protocol of messages up to ...
    small_message_bytes: float = 0.0  # ... this many bytes, ``protocol`` above (without one: ``protocol`` for all)

    @property
    def protocol_name(self) -> str:
        return self.protocol.name if self.protocol is not None else self.stack.kind

    def message(self, payload_bytes: float, link_class: LinkClass) -> MessageCost:
        """The cost of one message of ``payload_bytes`` over ``link_class``."""
        return self.messages(np.array([payload_bytes], dtype=float), np.array([link_class])).of(0)

    def messages(self, payload_bytes: np.ndarray, link_classes: np.ndarray) -> MessageCosts:
        """The cost of each message of an exchange, in arrays (the efficiency curve read once per distinct
        size of each class)."""
        count = payload_bytes.shape[0]
        post_s, floor_s, wire_factor = np.zeros(count), np.zeros(count), np.ones(count)
        if self.small_message_protocol is None:
            small = np.zeros(count, dtype=bool)
        else:
            small = payload_bytes <= self.small_message_bytes
        for link_class in np.unique(link_classes).tolist():
            for is_small, protocol in ((False, self.protocol), (True, self.small_message_protocol)):
                chosen = np.flatnonzero((link_classes == link_class) & (small == is_small))
                if chosen.size == 0:
                    continue
                sizes, inverse = np.unique(payload_bytes[chosen], return_inverse=True)
                post_s[chosen], floor_s[chosen] = self._post_s(link_class), _floor_s(protocol, link_class)
                achieved = efficiencies(self.stack.efficiency.get(link_class), sizes)
                wire_factor[chosen] = (1.0 / (self._fraction(protocol, link_class) * achieved))[inverse]
        return MessageCosts(post_s, floor_s, wire_factor)

    def _fraction(self, protocol: Protocol | None, link_class: LinkClass) -> float:
        """The share of the link's bandwidth ``protocol`` moves data at, before the size's efficiency."""
        fraction = protocol.bandwidth_fraction if protocol is not None else 1.0
        return fraction * self.network_share if link_class == "network" else fraction

    def _post_s(self, link_class: LinkClass) -> float:
        """What the sender spends posting each message: a host-staged library's cost, NCCL's per peer of an all-to-all."""
        if isinstance(self.stack, HostStagedStack):
            return self.stack.message_overhead
        if isinstance(self.stack, NcclStack) and self.kind == "all_to_all":
            return self.stack.peer_overhead.get(link_class, 0.0)
        return 0.0


def _floor_s(protocol: Protocol | None, link_class: LinkClass) -> float:
    """A message's latency floor: ``protocol``'s step latency over ``link_class`` (none without a protocol)."""
    return protocol.step_latency.get(link_class, 0.0) if protocol is not None else 0.0


def efficiency(curve: list[EfficiencyKnot] | None, size_bytes: float) -> float:
    """The achieved fraction of a link for a message of ``size_bytes``: log-interpolated, clamped; 1 without a curve."""
    return float(efficiencies(curve, np.array([size_bytes]))[0])


def efficiencies(curve: list[EfficiencyKnot] | None, sizes_bytes: np.ndarray) -> np.ndarray:
    """:func:`efficiency` of every size of ``sizes_bytes``."""
    if not curve:
        return np.ones(sizes_bytes.shape[0])
    knots = np.log([knot.size for knot in curve])
    values = [knot.efficiency for knot in curve]
    log_sizes = np.array([math.log(max(size, 1.0)) for size in sizes_bytes.tolist()])  # math.log, as for one size
    return np.interp(log_sizes, knots, values)


def ring_steps(kind: CollectiveKind, ranks: int) -> int:
    """Steps of the collective in NCCL's model: all-reduce 2(n-1), all-gather and reduce-scatter n-1, all-to-all 1."""
    if kind == "all_reduce":
        return 2 * (ranks - 1)
    if kind in ("all_gather", "reduce_scatter"):
        return ranks - 1
    return 1


@dataclass(frozen=True)
class Shape:
    """What a collective's cost depends on: its kind and size, and the hops of its messages.

    ``link_class`` and ``bandwidth_bytes_per_s`` are the slowest hop's (one channel's); a ring that
    crosses nodes has ``hop_share`` of its hops on that class and the rest on ``other_class``.
    ``single_rank_nodes``: the collective spans nodes that hold one of its ranks each.
    """

    kind: CollectiveKind
    ranks: int
    bytes_per_rank: float
    link_class: LinkClass
    bandwidth_bytes_per_s: float
    channels: int = 1
    hop_share: float = 1.0
    other_class: LinkClass | None = None
    single_rank_nodes: bool = False  # every node holds one rank: its GPU sends and receives through one NIC
    largest_message_bytes: float | None = None  # an all-to-all's largest message; absent: an even split

    def largest_message(self) -> float:
        """An all-to-all's largest message: as given, else ``bytes_per_rank`` split evenly over the peers."""
        if self.largest_message_bytes is not None:
            return self.largest_message_bytes
        return moved_bytes(self.kind, self.ranks, self.bytes_per_rank)[1]

    def latency_steps(self) -> dict[LinkClass, float]:
        """Steps on the critical chain per link class: a ring's chain of hops, or one step of an all-to-all."""
        steps = float(ring_steps(self.kind, self.ranks))
        if self.other_class is None or self.hop_share >= 1.0:
            return {self.link_class: steps}
        return {self.link_class: steps * self.hop_share, self.other_class: steps * (1.0 - self.hop_share)}


def nccl_predicted_s(protocol: Protocol, stack: NcclStack, shape: Shape) -> float:
    """NCCL's predicted time of the collective with ``protocol``: launch, the step latency of every step on
    the critical chain by its link class, and the moved bytes at the protocol's share of the channels'
    bandwidth (inf where the protocol is not used on a class the collective crosses)."""
    steps = shape.latency_steps()
    if any(link_class not in protocol.step_latency for link_class in steps):
        return math.inf
    moved, message = moved_bytes(shape.kind, shape.ranks, shape.bytes_per_rank)
    message /= shape.channels
    curve = stack.efficiency.get(shape.link_class)
    share = network_share(stack, shape) if shape.link_class == "network" else 1.0
    rate = shape.channels * shape.bandwidth_bytes_per_s * protocol.bandwidth_fraction * share * efficiency(curve, message)
    latency_s = sum(count * protocol.step_latency[link_class] for link_class, count in steps.items())
    return protocol.launch + latency_s + moved / rate


def network_share(stack: NcclStack, shape: Shape) -> float:
    """The share of the network bandwidth an NCCL collective of ``shape`` reaches: the stack's
    ``single_rank_node_bandwidth`` when each of its nodes holds one rank, else all of it."""
    return stack.single_rank_node_bandwidth if shape.single_rank_nodes else 1.0


def moved_bytes(kind: CollectiveKind, ranks: int, bytes_per_rank: float) -> tuple[float, float]:
    """The bytes a rank sends in the collective, and the size of one of its messages: an all-to-all sends
    ``bytes_per_rank`` in ``ranks - 1`` messages; a ring moves ``(ranks - 1) / ranks`` of the buffer (twice
    for an all-reduce) in chunks of ``buffer / ranks``."""
    if kind == "all_to_all":
        return bytes_per_rank, bytes_per_rank / max(ranks - 1, 1)
    steps = ring_steps(kind, ranks)
    return bytes_per_rank * steps / ranks, bytes_per_rank / ranks


def collective_cost(stack: Stack, shape: Shape) -> CollectiveCost:
    """The cost of one collective of ``shape`` moved by ``stack``: NCCL's protocol by lowest predicted
    time, a GPU-initiated kernel's start, or nothing up front for a host-staged library."""
    kind = shape.kind
    if isinstance(stack, NcclStack):
        named = {protocol.name: protocol for protocol in stack.protocols}
        classes = shape.latency_steps()
        covered = "LL" in named and "Simple" in named and all(c in named["LL"].step_latency for c in classes)
        if kind == "all_to_all" and covered:  # NCCL's point-to-point rule
            small, large = named["LL"], named["Simple"]
            start = small if shape.largest_message() <= stack.p2p_ll_threshold else large
            return CollectiveCost(
                stack=stack,
                start_s=start.launch,
                protocol=large,
                kind=kind,
                network_share=network_share(stack, shape),
                small_message_protocol=small,
                small_message_bytes=stack.p2p_ll_threshold,
            )
        protocol = min(stack.protocols, key=lambda p: nccl_predicted_s(p, stack, shape))
        if not math.isfinite(nccl_predicted_s(protocol, stack, shape)):  # no protocol covers the classes: the last
            protocol = stack.protocols[-1]
        return CollectiveCost(
            stack=stack, start_s=protocol.launch, protocol=protocol, kind=kind, network_share=network_share(stack, shape)
        )
    if isinstance(stack, GpuInitiatedStack):
        peers = max(shape.ranks - 1, 0)
        rounds = math.ceil(peers / stack.parallel_peers) if peers else 0
        return CollectiveCost(stack=stack, start_s=stack.kernel + rounds * stack.per_peer, kind=kind)
    return CollectiveCost(stack=stack, start_s=0.0, kind=kind)


def collective_kind(collective: Collective) -> CollectiveKind:
    """The kind a stack is chosen by: ``all_to_all``, ``all_reduce``, ``all_gather`` or ``reduce_scatter``."""
    if isinstance(collective, AllToAll):
        return "all_to_all"
    if isinstance(collective, AllReduce):
        return "all_reduce"
    if isinstance(collective, AllGather):
        return "all_gather"
    assert isinstance(collective, ReduceScatter)
    return "reduce_scatter"


def ring_channels(gpus: tuple[int, ...], topology: Topology) -> list[tuple[int, ...]]:
    """The rings a ring collective runs on, each carrying an equal part of the buffer.

    Inside one node: one ring, in the given order. Across nodes with the same number of members on
    each: one ring per member, NCCL's channels: ring ``r`` visits the nodes in order and each node's
    members rotated by ``r``, so it enters a node at its ``r``-th member and leaves at the one
    before, and every member's NIC sends for one ring and receives for one. Unevenly filled nodes:
    one ring.
    """
    nodes: dict[int, list[int]] = {}
    for gpu in gpus:
        nodes.setdefault(topology.cluster.node_of(gpu), []).append(gpu)
    sizes = {len(members) for members in nodes.values()}
    if len(nodes) == 1 or len(sizes) != 1:
        return [gpus]
    width = sizes.pop()
    return [tuple(gpu for members in nodes.values() for gpu in members[r:] + members[:r]) for r in range(width)]


def price_collective(communication: Communication, collective: Collective, topology: Topology) -> CollectiveCost:
    """The cost of one collective of a plan with the stack ``communication`` names for its kind.

    The bytes per rank are the largest any member sends (all-to-all) or the buffer (rings); the link
    class and bandwidth of NCCL's protocol choice are those of the collective's slowest hop: the
    network when its GPUs span nodes, else the node's fabric.
    """
    kind = collective_kind(collective)
    gpus = collective.gpus
    if isinstance(collective, AllToAll):
        sent = (
            np.bincount(collective.messages.src, weights=collective.messages.payload_bytes)
            if len(collective.messages)
            else np.zeros(1)
        )
        bytes_per_rank = float(sent.max())
    else:
        bytes_per_rank = collective.payload_bytes
    link_class, bandwidth = topology.slowest_hop(gpus)
    nodes = len({topology.cluster.node_of(gpu) for gpu in gpus})
    shape = Shape(kind, len(gpus), bytes_per_rank, link_class, bandwidth, single_rank_nodes=nodes > 1 and nodes == len(gpus))
    if isinstance(collective, AllToAll):
        shape = replace(shape, largest_message_bytes=float(collective.messages.payload_bytes.max(initial=0.0)))
    else:
        rings = ring_channels(gpus, topology)
        if nodes > 1:  # each ring crosses into every node once: that share of its hops is on the network
            shape = replace(shape, channels=len(rings), hop_share=nodes / len(gpus), other_class=topology.intra_class)
    return collective_cost(communication.stack_for(kind), shape)


def one_message_s(stack: Stack, topology: Topology, src: int, dst: int, payload_bytes: float = 0.0) -> float:
    """Time of a two-rank all-to-all of one uncontended message of ``payload_bytes`` from ``src`` to ``dst``:
    the collective's start, the message's posting, the route's latency (raised to the stack's floor) and
    the wire bytes over each stage."""
    link_class, bandwidth = topology.slowest_hop((src, dst))
    cost = collective_cost(
        stack, Shape("all_to_all", 2, payload_bytes, link_class, bandwidth, largest_message_bytes=payload_bytes)
    )
    message = cost.message(payload_bytes, link_class)
    stages = topology.route(src, dst)
    latency_s = max(sum(stage.latency_s for stage in stages), message.latency_floor_s)
    wire_s = sum(payload_bytes * message.wire_factor / stage.bandwidth_bytes_per_s for stage in stages)
    return cost.start_s + message.post_s + latency_s + wire_s
