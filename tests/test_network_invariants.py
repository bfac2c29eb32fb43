"""Invariants of the flow network over random topologies and byte matrices (hypothesis)."""

from __future__ import annotations

import numpy as np
from conftest import hand_plan, make_gpu
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secmoe_sim.engine import run_plan
from secmoe_sim.engine.network.maxmin import max_min_rates
from secmoe_sim.plan.costs import Kernel
from secmoe_sim.plan.steps import AllGather, AllReduce, AllToAll, LayerPlan, ReduceScatter
from secmoe_sim.spec.hardware import Cluster
from secmoe_sim.spec.network import NetworkOptions

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALGORITHMS = ("direct", "pairwise", "hierarchical")


@st.composite
def clusters(draw) -> Cluster:
    nodes = draw(st.integers(1, 3))
    per_node = draw(st.integers(1 if nodes > 1 else 2, 4))
    bandwidth = st.sampled_from([1e9, 2e9, 5e9])
    if draw(st.booleans()):
        intra = {"kind": "nvswitch", "bandwidth_per_direction": draw(bandwidth), "latency": draw(st.sampled_from([0.0, 1e-6]))}
    else:
        sockets = draw(st.sampled_from([1, 2])) if per_node % 2 == 0 else 1
        intra = {
            "kind": "pcie",
            "link_bandwidth_per_direction": draw(bandwidth),
            "host_bridge_bandwidth_per_direction": draw(bandwidth),
            "latency": draw(st.sampled_from([0.0, 2e-6])),
            "peer_to_peer": draw(st.booleans()),
            "gpus_per_switch": draw(st.integers(1, 2)),
            "sockets": sockets,
            "inter_socket_bandwidth_per_direction": draw(bandwidth) if sockets == 2 else None,
        }
    inter = None
    if nodes > 1:
        inter = {"nic_bandwidth_per_direction": draw(bandwidth), "latency": draw(st.sampled_from([0.0, 3e-6]))}
        if intra["kind"] == "nvswitch" and draw(st.booleans()):
            inter["gpu_nic_pcie_bandwidth_per_direction"] = draw(bandwidth)
    return Cluster.model_validate(
        {
            "gpu": make_gpu(peak=1e12).model_dump(),
            "nodes": nodes,
            "gpus_per_node": per_node,
            "intra_node": intra,
            "inter_node": inter,
            "message_overhead": draw(st.sampled_from([0.0, 1e-6, 5e-6])),
        }
    )


@st.composite
def layers(draw) -> LayerPlan:
    """One all-to-all(-v) of a random byte matrix, its transpose after a random kernel per GPU, and
    sometimes a ring collective over all GPUs."""
    cluster = draw(clusters())
    gpus = cluster.num_gpus
    sizes = draw(st.lists(st.sampled_from([0.0, 0.0, 1e3, 2e5, 1e6, 3e6]), min_size=gpus * gpus, max_size=gpus * gpus))
    matrix = np.array(sizes).reshape(gpus, gpus)
    exchange = AllToAll.from_matrix("a2a", "a2a", tuple(range(gpus)), matrix)
    back = exchange.transposed()
    flops = draw(st.lists(st.sampled_from([0.0, 1e6, 1e8, 1e9]), min_size=gpus, max_size=gpus))
    ring = draw(st.sampled_from([(), (AllReduce,), (AllGather,), (ReduceScatter,)]))
    tail = tuple(kind("ring", "ring", tuple(range(gpus)), draw(st.sampled_from([1e4, 4e6]))) for kind in ring)
    programs = tuple((exchange, Kernel("work", "ffn", f, 0.0), back) + tail for f in flops)
    return hand_plan(cluster, programs)


def options(draw_algorithm: str, mode: str = "exact", tolerance: float = 0.05) -> NetworkOptions:
    return NetworkOptions(model="flows", mode=mode, tolerance=tolerance, all_to_all=draw_algorithm)


def checking_observer(exact: bool, failures: list[str]):
    """Checks the flow table at every rate change: capacities, and in exact mode max-min itself."""

    def observe(now: float, table) -> None:
        slots = table.active_slots()
        if slots.size == 0:
            return
        links, weights, rates = table.links[slots], table.weights[slots], table.rate_bytes_per_s[slots]
        width = links.shape[1]
        load = np.bincount(links.ravel(), weights=np.repeat(rates * weights, width), minlength=table.sentinel + 1)[:-1]
        capacity = table.capacity_bytes_per_s[:-1]
        if (load > capacity * (1 + 1e-9)).any():
            failures.append(f"t={now}: link over capacity: {np.max(load / capacity)}")
        if not np.allclose(load, table.link_load_bytes_per_s[:-1], rtol=1e-9, atol=1e-9 * capacity.max()):
            failures.append(f"t={now}: tracked link loads drifted")
        if exact:
            fair = max_min_rates(links, weights, table.capacity_bytes_per_s)
            if not np.allclose(rates, fair, rtol=1e-9):
                failures.append(f"t={now}: rates are not max-min fair: {rates} vs {fair}")
            counts = np.bincount(links.ravel(), weights=np.repeat(weights, width), minlength=table.sentinel + 1)
            equal_share = (table.capacity_bytes_per_s / np.maximum(counts, 1))[links].min(axis=1)
            if (rates < equal_share * (1 - 1e-9)).any():
                failures.append(f"t={now}: a flow below its equal share")

    return observe


