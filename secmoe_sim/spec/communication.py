"""The software that moves a collective's bytes: which communication stack, and what it costs.

The network (:mod:`secmoe_sim.engine.network`) decides how concurrent messages share links; the
*stack* decides what each collective and each message costs in software, and how much of a link's
bandwidth a message of a given size achieves. Three documented models (docs/model.md, section 4.2):

* ``nccl``: a collective starts after its protocol's launch latency; every message (a ring step, a
  peer of an all-to-all) pays the protocol's step latency, end to end (the fabric's own latency is
  its floor), and moves its bytes at ``bandwidth_fraction x efficiency(size)`` of the link. Of the
  protocols (LL, LL128, Simple) the one with the lowest predicted time is chosen per collective,
  the rule NCCL's own tuning model applies; an all-to-all (NCCL's grouped send/receive) instead takes
  LL for every message of at most ``p2p_ll_threshold`` bytes and Simple for the others, as NCCL's
  point-to-point operations do (they never use LL128). A collective whose nodes hold one rank each
  moves its network bytes at ``single_rank_node_bandwidth`` of that (the GPU sends and receives
  through one NIC).
* ``gpu_initiated``: one kernel issues to every peer at once (NVSHMEM / IBGDA style dispatch): a
  fixed ``kernel`` cost per collective, a ``per_peer`` cost paid in parallel (``parallel_peers`` peers
  at a time), data at ``efficiency(size)`` of the link.
* ``host_staged``: a CPU-proxied library (gloo, MPI over TCP): every message pays
  ``message_overhead`` serially at its sender, then the fabric's latency, data at ``efficiency``.

Efficiency curves are per link class (``nvswitch``, ``full_mesh``, ``pcie``, ``network``: the fabric a
message crosses; ``network`` whenever it leaves the node): the fraction of the link's bandwidth a
message of ``size`` bytes achieves, interpolated in log size and clamped at both ends; a class
without a curve runs at 1. A scenario names a default stack and may name another per collective
kind or per architecture entry.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field, model_validator

from secmoe_sim.spec.base import FieldIssue, Name, StrictModel
from secmoe_sim.spec.units import SIZE_UNITS, Duration, Size, SizeOrZero

LinkClass = Literal["nvswitch", "full_mesh", "pcie", "network"]
LINK_CLASSES: tuple[LinkClass, ...] = ("nvswitch", "full_mesh", "pcie", "network")
CollectiveKind = Literal["all_to_all", "all_reduce", "all_gather", "reduce_scatter"]
COLLECTIVE_KINDS: tuple[CollectiveKind, ...] = get_args(CollectiveKind)
STACK_SLOTS = ("default", *COLLECTIVE_KINDS)  # the fields of a communication section that hold one stack each
MAX_KNOTS = 64
# NCCL's tuning model: "if ppn < 2, then we are sending/receiving at the same GPU through the NIC, apply
# some bw discount" (NVIDIA/nccl src/graph/tuning.cc, ppn = ranks per node): its LL128 rings get 0.7
# there instead of 0.92. This model takes 0.7 as the share for every protocol (the fidelity table's
# one-rank-per-node cases are its check, docs/fidelity.md).
SINGLE_RANK_NODE_BANDWIDTH = 0.7
# NCCL's point-to-point operations (send/receive, and so its all-to-all) take LL for a peer's message
# of at most NCCL_P2P_LL_THRESHOLD bytes (16384 by default) and Simple above it, never LL128
# (NVIDIA/nccl src/enqueue.cc: ``NCCL_PARAM(P2pLLThreshold, "P2P_LL_THRESHOLD", 16384)``). Later releases
# compare a peer's bytes with the threshold times the channels its operation uses, so a message of a few
# times 16 KiB may still go by LL there; this model keeps the per-message threshold.
P2P_LL_THRESHOLD_BYTES = 16 * SIZE_UNITS["KiB"]


class EfficiencyKnot(StrictModel):
    """The fraction of a link's bandwidth that a message of ``size`` bytes achieves."""

    size: Size = Field(description="message size, bytes")
    efficiency: float = Field(gt=0, le=1, description="achieved / link bandwidth")


EfficiencyCurve = Annotated[list[EfficiencyKnot], Field(min_length=1, max_length=MAX_KNOTS)]


class _Curves(StrictModel):
    efficiency: dict[LinkClass, EfficiencyCurve] = Field(
        default_factory=dict,
        description="per link class: efficiency against message size (log-interpolated, clamped); absent classes run at 1",
    )

    @model_validator(mode="after")
    def _curves_sorted(self):
        for link_class, curve in self.efficiency.items():
            sizes = [knot.size for knot in curve]
            if sizes != sorted(sizes) or len(set(sizes)) != len(sizes):
                raise FieldIssue(("efficiency", link_class), "knots must have strictly increasing sizes")
        return self


class Protocol(StrictModel):
    """One NCCL protocol: its launch latency, its per-step latency per link class, its bandwidth share."""

    name: Name
    launch: Duration = Field(description="latency of starting a collective with this protocol (NCCL's baseLat)")
    step_latency: dict[LinkClass, Duration] = Field(
        min_length=1,
        description="end-to-end latency of one step (a ring hop, a peer) per link class (NCCL's hwLat); the "
        "protocol is not used on a class it has no entry for",
    )
    bandwidth_fraction: float = Field(gt=0, le=1, description="share of the link's achievable bandwidth the protocol moves")


