"""Exact micro-timelines computed by hand (one transfer = overhead + latency + bytes / bandwidth).

These are timelines of the capacity-1 port model (``network: {model: ports}``), selected
explicitly; the flow model's hand timelines are in ``test_network_flows.py``.
"""

import pytest
from conftest import hand_plan, make_cluster, make_gpu, make_layer, make_pcie

from secmoe_sim.engine import run_plan
from secmoe_sim.plan.costs import Kernel
from secmoe_sim.plan.sectional import sectional_plan
from secmoe_sim.plan.steps import AllReduce, AllToAll, Message
from secmoe_sim.spec.hardware import EfficiencyPoint
from secmoe_sim.spec.network import NetworkOptions
from secmoe_sim.spec.workload import PreExpertBlock, SectionalMoEArchitecture

BANDWIDTH = 1e9
LATENCY = 1e-6
OVERHEAD = 2e-6
PORTS = NetworkOptions(model="ports")


def one_transfer_s(payload_bytes):
    return OVERHEAD + LATENCY + payload_bytes / BANDWIDTH


def test_one_transfer():
    cluster = make_cluster(gpus_per_node=2, bandwidth=BANDWIDTH, latency=LATENCY, overhead=OVERHEAD)
    exchange = AllToAll.of("a2a", "a2a", (0, 1), (Message(0, 1, 1e6),))
    run = run_plan(hand_plan(cluster, [[exchange], [exchange]]), network=PORTS)
    transfer = run.timeline[run.timeline["kind"] == "transfer"].iloc[0]
    assert (transfer.started_at, transfer.finished_at) == (0.0, pytest.approx(one_transfer_s(1e6), rel=1e-12))
    assert run.finished_at == (pytest.approx(one_transfer_s(1e6)), pytest.approx(one_transfer_s(1e6)))


def test_two_transfers_queue_on_one_port():
    cluster = make_cluster(gpus_per_node=3, bandwidth=BANDWIDTH, latency=LATENCY, overhead=OVERHEAD)
    exchange = AllToAll.of("a2a", "a2a", (0, 1, 2), (Message(0, 1, 1e6), Message(0, 2, 3e6)))
    run = run_plan(hand_plan(cluster, [[exchange]] * 3), network=PORTS)
    transfers = run.timeline[run.timeline["kind"] == "transfer"].sort_values("started_at")
    first, second = one_transfer_s(1e6), one_transfer_s(3e6)
    assert list(transfers["dst"]) == [1, 2]
    assert list(transfers["started_at"]) == [0.0, pytest.approx(first)]
    assert list(transfers["finished_at"]) == [pytest.approx(first), pytest.approx(first + second)]
    assert max(run.finished_at) == pytest.approx(first + second)


def test_one_gemm_at_known_efficiency():
    table = (EfficiencyPoint(flops=1e6, efficiency=0.2), EfficiencyPoint(flops=1e12, efficiency=0.8))
    gpu = make_gpu(peak=1e12, memory_bandwidth=1e15, launch=4e-6, table=table)
    cluster = make_cluster(gpus_per_node=1, gpu=gpu)
    gemm = Kernel("gemm", "projection", flops=1e9, traffic_bytes=1e3)  # log-halfway: efficiency 0.5
    run = run_plan(hand_plan(cluster, [[gemm]]))
    host = run.timeline[run.timeline["stream"] == "host"].iloc[0]
    row = run.timeline[run.timeline["kind"] == "kernel"].iloc[0]
    assert (host.started_at, host.finished_at) == (0.0, pytest.approx(4e-6))  # the host issues it
    assert row.launch_s == pytest.approx(4e-6)  # the GPU waited for that: exposed host time
    assert row.finished_at - row.started_at == pytest.approx(4e-6 + 1e9 / (0.5 * 1e12))


