"""Figures of a sweep (DataFrames in, matplotlib Figures out, built without pyplot; never simpy).

* :func:`best_experts_heatmap`: the simulated best E of each sectional entry over two swept axes;
* :func:`speedup_heatmap`: token-MoE wall-clock over the best sectional wall-clock;
* :func:`e_opt_across_sweep`: the analytical per-device E_opt (hardware alpha) against the
  simulated best E, point by point.

The tables come from :mod:`secmoe_sim.sweep.tables`. ``labels`` maps an axis path to
``{value in the table: value as written in the sweep file}`` so ticks read ``"200 GB/s"``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

MAX_POINT_TICKS = 40  # beyond this many points, ticks give point ids rather than every point's values
PANEL_WIDTH_IN, PANEL_HEIGHT_IN = 6.5, 4.8
SPEEDUP_SCALE_MIN = 1.1  # the colour scale spans at least 1/1.1x to 1.1x, so near-equal times stay pale


def _ordered(values: pd.Series) -> list:
    """Distinct values in order of first appearance (the sweep file's order)."""
    return list(pd.unique(values))


QUANTITY_WORDS = {  # field names as a reader says them; other names read with underscores as spaces
    "seq_len": "sequence length (tokens)",
    "d_model": "model width d",
    "batch": "batch (sequences)",
    "heads": "attention heads",
    "nic_bandwidth_per_direction": "NIC bandwidth per direction",
    "gpus_per_node": "GPUs per node",
    "num_experts": "experts",
    "top_k": "top-k",
}
PLACE_WORDS = {"intra_node": "intra-node", "inter_node": "inter-node", "gpu": "GPU"}


def quantity_label(path: str) -> str:
    """An axis title for a swept field: the quantity in words, its dotted path beneath
    (``hardware.inter_node.nic_bandwidth_per_direction`` -> "inter-node NIC bandwidth per direction")."""
    parts = path.split(".")
    leaf = parts[-1]
    words = QUANTITY_WORDS.get(leaf, leaf.replace("_", " "))
    place = next((PLACE_WORDS[part] for part in reversed(parts[:-1]) if part in PLACE_WORDS), None)
    return f"{place + ' ' if place else ''}{words}\n({path})"


def _axis_ticks(axes, x: str, y: str | None, xs: list, ys: list, labels: dict[str, dict]) -> None:
    axes.set_xticks(range(len(xs)), [labels.get(x, {}).get(v, str(v)) for v in xs], rotation=30, ha="right")
    axes.set_xlabel(quantity_label(x))
    if y is None:
        axes.set_yticks([])
        return
    axes.set_yticks(range(len(ys)), [labels.get(y, {}).get(v, str(v)) for v in ys])
    axes.set_ylabel(quantity_label(y))


def _records(frame: pd.DataFrame) -> list[dict]:
    return frame.to_dict("records")


def _matrix(frame: pd.DataFrame, x: str, y: str | None, value: str) -> tuple[np.ndarray, list, list]:
    xs = _ordered(frame[x])
    ys = _ordered(frame[y]) if y is not None else [None]
    matrix = np.full((len(ys), len(xs)), np.nan)
    for record in _records(frame):
        matrix[ys.index(record[y]) if y is not None else 0, xs.index(record[x])] = record[value]
    return matrix, xs, ys


def best_experts_heatmap(best: pd.DataFrame, x: str, y: str | None, labels: dict[str, dict], caption: str = "") -> Figure:
    """One panel per sectional entry: the E with the lowest simulated wall-clock at each (x, y).

    Colour is log2(E); each cell shows E, a star where E is the largest simulated there (an optimum at
    the edge of the feasible range), and "OOM" where that configuration exceeds GPU memory.
    """
    entries = _ordered(best["label"])
    figure = Figure(figsize=(PANEL_WIDTH_IN * len(entries), PANEL_HEIGHT_IN))
    panels = figure.subplots(1, len(entries), squeeze=False)
    all_experts = np.sort(best["best_experts"].unique())
    low, high = np.log2(all_experts.min()), max(np.log2(all_experts.max()), np.log2(all_experts.min()) + 1)
    for axes, entry in zip(panels[0], entries):
        rows = best[best["label"] == entry]
        matrix, xs, ys = _matrix(rows, x, y, "best_experts")
        image = axes.imshow(np.log2(matrix), cmap="viridis", vmin=low, vmax=high, aspect="auto", origin="lower")
        oom = _matrix(rows.astype({"oom": float}), x, y, "oom")[0] if "oom" in rows else np.zeros_like(matrix)
        largest = _matrix(rows, x, y, "largest_experts")[0]
        for (i, j), experts in np.ndenumerate(matrix):
            if np.isnan(experts):
                continue
            shade = (np.log2(experts) - low) / (high - low)
            text = f"{int(experts)}" + ("*" if experts == largest[i, j] else "") + ("\nOOM" if oom[i, j] == 1 else "")
            axes.text(j, i, text, ha="center", va="center", fontsize=9, color="black" if shade > 0.6 else "white")
        _axis_ticks(axes, x, y, xs, ys, labels)
        mode = rows["sweep_mode"].iloc[0]
        axes.set_title(f"{entry} ({mode})", fontsize=10)
        bar = figure.colorbar(image, ax=axes, ticks=np.log2(all_experts))
        bar.ax.set_yticklabels([str(int(e)) for e in all_experts])
        bar.set_label("best E (lowest simulated wall-clock)")
    figure.suptitle("Simulated best expert count E" + (f"  [{caption}]" if caption else ""), fontsize=11)
    figure.text(
        0.01,
        0.01,
        "* the largest E simulated at that point: the optimum may lie beyond the feasible range",
        fontsize=8,
        color="dimgrey",
    )
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    return figure


def speedup_heatmap(speedup: pd.DataFrame, x: str, y: str | None, labels: dict[str, dict], caption: str = "") -> Figure:
    """Token-MoE wall-clock / best sectional wall-clock at each (x, y); above 1 (blue) the sectional layer is faster.

    The colour scale is logarithmic and symmetric about 1. Each cell shows the ratio and the
    sectional E that achieves it.
    """
    figure = Figure(figsize=(PANEL_WIDTH_IN + 1.5, PANEL_HEIGHT_IN))
    axes = figure.subplots()
    matrix, xs, ys = _matrix(speedup, x, y, "speedup")
    experts = _matrix(speedup, x, y, "sectional_experts")[0]
    finite = matrix[np.isfinite(matrix)]
    widest = max(finite.max(), 1 / finite.min(), SPEEDUP_SCALE_MIN)  # symmetric in log: 2x and 0.5x get equal colour
    norm = LogNorm(vmin=1 / widest, vmax=widest)
    image = axes.imshow(matrix, cmap="RdBu", norm=norm, aspect="auto", origin="lower")
    for (i, j), ratio in np.ndenumerate(matrix):
        if np.isfinite(ratio):
            strong = abs(norm(ratio) - 0.5) > 0.3
            axes.text(
                j,
                i,
                f"{ratio:.2f}x\nE={int(experts[i, j])}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if strong else "black",
            )
    _axis_ticks(axes, x, y, xs, ys, labels)
    powers_of_two = [2.0**k for k in range(-10, 11) if 1 / widest <= 2.0**k <= widest]
    bar = figure.colorbar(image, ax=axes, ticks=powers_of_two)
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda ratio, _: f"{ratio:g}x"))
    bar.ax.yaxis.set_minor_formatter(NullFormatter())
    bar.set_label("token-MoE wall-clock / sectional wall-clock")
    sectional = ", ".join(_ordered(speedup["sectional_label"]))
    token = ", ".join(_ordered(speedup["token_label"]))
    modes = ", ".join(_ordered(speedup["sectional_sweep_mode"]))
    axes.set_title(
        f"Speedup of the best sectional entry ({sectional}; {modes}) over token MoE ({token})"
        + (f"\n[{caption}]" if caption else ""),
        fontsize=10,
    )
    figure.tight_layout()
    return figure


