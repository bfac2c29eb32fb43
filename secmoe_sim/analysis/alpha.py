"""The empirical alpha: simulate a sectional entry at every feasible E, fit its overhead, and compare
the paper's analytical E_opt (and the physical one) with the simulated optimum.

A *case* is one sectional entry under one placement in its sweep mode, in one view:

* ``per_device``: the overhead is ``wall_clock_s - compute_s`` of the critical GPU (what a layer's
  wall-clock pays beyond its kernels); its objective is ``wall_clock_s``.
* ``total``: the overhead summed over GPUs (every GPU's time with a message of its own in flight,
  ``send_busy_all_gpus_s``, plus every GPU's launches); its objective is ``gpu_seconds``, which is
  what the paper's total ``S(E)`` minimises. In ``fixed_cluster`` the total view is the per-device
  view times ``G`` (same argmin, same fit up to a factor), so such a case is measured once, per
  device; in ``expert_per_gpu``, where ``G = E``, the two views answer different questions.

For each case the overhead is fitted with every form of :mod:`secmoe_sim.analysis.overhead_fit`
(the ``physical`` one built from the case's exchanges, :mod:`secmoe_sim.analysis.physical`), and
E_opt is found four ways, each scored by its *regret* (the objective at that E over the simulated
minimum, minus one):

1. ``e_opt_feasible``: the paper's closed form with alpha fitted to this very simulation (in-sample);
2. ``e_opt_hardware_feasible``: the paper's closed form with the hardware alpha, what a user of the
   shortcut has before any simulation (``regret_hardware_alpha``);
3. ``e_opt_physical``: the busiest GPU's cost-model compute plus the physical overhead bound from the
   hardware, bandwidth included (:mod:`secmoe_sim.analysis.physical`), minimised over the feasible E
   in the view's objective (``regret_physical_form``);
4. ``e_opt_simulated``: the simulated argmin, flagged ``at_bound`` when a limit censors it.

``K``, ``A``, ``a1``, ``a2`` always come from the cost model; only overhead coefficients are fitted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar

from secmoe_sim.analysis.analytical import (
    PER_DEVICE_VIEW,
    TOTAL_VIEW,
    CostModel,
    Overhead,
    alpha_flop_equivalent,
    cost_model,
    hardware_alpha_s,
    nearest_feasible,
    sectional_terms,
)
from secmoe_sim.analysis.bounds import binding_limit
from secmoe_sim.analysis.overhead_fit import Form, FormFit, best_form, fit_all, paper_form_holds, physical_form
from secmoe_sim.analysis.physical import ExchangeCost, exchange_cost
from secmoe_sim.errors import ScenarioError
from secmoe_sim.plan.sectional import sectional_plan
from secmoe_sim.simulation import Results, simulate
from secmoe_sim.spec.scenario import Scenario
from secmoe_sim.spec.workload import SectionalMoEArchitecture

SWEEP_MODES = ("fixed_cluster", "expert_per_gpu")
OBJECTIVES = {PER_DEVICE_VIEW: "wall_clock_s", TOTAL_VIEW: "gpu_seconds"}
OPTIMUM_GRID_POINTS = 4001  # log-spaced grid that brackets the numeric optimum before refining it


def views_of(sweep_mode: str) -> tuple[str, ...]:
    """The views that are distinct measurements in ``sweep_mode`` (``fixed_cluster``: per device only)."""
    return (PER_DEVICE_VIEW,) if sweep_mode == "fixed_cluster" else (PER_DEVICE_VIEW, TOTAL_VIEW)


@dataclass(frozen=True)
class AlphaMeasurement:
    """The overhead of one case (entry, placement, sweep mode, view), fitted and compared."""

    scenario: str
    label: str
    placement: str
    sweep_mode: str
    view: str
    experts: tuple[int, ...]
    overhead_s: tuple[float, ...]
    objective_values: tuple[float, ...]  # the view's objective at each E: wall-clock or GPU-seconds
    wall_clock_s: tuple[float, ...]
    fits: dict[str, FormFit]
    best_form: str  # "" when too few points to rank any form
    model: CostModel
    alpha_s: float
    alpha_flop_equiv: float
    alpha_hardware_s: float
    e_opt_analytical: float
    e_opt_feasible: int
    e_opt_hardware: float
    e_opt_hardware_feasible: int
    e_opt_physical: int
    e_opt_best_form: float
    e_opt_simulated: int
    regret: float
    regret_hardware_alpha: float
    regret_physical_form: float
    at_bound: str
    physical_overhead_s: tuple[float, ...]  # the hardware bound of each E's exchanges, in the view's units
    physical_s: tuple[float, ...]  # the physical prediction of the objective at each E
    warnings: tuple[str, ...] = ()

    @property
    def objective(self) -> str:
        return OBJECTIVES[self.view]

    @property
    def n_points(self) -> int:
        return len(self.experts)

    @property
    def r2(self) -> float:
        return self.fits[self.best_form].r2 if self.best_form else float("nan")

    @property
    def paper_form_holds(self) -> bool:
        """The paper's quadratic is the ranked best form and explains at least 90% of the variance."""
        return paper_form_holds(self.fits, self.best_form)

    def record(self) -> dict:
        """A JSON-ready summary (what ``alpha.json`` holds for this case); non-finite numbers become null."""
        return _finite_or_none(
            {
                "scenario": self.scenario,
                "label": self.label,
                "placement": self.placement,
                "sweep_mode": self.sweep_mode,
                "view": self.view,
                "objective": self.objective,
                "n_points": self.n_points,
                "alpha_s": self.alpha_s,
                "alpha_flop_equiv": self.alpha_flop_equiv,
                "alpha_hardware_s": self.alpha_hardware_s,
                "best_form": self.best_form,
                "best_form_formula": self.fits[self.best_form].formula if self.best_form else "",
                "r2": self.r2,
                "paper_form_holds": self.paper_form_holds,
                "e_opt_analytical": self.e_opt_analytical,
                "e_opt_feasible": self.e_opt_feasible,
                "e_opt_hardware": self.e_opt_hardware,
                "e_opt_hardware_feasible": self.e_opt_hardware_feasible,
                "e_opt_physical": self.e_opt_physical,
                "e_opt_best_form": self.e_opt_best_form,
                "e_opt_simulated": self.e_opt_simulated,
                "regret": self.regret,
                "regret_hardware_alpha": self.regret_hardware_alpha,
                "regret_physical_form": self.regret_physical_form,
                "at_bound": self.at_bound,
                "warnings": list(self.warnings),
                "experts": list(self.experts),
                "overhead_s": list(self.overhead_s),
                "physical_overhead_s": list(self.physical_overhead_s),
                "physical_s": list(self.physical_s),
                "objective_values": list(self.objective_values),
                "wall_clock_s": list(self.wall_clock_s),
                "cost_model_s": {"c0": self.model.c0_s, "a1": self.model.a1_s, "a2": self.model.a2_s},
                "fits": {
                    name: {
                        "formula": fit.formula,
                        "coefficients_s": fit.coefficients,
                        "standard_errors_s": fit.standard_errors,
                        "r2": fit.r2,
                        "aicc": fit.aicc,
                        "ranked": fit.ranked,
                    }
                    for name, fit in self.fits.items()
                },
            }
        )


