"""Fidelity: the simulator against published collective and MoE-dispatch measurements.

The cases live in ``fidelity_data/published.yaml`` with their sources. Each is re-enacted with the
benchmark's own traffic pattern and byte accounting (docs/fidelity.md):

* ``nccl_alltoall`` (nccl-tests ``alltoall_perf``): every rank sends ``size / n`` bytes to every rank;
  ``algbw = size / time``, ``busbw = algbw (n - 1) / n``.
* ``deepep_intranode``: DeepEP's test routing (scores ``|randn| + 1``, top-8 of 256 experts, seed =
  rank), each token sent once per distinct destination rank; the reported NVLink figure is rank
  0's received tokens (its own included) x bytes per token / rank 0's time.
* ``deepep_internode``: node-limited routing (top ``min(nodes, 4)`` nodes by their best expert
  score), RDMA to the same local rank of each other destination node, NVLink forwarding inside the
  node; the reported RDMA figure counts (token, destination node) pairs, the sender's own node
  included, x bytes per token / rank 0's time. Both hops run as one concurrent exchange: DeepEP
  pipelines the RDMA receive and the NVLink forward in chunks.

Hardware presets are datasheet numbers times one efficiency factor per link class (NVLink, RDMA);
each factor minimises the squared relative errors of its ``fit`` cases (scipy, bounded scalar
minimisation), and every other case is a prediction.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
import pandas as pd
import yaml
from scipy.optimize import minimize_scalar

from secmoe_sim.engine import run_plan
from secmoe_sim.plan.steps import AllToAll, LayerPlan, Message
from secmoe_sim.spec.hardware import GPU, Cluster, InterNodeFabric, NVSwitchFabric
from secmoe_sim.spec.network import NetworkOptions
from secmoe_sim.spec.units import DECIMAL_PREFIXES, MICROSECONDS_PER_SECOND, parse_quantity

FIDELITY_TARGET = 0.15  # a case within 15% of its published figure passes
GB = DECIMAL_PREFIXES["G"]  # benchmarks report GB/s with GB = 10^9 bytes
GPUS_PER_NODE = 8
DEEPEP_TOKENS = 4096
DEEPEP_HIDDEN = 7168
DEEPEP_EXPERTS = 256
DEEPEP_TOP_K = 8
FP8_BYTES_PER_TOKEN = DEEPEP_HIDDEN * (1 + 4 / 128)  # FP8 payload plus one float32 scale per 128 values
BF16_BYTES_PER_TOKEN = DEEPEP_HIDDEN * 2

# Datasheet line rates, per direction (NVIDIA H100 / H800 datasheets; ConnectX-7 NDR).
LINE_RATES_BYTES_PER_S = {
    "h100_nvlink": parse_quantity("450 GB/s", "bandwidth"),  # NVLink 4, 900 GB/s total
    "h800_nvlink": parse_quantity("200 GB/s", "bandwidth"),  # H800 NVLink, 400 GB/s total
    "cx7_rdma": parse_quantity("400 Gb/s", "bandwidth"),  # ConnectX-7 NDR, one per GPU
}
NVLINK_LATENCY_S = parse_quantity("936.25 ns", "duration")  # ASTRA-sim HGX-H100-validated switch model
RDMA_LATENCY_S = parse_quantity("1 us", "duration")  # NDR single-switch RDMA, ~2 us round trip
MESSAGE_OVERHEAD_S = parse_quantity("5 us", "duration")  # NCCL small-message floor on H100 (nccl issue 1259)


@dataclass(frozen=True)
class Efficiency:
    """Achieved / line-rate bandwidth per link class."""

    nvlink: float
    rdma: float


def published_cases() -> list[dict]:
    text = (resources.files("secmoe_sim.analysis") / "fidelity_data" / "published.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)["cases"]


def preset(name: str, ranks: int, efficiency: Efficiency) -> Cluster:
    """A datasheet cluster with the link-class efficiency factors applied."""
    nvlink = LINE_RATES_BYTES_PER_S["h100_nvlink" if name == "h100-node" else "h800_nvlink"] * efficiency.nvlink
    nodes = max(1, ranks // GPUS_PER_NODE)
    gpu = GPU(name=name, peak_flops={"bf16": 989e12}, memory_bandwidth=3.35e12, memory_capacity=80e9, kernel_launch_overhead=0.0)
    inter = None
    if nodes > 1:
        inter = InterNodeFabric(
            nic_bandwidth_per_direction=LINE_RATES_BYTES_PER_S["cx7_rdma"] * efficiency.rdma, latency=RDMA_LATENCY_S
        )
    return Cluster(
        name=name,
        gpu=gpu,
        nodes=nodes,
        gpus_per_node=min(ranks, GPUS_PER_NODE),
        intra_node=NVSwitchFabric(kind="nvswitch", bandwidth_per_direction=nvlink, latency=NVLINK_LATENCY_S),
        inter_node=inter,
        message_overhead=MESSAGE_OVERHEAD_S,
    )


def exchange_times_s(cluster: Cluster, volume: dict[tuple[int, int], float]) -> tuple[float, ...]:
    """Each rank's finish instant of one direct exchange of ``volume[(src, dst)]`` bytes."""
    messages = tuple(Message(src, dst, size) for (src, dst), size in sorted(volume.items()) if size > 0 and src != dst)
    ranks = tuple(range(cluster.num_gpus))
    exchange = AllToAll.of("benchmark", "benchmark", ranks, messages)
    plan = LayerPlan(
        architecture="benchmark",
        label="benchmark",
        num_experts=1,
        sweep_mode="fixed_cluster",
        cluster=cluster,
        dtype="bf16",
        programs=tuple((exchange,) for _ in ranks),
        params=0.0,
        weight_bytes_per_gpu=tuple(0.0 for _ in ranks),
        tokens=1,
    )
    return run_plan(plan, network=NetworkOptions(model="flows", mode="exact", all_to_all="direct")).finished_at


