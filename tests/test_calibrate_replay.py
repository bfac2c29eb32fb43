"""Replay: measured times at measured shapes exactly, monotone interpolation, flagged extrapolation."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from calibration_fixtures import LAUNCH_S, synthetic_trace
from conftest import make_gpu

from secmoe_sim.calibrate import CalibrationError
from secmoe_sim.calibrate.replay import ReplayTimer, census
from secmoe_sim.calibrate.trace import Trace, frame, make_row, row_kernel, sample_statistics, write_trace
from secmoe_sim.cli import main
from secmoe_sim.plan.costs import Kernel
from secmoe_sim.plan.kernel_time import RooflineTimer
from secmoe_sim.simulation import layer_plans
from secmoe_sim.spec.loading import load_scenario


def _timer(trace: Trace) -> ReplayTimer:
    return ReplayTimer(trace, "fp32", RooflineTimer(make_gpu(), "fp32"))


def _gemm(m, k, n, count=1, launches=1, backward=False) -> Kernel:
    row = make_row("mm", "gemm", "fp32", "cpu", {}, "test", m=m * launches, k=k, n=n, count=count)
    kernel = row_kernel(row)
    return Kernel(
        kernel.name,
        "projection",
        kernel.flops,
        kernel.traffic_bytes,
        launches=launches,
        primitive="gemm",
        shape=kernel.shape,
        is_backward=backward,
    )


def test_measured_shapes_replay_exactly():
    trace = synthetic_trace()
    timer = _timer(trace)
    for _, row in trace.rows[trace.rows["primitive"].isin(["gemm", "attention", "memory"])].iterrows():
        kernel = row_kernel(row)
        assert timer.lookup(kernel).kind == "exact"
        assert timer.launch_time_s(kernel) + timer.kernel_time_s(kernel) == pytest.approx(row["median_s"], rel=1e-12)


def test_interpolation_between_measured_rows_is_monotone_and_bounded():
    trace = synthetic_trace()
    timer = _timer(trace)
    gemm = trace.of("gemm")
    measured = gemm[(gemm["k"] == 64) & (gemm["n"] == 192)].sort_values("m")
    rows = np.geomspace(measured["m"].iloc[0], measured["m"].iloc[-1], 40)
    times = np.array([timer.launch_time_s(_gemm(m, 64, 192)) + timer.kernel_time_s(_gemm(m, 64, 192)) for m in rows])
    assert np.all(np.diff(times) >= 0)
    assert times[0] == pytest.approx(measured["median_s"].iloc[0]) and times[-1] == pytest.approx(measured["median_s"].iloc[-1])
    between = timer.lookup(_gemm(500, 64, 192))
    assert between.kind == "interpolated"
    low, high = measured[measured["m"] == 256]["median_s"].iloc[0], measured[measured["m"] == 1024]["median_s"].iloc[0]
    assert low <= between.time_s <= high


def test_interpolation_is_monotone_even_when_measurements_are_not():
    rows = [
        make_row("mm", "gemm", "fp32", "cpu", sample_statistics(np.full(20, t)), "test", m=m, k=16, n=16, count=1)
        for m, t in ((64, 10e-6), (128, 8e-6), (256, 30e-6))
    ]  # a noisy dip at m = 128
    timer = _timer(Trace(rows=frame(rows)))
    times = [timer.lookup(_gemm(m, 16, 16)).time_s for m in (70, 100, 120, 140, 200)]
    assert np.all(np.diff(times) >= 0)
    assert timer.lookup(_gemm(128, 16, 16)).time_s == pytest.approx(8e-6)  # exact still means measured


def test_other_widths_interpolate_by_flops_and_out_of_range_scales_the_nearer_end_by_the_model():
    timer = _timer(synthetic_trace())
    fallback = RooflineTimer(make_gpu(), "fp32")
    assert timer.lookup(_gemm(512, 48, 48)).kind == "flops_interpolated"
    for m, end_m in ((8, 64), (2**16, 4096)):  # the trace measures m = 64 to 4096 at k = 64, n = 192
        kernel = _gemm(m, 64, 192)
        found = timer.lookup(kernel)
        assert found.kind == "extrapolated" and found.anchor_ratio == pytest.approx(end_m / m)
        measured_end_s = timer.lookup(_gemm(end_m, 64, 192)).time_s - timer.launch_s
        model_ratio = fallback.kernel_time_s(kernel) / fallback.kernel_time_s(kernel.scaled(end_m / m))
        assert timer.kernel_time_s(kernel) == pytest.approx(measured_end_s * model_ratio)
    assert timer.kernel_time_s(_gemm(8, 64, 192)) < timer.kernel_time_s(_gemm(64, 64, 192))  # less work is not slower


def test_launches_count_and_backward_doubles():
    timer = _timer(synthetic_trace())
    one = timer.kernel_time_s(_gemm(256, 64, 192))
    assert timer.kernel_time_s(_gemm(256, 64, 192, launches=4)) == pytest.approx(4 * one)
    assert timer.launch_time_s(_gemm(256, 64, 192, launches=4)) == pytest.approx(4 * LAUNCH_S, rel=0.05)
    assert timer.kernel_time_s(_gemm(256, 64, 192, backward=True)) == pytest.approx(2 * one)


def test_unmeasured_primitive_falls_back_to_roofline():
    trace = synthetic_trace()
    timer = _timer(Trace(rows=trace.rows[trace.rows["primitive"] != "attention"], metadata=trace.metadata))
    attention = row_kernel(trace.of("attention").iloc[0])
    assert timer.lookup(attention).kind == "roofline"
    assert timer.kernel_time_s(attention) == RooflineTimer(make_gpu(), "fp32").kernel_time_s(attention)


def test_trace_without_the_dtype_is_an_error():
    with pytest.raises(CalibrationError, match="no GEMM, attention or memory timings in bf16"):
        ReplayTimer(synthetic_trace(), "bf16", RooflineTimer(make_gpu(), "bf16"))


SCENARIO = """schema_version: 1
name: replayed
hardware:
  name: one
  nodes: 1
  gpus_per_node: 2
  gpu: {name: g, peak_flops: {fp32: 1.0e12}, memory_bandwidth: 2.0e11, memory_capacity: 1.0e10, kernel_launch_overhead: 5.0e-6}
  intra_node: {kind: nvswitch, bandwidth_per_direction: 1.0e10, latency: 0}
  message_overhead: 0
