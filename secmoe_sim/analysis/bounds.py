"""Is an optimum E interior, or does it sit at a limit of what could be simulated (a censored optimum)?

A simulated best E equal to the largest E that was simulated says only that more experts were not
allowed, not that more would be slower. ``binding_limit`` names what stopped the next larger E:

* ``min_section_width``: the next divisor of ``d`` gives sections narrower than the minimum;
* ``d_model``: no larger E divides ``d``;
* ``gpus``: the next E does not fit the placement rules on the cluster (or, in ``expert_per_gpu``,
  does not fill whole nodes);
* ``sequences``: in ``expert_per_gpu`` the next E simulated has more GPUs than sequences, so some idle
  (the optimum may be interior, yet it is set by the batch, not by the overhead);
* ``experts_list``: the entry lists its E values and the best is its largest (or its smallest, above 1).

An empty string means the optimum is interior (or ``E = 1``, below which there is nothing).
"""

from __future__ import annotations

from secmoe_sim.spec.placement import divisors, sectional_feasibility_error, width_error
from secmoe_sim.spec.scenario import Scenario
from secmoe_sim.spec.workload import SectionalMoEArchitecture

LIMITS = ("min_section_width", "d_model", "gpus", "sequences", "experts_list")


def binding_limit(scenario: Scenario, arch: SectionalMoEArchitecture, placement: str, best_experts: int) -> str:
    """The limit that censors ``best_experts`` for this entry and placement, or ``""`` if it is interior."""
    simulated = scenario.expert_counts(arch, placement)
    if not simulated:
        return ""
    layer = scenario.workload.layer
    if best_experts != max(simulated):
        above = min(e for e in simulated if e > best_experts)
        if arch.sweep_mode == "expert_per_gpu" and best_experts <= layer.batch < above:
            return "sequences"  # the next E leaves GPUs without a sequence
        if best_experts == min(simulated) and best_experts > 1:
            return "experts_list"
        return ""
    larger = [e for e in divisors(layer.d_model) if e > best_experts]
    if not larger:
        return "d_model"
    if isinstance(arch.experts, list):
        return "experts_list"
    if width_error(larger[0], layer.d_model, arch.min_section_width):
        return "min_section_width"
    if sectional_feasibility_error(
        larger[0], layer.d_model, arch.min_section_width, scenario.hardware, arch.sweep_mode, placement
    ):
        return "gpus"
    return ""