def test_two_gpu_scatter_gather_by_hand():
    """E = 2 on 2 GPUs, one sequence each, no pre-expert block: send half, compute (norm, QKV, attention,
    out-projection, residual), send back."""
    gpu = make_gpu(peak=1e12, memory_bandwidth=1e18, launch=1e-6)
    cluster = make_cluster(gpus_per_node=2, bandwidth=BANDWIDTH, latency=LATENCY, overhead=OVERHEAD, gpu=gpu)
    d, n = 128, 64
    layer = make_layer(d_model=d, seq_len=n, batch=2, heads=2, dtype="fp32")
    arch = SectionalMoEArchitecture(kind="sectional_moe", pre_expert=PreExpertBlock(enabled=False), min_section_width=16)
    run = run_plan(sectional_plan(layer, arch, cluster, 2), network=PORTS)
    w = d // 2
    section_bytes = n * w * 4  # one sequence's section, fp32
    sequences_served = 2
    gemms_and_attention = 2 * 3 * n * w**2 + 2 * 2 * n**2 * w + 2 * n * w**2
    norm_and_residual = 5 * n * w + n * w
    expert_flops = sequences_served * (gemms_and_attention + norm_and_residual)
    # the host issues the scatter (1 us, the GPU waits for it), then the five expert kernels and the
    # gather while the scatter is in flight, so only the first issue is exposed
    assert one_transfer_s(section_bytes) > 6e-6
    expected = 1e-6 + 2 * one_transfer_s(section_bytes) + expert_flops / 1e12
    assert run.finished_at == (pytest.approx(expected, rel=1e-12), pytest.approx(expected, rel=1e-12))
    transfers = run.timeline[run.timeline["kind"] == "transfer"]
    assert sorted(zip(transfers["src"], transfers["dst"])) == [(0, 1), (0, 1), (1, 0), (1, 0)]
    assert set(transfers["bytes"]) == {section_bytes}


def test_four_gpu_all_to_all_with_known_sizes():
    """Sizes (s + d) % 3 + 1 MB; every message costs size / (1 GB/s) + 3 us.

    Ports serve messages in shift order: round r is s -> s + r. A message starts when the previous
    message on its sender's egress (s -> s + r - 1) and on its receiver's ingress
    (s + 1 -> s + r, round r - 1) have both finished. By hand, in ms:
      round 1: 0->1 [0, 2.003]    1->2 [0, 1.003]      2->3 [0, 3.003]      3->0 [0, 1.003]
      round 2: 0->2 [2.003, 5.006] 1->3 [3.003, 5.006] 2->0 [3.003, 6.006] 3->1 [2.003, 4.006]
      round 3: 0->3 [5.006, 6.009] 1->0 [6.006, 8.009] 2->1 [6.006, 7.009] 3->2 [5.006, 8.009]
    """
    cluster = make_cluster(gpus_per_node=4, bandwidth=BANDWIDTH, latency=LATENCY, overhead=OVERHEAD)
    size = {(s, d): 1e6 * (1 + (s + d) % 3) for s in range(4) for d in range(4) if s != d}
    messages = tuple(Message(s, d, size[(s, d)]) for (s, d) in size)
    run = run_plan(hand_plan(cluster, [[AllToAll.of("a2a", "a2a", (0, 1, 2, 3), messages)]] * 4), network=PORTS)
    expected_ms = {
        (0, 1): (0, 2.003),
        (1, 2): (0, 1.003),
        (2, 3): (0, 3.003),
        (3, 0): (0, 1.003),
        (0, 2): (2.003, 5.006),
        (1, 3): (3.003, 5.006),
        (2, 0): (3.003, 6.006),
        (3, 1): (2.003, 4.006),
        (0, 3): (5.006, 6.009),
        (1, 0): (6.006, 8.009),
        (2, 1): (6.006, 7.009),
        (3, 2): (5.006, 8.009),
    }
    transfers = run.timeline[run.timeline["kind"] == "transfer"].set_index(["src", "dst"])
    assert len(transfers) == 12
    for pair, (start_ms, finish_ms) in expected_ms.items():
        assert transfers.loc[pair, "started_at"] == pytest.approx(start_ms * 1e-3, rel=1e-9, abs=1e-15), pair
        assert transfers.loc[pair, "finished_at"] == pytest.approx(finish_ms * 1e-3, rel=1e-9), pair
    assert max(run.finished_at) == pytest.approx(8.009e-3, rel=1e-9)


def test_uniform_four_gpu_all_to_all_takes_three_message_times():
    cluster = make_cluster(gpus_per_node=4, bandwidth=BANDWIDTH, latency=LATENCY, overhead=OVERHEAD)
    messages = tuple(Message(s, d, 1e6) for s in range(4) for d in range(4) if s != d)
    run = run_plan(hand_plan(cluster, [[AllToAll.of("a2a", "a2a", (0, 1, 2, 3), messages)]] * 4), network=PORTS)
    assert max(run.finished_at) == pytest.approx(3 * one_transfer_s(1e6), rel=1e-12)


