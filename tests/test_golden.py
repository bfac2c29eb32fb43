"""The summary of every shipped scenario against its stored golden file.

A difference means the simulated numbers changed: if that was the intent, regenerate with
``python tests/regenerate_golden.py`` and say why in the commit.
"""

import pandas as pd
import pytest
from regenerate_golden import golden_path

from secmoe_sim import load_scenario, simulate
from secmoe_sim.spec.loading import shipped_scenario_names


def test_every_shipped_scenario_has_a_golden_file():
    assert shipped_scenario_names(), "no shipped scenarios found"
    for name in shipped_scenario_names():
        assert golden_path(name).is_file(), f"missing golden file for {name}"


@pytest.mark.parametrize("name", shipped_scenario_names())
def test_summary_matches_golden(name):
    golden = pd.read_csv(golden_path(name))
    summary = simulate(load_scenario(name)).summary
    assert list(summary.columns) == list(golden.columns)
    for column in summary.columns:
        if pd.api.types.is_numeric_dtype(golden[column]):
            assert summary[column].to_numpy() == pytest.approx(golden[column].to_numpy(), rel=1e-9, abs=1e-15), column
        else:
            assert list(summary[column].astype(str)) == list(golden[column].astype(str)), column
