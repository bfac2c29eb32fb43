"""A recommendation a decision-maker can act on, as data (:mod:`secmoe_sim.report.recommend` words it).

* **What to run.** Among the configurations that fit in memory (no ``oom``), on the scenario's own
  GPUs, the fastest by wall-clock, over every entry and placement. ``pays_off`` says whether the
  best sectional configuration beats the fastest dense baseline on the same GPUs. Entries whose GPU
  count grows with E (``expert_per_gpu``) are compared apart, in GPU-seconds, against dense
  simulated on their own GPU counts.
* **How sure.** Whether the sectional optimum is censored (``at_bound``, :mod:`secmoe_sim.analysis.bounds`),
  and what the paper's analytical shortcut would have picked (:mod:`secmoe_sim.analysis.alpha`).
* **What moves it.** The sectional entry re-simulated with one hardware quantity changed at a time:
  every link bandwidth doubled, every latency halved, the per-message overhead halved.

"Best" means fastest: model quality is not simulated, and a sectional layer's expert capacity falls
as ``12 d^2 / E``. With a ``model`` section every choice and every study is made on the model's step
(:mod:`secmoe_sim.analysis.model_step`: ``wall_clock_s`` is then the step time, memory the model's);
the analytical shortcut stays a property of one layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from secmoe_sim.analysis.alpha import AlphaMeasurement, measure_alpha
from secmoe_sim.analysis.bounds import binding_limit
from secmoe_sim.analysis.comparison import DENSE, SECTIONAL, comparison_table
from secmoe_sim.analysis.model_step import as_layer_summary, simulate_model
from secmoe_sim.simulation import simulate
from secmoe_sim.spec.scenario import Scenario
from secmoe_sim.spec.workload import SectionalMoEArchitecture, TokenMoEArchitecture

BANDWIDTH_FACTOR = 2.0
LATENCY_FACTOR = 0.5
OVERHEAD_FACTOR = 0.5
CONFIGURATION_FIELDS = (
    "label",
    "architecture",
    "num_experts",
    "placement",
    "num_gpus",
    "wall_clock_s",
    "gpu_seconds",
    "params",
    "flops_per_token",
    "oom",
)


def what_ifs(scenario: Scenario) -> dict[str, Scenario]:
    """The what-if scenarios of the sensitivity study, by description: one quantity changed in each."""
    cluster = scenario.hardware
    return {
        f"every link bandwidth x{BANDWIDTH_FACTOR:g}": scenario.model_copy(
            update={"hardware": cluster.with_links_scaled(bandwidth_factor=BANDWIDTH_FACTOR)}
        ),
        f"every link latency x{LATENCY_FACTOR:g}": scenario.model_copy(
            update={"hardware": cluster.with_links_scaled(latency_factor=LATENCY_FACTOR)}
        ),
        f"communication software costs x{OVERHEAD_FACTOR:g}": scenario.model_copy(
            update={  # the scaled stack in one place: the scenario's (a hardware's own stack moves there)
                "communication": scenario.stacks.scaled(OVERHEAD_FACTOR),
                "hardware": cluster.model_copy(update={"communication": None, "message_overhead": None}),
            }
        ),
    }


@dataclass(frozen=True)
class Sensitivity:
    """The chosen sectional entry's best E and wall-clock with one hardware change."""

    change: str
    best_e: int
    wall_clock_s: float
    relative_change: float


@dataclass(frozen=True)
class Configuration:
    """One simulated configuration, as recommended or as a baseline."""

    label: str
    architecture: str
    num_experts: int
    placement: str
    num_gpus: int
    wall_clock_s: float
    gpu_seconds: float
    params: float
    flops_per_token: float
    oom: bool
    at_bound: str = ""

    @classmethod
    def of(cls, row: dict, at_bound: str = "") -> Configuration:
        values = {name: row[name] for name in CONFIGURATION_FIELDS}
        return cls(
            label=str(values["label"]),
            architecture=str(values["architecture"]),
            num_experts=int(values["num_experts"]),
            placement=str(values["placement"]),
            num_gpus=int(values["num_gpus"]),
            wall_clock_s=float(values["wall_clock_s"]),
            gpu_seconds=float(values["gpu_seconds"]),
            params=float(values["params"]),
            flops_per_token=float(values["flops_per_token"]),
            oom=bool(values["oom"]),
            at_bound=at_bound,
        )


