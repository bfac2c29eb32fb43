"""``simulate(scenario, seed) -> Results``: every architecture entry at every E, as tidy tables.

One summary row per (architecture entry, placement, E). Beside the time columns it says what the
row ran on and what it is: ``num_gpus``, ``gpu_seconds`` (wall-clock x GPUs, the cost of the row),
``tokens_per_s_per_gpu``, ``params`` and ``flops_per_token``, and ``placement`` (sectional rows only),
so a comparison between rows can say what it holds equal.

Summary time columns, all for one layer (the definitions the README repeats):

* ``wall_clock_s``: from the start to the last GPU's finish;
* ``compute_s``: kernel time of the GPU that finishes last (the critical GPU), launch excluded;
* ``launch_s``: the time that GPU waited for its host to issue the next op (exposed host time:
  framework dispatch and kernel launch that the host could not do ahead of the GPU);
* ``communication_s``: the union of the intervals in which that GPU has a transfer in flight
  (sending or receiving);
* ``exposed_communication_s``: ``wall_clock_s - compute_s - launch_s``, the time its compute stream
  waits;
* ``overhead_s``: ``wall_clock_s - compute_s``, the overhead that the paper's ``alpha E^2`` describes.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from secmoe_sim.engine import SimulationRun, run_plan
from secmoe_sim.errors import ScenarioError, SimulationError
from secmoe_sim.plan.dense import dense_plan
from secmoe_sim.plan.kernel_time import KernelTimer
from secmoe_sim.plan.sectional import sectional_plan
from secmoe_sim.plan.steps import LayerPlan
from secmoe_sim.plan.token_moe import token_moe_plan
from secmoe_sim.spec.placement import group_size, sectional_cluster
from secmoe_sim.spec.scenario import Scenario
from secmoe_sim.spec.workload import DenseArchitecture, SectionalMoEArchitecture, TokenMoEArchitecture

SAME_GPUS_ROLE = "same_gpus"  # summary ``role`` of a baseline simulated again on an expert_per_gpu entry's GPUs
FLOAT_NOISE = 1e-12  # relative size of rounding residue in sums of simulated durations


@dataclass(frozen=True)
class Results:
    """The tables of one simulation: ``summary`` (one row per entry and E), ``timeline``, ``transfers``."""

    scenario: Scenario
    seed: int
    summary: pd.DataFrame
    timeline: pd.DataFrame

    @property
    def transfers(self) -> pd.DataFrame:
        return self.timeline[self.timeline["kind"] == "transfer"].reset_index(drop=True)

    def timeline_of(self, label: str, placement: str, num_experts: int) -> pd.DataFrame:
        """The timeline rows of one configuration: the entry ``label`` at ``placement`` and ``num_experts``."""
        timeline = self.timeline
        return timeline[
            (timeline["entry"] == label) & (timeline["placement"] == placement) & (timeline["num_experts"] == num_experts)
        ]

    def best(self) -> pd.DataFrame:
        """The row of each (architecture entry, placement) with the lowest GPU-seconds.

        On a fixed cluster that is the lowest wall-clock; where the GPU count grows with E
        (``expert_per_gpu``) it is the cheapest configuration, not the one that bought the most GPUs.
        """
        return best_rows(self.summary)


def best_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """The row of each (label, placement) with the lowest ``gpu_seconds``, in first-appearance order."""
    cost = summary["gpu_seconds"].to_numpy(dtype=float)
    chosen: dict[tuple[str, str], int] = {}
    for position, key in enumerate(zip(summary["label"].astype(str), summary["placement"].astype(str))):
        current = chosen.get(key)
        if current is None or cost[position] < cost[current]:
            chosen[key] = position
    return summary.iloc[sorted(chosen.values())].reset_index(drop=True)


def entry_rng(seed: int, label: str) -> np.random.Generator:
    """The random stream of one entry: the seed and a stable hash of the entry's label."""
    label_key = int.from_bytes(hashlib.sha256(label.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng(np.random.SeedSequence([seed, label_key]))


def same_gpus_label(label: str, num_gpus: int) -> str:
    """The label of a baseline simulated again on another GPU count, beside an ``expert_per_gpu`` entry."""
    return f"{label}@{num_gpus}gpu"


def entry_label(plan: LayerPlan) -> str:
    """The scenario entry a plan belongs to (a same-GPU baseline's label without its GPU count)."""
    return plan.label.removesuffix(f"@{plan.cluster.num_gpus}gpu") if plan.role == SAME_GPUS_ROLE else plan.label


def layer_plans(scenario: Scenario, seed: int) -> list[LayerPlan]:
    """Every (architecture entry, placement, E) the scenario asks for, as op graphs.

    Each entry draws from its own stream, keyed by the seed and the entry's label
    (:func:`entry_rng`), so adding, removing or reordering entries never changes another's draws. ``expert_per_gpu`` entries run on ``G = E`` GPUs; every dense entry is planned
    again on each of those GPU counts (labelled ``dense@64gpu``), so that such an entry is compared
    with a baseline simulated on its own GPUs, never with one on the scenario's.
    """
    layer, cluster = scenario.workload.layer, scenario.hardware
    plans = []
    other_gpu_counts: set[int] = set()
    for arch in scenario.workload.architectures:
        if isinstance(arch, SectionalMoEArchitecture):
            built: dict[tuple[int, int], LayerPlan] = {}  # (E, group size) -> plan: equal groups, equal plans
            for placement in arch.placements:
                for e in scenario.expert_counts(arch, placement):
                    size = group_size(placement, e, sectional_cluster(cluster, e, arch.sweep_mode))
                    same = built.get((e, size))
                    plan = replace(same, placement=placement) if same else sectional_plan(layer, arch, cluster, e, placement)
                    built[(e, size)] = plan
                    plans.append(plan)
                    if plan.cluster.num_gpus != cluster.num_gpus:
                        other_gpu_counts.add(plan.cluster.num_gpus)
        elif isinstance(arch, TokenMoEArchitecture):
            plans.append(token_moe_plan(layer, arch, cluster, entry_rng(seed, arch.name)))
        elif isinstance(arch, DenseArchitecture):
            plans.append(dense_plan(layer, arch, cluster))
    for arch in scenario.workload.architectures:
        if not isinstance(arch, DenseArchitecture):
            continue
        for num_gpus in sorted(other_gpu_counts):
            if num_gpus % arch.tensor_parallel == 0:
                plan = dense_plan(layer, arch, cluster.resized(num_gpus))
                plans.append(replace(plan, label=same_gpus_label(plan.label, num_gpus), role=SAME_GPUS_ROLE))
    return plans


# What one run may cost before it needs --allow-large (docs/model.md, section 9): each about a minute
# of this machine's time, far above every shipped scenario (h200-ib-32: ~1e5 messages, 2e7 routing draws).
MAX_SIMULATED_MESSAGES = 5_000_000
MAX_ROUTING_DRAWS = 1_000_000_000
MAX_PLANS = 5_000


@dataclass(frozen=True)
class WorkEstimate:
    """What simulating a scenario will cost, from the validated scenario alone (no plan is built)."""

    plans: int
    messages: float  # point-to-point messages over every simulated plan, kernels counted as one each
    routing_draws: float  # token-MoE routing: tokens x experts random keys

    def over_budget(self) -> str:
        """Why the run is beyond the budget, or an empty string."""
        for count, limit, what in (
            (self.plans, MAX_PLANS, "configurations (entry x placement x E)"),
            (self.messages, MAX_SIMULATED_MESSAGES, "simulated messages and kernels"),
            (self.routing_draws, MAX_ROUTING_DRAWS, "token-routing draws (tokens x experts)"),
        ):
            if count > limit:
                return f"about {count:.3g} {what}, beyond the budget of {limit:.3g}"
        return ""


def estimate_work(scenario: Scenario) -> WorkEstimate:
    """The plans, messages and routing draws ``simulate(scenario)`` will need (upper estimates)."""
    layer, cluster = scenario.workload.layer, scenario.hardware
    passes = 2 if layer.has_backward else 1
    kernels_per_gpu = 40 * passes  # the longest program's ops, elementwise included, with margin
    plans = 0
    messages = draws = 0.0
    for arch in scenario.workload.architectures:
        if isinstance(arch, SectionalMoEArchitecture):
            for placement in arch.placements:
                for e in scenario.expert_counts(arch, placement):
                    gpus = e if arch.sweep_mode == "expert_per_gpu" else cluster.num_gpus
                    plans += 1
                    exchanged = 2 * passes * min(e, gpus) * (1 if arch.coalesce_messages else e) * arch.overlap_degree
                    messages += gpus * (kernels_per_gpu + exchanged)
        elif isinstance(arch, TokenMoEArchitecture):
            plans += 1
            gpus = cluster.num_gpus
            messages += gpus * (kernels_per_gpu + 2 * passes * gpus * arch.overlap_degree)
            draws += layer.batch * layer.seq_len * arch.num_experts
        else:
            plans += 1
            messages += cluster.num_gpus * kernels_per_gpu * arch.blocks * (1 + 2 * arch.tensor_parallel)
    if scenario.model is not None:  # per configuration: the ring messages of its gradient buckets, and one other layer
        gpus = cluster.num_gpus
        lengths = scenario.model.layers if scenario.model.reduction == "carry" else 1
        messages += plans * 4 * gpus * gpus + lengths * gpus * kernels_per_gpu * 3
        plans += lengths
    return WorkEstimate(plans, messages, draws)


def check_work(scenario: Scenario, allow_large: bool = False, where: str = "") -> None:
    """Refuse, with one line, a scenario whose simulation is beyond the budget unless ``allow_large``."""
    reason = estimate_work(scenario).over_budget()
    if reason and not allow_large:
        raise ScenarioError(where or scenario.name, "workload", f"{reason}: pass --allow-large to run it anyway")


def simulate(scenario: Scenario, seed: int | None = None, timer: KernelTimer | None = None) -> Results:
    """Simulate every architecture entry of ``scenario``; ``seed`` overrides the scenario's.

    ``timer`` replaces the roofline op times (e.g. with measured timings replayed).
    """
    seed = scenario.seed if seed is None else seed
    summaries, timelines = [], []
    runs: dict[int, SimulationRun] = {}  # placements with equal groups share one plan's programs: simulated once
    for plan in layer_plans(scenario, seed):
        run = runs.get(id(plan.programs))
        if run is None:
            stacks = scenario.stacks.for_entry(entry_label(plan))
            run = runs[id(plan.programs)] = run_plan(plan, timer, scenario.network, faults=scenario.faults, communication=stacks)
        run = replace(run, plan=plan)
        summaries.append(summarize(run, scenario))
        timelines.append(run.timeline.assign(entry=plan.label, num_experts=plan.num_experts, placement=plan.placement))
    summary = pd.DataFrame(summaries)
    timeline = pd.concat(timelines, ignore_index=True)
    return Results(scenario=scenario, seed=seed, summary=summary, timeline=timeline)


def interval_union_s(starts: np.ndarray, ends: np.ndarray) -> float:
    """Total length of the union of the intervals ``[starts[i], ends[i]]``."""
    if len(starts) == 0:
        return 0.0
    order = np.argsort(starts)
    starts, ends = np.asarray(starts)[order], np.asarray(ends)[order]
    covered_until = np.maximum.accumulate(ends)
    new_block = np.concatenate([[True], starts[1:] > covered_until[:-1]])
    block_ids = np.cumsum(new_block) - 1
    block_start = starts[new_block]
    block_end = np.zeros(len(block_start))
    np.maximum.at(block_end, block_ids, ends)
    return float(np.sum(block_end - block_start))


def summarize(run: SimulationRun, scenario: Scenario) -> dict:
    """One summary row (the columns of docs/model.md, section 5) for one simulated layer."""
    plan, timeline = run.plan, run.timeline
    finished = np.asarray(run.finished_at)
    wall_clock_s = float(finished.max())
    critical = int(np.argmax(finished))
    # Whole columns as numpy arrays once: boolean masks over them cost a fraction of DataFrame filters.
    kind = timeline["kind"].to_numpy(dtype=object)
    gpu = timeline["gpu"].to_numpy()
    started, ended = timeline["started_at"].to_numpy(dtype=float), timeline["finished_at"].to_numpy(dtype=float)
    launch = timeline["launch_s"].to_numpy(dtype=float)
    is_kernel, is_transfer = kind == "kernel", kind == "transfer"
    on_critical = gpu == critical
    kernel_s = ended - started - launch
    compute_s = float(kernel_s[is_kernel & on_critical].sum())
    waiting = is_kernel | (kind == "host_wait")
    launch_s = float(launch[waiting & on_critical].sum())
    src, dst = timeline["src"].to_numpy(), timeline["dst"].to_numpy()
    touching = is_transfer & ((src == critical) | (dst == critical))
    communication_s = interval_union_s(started[touching], ended[touching])
    compute_all_gpus_s = float(kernel_s[is_kernel].sum())
    senders = src[is_transfer]
    sent_started, sent_ended = started[is_transfer], ended[is_transfer]
    send_busy_all_gpus_s = sum(
        interval_union_s(sent_started[senders == sender], sent_ended[senders == sender]) for sender in np.unique(senders)
    )
    transfer_bytes = timeline["bytes"].to_numpy(dtype=float)[is_transfer]
    peak_memory = max(plan.peak_memory_bytes(scenario.workload.layer.has_backward))
    if not (math.isfinite(wall_clock_s) and wall_clock_s >= 0 and math.isfinite(compute_s) and compute_s >= 0):
        raise SimulationError(f"{plan.label} at E = {plan.num_experts}: wall-clock {wall_clock_s} s, compute {compute_s} s")
    exposed_s = wall_clock_s - compute_s - launch_s
    if abs(exposed_s) <= FLOAT_NOISE * wall_clock_s:  # summing kernel durations leaves rounding residue
        exposed_s = 0.0
    return {
        "scenario": scenario.name,
        "architecture": plan.architecture,
        "label": plan.label,
        "placement": plan.placement,
        "role": plan.role,
        "num_experts": plan.num_experts,
        "sweep_mode": plan.sweep_mode,
        "num_gpus": plan.cluster.num_gpus,
        "wall_clock_s": wall_clock_s,
        "gpu_seconds": wall_clock_s * plan.cluster.num_gpus,
        "tokens_per_s_per_gpu": plan.tokens / wall_clock_s / plan.cluster.num_gpus if wall_clock_s > 0 else float("inf"),
        "compute_s": compute_s,
        "launch_s": launch_s,
        "communication_s": communication_s,
        "exposed_communication_s": exposed_s,
        "overhead_s": wall_clock_s - compute_s,
        "critical_gpu": critical,
        "compute_all_gpus_s": compute_all_gpus_s,
        "launch_all_gpus_s": float(launch[waiting].sum()),
        "send_busy_all_gpus_s": send_busy_all_gpus_s,
        "peak_memory_bytes": peak_memory,
        "memory_capacity_bytes": plan.cluster.gpu.memory_capacity,
        "oom": bool(peak_memory > plan.cluster.gpu.memory_capacity),
        "params": plan.params,
        "flops": plan.flops,
        "flops_per_token": plan.flops_per_token,
        "messages": int(is_transfer.sum()),
        "bytes_sent": float(transfer_bytes.sum()),
        "dropped_tokens": plan.dropped_tokens,
        "num_events": run.num_events,
    }
