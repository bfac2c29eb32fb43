"""Check the calibrated simulator against a real sectional layer on the local device.

For every sectional entry of a single-device scenario and every E, the reference torch layer
(:mod:`.reference_layer`) is timed on the device, and the same layer is predicted by the simulator
in two modes: ``fitted`` (the roofline with the fitted hardware file) and ``replay`` (op times from
the calibration trace). The microbenchmarks behind both never ran the reference layer: the
predictions come from primitives only.

Outputs: ``check_real.csv`` (``E, mode, measured_s, predicted_s, rel_error`` with
``rel_error = predicted / measured - 1``, plus the entry and the measured spread), a plot, and per
(entry, mode) the median absolute error and the *regret* of the predicted best E: the measured time
at the E the simulator picks over the measured minimum, minus one. Each is held against its documented
target (docs/calibration.md: median error within 10%, regret within 3%), and the measurement's own
spread (p10 to p90 over the median, the median across E) is reported beside them: an error smaller
than the spread is noise, not a miss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from secmoe_sim.calibrate import CalibrationError, require_torch
from secmoe_sim.calibrate.reference_layer import SectionalLayer
from secmoe_sim.calibrate.replay import ReplayReport, replay_results
from secmoe_sim.calibrate.timing import Device, interleaved_time_s, torch_dtype
from secmoe_sim.calibrate.trace import Trace
from secmoe_sim.spec.hardware import Cluster
from secmoe_sim.spec.scenario import Scenario
from secmoe_sim.spec.units import PERCENT
from secmoe_sim.spec.workload import SectionalMoEArchitecture

MODES = ("fitted", "replay")
TARGET_MEDIAN_ERROR_PCT = 10.0  # docs/calibration.md, section 7
TARGET_REGRET_PCT = 3.0
BUSY_LOAD_PER_CORE = 0.5  # a 1-minute load above this per core marks a run as taken on a loaded machine
CHECK_COLUMNS = [
    "E",
    "mode",
    "measured_s",
    "predicted_s",
    "rel_error",
    "entry",
    "measured_p10_s",
    "measured_p90_s",
    "measured_repeats",
    "replay_extrapolated_ops",
]

# Layers of the built-in check, per device and grid: the paper's layer (pre-expert block, N -> N/4)
# and the experts alone on the full sequence. The sizes keep a forward pass at tens of milliseconds.
_ENTRIES = [
    {
        "kind": "sectional_moe",
        "label": "sectional",
        "experts": "all_feasible",
        "pre_expert": {"enabled": True, "sequence_reduction": 4, "ffn": False},
        "grouped_kernels": False,
    },
    {
        "kind": "sectional_moe",
        "label": "experts-only",
        "experts": "all_feasible",
        "pre_expert": {"enabled": False},
        "grouped_kernels": False,
    },
]
_LAYERS = {
    ("cpu", False): ({"d_model": 512, "seq_len": 1024, "batch": 2, "heads": 8, "dtype": "fp32"}, 16),
    ("cpu", True): ({"d_model": 256, "seq_len": 256, "batch": 2, "heads": 4, "dtype": "fp32"}, 16),
    ("cuda", False): ({"d_model": 4096, "seq_len": 4096, "batch": 4, "heads": 32, "dtype": "bf16"}, 64),
    ("cuda", True): ({"d_model": 1024, "seq_len": 1024, "batch": 4, "heads": 16, "dtype": "bf16"}, 64),
}


def default_workload(kind: str, quick: bool) -> dict:
    """The built-in check's workload for a device kind (``quick``: a smaller layer)."""
    layer, min_width = _LAYERS[(kind, quick)]
    return {
        "layer": {**layer, "ffn": False, "causal": False, "attention": "flash"},
        "architectures": [{**entry, "min_section_width": min_width} for entry in _ENTRIES],
    }


def check_scenario(cluster: Cluster, workload: dict, name: str) -> Scenario:
    """A single-device scenario of ``workload`` on the calibrated device; one-line errors.

    On one device every placement is the same (the device runs all experts), so each sectional
    entry is checked once, as ``replicated``, the way the reference layer computes it.
    """
    single = cluster.resized(1)
    workload = {
        **workload,
        "architectures": [
            {**entry, "placement": "replicated"} if entry.get("kind") == "sectional_moe" else entry
            for entry in workload["architectures"]
        ],
    }
    scenario = Scenario.model_validate(
        {
            "schema_version": 1,
            "name": name,
            "description": "check-real: one device",
            "hardware": single.model_dump(mode="json"),
            "workload": workload,
        }
    )
    entries = [a for a in scenario.workload.architectures if isinstance(a, SectionalMoEArchitecture)]
    if not entries:
        raise CalibrationError(f"scenario {name}: check-real needs at least one sectional_moe entry")
    for arch in entries:
        reduction = arch.pre_expert.sequence_reduction if arch.pre_expert.enabled else 1
        if scenario.workload.layer.seq_len % reduction:
            raise CalibrationError(f"scenario {name}: seq_len must be a multiple of the sequence reduction {reduction}")
    return scenario


