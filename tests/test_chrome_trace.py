"""The Chrome/Perfetto trace of a run: flow ids unique in the file, pids from 1, every flow inside a slice."""

from __future__ import annotations

import itertools
from collections import defaultdict

import pytest

from secmoe_sim import load_scenario, simulate
from secmoe_sim.report.chrome_trace import chrome_trace
from secmoe_sim.report.outputs import best_timelines
from secmoe_sim.spec.loading import shipped_scenario_names


@pytest.fixture(scope="module", params=shipped_scenario_names())
def trace(request):
    """Every shipped scenario's trace (the flow-id check must find no shared key on any of them)."""
    results = simulate(load_scenario(request.param))
    return chrome_trace(best_timelines(results, trace_experts=8))


@pytest.mark.slow
def test_flow_ids_are_unique_in_the_file_and_pids_start_at_one(trace):
    events = trace["traceEvents"]
    starts = [(e["id"], e["cat"], e["name"]) for e in events if e["ph"] == "s"]
    assert starts and len(starts) == len(set(starts))
    assert len({e["id"] for e in events if e["ph"] == "s"}) == len(starts)
    assert min(e["pid"] for e in events) == 1


@pytest.mark.slow
def test_every_flow_start_and_end_lies_inside_a_slice_on_its_track(trace):
    slices = defaultdict(list)
    for e in trace["traceEvents"]:
        if e["ph"] == "X":
            slices[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"]))
    for e in trace["traceEvents"]:
        if e["ph"] in ("s", "f"):
            spans = slices[(e["pid"], e["tid"])]
            assert any(start - 1e-6 <= e["ts"] <= end + 1e-6 for start, end in spans), e


@pytest.mark.slow
def test_collective_slices_carry_their_bytes_and_peers(trace):
    collectives = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["cat"] == "collective"]
    assert collectives and any(e["args"]["bytes"] > 0 and e["args"]["peers"] > 0 for e in collectives)
    names = [e["args"]["name"] for e in trace["traceEvents"] if e["ph"] == "M" and e["name"] == "thread_name"]
    assert any(name.endswith("(critical)") for name in names)


def test_send_rate_counters_step_with_overlapping_messages():
    import pandas as pd

    from secmoe_sim.report.chrome_trace import egress_counters

    timeline = pd.DataFrame(
        {
            "kind": ["transfer", "transfer", "transfer", "kernel"],
            "src": [0, 0, 1, 0],
            "bytes": [1e9, 1e9, 5e8, 0.0],
            "started_at": [0.0, 0.5, 0.0, 0.0],
            "finished_at": [1.0, 1.5, 1.0, 2.0],
        }
    )
    events = egress_counters(timeline, process_id=1, gpus=1)
    assert [(e["name"], e["ts"], e["args"]["GB/s"]) for e in events] == [
        ("GPU 0 send rate", 0.0, 1.0),
        ("GPU 0 send rate", 0.5e6, 2.0),
        ("GPU 0 send rate", 1e6, 1.0),
        ("GPU 0 send rate", 1.5e6, 0.0),
    ]
    assert {e["ph"] for e in events} == {"C"} and {e["pid"] for e in events} == {1}


@pytest.mark.slow
def test_counter_area_is_the_bytes_each_busiest_gpu_sent(trace):
    counters = defaultdict(list)
    for e in trace["traceEvents"]:
        if e["ph"] == "C":
            counters[(e["pid"], e["name"])].append((e["ts"], e["args"]["GB/s"]))
    assert counters
    sent = defaultdict(float)
    for e in trace["traceEvents"]:
        if e["ph"] == "s":
            sent[(e["pid"], f"GPU {_src_gpu(e['tid'])} send rate")] += e["args"]["bytes"]
    for key, points in counters.items():
        area_gb = sum((t1 - t0) * 1e-6 * rate for (t0, rate), (t1, _) in itertools.pairwise(points))
        assert points[-1][1] == pytest.approx(0.0, abs=1e-6)
        assert area_gb * 1e9 == pytest.approx(sent[key], rel=1e-6)


def _src_gpu(tid: int) -> int:
    return tid // 3  # three threads per GPU: host, compute, comm
