"""The fitted parameters of each communication stack, and how they are fitted.

Parameters are per stack and link class, never per case (docs/fidelity.md):

* ``nccl`` (NCCL 2.17-2.26 on NVIDIA GPUs): the LL protocol's launch and its step latency on
  NVSwitch and on the network; the per-peer cost of a grouped send/receive on each; the
  efficiency of NVSwitch (one value at every size) and of the network (a curve with two knots,
  at the ring chunks of the two forced-ring fit cases). LL128 and Simple keep NCCL's own tuning
  constants, and so does every other part of the protocol choice. With them, the nccl-tests host's
  launch per GPU of a collective without CUDA graphs (:class:`.benchmarks.Harness`; NCCL's group
  launch from one thread, the CUDA driver): 9 parameters.
* ``gpu_initiated`` (DeepEP): the kernel's fixed cost, the NVSwitch and the network efficiency
  (one value each): 3 parameters.

Which cases are ``fit`` is fixed in the case file by the rule stated there, before any fit; each
names the parameters it determines (``determines``). The fit solves group by group, in the order
of the case file, for the parameters that make the group's cases exact (scipy's bounded least
squares on relative errors, the other parameters held), and sweeps the groups again until no
parameter moves by more than 1e-4 relative (a parameter of one group, such as an efficiency, also
touches another group's cases a little). Every other case is a prediction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from secmoe_sim.analysis.fidelity.benchmarks import Harness, simulate_case
from secmoe_sim.spec.communication import EfficiencyKnot, GpuInitiatedStack, NcclStack, Stack, nccl_protocols
from secmoe_sim.spec.network import NetworkOptions
from secmoe_sim.spec.units import SECOND_FACTORS

NETWORK_KNOTS_BYTES = (131072.0, 8388608.0)  # ring chunks of the 16 MiB and 1 GiB forced-ring all-reduce fit cases


@dataclass(frozen=True)
class Parameter:
    """One fitted number: its name, unit, starting value and bounds."""

    name: str
    unit: str
    start: float
    low: float
    high: float


@dataclass(frozen=True)
class StackModel:
    """A stack's fitted parameters, the stack they describe, and what they say of a benchmark's host."""

    name: str
    parameters: tuple[Parameter, ...]
    build: Callable[[Sequence[float]], Stack]
    harness: Callable[[Sequence[float]], Harness] = lambda _values: Harness()


def nccl_stack(values: Sequence[float]) -> NcclStack:
    launch_s, nvswitch_step_s, network_step_s, nvswitch_peer_s, network_peer_s, nvswitch_eff, medium_eff, large_eff, _ = values
    low_latency, *bulk = nccl_protocols()
    low_latency = low_latency.model_copy(
        update={
            "launch": launch_s,
            "step_latency": {**low_latency.step_latency, "nvswitch": nvswitch_step_s, "network": network_step_s},
        }
    )
    return NcclStack(
        kind="nccl",
        protocols=[low_latency, *bulk],
        peer_overhead={"nvswitch": nvswitch_peer_s, "network": network_peer_s},
        efficiency={
            "nvswitch": [EfficiencyKnot(size=1.0, efficiency=nvswitch_eff)],
            "network": [
                EfficiencyKnot(size=NETWORK_KNOTS_BYTES[0], efficiency=medium_eff),
                EfficiencyKnot(size=NETWORK_KNOTS_BYTES[1], efficiency=large_eff),
            ],
        },
    )


def nccl_harness(values: Sequence[float]) -> Harness:
    *_stack_values, host_launch_s = values
    return Harness(launch_per_gpu_s=host_launch_s)


def gpu_initiated_stack(values: Sequence[float]) -> GpuInitiatedStack:
    kernel_s, nvswitch_eff, network_eff = values
    return GpuInitiatedStack(
        kind="gpu_initiated",
        kernel=kernel_s,
        per_peer=0.0,
        efficiency={
            "nvswitch": [EfficiencyKnot(size=1.0, efficiency=nvswitch_eff)],
            "network": [EfficiencyKnot(size=1.0, efficiency=network_eff)],
        },
    )


US = SECOND_FACTORS["us"]
MODELS = {
    "nccl": StackModel(
        "nccl",
        (
            Parameter("LL launch", "s", 3.6 * US, 0.1 * US, 50 * US),
            Parameter("LL step latency, NVSwitch", "s", 0.47 * US, 0.01 * US, 20 * US),
            Parameter("LL step latency, network", "s", 2.7 * US, 0.01 * US, 50 * US),
            Parameter("per-peer cost, NVSwitch", "s", 0.1 * US, 0.0, 20 * US),
            Parameter("per-peer cost, network", "s", 1.0 * US, 0.0, 50 * US),
            Parameter("efficiency, NVSwitch", "1", 0.8, 0.05, 1.0),
            Parameter("efficiency, network, 128 KiB messages", "1", 0.7, 0.01, 1.0),
            Parameter("efficiency, network, 8 MiB messages", "1", 0.9, 0.05, 1.0),
            Parameter("host launch per GPU, without CUDA graphs", "s", 4.0 * US, 0.1 * US, 50 * US),
        ),
        nccl_stack,
        nccl_harness,
    ),
    "gpu_initiated": StackModel(
        "gpu_initiated",
        (
            Parameter("kernel fixed cost", "s", 40 * US, 0.0, 500 * US),
            Parameter("efficiency, NVSwitch", "1", 0.7, 0.05, 1.0),
            Parameter("efficiency, network", "1", 0.9, 0.05, 1.0),
        ),
        gpu_initiated_stack,
    ),
}
MAX_SWEEPS = 8
SETTLED = 1e-4


@dataclass(frozen=True)
class FittedStack:
    """A stack after its fit: the parameter values, the stack they make, and the sweeps it took."""

    model: StackModel
    values: tuple[float, ...]
    sweeps: int = 0

    @property
    def stack(self) -> Stack:
        return self.model.build(self.values)

    @property
    def harness(self) -> Harness:
        return self.model.harness(self.values)

    def document(self) -> dict:
        return {p.name: {"value": v, "unit": p.unit} for p, v in zip(self.model.parameters, self.values)}


def fit_groups(model: StackModel, cases: list[dict]) -> list[tuple[list[int], list[dict]]]:
    """The stack's fit cases grouped by the parameters they determine, in case-file order."""
    index = {parameter.name: i for i, parameter in enumerate(model.parameters)}
    groups: dict[tuple[int, ...], list[dict]] = {}
    for case in cases:
        if case["stack"] != model.name or case["role"] != "fit":
            continue
        unknown = [name for name in case["determines"] if name not in index]
        if unknown:
            raise ValueError(f"fit case {case['case']}: no parameter {unknown[0]!r} in stack {model.name}")
        groups.setdefault(tuple(index[name] for name in case["determines"]), []).append(case)
    covered = sorted(i for key in groups for i in key)
    if covered != list(range(len(model.parameters))):
        raise ValueError(f"stack {model.name}: the fit cases must determine each parameter exactly once")
    return [(list(key), group) for key, group in groups.items()]


