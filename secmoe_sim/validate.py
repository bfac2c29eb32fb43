"""Validation of the paper's analytical E_opt against the simulation, across scenarios and layer sizes.

For every scenario, and for variants of it with half and twice the sequence length and the model
width, the first sectional entry is simulated at every feasible E in both sweep modes; alpha is
measured in both views (:mod:`secmoe_sim.alpha`). The table has one row per (case, sweep mode,
view); the figures show S(E), the overhead fits, analytical against simulated E_opt, the trend of
E_opt with sequence length and width, and a per-GPU Gantt chart at the simulated best E.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pydantic import ValidationError
from tqdm import tqdm

from secmoe_sim.alpha import SWEEP_MODES, AlphaMeasurement, measure_alpha
from secmoe_sim.report import metadata, write_json
from secmoe_sim.scenario import Scenario
from secmoe_sim.simulation import Results
from secmoe_sim import validation_plots

VARIATION_FACTORS = (0.5, 2.0)
VARIED_DIMENSIONS = ("seq_len", "d_model")
TABLE_COLUMNS = [
    "base_scenario", "case", "varied", "seq_len", "d_model", "sweep_mode", "view", "best_form", "r2", "paper_form_holds",
    "alpha_s", "alpha_flop_equiv", "alpha_hardware_s", "e_opt_analytical", "e_opt_feasible", "e_opt_best_form",
    "e_opt_simulated", "regret",
]


@dataclass(frozen=True)
class ValidationCase:
    """One scenario to validate: a shipped or given scenario, or a variant with one dimension changed."""

    base: str
    varied: str
    scenario: Scenario


def variants(scenario: Scenario, factors=VARIATION_FACTORS) -> list[ValidationCase]:
    """The scenario itself and, per varied dimension, one variant per factor (invalid ones skipped)."""
    cases = [ValidationCase(scenario.name, "base", scenario)]
    for dimension in VARIED_DIMENSIONS:
        for factor in factors:
            value = int(getattr(scenario.workload.layer, dimension) * factor)
            data = scenario.model_dump(mode="json")
            data["workload"]["layer"][dimension] = value
            data["name"] = f"{scenario.name}.{dimension}-{value}"
            try:
                cases.append(ValidationCase(scenario.name, dimension, Scenario.model_validate(data)))
            except ValidationError:
                continue  # e.g. heads no longer divide the width: that variant does not exist
    return cases


def table_rows(case: ValidationCase, measurements: list[AlphaMeasurement]) -> list[dict]:
    layer = case.scenario.workload.layer
    rows = []
    for m in measurements:
        record = m.record()
        rows.append({
            "base_scenario": case.base, "case": case.scenario.name, "varied": case.varied,
            "seq_len": layer.seq_len, "d_model": layer.d_model,
            **{key: record[key] for key in TABLE_COLUMNS if key in record},
        })
    return rows


@dataclass(frozen=True)
class Validation:
    """Everything ``validate`` computed: the table and, per base scenario, its measurements and runs."""

    table: pd.DataFrame
    measurements: dict[str, list[AlphaMeasurement]]
    simulations: dict[str, dict[str, Results]]


def run_validation(scenarios: list[Scenario], with_variants: bool = True, progress: bool = True) -> Validation:
    """Measure alpha and E_opt for every scenario (and its variants)."""
    cases = [c for s in scenarios for c in (variants(s) if with_variants else [ValidationCase(s.name, "base", s)])]
    rows, measurements, simulations = [], {}, {}
    for case in tqdm(cases, desc="validate", unit="case", disable=not progress):
        found, runs = measure_alpha(case.scenario, SWEEP_MODES)
        rows += table_rows(case, found)
        if case.varied == "base":
            measurements[case.base], simulations[case.base] = found, runs
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    return Validation(table=table, measurements=measurements, simulations=simulations)


def markdown_table(table: pd.DataFrame) -> str:
    """The validation table as Markdown, numbers rounded for reading."""
    shown = table.copy()
    for column in ("alpha_s", "alpha_hardware_s"):
        shown[column] = shown[column].map(lambda v: f"{v:.3g}")
    shown["alpha_flop_equiv"] = shown["alpha_flop_equiv"].map(lambda v: f"{v:.3g}")
    shown["r2"] = shown["r2"].map(lambda v: f"{v:.3f}")
    shown["e_opt_analytical"] = shown["e_opt_analytical"].map(lambda v: "inf" if pd.isna(v) else f"{v:.3g}")
    shown["e_opt_best_form"] = shown["e_opt_best_form"].map(lambda v: f"{v:.3g}")
    shown["regret"] = shown["regret"].map(lambda v: f"{v:.1%}")
    return shown.to_markdown(index=False)


def write_validation(validation: Validation, out_dir: Path, scenarios: list[Scenario]) -> list[Path]:
    """Write the table (CSV, Markdown), alpha.json, the figures and metadata.json into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    table = validation.table
    table.to_csv(out_dir / "validation.csv", index=False)
    (out_dir / "validation.md").write_text(markdown_table(table) + "\n", encoding="utf-8")
    records = [m.record() for found in validation.measurements.values() for m in found]
    write_json(out_dir / "alpha.json", {"measurements": records})
    written += [out_dir / "validation.csv", out_dir / "validation.md", out_dir / "alpha.json"]
    figures = {
        "e_opt_scatter.png": validation_plots.e_opt_scatter(table),
        "e_opt_vs_seq_len.png": validation_plots.e_opt_trend(table, "seq_len"),
        "e_opt_vs_d_model.png": validation_plots.e_opt_trend(table, "d_model"),
    }
    for name, found in validation.measurements.items():
        figures[f"s_of_e_{name}.png"] = validation_plots.s_of_e(found, f"{name}: S(E), per-device view")
        figures[f"overhead_fits_{name}.png"] = validation_plots.overhead_fits(found, f"{name}: overhead against E")
        results = validation.simulations[name]["fixed_cluster"]
        best = int(results.summary.loc[results.summary["wall_clock_s"].idxmin(), "num_experts"])
        timeline = results.timeline[results.timeline["num_experts"] == best]
        figures[f"gantt_{name}.png"] = validation_plots.gantt(timeline, f"{name}: one layer at the simulated best E = {best} (fixed_cluster)")
    for file_name, figure in figures.items():
        figure.savefig(out_dir / file_name, dpi=110)
        written.append(out_dir / file_name)
    meta = {s.name: metadata(s, s.seed) for s in scenarios}
    write_json(out_dir / "metadata.json", {"command": "validate", "scenarios": meta, "variation_factors": list(VARIATION_FACTORS)})
    written.append(out_dir / "metadata.json")
    return written


