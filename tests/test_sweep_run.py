"""Running sweeps: rows, files, resume, interruption (SIGINT, SIGKILL, a killed worker), failures, plots."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from secmoe_sim.cli import main
from secmoe_sim.simulation import simulate
from secmoe_sim.sweep.run import ExecutorChoice, run_sweep
from secmoe_sim.sweep.spec import load_sweep
from secmoe_sim.sweep.store import RESULTS
from secmoe_sim.version import __version__

DATA = Path(__file__).parent / "data"
SMALL = DATA / "sweep_small.yaml"
INTERRUPTIBLE = DATA / "sweep_interruptible.yaml"
WAIT_LIMIT_S = 120


def sweep_command(sweep: Path, out: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "secmoe_sim", "sweep", str(sweep), "--out", str(out), *options]


def point_files(out: Path) -> dict[str, tuple[int, int]]:
    """Each point file's key -> (inode, mtime in ns): a rewritten file changes both."""
    return {p.stem: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "points").glob("*.parquet")}


def wait_for_points(out: Path, count: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT_LIMIT_S
    while len(point_files(out)) < count:
        assert process.poll() is None, "the sweep ended before it could be interrupted"
        assert time.monotonic() < deadline, "the sweep wrote no points"
        time.sleep(0.01)


@pytest.mark.slow
def test_local_pool_rows_are_the_simulated_summaries_with_swept_values(tmp_path):
    sweep = load_sweep(SMALL)
    report = run_sweep(sweep, tmp_path, ExecutorChoice("local", workers=2))
    assert (report.computed, report.reused, report.failed, report.interrupted) == (6, 0, {}, False)
    table = pd.read_parquet(tmp_path / RESULTS)
    assert list(table.columns[:5]) == ["point_id", "point_key", *sweep.columns]
    assert table["point_id"].is_monotonic_increasing and set(table["point_id"]) == set(range(6))
    point = sweep.points[4]
    rows = table[table["point_id"] == 4].reset_index(drop=True)
    summary = simulate(point.scenario).summary
    pd.testing.assert_frame_equal(rows[summary.columns], summary, check_dtype=False)
    assert (rows["workload.layer.seq_len"] == 2048).all() and (rows["point_key"] == point.key).all()
    assert (rows["hardware.intra_node.link_bandwidth_per_direction"] == 12e9).all()
    sectional = rows[rows["architecture"] == "sectional_moe"]
    assert sectional["e_opt_analytical"].nunique() == 1 and sectional["e_opt_analytical"].iloc[0] > 0
    assert set(sectional["e_opt_analytical_feasible"]) <= {1, 2, 4, 8}
    assert rows.loc[rows["architecture"] != "sectional_moe", "e_opt_analytical_feasible"].isna().all()


def test_metadata_says_what_produced_the_results(tmp_path):
    sweep = load_sweep(SMALL)
    run_sweep(sweep, tmp_path, ExecutorChoice("serial", workers=1))
    metadata = json.loads((tmp_path / "metadata.json").read_text())
    assert metadata["version"] == __version__ and metadata["sweep"] == "small"
    assert metadata["sweep_sha256"] == sweep.content_hash() and len(metadata["sweep_sha256"]) == 64
    assert metadata["base_scenario"] == "rtx4090-pcie-8" and metadata["seed"] == 0 and metadata["created_at"]
    assert metadata["base_scenario_sha256"] == sweep.base.content_hash()
    assert metadata["axes"][1] == {
        "path": "hardware.intra_node.link_bandwidth_per_direction",
        "values": ["12 GB/s", 24e9],
        "resolved": [12e9, 24e9],
    }
    assert metadata["grid"] == sweep.grid and metadata["completed"] == 6 and metadata["failed"] == []


@pytest.mark.slow
def test_serial_and_pool_give_the_same_table_and_csv_on_request(tmp_path):
    sweep = load_sweep(SMALL)
    run_sweep(sweep, tmp_path / "serial", ExecutorChoice("serial", workers=1), csv=True)
    run_sweep(sweep, tmp_path / "pool", ExecutorChoice("local", workers=2))
    serial = pd.read_parquet(tmp_path / "serial" / RESULTS)
    pd.testing.assert_frame_equal(serial, pd.read_parquet(tmp_path / "pool" / RESULTS))
    from_csv = pd.read_csv(tmp_path / "serial" / "results.csv")
    assert len(from_csv) == len(serial) and list(from_csv.columns) == list(serial.columns)
    assert not (tmp_path / "pool" / "results.csv").exists()


@pytest.mark.slow
def test_rerun_skips_completed_points_and_an_edited_sweep_computes_only_new_points(tmp_path):
    run_sweep(load_sweep(SMALL), tmp_path, ExecutorChoice("serial", workers=1))
    before = point_files(tmp_path)
    again = run_sweep(load_sweep(SMALL), tmp_path, ExecutorChoice("local", workers=2))
    assert (again.computed, again.reused) == (0, 6) and point_files(tmp_path) == before
    edited = tmp_path / "edited.yaml"
    edited.write_text(SMALL.read_text().replace("values: [512, 1024, 2048]", "values: [512, 1024, 4096]"))
    report = run_sweep(load_sweep(edited), tmp_path, ExecutorChoice("serial", workers=1))
    assert (report.computed, report.reused) == (2, 4)
    assert all(point_files(tmp_path)[key] == stamp for key, stamp in before.items())
    table = pd.read_parquet(tmp_path / RESULTS)
    assert sorted(table["workload.layer.seq_len"].unique()) == [512, 1024, 4096]


@pytest.mark.slow
def test_a_resumed_sweep_without_csv_keeps_an_earlier_results_csv_current(tmp_path):
    run_sweep(load_sweep(SMALL), tmp_path, ExecutorChoice("serial", workers=1), csv=True)
    edited = tmp_path / "edited.yaml"
    edited.write_text(SMALL.read_text().replace("values: [512, 1024, 2048]", "values: [512, 1024, 2048, 4096]"))
    run_sweep(load_sweep(edited), tmp_path, ExecutorChoice("serial", workers=1))
    table = pd.read_parquet(tmp_path / RESULTS)
    from_csv = pd.read_csv(tmp_path / "results.csv")
    assert len(from_csv) == len(table) and sorted(from_csv["workload.layer.seq_len"].unique()) == [512, 1024, 2048, 4096]


def test_progress_bar_shows_count_rate_and_eta(tmp_path, capsys):
    run_sweep(load_sweep(SMALL), tmp_path, ExecutorChoice("serial", workers=1), progress=True)
    bar = capsys.readouterr().err
    assert "6/6" in bar and "point/s" in bar and "<" in bar  # count, rate, elapsed<remaining


@pytest.mark.slow
def test_quiet_and_non_terminal_runs_print_no_progress(tmp_path):
    completed = subprocess.run(
        sweep_command(SMALL, tmp_path, "--workers", "2"), capture_output=True, check=False, text=True, timeout=WAIT_LIMIT_S
    )
    assert completed.returncode == 0 and completed.stderr == ""
    assert "6 distinct points: 6 computed, 0 already done, 0 failed" in completed.stdout
    quiet = subprocess.run(
        sweep_command(SMALL, tmp_path, "--quiet"), capture_output=True, check=False, text=True, timeout=WAIT_LIMIT_S
    )
    assert quiet.returncode == 0 and quiet.stderr == "" and not quiet.stdout.startswith("sweep ")


@pytest.mark.slow
def test_a_failing_point_is_recorded_while_the_others_complete(tmp_path, capsys, monkeypatch):
    from secmoe_sim.sweep import executors

    path = DATA / "sweep_failing_point.yaml"
    sweep = load_sweep(path)  # every point is a valid scenario: the failure is injected into the simulation
    failing = next(p for p in sweep.points if p.written["seed"] == 2)
    simulate = executors.simulate

    def failing_simulate(scenario, *args, **kwargs):
        if scenario.seed == 2:
            raise RuntimeError("injected failure")
        return simulate(scenario, *args, **kwargs)

    monkeypatch.setattr(executors, "simulate", failing_simulate)  # the pool's workers are forked: they see it
    assert main(["sweep", str(path), "--out", str(tmp_path), "--workers", "2"]) == 1
    out = capsys.readouterr().out
    assert "3 distinct points: 2 computed, 0 already done, 1 failed" in out
    assert "failed: point 1 (seed=2): RuntimeError: injected failure" in out
    record = json.loads((tmp_path / "failures" / f"{failing.key}.json").read_text())
    assert record["error"].startswith("RuntimeError: injected failure")
    assert "Traceback" in record["traceback"] and record["values"] == {"seed": 2}
    table = pd.read_parquet(tmp_path / RESULTS)
    assert sorted(table["seed"].unique()) == [1, 3]
    metadata = json.loads((tmp_path / "metadata.json").read_text())
    assert [f["point_key"] for f in metadata["failed"]] == [failing.key]
    completed = point_files(tmp_path)
    assert main(["sweep", str(path), "--out", str(tmp_path), "--workers", "1"]) == 1  # retried, fails again
    assert "3 distinct points: 0 computed, 2 already done, 1 failed" in capsys.readouterr().out
    assert point_files(tmp_path) == completed


@pytest.mark.slow
def test_interrupted_by_sigint_then_sigkill_then_resumed_every_point_exactly_once(tmp_path):
    sweep = load_sweep(INTERRUPTIBLE)
    total = len(sweep.points)

    first = subprocess.Popen(
        sweep_command(INTERRUPTIBLE, tmp_path, "--workers", "2"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for_points(tmp_path, 4, first)
    first.send_signal(signal.SIGINT)
    out, err = first.communicate(timeout=WAIT_LIMIT_S)
    assert first.returncode == 130, err
    assert "interrupted:" in out and "run the same command again to resume" in out and "Traceback" not in err
    after_sigint = point_files(tmp_path)
    assert 4 <= len(after_sigint) < total
    partial = pd.read_parquet(tmp_path / RESULTS)  # what was done is merged at once
    assert set(partial["point_key"]) == set(after_sigint)

    second = subprocess.Popen(
        sweep_command(INTERRUPTIBLE, tmp_path, "--workers", "2"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for_points(tmp_path, len(after_sigint) + 4, second)
    second.send_signal(signal.SIGKILL)
    second.communicate(timeout=WAIT_LIMIT_S)
    after_sigkill = point_files(tmp_path)
    assert len(after_sigint) + 4 <= len(after_sigkill) < total
    assert all(after_sigkill[key] == stamp for key, stamp in after_sigint.items())

    resumed = subprocess.run(
        sweep_command(INTERRUPTIBLE, tmp_path, "--workers", "2"),
        capture_output=True,
        check=False,
        text=True,
        timeout=WAIT_LIMIT_S,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"{total - len(after_sigkill)} computed, {len(after_sigkill)} already done, 0 failed" in resumed.stdout
    final = point_files(tmp_path)
    assert all(final[key] == stamp for key, stamp in after_sigkill.items())  # no completed point recomputed
    assert set(final) == {p.key for p in sweep.points}
    assert not list(tmp_path.rglob("*.tmp"))
    table = pd.read_parquet(tmp_path / RESULTS)
    rows_per_point = len(simulate(sweep.points[0].scenario).summary)
    assert sorted(table["point_id"].unique()) == list(range(total))
    assert table.groupby("point_id").size().eq(rows_per_point).all()
    assert not table.duplicated(["point_id", "label", "placement", "num_experts"]).any()


@pytest.mark.slow
def test_a_killed_worker_process_is_replaced_and_every_point_completes(tmp_path):
    psutil = pytest.importorskip("psutil")
    process = subprocess.Popen(
        sweep_command(INTERRUPTIBLE, tmp_path, "--workers", "2"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    wait_for_points(tmp_path, 4, process)
    workers = psutil.Process(process.pid).children()
    assert workers
    os.kill(workers[0].pid, signal.SIGKILL)
    out, err = process.communicate(timeout=WAIT_LIMIT_S)
    assert process.returncode == 0, err
    total = len(load_sweep(INTERRUPTIBLE).points)
    assert f"{total} distinct points: {total} computed, 0 already done, 0 failed" in out
    assert len(point_files(tmp_path)) == total


def test_two_sweeps_cannot_write_into_one_directory(tmp_path, capsys):
    from secmoe_sim.sweep.store import SweepStore

    with SweepStore(tmp_path).locked():
        assert main(["sweep", str(SMALL), "--out", str(tmp_path), "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == f"secmoe-sim: error: {tmp_path}: another sweep is writing into this directory"


@pytest.mark.slow
def test_plot_writes_the_three_figures(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", str(SMALL), "--out", str(out), "--quiet"]) == 0
    assert main(["plot", str(out)]) == 0
    names = {"best_experts.png", "speedup_vs_token_moe.png", "analytical_vs_simulated_e_opt.png"}
    assert names <= {p.name for p in out.iterdir()}
    assert all((out / name).stat().st_size > 10_000 for name in names)
    assert (
        main(
            [
                "plot",
                str(out),
                "--x",
                "hardware.intra_node.latency",
                "--y",
                "workload.layer.seq_len",
                "--out",
                str(tmp_path / "figures"),
            ]
        )
        == 0
    )
    assert names <= {p.name for p in (tmp_path / "figures").iterdir()}


@pytest.mark.slow
def test_plot_holds_further_grid_dimensions_at_a_chosen_value(tmp_path):
    from secmoe_sim.sweep.store import read_results
    from secmoe_sim.sweep.tables import fix_other_axes, parse_at

    path = tmp_path / "three.yaml"
    path.write_text(
        SMALL.read_text().replace(
            "axes:\n", 'axes:\n  - path: communication.default.peer_overhead.pcie\n    values: ["9 us", "10 us"]\n'
        )
    )
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--quiet"]) == 0
    results, metadata = read_results(out)
    plane, caption = fix_other_axes(
        results,
        metadata,
        "workload.layer.seq_len",
        "hardware.intra_node.link_bandwidth_per_direction",
        parse_at(metadata, ["communication.default.peer_overhead.pcie=10 us"]),
    )
    assert caption == "communication.default.peer_overhead.pcie = 10 us" and np.allclose(
        plane["communication.default.peer_overhead.pcie"], 10e-6
    )
    assert plane["point_id"].nunique() == 6
    default, caption = fix_other_axes(results, metadata, "workload.layer.seq_len", None, {})
    assert "communication.default.peer_overhead.pcie = 9 us" in caption and np.allclose(
        default["communication.default.peer_overhead.pcie"], 9e-6
    )
    assert (
        main(["plot", str(out), "--x", "workload.layer.seq_len", "--at", "communication.default.peer_overhead.pcie=10 us"]) == 0
    )


@pytest.mark.parametrize(
    "options, fragment",
    [
        (["--x", "workload.layer.batch"], "--x: 'workload.layer.batch' is not an axis of this sweep"),
        (
            ["--x", "hardware.intra_node.latency", "--y", "hardware.intra_node.link_bandwidth_per_direction"],
            "are zipped together: a heatmap needs two independent axes",
        ),
        (["--at", "workload.layer.seq_len=333"], "'333' is not a value of workload.layer.seq_len (values: 512, 1024, 2048)"),
    ],
)
def test_plot_options_are_checked(tmp_path, capsys, options, fragment):
    assert main(["sweep", str(SMALL), "--out", str(tmp_path), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["plot", str(tmp_path), *options]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and fragment in error, error


def test_plot_of_a_directory_without_results_is_one_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "no results.parquet here" in capsys.readouterr().err


def test_sweep_axes_are_titled_by_the_quantity_with_the_path_beneath():
    from secmoe_sim.sweep.plots import best_experts_heatmap, quantity_label

    assert quantity_label("hardware.inter_node.nic_bandwidth_per_direction") == (
        "inter-node NIC bandwidth per direction\n(hardware.inter_node.nic_bandwidth_per_direction)"
    )
    assert quantity_label("workload.layer.seq_len").startswith("sequence length (tokens)\n")
    assert quantity_label("workload.layer.ffn_multiplier").startswith("ffn multiplier\n")
    best = pd.DataFrame(
        {
            "label": ["s", "s"],
            "hardware.nodes": [1, 2],
            "workload.layer.seq_len": [512, 512],
            "best_experts": [4, 8],
            "largest_experts": [16, 16],
            "oom": [False, False],
            "placement": ["replicated", "replicated"],
            "sweep_mode": ["fixed_cluster", "fixed_cluster"],
        }
    )
    try:
        figure = best_experts_heatmap(best, "hardware.nodes", "workload.layer.seq_len", {})
    except KeyError as missing:  # the table's columns are the plotting code's contract; name what this test lacks
        pytest.fail(f"heatmap needs column {missing}")
    axes = figure.axes[0]
    assert axes.get_xlabel() == quantity_label("hardware.nodes") and axes.get_ylabel() == quantity_label("workload.layer.seq_len")
