"""All-to-all(-v) algorithms, each a sequence of *exchanges* (phases of messages sent at once).

In one exchange a GPU posts all of its messages at once, in shift order (``(dst - src) mod n``
by position in the collective, the peer order NCCL uses for grouped point-to-point calls), and its
part of the exchange ends when its own messages and every message addressed to it have arrived.
A GPU starts its next exchange when its part of the previous one has ended, so peers that arrive
late delay exactly the GPUs waiting for their data.

* ``direct``: one exchange with every message (all pairs at once).
* ``pairwise``: ``n - 1`` exchanges; in round ``r`` GPU ``i`` sends to ``i + r`` and receives
  from ``i - r`` (positions mod ``n``), so every round is a permutation and waits for the previous.
* ``hierarchical`` (Tutel's 2DH, DeepSpeed-MoE's hierarchical all-to-all): first an intra-node
  exchange that regroups every GPU's data by destination local rank: GPU ``s`` sends to the GPU of
  its own node with the destination's local rank (its *proxy*) everything bound for GPUs of that
  local rank, its own node's included (which so arrive directly); then one inter-node exchange in
  which each proxy sends, per destination, the sum of its node's data for it. Each inter-node byte
  crosses the fabric once, and a GPU sends ``(local ranks - 1) + (nodes - 1)`` messages instead
  of ``G - 1``. With unevenly filled nodes the proxy for local rank ``l`` is member
  ``l mod (members)`` of the sending node.

On a network that serves messages in a fixed order (the port model), messages are announced
before the run with the order key ``(ordinal, exchange, shift, src, dst, chunk)``. Every GPU pays
the collective's start cost (its stack's launch or kernel) once, before its first exchange; every
message carries its stack's cost (:class:`~secmoe_sim.plan.communication.MessageCost`) by size and
link class.
"""

from __future__ import annotations

import numpy as np
import simpy

from secmoe_sim.engine.network import Network
from secmoe_sim.engine.ordering import lexicographic_order, tallied_by_last_occurrence
from secmoe_sim.plan.communication import CollectiveCost
from secmoe_sim.plan.steps import AllToAll, Messages
from secmoe_sim.plan.topology import Topology
from secmoe_sim.spec.hardware import Cluster

FEW_ARRIVALS = 16  # arrivals at one instant counted one by one rather than in arrays


class Exchange:
    """One phase of an all-to-all: messages posted at once, per-GPU completion."""

    def __init__(
        self,
        env: simpy.Environment,
        network: Network,
        label: str,
        messages: Messages,
        shift: np.ndarray,
        key: tuple,
        topology: Topology,
        cost: CollectiveCost,
    ):
        self.env, self.network, self.label = env, network, label
        src, dst, size = messages.src, messages.dst, messages.payload_bytes
        pair = src * (max(int(dst.max(initial=0)), int(src.max(initial=0))) + 1) + dst
        by_pair = np.argsort(pair, kind="stable")
        first = np.ones(src.shape[0], dtype=bool)
        first[1:] = pair[by_pair][1:] != pair[by_pair][:-1]
        chunk = np.empty(src.shape[0], dtype=np.int64)
        chunk[by_pair] = np.arange(src.shape[0]) - np.maximum.accumulate(np.where(first, np.arange(src.shape[0]), 0))
        order = lexicographic_order(src, shift, dst, chunk)
        self._key = key
        self._src, self._dst, self._size = src[order], dst[order], size[order]
        self._shift, self._chunk = shift[order], chunk[order]
        self._costs = cost.messages(self._size, topology.link_classes(self._src, self._dst))
        if network.ordered:
            for a, b, order_key in zip(self._src.tolist(), self._dst.tolist(), self._orders(0, src.shape[0])):
                network.expect(a, b, order_key)
        senders, starts = np.unique(self._src, return_index=True)
        ends = np.r_[starts[1:], src.shape[0]]
        self._sends = {gpu: (lo, hi) for gpu, lo, hi in zip(senders.tolist(), starts.tolist(), ends.tolist())}
        # messages not yet arrived that each GPU sends or receives; its part ends when none are left
        self._outstanding: list[int] = np.bincount(np.concatenate([src, dst]), minlength=topology.cluster.num_gpus).tolist()
        self._waiting: dict[int, simpy.Event] = {}

    def _orders(self, lo: int, hi: int) -> list[tuple]:
        """Order keys of messages ``lo`` to ``hi`` for a network that ranks messages (built when needed: a
        million of them take room)."""
        key = self._key
        rows = zip(self._shift[lo:hi].tolist(), self._src[lo:hi].tolist(), self._dst[lo:hi].tolist(), self._chunk[lo:hi].tolist())
        return [key + row for row in rows]

    def participate(self, gpu: int):
        """Post ``gpu``'s messages; return when they and every message to ``gpu`` have arrived."""
        lo, hi = self._sends.get(gpu, (0, 0))
        if hi > lo:
            orders = self._orders(lo, hi) if self.network.ordered else None
            sources = np.full(hi - lo, gpu, dtype=np.int64)
            window = slice(lo, hi)
            self.network.send_many(
                sources,
                self._dst[window],
                self._size[window],
                self.label,
                orders,
                self._costs.take(window),
                self._delivered,
                np.arange(lo, hi),
            )
        if self._outstanding[gpu]:
            self._waiting[gpu] = self.env.event()
            yield self._waiting[gpu]

    def _delivered(self, arrived: np.ndarray) -> None:
        """Messages ``arrived`` (their positions) have arrived: one less outstanding message for each end; the GPUs
        left with none go on, in the order of the message that was their last."""
        outstanding, waiting = self._outstanding, self._waiting
        if arrived.shape[0] <= FEW_ARRIVALS:  # one by one: cheaper than array set-up for a handful
            for pair in zip(self._src[arrived].tolist(), self._dst[arrived].tolist()):
                for gpu in pair:
                    outstanding[gpu] -= 1
                    if outstanding[gpu] == 0 and gpu in waiting:
                        waiting.pop(gpu).succeed()
            return
        endpoints = np.column_stack([self._src[arrived], self._dst[arrived]]).ravel()  # in message order
        for gpu, hits in zip(*(column.tolist() for column in tallied_by_last_occurrence(endpoints))):
            outstanding[gpu] -= hits
            if outstanding[gpu] == 0 and gpu in waiting:
                waiting.pop(gpu).succeed()


