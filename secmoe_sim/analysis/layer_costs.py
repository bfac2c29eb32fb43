"""What a model step needs of one simulated layer configuration (:mod:`.model_step` composes the step from
them, :mod:`.model_memory` its memory): its times, work, memory terms and gradient synchronisation."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LayerCosts:
    """What the step needs of one simulated layer configuration at one sequence length."""

    wall_s: float
    forward_s: float  # the layer's forward part (its wall-clock when there is no backward)
    attention_forward_s: float
    flops: float
    params: float
    terms: list[dict[str, float]]  # LayerPlan.memory_terms(), per GPU
    replicas: tuple[tuple[tuple[int, ...], float], ...]
    bucket_s: float  # one gradient bucket's synchronisation
    buckets: int
    weight_gather_s: float  # reduce_scatter: the all-gather of the updated weights

    @property
    def backward_s(self) -> float:
        return self.wall_s - self.forward_s
