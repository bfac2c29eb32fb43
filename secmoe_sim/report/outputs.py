"""Output directories: tables, trace, figure and metadata of a run, written together.

Every output directory gets ``metadata.json`` (tool version, scenario name and content hash, seed,
sweep modes, date), so a result is never separated from what produced it.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
from matplotlib.figure import Figure

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


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """``frame`` as CSV through pyarrow's writer (a tenth of pandas' time on a run's timeline; the same
    table reads back), strings quoted only where needed."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pa_csv.write_csv(table, path, write_options=pa_csv.WriteOptions(quoting_style="needed"))


def best_timelines(results: Results, trace_experts: int | None = None) -> list[tuple[str, pd.DataFrame]]:
    """The timelines the trace shows, named: each entry and placement at its best E, or at
    ``trace_experts`` where that E was simulated (baselines always at their own)."""
    summary = results.summary[results.summary["role"] != "same_gpus"]
    chosen = results.best()
    chosen = chosen[chosen["role"] != "same_gpus"]
    if trace_experts is not None:
        at = summary[summary["num_experts"] == trace_experts]
        keys = set(zip(at["label"], at["placement"]))
        chosen = pd.concat(
            [chosen[[(label, placement) not in keys for label, placement in zip(chosen["label"], chosen["placement"])]], at]
        )
    named = []
    for label, placement, experts in zip(chosen["label"], chosen["placement"], chosen["num_experts"]):
        rows = results.timeline_of(label, placement, experts)
        named.append((f"{label}{f' [{placement}]' if placement else ''} E={experts}", rows))
    return named


def run_figure(results: Results) -> Figure:
    """The run's figure: wall-clock against E per entry and placement, the baselines, the analytical S(E)."""
    return wall_clock_vs_experts(results.summary, analytical_curves(results.scenario), results.scenario.hardware.num_gpus)


def run_trace(results: Results, trace_experts: int | None = None) -> dict:
    """The run's Chrome/Perfetto trace document (every entry at its best E, or at ``trace_experts``)."""
    return chrome_trace(best_timelines(results, trace_experts))


FIGURE_FORMATS = ("png", "svg", "pdf")
TRACE_SEPARATORS = (",", ":")


def write_run_outputs(
    results: Results,
    out_dir: Path,
    trace_experts: int | None = None,
    gzip_trace: bool = False,
    figure_format: str = "png",
    extra_metadata: dict | None = None,
    scenario: Scenario | None = None,
) -> list[Path]:
    """Write summary.csv, timeline.csv, trace.json (``.json.gz`` with ``gzip_trace``), wall_clock_vs_experts.png
    (or ``.svg``/``.pdf``) and metadata.json (with ``extra_metadata``; ``scenario``, default the results',
    names the run: a model's scenario when its layers were simulated as ``layer_scenario`` made them); the
    trace shows every entry at its best E, or at ``trace_experts``."""
    if figure_format not in FIGURE_FORMATS:
        raise ValueError(f"figure_format must be one of {FIGURE_FORMATS}, got {figure_format!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trace_name = "trace.json.gz" if gzip_trace else "trace.json"
    figure_name = f"wall_clock_vs_experts.{figure_format}"
    paths = {name: out_dir / name for name in ("summary.csv", "timeline.csv", trace_name, figure_name, "metadata.json")}
    write_csv(results.summary, paths["summary.csv"])
    write_csv(results.timeline, paths["timeline.csv"])
    document = run_trace(results, trace_experts)
    if gzip_trace:
        with gzip.open(paths[trace_name], "wt", encoding="utf-8") as handle:
            json.dump(document, handle, separators=TRACE_SEPARATORS)
    else:  # no indentation: a trace is read by viewers, and indenting it costs 3x the time and 70% more bytes
        paths[trace_name].write_text(json.dumps(document, separators=TRACE_SEPARATORS), encoding="utf-8")
    figure = run_figure(results)
    figure.savefig(paths[figure_name], dpi=120)
    named = scenario if scenario is not None else results.scenario
    write_json(paths["metadata.json"], metadata(named, results.seed, command="run", **(extra_metadata or {})))
    return list(paths.values())