def _finite_or_none(value):
    """``value`` with every non-finite float, however deeply nested, replaced by None."""
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_or_none(item) for item in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def sectional_entries(scenario: Scenario) -> list[SectionalMoEArchitecture]:
    """The scenario's sectional entries; a one-line error if there is none to measure."""
    entries = [a for a in scenario.workload.architectures if isinstance(a, SectionalMoEArchitecture)]
    if not entries:
        raise ScenarioError(scenario.name, "workload.architectures", "no sectional_moe entry whose alpha could be measured")
    return entries


def sectional_template(scenario: Scenario, label: str | None = None) -> SectionalMoEArchitecture:
    """The sectional entry labelled ``label``, else the scenario's first."""
    for arch in sectional_entries(scenario):
        if label is None or arch.name == label:
            return arch
    raise ScenarioError(scenario.name, "workload.architectures", f"no sectional_moe entry labelled {label!r}")


def sectional_scenario(scenario: Scenario, arch: SectionalMoEArchitecture, sweep_mode: str | None = None) -> Scenario:
    """The scenario reduced to one sectional entry at every feasible E (in ``sweep_mode``, default its own)."""
    entry = arch.model_copy(update={"sweep_mode": sweep_mode or arch.sweep_mode, "experts": "all_feasible"})
    data = scenario.model_dump(mode="json")
    data["workload"]["architectures"] = [entry.model_dump(mode="json")]
    return Scenario.model_validate(data)