@dataclass(frozen=True)
class Recommendation:
    """Everything ``recommend`` found; see the module docstring."""

    scenario: Scenario
    recommended: Configuration | None  # the fastest feasible configuration on the scenario's GPUs
    best_sectional: Configuration | None  # the fastest feasible sectional one there
    fastest_dense: Configuration | None  # the fastest feasible dense one there
    pays_off: bool
    baselines: tuple[Configuration, ...]  # every non-sectional entry's best on the scenario's GPUs
    sectional: tuple[Configuration, ...]  # every sectional entry and placement's best there
    other_gpu_counts: tuple[tuple[Configuration, Configuration | None], ...]  # (expert_per_gpu best, dense on its GPUs)
    out_of_memory: tuple[Configuration, ...]  # entries and placements none of whose E fits in memory
    per_device: AlphaMeasurement | None
    sensitivity: tuple[Sensitivity, ...]

    def speedup_over(self, baseline: Configuration) -> float:
        """``baseline`` wall-clock / the best sectional's (above 1: sectional is faster)."""
        if self.best_sectional is None:
            return float("nan")
        return baseline.wall_clock_s / self.best_sectional.wall_clock_s

    def document(self) -> dict:
        """The JSON object of ``recommend --json``."""

        def fields(configuration: Configuration | None) -> dict | None:
            return None if configuration is None else dict(configuration.__dict__)

        return {
            "scenario": self.scenario.name,
            "pays_off": self.pays_off,
            "recommended": fields(self.recommended),
            "best_sectional": fields(self.best_sectional),
            "fastest_dense": fields(self.fastest_dense),
            "baselines": [fields(b) for b in self.baselines],
            "sectional": [fields(s) for s in self.sectional],
            "other_gpu_counts": [{"sectional": fields(s), "dense_same_gpus": fields(d)} for s, d in self.other_gpu_counts],
            "out_of_memory": [fields(o) for o in self.out_of_memory],
            "speed_only": "model quality is not simulated; a sectional layer's experts hold 12 d^2 / E parameters in all",
            "analytical_shortcut": None
            if self.per_device is None
            else {
                "alpha_s": self.per_device.alpha_s,
                "e_opt_feasible": self.per_device.e_opt_feasible,
                "e_opt_simulated": self.per_device.e_opt_simulated,
                "regret": self.per_device.regret,
                "best_form": self.per_device.best_form,
                "r2": self.per_device.fits[self.per_device.best_form].r2,
            },
            "sensitivity": [dict(s.__dict__) for s in self.sensitivity],
        }


def simulated_summary(scenario: Scenario, seed: int) -> pd.DataFrame:
    """What ``recommend`` ranks: the layer summary, or the model steps in its columns when there is a model."""
    if scenario.model is None:
        return simulate(scenario, seed=seed).summary
    return as_layer_summary(simulate_model(scenario, seed=seed))


