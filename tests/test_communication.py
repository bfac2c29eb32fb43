"""Communication stacks and fabrics: hand-computed timelines and properties.

Two GPUs on one NVSwitch (ports of ``B`` = 100 GB/s per direction, latency ``L`` = 1 us) exchange
one message of ``S`` bytes each way. By the stack models (docs/model.md, section 4.2):

* host_staged, overhead ``o``: ``o + L + S / B``;
* gpu_initiated, kernel ``K``, per-peer ``p``, efficiency ``e(S)``: ``K + p + L + S / (e(S) B)``;
* nccl with one protocol (launch ``l``, step latency ``h`` >= ``L``, bandwidth fraction ``f``):
  ``l + h + S / (f B)``; a ring all-reduce among ``n`` of buffer ``V``: ``l + 2 (n - 1) (h + V / (n f B))``.
"""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from conftest import hand_plan, make_gpu
from hypothesis import given
from hypothesis import strategies as st
from test_network_invariants import FAST, checking_observer, transfers

from secmoe_sim import load_scenario, simulate
from secmoe_sim.engine import run_plan
from secmoe_sim.errors import ScenarioError
from secmoe_sim.plan.communication import Shape, collective_cost, efficiency, one_message_s, price_collective
from secmoe_sim.plan.steps import AllReduce, AllToAll, Message
from secmoe_sim.plan.topology import Topology, ecmp_spine
from secmoe_sim.spec.communication import (
    Communication,
    EfficiencyKnot,
    GpuInitiatedStack,
    HostStagedStack,
    NcclStack,
    Protocol,
)
from secmoe_sim.spec.hardware import Cluster, FullMeshFabric, InterNodeFabric, NVSwitchFabric
from secmoe_sim.spec.network import NetworkOptions

B = 100e9
L = 1e-6
S = 1e6
FLOWS = NetworkOptions(model="flows", mode="exact", all_to_all="direct")
PORTS = NetworkOptions(model="ports", all_to_all="direct")


def nvswitch_cluster(gpus: int = 2, nodes: int = 1, inter: InterNodeFabric | None = None) -> Cluster:
    return Cluster(
        gpu=make_gpu(),
        nodes=nodes,
        gpus_per_node=gpus,
        intra_node=NVSwitchFabric(kind="nvswitch", bandwidth_per_direction=B, latency=L),
        inter_node=inter,
    )


def exchange(gpus: tuple[int, ...], size: float) -> AllToAll:
    return AllToAll.of("a2a", "a2a", gpus, tuple(Message(s, d, size) for s in gpus for d in gpus if s != d))


def exchange_s(cluster: Cluster, stack, size: float = S, network: NetworkOptions = FLOWS) -> float:
    gpus = tuple(range(cluster.num_gpus))
    plan = hand_plan(cluster, [[exchange(gpus, size)]] * len(gpus))
    return max(run_plan(plan, network=network, communication=Communication(default=stack)).finished_at)


SIMPLE = Protocol(name="Simple", launch=8e-6, step_latency={"nvswitch": 3e-6, "network": 6e-6}, bandwidth_fraction=0.5)


@pytest.mark.parametrize("network", [FLOWS, PORTS], ids=["flows", "ports"])
def test_two_rank_exchange_host_staged(network):
    stack = HostStagedStack(kind="host_staged", message_overhead=5e-6)
    assert exchange_s(nvswitch_cluster(), stack, network=network) == pytest.approx(5e-6 + L + S / B, rel=1e-12)


@pytest.mark.parametrize("network", [FLOWS, PORTS], ids=["flows", "ports"])
def test_two_rank_exchange_gpu_initiated_with_an_efficiency_curve(network):
    curve = [EfficiencyKnot(size=1e3, efficiency=0.5), EfficiencyKnot(size=1e6, efficiency=0.8)]
    stack = GpuInitiatedStack(kind="gpu_initiated", kernel=10e-6, per_peer=2e-6, efficiency={"nvswitch": curve})
    assert exchange_s(nvswitch_cluster(), stack, network=network) == pytest.approx(10e-6 + 2e-6 + L + S / (0.8 * B), rel=1e-12)
    # 1e4 bytes is a third of the way from 1e3 to 1e6 in log size: efficiency 0.6
    assert exchange_s(nvswitch_cluster(), stack, 1e4, network) == pytest.approx(13e-6 + 1e4 / (0.6 * B), rel=1e-12)


