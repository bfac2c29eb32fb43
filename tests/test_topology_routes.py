"""The routes of many messages in arrays (``Topology.routes``) are the routes of ``Topology.route``, pair by pair.

``routes`` builds NVSwitch routes and NIC routes between NVSwitch or full-mesh nodes in whole arrays,
which is what this compares with ``route``; pairs of other fabrics it takes from ``route`` itself, so for
them the test checks only their packing into the arrays (stage count, padding, the latency floor)."""

from __future__ import annotations

import numpy as np
from conftest import make_gpu
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secmoe_sim.plan.topology import Topology, with_latency_floor
from secmoe_sim.spec.hardware import Cluster

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def clusters(draw) -> Cluster:
    """Every fabric the topology builds: NVSwitch, full mesh and PCIe nodes; NICs per GPU or shared, through
    PCIe or not; one switch or leaf-spine, rail-optimised or not, with or without ECMP."""
    nodes = draw(st.integers(1, 6))
    per_node = draw(st.sampled_from([1, 2, 4])) if nodes > 1 else draw(st.sampled_from([2, 4]))
    kind = draw(st.sampled_from(["nvswitch", "full_mesh", "pcie"]))
    if kind == "nvswitch":
        intra: dict = {"kind": kind, "bandwidth_per_direction": 1e9, "latency": draw(st.sampled_from([0.0, 1e-6]))}
    elif kind == "full_mesh":
        intra = {"kind": kind, "link_bandwidth_per_direction": 1e9, "latency": 2e-6}
    else:
        sockets = draw(st.sampled_from([1, 2])) if per_node % 2 == 0 else 1
        intra = {
            "kind": kind,
            "link_bandwidth_per_direction": 1e9,
            "host_bridge_bandwidth_per_direction": 2e9,
            "latency": 1e-6,
            "peer_to_peer": draw(st.booleans()),
            "gpus_per_switch": 1,
            "sockets": sockets,
            "inter_socket_bandwidth_per_direction": 1e9 if sockets == 2 else None,
        }
    inter = None
    if nodes > 1:
        inter = {"nic_bandwidth_per_direction": 1e9, "latency": draw(st.sampled_from([0.0, 3e-6]))}
        if kind != "pcie" and draw(st.booleans()):
            inter["gpu_nic_pcie_bandwidth_per_direction"] = 2e9
        if per_node > 1 and draw(st.booleans()):
            inter["nics_per_node"] = per_node // 2
        if draw(st.booleans()):
            inter["nodes_per_leaf"] = draw(st.integers(1, 3))
            inter["rail_optimized"] = draw(st.booleans())
            inter["oversubscription"] = draw(st.sampled_from([1.0, 2.0]))
            if draw(st.booleans()):
                inter.update(ecmp=True, spines=draw(st.integers(2, 4)))
    return Cluster.model_validate(
        {"gpu": make_gpu().model_dump(), "nodes": nodes, "gpus_per_node": per_node, "intra_node": intra, "inter_node": inter}
    )


@FAST
@given(cluster=clusters(), floors=st.lists(st.sampled_from([0.0, 5e-7, 4e-6, 2e-5]), min_size=1, max_size=4))
def test_routes_in_arrays_are_the_routes_pair_by_pair(cluster: Cluster, floors: list[float]) -> None:
    topology = Topology(cluster)
    sentinel = topology.num_links
    pairs = np.array([(a, b) for a in range(cluster.num_gpus) for b in range(cluster.num_gpus) if a != b], dtype=np.int64)
    floor_s = np.resize(np.array(floors), pairs.shape[0])
    routes = topology.routes(pairs[:, 0], pairs[:, 1], floor_s, sentinel)
    for index, (src, dst) in enumerate(pairs.tolist()):
        expected = with_latency_floor(topology.route(src, dst), float(floor_s[index]))
        assert routes.stages[index] == len(expected)
        for position, stage in enumerate(expected):
            row = routes.links[index, position]
            assert tuple(row[row != sentinel].tolist()) == stage.links
            assert np.all(row[len(stage.links) :] == sentinel)  # the padding follows the links
            assert routes.latency_s[index, position] == stage.latency_s  # exactly: the same arithmetic
