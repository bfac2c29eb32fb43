"""Validation of the paper's analytical E_opt against the simulation, across scenarios and layer sizes.

For every scenario, and for variants of it with half and twice the sequence length and the model
width, every sectional entry is simulated at every feasible E in its sweep mode and under each of
its placements; each (entry, placement) is a case, measured once in ``fixed_cluster`` (per device)
and in both views in ``expert_per_gpu`` (:mod:`secmoe_sim.analysis.alpha`). The table has one row per
case. Beside it, per base scenario, what the best sectional configuration buys against the dense
and token-MoE baselines on the same GPUs. The files and figures are written by
:mod:`secmoe_sim.report.validation`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from pydantic import ValidationError
from tqdm import tqdm

from secmoe_sim.analysis.alpha import AlphaMeasurement, measure_entry, sectional_entries
from secmoe_sim.analysis.recommend import Recommendation, recommend
from secmoe_sim.simulation import Results
from secmoe_sim.spec.scenario import Scenario

VARIATION_FACTORS = (0.5, 2.0)
VARIED_DIMENSIONS = ("seq_len", "d_model")
TABLE_COLUMNS = [
    "base_scenario",
    "case",
    "varied",
    "seq_len",
    "d_model",
    "label",
    "placement",
    "sweep_mode",
    "view",
    "objective",
    "n_points",
    "best_form",
    "r2",
    "paper_form_holds",
    "alpha_s",
    "alpha_flop_equiv",
    "alpha_hardware_s",
    "e_opt_analytical",
    "e_opt_feasible",
    "e_opt_hardware",
    "e_opt_hardware_feasible",
    "e_opt_physical",
    "e_opt_best_form",
    "e_opt_simulated",
    "at_bound",
    "regret",
    "regret_hardware_alpha",
    "regret_physical_form",
    "warnings",
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
        rows.append(
            {
                "base_scenario": case.base,
                "case": case.scenario.name,
                "varied": case.varied,
                "seq_len": layer.seq_len,
                "d_model": layer.d_model,
                **{key: record[key] for key in TABLE_COLUMNS if key in record},
                "warnings": "; ".join(m.warnings),
            }
        )
    return rows


@dataclass(frozen=True)
class Validation:
    """Everything ``validate`` computed: the table, per base scenario its measurements, simulations
    (by entry label) and the recommendation that sets the best sectional configuration against the
    baselines."""

    table: pd.DataFrame
    measurements: dict[str, list[AlphaMeasurement]]
    simulations: dict[str, dict[str, Results]]
    payoff: dict[str, Recommendation]


def run_validation(scenarios: list[Scenario], with_variants: bool = True, progress: bool = True) -> Validation:
    """Measure alpha and E_opt for every sectional entry and placement of every scenario (and its variants)."""
    cases = [c for s in scenarios for c in (variants(s) if with_variants else [ValidationCase(s.name, "base", s)])]
    rows: list[dict] = []
    measurements: dict[str, list[AlphaMeasurement]] = {}
    simulations: dict[str, dict[str, Results]] = {}
    payoff: dict[str, Recommendation] = {}
    for case in tqdm(cases, desc="validate", unit="case", disable=not progress):
        for arch in sectional_entries(case.scenario):
            found, results = measure_entry(case.scenario, arch)
            rows += table_rows(case, found)
            if case.varied == "base":
                measurements.setdefault(case.base, []).extend(found)
                simulations.setdefault(case.base, {})[arch.name] = results
        if case.varied == "base":
            payoff[case.base] = recommend(case.scenario, with_studies=False)
    table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    return Validation(table=table, measurements=measurements, simulations=simulations, payoff=payoff)
