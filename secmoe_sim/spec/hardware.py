"""Hardware descriptions: GPUs, intra-node and inter-node fabrics, the cluster.

All models are strict (unknown fields are errors) and frozen. Quantities are parsed by the
unit-checked types of :mod:`secmoe_sim.spec.units` and held in SI base units. A link bandwidth is always
per direction: a datasheet's "900 GB/s total" NVLink figure is 450 GB/s per direction.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import Field, model_validator

from secmoe_sim.spec.base import FieldIssue, Name, StrictModel
from secmoe_sim.spec.communication import Communication, HostStagedStack
from secmoe_sim.spec.kernel_efficiency import AttentionShapeEfficiency, GemmShapeEfficiency
from secmoe_sim.spec.units import Bandwidth, Duration, FlopRate, Size

Dtype = Literal["fp32", "tf32", "bf16", "fp16", "fp8"]

MAX_NODES = 4096  # bounds that keep a mistyped number from asking for an endless simulation
MAX_GPUS_PER_NODE = 72  # one NVLink domain: a GB200 NVL72 rack


class EfficiencyPoint(StrictModel):
    """Fraction of peak FLOP/s reached by a kernel of a given size (FLOPs per kernel)."""

    flops: float = Field(gt=0, le=1e21, description="FLOPs of one kernel at which this efficiency was measured")
    efficiency: float = Field(gt=0, le=1, description="achieved / peak FLOP/s")


class GPU(StrictModel):
    """One accelerator: compute peaks, memory system and per-kernel launch cost."""

    name: Name
    peak_flops: dict[Dtype, FlopRate] = Field(description="dense peak FLOP/s per compute dtype (datasheet)")
    memory_bandwidth: Bandwidth = Field(description="achievable memory bandwidth, bytes/s")
    memory_capacity: Size = Field(description="device memory, bytes")
    kernel_launch_overhead: Duration = Field(description="host-side cost of launching one kernel through the driver, seconds")
    host_overhead_per_op: Duration = Field(
        default=0.0,
        description="the framework's host time per op on top of the launch (eager PyTorch dispatch), seconds; "
        "0: a runtime that only launches (CUDA graphs replay many kernels per host call)",
    )
    attention_floor_per_head: Duration = Field(
        default=0.0,
        description="the least time one attention head of one sequence takes, whatever its width (an eager CPU "
        "runs heads one after another at a fixed cost each); 0: no floor",
    )
    launch_queue_depth: int = Field(
        default=1024,
        ge=1,
        le=2**20,
        description="ops the host may issue ahead of the GPU before it waits for one to finish",
    )
    compute_efficiency: float = Field(
        default=1.0, gt=0, le=1, description="fraction of peak reached by large kernels; used when no table is given"
    )
    efficiency_table: tuple[EfficiencyPoint, ...] | None = Field(
        default=None,
        description="size-dependent efficiency: interpolated in log(FLOPs), clamped at both ends",
    )
    attention_efficiency_table: tuple[EfficiencyPoint, ...] | None = Field(
        default=None,
        description="optional efficiency of attention kernels by size (same rules as efficiency_table); "
        "absent: attention uses efficiency_table / compute_efficiency like every other kernel",
    )
    gemm_shape_efficiency: GemmShapeEfficiency | None = Field(
        default=None,
        description="GEMM efficiency by shape (narrowest dimension, work per kernel) and a fixed time per kernel; "
        "wins over efficiency_table and compute_efficiency for GEMMs (docs/model.md, section 2.1)",
    )
    attention_shape_efficiency: AttentionShapeEfficiency | None = Field(
        default=None,
        description="fused-attention efficiency by head width, context length and causal mask; wins over "
        "attention_efficiency_table for fused attention (docs/model.md, section 2.1)",
    )
    materialized_attention_shape_efficiency: AttentionShapeEfficiency | None = Field(
        default=None,
        description="the same for `attention: materialized` (the math path: scores written, softmax, read back); "
        "absent: priced as batched GEMMs by gemm_shape_efficiency (docs/model.md, section 2.1)",
    )

    @model_validator(mode="after")
    def _table_sorted(self) -> GPU:
        if not self.peak_flops:
            raise FieldIssue(("peak_flops",), "peak_flops needs at least one dtype")
        for name in ("efficiency_table", "attention_efficiency_table"):
            table = getattr(self, name)
            if table is not None:
                sizes = [point.flops for point in table]
                if len(sizes) == 0 or sizes != sorted(sizes) or len(set(sizes)) != len(sizes):
                    raise FieldIssue((name,), f"{name} must be non-empty with strictly increasing flops")
        return self

    def efficiency(self, kernel_flops: float, primitive: str = "gemm") -> float:
        """Fraction of peak FLOP/s a kernel of ``kernel_flops`` reaches.

        Attention kernels (``primitive == "attention"``) use ``attention_efficiency_table`` when one
        is given (a calibrated GPU: fused attention reaches a different rate than a GEMM of equal
        FLOPs); every other kernel, and attention without that table, uses ``efficiency_table`` or
        the constant ``compute_efficiency``.
        """
        table = self.efficiency_table
        if primitive == "attention" and self.attention_efficiency_table is not None:
            table = self.attention_efficiency_table
        if table is None:
            return self.compute_efficiency
        log_sizes = np.log([point.flops for point in table])
        values = [point.efficiency for point in table]
        return float(np.interp(np.log(max(kernel_flops, 1.0)), log_sizes, values))

    def peak_for(self, dtype: str) -> float:
        """Peak FLOP/s for a dtype; a clear error if the GPU description lacks it."""
        if dtype not in self.peak_flops:
            raise ValueError(f"GPU {self.name!r} has no peak_flops entry for dtype {dtype!r}")
        return self.peak_flops[dtype]


class NVSwitchFabric(StrictModel):
    """A full-bandwidth switch: every GPU has its own port of ``bandwidth_per_direction``."""

    kind: Literal["nvswitch"]
    bandwidth_per_direction: Bandwidth = Field(description="per GPU, per direction, bytes/s")
    latency: Duration = Field(description="one-way latency of a message through the switch")


class PCIeFabric(StrictModel):
    """A PCIe tree: GPUs under switches, switches under a host bridge shared by all of them.

    Without peer-to-peer, a GPU-to-GPU message is staged through host memory: it crosses the
    host bridge twice (device -> host, host -> device), store-and-forward.
    """

    kind: Literal["pcie"]
    link_bandwidth_per_direction: Bandwidth = Field(description="GPU <-> PCIe switch link, per direction")
    host_bridge_bandwidth_per_direction: Bandwidth = Field(
        description="PCIe switch <-> host bridge (root complex) bandwidth, shared by all GPUs of a socket"
    )
    latency: Duration = Field(description="one-way latency of one PCIe hop sequence GPU -> GPU (or GPU -> host)")
    peer_to_peer: bool = Field(description="GPUs may write into each other's memory; false means staging in host memory")
    gpus_per_switch: int = Field(default=2, ge=1, le=MAX_GPUS_PER_NODE, description="GPUs sharing one PCIe switch")
    sockets: Literal[1, 2] = Field(default=1, description="CPU sockets; GPUs are split evenly between them")
    inter_socket_bandwidth_per_direction: Bandwidth | None = Field(
        default=None, description="socket-to-socket link (UPI / Infinity Fabric), required with 2 sockets"
    )

    @model_validator(mode="after")
    def _sockets_need_link(self) -> PCIeFabric:
        if self.sockets == 2 and self.inter_socket_bandwidth_per_direction is None:
            raise FieldIssue(("inter_socket_bandwidth_per_direction",), "required when sockets is 2")
        return self


class FullMeshFabric(StrictModel):
    """A direct link between every pair of GPUs, each with its own bandwidth (4-GPU HGX A100 boards,
    AMD MI300X xGMI): a message between two GPUs uses only their pair's link."""

    kind: Literal["full_mesh"]
    link_bandwidth_per_direction: Bandwidth = Field(description="one GPU pair's link, per direction, bytes/s")
    latency: Duration = Field(description="one-way latency of a message over a pair's link")


