"""What-if faults: stragglers, slow nodes, degraded links."""

from pathlib import Path

import pytest

from secmoe_sim.cli import main
from secmoe_sim.errors import ScenarioError
from secmoe_sim.simulation import simulate
from secmoe_sim.spec.loading import load_scenario
from secmoe_sim.spec.scenario import Scenario

TINY = Path(__file__).parent / "data" / "tiny_validation.yaml"


def with_faults(faults: list[dict]) -> Scenario:
    data = load_scenario(TINY).model_dump(mode="json")
    data["faults"] = faults
    return Scenario.model_validate(data)


def critical_compute(summary, label, experts=None):
    rows = summary[summary["label"] == label]
    if experts is not None:
        rows = rows[rows["num_experts"] == experts]
    return rows.iloc[0]


def test_straggler_at_factor_one_changes_nothing():
    base = simulate(load_scenario(TINY)).summary
    same = simulate(with_faults([{"kind": "straggler", "gpu": 0, "slowdown": 1.0}])).summary
    assert (base["wall_clock_s"].to_numpy() == same["wall_clock_s"].to_numpy()).all()


def test_double_straggler_doubles_compute_on_the_critical_gpu():
    base = simulate(load_scenario(TINY))
    slow = simulate(with_faults([{"kind": "straggler", "gpu": 2, "slowdown": 2.0}]))
    dense_base, dense_slow = critical_compute(base.summary, "dense"), critical_compute(slow.summary, "dense")
    assert dense_slow["critical_gpu"] == 2
    assert dense_slow["compute_s"] == pytest.approx(2 * dense_base["compute_s"], rel=1e-12)
    assert dense_slow["launch_s"] == pytest.approx(2 * dense_base["launch_s"], rel=1e-12)


def test_slow_node_slows_all_its_gpus():
    slow = simulate(with_faults([{"kind": "slow_node", "node": 1, "slowdown": 1.5}])).timeline
    base = simulate(load_scenario(TINY)).timeline

    def kernel_time_by_gpu(timeline):  # kernel time, the wait for the host excluded
        kernels = timeline[(timeline["entry"] == "dense") & (timeline["kind"] == "kernel")]
        return (kernels["finished_at"] - kernels["started_at"] - kernels["launch_s"]).groupby(kernels["gpu"]).sum()

    durations, reference = kernel_time_by_gpu(slow), kernel_time_by_gpu(base)
    assert durations[4:].to_numpy() == pytest.approx(1.5 * reference[4:].to_numpy())
    assert durations[:4].to_numpy() == pytest.approx(reference[:4].to_numpy())


def test_degraded_nic_slows_inter_node_messages():
    base = simulate(load_scenario(TINY)).summary
    slow = simulate(with_faults([{"kind": "degraded_link", "gpu": 0, "link": "nic", "bandwidth_factor": 0.25}])).summary
    token_base, token_slow = critical_compute(base, "token"), critical_compute(slow, "token")
    assert token_slow["wall_clock_s"] > token_base["wall_clock_s"]
    assert token_slow["compute_all_gpus_s"] == pytest.approx(token_base["compute_all_gpus_s"], rel=1e-12)  # only links slowed


def test_fault_on_a_missing_gpu_is_a_clean_error(tmp_path):
    text = TINY.read_text() + "faults:\n  - {kind: straggler, gpu: 99, slowdown: 2}\n"
    path = tmp_path / "fault.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=r"faults\[0\]\.gpu: GPU 99 does not exist"):
        load_scenario(path)


def test_run_prints_the_faults(tmp_path, capsys):
    text = TINY.read_text() + "faults:\n  - {kind: straggler, gpu: 1, slowdown: 3}\n"
    path = tmp_path / "fault.yaml"
    path.write_text(text)
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 0
    assert "fault: straggler: GPU 1 computes 3x slower" in capsys.readouterr().out