def test_ring_all_reduce_steps():
    cluster = make_cluster(gpus_per_node=4, bandwidth=BANDWIDTH, latency=LATENCY, overhead=OVERHEAD)
    reduce = AllReduce("ar", "ar", (0, 1, 2, 3), 4e6)
    run = run_plan(hand_plan(cluster, [[reduce]] * 4), network=PORTS)
    steps = 2 * (4 - 1)
    assert max(run.finished_at) == pytest.approx(steps * one_transfer_s(1e6))
    assert len(run.timeline[run.timeline["kind"] == "transfer"]) == 4 * steps


def test_pcie_without_peer_to_peer_stages_through_host():
    fabric = make_pcie(peer_to_peer=False, link=2e9, bridge=1e9, latency=LATENCY)
    cluster = make_cluster(gpus_per_node=2, overhead=OVERHEAD, fabric=fabric)
    exchange = AllToAll.of("a2a", "a2a", (0, 1), (Message(0, 1, 1e6),))
    run = run_plan(hand_plan(cluster, [[exchange], [exchange]]), network=PORTS)
    hop = LATENCY + 1e6 / 1e9
    assert max(run.finished_at) == pytest.approx(OVERHEAD + 2 * hop)


def test_pcie_host_bridge_serialises_cross_switch_messages():
    fabric = make_pcie(peer_to_peer=True, link=2e9, bridge=1e9, latency=LATENCY, gpus_per_switch=1)
    cluster = make_cluster(gpus_per_node=4, overhead=OVERHEAD, fabric=fabric)
    exchange = AllToAll.of("a2a", "a2a", (0, 1, 2, 3), (Message(0, 1, 1e6), Message(2, 3, 1e6)))
    run = run_plan(hand_plan(cluster, [[exchange]] * 4), network=PORTS)
    one = OVERHEAD + LATENCY + 1e6 / 1e9
    assert max(run.finished_at) == pytest.approx(2 * one)  # disjoint GPUs, one shared bridge


def host_bound_plan(host_s: float, kernel_s: float, kernels: int, depth: int = 1024):
    gpu = make_gpu(peak=1e12, memory_bandwidth=1e18, launch=0.0).model_copy(
        update={"host_overhead_per_op": host_s, "launch_queue_depth": depth}
    )
    cluster = make_cluster(gpus_per_node=1, gpu=gpu)
    return hand_plan(cluster, [[Kernel(f"k{i}", "pre", flops=kernel_s * 1e12, traffic_bytes=0.0) for i in range(kernels)]])


def test_a_host_slower_than_every_kernel_sets_the_pace():
    """Host 10 us per op, kernels 1 us: the GPU runs each kernel as soon as it is issued, K x 10 us + 1 us."""
    run = run_plan(host_bound_plan(10e-6, 1e-6, 5))
    assert max(run.finished_at) == pytest.approx(5 * 10e-6 + 1e-6)
    kernels = run.timeline[run.timeline["kind"] == "kernel"]
    assert kernels["launch_s"].sum() == pytest.approx(5 * 10e-6 - 4 * 1e-6)  # every wait but the kernels' own time


def test_a_host_faster_than_every_kernel_is_hidden_after_the_first_launch():
    """Host 1 us per op, kernels 10 us: only the first issue is exposed, 1 us + K x 10 us."""
    run = run_plan(host_bound_plan(1e-6, 10e-6, 5))
    assert max(run.finished_at) == pytest.approx(1e-6 + 5 * 10e-6)
    kernels = run.timeline[run.timeline["kind"] == "kernel"].sort_values("started_at")
    assert kernels["launch_s"].tolist() == pytest.approx([1e-6, 0, 0, 0, 0], abs=1e-15)
    host = run.timeline[run.timeline["stream"] == "host"]
    assert host["finished_at"].max() == pytest.approx(5e-6)  # the host ran ahead


def test_the_host_runs_at_most_queue_depth_ops_ahead():
    """Queue depth 2, host 1 us, kernels 10 us: issue 3 waits for kernel 1 to finish (at 11 us)."""
    run = run_plan(host_bound_plan(1e-6, 10e-6, 4, depth=2))
    host = run.timeline[run.timeline["stream"] == "host"].sort_values("started_at")
    assert host["started_at"].tolist() == pytest.approx([0, 1e-6, 11e-6, 21e-6])
    assert max(run.finished_at) == pytest.approx(1e-6 + 4 * 10e-6)
