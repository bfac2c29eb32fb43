"""Figures of the alpha measurement and the E_opt validation (DataFrames in, matplotlib Figures out, no pyplot)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from secmoe_sim.analysis.alpha import AlphaMeasurement
from secmoe_sim.analysis.analytical import Overhead
from secmoe_sim.spec.units import MICROSECONDS_PER_MILLISECOND, MILLISECONDS_PER_SECOND


def _log2_axis(axes, experts) -> None:
    axes.set_xscale("log", base=2)
    ticks = sorted({int(e) for e in experts})
    axes.set_xticks(ticks, [str(e) for e in ticks])


def s_of_e(measurements: list[AlphaMeasurement], title: str) -> Figure:
    """Per-device S(E): simulated wall-clock against the analytical S(E) (fitted alpha) and the best form."""
    per_device = [m for m in measurements if m.view == "per_device"]
    figure = Figure(figsize=(6 * len(per_device), 4.5))
    axes_row = figure.subplots(1, len(per_device), squeeze=False)
    for axes, m in zip(axes_row[0], per_device):
        experts = np.array(m.experts, dtype=float)
        dense = np.geomspace(experts.min(), experts.max(), 200)
        axes.plot(experts, np.array(m.wall_clock_s) * MILLISECONDS_PER_SECOND, "o", label="simulated wall-clock")
        paper = m.model.total_s(dense, Overhead(m.alpha_s))
        axes.plot(dense, paper * MILLISECONDS_PER_SECOND, "--", label=f"analytical S(E), alpha E^2 (alpha {m.alpha_s:.3g} s)")
        best = m.model.compute_s(dense) + m.fits[m.best_form](dense)
        axes.plot(dense, best * MILLISECONDS_PER_SECOND, ":", label=f"cost model + best form ({m.fits[m.best_form].formula})")
        axes.axvline(m.e_opt_simulated, color="grey", alpha=0.4)
        _log2_axis(axes, experts)
        axes.set_yscale("log")
        axes.set_xlabel("experts E")
        axes.set_ylabel("one layer (ms)")
        axes.set_title(f"{m.sweep_mode}: regret {m.regret:.1%}")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def overhead_fits(measurements: list[AlphaMeasurement], title: str) -> Figure:
    """Overhead against E with every fitted form, and the residuals of each form below."""
    figure = Figure(figsize=(4.5 * len(measurements), 6.5))
    grid = figure.subplots(2, len(measurements), squeeze=False, gridspec_kw={"height_ratios": [2, 1]})
    for column, m in enumerate(measurements):
        top, bottom = grid[0][column], grid[1][column]
        experts = np.array(m.experts, dtype=float)
        overhead_ms = np.array(m.overhead_s) * MILLISECONDS_PER_SECOND
        dense = np.geomspace(experts.min(), experts.max(), 200)
        top.plot(experts, overhead_ms, "ko", label="simulated")
        for name, fit in m.fits.items():
            width = 2.5 if name == m.best_form else 1.0
            top.plot(dense, fit(dense) * MILLISECONDS_PER_SECOND, linewidth=width, label=f"{fit.formula} (R2 {fit.r2:.3f})")
            bottom.plot(
                experts,
                (np.array(m.overhead_s) - fit(experts)) * MILLISECONDS_PER_SECOND * MICROSECONDS_PER_MILLISECOND,
                "o-",
                linewidth=width,
                markersize=3,
            )
        for axes in (top, bottom):
            _log2_axis(axes, experts)
            axes.grid(True, alpha=0.3)
        top.set_title(f"{m.sweep_mode}, {m.view} view\nbest: {m.fits[m.best_form].formula}", fontsize=9)
        top.set_ylabel("overhead (ms)")
        bottom.set_ylabel("residual (us)")
        bottom.set_xlabel("experts E")
        top.legend(fontsize=6)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def e_opt_scatter(table: pd.DataFrame) -> Figure:
    """Analytical (feasible) against simulated E_opt, one marker per case, with the y = x line."""
    figure = Figure(figsize=(6, 6))
    axes = figure.subplots()
    for index, ((mode, view), rows) in enumerate(table.groupby(["sweep_mode", "view"])):
        jitter = 1.0 + 0.04 * (index - 1.5)  # side by side, so equal points stay visible
        axes.plot(rows["e_opt_simulated"] * jitter, rows["e_opt_feasible"], "o", alpha=0.7, label=f"{mode}, {view}")
    limits = [1, max(table["e_opt_simulated"].max(), table["e_opt_feasible"].max()) * 1.5]
    axes.plot(limits, limits, "k--", linewidth=1, label="y = x")
    axes.set_xscale("log", base=2)
    axes.set_yscale("log", base=2)
    axes.set_xlabel("simulated E_opt (argmin of wall-clock)")
    axes.set_ylabel("analytical E_opt (fitted alpha, nearest feasible)")
    axes.set_title("Does the paper's E_opt land on the simulated optimum?")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    return figure


def e_opt_trend(table: pd.DataFrame, axis: str) -> Figure:
    """E_opt against one swept layer dimension (``seq_len`` or ``d_model``), per scenario and mode."""
    rows = table[(table["varied"] == axis) | (table["varied"] == "base")]
    rows = rows[rows["view"] == "per_device"]
    figure = Figure(figsize=(12, 4.5))
    axes_row = figure.subplots(1, 2, sharey=True)
    for axes, mode in zip(axes_row, ("fixed_cluster", "expert_per_gpu")):
        for scenario, group in rows[rows["sweep_mode"] == mode].groupby("base_scenario"):
            group = group.sort_values(axis)
            (line,) = axes.plot(group[axis], group["e_opt_simulated"], "o-", label=f"{scenario} simulated")
            axes.plot(group[axis], group["e_opt_analytical"], "x--", color=line.get_color(), label=f"{scenario} analytical")
        axes.set_xscale("log", base=2)
        axes.set_yscale("log", base=2)
        axes.set_xlabel(axis)
        axes.set_title(f"{mode} (per-device view)")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=6)
    axes_row[0].set_ylabel("E_opt")
    figure.suptitle(f"E_opt against {axis}: the paper says it grows")
    figure.tight_layout()
    return figure


def gantt(timeline: pd.DataFrame, title: str) -> Figure:
    """Per-GPU Gantt chart of one layer: kernels on the compute stream, collectives on the comm stream."""
    gpus = sorted(timeline["gpu"].unique())
    figure = Figure(figsize=(10, 0.35 * len(gpus) + 1.5))
    axes = figure.subplots()
    colours = {"compute": "tab:blue", "comm": "tab:orange"}
    for stream, offset in (("compute", -0.18), ("comm", 0.18)):
        rows = timeline[(timeline["stream"] == stream) & (timeline["kind"] != "transfer")]
        for gpu in gpus:
            group = rows[rows["gpu"] == gpu]
            spans = list(
                zip(
                    group["started_at"] * MILLISECONDS_PER_SECOND,
                    (group["finished_at"] - group["started_at"]) * MILLISECONDS_PER_SECOND,
                )
            )
            axes.broken_barh(
                spans, (float(gpu) + offset - 0.15, 0.3), facecolors=colours[stream], edgecolor="white", linewidth=0.3
            )
    axes.set_yticks(gpus, [f"GPU {g}" for g in gpus])
    axes.invert_yaxis()
    axes.set_xlabel("time (ms)")
    axes.set_title(title)
    handles = [Patch(color=c, label=s) for s, c in colours.items()]
    axes.legend(handles=handles, fontsize=8, loc="lower right")
    figure.tight_layout()
    return figure
