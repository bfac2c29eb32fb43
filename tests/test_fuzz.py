"""Bad input never escapes: mutated shipped scenarios and sweeps through the commands (hypothesis).

Every mutation must end in exit code 0 with finite, positive times, or exit code 2 with one line that
names the file: never a traceback or an internal error (exit 1), never a hang (each case has a time
limit), never a warning turned into a number (pytest turns warnings into errors here). The CI
profile runs a fixed number of examples per test; ``SECMOE_FUZZ_EXAMPLES=2000`` explores further.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st
from mutations import added_key, mutations_of

from secmoe_sim.cli import main
from secmoe_sim.errors import InputError
from secmoe_sim.simulation import check_work
from secmoe_sim.spec.loading import resolve_scenario_path, shipped_scenario_names
from secmoe_sim.sweep.spec import load_sweep, resolve_sweep_path, shipped_sweep_names

EXAMPLES = int(os.environ.get("SECMOE_FUZZ_EXAMPLES", "60"))
CASE_LIMIT_S = 30  # a case slower than this is a hang
DATA = Path(__file__).parent / "data"
SCENARIOS = {name: yaml.safe_load(resolve_scenario_path(name).read_text(encoding="utf-8")) for name in shipped_scenario_names()}
TINY = yaml.safe_load((DATA / "tiny_validation.yaml").read_text(encoding="utf-8"))
SWEEPS = {name: yaml.safe_load(resolve_sweep_path(name).read_text(encoding="utf-8")) for name in shipped_sweep_names()}
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@contextlib.contextmanager
def time_limit(seconds: int):
    def expired(_signum, _frame):
        raise TimeoutError(f"no answer within {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def write(data: dict, folder: Path, name: str) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def command(argv: list[str], capsys) -> tuple[int, str, str]:
    with time_limit(CASE_LIMIT_S):
        code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_refused_in_one_line(code: int, err: str, path: Path) -> None:
    assert code in (0, 2), f"exit {code}: {err}"
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert path.name in lines[0] or "--" in lines[0], lines[0]


def shipped_mutations():
    return st.sampled_from(sorted(SCENARIOS)).flatmap(lambda name: mutations_of(SCENARIOS[name]))


@pytest.mark.slow
@FUZZ
@given(mutation=shipped_mutations())
@example(mutation=added_key(SCENARIOS["h100-nvlink-8"], ("hardware", "gpu"), "colour\nred", 0))
def test_mutated_shipped_scenario_through_analyze(mutation, tmp_path_factory, capsys):
    description, data = mutation
    note(description)
    path = write(data, tmp_path_factory.mktemp("analyze"), "mutated.yaml")
    code, out, err = command(["analyze", str(path), "--json"], capsys)
    assert_refused_in_one_line(code, err, path)
    if code == 0:
        assert "NaN" not in out


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")  # a label the plot font cannot draw: cosmetic, not a number
@FUZZ
@given(mutation=mutations_of(TINY))
def test_mutated_small_scenario_through_run(mutation, tmp_path_factory, capsys):
    description, data = mutation
    note(description)
    folder = tmp_path_factory.mktemp("run")
    path = write(data, folder, "mutated.yaml")
    code, _, err = command(["run", str(path), "--out", str(folder / "out")], capsys)
    assert_refused_in_one_line(code, err, path)
    if code == 0:
        summary = pd.read_csv(folder / "out" / "summary.csv")
        for column in ("wall_clock_s", "compute_s", "gpu_seconds"):
            values = summary[column].to_numpy()
            assert all(math.isfinite(v) and v >= 0 for v in values), column
        assert (summary["wall_clock_s"] > 0).all()


@pytest.mark.slow
@FUZZ
@given(mutation=st.sampled_from(sorted(SWEEPS)).flatmap(lambda name: mutations_of(SWEEPS[name])))
def test_mutated_shipped_sweep_through_the_validator(mutation, tmp_path_factory):
    """Loading a sweep validates every point; the budget is checked on every point before any runs."""
    description, data = mutation
    note(description)
    path = write(data, tmp_path_factory.mktemp("sweep"), "mutated.yaml")
    try:
        with time_limit(CASE_LIMIT_S):
            sweep = load_sweep(path)
            for point in sweep.points:
                check_work(point.scenario, where=str(path))
    except InputError as error:
        assert "\n" not in str(error) and "mutated.yaml" in str(error), str(error)
