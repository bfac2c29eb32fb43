"""The committed results were made by this version from these scenarios, so the numbers the README and
the docs quote from them are the numbers the tool prints.

The version is bumped whenever simulated numbers change (CHANGELOG.md); these reports must then be
regenerated with the commands in each failure message. The calibration folder is a measurement of a
machine, not a simulation, and is not checked here.
"""

import json
from pathlib import Path

import pytest

from secmoe_sim import __version__, load_scenario

REPORTS = Path(__file__).resolve().parents[1] / "reports"
REGENERATE = {
    "fidelity": "secmoe-sim fidelity --out reports/fidelity",
    "h100-nvlink-8": "secmoe-sim run h100-nvlink-8 --out reports/h100-nvlink-8",
    "validation": "secmoe-sim report",
    "sweeps/h100-nvlink-bandwidth-x-seq-len": (
        "secmoe-sim sweep h100-nvlink-bandwidth-x-seq-len --out reports/sweeps/h100-nvlink-bandwidth-x-seq-len "
        "&& secmoe-sim plot reports/sweeps/h100-nvlink-bandwidth-x-seq-len"
    ),
    "sweeps/h200-nodes-x-ib-bandwidth": (
        "secmoe-sim sweep h200-nodes-x-ib-bandwidth --out reports/sweeps/h200-nodes-x-ib-bandwidth "
        "&& secmoe-sim plot reports/sweeps/h200-nodes-x-ib-bandwidth"
    ),
}


def metadata(folder: str) -> dict:
    return json.loads((REPORTS / folder / "metadata.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    "folder", ["fidelity", "h100-nvlink-8", "sweeps/h100-nvlink-bandwidth-x-seq-len", "sweeps/h200-nodes-x-ib-bandwidth"]
)
def test_committed_report_is_of_this_version(folder):
    made_by = metadata(folder)["version"]
    assert made_by == __version__, f"reports/{folder} was made by {made_by}, this is {__version__}: {REGENERATE[folder]}"


def test_committed_run_and_validation_are_of_these_scenarios():
    run = metadata("h100-nvlink-8")
    assert run["scenario_sha256"] == load_scenario("h100-nvlink-8").content_hash(), REGENERATE["h100-nvlink-8"]
    for name, made in metadata("validation")["scenarios"].items():
        assert made["version"] == __version__, f"reports/validation ({name}) was made by {made['version']}: secmoe-sim report"
        assert made["scenario_sha256"] == load_scenario(name).content_hash(), f"{name} changed since: secmoe-sim report"
