"""The report ``analyze`` prints: parameters, FLOPs and the analytical S(E) and E_opt of every entry, no simulation.

Every symbol it prints is defined under the report (``SYMBOLS``), so the page reads on its own.
"""

from __future__ import annotations

import math

from secmoe_sim.analysis.analytical import collectives_per_layer
from secmoe_sim.analysis.overview import EntryOverview, Overview
from secmoe_sim.report.text import table_text, wrapped
from secmoe_sim.spec.units import DECIMAL_PREFIXES, format_count, format_duration, format_flops

SYMBOLS = (
    "C_pre: the pre-expert block, sequence reduction, mixing and upsampling over all sequences (seconds); "
    "K: the experts' projections (QKV, out, FFN) at E = 1, falling as K/E; A: the experts' attention scores, "
    "independent of E; alpha: the overhead coefficient of alpha E^2 (seconds, and seconds x effective FLOP/s as "
    "FLOP-equivalents); S_total(E) = C_pre + K/E + A + alpha E^2 summed over all GPUs; S_per_device(E): one GPU's "
    "critical path (docs/model.md, section 6); a1, a2: the coefficients of 1/E and 1/E^2 in the view's S(E) "
    "(total: a1 = K, a2 = 0; per device on a fixed cluster of G GPUs: a1 = K / G, a2 = 0; per device with one "
    "expert per GPU: a1 = C_pre + A, a2 = K); E_opt: the E minimising S, and its best feasible neighbour; params: "
    "the layer's parameters; FLOP/token: the layer's FLOPs per input token."
)


def _sectional_lines(entry: EntryOverview, batch: int) -> list[str]:
    terms = entry.terms
    assert terms is not None
    lines = [
        wrapped(
            f"{entry.label} (sectional_moe, {entry.sweep_mode}): cost-model terms over all {batch} sequences "
            f"(seconds at {terms.effective_flops_per_s / DECIMAL_PREFIXES['T']:.4g} TFLOP/s effective)"
        ),
        wrapped(
            f"C_pre = {format_duration(terms.c_pre_s)}, K = {format_duration(terms.k_s)}, A = {format_duration(terms.a_s)}; "
            f"alpha = {entry.alpha_flop_equiv:.4g} FLOP-equivalents",
            "  ",
        ),
    ]
    rows = [
        [
            str(row["E"]),
            format_count(row["params"]),
            format_flops(row["flops_per_token"]),
            format_duration(row["s_total_s"]),
            format_duration(row["s_per_device_s"]),
        ]
        for row in entry.rows
    ]
    table = table_text(["E", "params", "FLOP/token", "S_total(E)", "S_per_device(E)"], rows, right=(0, 1, 2, 3, 4))
    lines += ["  " + line for line in table.splitlines()]
    for optimum in entry.optima:
        if not math.isfinite(optimum.continuous):
            lines.append(f"  E_opt ({optimum.view} view): none, S(E) keeps falling (alpha = 0)")
            continue
        lines.append(
            wrapped(
                f"E_opt ({optimum.view} view) = {optimum.continuous:.3g} [{optimum.form}] -> feasible E = {optimum.feasible} "
                f"(neighbours {optimum.below}, {optimum.above})",
                "  ",
            )
        )
    return lines


def analyze_text(found: Overview) -> str:
    """The ``analyze`` report as text."""
    scenario = found.scenario
    layer, cluster = scenario.workload.layer, scenario.hardware
    source = (
        f"hardware estimate: {collectives_per_layer(layer)} collectives x one empty message "
        f"({format_duration(found.message_s)} = per-message overhead + latency, GPU 0 -> 1)"
        if found.alpha_source == "hardware"
        else "given with --alpha"
    )
    lines = [
        wrapped(
            f"scenario {scenario.name}: {cluster.num_gpus} GPUs ({cluster.nodes} x {cluster.gpus_per_node} {cluster.gpu.name}), "
            f"d_model={layer.d_model}, seq_len={layer.seq_len}, batch={layer.batch}, heads={layer.heads}, {layer.dtype}, "
            f"{layer.passes}"
        ),
        wrapped(f"alpha = {format_duration(found.alpha_s)} ({source})"),
    ]
    for entry in found.entries:
        lines.append("")
        if entry.terms is not None:
            lines += _sectional_lines(entry, layer.batch)
        else:
            lines.append(
                f"{entry.label} ({entry.kind}): params {format_count(entry.params)}, {format_flops(entry.flops_per_token)} per token"
            )
    lines += ["", wrapped("Symbols: " + SYMBOLS)]
    return "\n".join(lines)
