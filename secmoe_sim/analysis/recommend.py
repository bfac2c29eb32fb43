"""A recommendation a decision-maker can act on: best E, expected wall-clock, the honest comparison
with the baselines, how sure the answer is, and which hardware change would move it most. Data
only: :mod:`secmoe_sim.report.recommend` words it.

The sensitivity study re-simulates the sectional entries with one hardware quantity changed at a
time (every bandwidth doubled, every latency halved, the per-message overhead halved) and reports
how the best wall-clock and the best E move.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from secmoe_sim.analysis.alpha import AlphaMeasurement, measure_alpha
from secmoe_sim.simulation import simulate
from secmoe_sim.spec.hardware import Cluster, NVSwitchFabric
from secmoe_sim.spec.scenario import Scenario
from secmoe_sim.spec.workload import SectionalMoEArchitecture

BANDWIDTH_FACTOR = 2.0
LATENCY_FACTOR = 0.5
OVERHEAD_FACTOR = 0.5


def _scaled_fabrics(cluster: Cluster, bandwidth: float = 1.0, latency: float = 1.0) -> dict:
    intra = cluster.intra_node
    if isinstance(intra, NVSwitchFabric):
        intra = intra.model_copy(
            update={"bandwidth_per_direction": intra.bandwidth_per_direction * bandwidth, "latency": intra.latency * latency}
        )
    else:
        update = {
            "link_bandwidth_per_direction": intra.link_bandwidth_per_direction * bandwidth,
            "host_bridge_bandwidth_per_direction": intra.host_bridge_bandwidth_per_direction * bandwidth,
            "latency": intra.latency * latency,
        }
        if intra.inter_socket_bandwidth_per_direction is not None:
            update["inter_socket_bandwidth_per_direction"] = intra.inter_socket_bandwidth_per_direction * bandwidth
        intra = intra.model_copy(update=update)
    inter = cluster.inter_node
    if inter is not None:
        inter = inter.model_copy(
            update={
                "nic_bandwidth_per_direction": inter.nic_bandwidth_per_direction * bandwidth,
                "latency": inter.latency * latency,
            }
        )
    return {"intra_node": intra, "inter_node": inter}


def hardware_changes(cluster: Cluster) -> dict[str, Cluster]:
    """The what-if clusters of the sensitivity study, by description."""
    return {
        f"every link bandwidth x{BANDWIDTH_FACTOR:g}": cluster.model_copy(
            update=_scaled_fabrics(cluster, bandwidth=BANDWIDTH_FACTOR)
        ),
        f"every link latency x{LATENCY_FACTOR:g}": cluster.model_copy(update=_scaled_fabrics(cluster, latency=LATENCY_FACTOR)),
        f"per-message overhead x{OVERHEAD_FACTOR:g}": cluster.model_copy(
            update={"message_overhead": cluster.message_overhead * OVERHEAD_FACTOR}
        ),
    }


@dataclass(frozen=True)
class Sensitivity:
    change: str
    best_e: int
    wall_clock_s: float
    relative_change: float


def sensitivity(scenario: Scenario, label: str, baseline_s: float, seed: int) -> list[Sensitivity]:
    """Best E and wall-clock of the sectional entry ``label`` under each hardware change."""
    arch = next(a for a in scenario.workload.architectures if a.name == label)
    studies = []
    for change, cluster in hardware_changes(scenario.hardware).items():
        changed = scenario.model_copy(
            update={
                "hardware": cluster,
                "workload": scenario.workload.model_copy(update={"architectures": [arch]}),
            }
        )
        summary = simulate(changed, seed=seed).summary
        best = summary.iloc[int(np.argmin(summary["wall_clock_s"].to_numpy()))]
        studies.append(
            Sensitivity(
                change, int(best["num_experts"]), float(best["wall_clock_s"]), float(best["wall_clock_s"] / baseline_s - 1.0)
            )
        )
    return studies


@dataclass(frozen=True)
class Recommendation:
    """What ``recommend`` found: the best row of every entry, the chosen sectional entry, how sure, what moves it.

    ``best`` is indexed by entry label; ``chosen`` is the label of the fastest sectional entry
    (``fixed_cluster`` entries first); ``per_device`` the alpha measurement of that entry's sweep
    mode in the per-device view. ``chosen`` is empty when the scenario has no sectional entry.
    """

    scenario: Scenario
    best: pd.DataFrame
    chosen: str
    per_device: AlphaMeasurement | None
    sensitivity: tuple[Sensitivity, ...]


def recommend(scenario: Scenario, seed: int | None = None) -> Recommendation:
    """Simulate ``scenario``, choose the sectional configuration, measure its alpha and its sensitivity."""
    seed = scenario.seed if seed is None else seed
    results = simulate(scenario, seed=seed)
    best = results.best().set_index("label")
    sectional = [a for a in scenario.workload.architectures if isinstance(a, SectionalMoEArchitecture)]
    if not sectional:
        return Recommendation(scenario, best, "", None, ())
    fixed = [a for a in sectional if a.sweep_mode == "fixed_cluster"] or sectional
    wall_clock_s = best["wall_clock_s"].to_dict()
    chosen = min(fixed, key=lambda a: float(wall_clock_s[a.name]))
    measurements, _ = measure_alpha(scenario, (chosen.sweep_mode,), seed=seed)
    per_device = next(m for m in measurements if m.view == "per_device")
    studies = sensitivity(scenario, chosen.name, float(wall_clock_s[chosen.name]), seed)
    return Recommendation(scenario, best, chosen.name, per_device, tuple(studies))
