"""The empirical alpha: simulate the sectional layer at every feasible E, fit the overhead, and
compare the paper's analytical E_opt with the simulated one.

Two views of the overhead, both in seconds:

* ``per_device``: ``wall_clock_s - compute_s`` of the critical GPU (design.md "Results"): what a
  layer's wall-clock pays beyond its critical GPU's kernels (communication it waits for, launches).
* ``total``: the overhead summed over GPUs: every GPU's time with a message of its own in flight
  (``send_busy_all_gpus_s``) plus every GPU's launch overhead (``launch_all_gpus_s``). An
  all-to-all among ``E`` hosts sends ``E (E - 1)`` messages, which is the paper's ``alpha E^2``.

For each (sweep mode, view): ``alpha`` is fitted in the paper's form ``alpha E^2``; the four forms
of :mod:`secmoe_sim.analysis.overhead_fit` are ranked by AICc; and ``E_opt`` is found three ways:

1. ``e_opt_analytical``: the closed form (or stationary root) of the view's ``S(E)`` with the fitted
   alpha (:mod:`secmoe_sim.analysis.analytical`), and ``e_opt_feasible`` its best feasible neighbour;
2. ``e_opt_best_form``: the numeric minimum of the cost-model compute plus the best fitted form;
3. ``e_opt_simulated``: the E with the lowest simulated wall-clock.

``regret`` = simulated wall-clock at ``e_opt_feasible`` / the simulated minimum - 1: what trusting the
analytical shortcut costs. ``K``, ``A``, ``a1``, ``a2`` always come from the cost model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar

from secmoe_sim.analysis.analytical import (
    PER_DEVICE_VIEW,
    VIEWS,
    CostModel,
    Overhead,
    alpha_flop_equivalent,
    cost_model,
    hardware_alpha_s,
    nearest_feasible,
    sectional_terms,
)
from secmoe_sim.analysis.overhead_fit import FormFit, best_form, fit_all
from secmoe_sim.errors import ScenarioError
from secmoe_sim.simulation import Results, simulate
from secmoe_sim.spec.scenario import Scenario
from secmoe_sim.spec.workload import SectionalMoEArchitecture

SWEEP_MODES = ("fixed_cluster", "expert_per_gpu")
OPTIMUM_GRID_POINTS = 4001  # log-spaced grid that brackets the numeric optimum before refining it


@dataclass(frozen=True)
class AlphaMeasurement:
    """The overhead of one sectional entry in one sweep mode and view, fitted and compared."""

    scenario: str
    label: str
    sweep_mode: str
    view: str
    experts: tuple[int, ...]
    overhead_s: tuple[float, ...]
    wall_clock_s: tuple[float, ...]
    fits: dict[str, FormFit]
    best_form: str
    model: CostModel
    alpha_s: float
    alpha_flop_equiv: float
    alpha_hardware_s: float
    e_opt_analytical: float
    e_opt_feasible: int
    e_opt_best_form: float
    e_opt_simulated: int
    regret: float

    @property
    def paper_form_holds(self) -> bool:
        """Whether AICc picks a quadratic form (the paper's ``alpha E^2`` or its general version)."""
        return self.best_form in ("quadratic", "quadratic_full")

    def record(self) -> dict:
        """A JSON-ready summary (what ``alpha.json`` holds for this sweep mode and view).

        Non-finite numbers (an undefined AICc, an optimum at infinity) become ``null``.
        """
        return _finite_or_none(
            {
                "scenario": self.scenario,
                "label": self.label,
                "sweep_mode": self.sweep_mode,
                "view": self.view,
                "alpha_s": self.alpha_s,
                "alpha_flop_equiv": self.alpha_flop_equiv,
                "alpha_hardware_s": self.alpha_hardware_s,
                "best_form": self.best_form,
                "best_form_formula": self.fits[self.best_form].formula,
                "r2": self.fits[self.best_form].r2,
                "paper_form_holds": self.paper_form_holds,
                "e_opt_analytical": self.e_opt_analytical,
                "e_opt_feasible": self.e_opt_feasible,
                "e_opt_best_form": self.e_opt_best_form,
                "e_opt_simulated": self.e_opt_simulated,
                "regret": self.regret,
                "experts": list(self.experts),
                "overhead_s": list(self.overhead_s),
                "wall_clock_s": list(self.wall_clock_s),
                "cost_model_s": {"c0": self.model.c0_s, "a1": self.model.a1_s, "a2": self.model.a2_s},
                "fits": {
                    name: {
                        "formula": fit.formula,
                        "coefficients_s": fit.coefficients,
                        "standard_errors_s": fit.standard_errors,
                        "r2": fit.r2,
                        "aicc": fit.aicc,
                    }
                    for name, fit in self.fits.items()
                },
            }
        )


def _finite_or_none(value):
    """``value`` with every non-finite float, however deeply nested, replaced by None."""
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def sectional_template(scenario: Scenario, label: str | None = None) -> SectionalMoEArchitecture:
    """The sectional entry whose alpha is measured: the one labelled ``label``, else the scenario's first."""
    for arch in scenario.workload.architectures:
        if isinstance(arch, SectionalMoEArchitecture) and (label is None or arch.name == label):
            return arch
    raise ScenarioError(scenario.name, "workload.architectures", "no sectional_moe entry whose alpha could be measured")


def sectional_scenario(scenario: Scenario, sweep_mode: str, label: str | None = None, placement: str = "spread") -> Scenario:
    """The scenario reduced to one sectional entry, at every feasible E, in ``sweep_mode`` and ``placement``."""
    template = sectional_template(scenario, label)
    arch = template.model_copy(update={"sweep_mode": sweep_mode, "experts": "all_feasible", "placement": placement})
    data = scenario.model_dump(mode="json")
    data["workload"]["architectures"] = [arch.model_dump(mode="json")]
    return Scenario.model_validate(data)


def view_overhead_s(summary: pd.DataFrame, view: str) -> np.ndarray:
    """The overhead the view describes, per summary row."""
    if view == PER_DEVICE_VIEW:
        return (summary["wall_clock_s"] - summary["compute_s"]).to_numpy()
    return (summary["send_busy_all_gpus_s"] + summary["launch_all_gpus_s"]).to_numpy()


def numeric_optimum(model: CostModel, overhead: FormFit, lowest: float, highest: float) -> float:
    """The E in ``[lowest, highest]`` minimising compute + fitted overhead (grid, then scipy)."""
    if highest <= lowest:
        return float(lowest)
    log_grid = np.linspace(np.log(lowest), np.log(highest), OPTIMUM_GRID_POINTS)

    def total_s(log_e):
        e = np.exp(log_e)
        return model.compute_s(e) + overhead(e)

    best = int(np.argmin(total_s(log_grid)))
    low, high = log_grid[max(best - 1, 0)], log_grid[min(best + 1, len(log_grid) - 1)]
    refined = minimize_scalar(total_s, bounds=(low, high), method="bounded")
    return float(np.exp(refined.x))


def measure(results: Results, scenario: Scenario, view: str) -> AlphaMeasurement:
    """Fit and compare the overhead of one simulated E sweep (one sectional entry) in one view."""
    summary = results.summary.sort_values("num_experts").reset_index(drop=True)
    arch = sectional_template(results.scenario)
    layer, cluster = scenario.workload.layer, scenario.hardware
    experts = summary["num_experts"].to_numpy()
    overhead_s = view_overhead_s(summary, view)
    fits = fit_all(experts, overhead_s)
    terms = sectional_terms(layer, arch, cluster)
    model = cost_model(terms, view, arch.sweep_mode, cluster.num_gpus)
    alpha_s = fits["quadratic"].coefficients["alpha"]
    e_analytical = model.e_opt(Overhead(alpha_s))
    feasible = [int(e) for e in experts]
    if np.isfinite(e_analytical):
        e_feasible = nearest_feasible(e_analytical, feasible, model, Overhead(alpha_s)).best
    else:
        e_feasible = max(feasible)
    wall = summary["wall_clock_s"].to_numpy()
    best = best_form(fits)
    return AlphaMeasurement(
        scenario=scenario.name,
        label=arch.name,
        sweep_mode=arch.sweep_mode,
        view=view,
        experts=tuple(feasible),
        overhead_s=tuple(map(float, overhead_s)),
        wall_clock_s=tuple(map(float, wall)),
        fits=fits,
        best_form=best,
        model=model,
        alpha_s=alpha_s,
        alpha_flop_equiv=alpha_flop_equivalent(alpha_s, terms),
        alpha_hardware_s=hardware_alpha_s(layer, cluster),
        e_opt_analytical=float(e_analytical),
        e_opt_feasible=int(e_feasible),
        e_opt_best_form=numeric_optimum(model, fits[best], float(min(feasible)), float(max(feasible))),
        e_opt_simulated=int(experts[int(np.argmin(wall))]),
        regret=float(wall[feasible.index(e_feasible)] / wall.min() - 1.0),
    )


def measure_alpha(
    scenario: Scenario,
    sweep_modes: tuple[str, ...] = SWEEP_MODES,
    seed: int | None = None,
    label: str | None = None,
    placement: str = "spread",
) -> tuple[list[AlphaMeasurement], dict[str, Results]]:
    """Simulate the first sectional entry in each sweep mode and measure alpha in both views.

    Returns the measurements (one per sweep mode and view) and the simulations by sweep mode.
    """
    measurements, simulations = [], {}
    for mode in sweep_modes:
        reduced = sectional_scenario(scenario, mode, label, placement)
        results = simulate(reduced, seed=seed)
        simulations[mode] = results
        measurements += [measure(results, reduced, view) for view in VIEWS]
    return measurements, simulations
