"""The fidelity table: its cases and roles, the fit's bookkeeping, and the batched network mode it runs in."""

import json
from importlib import resources

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import TypeAdapter

from secmoe_sim.analysis.fidelity import COLUMNS, NETWORK, band, fidelity_table, published_cases
from secmoe_sim.analysis.fidelity.benchmarks import (
    EXACT,
    FP8_BYTES_PER_TOKEN,
    LOW_LATENCY_DISPATCH_BYTES,
    Harness,
    deepep_routing,
    deepep_traffic,
    iteration_time_s,
    low_latency_traffic,
    nccl_tests,
    simulate_case,
)
from secmoe_sim.analysis.fidelity.stacks import MODELS, fit_groups
from secmoe_sim.report.fidelity import write_fidelity
from secmoe_sim.spec.communication import HostStagedStack, Stack
from secmoe_sim.spec.units import DECIMAL_PREFIXES, SECOND_FACTORS, SIZE_UNITS, parse_quantity

CASES = published_cases()


@pytest.fixture(scope="module")
def fidelity():
    return fidelity_table()


def test_the_case_file_covers_what_the_table_must():
    roles = [case["role"] for case in CASES]
    assert len(CASES) >= 25 and roles.count("prediction") >= 15
    assert {case["stack"] for case in CASES} == {"nccl", "gpu_initiated"}
    assert len({case["case"] for case in CASES}) == len(CASES)
    assert all(case["source"] and case["benchmark"] and case["metric"] for case in CASES)


def test_every_stated_harness_is_complete():
    """A case's launch, where its source states it: CUDA graphs, or the host with its GPUs per process and iterations."""
    stated = [case for case in CASES if "harness" in case]
    assert stated and all(case["benchmark"] == "nccl_tests" for case in stated)
    for case in stated:
        harness = case["harness"]
        assert harness["launch"] in {"cuda_graph", "host"}, case["case"]
        assert isinstance(harness["iterations"], int) and harness["iterations"] >= 1, case["case"]
        if harness["launch"] == "host":
            assert 1 <= harness["gpus_per_process"] <= case["gpus_per_node"], case["case"]


def test_a_host_launched_iteration_is_a_two_stage_pipeline():
    """n iterations on a host taking h each and GPUs taking d each: h + d + (n - 1) max(h, d) in all."""
    us = SECOND_FACTORS["us"]
    harness = Harness(launch_per_gpu_s=4 * us)
    case = {"harness": {"launch": "host", "gpus_per_process": 8, "iterations": 20}}
    for device_us in (10.0, 32.0, 100.0):
        loop_s = 32 * us + device_us * us + 19 * max(32, device_us) * us
        assert iteration_time_s(device_us * us, case, harness) == pytest.approx(loop_s / 20, rel=1e-12)
    one_per_process = {"harness": {"launch": "host", "gpus_per_process": 1, "iterations": 20}}
    assert iteration_time_s(100 * us, one_per_process, harness) == pytest.approx(100.2 * us, rel=1e-12)
    for untimed_by_host in ({"harness": {"launch": "cuda_graph", "iterations": 10}}, {}):
        assert iteration_time_s(10 * us, untimed_by_host, harness) == 10 * us


def test_every_fitted_parameter_is_determined_by_named_fit_cases_once():
    for model in MODELS.values():
        groups = fit_groups(model, CASES)
        assert sorted(i for indices, _ in groups for i in indices) == list(range(len(model.parameters)))
        fit_cases = sum(len(group) for _, group in groups)
        assert fit_cases == sum(1 for c in CASES if c["stack"] == model.name and c["role"] == "fit")
    assert all("determines" not in case for case in CASES if case["role"] == "prediction")


def test_bands():
    assert (band(65535), band(65536), band(64 * 2**20), band(64 * 2**20 + 1)) == ("small", "medium", "medium", "large")


@pytest.mark.slow
def test_table_columns_errors_and_bands(fidelity):
    table = fidelity.table
    assert list(table.columns) == COLUMNS and len(table) == len(CASES)
    assert np.allclose(table["rel_error"], (table["simulated"] - table["published"]).abs() / table["published"], rtol=1e-12)
    assert set(table["band"]) == {"small", "medium", "large"}
    assert (table["band"] == table["size_bytes"].map(band)).all()
    summary = fidelity.summary()
    assert set(summary["stack"]) == {"nccl", "gpu_initiated"}
    assert summary["predictions"].sum() == (table["role"] == "prediction").sum()


@pytest.mark.slow
def test_fit_cases_of_a_well_posed_group_are_met(fidelity):
    """Groups whose cases the model can meet are solved to the published figure (the fit works)."""
    table = fidelity.table.set_index("case")
    for name in (
        "nccl-all_gather-a100-1x8-1KiB-time",
        "nccl-alltoall-a100-2x8-1KiB-time",
        "nccl-all_gather-ring-h100-1x8-1KiB-time",
        "deepep-normal-h800-64-dispatch",
    ):
        assert table.loc[name, "rel_error"] < 1e-4, name


