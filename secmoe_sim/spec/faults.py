"""What-if faults: a straggler GPU, a slow node, a degraded link or NIC.

Faults are part of the scenario (``faults:`` list), so a run with a fault is as reproducible as
any other. They name GPUs and nodes of the scenario's cluster; in an ``expert_per_gpu`` sweep, where
the cluster grows and shrinks with E, a fault applies whenever its GPU or node exists.

* ``straggler``: every kernel of one GPU takes ``slowdown`` times longer (launch overhead too: a
  slow host thread or a throttled GPU).
* ``slow_node``: the same for every GPU of one node.
* ``degraded_link``: one GPU's links of one class (its NVLink or PCIe port, or its NIC) carry
  ``bandwidth_factor`` times their capacity, both directions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import Field

from secmoe_sim.spec.base import StrictModel
from secmoe_sim.spec.hardware import Cluster


class Straggler(StrictModel):
    kind: Literal["straggler"]
    gpu: int = Field(ge=0, le=2**20)
    slowdown: float = Field(ge=1, le=1000, description="kernel times multiplied by this factor")


class SlowNode(StrictModel):
    kind: Literal["slow_node"]
    node: int = Field(ge=0, le=2**20)
    slowdown: float = Field(ge=1, le=1000, description="kernel times of every GPU of the node multiplied by this")


class DegradedLink(StrictModel):
    kind: Literal["degraded_link"]
    gpu: int = Field(ge=0, le=2**20)
    link: Literal["intra_node", "nic"] = Field(description="the GPU's NVLink/PCIe port, or its NIC")
    bandwidth_factor: float = Field(gt=0, le=1, description="capacity multiplied by this factor")


Fault = Annotated[Straggler | SlowNode | DegradedLink, Field(discriminator="kind")]

LINK_PREFIXES = {"intra_node": ("nvlink", "pcie", "mesh"), "nic": ("nic",)}


def compute_slowdown(faults: Sequence[Fault], cluster: Cluster) -> tuple[float, ...]:
    """Per GPU of ``cluster``: the factor its kernel times are multiplied by (1 without a fault)."""
    slowdown = [1.0] * cluster.num_gpus
    for fault in faults:
        if isinstance(fault, Straggler) and fault.gpu < cluster.num_gpus:
            slowdown[fault.gpu] *= fault.slowdown
        elif isinstance(fault, SlowNode) and fault.node < cluster.nodes:
            for gpu in range(fault.node * cluster.gpus_per_node, (fault.node + 1) * cluster.gpus_per_node):
                slowdown[gpu] *= fault.slowdown
    return tuple(slowdown)


def link_capacity_factors(faults: Sequence[Fault], cluster: Cluster) -> dict[str, float]:
    """Link-name prefix (``g3.nvlink.``) -> capacity factor, for the degraded links that exist."""
    factors: dict[str, float] = {}
    for fault in faults:
        if isinstance(fault, DegradedLink) and fault.gpu < cluster.num_gpus:
            for kind in LINK_PREFIXES[fault.link]:
                prefix = f"g{fault.gpu}.{kind}."
                if kind == "nic" and cluster.shares_nics:  # the shared NIC: every GPU on it is slowed
                    prefix = f"n{cluster.node_of(fault.gpu)}.nic{cluster.nic_of(fault.gpu)}."
                factors[prefix] = factors.get(prefix, 1.0) * fault.bandwidth_factor
    return factors


def describe(fault: Fault) -> str:
    """One line for the printed table."""
    if isinstance(fault, Straggler):
        return f"straggler: GPU {fault.gpu} computes {fault.slowdown:g}x slower"
    if isinstance(fault, SlowNode):
        return f"slow node: node {fault.node} computes {fault.slowdown:g}x slower"
    return f"degraded link: GPU {fault.gpu} {fault.link.replace('_', '-')} at {fault.bandwidth_factor:g}x bandwidth"
