"""Figures of a run: DataFrames in, matplotlib Figures out (built without pyplot: no global backend, no display).

``wall_clock_vs_experts`` has two panels. The top one draws the simulated wall-clock against E for
every sectional entry and placement (solid, each naming its GPU count), the analytical S(E) of each
entry with the hardware alpha (dashed, the only dashed lines), every baseline in its own colour
(dotted: a horizontal line on the scenario's GPUs; a curve for dense re-simulated on G = E GPUs
beside ``expert_per_gpu`` entries), a star at each curve's simulated best E, a diamond at each
analytical optimum, and a red cross at every out-of-memory point. The bottom panel splits the
fastest configuration's wall-clock into compute, launch and exposed communication at every E.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

from secmoe_sim.spec.units import format_duration

SECTIONAL = "sectional_moe"
SAME_GPUS = "same_gpus"
ENTRY_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:cyan")  # one per sectional entry
PLACEMENT_MARKERS = {"replicated": "o", "node_local": "s", "spread": "^"}
BASELINE_COLOURS = ("black", "dimgray", "saddlebrown", "darkgoldenrod", "olive", "teal")  # never an entry's colour
SPLIT_COLOURS = {"compute_s": "#4c72b0", "launch_s": "#dd8452", "exposed_communication_s": "#c44e52"}
SPLIT_NAMES = {"compute_s": "compute", "launch_s": "launch", "exposed_communication_s": "exposed communication"}


def _gpus_text(rows: pd.DataFrame) -> str:
    counts = sorted(set(rows["num_gpus"].astype(int)))
    return f"{counts[0]} GPUs" if len(counts) == 1 else "G = E GPUs"


def _time_axis(axes: Axes) -> None:
    """Log time axis with plain labels (``19 ms``), not ``2 x 10^1``."""
    axes.set_yscale("log")
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: format_duration(value)))
    axes.yaxis.set_minor_formatter(NullFormatter())


def _experts_axis(axes: Axes, experts: np.ndarray) -> None:
    axes.set_xscale("log", base=2)
    axes.xaxis.set_major_locator(FixedLocator([float(e) for e in experts]))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_locator(NullLocator())


def _sectional_curves(axes: Axes, summary: pd.DataFrame, analytical: pd.DataFrame | None) -> None:
    sectional = summary[summary["architecture"] == SECTIONAL]
    labels = list(dict.fromkeys(sectional["label"]))
    colours = {label: ENTRY_COLOURS[index % len(ENTRY_COLOURS)] for index, label in enumerate(labels)}
    for (label, placement), rows in sectional.groupby(["label", "placement"], sort=False):
        rows = rows.sort_values("num_experts")
        colour = colours[str(label)]
        axes.plot(
            rows["num_experts"],
            rows["wall_clock_s"],
            "-",
            marker=PLACEMENT_MARKERS.get(str(placement), "o"),
            markersize=4,
            color=colour,
            label=f"{label} [{placement}], {_gpus_text(rows)}",
        )
        best = rows.iloc[int(rows["gpu_seconds"].to_numpy().argmin())]
        axes.plot(
            [best["num_experts"]],
            [best["wall_clock_s"]],
            "*",
            color=colour,
            markersize=13,
            markeredgecolor="black",
            markeredgewidth=0.6,
        )
        oom = rows[rows["oom"]]
        if not oom.empty:
            axes.plot(oom["num_experts"], oom["wall_clock_s"], "x", color="red", markersize=11, markeredgewidth=2)
    if analytical is None:
        return
    for label, model in analytical.groupby("label", sort=False):
        model = model.sort_values("num_experts")
        colour = colours.get(str(label), "black")
        axes.plot(
            model["num_experts"],
            model["analytical_s"],
            "--",
            linewidth=1.2,
            color=colour,
            label=f"{label!s}: analytical S(E), hardware alpha",
        )
        lowest = model.iloc[int(model["analytical_s"].to_numpy().argmin())]
        axes.plot(
            [lowest["num_experts"]],
            [lowest["analytical_s"]],
            "D",
            color=colour,
            markersize=7,
            markeredgecolor="black",
            markeredgewidth=0.6,
        )


def _baselines(axes: Axes, summary: pd.DataFrame) -> None:
    baselines = summary[(summary["architecture"] != SECTIONAL) & (summary["role"] != SAME_GPUS)]
    same_gpus = summary[summary["role"] == SAME_GPUS]
    for index, (label, rows) in enumerate(baselines.groupby("label", sort=False)):
        colour = BASELINE_COLOURS[index % len(BASELINE_COLOURS)]
        best = rows.iloc[int(rows["wall_clock_s"].to_numpy().argmin())]
        axes.axhline(
            float(best["wall_clock_s"]),
            linestyle=":",
            linewidth=1.6,
            color=colour,
            label=f"{label} ({best['architecture']}), {int(best['num_gpus'])} GPUs",
        )
        again = pd.concat([rows, same_gpus[same_gpus["label"].astype(str).str.startswith(f"{label}@")]])
        if len(again) > 1:
            again = again.sort_values("num_gpus")
            axes.plot(
                again["num_gpus"],
                again["wall_clock_s"],
                ":",
                marker="s",
                markersize=3,
                color=colour,
                label=f"{label} on G = E GPUs (beside expert_per_gpu)",
            )


def _split_panel(axes: Axes, summary: pd.DataFrame, scenario_gpus: int) -> None:
    sectional = summary[(summary["architecture"] == SECTIONAL) & (summary["num_gpus"] == scenario_gpus)]
    if sectional.empty:
        axes.set_visible(False)
        return
    fastest = sectional.iloc[int(sectional["wall_clock_s"].to_numpy().argmin())]
    rows = summary[(summary["label"] == fastest["label"]) & (summary["placement"] == fastest["placement"])]
    rows = rows.sort_values("num_experts")
    positions = np.arange(len(rows))
    bottom = np.zeros(len(rows))
    for column, colour in SPLIT_COLOURS.items():
        values = rows[column].to_numpy(dtype=float)
        axes.bar(positions, values, bottom=bottom, color=colour, label=SPLIT_NAMES[column])
        bottom += values
    axes.set_xticks(positions, [str(e) for e in rows["num_experts"]])
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: format_duration(value)))
    axes.set_xlabel("experts E (sections)")
    axes.set_ylabel("one layer")
    axes.set_title(
        f"where the time goes: {fastest['label']} [{fastest['placement']}], {int(fastest['num_gpus'])} GPUs", fontsize=9
    )
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    axes.grid(True, axis="y", alpha=0.3)


def wall_clock_vs_experts(
    summary: pd.DataFrame, analytical: pd.DataFrame | None = None, scenario_gpus: int | None = None
) -> Figure:
    """Simulated wall-clock against E with baselines and analytical curves, and the split of the fastest
    configuration (see the module docstring). ``analytical`` has columns ``label``, ``num_experts``, ``analytical_s``."""
    figure = Figure(figsize=(11, 8.5))
    top, bottom = figure.subplots(2, 1, gridspec_kw={"height_ratios": [2.2, 1]})
    _sectional_curves(top, summary, analytical)
    _baselines(top, summary)
    sectional = summary[summary["architecture"] == SECTIONAL]
    if not sectional.empty:
        _experts_axis(top, np.sort(sectional["num_experts"].unique()))
    _time_axis(top)
    top.set_xlabel("experts E (sections); baselines on G = E GPUs where drawn against E")
    top.set_ylabel("one layer, wall-clock (log scale)")
    top.set_title(
        f"{summary['scenario'].iloc[0]!s}: simulated wall-clock against E\n"
        "star: simulated best E; diamond: analytical optimum; red x: out of memory",
        fontsize=10,
    )
    top.grid(True, alpha=0.3)
    top.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    gpus = scenario_gpus if scenario_gpus is not None else int(summary["num_gpus"].mode().iloc[0])
    _split_panel(bottom, summary, gpus)
    figure.tight_layout()
    return figure
