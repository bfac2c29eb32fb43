"""Regenerate the golden summaries of the shipped scenarios, on purpose.

    python tests/regenerate_golden.py

Run it when a change is meant to alter simulated numbers: bump ``secmoe_sim/version.py`` first and
say in ``CHANGELOG.md`` which numbers moved and why. ``golden/metadata.json`` records the version
and the scenario hashes the summaries were made with; the tests check both.
"""

from __future__ import annotations

import json
from pathlib import Path

from secmoe_sim import __version__, load_scenario, simulate
from secmoe_sim.analysis.model_step import layer_scenario, simulate_model
from secmoe_sim.spec.loading import shipped_scenario_names

GOLDEN = Path(__file__).parent / "golden"
METADATA = GOLDEN / "metadata.json"


def golden_path(name: str) -> Path:
    return GOLDEN / f"{name}.summary.csv"


def golden_model_path(name: str) -> Path:
    """The model steps of a scenario with a ``model`` section."""
    return GOLDEN / f"{name}.model.csv"


def main() -> None:
    GOLDEN.mkdir(exist_ok=True)
    hashes = {}
    for name in shipped_scenario_names():
        scenario = load_scenario(name)
        if scenario.model is not None:
            layers = simulate(layer_scenario(scenario))
            simulate_model(scenario, layers=layers).summary.to_csv(golden_model_path(name), index=False, float_format="%.17g")
            print(f"wrote {golden_model_path(name)}")
        else:
            layers = simulate(scenario)
        layers.summary.to_csv(golden_path(name), index=False, float_format="%.17g")
        hashes[name] = scenario.content_hash()
        print(f"wrote {golden_path(name)}")
    METADATA.write_text(json.dumps({"version": __version__, "scenario_sha256": hashes}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {METADATA}")


if __name__ == "__main__":
    main()