def fit_stack(model: StackModel, cases: list[dict], network: NetworkOptions) -> FittedStack:
    """The parameters that make the stack's ``fit`` cases exact, group by group (see the module docstring)."""
    values = np.array([p.start for p in model.parameters])
    scale = np.where(values != 0, np.abs(values), 1.0)
    groups = fit_groups(model, cases)
    for sweep in range(1, MAX_SWEEPS + 1):
        before = values.copy()
        for indices, group in groups:

            def residuals(x: np.ndarray, indices=indices, group=group) -> np.ndarray:
                trial = values.copy()
                trial[indices] = x * scale[indices]
                stack, harness = model.build(trial.tolist()), model.harness(trial.tolist())
                return np.array(
                    [simulate_case(case, stack, network, harness).simulated / case["published"] - 1.0 for case in group]
                )

            low = [model.parameters[i].low / scale[i] for i in indices]
            high = [model.parameters[i].high / scale[i] for i in indices]
            start = np.clip(values[indices] / scale[indices], low, high)
            result = least_squares(residuals, start, bounds=(low, high), diff_step=[1e-4] * len(indices), xtol=1e-10, ftol=1e-10)
            values[indices] = result.x * scale[indices]
        if np.all(np.abs(values - before) <= SETTLED * scale):
            return FittedStack(model, tuple(float(v) for v in values), sweep)
    return FittedStack(model, tuple(float(v) for v in values), MAX_SWEEPS)
