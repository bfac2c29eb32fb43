"""The fitter recovers a known hardware model from a synthetic trace; the hardware file reads back."""

import numpy as np
import pandas as pd
import pytest
from calibration_fixtures import ALPHA_S, BANDWIDTH, BETA, LAUNCH_S, known_gpu, synthetic_trace

from secmoe_sim.calibrate import CalibrationError
from secmoe_sim.calibrate.fit import DEFAULT_BASE_HARDWARE, fit_trace
from secmoe_sim.calibrate.fitting import split_heldout
from secmoe_sim.calibrate.hardware_file import write_hardware
from secmoe_sim.calibrate.link_fit import AlphaBeta, measured_stack
from secmoe_sim.calibrate.trace import Trace, write_trace
from secmoe_sim.plan import costs
from secmoe_sim.plan.kernel_time import kernel_time_s
from secmoe_sim.spec.loading import load_cluster, load_scenario
from secmoe_sim.spec.workload import Layer


def test_fit_recovers_known_parameters():
    truth = known_gpu()
    result = fit_trace(synthetic_trace(noise=0.01))
    gpu = result.cluster.gpu
    assert gpu.host_overhead_per_op == pytest.approx(LAUNCH_S, rel=0.03) and gpu.kernel_launch_overhead == 0
    assert gpu.launch_queue_depth == 1  # a CPU trace: the host runs each op itself
    assert gpu.memory_bandwidth == pytest.approx(BANDWIDTH, rel=0.03)
    # the efficiency surface it was generated from, at shapes of the measured ranges that were not measured
    for m, k, n in ((100, 20, 700), (3000, 48, 48), (512, 512, 96), (40, 800, 800)):
        kernel = costs.linear("check", "gemm", m, k, n, 4)
        assert kernel_time_s(kernel, gpu, "fp32") == pytest.approx(kernel_time_s(kernel, truth, "fp32"), rel=0.05)
    for tokens, head_dim, causal in ((100, 12, False), (700, 64, True), (300, 100, False)):
        layer = Layer(d_model=4 * head_dim, seq_len=tokens, batch=1, heads=4, dtype="fp32", causal=causal)
        kernel = costs.attention_scores(tokens, 4 * head_dim, 4, layer, 4)
        assert kernel_time_s(kernel, gpu, "fp32") == pytest.approx(kernel_time_s(kernel, truth, "fp32"), rel=0.05)
    assert gpu.efficiency_table is None and gpu.gemm_shape_efficiency and gpu.attention_shape_efficiency
    stack = result.cluster.stack_settings().default
    assert stack.kind == "host_staged" and stack.message_overhead == pytest.approx(ALPHA_S, rel=0.05)
    assert result.cluster.intra_node.bandwidth_per_direction == pytest.approx(BETA, rel=0.05)
    curve = stack.efficiency["nvswitch"]  # alpha-beta data: every measurable size at the full rate
    assert len(curve) >= 2 and all(0.9 <= knot.efficiency <= 1 for knot in curve)


def test_error_table_small_on_model_data_and_reports_every_class():
    errors = fit_trace(synthetic_trace(noise=0.01)).errors.set_index("op_class")
    assert {"gemm", "attention", "memory", "launch", "comm:all_to_all"} <= set(errors.index)
    assert (errors.loc[["gemm", "attention", "memory"], "heldout_shapes"] > 0).all()
    assert (errors.loc[["gemm", "attention", "memory", "comm:all_to_all"], "mape_heldout_pct"] < 5).all()


def test_heldout_split_is_every_fourth_by_size():
    trace = synthetic_trace()
    gemm = trace.of("gemm")
    fitted, held = split_heldout(gemm, "flops")
    assert len(held) == len(gemm) // 4 + (1 if len(gemm) % 4 > 1 else 0)
    assert held["flops"].min() > gemm["flops"].min() and held["flops"].max() <= gemm["flops"].max()
    assert set(fitted.index).isdisjoint(held.index)


