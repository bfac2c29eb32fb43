"""The paper's analytical model: S(E), E_opt, alpha from the hardware, alpha conversions.

Both views share one form, in seconds::

    S(E) = c0 + a1 / E + a2 / E^2 + alpha * E^2 + beta * E + gamma

* total view (all GPUs' compute summed): ``c0 = C_pre + A``, ``a1 = K``, ``a2 = 0``: the paper's
  ``S(E) = C_pre + K/E + A + alpha E^2``, with ``E_opt = (K / (2 alpha))^(1/3)`` when ``beta = 0``.
* per-device view (the critical path of one GPU, perfect balance):
  - ``fixed_cluster``: a GPU owns ``B/G`` sequences and its experts serve ``E B / G`` sections of
    width ``d/E`` (for ``E <= G``; ``E/G`` experts serving all ``B`` for ``E > G``): both give
    ``c0 = (C_pre + A) / G``, ``a1 = K / G``, ``a2 = 0``;
  - ``expert_per_gpu`` (``G = E``): a GPU owns ``B/E`` sequences, so the pre-expert work and the
    scores fall as ``1/E`` and the projections as ``1/E^2``: ``c0 = 0``, ``a1 = C_pre + A``, ``a2 = K``.

  Stationary points solve ``2 alpha E^4 + beta E^3 - a1 E - 2 a2 = 0``.

``C_pre`` (pre-expert block, sequence reduction, mixing), ``K`` (expert projections at ``E = 1``:
QKV, output and section FFN) and ``A`` (expert attention scores, independent of ``E``) come from the
cost model: FLOPs at the rate the simulation uses (peak x efficiency of the ``E = 1`` kernels), or
the roofline time for memory-bound ops. Only the overhead coefficients are ever fitted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from secmoe_sim.plan import costs, kernel_time
from secmoe_sim.plan.communication import one_message_s
from secmoe_sim.plan.costs import Kernel
from secmoe_sim.plan.sectional import expert_ops, post_expert_ops, pre_expert_ops
from secmoe_sim.plan.topology import Topology
from secmoe_sim.spec.communication import Communication
from secmoe_sim.spec.hardware import Cluster
from secmoe_sim.spec.scenario import Scenario
from secmoe_sim.spec.workload import Layer, SectionalMoEArchitecture

TOTAL_VIEW = "total"
PER_DEVICE_VIEW = "per_device"
VIEWS = (TOTAL_VIEW, PER_DEVICE_VIEW)


@dataclass(frozen=True)
class Overhead:
    """``alpha E^2 + beta E + gamma``, in seconds."""

    alpha_s: float
    beta_s: float = 0.0
    gamma_s: float = 0.0

    def __call__(self, experts: float | np.ndarray) -> float | np.ndarray:
        return self.alpha_s * np.square(experts) + self.beta_s * experts + self.gamma_s


@dataclass(frozen=True)
class SectionalTerms:
    """Cost-model terms of a sectional layer over all ``B`` sequences, seconds (passes included)."""

    c_pre_s: float
    k_s: float
    a_s: float
    flops_at_one_expert: float

    @property
    def compute_at_one_expert_s(self) -> float:
        return self.c_pre_s + self.k_s + self.a_s

    @property
    def effective_flops_per_s(self) -> float:
        """The layer's FLOPs divided by its compute seconds at ``E = 1``."""
        return self.flops_at_one_expert / self.compute_at_one_expert_s


@dataclass(frozen=True)
class CostModel:
    """``S(E) = c0 + a1/E + a2/E^2 + overhead(E)`` for one view."""

    view: str
    c0_s: float
    a1_s: float
    a2_s: float

    def compute_s(self, experts: float | np.ndarray) -> float | np.ndarray:
        experts = np.asarray(experts, dtype=float)
        return self.c0_s + self.a1_s / experts + self.a2_s / np.square(experts)

    def total_s(self, experts: float | np.ndarray, overhead: Overhead) -> float | np.ndarray:
        return self.compute_s(experts) + overhead(np.asarray(experts, dtype=float))

    def stationarity(self, experts: float, overhead: Overhead) -> float:
        """``2 alpha E^4 + beta E^3 - a1 E - 2 a2``: zero where dS/dE is zero (times E^3)."""
        return 2 * overhead.alpha_s * experts**4 + overhead.beta_s * experts**3 - self.a1_s * experts - 2 * self.a2_s

    def e_opt(self, overhead: Overhead) -> float:
        """The continuous E > 0 minimising S(E); closed form when ``beta = a2 = 0``.

        Returns ``inf`` when S(E) keeps falling (no positive overhead to balance the compute).
        """
        if overhead.alpha_s <= 0 and overhead.beta_s <= 0:
            return float("inf")
        if overhead.beta_s == 0 and self.a2_s == 0:
            return (self.a1_s / (2 * overhead.alpha_s)) ** (1 / 3)
        roots = np.roots([2 * overhead.alpha_s, overhead.beta_s, 0.0, -self.a1_s, -2 * self.a2_s])
        candidates = [r.real for r in roots if abs(r.imag) <= 1e-9 * max(1.0, abs(r)) and r.real > 0]
        if not candidates:
            return float("inf")
        return float(min(candidates, key=lambda e: self.total_s(e, overhead)))


def _time_s(kernel: Kernel, cluster: Cluster, dtype: str) -> float:
    return kernel_time.kernel_time_s(kernel, cluster.gpu, dtype)


