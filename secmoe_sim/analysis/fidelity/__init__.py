"""Fidelity: the simulator against published collective and MoE-dispatch measurements.

The cases live in ``data/published.yaml`` with their sources, stacks and roles; each is re-enacted
with the benchmark's own traffic and byte accounting (:mod:`.benchmarks`) on a datasheet preset
(:mod:`.presets`), moved by its stack with the parameters fitted on the ``fit`` cases
(:mod:`.stacks`). The table reports every case with its size band, and per band and stack the
median and worst error of the predictions.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import pandas as pd
import yaml

from secmoe_sim.analysis.fidelity.benchmarks import simulate_case
from secmoe_sim.analysis.fidelity.stacks import MODELS, FittedStack, fit_stack
from secmoe_sim.spec.network import NetworkOptions
from secmoe_sim.spec.units import parse_quantity

SMALL_BELOW_BYTES = parse_quantity("64 KiB", "size")
LARGE_ABOVE_BYTES = parse_quantity("64 MiB", "size")
BANDS = ("small", "medium", "large")
MEDIAN_TARGET = 0.10  # per band and stack, the median prediction error
WORST_TARGET = 0.20  # per band and stack, the worst prediction error
NETWORK = NetworkOptions(model="flows", mode="batched", tolerance=0.01, all_to_all="direct")  # within 0.5% of exact (tests)
COLUMNS = ["case", "source", "stack", "size_bytes", "band", "metric", "published", "simulated", "rel_error", "role"]


def band(size_bytes: float) -> str:
    """``small`` below 64 KiB, ``large`` above 64 MiB, ``medium`` between."""
    if size_bytes < SMALL_BELOW_BYTES:
        return "small"
    return "large" if size_bytes > LARGE_ABOVE_BYTES else "medium"


def published_cases() -> list[dict]:
    text = (resources.files("secmoe_sim.analysis.fidelity") / "data" / "published.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)["cases"]


def fit_rule() -> str:
    text = (resources.files("secmoe_sim.analysis.fidelity") / "data" / "published.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)["fit_rule"]


@dataclass(frozen=True)
class Fidelity:
    """The table of every case, and each stack as fitted."""

    table: pd.DataFrame
    stacks: dict[str, FittedStack]

    def summary(self) -> pd.DataFrame:
        """Per stack and band: cases, fit cases, predictions, and the predictions' median and worst error."""
        rows = []
        for (stack, band_name), group in self.table.groupby(["stack", "band"], sort=True):
            predictions = group[group["role"] == "prediction"]["rel_error"]
            rows.append(
                {
                    "stack": stack,
                    "band": band_name,
                    "cases": len(group),
                    "fit": int((group["role"] == "fit").sum()),
                    "predictions": len(predictions),
                    "median_error": float(predictions.median()) if len(predictions) else float("nan"),
                    "worst_error": float(predictions.max()) if len(predictions) else float("nan"),
                }
            )
        summary = pd.DataFrame(rows)
        summary["band"] = pd.Categorical(summary["band"], BANDS, ordered=True)
        summary = summary.sort_values(["stack", "band"]).reset_index(drop=True)
        summary["band"] = summary["band"].astype(str)
        summary["within_targets"] = (summary["median_error"] <= MEDIAN_TARGET) & (summary["worst_error"] <= WORST_TARGET)
        return summary


def fidelity_table(network: NetworkOptions = NETWORK) -> Fidelity:
    """Fit every stack on its ``fit`` cases, then simulate every case with the fitted stacks."""
    cases = published_cases()
    stacks = {name: fit_stack(model, cases, network) for name, model in MODELS.items()}
    rows = []
    for case in cases:
        fitted = stacks[case["stack"]]
        outcome = simulate_case(case, fitted.stack, network, fitted.harness)
        rows.append(
            {
                "case": case["case"],
                "source": case["source"],
                "stack": case["stack"],
                "size_bytes": outcome.size_bytes,
                "band": band(outcome.size_bytes),
                "metric": case["metric"],
                "published": float(case["published"]),
                "simulated": outcome.simulated,
                "rel_error": abs(outcome.simulated - case["published"]) / case["published"],
                "role": case["role"],
            }
        )
    return Fidelity(pd.DataFrame(rows, columns=COLUMNS), stacks)