def measure_reference(device: Device, scenario: Scenario, warmup: int, repeats: int) -> pd.DataFrame:
    """Measured forward time of the reference layer for every sectional entry and E, the layers
    timed round-robin (:func:`~secmoe_sim.calibrate.timing.interleaved_time_s`) so that a slow
    spell of the machine does not favour one E over another."""
    torch = require_torch()
    layer = scenario.workload.layer
    dtype = torch_dtype(layer.dtype)
    cases, calls = [], []
    for arch in scenario.workload.architectures:
        if not isinstance(arch, SectionalMoEArchitecture):
            continue
        for num_experts in scenario.expert_counts(arch):
            reference = SectionalLayer(layer, arch, num_experts, device.torch_device, dtype)
            x = reference.input()
            cases.append((arch.name, num_experts))
            calls.append((lambda reference=reference, x=x: reference.forward(x), x.normal_))
    with torch.inference_mode():
        timings = interleaved_time_s(device, calls, warmup, repeats)
    return pd.DataFrame(
        [
            {
                "entry": entry,
                "E": num_experts,
                "measured_s": float(np.median(samples)),
                "measured_p10_s": float(np.percentile(samples, 10)),
                "measured_p90_s": float(np.percentile(samples, 90)),
                "measured_repeats": len(samples),
            }
            for (entry, num_experts), samples in zip(cases, timings)
        ]
    )


def predict(scenario: Scenario, trace: Trace, trace_path: Path) -> tuple[pd.DataFrame, ReplayReport]:
    """The simulator's wall-clock per entry and E, fitted-hardware and replay modes, and how the
    replay timed each kernel."""
    from secmoe_sim.simulation import simulate

    fitted = simulate(scenario).summary.assign(mode="fitted", replay_extrapolated_ops=np.nan)
    replayed, report = replay_results(scenario, None, trace, trace_path)
    replayed = replayed.summary.assign(mode="replay")
    columns = ["label", "num_experts", "mode", "wall_clock_s", "replay_extrapolated_ops"]
    both = pd.concat([fitted[columns], replayed[columns]], ignore_index=True)
    return both.rename(columns={"label": "entry", "num_experts": "E", "wall_clock_s": "predicted_s"}), report


@dataclass(frozen=True)
class CheckResult:
    """The check table and its summary per (entry, mode)."""

    table: pd.DataFrame
    summary: pd.DataFrame


def compare(measured: pd.DataFrame, predicted: pd.DataFrame) -> CheckResult:
    """Join measurements and predictions; relative errors, median error and regret per entry and mode."""
    table = predicted.merge(measured, on=["entry", "E"], how="inner")
    table["rel_error"] = table["predicted_s"] / table["measured_s"] - 1
    table = table[CHECK_COLUMNS].sort_values(["entry", "mode", "E"], kind="stable").reset_index(drop=True)
    rows = []
    for (entry, mode), group in table.groupby(["entry", "mode"], sort=False):
        measured_best = group.iloc[int(group["measured_s"].to_numpy().argmin())]
        predicted_best = group.iloc[int(group["predicted_s"].to_numpy().argmin())]
        median_error = float(group["rel_error"].abs().median() * PERCENT)
        regret = float((predicted_best["measured_s"] / measured_best["measured_s"] - 1) * PERCENT)
        spread = (group["measured_p90_s"] - group["measured_p10_s"]) / group["measured_s"]
        rows.append(
            {
                "entry": entry,
                "mode": mode,
                "median_abs_error_pct": median_error,
                "worst_error_pct": float(group["rel_error"].iloc[group["rel_error"].abs().argmax()] * PERCENT),
                "measured_best_E": int(measured_best["E"]),
                "predicted_best_E": int(predicted_best["E"]),
                "regret_pct": regret,
                "measured_spread_pct": float(spread.median() * PERCENT),
                "median_error_target_met": median_error <= TARGET_MEDIAN_ERROR_PCT,
                "regret_target_met": regret <= TARGET_REGRET_PCT,
            }
        )
    return CheckResult(table=table, summary=pd.DataFrame(rows))


def loaded_machine(load_averages: list[float], cores: int) -> bool:
    """Whether any 1-minute load average taken around the measurement exceeds :data:`BUSY_LOAD_PER_CORE` per core."""
    return max(load_averages) > BUSY_LOAD_PER_CORE * cores


def scenario_yaml(scenario: Scenario, hardware_include: str | None) -> str:
    """The check scenario as YAML (fields at their defaults left out); the hardware as an include
    when the file describes one device."""
    document = scenario.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    if hardware_include is not None:
        document["hardware"] = hardware_include
    header = "# The single-device scenario check-real predicted (`secmoe-sim run`; add --replay TRACE for replay mode).\n"
    return header + yaml.safe_dump(document, sort_keys=False)