IntraNodeFabric = Annotated[NVSwitchFabric | PCIeFabric | FullMeshFabric, Field(discriminator="kind")]


class InterNodeFabric(StrictModel):
    """NICs into an InfiniBand or RoCE fabric: one per GPU unless ``nics_per_node`` says fewer.

    Without ``nodes_per_leaf`` the fabric is one non-blocking switch. With it, nodes hang off leaf
    switches of ``nodes_per_leaf`` nodes each (with ``rail_optimized`` wiring NIC ``k`` of every node
    of a leaf group goes to that group's rail-``k`` leaf, so only same-rail traffic of a group stays
    on one leaf); traffic between leaves crosses ``spines`` spine switches over uplinks whose total
    capacity is the leaf's NIC capacity divided by ``oversubscription``. With ``ecmp`` each
    (source, destination) flow is pinned to one spine by a hash of its endpoints, so flows can
    collide on one uplink while another idles; without it the uplinks act as one link of their total
    capacity (perfect spreading).
    """

    kind: Literal["infiniband", "ethernet"] = "infiniband"
    nic_bandwidth_per_direction: Bandwidth = Field(description="per GPU NIC, per direction")
    latency: Duration = Field(description="one-way NIC-to-NIC latency across the fabric")
    gpu_nic_pcie_bandwidth_per_direction: Bandwidth | None = Field(
        default=None,
        description="NVSwitch nodes only: the PCIe link between a GPU and the PCIe switch its NIC hangs off "
        "(GPUDirect RDMA path), per direction; unset: that hop is not modelled. On PCIe nodes the GPU's own "
        "PCIe link (link_bandwidth_per_direction) is always that hop",
    )
    nics_per_node: int | None = Field(
        default=None,
        ge=1,
        le=MAX_GPUS_PER_NODE,
        description="NICs per node, shared by consecutive GPUs through PCIe; absent: one per GPU",
    )
    nodes_per_leaf: int | None = Field(
        default=None, ge=1, le=MAX_NODES, description="nodes per leaf switch; absent: one non-blocking switch"
    )
    oversubscription: float = Field(
        default=1.0, ge=1.0, le=64.0, description="a leaf's NIC capacity over its uplink capacity (1: non-blocking)"
    )
    rail_optimized: bool = Field(default=False, description="NIC k of every node of a leaf group on the group's rail-k leaf")
    spines: int = Field(default=1, ge=1, le=1024, description="spine switches, one uplink from every leaf to each")
    ecmp: bool = Field(default=False, description="pin each flow to one spine by a hash of its endpoints (flows collide)")

    @model_validator(mode="after")
    def _leaf_spine_options_need_leaves(self) -> InterNodeFabric:
        if self.nodes_per_leaf is None:
            for name, default in (("oversubscription", 1.0), ("rail_optimized", False), ("spines", 1), ("ecmp", False)):
                if getattr(self, name) != default:
                    raise FieldIssue((name,), "a leaf-spine option: set nodes_per_leaf as well")
        return self