def sensitivity(scenario: Scenario, label: str, placement: str, baseline_s: float, seed: int) -> list[Sensitivity]:
    """Best E and wall-clock of the sectional entry ``label`` (one placement) under each hardware change."""
    arch = next(a for a in scenario.workload.architectures if a.name == label)
    assert isinstance(arch, SectionalMoEArchitecture)
    kept: list[SectionalMoEArchitecture | TokenMoEArchitecture] = [arch.model_copy(update={"placement": placement})]
    if scenario.model is not None and scenario.model.other_layers == "token_moe":  # the model's other layers stay
        kept += [a for a in scenario.workload.architectures if isinstance(a, TokenMoEArchitecture)][:1]
    reduced = scenario.workload.model_copy(update={"architectures": kept})
    studies = []
    for change, changed in what_ifs(scenario).items():
        summary = simulated_summary(changed.model_copy(update={"workload": reduced}), seed)
        summary = summary[summary["label"] == label]
        feasible = summary[~summary["oom"]] if (~summary["oom"]).any() else summary
        best = feasible.iloc[int(feasible["wall_clock_s"].to_numpy().argmin())]
        wall = float(best["wall_clock_s"])
        studies.append(Sensitivity(change, int(best["num_experts"]), wall, wall / baseline_s - 1.0))
    return studies


def _fastest(rows: pd.DataFrame) -> dict | None:
    if rows.empty:
        return None
    return dict(rows.iloc[int(rows["wall_clock_s"].to_numpy().argmin())])


def recommend(scenario: Scenario, seed: int | None = None, with_studies: bool = True) -> Recommendation:
    """Simulate ``scenario`` and choose; ``with_studies`` adds the alpha measurement and the sensitivity study."""
    seed = scenario.seed if seed is None else seed
    summary = simulated_summary(scenario, seed)
    feasible = summary[~summary["oom"]]
    fits = comparison_table(feasible, scenario.hardware.num_gpus)  # out-of-memory rows can be neither chosen nor a reference
    here = fits[fits["same_gpus_as_scenario"]]
    entries = {a.name: a for a in scenario.workload.architectures if isinstance(a, SectionalMoEArchitecture)}

    def configuration(row: dict | None) -> Configuration | None:
        if row is None:
            return None
        arch = entries.get(str(row["label"]))
        bound = binding_limit(scenario, arch, str(row["placement"]), int(row["num_experts"])) if arch else ""
        return Configuration.of(row, bound)

    best_sectional = configuration(_fastest(here[here["architecture"] == SECTIONAL]))
    fastest_dense = configuration(_fastest(here[here["architecture"] == DENSE]))
    pays_off = best_sectional is not None and (fastest_dense is None or best_sectional.wall_clock_s < fastest_dense.wall_clock_s)
    elsewhere = []
    for row in fits[~fits["same_gpus_as_scenario"] & (fits["architecture"] == SECTIONAL)].to_dict("records"):
        dense_rows = feasible[(feasible["architecture"] == DENSE) & (feasible["num_gpus"] == row["num_gpus"])]
        elsewhere.append((configuration(row), configuration(_fastest(dense_rows))))
    per_device: AlphaMeasurement | None = None
    studies: tuple[Sensitivity, ...] = ()
    if with_studies and best_sectional is not None:
        mode = entries[best_sectional.label].sweep_mode
        measurements, _ = measure_alpha(scenario, (mode,), seed, best_sectional.label, best_sectional.placement)
        per_device = next(m for m in measurements if m.view == "per_device")
        studies = tuple(sensitivity(scenario, best_sectional.label, best_sectional.placement, best_sectional.wall_clock_s, seed))
    chosen = [configuration(row) for row in here.to_dict("records")]
    fitting_keys = set(zip(feasible["label"], feasible["placement"]))
    never_fits = summary[[key not in fitting_keys for key in zip(summary["label"], summary["placement"])]]
    return Recommendation(
        scenario=scenario,
        recommended=configuration(_fastest(here)),
        best_sectional=best_sectional,
        fastest_dense=fastest_dense,
        pays_off=bool(pays_off),
        baselines=tuple(c for c in chosen if c is not None and c.architecture != SECTIONAL),
        sectional=tuple(c for c in chosen if c is not None and c.architecture == SECTIONAL),
        other_gpu_counts=tuple((s, d) for s, d in elsewhere if s is not None),
        out_of_memory=tuple(Configuration.of(row) for row in comparison_table(never_fits, 0).to_dict("records")),
        per_device=per_device,
        sensitivity=studies,
    )