class AllToAllRun:
    """An all-to-all as a sequence of exchanges; a GPU pays the start cost, then goes through them in order."""

    def __init__(self, env: simpy.Environment, exchanges: list[Exchange], start_s: float):
        self.env, self.exchanges, self.start_s = env, exchanges, start_s

    def participate(self, gpu: int):
        if self.start_s > 0:
            yield self.env.timeout(self.start_s)
        for exchange in self.exchanges:
            yield from exchange.participate(gpu)


def _positions(collective: AllToAll) -> np.ndarray:
    """``position[gpu]``: index of ``gpu`` in the collective's GPU list."""
    gpus = np.asarray(collective.gpus, dtype=np.int64)
    position = np.full(int(gpus.max()) + 1, -1, dtype=np.int64)
    position[gpus] = np.arange(gpus.shape[0])
    return position


def _shift(collective: AllToAll, messages: Messages) -> np.ndarray:
    position = _positions(collective)
    return (position[messages.dst] - position[messages.src]) % len(collective.gpus)


def _aggregated(src: np.ndarray, dst: np.ndarray, size: np.ndarray) -> Messages:
    """One message per (src, dst) pair carrying the pair's total bytes; pairs with src == dst dropped."""
    moving = src != dst
    src, dst, size = src[moving], dst[moving], size[moving]
    if src.shape[0] == 0:
        return Messages(src=src, dst=dst, payload_bytes=size)
    pairs, inverse = np.unique(np.stack([src, dst], axis=1), axis=0, return_inverse=True)
    totals = np.bincount(inverse.ravel(), weights=size, minlength=pairs.shape[0])
    return Messages(src=pairs[:, 0].copy(), dst=pairs[:, 1].copy(), payload_bytes=totals)


def hierarchical_phases(collective: AllToAll, cluster: Cluster) -> tuple[Messages, Messages]:
    """The intra-node and the inter-node messages of the hierarchical algorithm."""
    gpus = np.asarray(collective.gpus, dtype=np.int64)
    nodes, node_index = np.unique(gpus // cluster.gpus_per_node, return_inverse=True)
    sizes = np.bincount(node_index, minlength=nodes.shape[0])
    members = np.zeros((nodes.shape[0], int(sizes.max())), dtype=np.int64)
    local = np.zeros(gpus.shape[0], dtype=np.int64)
    filled = np.zeros(nodes.shape[0], dtype=np.int64)
    for index, node in enumerate(node_index.tolist()):
        members[node, filled[node]] = gpus[index]
        local[index] = filled[node]
        filled[node] += 1
    position = _positions(collective)
    messages = collective.messages
    src_node = node_index[position[messages.src]]
    dst_node = node_index[position[messages.dst]]
    proxy = members[src_node, local[position[messages.dst]] % sizes[src_node]]
    intra = _aggregated(messages.src, proxy, messages.payload_bytes)
    crossing = src_node != dst_node
    inter = _aggregated(proxy[crossing], messages.dst[crossing], messages.payload_bytes[crossing])
    return intra, inter


def start_all_to_all(
    env: simpy.Environment,
    network: Network,
    collective: AllToAll,
    ordinal: int,
    topology: Topology,
    algorithm: str,
    cost: CollectiveCost,
) -> AllToAllRun:
    """The run-time state of one all-to-all with ``algorithm`` at ``cost``, its messages announced to the network."""
    label = collective.name
    messages = collective.messages

    def exchange(part: Messages, shift: np.ndarray, index: int) -> Exchange:
        return Exchange(env, network, label, part, shift, (ordinal, index), topology, cost)

    if algorithm == "direct":
        return AllToAllRun(env, [exchange(messages, _shift(collective, messages), 0)], cost.start_s)
    if algorithm == "pairwise":
        shift = _shift(collective, messages)
        rounds = []
        for round_index in range(1, len(collective.gpus)):
            chosen = shift == round_index
            part = Messages(src=messages.src[chosen], dst=messages.dst[chosen], payload_bytes=messages.payload_bytes[chosen])
            rounds.append(exchange(part, shift[chosen], round_index))
        return AllToAllRun(env, rounds, cost.start_s)
    if algorithm == "hierarchical":
        phases = hierarchical_phases(collective, topology.cluster)
        return AllToAllRun(
            env, [exchange(phase, _shift(collective, phase), index) for index, phase in enumerate(phases)], cost.start_s
        )
    raise ValueError(f"unknown all-to-all algorithm {algorithm!r}")
