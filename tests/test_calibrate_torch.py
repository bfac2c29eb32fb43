"""Real torch measurements on the CPU: a tiny grid, gloo between two processes, check-real, and the
CUDA timing path exercised with stand-in events (no GPU here)."""

import json
import time

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from secmoe_sim.calibrate import CalibrationError, microbench
from secmoe_sim.calibrate.comm_bench import COLLECTIVES
from secmoe_sim.calibrate.host_allocator import DEFAULT_HOST_ALLOCATOR, _glibc_mallopt, allocator_kind, host_allocator
from secmoe_sim.calibrate.microbench import Grid, attention_shapes, gemm_shapes, measure
from secmoe_sim.calibrate.timing import MIN_REPEATS, CudaDevice, interleaved_time_s, make_device, stable_time_s
from secmoe_sim.calibrate.trace import read_trace, write_trace
from secmoe_sim.cli import main
from secmoe_sim.spec.loading import load_scenario
from secmoe_sim.spec.units import PERCENT, SECOND_FACTORS

pytestmark = pytest.mark.slow  # torch, Dask or subprocesses: the full suite runs it, `-m "not slow"` does not

TINY = Grid(
    name="tiny",
    gemm_shapes=gemm_shapes((16, 32, 64), (16, 32), 1e9),
    attention_shapes=attention_shapes((16, 32), (16, 32), (1, 2), 1e9),
    memory_elements=(2**10, 2**14),
    tiny_loop_ops=10,
    section_loop_lengths=(1, 4),
    comm_bytes=(64, 65536),
    warmup=1,
    repeats=MIN_REPEATS,
)

CHECK_SCENARIO = """schema_version: 1
name: tiny-check
hardware: {name: x, nodes: 1, gpus_per_node: 1, message_overhead: 0,
           gpu: {name: x, peak_flops: {fp32: 1.0e9}, memory_bandwidth: 1.0e9, memory_capacity: 1.0e9, kernel_launch_overhead: 0},
           intra_node: {kind: nvswitch, bandwidth_per_direction: 1.0e9, latency: 0}}
workload:
  layer: {d_model: 64, seq_len: 32, batch: 1, heads: 2, dtype: fp32, ffn: true, ffn_multiplier: 2}
  architectures:
    - {kind: sectional_moe, label: sectional, experts: [1, 2, 4], min_section_width: 16, grouped_kernels: false,
       pre_expert: {enabled: true, sequence_reduction: 2}, section_ffn: true, mixing: true}
    - {kind: sectional_moe, label: experts-only, experts: [1, 4], min_section_width: 16, grouped_kernels: false,
       pre_expert: {enabled: false}}
"""


@pytest.fixture(scope="module")
def tiny_trace(tmp_path_factory):
    """The tiny grid measured once on this CPU, collectives included (two gloo processes)."""
    device = make_device("cpu")
    trace = measure(device, TINY, ("fp32",), torch.get_num_threads())
    return write_trace(trace, tmp_path_factory.mktemp("tiny") / "trace.csv")


def test_tiny_grid_measures_every_primitive(tiny_trace):
    trace = read_trace(tiny_trace)
    rows = trace.rows
    assert set(rows["primitive"]) == {"gemm", "attention", "memory", "launch", "comm"}
    assert (rows["repeats"] >= MIN_REPEATS).all() and (rows["median_s"] > 0).all()
    assert (rows["p10_s"] <= rows["median_s"]).all() and (rows["median_s"] <= rows["p90_s"]).all()
    for key in ("torch_version", "device_name", "threads", "created_at", "grid", "dtypes"):
        assert key in trace.metadata
    assert trace.metadata["threads"] == torch.get_num_threads()


def test_attention_is_timed_on_both_paths_with_the_default_one_marked(tiny_trace):
    attention = read_trace(tiny_trace).of("attention")
    assert set(attention["path"]) == {"fused", "math"}
    shapes = attention.groupby(["batch", "heads", "tokens", "head_dim", "causal"])
    assert (shapes["path"].nunique() == 2).all()  # every shape on both paths
    assert (shapes["source"].apply(lambda s: (s == "microbenchmark (default path)").sum()) == 1).all()


def test_the_math_path_is_skipped_where_its_scores_would_not_fit(monkeypatch):
    device = make_device("cpu")
    monkeypatch.setattr(device, "memory_bytes", 1e3)  # 125 bytes for the scores: every tiny shape is over
    grid = Grid("attention-only", (), TINY.attention_shapes, (), 1, (), (), 1, MIN_REPEATS)
    rows = microbench._Bench(device, grid, "fp32", progress=_NoProgress()).attention()
    assert {row["path"] for row in rows} == {"fused"}


class _NoProgress:
    def update(self, _count: int) -> None:
        pass


def test_gloo_collectives_ran_between_two_processes(tiny_trace):
    trace = read_trace(tiny_trace)
    comm = trace.of("comm")
    assert trace.metadata["comm_backend"] == "gloo" and trace.metadata["comm_world_size"] == 2
    assert set(comm["op"]) == set(COLLECTIVES) and (comm["world_size"] == 2).all()
    assert set(comm["path"]) == {"gloo:loopback"}
    for op in COLLECTIVES:
        sizes = comm[comm["op"] == op].sort_values("bytes")
        assert len(sizes) == len(TINY.comm_bytes) and sizes["median_s"].iloc[-1] > 0


