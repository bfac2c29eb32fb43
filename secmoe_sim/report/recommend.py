"""The words of ``recommend``: the configuration to use, the baselines beside it, how sure, what moves it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from secmoe_sim.analysis.recommend import Recommendation
from secmoe_sim.spec.units import format_duration, format_flops


def _describe(row: Mapping[str, Any]) -> str:
    return (
        f"{format_duration(row['wall_clock_s'])} ({row['params']:.3g} parameters, "
        f"{format_flops(row['flops_per_token'])} per token, {int(row['num_gpus'])} GPUs)"
    )


def recommendation_text(found: Recommendation) -> str:
    """The recommendation as lines a person can act on."""
    scenario = found.scenario
    best = {str(label): {str(k): v for k, v in row.items()} for label, row in found.best.to_dict("index").items()}
    if not found.chosen or found.per_device is None:
        return f"{scenario.name}: no sectional_moe entry, nothing to recommend."
    row = best[found.chosen]
    lines = [
        f"Recommendation for {scenario.name} ({scenario.hardware.num_gpus} x {scenario.hardware.gpu.name}):",
        (
            f"- Use E = {int(row['num_experts'])} experts ({row['sweep_mode']}, entry '{found.chosen}'): "
            f"one layer takes {_describe(row)}."
        ),
    ]
    for label, other in best.items():
        if other["architecture"] == "sectional_moe":
            if label != found.chosen:
                lines.append(
                    f"- Entry '{label}' ({other['sweep_mode']}): best E = {int(other['num_experts'])}, {_describe(other)}."
                )
            continue
        ratio = other["wall_clock_s"] / row["wall_clock_s"]
        verdict = f"{ratio:.2f}x faster than" if ratio >= 1 else f"{1 / ratio:.2f}x slower than"
        lines.append(f"- Against {other['architecture']} '{label}': sectional is {verdict} it; {label}: {_describe(other)}.")
    per_device = found.per_device
    fit = per_device.fits[per_device.best_form]
    shape = "the paper's quadratic form holds" if per_device.paper_form_holds else "the paper's alpha E^2 does not describe it"
    lines.append(
        f"- How sure: the analytical shortcut (alpha = {per_device.alpha_s:.3g} s fitted) picks E = {per_device.e_opt_feasible}, "
        f"{per_device.regret:.1%} slower than the simulated best; the overhead is best described by {fit.formula} "
        f"(R2 {fit.r2:.3f}): {shape}."
    )
    lines.append("- What would move the answer most (one change at a time, sectional entry re-simulated):")
    for study in sorted(found.sensitivity, key=lambda s: s.relative_change):
        lines.append(
            f"    {study.change:32s} best E = {study.best_e:4d}, {format_duration(study.wall_clock_s):>9s} "
            f"({study.relative_change:+.1%})"
        )
    return "\n".join(lines)