def _flop_time_s(kernel: Kernel, cluster: Cluster, dtype: str) -> float:
    """The compute term alone (no memory term, no fixed time): what the paper's model scales with E."""
    return kernel_time.kernel_terms(kernel, cluster.gpu, dtype).compute_s


def sectional_terms(layer: Layer, arch: SectionalMoEArchitecture, cluster: Cluster) -> SectionalTerms:
    """``C_pre``, ``K`` and ``A`` of a sectional layer from the cost model, over all sequences."""
    batch = layer.batch
    pre = pre_expert_ops(layer, arch) + post_expert_ops(layer, arch)  # the same ops the plan runs, E = 1
    experts = expert_ops(layer, arch, 1)

    def passes(kernel: Kernel) -> float:
        return costs.pass_factor(kernel.primitive, layer.has_backward)

    c_pre = sum(_time_s(k.scaled(batch), cluster, layer.dtype) * passes(k) for k in pre)
    k_s = sum(_flop_time_s(k.scaled(batch), cluster, layer.dtype) * passes(k) for k in experts if k.group == "projection")
    a_s = sum(
        _flop_time_s(k.scaled(batch), cluster, layer.dtype) * passes(k)
        for k in experts
        if k.group in ("scores", costs.ELEMENTWISE)
    )
    flops = costs.pass_flops(pre + experts, layer.has_backward) * batch
    return SectionalTerms(c_pre_s=c_pre, k_s=k_s, a_s=a_s, flops_at_one_expert=flops)


def cost_model(terms: SectionalTerms, view: str, sweep_mode: str, num_gpus: int) -> CostModel:
    """The S(E) coefficients of one view (see the module docstring for the derivation)."""
    if view == TOTAL_VIEW:
        return CostModel(view, c0_s=terms.c_pre_s + terms.a_s, a1_s=terms.k_s, a2_s=0.0)
    if sweep_mode == "expert_per_gpu":
        return CostModel(view, c0_s=0.0, a1_s=terms.c_pre_s + terms.a_s, a2_s=terms.k_s)
    return CostModel(view, c0_s=(terms.c_pre_s + terms.a_s) / num_gpus, a1_s=terms.k_s / num_gpus, a2_s=0.0)


def collectives_per_layer(layer: Layer) -> int:
    """Sectional all-to-alls per layer: scatter and gather, again in reverse for the backward pass."""
    return 2 * (2 if layer.has_backward else 1)


def hardware_alpha_s(layer: Layer, cluster: Cluster, communication: Communication | None = None) -> float:
    """alpha estimated before any simulation: an empty all-to-all between two expert hosts (the stack's
    start and per-message costs, the route's latency), times the number of sectional collectives per layer.

    The expert hosts of a group are consecutive GPUs, so GPUs 0 and 1 are a representative pair;
    ``communication`` defaults to the cluster's stacks.
    """
    return collectives_per_layer(layer) * empty_exchange_s(cluster, communication)


def empty_exchange_s(cluster: Cluster, communication: Communication | None = None) -> float:
    """One empty all-to-all between GPUs 0 and 1 (a neighbour on the same node for a single GPU)."""
    stacks = communication if communication is not None else cluster.stack_settings()
    return one_message_s(stacks.stack_for("all_to_all"), Topology(host_pair_cluster(cluster)), 0, 1)


def host_pair_cluster(cluster: Cluster) -> Cluster:
    """The cluster itself, or for a single GPU the same node with a second GPU beside it."""
    if cluster.num_gpus >= 2:
        return cluster
    return cluster.model_copy(update={"gpus_per_node": 2})


def alpha_flop_equivalent(alpha_s: float, terms: SectionalTerms) -> float:
    """alpha in FLOP-equivalents: seconds times the layer's effective FLOP/s at ``E = 1``."""
    return alpha_s * terms.effective_flops_per_s


@dataclass(frozen=True)
class FeasibleOptimum:
    continuous: float
    below: int | None
    above: int | None
    best: int


def nearest_feasible(e_continuous: float, feasible: list[int], model: CostModel, overhead: Overhead) -> FeasibleOptimum:
    """The feasible neighbours of a continuous optimum, and the one with the lower S(E)."""
    below = max((e for e in feasible if e <= e_continuous), default=None)
    above = min((e for e in feasible if e >= e_continuous), default=None)
    candidates = [e for e in (below, above) if e is not None]
    best = min(candidates, key=lambda e: float(model.total_s(e, overhead)))
    return FeasibleOptimum(continuous=e_continuous, below=below, above=above, best=best)


def analytical_curves(scenario: Scenario) -> pd.DataFrame:
    """Per-device analytical S(E) of each sectional entry with the hardware-estimated alpha."""
    layer, cluster = scenario.workload.layer, scenario.hardware
    rows = []
    for arch in scenario.workload.architectures:
        if not isinstance(arch, SectionalMoEArchitecture):
            continue
        overhead = Overhead(alpha_s=hardware_alpha_s(layer, cluster, scenario.stacks.for_entry(arch.name)))
        model = cost_model(sectional_terms(layer, arch, cluster), PER_DEVICE_VIEW, arch.sweep_mode, cluster.num_gpus)
        for e in sorted({e for placement in arch.placements for e in scenario.expert_counts(arch, placement)}):
            rows.append({"label": arch.name, "num_experts": e, "analytical_s": float(model.total_s(e, overhead))})
    return pd.DataFrame(rows, columns=["label", "num_experts", "analytical_s"])