def test_check_real_on_a_tiny_layer(tiny_trace, tmp_path, capsys):
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(CHECK_SCENARIO)
    out = tmp_path / "check"
    assert (
        main(
            [
                "check-real",
                "--device",
                "cpu",
                "--trace",
                str(tiny_trace),
                "--scenario",
                str(scenario),
                "--out",
                str(out),
                "--repeats",
                "20",
            ]
        )
        == 0
    )
    table = pd.read_csv(out / "check_real.csv")
    assert list(table.columns[:5]) == ["E", "mode", "measured_s", "predicted_s", "rel_error"]
    assert len(table) == 2 * (3 + 2) and set(table["mode"]) == {"fitted", "replay"}
    assert np.allclose(table["rel_error"], table["predicted_s"] / table["measured_s"] - 1)
    summary = pd.read_csv(out / "check_real_summary.csv")
    assert (summary["regret_pct"] >= 0).all() and len(summary) == 4
    assert (summary["median_error_target_met"] == (summary["median_abs_error_pct"] <= 10)).all()
    assert (summary["regret_target_met"] == (summary["regret_pct"] <= 3)).all()
    spread = (table["measured_p90_s"] - table["measured_p10_s"]) / table["measured_s"] * PERCENT
    expected_spread = spread.groupby([table["entry"], table["mode"]]).median()
    reported_spread = summary.set_index(["entry", "mode"])["measured_spread_pct"]
    assert reported_spread.to_numpy() == pytest.approx(expected_spread.loc[reported_spread.index].to_numpy(), rel=1e-12)
    assert (reported_spread > 0).all()  # repeated timings on a CPU never agree to the nanosecond
    assert (out / "check_real.png").stat().st_size > 0
    assert load_scenario(out / "scenario.yaml").hardware.num_gpus == 1
    printed = capsys.readouterr()
    met = int(summary["median_error_target_met"].sum() + summary["regret_target_met"].sum())
    assert "regret" in printed.out and f"{met} of 8 targets met" in printed.out
    metadata = json.loads((out / "check_real_metadata.json").read_text())
    assert metadata["loaded_machine"] == (
        max(metadata["load_average_1min"], metadata["load_average_1min_after"]) > 0.5 * metadata["cpu_count"]
    )
    assert ("LOADED MACHINE" in printed.err) == metadata["loaded_machine"]
    default = DEFAULT_HOST_ALLOCATOR if _glibc_mallopt() is not None else "system"  # the default takes where glibc has mallopt
    assert allocator_kind(metadata["host_allocator"]) == default
    measured_with = read_trace(tiny_trace).metadata["host_allocator"]
    differ = allocator_kind(measured_with) != allocator_kind(host_allocator())
    assert ("op times may differ by page faults" in printed.err) == differ


class _StandInEvent:
    """Records host time where a CUDA event would record GPU time; enough to drive CudaDevice here."""

    def __init__(self, enable_timing: bool):
        self.at = None

    def record(self):
        self.at = time.perf_counter()

    def elapsed_time(self, end) -> float:
        return (end.at - self.at) / SECOND_FACTORS["ms"]  # CUDA events report milliseconds


def test_cuda_timing_path_with_stand_in_events(monkeypatch):
    monkeypatch.setattr(torch.cuda, "Event", _StandInEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    device = CudaDevice(
        kind="cuda",
        torch_device=torch.device("cpu"),
        name="stand-in",
        memory_bytes=1e9,
        default_dtypes=("fp32",),
        comm_backend="nccl",
    )
    a = torch.randn(64, 64)
    samples = device.time_s(lambda: a @ a, a.normal_, 1, MIN_REPEATS)
    assert len(samples) == MIN_REPEATS and (samples > 0).all()
    small = Grid(
        name="stand-in",
        gemm_shapes=((16, 16, 16),),
        attention_shapes=((1, 1, 16, 16, 0),),
        memory_elements=(1024,),
        tiny_loop_ops=5,
        section_loop_lengths=(2,),
        comm_bytes=(),
        warmup=1,
        repeats=MIN_REPEATS,
    )
    trace = measure(device, small, ("fp32",), 1)
    assert set(trace.rows["device"]) == {"cuda"} and (trace.rows["median_s"] > 0).all()
    with pytest.raises(CalibrationError, match="at least 20 repeats"):
        stable_time_s(device, lambda: a @ a, a.normal_, 1, 5)


def test_interleaved_timing_gives_every_call_its_repeats():
    device = make_device("cpu")
    a, b = torch.randn(8, 8), torch.randn(64, 64)
    small, large = interleaved_time_s(device, [(lambda: a @ a, a.normal_), (lambda: b @ b, b.normal_)], 1, 21, rounds=4)
    assert len(small) == len(large) == 24 and (small > 0).all()
    with pytest.raises(CalibrationError, match="at least 20 repeats"):
        interleaved_time_s(device, [(lambda: a @ a, a.normal_)], 1, 10)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_line(capsys):
    with pytest.raises(CalibrationError, match="no CUDA device"):
        make_device("cuda")
    assert main(["calibrate", "--device", "cuda", "--quick"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_path_without_a_kernel_for_a_shape_is_skipped_not_fatal(monkeypatch):
    monkeypatch.setattr(microbench, "FUSED_SDPA_BACKENDS", ("CUDNN_ATTENTION",))  # no CPU kernel: nothing takes the inputs
    grid = Grid("attention-only", (), TINY.attention_shapes, (), 1, (), (), 1, MIN_REPEATS)
    rows = microbench._Bench(make_device("cpu"), grid, "fp32", progress=_NoProgress()).attention()
    assert rows and {row["path"] for row in rows} == {"math"}
