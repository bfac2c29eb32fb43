"""Regenerate the golden summaries of the shipped scenarios, on purpose.

    python tests/regenerate_golden.py

Run it when a change is meant to alter simulated numbers, and say why in the commit message.
"""

from __future__ import annotations

from pathlib import Path

from secmoe_sim import load_scenario, simulate
from secmoe_sim.spec.loading import shipped_scenario_names

GOLDEN = Path(__file__).parent / "golden"


def golden_path(name: str) -> Path:
    return GOLDEN / f"{name}.summary.csv"


def main() -> None:
    GOLDEN.mkdir(exist_ok=True)
    for name in shipped_scenario_names():
        simulate(load_scenario(name)).summary.to_csv(golden_path(name), index=False, float_format="%.17g")
        print(f"wrote {golden_path(name)}")


if __name__ == "__main__":
    main()
