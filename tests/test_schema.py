"""Every shipped and committed scenario and sweep file validates against the schemas `secmoe-sim schema` prints."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from secmoe_sim.cli import main
from secmoe_sim.spec.loading import resolve_scenario_path, shipped_scenario_names
from secmoe_sim.sweep.spec import resolve_sweep_path, shipped_sweep_names

ROOT = Path(__file__).parent.parent
COMMITTED_SCENARIOS = sorted((ROOT / "reports").rglob("scenario.yaml"))
TEST_SCENARIOS = sorted(p for p in (ROOT / "tests" / "data").glob("*.yaml") if not p.name.startswith(("bad_", "sweep")))
TEST_SWEEPS = sorted((ROOT / "tests" / "data").glob("sweep*.yaml"))


def printed_schema(capsys, *options: str) -> dict:
    assert main(["schema", *options]) == 0
    return json.loads(capsys.readouterr().out)


def scenario_files() -> list[Path]:
    return [resolve_scenario_path(name) for name in shipped_scenario_names()] + COMMITTED_SCENARIOS


@pytest.mark.parametrize("path", scenario_files(), ids=lambda p: p.name if p.name != "scenario.yaml" else str(p.parent.name))
def test_scenario_files_validate_against_the_printed_schema(path, capsys):
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    jsonschema.validate(data, printed_schema(capsys))


@pytest.mark.parametrize("path", [resolve_sweep_path(name) for name in shipped_sweep_names()] + TEST_SWEEPS, ids=lambda p: p.name)
def test_sweep_files_validate_against_the_printed_sweep_schema(path, capsys):
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    jsonschema.validate(data, printed_schema(capsys, "--sweep"))


def test_the_schema_refuses_what_the_loader_refuses(capsys):
    schema = printed_schema(capsys)
    data = yaml.safe_load(resolve_scenario_path("h100-nvlink-8").read_text(encoding="utf-8"))
    data["hardware"]["gpu"]["colour"] = "red"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)
    data = yaml.safe_load(resolve_scenario_path("h100-nvlink-8").read_text(encoding="utf-8"))
    data["hardware"] = "hardware.yaml"  # an included hardware file is a documented form
    jsonschema.validate(data, schema)


def test_test_scenarios_that_load_validate_too(capsys):
    schema = printed_schema(capsys)
    for path in TEST_SCENARIOS:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and "workload" in data:
            jsonschema.validate(data, schema)
