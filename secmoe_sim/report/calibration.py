"""What the calibration commands show a person: the check-real figure and table, the replay census.

The measurements and their comparison are computed in :mod:`secmoe_sim.calibrate`; this module
only draws and words them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from secmoe_sim.calibrate.check_real import MODES, TARGET_MEDIAN_ERROR_PCT, TARGET_REGRET_PCT, CheckResult
from secmoe_sim.calibrate.replay import KINDS, UNMEASURED_WARNING_FRACTION, ReplayReport
from secmoe_sim.calibrate.trace import SHAPE_COLUMNS
from secmoe_sim.spec.units import PERCENT, SECOND_FACTORS

REPLAY_FLAGGED_CSV = "replay_flagged_ops.csv"


def check_real_figure(result: CheckResult, title: str) -> Figure:
    """Measured (with the 10-90 percentile band) and predicted time against E, one panel per entry."""
    entries = list(dict.fromkeys(result.table["entry"]))
    figure = Figure(figsize=(5.5 * len(entries), 4.2))
    axes = figure.subplots(1, len(entries), squeeze=False)
    to_ms = 1 / SECOND_FACTORS["ms"]
    for axis, entry in zip(axes[0], entries):
        rows = result.table[result.table["entry"] == entry]
        measured = rows[rows["mode"] == MODES[0]].sort_values("E")
        axis.errorbar(
            measured["E"],
            measured["measured_s"] * to_ms,
            fmt="ko-",
            capsize=3,
            label="measured (median, p10-p90)",
            yerr=[
                (measured["measured_s"] - measured["measured_p10_s"]) * to_ms,
                (measured["measured_p90_s"] - measured["measured_s"]) * to_ms,
            ],
        )
        for mode, style in zip(MODES, ("s--", "^:")):
            modeled = rows[rows["mode"] == mode].sort_values("E")
            axis.plot(modeled["E"], modeled["predicted_s"] * to_ms, style, label=f"predicted ({mode})")
        axis.set_xscale("log", base=2)
        axis.set_xticks(measured["E"], [str(e) for e in measured["E"]])
        axis.set_xlabel("experts E (sections)")
        axis.set_ylabel("one forward pass (ms)")
        axis.set_title(entry)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def check_real_text(result: CheckResult) -> str:
    """The check table and its per-(entry, mode) summary, for the terminal."""
    table = result.table.copy()
    for column in ("measured_s", "predicted_s"):
        table[column] = table[column].map(lambda s: f"{s / SECOND_FACTORS['ms']:.3f} ms")
    table["rel_error"] = table["rel_error"].map(lambda e: f"{e * PERCENT:+.1f}%")
    summary = result.summary.copy()
    for column in ("median_abs_error_pct", "worst_error_pct", "regret_pct"):
        summary[column] = summary[column].map(lambda v: f"{v:.1f}")
    shown = table[["entry", "E", "mode", "measured_s", "predicted_s", "rel_error"]].to_string(index=False)
    columns = ["entry", "mode", "median_abs_error_pct", "worst_error_pct", "measured_best_E", "predicted_best_E", "regret_pct"]
    return "\n\n".join([shown, summary[columns].to_string(index=False), "\n".join(target_lines(result))])


def target_lines(result: CheckResult) -> list[str]:
    """Per (entry, mode): each documented target met or missed, beside the measurement's own spread."""
    lines = [
        f"Targets (docs/calibration.md): median error within {TARGET_MEDIAN_ERROR_PCT:g}%, regret within {TARGET_REGRET_PCT:g}%"
    ]
    for row in result.summary.itertuples():
        median = "met" if row.median_error_target_met else "MISSED"
        regret = "met" if row.regret_target_met else "MISSED"
        lines.append(
            f"  {row.entry} ({row.mode}): median error {row.median_abs_error_pct:.1f}% {median}, regret "
            f"{row.regret_pct:.1f}% {regret}; measured spread (p10-p90 over the median) {row.measured_spread_pct:.1f}%"
        )
    met = int(result.summary["median_error_target_met"].sum() + result.summary["regret_target_met"].sum())
    lines.append(f"  {met} of {2 * len(result.summary)} targets met")
    return lines


def replay_text(report: ReplayReport) -> str:
    """One line: how many kernels the replay timed by each rule."""
    totals = report.metadata()
    parts = ", ".join(f"{totals[f'replay_{kind}_ops']} {kind.replace('_', ' ')}" for kind in KINDS)
    line = f"replay of {report.trace_path}: kernels {parts}"
    if len(report.flagged):
        line += f" (flagged ops listed in {REPLAY_FLAGGED_CSV})"
    return line


def replay_warning(report: ReplayReport) -> str | None:
    """A warning when more than a tenth of kernels were timed outside the trace's measured shapes."""
    fraction = report.unmeasured_fraction()
    if fraction <= UNMEASURED_WARNING_FRACTION:
        return None
    return (
        f"warning: {fraction:.0%} of kernels were timed outside the trace's measured shapes (extrapolated or roofline), "
        f"more than {UNMEASURED_WARNING_FRACTION:.0%}: this run is mostly the model, not the measurement; calibrate over "
        "shapes that cover this scenario"
    )


def write_replay(report: ReplayReport, out_dir: Path) -> None:
    """Add the replay to the run's ``metadata.json`` and list the flagged ops beside it."""
    metadata_path = out_dir / "metadata.json"
    document = json.loads(metadata_path.read_text(encoding="utf-8"))
    document["replay"] = report.metadata()
    metadata_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    if len(report.flagged):
        report.flagged.to_csv(out_dir / REPLAY_FLAGGED_CSV, index=False)


def prediction_text(table: pd.DataFrame) -> str:
    """The predicted op times of ``predict``, one row per shape, with the term that bound each."""
    from secmoe_sim.report.text import table_text
    from secmoe_sim.spec.units import format_duration, format_flops

    rows = []
    for row in table.to_dict("records"):
        shape = " ".join(f"{key}={row[key]:g}" for key in SHAPE_COLUMNS[row["op"]] if row.get(key) is not None)
        rows.append(
            [
                row["op"],
                shape,
                format_flops(row["flops"]),
                format_duration(row["compute_s"]),
                format_duration(row["memory_s"]),
                format_duration(row["fixed_s"]),
                format_duration(row["floor_s"]),
                row["bound"],
                format_duration(row["predicted_s"]),
            ]
        )
    headers = ["op", "shape", "FLOPs", "compute", "memory", "fixed", "floor", "bound", "predicted"]
    return table_text(headers, rows, right=(2, 3, 4, 5, 6, 8))