def e_opt_across_sweep(best: pd.DataFrame, axes_columns: list[str], labels: dict[str, dict]) -> Figure:
    """Per sectional entry, point by point: simulated best E, analytical E_opt and its feasible neighbour.

    The analytical E_opt is the per-device view with alpha estimated from the hardware (one empty
    message per collective); the title counts the points where the feasible analytical E equals
    the simulated best E.
    """
    entries = _ordered(best["label"])
    figure = Figure(figsize=(13, 3.6 * len(entries)))
    panels = figure.subplots(len(entries), 1, squeeze=False)
    for axes, entry in zip(panels[:, 0], entries):
        rows = best[best["label"] == entry].sort_values("point_id")
        position = np.arange(len(rows))
        axes.plot(position, rows["best_experts"], "o", color="C0", label="simulated best E")
        axes.plot(
            position,
            rows["e_opt_analytical"],
            "x--",
            color="C1",
            linewidth=0.8,
            label="analytical E_opt (per device, hardware alpha)",
        )
        axes.plot(
            position,
            rows["e_opt_analytical_feasible"].astype(float),
            "s",
            mfc="none",
            color="C1",
            markersize=9,
            label="analytical E_opt, nearest feasible E",
        )
        axes.set_yscale("log", base=2)
        shown = np.unique(
            np.concatenate([rows["best_experts"].to_numpy(float), rows["e_opt_analytical_feasible"].dropna().to_numpy(float)])
        )
        axes.set_yticks(shown, [str(int(e)) for e in shown])
        if len(rows) <= MAX_POINT_TICKS:
            names = [", ".join(labels.get(c, {}).get(r[c], str(r[c])) for c in axes_columns) for r in _records(rows)]
            axes.set_xticks(position, names, rotation=60, ha="right", fontsize=7)
        else:
            axes.set_xlabel("point (in sweep order)")
        agree = int((rows["e_opt_analytical_feasible"].astype(float) == rows["best_experts"]).sum())
        axes.set_title(
            f"{entry} ({rows['sweep_mode'].iloc[0]}): feasible analytical E = simulated best E at {agree} of {len(rows)} points",
            fontsize=10,
        )
        axes.set_ylabel("experts E")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: the points fill the panel
    figure.suptitle("Analytical against simulated E_opt across the sweep (" + ", ".join(axes_columns) + ")", fontsize=11)
    figure.tight_layout()
    return figure
