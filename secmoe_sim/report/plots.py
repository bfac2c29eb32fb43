"""Figures of a run: DataFrames in, matplotlib Figures out (built without pyplot: no global backend, no display)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from secmoe_sim.spec.units import MILLISECONDS_PER_SECOND


def wall_clock_vs_experts(summary: pd.DataFrame, analytical: pd.DataFrame | None = None) -> Figure:
    """Simulated wall-clock against E for each sectional entry, baselines as horizontal lines.

    ``analytical`` (columns ``label``, ``num_experts``, ``analytical_s``) is drawn dashed per entry.
    """
    figure = Figure(figsize=(8, 5))
    axes = figure.subplots()
    sectional = summary[summary["architecture"] == "sectional_moe"]
    for label, rows in sectional.groupby("label", sort=False):
        rows = rows.sort_values("num_experts")
        (line,) = axes.plot(
            rows["num_experts"], rows["wall_clock_s"] * MILLISECONDS_PER_SECOND, "o-", label=f"{label} (simulated)"
        )
        oom = rows[rows["oom"]]
        if not oom.empty:
            axes.plot(
                oom["num_experts"],
                oom["wall_clock_s"] * MILLISECONDS_PER_SECOND,
                "x",
                color="red",
                markersize=12,
                markeredgewidth=2,
                label=f"{label}: out of memory",
            )
        if analytical is not None:
            model = analytical[analytical["label"] == label].sort_values("num_experts")
            axes.plot(
                model["num_experts"],
                model["analytical_s"] * MILLISECONDS_PER_SECOND,
                "--",
                color=line.get_color(),
                label=f"{label} (analytical S(E), hardware alpha)",
            )
    baselines = summary[summary["architecture"] != "sectional_moe"]
    for (label, rows), style in zip(baselines.groupby("label", sort=False), [":", "-.", (0, (5, 1))] * 10):
        axes.axhline(
            rows["wall_clock_s"].min() * MILLISECONDS_PER_SECOND,
            linestyle=style,
            color="grey",
            label=f"{label} ({rows['architecture'].iloc[0]})",
        )
    if not sectional.empty:
        axes.set_xscale("log", base=2)
        experts = np.sort(sectional["num_experts"].unique())
        axes.set_xticks(experts, [str(e) for e in experts])
    axes.set_yscale("log")
    axes.set_xlabel("experts E (sections)")
    axes.set_ylabel("one layer, wall-clock (ms, log scale)")
    axes.set_title(f"{summary['scenario'].iloc[0]}: simulated wall-clock against E")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure
