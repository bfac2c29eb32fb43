"""Output directories: tables, trace, figure and metadata of a run, written together.

Every output directory gets ``metadata.json`` (tool version, scenario name and content hash, seed,
sweep modes, date), so a result is never separated from what produced it.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from secmoe_sim.analysis.analytical import analytical_curves
from secmoe_sim.report.chrome_trace import chrome_trace
from secmoe_sim.report.plots import wall_clock_vs_experts
from secmoe_sim.simulation import Results
from secmoe_sim.spec.scenario import Scenario
from secmoe_sim.version import __version__


def metadata(scenario: Scenario, seed: int, **extra) -> dict:
    """What produced a result: enough to reproduce it."""
    sweep_modes = sorted({getattr(a, "sweep_mode", "fixed_cluster") for a in scenario.workload.architectures})
    return {
        "tool": "secmoe-sim",
        "version": __version__,
        "scenario": scenario.name,
        "scenario_sha256": scenario.content_hash(),
        "seed": seed,
        "sweep_modes": sweep_modes,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **extra,
    }


def write_json(path: Path, document: dict) -> None:
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def write_run_outputs(results: Results, out_dir: Path) -> list[Path]:
    """Write summary.csv, timeline.csv, trace.json, wall_clock_vs_experts.png and metadata.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        name: out_dir / name
        for name in ("summary.csv", "timeline.csv", "trace.json", "wall_clock_vs_experts.png", "metadata.json")
    }
    results.summary.to_csv(paths["summary.csv"], index=False)
    results.timeline.to_csv(paths["timeline.csv"], index=False)
    best = results.best()
    best = best[best["role"] != "same_gpus"]
    timeline = results.timeline
    timelines = []
    for label, placement, experts in zip(best["label"], best["placement"], best["num_experts"]):
        rows = timeline[
            (timeline["entry"] == label) & (timeline["placement"] == placement) & (timeline["num_experts"] == experts)
        ]
        timelines.append((f"{label}{f' [{placement}]' if placement else ''} E={experts}", rows))
    write_json(paths["trace.json"], chrome_trace(timelines))
    figure = wall_clock_vs_experts(results.summary, analytical_curves(results.scenario), results.scenario.hardware.num_gpus)
    figure.savefig(paths["wall_clock_vs_experts.png"], dpi=120)
    write_json(paths["metadata.json"], metadata(results.scenario, results.seed, command="run"))
    return list(paths.values())