@pytest.mark.parametrize("network", [FLOWS, PORTS], ids=["flows", "ports"])
def test_two_rank_exchange_nccl_one_protocol(network):
    stack = NcclStack(kind="nccl", protocols=[SIMPLE])
    assert exchange_s(nvswitch_cluster(), stack, network=network) == pytest.approx(8e-6 + 3e-6 + S / (0.5 * B), rel=1e-12)


@pytest.mark.parametrize("network", [FLOWS, PORTS], ids=["flows", "ports"])
def test_nccl_all_to_all_sends_small_messages_by_ll_and_large_ones_by_simple(network):
    """NCCL's point-to-point rule, per message: LL up to 16 KiB (its launch, step latency and quarter
    bandwidth), Simple above; never LL128, even where NCCL's ring rule would predict it fastest."""
    stack = NcclStack(kind="nccl")
    ll, ll128, simple = stack.protocols
    assert stack.p2p_ll_threshold == 16384
    small, large = 16384.0, 16385.0
    assert exchange_s(nvswitch_cluster(), stack, small, network) == pytest.approx(
        ll.launch + L + small / (ll.bandwidth_fraction * B), rel=1e-12
    )
    assert exchange_s(nvswitch_cluster(), stack, large, network) == pytest.approx(
        simple.launch + simple.step_latency["nvswitch"] + large / B, rel=1e-12
    )
    # over the network, a stack whose LL is slow: rings of small buffers take LL128, the all-to-all does not
    slow_ll = ll.model_copy(update={"step_latency": {**ll.step_latency, "network": 20e-6}})
    slow = NcclStack(kind="nccl", protocols=[slow_ll, ll128, simple])
    two_nodes = nvswitch_cluster(gpus=1, nodes=2, inter=InterNodeFabric(nic_bandwidth_per_direction=B, latency=L))
    assert exchange_s(two_nodes, slow, 64.0) == pytest.approx(slow_ll.launch + 20e-6 + 64 / (0.25 * 0.7 * B), rel=1e-12)
    assert collective_cost(slow, Shape("all_gather", 8, 64.0, "network", B)).protocol_name == "LL128"
    # NCCL_P2P_LL_THRESHOLD=0: every non-empty message by Simple
    never_ll = NcclStack(kind="nccl", p2p_ll_threshold=0)
    assert exchange_s(nvswitch_cluster(), never_ll, 64.0, network) == pytest.approx(
        simple.launch + simple.step_latency["nvswitch"] + 64 / B, rel=1e-12
    )


def test_nccl_all_to_all_prices_each_message_by_its_own_size():
    """One exchange of a 1 KiB and a 1 MB message: each pays its own protocol's latency and share; the
    exchange starts after Simple's launch (it has a large message)."""
    stack = NcclStack(kind="nccl")
    ll, _, simple = stack.protocols
    cost = price_collective(
        Communication(default=stack),
        AllToAll.of("a2a", "a2a", (0, 1), (Message(0, 1, 1024.0), Message(1, 0, 1e6))),
        Topology(nvswitch_cluster()),
    )
    priced = cost.messages(np.array([1024.0, 1e6]), np.array(["nvswitch", "nvswitch"]))
    assert cost.start_s == simple.launch
    assert priced.latency_floor_s.tolist() == [ll.step_latency["nvswitch"], simple.step_latency["nvswitch"]]
    assert priced.wire_factor.tolist() == [1 / ll.bandwidth_fraction, 1 / simple.bandwidth_fraction]


def test_nccl_nodes_of_one_rank_send_and_receive_through_one_nic_at_its_discount():
    """Two nodes of one GPU each: the exchange's bytes cross the NIC at ``single_rank_node_bandwidth`` of
    the protocol's share (NCCL's tuning model: 0.7); nodes of two GPUs each pay no discount."""
    inter = InterNodeFabric(nic_bandwidth_per_direction=B, latency=L)
    stack = NcclStack(kind="nccl", protocols=[SIMPLE])
    one_rank = nvswitch_cluster(gpus=1, nodes=2, inter=inter)
    assert exchange_s(one_rank, stack) == pytest.approx(8e-6 + 6e-6 + S / (0.7 * 0.5 * B), rel=1e-9)
    assert stack.single_rank_node_bandwidth == 0.7
    two_ranks = nvswitch_cluster(gpus=2, nodes=2, inter=inter)
    ring = AllReduce("ar", "ar", (0, 1, 2, 3), 4e6)
    run = run_plan(hand_plan(two_ranks, [[ring]] * 4), communication=Communication(default=stack))
    undiscounted = NcclStack(kind="nccl", protocols=[SIMPLE], single_rank_node_bandwidth=1.0)
    again = run_plan(hand_plan(two_ranks, [[ring]] * 4), communication=Communication(default=undiscounted))
    assert max(run.finished_at) == max(again.finished_at)


