"""Placement rules: which expert counts fit a cluster, and which GPU hosts which expert.

The GPUs hold the tokens: the ``B`` sequences are spread over the GPUs, whole sequences per GPU
(the pre-expert attention needs a whole sequence). Where the experts of a sectional layer run is
the entry's ``placement``; each names the size ``g`` of the groups of consecutive GPUs that
exchange sections with each other:

* ``replicated``: ``g = 1``. Every token owner runs all ``E`` experts on its own sequences: no
  scatter, no gather (all ``E`` experts together hold only ``12 d^2 / E`` parameters).
* ``node_local``: ``g = min(E, gpus_per_node)``. Groups never cross a node; for ``E`` above the node
  size each GPU of a node hosts ``E / gpus_per_node`` experts.
* ``spread``: ``g = min(E, G)``. Groups of ``E`` consecutive GPUs (for ``E <= G``), or all ``G``
  GPUs with ``E / G`` experts each (for ``E > G``): the design's original rule, whose groups may
  straddle nodes.

Inside a group of ``g`` GPUs, expert ``e`` lives on the group's GPU ``e mod g``. A placement is
feasible when ``g`` divides ``G`` and ``E`` is a multiple of ``g``. In ``expert_per_gpu`` the cluster
is first resized to ``G = E`` GPUs (nodes of the scenario's shape). Token-routed MoE experts follow
the ``spread`` rule.
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

    def replicas_of(self, expert: int) -> tuple[int, ...]:
        """The GPUs holding a copy of ``expert``: its host in every group (whose gradients they share)."""
        return tuple(group[expert % len(group)] for group in self.groups)

    def experts_on(self, gpu: int) -> list[int]:
        """Expert ids (within the GPU's group) hosted on ``gpu``."""
        group = self.group_of(gpu)
        position = group.index(gpu)
        return list(range(position, self.num_experts, len(group)))


def group_size(placement: str, num_experts: int, cluster: Cluster) -> int:
    """GPUs per exchange group of a sectional layer with ``num_experts`` experts under ``placement``."""
    if placement == "replicated":
        return 1
    if placement == "node_local":
        return min(num_experts, cluster.gpus_per_node)
    if placement == "spread":
        return min(num_experts, cluster.num_gpus)
    raise ValueError(f"unknown placement {placement!r}")


def group_error(num_experts: int, num_gpus: int, size: int) -> str | None:
    """Why ``num_experts`` cannot be placed in groups of ``size`` on ``num_gpus`` GPUs, or None if it can."""
    if num_gpus % size or num_experts % size:
        return f"E={num_experts} does not fill groups of {size} GPUs on {num_gpus} GPUs"
    return None


def placement_error(num_experts: int, num_gpus: int) -> str | None:
    """Why ``num_experts`` cannot be spread over ``num_gpus`` GPUs (groups of ``min(E, G)``, the token-MoE
    rule), or None if it can: ``E`` must divide ``G`` or be a multiple of it."""
    if group_error(num_experts, num_gpus, min(num_experts, num_gpus)) is None:
        return None
    return f"E={num_experts} neither divides nor is a multiple of the {num_gpus} GPUs"


def place_experts(num_experts: int, num_gpus: int, size: int | None = None) -> ExpertPlacement:
    """Place ``num_experts`` in groups of ``size`` consecutive GPUs (default ``min(E, G)``, the spread rule)."""
    size = min(num_experts, num_gpus) if size is None else size
    reason = group_error(num_experts, num_gpus, size)
    if reason:
        raise ValueError(reason)
    groups = tuple(tuple(range(start, start + size)) for start in range(0, num_gpus, size))
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


def width_error(num_experts: int, d_model: int, min_section_width: int) -> str | None:
    """Why ``num_experts`` sections of ``d_model`` are not allowed, or None if they are."""
    if d_model % num_experts:
        return f"E={num_experts} does not divide d_model={d_model}"
    if d_model // num_experts < min_section_width:
        return f"E={num_experts} gives sections of width {d_model // num_experts} < min_section_width={min_section_width}"
    return None


def sectional_feasibility_error(
    num_experts: int, d_model: int, min_section_width: int, cluster: Cluster, sweep_mode: str, placement: str = "spread"
) -> str | None:
    """Why a sectional layer with ``num_experts`` is not feasible under ``placement``, or None if it is."""
    reason = width_error(num_experts, d_model, min_section_width)
    if reason:
        return reason
    if sweep_mode == "expert_per_gpu":
        try:
            cluster = cluster.resized(num_experts)
        except ValueError as error:
            return f"expert_per_gpu with E={num_experts}: {error}"
    size = group_size(placement, num_experts, cluster)
    if placement == "spread":
        return placement_error(num_experts, cluster.num_gpus)
    return group_error(num_experts, cluster.num_gpus, size)


def feasible_expert_counts(
    d_model: int, min_section_width: int, cluster: Cluster, sweep_mode: str, placement: str = "spread"
) -> list[int]:
    """Every E that divides ``d_model``, keeps sections wide enough and fits the placement rules."""
    return [
        e
        for e in divisors(d_model)
        if sectional_feasibility_error(e, d_model, min_section_width, cluster, sweep_mode, placement) is None
    ]


def divisors(n: int) -> list[int]:
    """All positive divisors of ``n``, ascending."""
    small = [i for i in range(1, math.isqrt(n) + 1) if n % i == 0]
    return sorted(set(small + [n // i for i in small]))
