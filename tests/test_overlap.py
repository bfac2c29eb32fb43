"""Chunked overlap of dispatch, expert FFN and combine."""

from pathlib import Path

import pytest

from secmoe_sim.simulation import simulate
from secmoe_sim.spec.loading import load_scenario
from secmoe_sim.spec.scenario import Scenario

TINY = Path(__file__).parent / "data" / "tiny_validation.yaml"


def token_scenario(degree: int, nic: str = "100 Gb/s", passes: str = "forward") -> Scenario:
    data = load_scenario(TINY).model_dump(mode="json")
    data["workload"]["architectures"] = [
        {"kind": "token_moe", "label": "token", "num_experts": 8, "top_k": 2, "capacity_factor": 4.0, "overlap_degree": degree}
    ]
    data["workload"]["layer"]["passes"] = passes
    data["hardware"]["inter_node"]["nic_bandwidth_per_direction"] = nic
    data["hardware"]["message_overhead"] = "0.1 us"
    data["hardware"]["gpu"]["kernel_launch_overhead"] = "0.1 us"
    return Scenario.model_validate(data)


@pytest.mark.parametrize("passes", ["forward", "forward_backward"])
def test_degree_one_equals_no_overlap(passes):
    plain = simulate(token_scenario(1, passes=passes)).summary
    data = token_scenario(1, passes=passes).model_dump(mode="json")
    del data["workload"]["architectures"][0]["overlap_degree"]
    default = simulate(Scenario.model_validate(data)).summary
    assert plain["wall_clock_s"].iloc[0] == default["wall_clock_s"].iloc[0]


def test_higher_degree_is_not_slower_when_compute_and_communication_balance():
    # 400 Gb/s NICs: communication about half the expert compute, messages large against latency
    walls = [simulate(token_scenario(degree, nic="400 Gb/s")).summary["wall_clock_s"].iloc[0] for degree in (1, 2, 4)]
    assert walls[1] < walls[0] and walls[2] <= walls[1] * (1 + 1e-9)


def test_too_many_chunks_pay_latency():
    # Every chunk's messages pay latency and overhead again: at degree 8 this small layer is slower than at 4.
    walls = {degree: simulate(token_scenario(degree, nic="400 Gb/s")).summary["wall_clock_s"].iloc[0] for degree in (4, 8)}
    assert walls[8] > walls[4]


def test_overlap_keeps_flops_and_bytes_and_hides_communication():
    plain, overlapped = simulate(token_scenario(1)), simulate(token_scenario(4))
    a, b = plain.summary.iloc[0], overlapped.summary.iloc[0]
    assert b["flops"] == pytest.approx(a["flops"], rel=1e-12)
    assert b["bytes_sent"] == pytest.approx(a["bytes_sent"], rel=1e-12)
    assert b["exposed_communication_s"] < a["exposed_communication_s"]
    compute_rows = overlapped.timeline[(overlapped.timeline["stream"] == "compute")]
    comm_rows = overlapped.timeline[(overlapped.timeline["kind"] == "collective")]
    for _, rows in list(compute_rows.groupby("gpu")) + list(comm_rows.groupby("gpu")):
        rows = rows.sort_values("started_at")
        assert (rows["started_at"].to_numpy()[1:] >= rows["finished_at"].to_numpy()[:-1] - 1e-15).all()


def sectional_scenario(degree: int, nic: str = "100 Gb/s", passes: str = "forward") -> Scenario:
    data = token_scenario(1, nic=nic, passes=passes).model_dump(mode="json")
    data["workload"]["layer"].update({"d_model": 1024, "seq_len": 1024, "heads": 8})  # experts long enough to hide the exchange
    data["workload"]["architectures"] = [
        {
            "kind": "sectional_moe",
            "label": "sectional",
            "experts": [8],
            "min_section_width": 8,
            "placement": "spread",
            "pre_expert": {"enabled": True, "sequence_reduction": 2},
            "overlap_degree": degree,
        }
    ]
    return Scenario.model_validate(data)


@pytest.mark.parametrize("passes", ["forward", "forward_backward"])
def test_sectional_scatter_and_gather_overlap_with_the_experts(passes):
    """Chunked as token MoE is: the same FLOPs and bytes, and a shorter layer when the exchange is long."""
    one, four = (simulate(sectional_scenario(degree, passes=passes)).summary.iloc[0] for degree in (1, 4))
    assert four["flops"] == pytest.approx(one["flops"]) and four["bytes_sent"] == pytest.approx(one["bytes_sent"])
    assert four["exposed_communication_s"] < one["exposed_communication_s"]
    assert four["wall_clock_s"] < one["wall_clock_s"]
