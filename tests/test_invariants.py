"""Invariants over small random scenarios (hypothesis)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_pcie
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secmoe_sim.plan.steps import AllReduce, AllToAll
from secmoe_sim.simulation import layer_plans, simulate
from secmoe_sim.spec.scenario import Scenario

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def scenarios(draw) -> Scenario:
    gpus_per_node = draw(st.sampled_from([1, 2, 4]))
    nodes = draw(st.sampled_from([1, 2]))
    num_gpus = gpus_per_node * nodes
    d_model = draw(st.sampled_from([64, 128, 256]))
    heads = draw(st.sampled_from([1, 2, 4]))
    fabric = draw(st.sampled_from(["nvswitch", "pcie-p2p", "pcie-staged"]))
    intra = (
        {"kind": "nvswitch", "bandwidth_per_direction": draw(st.sampled_from(["10 GB/s", "100 GB/s"])), "latency": "1 us"}
        if fabric == "nvswitch"
        else make_pcie(peer_to_peer=fabric == "pcie-p2p", gpus_per_switch=draw(st.sampled_from([1, 2]))).model_dump()
    )
    layer = {
        "d_model": d_model,
        "seq_len": draw(st.sampled_from([16, 32, 64])),
        "batch": num_gpus * draw(st.integers(1, 2)),
        "heads": heads,
        "dtype": "bf16",
        "ffn": draw(st.booleans()),
        "causal": draw(st.booleans()),
        "attention": draw(st.sampled_from(["flash", "materialized"])),
        "passes": draw(st.sampled_from(["forward", "forward_backward"])),
    }
    architectures = [
        {
            "kind": "sectional_moe",
            "label": "sectional",
            "min_section_width": 16,
            "sweep_mode": draw(st.sampled_from(["fixed_cluster", "expert_per_gpu"])),
            "pre_expert": {"enabled": draw(st.booleans()), "sequence_reduction": 1},
            "section_ffn": draw(st.booleans()),
            "mixing": draw(st.booleans()),
            "coalesce_messages": draw(st.booleans()),
            "grouped_kernels": draw(st.booleans()),
        },
        {
            "kind": "token_moe",
            "label": "token",
            "num_experts": num_gpus * draw(st.sampled_from([1, 2])),
            "top_k": 1,
            "capacity_factor": draw(st.sampled_from([0.5, 1.0, 2.0])),
        },
        {
            "kind": "dense",
            "label": "dense",
            "tensor_parallel": draw(st.sampled_from([t for t in (1, 2) if num_gpus % t == 0 and heads % t == 0])),
        },
    ]
    hardware = {
        "gpu": {
            "name": "g",
            "peak_flops": {"bf16": "100 TFLOP/s"},
            "memory_bandwidth": "1 TB/s",
            "memory_capacity": "16 GiB",
            "kernel_launch_overhead": "2 us",
        },
        "nodes": nodes,
        "gpus_per_node": gpus_per_node,
        "intra_node": intra,
        "message_overhead": "3 us",
        "inter_node": {"nic_bandwidth_per_direction": "100 Gb/s", "latency": "2 us"},
    }
    return Scenario.model_validate(
        {
            "schema_version": 1,
            "name": "random",
            "seed": draw(st.integers(0, 2**16)),
            "hardware": hardware,
            "workload": {"layer": layer, "architectures": architectures},
        }
    )


def _config_groups(timeline: pd.DataFrame):
    return timeline.groupby(["entry", "placement", "num_experts"])


@pytest.mark.slow
@FAST
@given(scenarios())
def test_streams_never_run_two_ops_at_once(scenario):
    timeline = simulate(scenario).timeline
    ops = timeline[timeline["kind"] != "transfer"]
    for _, stream in ops.groupby(["entry", "placement", "num_experts", "gpu", "stream"]):
        stream = stream.sort_values("started_at")
        assert (stream["started_at"].to_numpy()[1:] >= stream["finished_at"].to_numpy()[:-1] - 1e-15).all()


@pytest.mark.slow
@FAST
@given(scenarios())
def test_every_message_is_sent_and_received_once(scenario):
    results = simulate(scenario)
    for plan in layer_plans(scenario, results.seed):
        expected: dict[tuple[int, int], float] = {}
        for collective in {s.key: s for p in plan.programs for s in p if isinstance(s, (AllToAll, AllReduce))}.values():
            if isinstance(collective, AllToAll):
                for m in collective.messages:
                    expected[(m.src, m.dst)] = expected.get((m.src, m.dst), 0.0) + m.payload_bytes
            else:
                ring, chunk = collective.gpus, collective.payload_bytes / len(collective.gpus)
                for i, src in enumerate(ring):
                    dst = ring[(i + 1) % len(ring)]
                    expected[(src, dst)] = expected.get((src, dst), 0.0) + chunk * 2 * (len(ring) - 1)
        transfers = results.transfers[
            (results.transfers["entry"] == plan.label)
            & (results.transfers["placement"] == plan.placement)
            & (results.transfers["num_experts"] == plan.num_experts)
        ]
        moved = transfers.groupby(["src", "dst"])["bytes"].sum().to_dict()
        assert set(moved) == {k for k, v in expected.items() if v > 0}
        for pair, size in moved.items():
            assert np.isclose(size, expected[pair], rtol=1e-12)
        assert (transfers["src"] != transfers["dst"]).all()


@pytest.mark.slow
@FAST
@given(scenarios())
def test_wall_clock_covers_compute_and_launch(scenario):
    summary = simulate(scenario).summary
    assert (summary["wall_clock_s"] >= summary["compute_s"] + summary["launch_s"] - 1e-12 * summary["wall_clock_s"]).all()
    assert (summary["exposed_communication_s"] >= -1e-15).all()
    assert (summary["communication_s"] <= summary["wall_clock_s"] + 1e-15).all()


@pytest.mark.slow
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_same_seed_gives_identical_tables(scenario):
    first, second = simulate(scenario), simulate(scenario)
    pd.testing.assert_frame_equal(first.summary, second.summary)
    pd.testing.assert_frame_equal(first.timeline, second.timeline)


@pytest.mark.slow
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_more_bandwidth_is_never_slower(scenario):
    hardware = scenario.hardware
    fabric = hardware.intra_node
    if fabric.kind == "nvswitch":
        faster_fabric = fabric.model_copy(update={"bandwidth_per_direction": 2 * fabric.bandwidth_per_direction})
    else:
        faster_fabric = fabric.model_copy(
            update={
                "link_bandwidth_per_direction": 2 * fabric.link_bandwidth_per_direction,
                "host_bridge_bandwidth_per_direction": 2 * fabric.host_bridge_bandwidth_per_direction,
            }
        )
    nic = hardware.inter_node.model_copy(
        update={"nic_bandwidth_per_direction": 2 * hardware.inter_node.nic_bandwidth_per_direction}
    )
    faster = scenario.model_copy(
        update={"hardware": hardware.model_copy(update={"intra_node": faster_fabric, "inter_node": nic})}
    )
    slow, fast = simulate(scenario).summary, simulate(faster).summary
    assert (fast["wall_clock_s"].to_numpy() <= slow["wall_clock_s"].to_numpy() * (1 + 1e-12)).all()
