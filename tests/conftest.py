"""Shared builders for small, hand-checkable clusters and layers."""

from __future__ import annotations

import pytest

from secmoe_sim.plan.steps import LayerPlan
from secmoe_sim.spec.hardware import GPU, Cluster, InterNodeFabric, NVSwitchFabric, PCIeFabric
from secmoe_sim.spec.workload import Layer


def make_gpu(peak=1e12, memory_bandwidth=1e15, launch=0.0, efficiency=1.0, table=None) -> GPU:
    return GPU(
        name="test-gpu",
        peak_flops={"fp32": peak, "bf16": peak},
        memory_bandwidth=memory_bandwidth,
        memory_capacity=1e12,
        kernel_launch_overhead=launch,
        compute_efficiency=efficiency,
        efficiency_table=table,
    )


def make_cluster(
    gpus_per_node=2, nodes=1, bandwidth=1e9, latency=1e-6, overhead=2e-6, gpu=None, fabric=None, nic_bandwidth=1e9
) -> Cluster:
    return Cluster(
        gpu=gpu or make_gpu(),
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        intra_node=fabric or NVSwitchFabric(kind="nvswitch", bandwidth_per_direction=bandwidth, latency=latency),
        inter_node=InterNodeFabric(nic_bandwidth_per_direction=nic_bandwidth, latency=latency) if nodes > 1 else None,
        message_overhead=overhead,
    )


def hand_plan(cluster, programs) -> LayerPlan:
    """A plan of hand-written per-GPU programs (kernels and collectives) on ``cluster``."""
    return LayerPlan.of_programs(cluster, programs, "fp32", "test")


def make_pcie(peer_to_peer=True, link=2e9, bridge=1e9, latency=1e-6, gpus_per_switch=2) -> PCIeFabric:
    return PCIeFabric(
        kind="pcie",
        link_bandwidth_per_direction=link,
        host_bridge_bandwidth_per_direction=bridge,
        latency=latency,
        peer_to_peer=peer_to_peer,
        gpus_per_switch=gpus_per_switch,
    )


def make_layer(**overrides) -> Layer:
    fields = {
        "d_model": 128,
        "seq_len": 64,
        "batch": 2,
        "heads": 2,
        "dtype": "fp32",
        "ffn": False,
        "causal": False,
        "attention": "flash",
    }
    fields.update(overrides)
    return Layer(**fields)


@pytest.fixture
def cluster2() -> Cluster:
    return make_cluster()