def test_hardware_file_reads_back_and_is_includable(tmp_path):
    trace = synthetic_trace()
    trace_path = write_trace(trace, tmp_path / "trace.csv")
    result = fit_trace(trace)
    hardware_path, errors_path = write_hardware(result, trace, trace_path, tmp_path / "hw.yaml")
    text = hardware_path.read_text()
    assert "sha256" in text and "held-out MAPE" in text and "# median per-op time" in text
    assert load_cluster(hardware_path) == result.cluster
    assert errors_path.name == "hw.fit_errors.csv"
    scenario_path = tmp_path / "scenario.yaml"
    scenario_path.write_text(
        "schema_version: 1\nname: uses-fit\nhardware: hw.yaml\nworkload:\n  layer: {d_model: 64, seq_len: 32, batch: 1, heads: 2, dtype: fp32}\n"
        "  architectures:\n    - {kind: sectional_moe, experts: [1, 2], min_section_width: 16, pre_expert: {enabled: false}}\n"
    )
    assert load_scenario(scenario_path).hardware == result.cluster


def test_base_hardware_keeps_what_the_trace_does_not_measure():
    base = load_scenario("h100-nvlink-8").hardware
    result = fit_trace(synthetic_trace(), base)
    assert result.cluster.gpus_per_node == base.gpus_per_node and result.cluster.inter_node == base.inter_node
    assert result.cluster.intra_node.latency == base.intra_node.latency
    assert result.cluster.intra_node.bandwidth_per_direction == pytest.approx(BETA, rel=0.05)
    stack = result.cluster.stack_settings().default
    assert stack.message_overhead == pytest.approx(ALPHA_S - base.intra_node.latency, rel=0.05)


def test_trace_without_gemms_is_a_clear_error():
    trace = synthetic_trace()
    with pytest.raises(CalibrationError, match="GEMM"):
        fit_trace(Trace(rows=trace.rows[trace.rows["primitive"] != "gemm"], metadata=trace.metadata))


def test_trace_without_fabric_takes_it_from_the_base_or_the_documented_default():
    trace = synthetic_trace()
    no_comm = Trace(rows=trace.rows[trace.rows["primitive"] != "comm"], metadata=trace.metadata)
    defaulted = fit_trace(no_comm)
    assert len(defaulted.warnings) == 1 and "the fabric" in defaulted.warnings[0] and "memory" not in defaulted.warnings[0]
    assert defaulted.cluster.intra_node == load_cluster(DEFAULT_BASE_HARDWARE).intra_node
    kept = fit_trace(no_comm, load_scenario("h100-nvlink-8").hardware).cluster
    assert kept.stack_settings() == load_scenario("h100-nvlink-8").hardware.stack_settings()


def test_measured_stack_keeps_the_ramp_of_achieved_bandwidth():
    """A sweep whose achieved bandwidth ramps from half the link to all of it gives that curve back."""
    alpha_s, beta = 10e-6, 10e9
    sizes = np.array([2.0**k for k in range(17, 25)])
    share = np.interp(np.log(sizes), np.log([sizes[0], sizes[-1]]), [0.5, 1.0])
    rows = pd.DataFrame({"bytes": sizes, "median_s": alpha_s + sizes / (beta * share)})
    stack, bandwidth = measured_stack(
        AlphaBeta("all_to_all", "nccl:intra_node", alpha_s, beta, len(sizes)), rows, "nvswitch", 1e-6
    )
    assert bandwidth == beta and stack.kind == "nccl" and stack.protocols[0].launch == pytest.approx(9e-6)
    curve = stack.efficiency["nvswitch"]
    assert [knot.efficiency for knot in curve] == pytest.approx(share[sizes / beta >= alpha_s].tolist(), rel=1e-9)


def test_fit_recovers_an_attention_floor_per_head():
    """Heads that cost at least 40 us each whatever their width: the fit finds the floor and predicts the
    floor-bound shapes, which a rate by FLOPs alone would make far too fast."""
    truth = known_gpu().model_copy(update={"attention_floor_per_head": 40e-6})
    trace = synthetic_trace(noise=0.0, gpu=truth)
    fitted = fit_trace(trace).cluster.gpu
    assert fitted.attention_floor_per_head == pytest.approx(40e-6, rel=0.05)
    errors = fit_trace(trace).errors.set_index("op_class")
    assert errors.loc["attention", "mape_heldout_pct"] < 5