def nccl_protocols() -> list[Protocol]:
    """NCCL's ring tuning model as its own source states it (NVIDIA/nccl ``src/graph/tuning.cc``: ring
    ``baseLat`` and ``hwLat`` per protocol and hardware type; LL moves data at 1/4 of the bus bandwidth,
    LL128 at 0.92 and only on NVLink)."""
    nvlink: tuple[LinkClass, ...] = ("nvswitch", "full_mesh")
    return [
        Protocol(
            name="LL",
            launch=3.6e-6,
            bandwidth_fraction=0.25,
            step_latency={**dict.fromkeys(nvlink, 0.47e-6), "pcie": 1.0e-6, "network": 2.7e-6},
        ),
        Protocol(
            name="LL128",
            launch=10.0e-6,
            bandwidth_fraction=0.92,
            step_latency={**dict.fromkeys(nvlink, 1.9e-6), "network": 4.0e-6},
        ),
        Protocol(
            name="Simple",
            launch=8.4e-6,
            bandwidth_fraction=1.0,
            step_latency={**dict.fromkeys(nvlink, 3.4e-6), "pcie": 5.7e-6, "network": 9.6e-6},
        ),
    ]


class NcclStack(_Curves):
    """NCCL (or RCCL): protocol chosen per collective by predicted time; see the module docstring."""

    kind: Literal["nccl"]
    protocols: list[Protocol] = Field(
        default_factory=nccl_protocols,
        min_length=1,
        max_length=8,
        description="the protocols NCCL may choose from; absent: LL, LL128 and Simple as NCCL's tuning model states them",
    )
    peer_overhead: dict[LinkClass, Duration] = Field(
        default_factory=dict,
        description="all-to-all only: cost per peer of a grouped send/receive over each link class, paid serially "
        "at the sender (network peers are served by NCCL's CPU proxy one after another); absent classes: 0",
    )
    single_rank_node_bandwidth: float = Field(
        default=SINGLE_RANK_NODE_BANDWIDTH,
        gt=0,
        le=1,
        description="share of the network bandwidth a collective reaches when its nodes hold one rank each (that "
        "GPU sends and receives through the same NIC), for every protocol; 0.7 by default, the share NCCL's tuning "
        "model gives its LL128 rings there",
    )
    p2p_ll_threshold: SizeOrZero = Field(
        default=P2P_LL_THRESHOLD_BYTES,
        description="all-to-all only: a message of at most this many bytes goes by the protocol named LL, a larger "
        "one by Simple (NCCL's NCCL_P2P_LL_THRESHOLD, 16 KiB by default; 0: Simple for every non-empty message); a "
        "stack without both protocols chooses by predicted time as for rings",
    )


class GpuInitiatedStack(_Curves):
    """A dispatch kernel that writes to every peer itself (DeepEP, NVSHMEM/IBGDA style)."""

    kind: Literal["gpu_initiated"]
    kernel: Duration = Field(description="fixed cost of the kernel, once per collective")
    per_peer: Duration = Field(description="cost per peer (address set-up, signalling), paid in parallel")
    parallel_peers: int = Field(default=1024, ge=1, le=2**20, description="peers the kernel serves at once (its SMs or warps)")


class HostStagedStack(_Curves):
    """A CPU-proxied library: every message pays ``message_overhead`` serially at its sender."""

    kind: Literal["host_staged"]
    message_overhead: Duration = Field(description="per-message software cost at the sender, seconds, serial")


Stack = Annotated[NcclStack | GpuInitiatedStack | HostStagedStack, Field(discriminator="kind")]


class Communication(StrictModel):
    """Which stack moves which collective: per architecture entry, else per collective kind, else the default."""

    default: Stack = Field(
        default_factory=lambda: NcclStack(kind="nccl"), description="the stack of every collective not named below"
    )
    all_to_all: Stack | None = None
    all_reduce: Stack | None = None
    all_gather: Stack | None = None
    reduce_scatter: Stack | None = None
    architectures: dict[str, Stack] = Field(
        default_factory=dict, description="entry label -> the stack of all its collectives (wins over the kinds above)"
    )

    def for_entry(self, label: str) -> Communication:
        """The stacks of the architecture entry ``label``: its own stack for every kind, if it names one."""
        if label in self.architectures:
            return Communication(default=self.architectures[label])
        return self.model_copy(update={"architectures": {}})

    def stack_for(self, kind: CollectiveKind) -> Stack:
        """The stack of a collective of ``kind`` (the entry-level choice is :meth:`for_entry`)."""
        named = getattr(self, kind)
        return named if named is not None else self.default

    def scaled(self, factor: float) -> Communication:
        """Every software cost (launch, step latency, per-peer and per-message costs) times ``factor``:
        the sensitivity of an answer to the stack."""

        def scale(stack: Stack) -> Stack:
            if isinstance(stack, NcclStack):
                protocols = [
                    p.model_copy(
                        update={"launch": p.launch * factor, "step_latency": {k: v * factor for k, v in p.step_latency.items()}}
                    )
                    for p in stack.protocols
                ]
                peers = {link_class: cost * factor for link_class, cost in stack.peer_overhead.items()}
                return stack.model_copy(update={"protocols": protocols, "peer_overhead": peers})
            if isinstance(stack, GpuInitiatedStack):
                return stack.model_copy(update={"kernel": stack.kernel * factor, "per_peer": stack.per_peer * factor})
            return stack.model_copy(update={"message_overhead": stack.message_overhead * factor})

        update: dict[str, object] = {"default": scale(self.default)}
        for kind in COLLECTIVE_KINDS:
            named = getattr(self, kind)
            update[kind] = scale(named) if named is not None else None
        update["architectures"] = {label: scale(stack) for label, stack in self.architectures.items()}
        return self.model_copy(update=update)