def test_nccl_ring_all_reduce_pays_the_launch_once_and_the_step_latency_per_step():
    cluster = nvswitch_cluster(gpus=4)
    ring = AllReduce("ar", "ar", (0, 1, 2, 3), 4e6)
    run = run_plan(
        hand_plan(cluster, [[ring]] * 4), communication=Communication(default=NcclStack(kind="nccl", protocols=[SIMPLE]))
    )
    assert max(run.finished_at) == pytest.approx(8e-6 + 6 * (3e-6 + 1e6 / (0.5 * B)), rel=1e-12)


def test_nccl_chooses_low_latency_for_small_and_simple_for_large_collectives():
    stack = NcclStack(kind="nccl")
    small = collective_cost(stack, Shape("all_reduce", 8, 8.0, "nvswitch", B))
    large = collective_cost(stack, Shape("all_reduce", 8, 1e9, "nvswitch", B))
    assert (small.protocol_name, large.protocol_name) == ("LL", "Simple")
    # LL128 is not used off NVLink: a PCIe all-reduce of a medium buffer goes LL or Simple
    assert collective_cost(stack, Shape("all_reduce", 8, 4e6, "pcie", 25e9)).protocol_name in ("LL", "Simple")
    # the time of an 8-byte exchange between two GPUs: LL's launch, then its step latency or the switch's
    assert one_message_s(stack, Topology(nvswitch_cluster()), 0, 1, 8.0) == pytest.approx(3.6e-6 + L + 8 * 4 / B, rel=1e-9)


def test_efficiency_curve_is_log_interpolated_and_clamped():
    curve = [EfficiencyKnot(size=1e3, efficiency=0.2), EfficiencyKnot(size=1e5, efficiency=0.6)]
    assert efficiency(curve, 1e4) == pytest.approx(0.4)
    assert efficiency(curve, 1.0) == 0.2 and efficiency(curve, 1e9) == 0.6
    assert efficiency(None, 123.0) == 1.0
    with pytest.raises(ValueError, match="strictly increasing"):
        GpuInitiatedStack(kind="gpu_initiated", kernel=0, per_peer=0, efficiency={"nvswitch": list(reversed(curve))})


def test_gpu_initiated_exchange_is_flat_in_rank_count_where_a_serial_stack_is_not():
    """One GPU per node on a non-blocking fabric, 64 MB sent per rank whatever the rank count."""
    stack = GpuInitiatedStack(kind="gpu_initiated", kernel=20e-6, per_peer=1e-6)
    serial = HostStagedStack(kind="host_staged", message_overhead=5e-6)
    per_rank_bytes = 64e6
    times, serial_times = [], []
    for ranks in (8, 16, 32, 64):
        cluster = Cluster(
            gpu=make_gpu(),
            nodes=ranks,
            gpus_per_node=1,
            intra_node=NVSwitchFabric(kind="nvswitch", bandwidth_per_direction=B, latency=L),
            inter_node=InterNodeFabric(nic_bandwidth_per_direction=50e9, latency=2e-6),
        )
        size = per_rank_bytes / (ranks - 1)
        times.append(exchange_s(cluster, stack, size))
        serial_times.append(exchange_s(cluster, serial, size))
    assert max(times) / min(times) - 1 < 1e-9
    assert times[0] == pytest.approx(20e-6 + 1e-6 + 2e-6 + per_rank_bytes / 50e9, rel=1e-9)
    assert serial_times[-1] - serial_times[0] == pytest.approx((63 - 7) * 5e-6, rel=1e-9)


def test_full_mesh_exchange_uses_every_pair_link_at_once():
    """Four GPUs, a link of b per ordered pair: each sends S to each other GPU over its own link, all at
    once: L + S / b. On an NVSwitch with ports of b the three messages share a port: L + 3 S / b."""
    mesh = Cluster(
        gpu=make_gpu(),
        nodes=1,
        gpus_per_node=4,
        intra_node=FullMeshFabric(kind="full_mesh", link_bandwidth_per_direction=B, latency=L),
    )
    free = GpuInitiatedStack(kind="gpu_initiated", kernel=0, per_peer=0)
    assert Topology(mesh).num_links == 12
    for network in (FLOWS, PORTS):
        assert exchange_s(mesh, free, network=network) == pytest.approx(L + S / B, rel=1e-12)
    assert exchange_s(nvswitch_cluster(gpus=4), free, network=FLOWS) == pytest.approx(L + 3 * S / B, rel=1e-12)
    # the port model serves a port's messages one after another, each with its latency
    assert exchange_s(nvswitch_cluster(gpus=4), free, network=PORTS) == pytest.approx(3 * (L + S / B), rel=1e-12)
    assert Topology(mesh).link_classes(np.array([0]), np.array([1])).tolist() == ["full_mesh"]