def nccl_alltoall(case: dict, efficiency: Efficiency) -> float:
    ranks, size = case["ranks"], float(case["size_bytes"])
    cluster = preset(case["preset"], ranks, efficiency)
    volume = {(s, d): size / ranks for s in range(ranks) for d in range(ranks)}
    time_s = max(exchange_times_s(cluster, volume))
    algbw = size / time_s / GB
    return {"algbw_GBps": algbw, "busbw_GBps": algbw * (ranks - 1) / ranks, "time_us": time_s * MICROSECONDS_PER_SECOND}[
        case["metric"]
    ]


def deepep_routing(rank: int, ranks: int) -> np.ndarray:
    """Top-8 experts of each of DeepEP's 4096 test tokens on ``rank`` (node-limited above 8 ranks)."""
    rng = np.random.default_rng(rank)
    scores = np.abs(rng.standard_normal((DEEPEP_TOKENS, DEEPEP_EXPERTS))) + 1.0
    nodes = max(1, ranks // GPUS_PER_NODE)
    if nodes > 1:
        top_groups = min(nodes, 4)
        group_scores = scores.reshape(DEEPEP_TOKENS, nodes, -1).max(axis=2)
        chosen = np.argpartition(-group_scores, top_groups - 1, axis=1)[:, :top_groups]
        allowed = np.zeros((DEEPEP_TOKENS, nodes), dtype=bool)
        np.put_along_axis(allowed, chosen, True, axis=1)
        scores = np.where(np.repeat(allowed, DEEPEP_EXPERTS // nodes, axis=1), scores, -np.inf)
    return np.argpartition(-scores, DEEPEP_TOP_K - 1, axis=1)[:, :DEEPEP_TOP_K]


@cache
def deepep_traffic(ranks: int, direction: str, metric: str) -> tuple[tuple[tuple[tuple[int, int], float], ...], float]:
    """The bytes each (src, dst) pair moves in DeepEP's benchmark, and the bytes rank 0 reports.

    A token goes once to each distinct destination rank (``inplace_unique`` in the test). Across
    nodes it is written by RDMA to the same local rank of the destination node (the forwarder),
    which passes it over NVLink to the other destination ranks of that node.
    """
    bytes_per_token = FP8_BYTES_PER_TOKEN if direction == "dispatch" else BF16_BYTES_PER_TOKEN
    experts_per_rank = DEEPEP_EXPERTS // ranks
    nodes = max(1, ranks // GPUS_PER_NODE)
    volume: dict[tuple[int, int], float] = defaultdict(float)
    received_by_rank0 = 0
    rdma_pairs_rank0 = 0
    for src in range(ranks):
        src_node, local = divmod(src, GPUS_PER_NODE)
        to_rank = np.zeros((DEEPEP_TOKENS, ranks), dtype=bool)
        np.put_along_axis(to_rank, deepep_routing(src, ranks) // experts_per_rank, True, axis=1)
        to_node = to_rank.reshape(DEEPEP_TOKENS, nodes, -1).any(axis=2)
        tokens_to_rank, tokens_to_node = to_rank.sum(axis=0), to_node.sum(axis=0)
        received_by_rank0 += int(tokens_to_rank[0])
        if src == 0:
            rdma_pairs_rank0 = int(tokens_to_node.sum())
        for node in range(nodes):
            forwarder = node * GPUS_PER_NODE + local if node != src_node else src
            if forwarder != src:
                volume[(src, forwarder)] += tokens_to_node[node] * bytes_per_token  # RDMA, rail-aligned
            for dst in range(node * GPUS_PER_NODE, min((node + 1) * GPUS_PER_NODE, ranks)):
                if dst != forwarder:
                    volume[(forwarder, dst)] += tokens_to_rank[dst] * bytes_per_token  # NVLink inside the node
    if direction == "combine":
        volume = defaultdict(float, {(dst, src): size for (src, dst), size in volume.items()})
    counted = received_by_rank0 if metric == "nvl_GBps" else rdma_pairs_rank0
    return tuple(sorted(volume.items())), counted * bytes_per_token


def deepep(case: dict, efficiency: Efficiency) -> float:
    pairs, reported_bytes = deepep_traffic(case["ranks"], case["direction"], case["metric"])
    cluster = preset(case["preset"], case["ranks"], efficiency)
    time_s = exchange_times_s(cluster, dict(pairs))[0]
    return reported_bytes / time_s / GB


BENCHMARKS = {"nccl_alltoall": nccl_alltoall, "deepep_intranode": deepep, "deepep_internode": deepep}


def simulate_case(case: dict, efficiency: Efficiency) -> float:
    return BENCHMARKS[case["benchmark"]](case, efficiency)


def _fit_factor(cases: list[dict], efficiency_for) -> float:
    """The factor in (0, 1] minimising the squared relative errors of ``cases`` (scipy, bounded)."""

    def squared_error(factor: float) -> float:
        return sum(((simulate_case(c, efficiency_for(factor)) - c["published"]) / c["published"]) ** 2 for c in cases)

    return float(minimize_scalar(squared_error, bounds=(0.05, 1.0), method="bounded", options={"xatol": 1e-6}).x)


def fit_efficiency(cases: list[dict]) -> Efficiency:
    """Fit each link-class factor on its ``fit`` cases: NVLink first, then RDMA with NVLink fixed."""
    fits = [c for c in cases if c["role"] == "fit"]
    nvlink_cases = [c for c in fits if c["benchmark"] != "deepep_internode"]
    rdma_cases = [c for c in fits if c["benchmark"] == "deepep_internode"]
    nvlink = _fit_factor(nvlink_cases, lambda f: Efficiency(nvlink=f, rdma=1.0))
    rdma = _fit_factor(rdma_cases, lambda f: Efficiency(nvlink=nvlink, rdma=f))
    return Efficiency(nvlink=nvlink, rdma=rdma)


def fidelity_table() -> tuple[pd.DataFrame, Efficiency]:
    """Every case: published, simulated, relative error and role; and the fitted factors."""
    cases = published_cases()
    efficiency = fit_efficiency(cases)
    rows = []
    for case in cases:
        simulated = simulate_case(case, efficiency)
        rows.append(
            {
                "case": case["case"],
                "source": case["source"],
                "metric": case["metric"],
                "published": float(case["published"]),
                "simulated": simulated,
                "rel_error": abs(simulated - case["published"]) / case["published"],
                "role": case["role"],
            }
        )
    return pd.DataFrame(rows), efficiency