def view_overhead_s(summary: pd.DataFrame, view: str) -> np.ndarray:
    """The overhead the view describes, per summary row."""
    if view == PER_DEVICE_VIEW:
        return (summary["wall_clock_s"] - summary["compute_s"]).to_numpy(dtype=float)
    return (summary["send_busy_all_gpus_s"] + summary["launch_all_gpus_s"]).to_numpy(dtype=float)


def numeric_optimum(model: CostModel, overhead: FormFit, lowest: float, highest: float) -> float:
    """The E in ``[lowest, highest]`` minimising compute + fitted overhead (grid, then scipy)."""
    if highest <= lowest:
        return float(lowest)
    log_grid = np.linspace(np.log(lowest), np.log(highest), OPTIMUM_GRID_POINTS)

    def total_s(log_e):
        e = np.exp(log_e)
        return np.asarray(model.compute_s(e)) + overhead(e)

    best = int(np.argmin(total_s(log_grid)))
    low, high = log_grid[max(best - 1, 0)], log_grid[min(best + 1, len(log_grid) - 1)]
    refined = minimize_scalar(lambda x: float(total_s(np.array([x]))[0]), bounds=(low, high), method="bounded")
    return float(np.exp(refined.x))


def _closed_form(model: CostModel, alpha_s: float, feasible: list[int]) -> tuple[float, int]:
    """The paper's E_opt for ``alpha_s`` and its best feasible neighbour (the largest E if S keeps falling)."""
    e_opt = model.e_opt(Overhead(alpha_s))
    if not np.isfinite(e_opt):
        return float(e_opt), max(feasible)
    return float(e_opt), nearest_feasible(e_opt, feasible, model, Overhead(alpha_s)).best


