"""What the calibration commands show a person: the check-real figure and table, the replay census.

The measurements and their comparison are computed in :mod:`secmoe_sim.calibrate`; this module
only draws and words them.
"""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.figure import Figure

from secmoe_sim.calibrate.check_real import MODES, PERCENT, CheckResult
from secmoe_sim.calibrate.replay import KINDS, ReplayReport
from secmoe_sim.spec.units import SECOND_FACTORS

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
    return shown + "\n\n" + summary.to_string(index=False)


def replay_text(report: ReplayReport) -> str:
    """One line: how many kernels the replay timed by each rule."""
    totals = report.metadata()
    parts = ", ".join(f"{totals[f'replay_{kind}_ops']} {kind.replace('_', ' ')}" for kind in KINDS)
    line = f"replay of {report.trace_path}: kernels {parts}"
    if len(report.flagged):
        line += f" (flagged ops listed in {REPLAY_FLAGGED_CSV})"
    return line


def write_replay(report: ReplayReport, out_dir: Path) -> None:
    """Add the replay to the run's ``metadata.json`` and list the flagged ops beside it."""
    metadata_path = out_dir / "metadata.json"
    document = json.loads(metadata_path.read_text(encoding="utf-8"))
    document["replay"] = report.metadata()
    metadata_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    if len(report.flagged):
        report.flagged.to_csv(out_dir / REPLAY_FLAGGED_CSV, index=False)
