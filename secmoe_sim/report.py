"""Output directories: tables, trace, figure and metadata of a run, written together.

Every output directory gets ``metadata.json`` (tool version, scenario name and content hash, seed,
sweep modes, date), so a result is never separated from what produced it.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd

from secmoe_sim import __version__
from secmoe_sim.analytical import PER_DEVICE_VIEW, Overhead, cost_model, hardware_alpha_s, sectional_terms
from secmoe_sim.plots import wall_clock_vs_experts
from secmoe_sim.scenario import Scenario
from secmoe_sim.simulation import Results
from secmoe_sim.trace import chrome_trace
from secmoe_sim.workload import SectionalMoEArchitecture


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
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def analytical_curves(scenario: Scenario) -> pd.DataFrame:
    """Per-device analytical S(E) of each sectional entry with the hardware-estimated alpha."""
    layer, cluster = scenario.workload.layer, scenario.hardware
    overhead = Overhead(alpha_s=hardware_alpha_s(layer, cluster))
    rows = []
    for arch in scenario.workload.architectures:
        if not isinstance(arch, SectionalMoEArchitecture):
            continue
        model = cost_model(sectional_terms(layer, arch, cluster), PER_DEVICE_VIEW, arch.sweep_mode, cluster.num_gpus)
        for e in scenario.expert_counts(arch):
            rows.append({"label": arch.name, "num_experts": e, "analytical_s": float(model.total_s(e, overhead))})
    return pd.DataFrame(rows, columns=["label", "num_experts", "analytical_s"])


def write_json(path: Path, document: dict) -> None:
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def write_run_outputs(results: Results, out_dir: Path) -> list[Path]:
    """Write summary.csv, timeline.csv, trace.json, wall_clock_vs_experts.png and metadata.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in
             ("summary.csv", "timeline.csv", "trace.json", "wall_clock_vs_experts.png", "metadata.json")}
    results.summary.to_csv(paths["summary.csv"], index=False)
    results.timeline.to_csv(paths["timeline.csv"], index=False)
    best = results.best()
    timelines = []
    for row in best.itertuples(index=False):
        rows = results.timeline[(results.timeline["entry"] == row.label) & (results.timeline["num_experts"] == row.num_experts)]
        timelines.append((f"{row.label} E={row.num_experts}", rows))
    write_json(paths["trace.json"], chrome_trace(timelines))
    figure = wall_clock_vs_experts(results.summary, analytical_curves(results.scenario))
    figure.savefig(paths["wall_clock_vs_experts.png"], dpi=120)
    write_json(paths["metadata.json"], metadata(results.scenario, results.seed, command="run"))
    return list(paths.values())
