"""The published benchmarks, re-enacted with their own traffic and byte accounting (docs/fidelity.md).

* ``nccl_tests`` (``all_reduce_perf``, ``all_gather_perf``, ``reduce_scatter_perf``, ``alltoall_perf``):
  ``size`` is the nccl-tests size (all-reduce: each rank's buffer; all-gather: the gathered buffer,
  ``size / n`` from each rank; reduce-scatter: each rank's input, ``size / n`` of the sum kept by
  each; all-to-all: each rank's send buffer, ``size / n`` to each rank, its own chunk local).
  ``algbw = size / time``; ``busbw`` multiplies it by ``2 (n - 1) / n`` (all-reduce) or
  ``(n - 1) / n``. The time is the last rank's finish, plus what the benchmark's host adds to each
  timed iteration where the source states how it launched (``harness``, :func:`iteration_time_s`).
* ``deepep_normal`` (DeepEP ``tests/test_intranode.py``, ``test_internode.py``): 4096 tokens per
  rank, hidden 7168, top-8 of 256 experts by scores ``|randn| + 1`` (seed = rank), node-limited
  to ``min(nodes, 4)`` nodes above one node; a token goes once to each destination rank, across
  nodes by RDMA to the same local rank there, which forwards it over NVLink. FP8 dispatch is 7168
  x (1 + 4/128) bytes per token, BF16 combine 14336, combine the reverse of dispatch. Reported:
  rank 0's received tokens, its own included (NVLink figure), or its (token, destination node)
  pairs, its own node included (RDMA figure), times bytes per token, over rank 0's time.
* ``deepep_low_latency`` (``tests/test_low_latency.py``): 128 tokens per rank, top-8 of
  ``288 // n * n`` experts (at least one per rank) by the same scores; every (token, expert)
  selection is one message of 7408 bytes (FP8 payload, scales and 16 bytes of metadata) in
  dispatch, 14336 (BF16) in combine, straight to the expert's rank: over NVLink inside a node
  when ``nvlink`` (after DeepEP PR 173), else every peer over RDMA (the first release), which a
  cluster of one-GPU nodes reproduces. Reported: rank 0's kernel time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np

from secmoe_sim.analysis.fidelity.presets import preset_cluster
from secmoe_sim.engine import run_plan
from secmoe_sim.plan.steps import AllGather, AllReduce, AllToAll, Collective, LayerPlan, Message, ReduceScatter
from secmoe_sim.spec.communication import Communication, Stack
from secmoe_sim.spec.hardware import Cluster
from secmoe_sim.spec.network import NetworkOptions
from secmoe_sim.spec.units import DECIMAL_PREFIXES, MICROSECONDS_PER_SECOND

GB = DECIMAL_PREFIXES["G"]  # benchmarks report GB/s with GB = 10^9 bytes
GPUS_PER_NODE = 8
DEEPEP_TOKENS = 4096
DEEPEP_HIDDEN = 7168
DEEPEP_EXPERTS = 256
DEEPEP_TOP_K = 8
FP8_BYTES_PER_TOKEN = DEEPEP_HIDDEN * (1 + 4 / 128)  # FP8 payload plus one float32 scale per 128 values
BF16_BYTES_PER_TOKEN = DEEPEP_HIDDEN * 2
LOW_LATENCY_TOKENS = 128
LOW_LATENCY_EXPERTS = 288
LOW_LATENCY_DISPATCH_BYTES = DEEPEP_HIDDEN + DEEPEP_HIDDEN // 128 * 4 + 16  # 7408: payload, scales, metadata
EXACT = NetworkOptions(model="flows", mode="exact", all_to_all="direct")


@dataclass(frozen=True)
class Harness:
    """What a benchmark's host spends on each timed iteration, per stack (fitted with it, docs/fidelity.md)."""

    launch_per_gpu_s: float = 0.0  # launching one GPU's kernels of a collective from the host, without CUDA graphs


@dataclass(frozen=True)
class Outcome:
    """A re-enacted case: the figure in the benchmark's own metric, and the bytes rank 0 sends (its size band)."""

    simulated: float
    size_bytes: float


def run_collective(cluster: Cluster, collective: Collective, stack: Stack, network: NetworkOptions = EXACT) -> tuple[float, ...]:
    """Each rank's finish instant of ``collective`` alone on ``cluster``, moved by ``stack``."""
    plan = LayerPlan.of_programs(cluster, [(collective,)] * cluster.num_gpus, "bf16", "benchmark")
    return run_plan(plan, network=network, communication=Communication(default=stack)).finished_at


def exchange(volume: dict[tuple[int, int], float], ranks: int) -> AllToAll:
    """A direct exchange of ``volume[(src, dst)]`` bytes among ``ranks`` GPUs."""
    messages = tuple(Message(src, dst, size) for (src, dst), size in sorted(volume.items()) if size > 0 and src != dst)
    return AllToAll.of("benchmark", "benchmark", tuple(range(ranks)), messages)


