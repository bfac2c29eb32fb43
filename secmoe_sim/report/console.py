"""Text for the terminal: the table `run` prints and the report `analyze` prints."""

from __future__ import annotations

import numpy as np
import pandas as pd

from secmoe_sim.analysis.analytical import (
    PER_DEVICE_VIEW,
    TOTAL_VIEW,
    Overhead,
    alpha_flop_equivalent,
    collectives_per_layer,
    cost_model,
    hardware_alpha_s,
    host_pair_cluster,
    nearest_feasible,
    sectional_terms,
)
from secmoe_sim.plan.sectional import sectional_plan
from secmoe_sim.plan.topology import one_message_s
from secmoe_sim.simulation import Results, layer_plans
from secmoe_sim.spec.faults import describe as describe_fault
from secmoe_sim.spec.scenario import Scenario
from secmoe_sim.spec.units import DECIMAL_PREFIXES, format_bytes, format_duration, format_flops
from secmoe_sim.spec.workload import SectionalMoEArchitecture


def run_table(results: Results) -> str:
    """Per architecture entry: best E, wall-clock, and how it splits into compute and exposed communication."""
    best = results.best()
    header = (
        f"{'entry':28s} {'kind':14s} {'mode':15s} {'best E':>6s} {'GPUs':>5s} {'wall-clock':>11s} {'compute':>10s} "
        f"{'launch':>10s} {'exposed comm':>13s} {'peak mem':>10s}"
    )
    lines = [
        f"scenario {results.scenario.name} (seed {results.seed}): one layer, {results.scenario.workload.layer.passes}",
        header,
        "-" * len(header),
    ]
    for row in best.to_dict("records"):
        lines.append(
            f"{row['label']:28s} {row['architecture']:14s} {row['sweep_mode']:15s} {row['num_experts']:6d} {row['num_gpus']:5d} "
            f"{format_duration(row['wall_clock_s']):>11s} {format_duration(row['compute_s']):>10s} "
            f"{format_duration(row['launch_s']):>10s} {format_duration(row['exposed_communication_s']):>13s} "
            f"{format_bytes(row['peak_memory_bytes']):>10s}" + ("  OOM" if row["oom"] else "")
        )
    for fault in results.scenario.faults:
        lines.append(f"fault: {describe_fault(fault)}")
    oom = results.summary[results.summary["oom"]]
    if not oom.empty:
        configurations = ", ".join(f"{r.label} E={r.num_experts}" for r in oom.itertuples(index=False))
        lines.append(
            f"out of memory (peak above {format_bytes(oom['memory_capacity_bytes'].iloc[0])} per GPU, "
            f"still simulated): {configurations}"
        )
    return "\n".join(lines)


def analyze_text(scenario: Scenario, alpha_s: float | None = None) -> str:
    """Parameters, FLOPs, the analytical S(E) table and E_opt in both views, for every entry."""
    layer, cluster = scenario.workload.layer, scenario.hardware
    lines = [
        (
            f"scenario {scenario.name}: {cluster.num_gpus} GPUs ({cluster.nodes} x {cluster.gpus_per_node} {cluster.gpu.name}), "
            f"d_model={layer.d_model}, seq_len={layer.seq_len}, batch={layer.batch}, heads={layer.heads}, {layer.dtype}, {layer.passes}"
        ),
    ]
    if alpha_s is None:
        alpha_s = hardware_alpha_s(layer, cluster)
        message_s = one_message_s(host_pair_cluster(cluster), 0, 1)
        alpha_source = (
            f"hardware estimate: {collectives_per_layer(layer)} collectives x one empty message "
            f"({format_duration(message_s)} = per-message overhead + latency, GPU 0 -> 1)"
        )
    else:
        alpha_source = "given with --alpha"
    overhead = Overhead(alpha_s=alpha_s)
    lines.append(f"alpha = {format_duration(alpha_s)} ({alpha_source})")
    plans = layer_plans(scenario, scenario.seed)
    for arch in scenario.workload.architectures:
        lines.append("")
        if isinstance(arch, SectionalMoEArchitecture):
            lines += _sectional_lines(scenario, arch, overhead)
        else:
            plan = next(p for p in plans if p.label == arch.name)
            lines.append(
                f"{arch.name} ({arch.kind}): params {plan.params:.4g}, {format_flops(plan.flops_per_token)} per token, "
                f"{format_flops(plan.flops)} per layer"
            )
    return "\n".join(lines)


def _sectional_lines(scenario: Scenario, arch: SectionalMoEArchitecture, overhead: Overhead) -> list[str]:
    layer, cluster = scenario.workload.layer, scenario.hardware
    terms = sectional_terms(layer, arch, cluster)
    feasible = scenario.expert_counts(arch)
    lines = [
        (
            f"{arch.name} (sectional_moe, {arch.sweep_mode}): cost-model terms over all {layer.batch} sequences "
            f"(seconds at {terms.effective_flops_per_s / DECIMAL_PREFIXES['T']:.4g} TFLOP/s effective)"
        ),
        (
            f"  C_pre = {format_duration(terms.c_pre_s)}, K = {format_duration(terms.k_s)}, A = {format_duration(terms.a_s)}; "
            f"alpha = {alpha_flop_equivalent(overhead.alpha_s, terms):.4g} FLOP-equivalents"
        ),
    ]
    models = {view: cost_model(terms, view, arch.sweep_mode, cluster.num_gpus) for view in (TOTAL_VIEW, PER_DEVICE_VIEW)}
    table = pd.DataFrame(
        {
            "E": feasible,
            "params": [sectional_plan(layer, arch, cluster, e).params for e in feasible],
            "FLOP/token": [format_flops(sectional_plan(layer, arch, cluster, e).flops_per_token) for e in feasible],
            "S_total(E)": [format_duration(float(models[TOTAL_VIEW].total_s(e, overhead))) for e in feasible],
            "S_per_device(E)": [format_duration(float(models[PER_DEVICE_VIEW].total_s(e, overhead))) for e in feasible],
        }
    )
    table["params"] = table["params"].map(lambda p: f"{p:.4g}")
    lines += ["  " + line for line in table.to_string(index=False).splitlines()]
    for view, model in models.items():
        e_opt = model.e_opt(overhead)
        if not np.isfinite(e_opt):
            lines.append(f"  E_opt ({view} view): none, S(E) keeps falling (alpha = 0)")
            continue
        chosen = nearest_feasible(e_opt, feasible, model, overhead)
        form = "closed form (a1 / 2 alpha)^(1/3)" if model.a2_s == 0 else "root of 2 alpha E^4 - a1 E - 2 a2"
        lines.append(
            f"  E_opt ({view} view) = {e_opt:.3g} [{form}] -> feasible E = {chosen.best} "
            f"(neighbours {chosen.below}, {chosen.above})"
        )
    return lines