class Cluster(StrictModel):
    """``nodes`` identical nodes of ``gpus_per_node`` GPUs."""

    schema_version: Literal[1] = 1
    name: Name = "cluster"
    gpu: GPU
    nodes: int = Field(ge=1, le=MAX_NODES)
    gpus_per_node: int = Field(ge=1, le=MAX_GPUS_PER_NODE)
    intra_node: IntraNodeFabric
    inter_node: InterNodeFabric | None = Field(default=None, description="required when nodes > 1")
    communication: Communication | None = Field(
        default=None,
        description="the communication stack of this cluster's collectives (what `secmoe-sim fit` measured); "
        "a scenario's own `communication` wins; absent: NCCL's tuning model",
    )
    message_overhead: Duration | None = Field(
        default=None,
        description="legacy shorthand for communication: {default: {kind: host_staged, message_overhead: ...}}: "
        "a per-message software cost paid serially at the sender, seconds",
    )

    @model_validator(mode="after")
    def _multi_node_needs_fabric(self) -> Cluster:
        if self.nodes > 1 and self.inter_node is None:
            raise FieldIssue(("inter_node",), "inter_node is required when nodes > 1")
        fabric = self.intra_node
        if isinstance(fabric, PCIeFabric) and self.gpus_per_node % fabric.sockets:
            raise FieldIssue(
                ("gpus_per_node",), f"gpus_per_node ({self.gpus_per_node}) must split evenly over {fabric.sockets} sockets"
            )
        return self

    @model_validator(mode="after")
    def _one_way_to_name_the_stack(self) -> Cluster:
        if self.communication is not None and self.message_overhead is not None:
            raise FieldIssue(
                ("message_overhead",),
                "give either communication (the stack) or the legacy message_overhead (a host_staged stack), not both",
            )
        return self

    def stack_settings(self) -> Communication:
        """The cluster's communication stacks: as given, the legacy host-staged one, or NCCL's model."""
        if self.communication is not None:
            return self.communication
        if self.message_overhead is not None:
            return Communication(default=HostStagedStack(kind="host_staged", message_overhead=self.message_overhead))
        return Communication()

    @model_validator(mode="after")
    def _nic_pcie_hop_on_nvswitch_only(self) -> Cluster:
        nic_hop = self.inter_node is not None and self.inter_node.gpu_nic_pcie_bandwidth_per_direction is not None
        if nic_hop and isinstance(self.intra_node, PCIeFabric):
            raise FieldIssue(
                ("inter_node", "gpu_nic_pcie_bandwidth_per_direction"),
                "only for nvswitch nodes: on a PCIe node the GPU's own PCIe link is the hop to its NIC",
            )
        return self

    @model_validator(mode="after")
    def _nics_divide_the_node(self) -> Cluster:
        nics = self.inter_node.nics_per_node if self.inter_node is not None else None
        if nics is not None and (nics > self.gpus_per_node or self.gpus_per_node % nics):
            raise FieldIssue(
                ("inter_node", "nics_per_node"), f"{nics} NICs do not split the {self.gpus_per_node} GPUs of a node evenly"
            )
        return self

    @property
    def num_gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def shares_nics(self) -> bool:
        """Whether several GPUs of a node share one NIC."""
        nics = self.inter_node.nics_per_node if self.inter_node is not None else None
        return nics is not None and nics < self.gpus_per_node

    def nic_of(self, gpu: int) -> int:
        """The index, within its node, of the NIC ``gpu`` sends through (its local rank with one NIC per GPU)."""
        local = gpu % self.gpus_per_node
        nics = self.inter_node.nics_per_node if self.inter_node is not None else None
        return local if nics is None else local * nics // self.gpus_per_node

    def node_of(self, gpu: int) -> int:
        return gpu // self.gpus_per_node

    def with_links_scaled(self, bandwidth_factor: float = 1.0, latency_factor: float = 1.0) -> Cluster:
        """The same cluster with every link bandwidth (every ``*bandwidth*`` field of both fabrics) times
        ``bandwidth_factor`` and every fabric latency times ``latency_factor``, validated again."""
        update: dict[str, StrictModel] = {"intra_node": _links_scaled(self.intra_node, bandwidth_factor, latency_factor)}
        if self.inter_node is not None:
            update["inter_node"] = _links_scaled(self.inter_node, bandwidth_factor, latency_factor)
        return type(self).model_validate({**self.model_dump(), **{k: v.model_dump() for k, v in update.items()}})

    def resized(self, num_gpus: int) -> Cluster:
        """The same hardware with ``num_gpus`` GPUs, adding nodes of this node shape.

        ``num_gpus`` must fill whole nodes, or fit inside one node (a partly populated node).
        """
        if num_gpus <= self.gpus_per_node:
            nodes, per_node = 1, num_gpus
        elif num_gpus % self.gpus_per_node == 0:
            nodes, per_node = num_gpus // self.gpus_per_node, self.gpus_per_node
        else:
            raise ValueError(f"{num_gpus} GPUs do not fill whole nodes of {self.gpus_per_node}")
        if nodes > 1 and self.inter_node is None:
            raise ValueError(f"{num_gpus} GPUs need {nodes} nodes, but the cluster has no inter_node fabric")
        fabric = self.intra_node
        if isinstance(fabric, PCIeFabric) and per_node % fabric.sockets:
            fabric = fabric.model_copy(update={"sockets": 1, "inter_socket_bandwidth_per_direction": None})
        return self.model_copy(update={"nodes": nodes, "gpus_per_node": per_node, "intra_node": fabric})


def _links_scaled(fabric: StrictModel, bandwidth_factor: float, latency_factor: float) -> StrictModel:
    """A fabric with its bandwidths and its latency scaled (fields found by name, so none is missed)."""
    update: dict[str, float] = {}
    for name, value in fabric:
        if isinstance(value, float) and "bandwidth" in name:
            update[name] = value * bandwidth_factor
        elif isinstance(value, float) and name == "latency":
            update[name] = value * latency_factor
    return type(fabric).model_validate({**fabric.model_dump(), **update})