def test_shared_nics_carry_every_gpu_of_their_half_of_the_node():
    """Two nodes of 4 GPUs and 2 NICs each: GPUs 0 and 1 share NIC 0. Every GPU of node 0 sends S to its
    counterpart on node 1: each NIC carries 2 S, so the exchange takes L + 2 S / nic."""
    inter = InterNodeFabric(nic_bandwidth_per_direction=50e9, latency=L, nics_per_node=2)
    cluster = nvswitch_cluster(gpus=4, nodes=2, inter=inter)
    names = Topology(cluster).names
    assert "n0.nic0.out" in names and "n1.nic1.in" in names and not any(n.startswith("g0.nic") for n in names)
    messages = tuple(Message(g, g + 4, S) for g in range(4))
    plan = hand_plan(cluster, [[AllToAll.of("x", "x", tuple(range(8)), messages)]] * 8)
    free = Communication(default=GpuInitiatedStack(kind="gpu_initiated", kernel=0, per_peer=0))
    assert max(run_plan(plan, network=FLOWS, communication=free).finished_at) == pytest.approx(L + 2 * S / 50e9, rel=1e-12)
    with pytest.raises(ValueError, match="do not split"):
        nvswitch_cluster(gpus=4, nodes=2, inter=inter.model_copy(update={"nics_per_node": 3}))


def test_leaf_spine_options_need_leaves():
    with pytest.raises(ValueError, match="nodes_per_leaf"):
        InterNodeFabric(nic_bandwidth_per_direction=1e9, latency=L, oversubscription=2)


def leaf_spine_cluster(nodes: int, per_node: int, nodes_per_leaf: int | None, **fabric) -> Cluster:
    inter = InterNodeFabric(nic_bandwidth_per_direction=25e9, latency=L, nodes_per_leaf=nodes_per_leaf, **fabric)
    return nvswitch_cluster(gpus=per_node, nodes=nodes, inter=inter)


def test_oversubscribed_uplinks_halve_the_cross_leaf_rate():
    """Four single-GPU nodes, two per leaf, oversubscription 2: GPUs 0 and 1 both send S across the
    spine to GPUs 2 and 3. The leaf's uplink carries 2 x 25 / 2 = 25 GB/s for both: 2 S / 25 GB/s."""
    messages = (Message(0, 2, S), Message(1, 3, S))
    free = Communication(default=GpuInitiatedStack(kind="gpu_initiated", kernel=0, per_peer=0))
    for oversubscription, expected in ((1.0, S / 25e9), (2.0, 2 * S / 25e9)):
        cluster = leaf_spine_cluster(4, 1, 2, oversubscription=oversubscription)
        plan = hand_plan(cluster, [[AllToAll.of("x", "x", (0, 1, 2, 3), messages)]] * 4)
        assert max(run_plan(plan, network=FLOWS, communication=free).finished_at) == pytest.approx(L + expected, rel=1e-12)


def test_rail_optimized_leaves_keep_same_rail_traffic_off_the_spine():
    cluster = leaf_spine_cluster(4, 2, 2, rail_optimized=True, oversubscription=4)
    topology = Topology(cluster)
    same_rail = topology.route(0, 2)[0].links  # GPU 0 (node 0, rail 0) -> GPU 2 (node 1, rail 0): one leaf
    other_rail = topology.route(0, 3)[0].links  # rail 0 -> rail 1: up to the spine and down
    assert len(same_rail) == 2 and len(other_rail) == 4


def test_ecmp_pins_each_pair_to_one_spine_and_uses_all_of_them():
    spines = [ecmp_spine(s, d, 4) for s in range(16) for d in range(16) if s != d]
    assert set(spines) == {0, 1, 2, 3}
    assert ecmp_spine(3, 5, 4) == ecmp_spine(3, 5, 4)
    assert ecmp_spine(3, 5, 1) == 0


