"""The files of ``validate`` and ``alpha``: the validation table as CSV and Markdown, alpha.json, figures.

The figures show S(E), the overhead fits, analytical against simulated E_opt, the trend of E_opt
with sequence length and width, and a per-GPU Gantt chart at the simulated best E.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from secmoe_sim.analysis.alpha import AlphaMeasurement
from secmoe_sim.analysis.validation import VARIATION_FACTORS, Validation
from secmoe_sim.report import validation_plots
from secmoe_sim.report.outputs import metadata, write_json
from secmoe_sim.spec.scenario import Scenario


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
        summary = results.summary
        best = int(summary["num_experts"].to_numpy()[summary["wall_clock_s"].to_numpy().argmin()])
        timeline = results.timeline[results.timeline["num_experts"] == best]
        figures[f"gantt_{name}.png"] = validation_plots.gantt(
            timeline, f"{name}: one layer at the simulated best E = {best} (fixed_cluster)"
        )
    for file_name, figure in figures.items():
        figure.savefig(out_dir / file_name, dpi=110)
        written.append(out_dir / file_name)
    meta = {s.name: metadata(s, s.seed) for s in scenarios}
    write_json(
        out_dir / "metadata.json", {"command": "validate", "scenarios": meta, "variation_factors": list(VARIATION_FACTORS)}
    )
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