def _in_view(costs: list[ExchangeCost], view: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per E: messages, bottleneck traffic time and the physical bound, for one GPU or all GPUs summed."""
    gpus = np.array([c.num_gpus if view == TOTAL_VIEW else 1 for c in costs], dtype=float)
    messages = np.array([c.messages for c in costs]) * gpus
    traffic = np.array([c.traffic_s for c in costs]) * gpus
    bound = np.array([c.per_device_s for c in costs]) * gpus
    return messages, traffic, bound


def measure(
    summary: pd.DataFrame, scenario: Scenario, arch: SectionalMoEArchitecture, placement: str, view: str
) -> AlphaMeasurement:
    """Fit and compare the overhead of one case: ``summary`` holds the entry's rows at every E, all placements."""
    rows = summary[(summary["label"] == arch.name) & (summary["placement"] == placement)]
    rows = rows.sort_values("num_experts").reset_index(drop=True)
    layer, cluster = scenario.workload.layer, scenario.hardware
    experts = rows["num_experts"].to_numpy(dtype=int)
    feasible = [int(e) for e in experts]
    overhead_s = view_overhead_s(rows, view)
    objective = rows[OBJECTIVES[view]].to_numpy(dtype=float)
    stacks = scenario.stacks.for_entry(arch.name)
    costs = [exchange_cost(sectional_plan(layer, arch, cluster, e, placement), stacks) for e in feasible]
    messages, traffic, bound = _in_view(costs, view)
    log_e = np.log(experts.astype(float))
    extra: tuple[Form, ...] = ()
    if messages.any() or traffic.any():
        extra = (physical_form(lambda e: np.interp(np.log(e), log_e, messages), lambda e: np.interp(np.log(e), log_e, traffic)),)
    fits = fit_all(experts, overhead_s, extra)
    terms = sectional_terms(layer, arch, cluster)
    model = cost_model(terms, view, arch.sweep_mode, cluster.num_gpus)
    alpha_s = fits["quadratic"].coefficients["alpha"]
    alpha_hw = hardware_alpha_s(layer, cluster, stacks)
    e_analytical, e_feasible = _closed_form(model, alpha_s, feasible)
    e_hardware, e_hardware_feasible = _closed_form(model, alpha_hw, feasible)
    predicted = np.array([c.layer_s * (c.num_gpus if view == TOTAL_VIEW else 1) for c in costs])  # wall-clock or GPU-s
    e_physical = feasible[int(np.argmin(predicted))]
    best = best_form(fits)
    simulated = int(experts[int(np.argmin(objective))])

    def regret(e: int) -> float:
        return float(objective[feasible.index(e)] / objective.min() - 1.0)

    warnings: tuple[str, ...] = ()
    if arch.sweep_mode == "expert_per_gpu" and max(feasible) > layer.batch:
        warnings = (f"E > {layer.batch} sequences leaves GPUs without a sequence (expert_per_gpu, G = E)",)
    return AlphaMeasurement(
        scenario=scenario.name,
        label=arch.name,
        placement=placement,
        sweep_mode=arch.sweep_mode,
        view=view,
        experts=tuple(feasible),
        overhead_s=tuple(map(float, overhead_s)),
        objective_values=tuple(map(float, objective)),
        wall_clock_s=tuple(map(float, rows["wall_clock_s"])),
        fits=fits,
        best_form=best,
        model=model,
        alpha_s=alpha_s,
        alpha_flop_equiv=alpha_flop_equivalent(alpha_s, terms),
        alpha_hardware_s=alpha_hw,
        e_opt_analytical=e_analytical,
        e_opt_feasible=int(e_feasible),
        e_opt_hardware=e_hardware,
        e_opt_hardware_feasible=int(e_hardware_feasible),
        e_opt_physical=int(e_physical),
        e_opt_best_form=numeric_optimum(model, fits[best], float(min(feasible)), float(max(feasible))) if best else float("nan"),
        e_opt_simulated=simulated,
        regret=regret(int(e_feasible)),
        regret_hardware_alpha=regret(int(e_hardware_feasible)),
        regret_physical_form=regret(int(e_physical)),
        at_bound=binding_limit(scenario, arch, placement, simulated),
        physical_overhead_s=tuple(map(float, bound)),
        physical_s=tuple(map(float, predicted)),
        warnings=warnings,
    )


def measure_entry(
    scenario: Scenario, arch: SectionalMoEArchitecture, seed: int | None = None
) -> tuple[list[AlphaMeasurement], Results]:
    """Every case of one sectional entry (each placement, each distinct view), and its simulation."""
    reduced = sectional_scenario(scenario, arch)
    results = simulate(reduced, seed=seed)
    entry = sectional_template(reduced, arch.name)
    found = [
        measure(results.summary, reduced, entry, placement, view)
        for placement in entry.placements
        if (results.summary["placement"] == placement).sum() >= 2
        for view in views_of(entry.sweep_mode)
    ]
    return found, results


def measure_alpha(
    scenario: Scenario,
    sweep_modes: tuple[str, ...] = SWEEP_MODES,
    seed: int | None = None,
    label: str | None = None,
    placement: str | None = None,
) -> tuple[list[AlphaMeasurement], dict[str, Results]]:
    """The entry ``label`` (default: the first sectional one) in each of ``sweep_modes``, each placement
    (or only ``placement``) and distinct view. Returns the measurements and the simulations by sweep mode."""
    template = sectional_template(scenario, label)
    if placement is not None:
        template = template.model_copy(update={"placement": placement})
    measurements, simulations = [], {}
    for mode in sweep_modes:
        found, results = measure_entry(scenario, template.model_copy(update={"sweep_mode": mode}), seed)
        measurements += found
        simulations[mode] = results
    return measurements, simulations
