"""The summary of every shipped scenario against its stored golden file.

A difference means the simulated numbers changed: if that was the intent, bump the version, add a
CHANGELOG line, and regenerate with ``python tests/regenerate_golden.py``.
"""

import json

import pandas as pd
import pytest
from regenerate_golden import METADATA, golden_model_path, golden_path

from secmoe_sim import __version__, load_scenario, simulate
from secmoe_sim.analysis.model_step import layer_scenario, simulate_model
from secmoe_sim.spec.loading import shipped_scenario_names


def test_every_shipped_scenario_has_a_golden_file():
    assert shipped_scenario_names(), "no shipped scenarios found"
    for name in shipped_scenario_names():
        assert golden_path(name).is_file(), f"missing golden file for {name}"


def assert_matches(summary: pd.DataFrame, golden: pd.DataFrame) -> None:
    assert list(summary.columns) == list(golden.columns)
    for column in summary.columns:
        if pd.api.types.is_numeric_dtype(golden[column]):
            assert summary[column].to_numpy() == pytest.approx(golden[column].to_numpy(), rel=1e-9, abs=1e-15, nan_ok=True), (
                column
            )
        else:
            assert list(summary[column].fillna("").astype(str)) == list(golden[column].fillna("").astype(str)), column


@pytest.mark.parametrize("name", shipped_scenario_names())
def test_summary_matches_golden(name):
    scenario = load_scenario(name)
    if scenario.model is None:
        assert_matches(simulate(scenario).summary, pd.read_csv(golden_path(name)))
        return
    layers = simulate(layer_scenario(scenario))
    assert_matches(layers.summary, pd.read_csv(golden_path(name)))
    assert_matches(simulate_model(scenario, layers=layers).summary, pd.read_csv(golden_model_path(name)))


def test_golden_files_were_made_by_this_version_from_these_scenarios():
    """Simulated numbers never change without a version bump (sweep caches are keyed by the version)."""
    recorded = json.loads(METADATA.read_text(encoding="utf-8"))
    assert recorded["version"] == __version__, "golden files from another version: bump, add a CHANGELOG line, regenerate"
    hashes = {name: load_scenario(name).content_hash() for name in shipped_scenario_names()}
    assert recorded["scenario_sha256"] == hashes, "a shipped scenario changed since the golden files were made: regenerate"
