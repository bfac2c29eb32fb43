"""The files of ``validate`` and ``alpha``: the validation table as CSV and Markdown, alpha.json, figures.

The figures show S(E), the overhead fits, the three predicted E_opt against the simulated one, the
trend of E_opt with sequence length and width (uncensored series only), and a per-GPU Gantt chart
at the simulated best E of a placement that sends sections.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from secmoe_sim.analysis.alpha import AlphaMeasurement
from secmoe_sim.analysis.validation import VARIATION_FACTORS, Validation
from secmoe_sim.report import validation_plots
from secmoe_sim.report.outputs import metadata, write_json
from secmoe_sim.spec.scenario import Scenario

SHOWN_COLUMNS = {
    "case": "case",
    "label": "entry",
    "placement": "placement",
    "sweep_mode": "mode",
    "view": "view",
    "objective": "objective",
    "n_points": "n",
    "best_form": "best form",
    "r2": "R2",
    "paper_form_holds": "quadratic holds",
    "alpha_s": "alpha fitted (s)",
    "alpha_hardware_s": "alpha hw (s)",
    "e_opt_feasible": "E fitted",
    "e_opt_hardware_feasible": "E hw alpha",
    "e_opt_physical": "E physical",
    "e_opt_simulated": "E simulated",
    "at_bound": "at bound",
    "regret": "regret fitted",
    "regret_hardware_alpha": "regret hw alpha",
    "regret_physical_form": "regret physical",
}


def _number(value: object, pattern: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, pattern)


def markdown_table(table: pd.DataFrame) -> str:
    """The validation table as Markdown, numbers rounded for reading."""
    shown = table[list(SHOWN_COLUMNS)].copy()
    for column in ("alpha_s", "alpha_hardware_s"):
        shown[column] = shown[column].map(lambda v: _number(v, ".3g"))
    shown["r2"] = shown["r2"].map(lambda v: _number(v, ".3f"))
    shown["best_form"] = shown["best_form"].map(lambda v: v or "(too few points)")
    for column in ("regret", "regret_hardware_alpha", "regret_physical_form"):
        shown[column] = shown[column].map(lambda v: _number(v, ".1%"))
    shown["at_bound"] = shown["at_bound"].map(lambda v: v or "-")
    return shown.rename(columns=SHOWN_COLUMNS).to_markdown(index=False)


def _gantt_case(validation: Validation, name: str):
    """A simulation to draw: the first entry's, at its best E under a placement that sends sections."""
    for results in validation.simulations[name].values():
        summary = results.summary
        for placement in ("spread", "node_local", "replicated"):
            rows = summary[summary["placement"] == placement]
            if rows.empty:
                continue
            best = rows.iloc[int(rows["gpu_seconds"].to_numpy().argmin())]
            timeline = results.timeline
            chosen = timeline[(timeline["placement"] == placement) & (timeline["num_experts"] == best["num_experts"])]
            return chosen, f"{name}: {best['label']!s} [{placement}] at its best E = {int(best['num_experts'])}"
    return None, ""


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
        timeline, title = _gantt_case(validation, name)
        if timeline is not None:
            figures[f"gantt_{name}.png"] = validation_plots.gantt(timeline, title)
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
    """A readable summary of an alpha measurement, one block of lines per case."""
    lines = []
    for m in measurements:
        form = m.fits[m.best_form].formula if m.best_form else "no form ranked (too few points)"
        e_an = "inf" if not math.isfinite(m.e_opt_analytical) else f"{m.e_opt_analytical:.3g}"
        holds = "the paper's form holds" if m.paper_form_holds else "the paper's form does not hold"
        lines += [
            f"{m.label} [{m.placement}], {m.sweep_mode}, {m.view} view (objective {m.objective}, {m.n_points} E):",
            f"  best form {form} (R2 {_number(m.r2, '.3f')}, n = {m.n_points}): {holds}",
            f"  alpha {m.alpha_s:.3g} s fitted = {m.alpha_flop_equiv:.3g} FLOP-eq; hardware alpha {m.alpha_hardware_s:.3g} s",
            f"  E_opt: fitted alpha {e_an} -> {m.e_opt_feasible} (regret {m.regret:.1%}); hardware alpha "
            f"-> {m.e_opt_hardware_feasible} ({m.regret_hardware_alpha:.1%}); physical -> {m.e_opt_physical} "
            f"({m.regret_physical_form:.1%}); simulated {m.e_opt_simulated}"
            + (f" (at bound: {m.at_bound})" if m.at_bound else ""),
        ]
        lines += [f"  warning: {warning}" for warning in m.warnings]
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