def iteration_time_s(device_s: float, case: dict, harness: Harness) -> float:
    """nccl-tests' time per iteration of a collective that keeps the GPUs busy ``device_s``.

    nccl-tests times ``n`` iterations issued back to back and divides by ``n``. Without CUDA graphs
    (``harness: {launch: host, gpus_per_process, iterations}``) its host launches each iteration on
    the GPUs of its process one after another, ``h`` = GPUs per process x the launch per GPU. Host
    and GPUs are then a two-stage pipeline: the loop takes ``h + d + (n - 1) max(h, d)``, each
    iteration ``max(h, d) + min(h, d) / n``. Under CUDA graphs (``launch: cuda_graph``) the
    iterations are captured once and replayed with no host time between them, and a case whose
    source does not state its launch is timed as the collective alone: both give ``device_s``.
    """
    launch = case.get("harness", {})
    if launch.get("launch") != "host":
        return device_s
    host_s = launch["gpus_per_process"] * harness.launch_per_gpu_s
    return max(host_s, device_s) + min(host_s, device_s) / launch["iterations"]


BUS_FACTOR: dict[str, Callable[[int], float]] = {
    "all_reduce": lambda n: 2 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "alltoall": lambda n: (n - 1) / n,
}


def nccl_tests(case: dict, stack: Stack, network: NetworkOptions, harness: Harness = Harness()) -> Outcome:
    cluster = preset_cluster(case["preset"], case["nodes"], case["gpus_per_node"])
    ranks, size = cluster.num_gpus, float(case["size_bytes"])
    gpus = tuple(range(ranks))
    collective: Collective
    if case["collective"] == "all_reduce":
        collective = AllReduce("benchmark", "benchmark", gpus, size)
    elif case["collective"] == "all_gather":
        collective = AllGather("benchmark", "benchmark", gpus, size)
    elif case["collective"] == "reduce_scatter":
        collective = ReduceScatter("benchmark", "benchmark", gpus, size)
    else:
        collective = exchange({(s, d): size / ranks for s in gpus for d in gpus}, ranks)
    time_s = iteration_time_s(max(run_collective(cluster, collective, stack, network)), case, harness)
    algbw = size / time_s / GB
    metrics = {
        "time_us": time_s * MICROSECONDS_PER_SECOND,
        "algbw_GBps": algbw,
        "busbw_GBps": algbw * BUS_FACTOR[case["collective"]](ranks),
    }
    return Outcome(metrics[case["metric"]], size)


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
    """The bytes each (src, dst) pair moves in DeepEP's normal benchmark, and the bytes rank 0 reports.

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


def deepep_normal(case: dict, stack: Stack, network: NetworkOptions, harness: Harness = Harness()) -> Outcome:
    ranks = case["ranks"]
    pairs, reported_bytes = deepep_traffic(ranks, case["direction"], case["metric"])
    volume = dict(pairs)
    cluster = preset_cluster(case["preset"], max(1, ranks // GPUS_PER_NODE), min(ranks, GPUS_PER_NODE))
    time_s = run_collective(cluster, exchange(volume, ranks), stack, network)[0]
    return Outcome(reported_bytes / time_s / GB, sum(size for (src, _), size in volume.items() if src == 0))


@cache
def low_latency_traffic(ranks: int, direction: str) -> tuple[tuple[tuple[int, int], float], ...]:
    """The bytes each (src, dst) pair moves in DeepEP's low-latency benchmark: one message per selection."""
    experts = max(ranks, LOW_LATENCY_EXPERTS // ranks * ranks)
    per_selection = LOW_LATENCY_DISPATCH_BYTES if direction == "dispatch" else BF16_BYTES_PER_TOKEN
    volume: dict[tuple[int, int], float] = defaultdict(float)
    for src in range(ranks):
        scores = np.abs(np.random.default_rng(src).standard_normal((LOW_LATENCY_TOKENS, experts))) + 1.0
        chosen = np.argpartition(-scores, DEEPEP_TOP_K - 1, axis=1)[:, :DEEPEP_TOP_K]
        counts = np.bincount((chosen // (experts // ranks)).ravel(), minlength=ranks)
        for dst, count in enumerate(counts.tolist()):
            if dst != src and count:
                volume[(src, dst)] += count * per_selection
    if direction == "combine":
        volume = defaultdict(float, {(dst, src): size for (src, dst), size in volume.items()})
    return tuple(sorted(volume.items()))


def deepep_low_latency(case: dict, stack: Stack, network: NetworkOptions, harness: Harness = Harness()) -> Outcome:
    ranks = case["ranks"]
    volume = dict(low_latency_traffic(ranks, case["direction"]))
    if case["nvlink"]:
        cluster = preset_cluster(case["preset"], max(1, ranks // GPUS_PER_NODE), min(ranks, GPUS_PER_NODE))
    else:
        cluster = preset_cluster(case["preset"], ranks, 1)  # every peer over RDMA: one GPU per NIC-attached node
    time_s = run_collective(cluster, exchange(volume, ranks), stack, network)[0]
    return Outcome(time_s * MICROSECONDS_PER_SECOND, sum(size for (src, _), size in volume.items() if src == 0))


BENCHMARKS: dict[str, Callable[[dict, Stack, NetworkOptions, Harness], Outcome]] = {
    "nccl_tests": nccl_tests,
    "deepep_normal": deepep_normal,
    "deepep_low_latency": deepep_low_latency,
}


def simulate_case(case: dict, stack: Stack, network: NetworkOptions = EXACT, harness: Harness = Harness()) -> Outcome:
    """The simulated figure of one published case with ``stack`` moving its bytes and ``harness`` launching it.

    DeepEP's tests time their kernels on the GPU, so ``harness`` moves only nccl-tests cases.
    """
    return BENCHMARKS[case["benchmark"]](case, stack, network, harness)
