"""Figures of the alpha measurement and the E_opt validation (DataFrames in, matplotlib Figures out, no pyplot)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

from secmoe_sim.analysis.alpha import AlphaMeasurement
from secmoe_sim.analysis.analytical import Overhead
from secmoe_sim.spec.units import MILLISECONDS_PER_SECOND, format_duration

PANEL_W_IN, PANEL_H_IN = 4.6, 3.6
PREDICTION_MARKERS = {
    "e_opt_feasible": ("o", "fitted alpha"),
    "e_opt_hardware_feasible": ("s", "hardware alpha"),
    "e_opt_physical": ("^", "physical form"),
}
# Op kinds of the Gantt chart: a kernel's cost-model group, or the collective on the comm stream.
KIND_COLOURS = {
    "pre": "tab:blue",
    "projection": "tab:green",
    "scores": "tab:purple",
    "elementwise": "tab:gray",
    "ffn": "tab:olive",
    "router": "tab:brown",
    "mix": "tab:cyan",
    "collective": "tab:orange",
}


def _experts_axis(axes: Axes, experts) -> None:
    axes.set_xscale("log", base=2)
    ticks = sorted({float(e) for e in experts})
    axes.xaxis.set_major_locator(FixedLocator(ticks))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_locator(NullLocator())


def _time_axis(axes: Axes, log: bool = True) -> None:
    if log:
        axes.set_yscale("log")
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: format_duration(value)))
    axes.yaxis.set_minor_formatter(NullFormatter())


def _grid(count: int, columns: int = 3) -> tuple[Figure, list[Axes]]:
    rows = max(1, math.ceil(count / columns))
    columns = min(columns, max(count, 1))
    figure = Figure(figsize=(PANEL_W_IN * columns, PANEL_H_IN * rows + 0.6))
    axes = figure.subplots(rows, columns, squeeze=False).ravel().tolist()
    for extra in axes[count:]:
        extra.set_visible(False)
    return figure, axes[:count]


def _case_title(m: AlphaMeasurement) -> str:
    return f"{m.label} [{m.placement}]\n{m.sweep_mode}, {m.view}"


def s_of_e(measurements: list[AlphaMeasurement], title: str) -> Figure:
    """Per case (per-device view): simulated wall-clock against the analytical S(E) with the fitted and the
    hardware alpha, the cost model plus the best form, and the physical bound."""
    cases = [m for m in measurements if m.view == "per_device"]
    figure, panels = _grid(len(cases))
    for axes, m in zip(panels, cases):
        experts = np.array(m.experts, dtype=float)
        dense = np.geomspace(experts.min(), experts.max(), 200)
        axes.plot(experts, m.wall_clock_s, "ko", label="simulated wall-clock")
        axes.plot(dense, m.model.total_s(dense, Overhead(m.alpha_s)), "--", label="paper S(E), fitted alpha")
        axes.plot(dense, m.model.total_s(dense, Overhead(m.alpha_hardware_s)), "-.", label="paper S(E), hardware alpha")
        if m.view == "per_device":
            axes.plot(experts, m.physical_s, "^:", label="physical prediction (hardware)")
        if m.best_form:
            axes.plot(
                dense,
                np.asarray(m.model.compute_s(dense)) + m.fits[m.best_form](dense),
                ":",
                label=f"cost model + {m.fits[m.best_form].formula}",
            )
        axes.axvline(m.e_opt_simulated, color="grey", alpha=0.4)
        _experts_axis(axes, experts)
        _time_axis(axes)
        axes.set_xlabel("experts E")
        axes.set_title(
            f"{_case_title(m)}: regret {m.regret:.0%} / {m.regret_hardware_alpha:.0%} / {m.regret_physical_form:.0%}", fontsize=8
        )
        axes.grid(True, alpha=0.3)
    if panels:
        panels[0].legend(fontsize=6)
    figure.suptitle(f"{title} (regret: fitted alpha / hardware alpha / physical form)")
    figure.tight_layout()
    return figure


def overhead_fits(measurements: list[AlphaMeasurement], title: str) -> Figure:
    """Per case: the simulated overhead with every fitted form (the ranked best thick); unranked forms dotted."""
    figure, panels = _grid(len(measurements))
    for axes, m in zip(panels, measurements):
        experts = np.array(m.experts, dtype=float)
        dense = np.geomspace(experts.min(), experts.max(), 200)
        axes.plot(experts, np.array(m.overhead_s) * MILLISECONDS_PER_SECOND, "ko", label="simulated")
        for name, fit in m.fits.items():
            width = 2.5 if name == m.best_form else 1.0
            style = "-" if fit.ranked else ":"
            axes.plot(
                dense, fit(dense) * MILLISECONDS_PER_SECOND, style, linewidth=width, label=f"{fit.formula} (R2 {fit.r2:.2f})"
            )
        _experts_axis(axes, experts)
        axes.grid(True, alpha=0.3)
        best = m.fits[m.best_form].formula if m.best_form else "none ranked"
        axes.set_title(f"{_case_title(m)}; best: {best} (n = {m.n_points})", fontsize=8)
        axes.set_ylabel("overhead (ms)")
        axes.set_xlabel("experts E")
        axes.legend(fontsize=5)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def e_opt_scatter(table: pd.DataFrame) -> Figure:
    """Predicted (feasible) against simulated E_opt, one marker per case and prediction, with y = x."""
    figure = Figure(figsize=(6.5, 6))
    axes = figure.subplots()
    for index, (column, (marker, name)) in enumerate(PREDICTION_MARKERS.items()):
        jitter = 1.0 + 0.05 * (index - 1)  # side by side, so equal points stay visible
        axes.plot(table["e_opt_simulated"] * jitter, table[column], marker, alpha=0.6, linestyle="none", label=name)
    limits = [1, max(table["e_opt_simulated"].max(), table[list(PREDICTION_MARKERS)].max().max()) * 1.5]
    axes.plot(limits, limits, "k--", linewidth=1, label="y = x")
    for axis in (axes.xaxis, axes.yaxis):
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.set_xscale("log", base=2)
    axes.set_yscale("log", base=2)
    axes.set_xlabel("simulated E_opt (argmin of the view's objective)")
    axes.set_ylabel("predicted E_opt (nearest feasible)")
    axes.set_title("Do the predictions land on the simulated optimum?")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    return figure


def e_opt_trend(table: pd.DataFrame, axis: str) -> Figure:
    """Simulated and hardware-alpha E_opt against one varied dimension, per scenario, entry and placement
    (per-device view); censored optima (at a bound) drawn hollow."""
    rows = table[((table["varied"] == axis) | (table["varied"] == "base")) & (table["view"] == "per_device")]
    figure = Figure(figsize=(12, 4.8))
    axes_row = figure.subplots(1, 2, sharey=True)
    for axes, mode in zip(axes_row, ("fixed_cluster", "expert_per_gpu")):
        chosen = rows[rows["sweep_mode"] == mode]
        for (scenario, label, placement), group in chosen.groupby(["base_scenario", "label", "placement"]):
            group = group.sort_values(axis)
            (line,) = axes.plot(group[axis], group["e_opt_simulated"], "-", label=f"{scenario} {label} [{placement}]")
            censored = group["at_bound"].fillna("").astype(str) != ""
            axes.plot(group[axis][~censored], group["e_opt_simulated"][~censored], "o", color=line.get_color())
            axes.plot(group[axis][censored], group["e_opt_simulated"][censored], "o", mfc="none", color=line.get_color())
            axes.plot(group[axis], group["e_opt_hardware_feasible"], "x--", color=line.get_color(), alpha=0.6)
        axes.set_xscale("log", base=2)
        axes.set_yscale("log", base=2)
        for axis_ in (axes.xaxis, axes.yaxis):
            axis_.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.set_xlabel(axis)
        axes.set_title(f"{mode} (per-device view)")
        axes.grid(True, alpha=0.3)
        if len(chosen):
            axes.legend(fontsize=5, loc="upper left", bbox_to_anchor=(0, -0.15), ncol=2)
    axes_row[0].set_ylabel("E_opt (hollow: at a bound; x: hardware alpha)")
    figure.suptitle(f"E_opt against {axis}: the paper says it grows")
    figure.tight_layout()
    return figure


def gantt(timeline: pd.DataFrame, title: str) -> Figure:
    """Per-GPU Gantt chart of one layer, coloured by op kind, with the layer's end marked."""
    gpus = sorted(timeline["gpu"].unique())
    figure = Figure(figsize=(11, 0.32 * len(gpus) + 1.8))
    axes = figure.subplots()
    ops = timeline[timeline["kind"] != "transfer"]
    kinds = np.where(ops["stream"] == "comm", "collective", ops["group"].fillna("").astype(str))
    for offset, stream in ((-0.18, "compute"), (0.18, "comm")):
        for kind, colour in KIND_COLOURS.items():
            chosen = ops[(ops["stream"] == stream) & (kinds == kind)]
            for gpu in gpus:
                rows = chosen[chosen["gpu"] == gpu]
                if rows.empty:
                    continue
                spans = list(
                    zip(
                        rows["started_at"] * MILLISECONDS_PER_SECOND,
                        (rows["finished_at"] - rows["started_at"]) * MILLISECONDS_PER_SECOND,
                    )
                )
                axes.broken_barh(spans, (float(gpu) + offset - 0.15, 0.3), facecolors=colour, edgecolor="white", linewidth=0.3)
    end_ms = float(timeline["finished_at"].max()) * MILLISECONDS_PER_SECOND
    axes.axvline(end_ms, color="black", linewidth=1)
    axes.annotate(f"layer ends: {format_duration(end_ms / MILLISECONDS_PER_SECOND)}", (end_ms, -0.7), ha="right", fontsize=8)
    axes.set_yticks(gpus, [f"GPU {g}" for g in gpus])
    axes.set_ylim(len(gpus) - 0.4, -1.0)
    axes.set_xlabel("time (ms); upper bar: compute stream, lower bar: communication stream")
    axes.set_title(title)
    present = set(kinds)
    handles = [Patch(color=c, label=k) for k, c in KIND_COLOURS.items() if k in present]
    axes.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    return figure