def transfers(run):
    return run.timeline[run.timeline["kind"] == "transfer"]


@FAST
@given(layers(), st.sampled_from(ALGORITHMS))
def test_every_flow_gets_its_max_min_share_and_no_link_is_over_capacity(plan, algorithm):
    failures: list[str] = []
    run_plan(plan, network=options(algorithm), observer=checking_observer(True, failures))
    assert not failures, failures[:3]


@FAST
@given(layers(), st.sampled_from(ALGORITHMS), st.sampled_from([0.05, 0.2, 0.5]))
def test_batched_mode_never_exceeds_a_link(plan, algorithm, tolerance):
    failures: list[str] = []
    run = run_plan(plan, network=options(algorithm, "batched", tolerance), observer=checking_observer(False, failures))
    assert not failures, failures[:3]
    assert np.isfinite(max(run.finished_at))


@FAST
@given(layers(), st.sampled_from(ALGORITHMS))
def test_bytes_sent_equal_bytes_received(plan, algorithm):
    """Per GPU, bytes received minus bytes sent is what the matrix says it should end with; direct and
    pairwise also move exactly the matrix, pair by pair (hierarchical forwards through proxies)."""
    run = run_plan(plan, network=options(algorithm))
    exchange = plan.programs[0][0]
    gpus = plan.cluster.num_gpus
    matrix = np.zeros((gpus, gpus))
    np.add.at(matrix, (exchange.messages.src, exchange.messages.dst), exchange.messages.payload_bytes)
    for collective, expected in (("a2a", matrix), ("a2a.backward", matrix.T)):
        rows = transfers(run)[transfers(run)["label"] == collective]
        received = rows.groupby("dst")["bytes"].sum().reindex(range(gpus), fill_value=0.0).to_numpy()
        sent = rows.groupby("src")["bytes"].sum().reindex(range(gpus), fill_value=0.0).to_numpy()
        assert np.allclose(received - sent, expected.sum(axis=0) - expected.sum(axis=1), rtol=1e-12, atol=1e-3)
        if algorithm != "hierarchical":
            moved = np.zeros((gpus, gpus))
            np.add.at(moved, (rows["src"].to_numpy(), rows["dst"].to_numpy()), rows["bytes"].to_numpy())
            assert np.allclose(moved, expected, rtol=1e-12)
        assert (rows["finished_at"] >= rows["started_at"]).all()


def doubled(cluster: Cluster) -> Cluster:
    """Every link bandwidth of ``cluster`` times two."""
    intra = cluster.intra_node
    fields = (
        "bandwidth_per_direction",
        "link_bandwidth_per_direction",
        "host_bridge_bandwidth_per_direction",
        "inter_socket_bandwidth_per_direction",
    )
    intra = intra.model_copy(update={f: 2 * getattr(intra, f) for f in fields if getattr(intra, f, None) is not None})
    update = {"intra_node": intra}
    if cluster.inter_node is not None:
        nic = cluster.inter_node
        nic_fields = ("nic_bandwidth_per_direction", "gpu_nic_pcie_bandwidth_per_direction")
        update["inter_node"] = nic.model_copy(update={f: 2 * getattr(nic, f) for f in nic_fields if getattr(nic, f) is not None})
    return cluster.model_copy(update=update)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers(), st.sampled_from(ALGORITHMS))
def test_doubling_every_bandwidth_never_makes_a_collective_slower(plan, algorithm):
    faster = LayerPlan(**{**plan.__dict__, "cluster": doubled(plan.cluster)})
    slow = run_plan(plan, network=options(algorithm))
    fast = run_plan(faster, network=options(algorithm))
    assert max(fast.finished_at) <= max(slow.finished_at) * (1 + 1e-9)


@FAST
@given(layers(), st.sampled_from(ALGORITHMS))
def test_batched_with_zero_tolerance_equals_exact(plan, algorithm):
    exact = run_plan(plan, network=options(algorithm, "exact"))
    batched = run_plan(plan, network=options(algorithm, "batched", 0.0))
    assert exact.timeline.equals(batched.timeline)
    assert exact.finished_at == batched.finished_at