def alpha_summary_lines(measurements: list[AlphaMeasurement]) -> list[str]:
    """A readable summary of an alpha measurement, one block per sweep mode."""
    lines = []
    for m in measurements:
        fit = m.fits[m.best_form]
        e_an = "inf" if m.e_opt_analytical == float("inf") else f"{m.e_opt_analytical:.3g}"
        lines.append(
            f"{m.sweep_mode:15s} {m.view:10s} best form {fit.formula:28s} (R2 {fit.r2:.3f})  "
            f"alpha {m.alpha_s:.3g} s = {m.alpha_flop_equiv:.3g} FLOP-eq (hardware {m.alpha_hardware_s:.3g} s)  "
            f"E_opt analytical {e_an} -> {m.e_opt_feasible}, best form {m.e_opt_best_form:.3g}, "
            f"simulated {m.e_opt_simulated}; regret {m.regret:.1%}"
        )
    return lines


def alpha_document(measurements: list[AlphaMeasurement], scenario: Scenario, seed: int) -> dict:
    """The content of ``alpha.json`` for one scenario."""
    return {"metadata": metadata(scenario, seed, command="alpha"), "measurements": [m.record() for m in measurements]}


def write_alpha(measurements: list[AlphaMeasurement], scenario: Scenario, seed: int, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "alpha.json"
    path.write_text(json.dumps(alpha_document(measurements, scenario, seed), indent=2) + "\n", encoding="utf-8")
    figure = validation_plots.overhead_fits(measurements, f"{scenario.name}: overhead against E")
    figure.savefig(out_dir / "overhead_fits.png", dpi=110)
    return [path, out_dir / "overhead_fits.png"]
