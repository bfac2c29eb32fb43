"""The clusters the published benchmarks ran on, from datasheet line rates alone.

Link bandwidths are per direction: A100 NVLink 3 600 GB/s total (300 per direction), H100 NVLink 4
900 GB/s total, H800 NVLink 400 GB/s total; one NIC per GPU: HDR InfiniBand 200 Gb/s on Azure NDm
A100 v4, NDR / ConnectX-7 400 Gb/s on the H100 and H800 clusters. Nothing else of the hardware
is fitted: what a link achieves (efficiency) and what a message costs in software (latencies,
launch, per-peer and kernel costs) belong to the communication stack (:mod:`.stacks`).

Fabric latencies are zero: a stack's latency is end to end (NCCL's step latency includes the
wire, a GPU-initiated kernel's fixed cost includes its round of latency), so the presets carry no
second copy of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from secmoe_sim.spec.hardware import GPU, Cluster, InterNodeFabric, NVSwitchFabric
from secmoe_sim.spec.units import parse_quantity


@dataclass(frozen=True)
class Preset:
    """Datasheet line rates of one benchmarked system."""

    name: str
    gpu: str
    nvlink_bytes_per_s: float
    nic_bytes_per_s: float
    source: str


PRESETS = {
    preset.name: preset
    for preset in (
        Preset(
            "a100-ndmv4",
            "A100 80GB",
            parse_quantity("300 GB/s", "bandwidth"),
            parse_quantity("200 Gb/s", "bandwidth"),
            "A100 datasheet (NVLink 3, 600 GB/s total); Azure NDm A100 v4: 8x HDR 200 Gb/s InfiniBand per node",
        ),
        Preset(
            "h100-ndr",
            "H100 80GB",
            parse_quantity("450 GB/s", "bandwidth"),
            parse_quantity("400 Gb/s", "bandwidth"),
            "H100 datasheet (NVLink 4, 900 GB/s total); ConnectX-7 NDR 400 Gb/s per GPU",
        ),
        Preset(
            "h800-cx7",
            "H800 80GB",
            parse_quantity("200 GB/s", "bandwidth"),
            parse_quantity("400 Gb/s", "bandwidth"),
            "H800 datasheet (NVLink 400 GB/s total); DeepEP README: ConnectX-7 400 Gb/s per GPU",
        ),
    )
}


def preset_cluster(name: str, nodes: int, gpus_per_node: int) -> Cluster:
    """``nodes`` nodes of ``gpus_per_node`` GPUs of the preset ``name``."""
    preset = PRESETS[name]
    gpu = GPU(name=preset.gpu, peak_flops={"bf16": 1e15}, memory_bandwidth=3e12, memory_capacity=80e9, kernel_launch_overhead=0.0)
    inter = InterNodeFabric(nic_bandwidth_per_direction=preset.nic_bytes_per_s, latency=0.0) if nodes > 1 else None
    return Cluster(
        name=name,
        gpu=gpu,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        intra_node=NVSwitchFabric(kind="nvswitch", bandwidth_per_direction=preset.nvlink_bytes_per_s, latency=0.0),
        inter_node=inter,
    )
