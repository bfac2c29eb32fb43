"""Sweeps on Dask: a real LocalCluster (worker processes on loopback) gives the local pool's table exactly;
without dask installed the Dask options say how to install it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from secmoe_sim.cli import main
from secmoe_sim.sweep.run import ExecutorChoice, run_sweep
from secmoe_sim.sweep.spec import load_sweep
from secmoe_sim.sweep.store import RESULTS

pytestmark = pytest.mark.slow  # torch, Dask or subprocesses: the full suite runs it, `-m "not slow"` does not

DATA = Path(__file__).parent / "data"
SMALL = DATA / "sweep_small.yaml"


def test_a_dask_local_cluster_gives_the_local_pool_table_exactly(tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    run_sweep(load_sweep(SMALL), tmp_path / "pool", ExecutorChoice("local", workers=2))
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        assert main(["sweep", str(SMALL), "--out", str(tmp_path / "dask"), "--scheduler", cluster.scheduler_address]) == 0
    assert f"on Dask scheduler at {cluster.scheduler_address}" in capsys.readouterr().out
    pool = pd.read_parquet(tmp_path / "pool" / RESULTS)
    dask = pd.read_parquet(tmp_path / "dask" / RESULTS)
    key = ["point_id", "label", "num_experts"]
    pd.testing.assert_frame_equal(pool.sort_values(key).reset_index(drop=True), dask.sort_values(key).reset_index(drop=True))
    pd.testing.assert_frame_equal(pool, dask)  # the merge orders rows by point, whatever order the points finished in


def test_dask_local_option_starts_its_own_cluster_and_resumes(tmp_path, capsys):
    pytest.importorskip("distributed")
    assert main(["sweep", str(SMALL), "--out", str(tmp_path), "--dask-local", "2", "--quiet"]) == 0
    assert "6 computed, 0 already done" in capsys.readouterr().out
    assert main(["sweep", str(SMALL), "--out", str(tmp_path), "--dask-local", "2", "--quiet"]) == 0
    assert "0 computed, 6 already done" in capsys.readouterr().out


def test_workers_of_another_version_are_refused_before_anything_runs(tmp_path, capsys, monkeypatch):
    pytest.importorskip("distributed")
    from secmoe_sim.sweep import executors as sweep_executors

    monkeypatch.setattr(sweep_executors, "__version__", "0.0.0-not-the-workers")  # the workers import the real one
    assert main(["sweep", str(SMALL), "--out", str(tmp_path), "--dask-local", "1", "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "1 Dask worker(s) run another secmoe-sim" in error, error
    assert not list((tmp_path / "points").glob("*.parquet"))


@pytest.mark.parametrize("option", [["--dask-local", "2"], ["--scheduler", "tcp://127.0.0.1:8786"]])
def test_without_dask_the_dask_options_say_how_to_install_it(tmp_path, option):
    hide_dask = "import sys; sys.modules['distributed'] = None; sys.modules['dask'] = None"  # as if not installed
    run = f"{hide_dask}; from secmoe_sim.cli import main; sys.exit(main(sys.argv[1:]))"
    completed = subprocess.run(
        [sys.executable, "-c", run, "sweep", str(SMALL), "--out", str(tmp_path / "out"), *option],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        "secmoe-sim: error: --dask-local/--scheduler: dask is not installed: pip install -e '.[dask]'"
    ]
    assert not (tmp_path / "out").exists()


def test_the_core_imports_and_sweeps_without_dask(tmp_path):
    hide_dask = "import sys; sys.modules['distributed'] = None; sys.modules['dask'] = None"
    run = f"{hide_dask}; from secmoe_sim.cli import main; sys.exit(main(sys.argv[1:]))"
    completed = subprocess.run(
        [sys.executable, "-c", run, "sweep", str(SMALL), "--out", str(tmp_path), "--workers", "2"],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "6 computed" in completed.stdout
