"""What ``analyze`` reports, as data: parameters, FLOPs, the analytical S(E) and E_opt of every entry.

Nothing is simulated and no routing is drawn: every number comes from the op costs
(:mod:`secmoe_sim.plan.costs`, through the same op lists the plans use) and the analytical model
(:mod:`secmoe_sim.analysis.analytical`). Token-MoE FLOPs are those before capacity drops.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from secmoe_sim.analysis.analytical import (
    PER_DEVICE_VIEW,
    TOTAL_VIEW,
    Overhead,
    SectionalTerms,
    alpha_flop_equivalent,
    collectives_per_layer,
    cost_model,
    empty_exchange_s,
    hardware_alpha_s,
    nearest_feasible,
    sectional_terms,
)
from secmoe_sim.plan.dense import dense_flops_per_token, dense_params
from secmoe_sim.plan.sectional import sectional_flops_per_token, sectional_params
from secmoe_sim.plan.token_moe import token_moe_flops_per_token, token_moe_params
from secmoe_sim.spec.scenario import Scenario
from secmoe_sim.spec.workload import DenseArchitecture, SectionalMoEArchitecture, TokenMoEArchitecture


@dataclass(frozen=True)
class OptimumView:
    """E_opt of one view: the continuous optimum and its feasible neighbours (None where there is none)."""

    view: str
    continuous: float
    form: str
    feasible: int | None = None
    below: int | None = None
    above: int | None = None


@dataclass(frozen=True)
class EntryOverview:
    """One architecture entry; the sectional fields are empty for the baselines."""

    label: str
    kind: str
    params: float
    flops_per_token: float
    sweep_mode: str = ""
    terms: SectionalTerms | None = None
    alpha_flop_equiv: float = float("nan")
    rows: tuple[dict, ...] = ()  # per feasible E: E, params, flops_per_token, s_total_s, s_per_device_s
    optima: tuple[OptimumView, ...] = ()


@dataclass(frozen=True)
class Overview:
    """The whole ``analyze`` report of a scenario."""

    scenario: Scenario
    alpha_s: float
    alpha_source: str  # "hardware" or "given"
    message_s: float  # one empty all-to-all GPUs 0 <-> 1 with the scenario's stack: the hardware alpha's unit
    entries: tuple[EntryOverview, ...] = field(default_factory=tuple)


def _sectional(scenario: Scenario, arch: SectionalMoEArchitecture, overhead: Overhead) -> EntryOverview:
    layer, cluster = scenario.workload.layer, scenario.hardware
    terms = sectional_terms(layer, arch, cluster)
    feasible = sorted({e for placement in arch.placements for e in scenario.expert_counts(arch, placement)})
    models = {view: cost_model(terms, view, arch.sweep_mode, cluster.num_gpus) for view in (TOTAL_VIEW, PER_DEVICE_VIEW)}
    rows = tuple(
        {
            "E": e,
            "params": sectional_params(layer, arch, e),
            "flops_per_token": sectional_flops_per_token(layer, arch, e),
            "s_total_s": float(models[TOTAL_VIEW].total_s(e, overhead)),
            "s_per_device_s": float(models[PER_DEVICE_VIEW].total_s(e, overhead)),
        }
        for e in feasible
    )
    optima = []
    for view, model in models.items():
        e_opt = model.e_opt(overhead)
        form = "closed form (a1 / 2 alpha)^(1/3)" if model.a2_s == 0 else "root of 2 alpha E^4 - a1 E - 2 a2"
        if not np.isfinite(e_opt):
            optima.append(OptimumView(view, float("inf"), form))
            continue
        chosen = nearest_feasible(e_opt, feasible, model, overhead)
        optima.append(OptimumView(view, float(e_opt), form, chosen.best, chosen.below, chosen.above))
    largest = max(feasible)
    return EntryOverview(
        label=arch.name,
        kind=arch.kind,
        params=sectional_params(layer, arch, largest),
        flops_per_token=sectional_flops_per_token(layer, arch, largest),
        sweep_mode=arch.sweep_mode,
        terms=terms,
        alpha_flop_equiv=alpha_flop_equivalent(overhead.alpha_s, terms),
        rows=rows,
        optima=tuple(optima),
    )


def overview(scenario: Scenario, alpha_s: float | None = None) -> Overview:
    """The analytical report of ``scenario``; ``alpha_s`` (seconds) replaces the hardware estimate."""
    layer, cluster = scenario.workload.layer, scenario.hardware
    source = "given" if alpha_s is not None else "hardware"
    alpha_s = hardware_alpha_s(layer, cluster, scenario.stacks) if alpha_s is None else alpha_s
    overhead = Overhead(alpha_s=alpha_s)
    entries = []
    for arch in scenario.workload.architectures:
        if isinstance(arch, SectionalMoEArchitecture):
            entries.append(_sectional(scenario, arch, overhead))
        elif isinstance(arch, TokenMoEArchitecture):
            entries.append(
                EntryOverview(arch.name, arch.kind, token_moe_params(layer, arch), token_moe_flops_per_token(layer, arch))
            )
        elif isinstance(arch, DenseArchitecture):
            entries.append(EntryOverview(arch.name, arch.kind, dense_params(layer, arch), dense_flops_per_token(layer, arch)))
    return Overview(scenario, alpha_s, source, empty_exchange_s(cluster, scenario.stacks), tuple(entries))


def overview_document(found: Overview) -> dict:
    """The JSON object of ``analyze --json``."""
    layer = found.scenario.workload.layer
    return {
        "scenario": found.scenario.name,
        "alpha_s": found.alpha_s,
        "alpha_source": found.alpha_source,
        "alpha_hardware_message_s": found.message_s,
        "collectives_per_layer": collectives_per_layer(layer),
        "entries": [
            {
                "label": entry.label,
                "kind": entry.kind,
                "params": entry.params,
                "flops_per_token": entry.flops_per_token,
                **(
                    {
                        "sweep_mode": entry.sweep_mode,
                        "c_pre_s": entry.terms.c_pre_s,
                        "k_s": entry.terms.k_s,
                        "a_s": entry.terms.a_s,
                        "effective_flops_per_s": entry.terms.effective_flops_per_s,
                        "alpha_flop_equiv": entry.alpha_flop_equiv,
                        "rows": list(entry.rows),
                        "e_opt": [dict(optimum.__dict__) for optimum in entry.optima],
                    }
                    if entry.terms is not None
                    else {}
                ),
            }
            for entry in found.entries
        ],
    }
