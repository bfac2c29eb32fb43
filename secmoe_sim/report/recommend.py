"""The words of ``recommend``: the verdict first, the configuration to use, the baselines, how sure, what moves it."""

from __future__ import annotations

from secmoe_sim.analysis.recommend import Configuration, Recommendation
from secmoe_sim.report.text import wrapped
from secmoe_sim.spec.units import format_count, format_duration, format_flops

BOUND_REASONS = {
    "min_section_width": "the next E would make sections narrower than min_section_width",
    "d_model": "no larger E divides d_model",
    "gpus": "the next E does not fit the placement rules on these GPUs",
    "sequences": "the next E would leave GPUs without a sequence (more GPUs than sequences)",
    "experts_list": "it is the end of the entry's list of E",
}


def _name(configuration: Configuration) -> str:
    placement = f" [{configuration.placement}]" if configuration.placement else ""
    experts = f" E={configuration.num_experts}" if configuration.architecture == "sectional_moe" else ""
    return f"'{configuration.label}'{placement}{experts}"


def _size(configuration: Configuration) -> str:
    return f"{format_count(configuration.params)} parameters, {format_flops(configuration.flops_per_token)}/token"


def _ratio(faster_s: float, slower_s: float) -> str:
    return f"{slower_s / faster_s:.2f}x"


def verdict(found: Recommendation) -> str:
    """The first line: does the sectional layer pay off here, and against what."""
    best, dense = found.best_sectional, found.fastest_dense
    gpus = found.scenario.hardware.num_gpus
    if best is None:
        alternative = f" Use {_name(found.recommended)}." if found.recommended else ""
        return f"No sectional configuration fits in memory on these {gpus} GPUs.{alternative}"
    if not found.pays_off and dense is not None:
        return (
            f"Sectional does not pay off on this cluster: dense {_name(dense)} is {_ratio(dense.wall_clock_s, best.wall_clock_s)} "
            f"faster ({format_duration(dense.wall_clock_s)} against {format_duration(best.wall_clock_s)} for the best sectional "
            f"configuration, {_name(best)})."
        )
    against = (
        f", {_ratio(best.wall_clock_s, dense.wall_clock_s)} faster than dense {_name(dense)} on the same {gpus} GPUs "
        f"({_size(best)} against {_size(dense)})"
        if dense is not None
        else " (the scenario has no dense entry that fits to compare with)"
    )
    return f"Sectional pays off: use {_name(best)}: one layer takes {format_duration(best.wall_clock_s)}{against}."


def recommendation_text(found: Recommendation) -> str:
    """The recommendation as lines a person can act on."""
    scenario = found.scenario
    lines = [
        f"Recommendation for {scenario.name} ({scenario.hardware.num_gpus} x {scenario.hardware.gpu.name}):",
        wrapped(verdict(found)),
    ]
    lines.append(
        wrapped(
            "'Best' is about speed only: model quality is not simulated, and a sectional layer's experts hold 12 d^2 / E "
            "parameters in all."
        )
    )
    best = found.best_sectional
    if best is not None and best.at_bound:
        edge = "largest" if best.at_bound != "sequences" else "last E before idle GPUs"
        lines.append(
            wrapped(
                f"E = {best.num_experts} is the {edge} this entry allows ({best.at_bound}: {BOUND_REASONS[best.at_bound]}); "
                "the optimum may lie beyond what was simulated."
            )
        )
    lines.append(f"On the scenario's {scenario.hardware.num_gpus} GPUs (configurations that fit in memory):")
    for configuration in found.sectional + found.baselines:
        comparison = ""
        if best is not None and configuration != best:
            comparison = f" ({configuration.wall_clock_s / best.wall_clock_s:.2f}x the best sectional's)"
        lines.append(
            wrapped(
                f"- {_name(configuration)}: {format_duration(configuration.wall_clock_s)}{comparison}; {_size(configuration)}",
                "  ",
            )
        )
    if found.other_gpu_counts:
        lines.append("On other GPU counts (expert_per_gpu), compared in GPU-time with dense on the same GPUs:")
        for sectional, dense in found.other_gpu_counts:
            against = (
                f" against {_name(dense)} {format_duration(dense.gpu_seconds)} ({dense.gpu_seconds / sectional.gpu_seconds:.2f}x)"
                if dense is not None
                else ""
            )
            lines.append(
                wrapped(
                    f"- {_name(sectional)} on {sectional.num_gpus} GPUs: {format_duration(sectional.gpu_seconds)} GPU-time{against}",
                    "  ",
                )
            )
    for configuration in found.out_of_memory:
        lines.append(wrapped(f"- out of memory at every E simulated, left out: {_name(configuration)}", "  "))
    per_device = found.per_device
    if per_device is not None:
        fit = per_device.fits[per_device.best_form]
        shape = (
            "the paper's quadratic form holds" if per_device.paper_form_holds else "the paper's alpha E^2 does not describe it"
        )
        lines.append(
            wrapped(
                f"How sure: the analytical shortcut (alpha = {per_device.alpha_s:.3g} s fitted) picks E = {per_device.e_opt_feasible}, "
                f"{per_device.regret:.1%} slower than the simulated best; the overhead is best described by {fit.formula} "
                f"(R2 {fit.r2:.3f}): {shape}."
            )
        )
    if found.sensitivity:
        lines.append("What would move the answer most (one change at a time, the chosen entry re-simulated):")
        for study in sorted(found.sensitivity, key=lambda s: s.relative_change):
            lines.append(
                f"    {study.change:32s} best E = {study.best_e:4d}, {format_duration(study.wall_clock_s):>9s} "
                f"({study.relative_change:+.1%})"
            )
    return "\n".join(lines)
