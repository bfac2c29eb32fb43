"""The figures of a sweep directory, written as PNG next to its results (``secmoe-sim plot``)."""

from __future__ import annotations

from pathlib import Path

from secmoe_sim.sweep.plots import best_experts_heatmap, e_opt_across_sweep, speedup_heatmap
from secmoe_sim.sweep.spec import SweepError
from secmoe_sim.sweep.store import read_results
from secmoe_sim.sweep.tables import (
    axis_columns,
    best_experts,
    fix_other_axes,
    parse_at,
    plane_axes,
    speedup_over_token_moe,
    written_labels,
)

FIGURE_DPI = 120
BEST_EXPERTS = "best_experts"
SPEEDUP = "speedup_vs_token_moe"
E_OPT = "analytical_vs_simulated_e_opt"


def write_sweep_figures(
    sweep_dir: Path,
    out_dir: Path | None = None,
    x: str | None = None,
    y: str | None = None,
    at: list[str] | None = None,
    figure_format: str = "png",
) -> tuple[list[Path], list[str]]:
    """Draw the sweep's figures into ``out_dir`` (default: the sweep directory) as ``figure_format``
    files (png, svg or pdf).

    ``x`` and ``y`` pick the heatmap axes (default: the first two grid dimensions); ``at`` fixes
    other grid dimensions (``PATH=VALUE`` as written in the sweep file; default: their first value).
    Returns the written files and notes on figures that could not be drawn.
    """
    results, metadata = read_results(sweep_dir)
    if results.empty:
        raise SweepError(str(sweep_dir), "", "results.parquet has no completed points to plot")
    out_dir = Path(out_dir) if out_dir is not None else Path(sweep_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    axes = axis_columns(metadata)
    labels = written_labels(metadata)
    x, y = plane_axes(metadata, x, y)
    plane, caption = fix_other_axes(results, metadata, x, y, parse_at(metadata, at or []))
    best_all = best_experts(results, axes)
    if best_all.empty:
        raise SweepError(str(sweep_dir), "", "the sweep has no sectional_moe entry: there is no best E to plot")
    best_plane = best_experts(plane, axes)
    if best_plane.empty:
        raise SweepError(str(sweep_dir), "", f"no completed point lies on the plane of {x} and {y} at {caption}")
    written, notes = [], []
    figures = {
        BEST_EXPERTS: best_experts_heatmap(best_plane, x, y, labels, caption),
        E_OPT: e_opt_across_sweep(best_all, axes, labels),
    }
    speedup = speedup_over_token_moe(plane, axes)
    if speedup.empty:
        notes.append(f"no {SPEEDUP}.{figure_format}: the sweep has no token_moe entry to compare with")
    else:
        figures[SPEEDUP] = speedup_heatmap(speedup, x, y, labels, caption)
    for name, figure in figures.items():
        path = out_dir / f"{name}.{figure_format}"
        figure.savefig(path, dpi=FIGURE_DPI)
        written.append(path)
    return written, notes