@pytest.mark.slow
def test_written_files(fidelity, tmp_path):
    paths = write_fidelity(fidelity, tmp_path)
    assert {p.name for p in paths} == {
        "fidelity.csv",
        "fidelity.md",
        "metadata.json",
        "stack-nccl.yaml",
        "stack-gpu_initiated.yaml",
    }
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "fidelity.csv"), fidelity.table, check_exact=False)
    metadata = json.loads((tmp_path / "metadata.json").read_text())
    assert metadata["parameters_fitted"] == sum(len(m.parameters) for m in MODELS.values())
    assert "median_error" in (tmp_path / "fidelity.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["deepep-normal-h800-64-combine", "deepep-ll-nvlink-h800-64-combine", "deepep-ll-rdma-h800-64-dispatch"]
)
def test_batched_network_agrees_with_exact_within_half_a_percent(name):
    """The table runs in batched mode; on its largest cases that exact mode can check, the two agree."""
    case = next(c for c in CASES if c["case"] == name)
    model = MODELS[case["stack"]]
    stack = model.build([p.start for p in model.parameters])
    exact = simulate_case(case, stack, EXACT).simulated
    assert simulate_case(case, stack, NETWORK).simulated == pytest.approx(exact, rel=0.005)


@pytest.mark.parametrize("collective", ["all_gather", "reduce_scatter"])
def test_nccl_tests_ring_cases_move_one_shard_per_step(collective):
    """nccl-tests' size of an all-gather (the gathered buffer) and of a reduce-scatter (each rank's input):
    ``n - 1`` ring steps of ``size / n`` each; busbw is algbw x (n - 1) / n."""
    free = HostStagedStack(kind="host_staged", message_overhead=0.0)
    size_bytes, ranks = SIZE_UNITS["GiB"], 8
    case = {"collective": collective, "preset": "h100-ndr", "nodes": 1, "gpus_per_node": ranks, "size_bytes": size_bytes}
    nvlink_bytes_per_s = parse_quantity("450 GB/s", "bandwidth")  # the h100-ndr preset, per direction
    time_s = (ranks - 1) * (size_bytes / ranks) / nvlink_bytes_per_s
    simulated_us = nccl_tests({**case, "metric": "time_us"}, free, EXACT).simulated
    assert simulated_us == pytest.approx(time_s / SECOND_FACTORS["us"], rel=1e-12)
    busbw_gbps = nccl_tests({**case, "metric": "busbw_GBps"}, free, EXACT).simulated
    assert busbw_gbps == pytest.approx(size_bytes / time_s / DECIMAL_PREFIXES["G"] * (ranks - 1) / ranks, rel=1e-12)


def test_deepep_routing_is_node_limited():
    experts = deepep_routing(rank=3, ranks=64)  # 8 nodes of 32 experts; top min(8, 4) = 4 nodes per token
    nodes_per_token = [len(set((row // 32).tolist())) for row in experts]
    assert max(nodes_per_token) <= 4 and experts.shape == (4096, 8)
    assert all(len(set(row.tolist())) == 8 for row in experts)


def test_deepep_reported_bytes_count_rank0_received_tokens():
    pairs, reported = deepep_traffic(8, "dispatch", "nvl_GBps")
    volume = dict(pairs)
    # rank 0 receives its own tokens as a local copy (not on the wire) plus every other rank's
    received_from_others = sum(size for (src, dst), size in volume.items() if dst == 0)
    own = reported - received_from_others
    assert 0 < own < reported / 4  # about one eighth: rank 0's tokens that route to rank 0 itself
    assert reported / FP8_BYTES_PER_TOKEN == pytest.approx(reported // FP8_BYTES_PER_TOKEN)


def test_low_latency_traffic_is_one_message_per_selection():
    volume = dict(low_latency_traffic(16, "dispatch"))
    sent = sum(size for (src, _), size in volume.items() if src == 0)
    selections_elsewhere = sent / LOW_LATENCY_DISPATCH_BYTES
    assert selections_elsewhere == pytest.approx(round(selections_elsewhere))
    assert 128 * 8 * 15 / 16 * 0.85 < selections_elsewhere < 128 * 8  # about 15/16 of the 1024 selections leave rank 0
    combine = dict(low_latency_traffic(16, "combine"))
    assert combine[(1, 0)] / volume[(0, 1)] == pytest.approx(2 * 7168 / LOW_LATENCY_DISPATCH_BYTES)


@pytest.mark.slow
def test_shipped_stacks_are_the_fitted_ones(fidelity):
    """The stack files the shipped scenarios name are what this table fits (regenerate both together)."""
    for shipped, name in (("nccl-fidelity", "nccl"), ("deepep-fidelity", "gpu_initiated")):
        data = yaml.safe_load((resources.files("secmoe_sim") / "stacks" / f"{shipped}.yaml").read_text(encoding="utf-8"))
        assert TypeAdapter(Stack).validate_python(data) == fidelity.stacks[name].stack, shipped
