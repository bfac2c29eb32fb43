"""``simulate(scenario, seed) -> Results``: every architecture entry at every E, as tidy tables.

Summary time columns, all for one layer (the definitions the README repeats):

* ``wall_clock_s``: from the start to the last GPU's finish;
* ``compute_s``: kernel time of the GPU that finishes last (the critical GPU), launch excluded;
* ``launch_s``: that GPU's kernel-launch overhead;
* ``communication_s``: the union of the intervals in which that GPU has a transfer in flight
  (sending or receiving);
* ``exposed_communication_s``: ``wall_clock_s - compute_s - launch_s``, the time its compute stream
  waits;
* ``overhead_s``: ``wall_clock_s - compute_s``, the overhead that the paper's ``alpha E^2`` describes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from secmoe_sim.engine import SimulationRun, run_plan
from secmoe_sim.plan.costs import KernelTimer
from secmoe_sim.plan.dense import dense_plan
from secmoe_sim.plan.sectional import sectional_plan
from secmoe_sim.plan.steps import LayerPlan
from secmoe_sim.plan.token_moe import token_moe_plan
from secmoe_sim.spec.scenario import Scenario
from secmoe_sim.spec.workload import DenseArchitecture, SectionalMoEArchitecture, TokenMoEArchitecture

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

    def best(self) -> pd.DataFrame:
        """The row of each architecture entry with the lowest wall-clock."""
        index = self.summary.groupby("label", sort=False)["wall_clock_s"].idxmin()
        return self.summary.loc[index].reset_index(drop=True)


def layer_plans(scenario: Scenario, seed: int) -> list[LayerPlan]:
    """Every (architecture entry, E) the scenario asks for, as op graphs.

    Each entry gets its own child stream of the seed, so adding an entry never changes another's
    random draws.
    """
    layer, cluster = scenario.workload.layer, scenario.hardware
    streams = np.random.SeedSequence(seed).spawn(len(scenario.workload.architectures))
    plans = []
    for arch, stream in zip(scenario.workload.architectures, streams):
        if isinstance(arch, SectionalMoEArchitecture):
            plans += [sectional_plan(layer, arch, cluster, e) for e in scenario.expert_counts(arch)]
        elif isinstance(arch, TokenMoEArchitecture):
            plans.append(token_moe_plan(layer, arch, cluster, np.random.default_rng(stream)))
        elif isinstance(arch, DenseArchitecture):
            plans.append(dense_plan(layer, arch, cluster))
    return plans


def simulate(scenario: Scenario, seed: int | None = None, timer: KernelTimer | None = None) -> Results:
    """Simulate every architecture entry of ``scenario``; ``seed`` overrides the scenario's.

    ``timer`` replaces the roofline op times (e.g. with measured timings replayed).
    """
    seed = scenario.seed if seed is None else seed
    summaries, timelines = [], []
    for plan in layer_plans(scenario, seed):
        run = run_plan(plan, timer, scenario.network, faults=scenario.faults)
        summaries.append(summarize(run, scenario))
        timelines.append(run.timeline.assign(entry=plan.label, num_experts=plan.num_experts))
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
    """One summary row (design.md "Results") for one simulated layer."""
    plan, timeline = run.plan, run.timeline
    finished = np.asarray(run.finished_at)
    wall_clock_s = float(finished.max())
    critical = int(np.argmax(finished))
    kernels = timeline[(timeline["kind"] == "kernel") & (timeline["gpu"] == critical)]
    compute_s = float((kernels["finished_at"] - kernels["started_at"] - kernels["launch_s"]).sum())
    launch_s = float(kernels["launch_s"].sum())
    transfers = timeline[timeline["kind"] == "transfer"]
    touching = transfers[(transfers["src"] == critical) | (transfers["dst"] == critical)]
    communication_s = interval_union_s(touching["started_at"].to_numpy(), touching["finished_at"].to_numpy())
    all_kernels = timeline[timeline["kind"] == "kernel"]
    compute_all_gpus_s = float((all_kernels["finished_at"] - all_kernels["started_at"] - all_kernels["launch_s"]).sum())
    send_busy_all_gpus_s = sum(
        interval_union_s(sent["started_at"].to_numpy(), sent["finished_at"].to_numpy()) for _, sent in transfers.groupby("src")
    )
    peak_memory = max(plan.peak_memory_bytes(scenario.workload.layer.passes))
    exposed_s = wall_clock_s - compute_s - launch_s
    if abs(exposed_s) <= FLOAT_NOISE * wall_clock_s:  # summing kernel durations leaves rounding residue
        exposed_s = 0.0
    return {
        "scenario": scenario.name,
        "architecture": plan.architecture,
        "label": plan.label,
        "num_experts": plan.num_experts,
        "sweep_mode": plan.sweep_mode,
        "num_gpus": plan.cluster.num_gpus,
        "wall_clock_s": wall_clock_s,
        "compute_s": compute_s,
        "launch_s": launch_s,
        "communication_s": communication_s,
        "exposed_communication_s": exposed_s,
        "overhead_s": wall_clock_s - compute_s,
        "critical_gpu": critical,
        "compute_all_gpus_s": compute_all_gpus_s,
        "launch_all_gpus_s": float(all_kernels["launch_s"].sum()),
        "send_busy_all_gpus_s": send_busy_all_gpus_s,
        "peak_memory_bytes": peak_memory,
        "memory_capacity_bytes": plan.cluster.gpu.memory_capacity,
        "oom": bool(peak_memory > plan.cluster.gpu.memory_capacity),
        "params": plan.params,
        "flops": plan.flops,
        "flops_per_token": plan.flops_per_token,
        "messages": len(transfers),
        "bytes_sent": float(transfers["bytes"].sum()),
        "dropped_tokens": plan.dropped_tokens,
        "num_events": run.num_events,
    }