@st.composite
def leaf_spine_layers(draw):
    nodes = draw(st.integers(2, 6))
    per_node = draw(st.sampled_from([1, 2, 4]))
    fabric = {
        "nodes_per_leaf": draw(st.integers(1, nodes)),
        "oversubscription": draw(st.sampled_from([1.0, 1.5, 2.0, 4.0])),
        "rail_optimized": draw(st.booleans()),
        "spines": draw(st.integers(1, 4)),
        "ecmp": draw(st.booleans()),
    }
    if per_node > 1 and draw(st.booleans()):
        fabric["nics_per_node"] = per_node // 2
    cluster = leaf_spine_cluster(nodes, per_node, **fabric)
    gpus = cluster.num_gpus
    sizes = draw(st.lists(st.sampled_from([0.0, 1e4, 1e6, 3e6]), min_size=gpus * gpus, max_size=gpus * gpus))
    matrix = np.array(sizes).reshape(gpus, gpus)
    return cluster, AllToAll.from_matrix("a2a", "a2a", tuple(range(gpus)), matrix)


@FAST
@given(leaf_spine_layers())
def test_leaf_spine_conserves_bytes_respects_capacity_and_is_never_faster_than_non_blocking(case):
    cluster, collective = case
    gpus = cluster.num_gpus
    plan = hand_plan(cluster, [[collective]] * gpus)
    failures: list[str] = []
    run = run_plan(plan, network=FLOWS, observer=checking_observer(True, failures))
    assert not failures, failures[:3]
    moved = transfers(run)
    assert len(moved) == len(collective.messages)
    assert moved["bytes"].sum() == pytest.approx(collective.messages.payload_bytes.sum(), rel=1e-12)
    inter = cluster.inter_node
    assert inter is not None
    flat = cluster.model_copy(update={"inter_node": InterNodeFabric(**{**inter.model_dump(), **NON_BLOCKING})})
    # On the port model (a max-plus system) less capacity never makes anything earlier. Max-min fair
    # sharing is not monotone: a congested uplink can slow some flows enough that a NIC they shared
    # serves another flow sooner (this test found a burst ending 0.06% earlier), so on flows the
    # property is checked on uniform exchanges below.
    blocking_s = max(run_plan(plan, network=PORTS).finished_at)
    non_blocking_s = max(run_plan(hand_plan(flat, [[collective]] * gpus), network=PORTS).finished_at)
    assert blocking_s >= non_blocking_s * (1 - 1e-9)


@pytest.mark.parametrize("rail_optimized", [False, True])
def test_uniform_exchange_on_flows_slows_with_oversubscription(rail_optimized):
    free = Communication(default=GpuInitiatedStack(kind="gpu_initiated", kernel=0, per_peer=0))
    times = []
    for oversubscription in (1.0, 1.5, 2.0, 4.0):
        cluster = leaf_spine_cluster(4, 2, 1, oversubscription=oversubscription, rail_optimized=rail_optimized)
        plan = hand_plan(cluster, [[exchange(tuple(range(8)), S)]] * 8)
        times.append(max(run_plan(plan, network=FLOWS, communication=free).finished_at))
    assert times == sorted(times) and times[-1] > times[0]


NON_BLOCKING = {"nodes_per_leaf": None, "oversubscription": 1.0, "rail_optimized": False, "spines": 1, "ecmp": False}


def test_an_entry_may_name_its_own_stack(tmp_path):
    scenario = load_scenario("h100-nvlink-8")
    slow = HostStagedStack(kind="host_staged", message_overhead=1e-3)
    label = scenario.workload.architectures[0].name
    stacks = scenario.stacks.model_copy(update={"architectures": {label: slow}})
    changed = scenario.model_copy(update={"communication": stacks})
    base_rows = simulate(scenario).summary.set_index(["label", "placement", "num_experts"])
    changed_rows = simulate(changed).summary.set_index(["label", "placement", "num_experts"])
    others = base_rows.index.get_level_values("label") != label
    assert (changed_rows.loc[~others, "wall_clock_s"] > base_rows.loc[~others, "wall_clock_s"]).any()
    assert changed_rows.loc[others, "wall_clock_s"].to_numpy() == pytest.approx(base_rows.loc[others, "wall_clock_s"].to_numpy())
    bad = tmp_path / "bad.yaml"
    data = scenario.model_dump(mode="json")
    data["communication"] = {"architectures": {"nope": {"kind": "host_staged", "message_overhead": "1 us"}}}
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ScenarioError, match="no architecture entry is named 'nope'"):
        load_scenario(str(bad))
