"""Placement rules: which expert counts fit a cluster, which GPU hosts which expert.

The rules are those of the design (section 2, "Placement"):

* The GPUs hold the tokens: the ``B`` sequences are spread over the GPUs, whole sequences per GPU.
* ``fixed_cluster``: ``G`` stays as in the scenario. For ``E <= G`` the GPUs form ``G/E`` groups of
  ``E`` consecutive GPUs and GPU ``i`` of a group hosts expert ``i``; for ``E > G`` GPU ``g`` hosts
  experts ``g, g+G, ...``. ``E`` must divide ``G`` or be a multiple of it.
* ``expert_per_gpu``: ``G = E``, one expert per GPU, nodes added with the scenario's node shape.

Token-routed MoE experts follow the same rules with ``fixed_cluster``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from secmoe_sim.spec.hardware import Cluster


@dataclass(frozen=True)
class ExpertPlacement:
    """Where the experts of one layer live and which GPUs exchange sections or tokens.

    ``groups`` lists, for each group of GPUs that exchange data with each other, its GPUs in
    order; expert ``e`` of a group lives on ``groups[k][e % len(groups[k])]``.
    """

    num_experts: int
    num_gpus: int
    groups: tuple[tuple[int, ...], ...]

    def group_of(self, gpu: int) -> tuple[int, ...]:
        size = len(self.groups[0])
        return self.groups[gpu // size]

    def host_of(self, gpu: int, expert: int) -> int:
        """The GPU hosting ``expert`` for the tokens owned by ``gpu``."""
        group = self.group_of(gpu)
        return group[expert % len(group)]

    def experts_on(self, gpu: int) -> list[int]:
        """Expert ids (within the GPU's group) hosted on ``gpu``."""
        group = self.group_of(gpu)
        position = group.index(gpu)
        return list(range(position, self.num_experts, len(group)))


def placement_error(num_experts: int, num_gpus: int) -> str | None:
    """Why ``num_experts`` cannot be placed on ``num_gpus`` GPUs, or None if it can."""
    if num_gpus % num_experts == 0 or num_experts % num_gpus == 0:
        return None
    return f"E={num_experts} neither divides nor is a multiple of the {num_gpus} GPUs"


def place_experts(num_experts: int, num_gpus: int) -> ExpertPlacement:
    """Place ``num_experts`` on ``num_gpus`` by the design's rules (raises ValueError if impossible)."""
    reason = placement_error(num_experts, num_gpus)
    if reason:
        raise ValueError(reason)
    group_size = min(num_experts, num_gpus)
    groups = tuple(tuple(range(start, start + group_size)) for start in range(0, num_gpus, group_size))
    return ExpertPlacement(num_experts=num_experts, num_gpus=num_gpus, groups=groups)


def sequences_per_gpu(batch: int, num_gpus: int) -> list[int]:
    """Whole sequences per GPU, spread as evenly as possible (the first GPUs get one more)."""
    base, extra = divmod(batch, num_gpus)
    return [base + (1 if gpu < extra else 0) for gpu in range(num_gpus)]


def sectional_cluster(cluster: Cluster, num_experts: int, sweep_mode: str) -> Cluster:
    """The cluster a sectional layer with ``num_experts`` runs on in ``sweep_mode``."""
    if sweep_mode == "expert_per_gpu":
        return cluster.resized(num_experts)
    return cluster


def sectional_feasibility_error(
    num_experts: int, d_model: int, min_section_width: int, cluster: Cluster, sweep_mode: str
) -> str | None:
    """Why a sectional layer with ``num_experts`` is not feasible, or None if it is."""
    if d_model % num_experts:
        return f"E={num_experts} does not divide d_model={d_model}"
    if d_model // num_experts < min_section_width:
        return f"E={num_experts} gives sections of width {d_model // num_experts} < min_section_width={min_section_width}"
    if sweep_mode == "expert_per_gpu":
        try:
            cluster.resized(num_experts)
        except ValueError as error:
            return f"expert_per_gpu with E={num_experts}: {error}"
        return None
    return placement_error(num_experts, cluster.num_gpus)


def feasible_expert_counts(d_model: int, min_section_width: int, cluster: Cluster, sweep_mode: str) -> list[int]:
    """Every E that divides ``d_model``, keeps sections wide enough and fits the placement rules."""
    return [
        e for e in divisors(d_model) if sectional_feasibility_error(e, d_model, min_section_width, cluster, sweep_mode) is None
    ]


def divisors(n: int) -> list[int]:
    """All positive divisors of ``n``, ascending."""
    small = [i for i in range(1, math.isqrt(n) + 1) if n % i == 0]
    return sorted(set(small + [n // i for i in small]))