workload:
  layer: {d_model: 256, seq_len: 256, batch: 2, heads: 4, dtype: fp32, ffn: false}
  architectures:
    - {kind: sectional_moe, experts: [2, 4, 16], min_section_width: 16, grouped_kernels: false,
       pre_expert: {enabled: true, sequence_reduction: 4}}
"""


def test_run_with_replay_flags_and_counts(tmp_path, capsys):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO)
    trace = write_trace(synthetic_trace(), tmp_path / "trace.csv")
    assert main(["run", str(scenario), "--replay", str(trace), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr()
    assert "replay of" in printed.out
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    kinds = [c for c in summary.columns if c.startswith("replay_")]
    assert len(kinds) == 5 and (summary[kinds].sum(axis=1) > 0).all()
    metadata = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert metadata["replay"]["trace_sha256"] == hashlib.sha256(trace.read_bytes()).hexdigest()
    replay = metadata["replay"]
    counts = {
        kind: replay[f"replay_{kind}_ops"] for kind in ("exact", "interpolated", "flops_interpolated", "extrapolated", "roofline")
    }
    # Deterministic counts (the trace's shapes are fixed, its seeded noise moves times, never a lookup's kind),
    # pinned from a run: a change in how lookups are classified shows here.
    assert counts == {"exact": 82, "interpolated": 110, "flops_interpolated": 66, "extrapolated": 12, "roofline": 0}
    total = sum(counts.values())
    kernels = sum(
        1
        for plan in layer_plans(load_scenario(scenario), metadata["seed"])
        for program in plan.programs
        for step in program
        if isinstance(step, Kernel)
    )
    assert total == kernels == 270  # every kernel of every simulated plan is counted once
    unmeasured = counts["extrapolated"] + counts["roofline"]
    assert replay["unmeasured_fraction"] == unmeasured / total == 12 / 270
    assert ("warning:" in printed.err) == (unmeasured / total > 0.1)
    flagged = pd.read_csv(tmp_path / "out" / "replay_flagged_ops.csv")  # 12 extrapolated ops, so the file is written
    assert set(flagged["kind"]) == {"extrapolated"}  # and no roofline op


def test_census_counts_every_kernel(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO)
    scenario = load_scenario(path)
    trace = synthetic_trace()
    report = census(layer_plans(scenario, 0), ReplayTimer.for_scenario(trace, scenario), tmp_path / "t.csv")
    kernels = [
        sum(1 for program in plan.programs for step in program if isinstance(step, Kernel)) for plan in layer_plans(scenario, 0)
    ]
    assert report.counts.filter(like="replay_").sum(axis=1).tolist() == kernels


def test_run_with_a_bad_trace_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("nope\n")
    assert main(["run", "rtx4090-pcie-8", "--replay", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_replay_warns_when_most_kernels_are_outside_the_trace(tmp_path, capsys):
    """A trace of one tiny GEMM shape cannot time a real layer: the run says so and records the share."""
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SCENARIO)
    tiny = synthetic_trace()
    tiny = Trace(tiny.rows[tiny.rows["primitive"] == "gemm"].head(1).reset_index(drop=True), tiny.metadata)
    trace = write_trace(tiny, tmp_path / "tiny.csv")
    assert main(["run", str(scenario), "--replay", str(trace), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    fraction = json.loads((tmp_path / "out" / "metadata.json").read_text())["replay"]["unmeasured_fraction"]
    assert fraction > 0.1 and "warning:" in err and f"{fraction:.0%}" in err
