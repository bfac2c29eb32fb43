"""The links of a cluster and the route of every GPU pair over them.

A *link* is one direction of one physical connection, with a capacity in bytes/s (a link
bandwidth is per direction, so every cable is two links). Links are numbered; ``names`` says what
each one is. Built from the hardware description:

* NVSwitch node: ``g{i}.nvlink.up`` (GPU -> switch) and ``g{i}.nvlink.down`` (switch -> GPU); the
  switch itself is non-blocking.
* Full-mesh node: ``g{a}->g{b}.mesh``, the direct link of each ordered GPU pair.
* PCIe node: ``g{i}.pcie.up`` / ``g{i}.pcie.down`` (GPU <-> its PCIe switch, x16 link);
  ``n{n}.s{s}.bridge.up`` / ``.bridge.down`` (the PCIe switches of socket ``s`` <-> its host bridge,
  shared by every GPU of the socket); with two sockets ``n{n}.inter_socket.s{a}->s{b}``.
* Between nodes: ``g{i}.nic.out`` (NIC -> fabric) and ``g{i}.nic.in`` (fabric -> NIC), one NIC per
  GPU; with ``nics_per_node`` below the GPU count, ``n{n}.nic{k}.out`` / ``.in``, shared by the
  node's consecutive GPUs. The NIC hangs off its GPU's PCIe switch (GPUDirect RDMA): on a PCIe node
  the GPU's own ``pcie.up`` / ``pcie.down`` link is on the way; on an NVSwitch or full-mesh node the
  optional ``gpu_nic_pcie_bandwidth_per_direction`` adds ``g{i}.nic_pcie.up`` / ``.down``.
* A leaf-spine fabric (``nodes_per_leaf``) adds each leaf's uplinks: ``leaf{l}.up`` / ``leaf{l}.down``
  (all of a leaf's uplinks as one link) or, with ECMP, ``leaf{l}.spine{s}.up`` / ``.down`` (one per
  spine, a flow pinned to spine ``hash(src, dst) mod spines``); their capacity is the leaf's NIC
  capacity over ``oversubscription``, split evenly between the spines.

A *route* is a tuple of *stages*. The bytes of one stage cross all of its links at once (a flow on
every link); stages follow each other store-and-forward. Every stage has the latency of its fabric.

* NVSwitch: one stage ``(src nvlink.up, dst nvlink.down)``, the switch latency; full mesh: one
  stage over the pair's link.
* PCIe with peer-to-peer: ``(src pcie.up, dst pcie.down)`` under one switch; through the host
  bridge otherwise ``(src pcie.up, bridge.up, [inter_socket], bridge.down, dst pcie.down)``.
* PCIe without peer-to-peer (staged in host memory): ``(src pcie.up, src bridge.up)`` into host
  memory of the sender's socket, then ``([inter_socket], dst bridge.down, dst pcie.down)``.
* Between nodes: ``([src pcie or nic_pcie up], src nic.out, [leaf uplink, leaf downlink], dst nic.in,
  [dst pcie or nic_pcie down])`` at the NIC latency (the uplinks only between different leaves); without peer-to-peer three stages: into host memory, host to host through the
  NICs (``src bridge.down, src nic.out, dst nic.in, dst bridge.up``), out of host memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from secmoe_sim.spec.communication import LinkClass
from secmoe_sim.spec.hardware import Cluster, FullMeshFabric, InterNodeFabric, NVSwitchFabric, PCIeFabric


class Stage(NamedTuple):
    """One store-and-forward stage of a message: the links its bytes cross at once, its latency.

    ``bandwidth_bytes_per_s`` is the slowest link's capacity: the stage's rate when it has the
    links to itself.
    """

    links: tuple[int, ...]
    latency_s: float
    bandwidth_bytes_per_s: float


class RouteArrays(NamedTuple):
    """The routes of many messages as arrays (:meth:`Topology.routes`): message ``i`` goes through
    ``stages[i]`` stages; stage ``k`` crosses the links ``links[i, k]`` (padded with a sentinel link
    after its own) and ends ``latency_s[i, k]`` after its last byte has left."""

    links: np.ndarray
    latency_s: np.ndarray
    stages: np.ndarray


class Topology:
    """The directional links of one cluster and the route between any two of its GPUs."""

    def __init__(self, cluster: Cluster, capacity_factors: Mapping[str, float] | None = None):
        """``capacity_factors`` scales every link whose name starts with a key (degraded-link faults)."""
        self.cluster = cluster
        self._capacity_factors = dict(capacity_factors or {})
        self.names: list[str] = []
        self._capacity: list[float] = []
        self.max_stage_links = 1
        fabric = cluster.intra_node
        self._leaf: list[int] | None = None
        self._node = [cluster.node_of(g) for g in range(cluster.num_gpus)]
        self._nvswitch = isinstance(fabric, NVSwitchFabric)
        self._full_mesh = isinstance(fabric, FullMeshFabric)
        self._peer_to_peer = not isinstance(fabric, PCIeFabric) or fabric.peer_to_peer
        self._intra_latency_s = fabric.latency
        self._nic_latency_s = cluster.inter_node.latency if cluster.inter_node is not None else 0.0
        gpus = range(cluster.num_gpus)
        if isinstance(fabric, NVSwitchFabric):
            self._up = [self._link(f"g{g}.nvlink.up", fabric.bandwidth_per_direction) for g in gpus]
            self._down = [self._link(f"g{g}.nvlink.down", fabric.bandwidth_per_direction) for g in gpus]
            self.max_stage_links = 2
        elif isinstance(fabric, FullMeshFabric):
            self._mesh = {
                (a, b): self._link(f"g{a}->g{b}.mesh", fabric.link_bandwidth_per_direction)
                for a in gpus
                for b in gpus
                if a != b and self._node[a] == self._node[b]
            }
        else:
            self._build_pcie(cluster, fabric)
        if cluster.inter_node is not None and cluster.nodes > 1:
            self._build_nics(cluster)
        self.capacity_bytes_per_s = np.asarray(self._capacity, dtype=float)
        self.max_stages = 1 if self._peer_to_peer else (3 if cluster.inter_node is not None and cluster.nodes > 1 else 2)
        self._arrays: dict[str, np.ndarray] = {}  # per-GPU link lists as arrays, for ``routes``

    @property
    def num_links(self) -> int:
        return len(self.names)

    def _link(self, name: str, capacity_bytes_per_s: float) -> int:
        factor = 1.0
        for prefix, scale in self._capacity_factors.items():
            if name.startswith(prefix):
                factor *= scale
        self.names.append(name)
        self._capacity.append(float(capacity_bytes_per_s) * factor)
        return len(self.names) - 1

    def _build_pcie(self, cluster: Cluster, fabric: PCIeFabric) -> None:
        per_socket = cluster.gpus_per_node // fabric.sockets
        self._socket = [(cluster.node_of(g), (g % cluster.gpus_per_node) // per_socket) for g in range(cluster.num_gpus)]
        self._switch = [(g % cluster.gpus_per_node) // fabric.gpus_per_switch for g in range(cluster.num_gpus)]
        self._up = [self._link(f"g{g}.pcie.up", fabric.link_bandwidth_per_direction) for g in range(cluster.num_gpus)]
        self._down = [self._link(f"g{g}.pcie.down", fabric.link_bandwidth_per_direction) for g in range(cluster.num_gpus)]
        bridge = fabric.host_bridge_bandwidth_per_direction
        self._bridge_up, self._bridge_down, self._inter_socket = {}, {}, {}
        for node in range(cluster.nodes):
            for socket in range(fabric.sockets):
                self._bridge_up[(node, socket)] = self._link(f"n{node}.s{socket}.bridge.up", bridge)
                self._bridge_down[(node, socket)] = self._link(f"n{node}.s{socket}.bridge.down", bridge)
            if fabric.sockets == 2:
                assert fabric.inter_socket_bandwidth_per_direction is not None  # validated with the fabric
                for a, b in ((0, 1), (1, 0)):
                    name = f"n{node}.inter_socket.s{a}->s{b}"
                    self._inter_socket[(node, a)] = self._link(name, fabric.inter_socket_bandwidth_per_direction)
        self.max_stage_links = 5 if fabric.sockets == 2 else 4

    def _build_nics(self, cluster: Cluster) -> None:
        nic = cluster.inter_node
        assert nic is not None  # called only for multi-node clusters, which need an inter_node fabric
        gpus = range(cluster.num_gpus)
        bandwidth = nic.nic_bandwidth_per_direction
        if cluster.shares_nics:
            nics = {(self._node[g], cluster.nic_of(g)) for g in gpus}
            out = {key: self._link(f"n{key[0]}.nic{key[1]}.out", bandwidth) for key in sorted(nics)}
            into = {key: self._link(f"n{key[0]}.nic{key[1]}.in", bandwidth) for key in sorted(nics)}
            self._nic_out = [out[(self._node[g], cluster.nic_of(g))] for g in gpus]
            self._nic_in = [into[(self._node[g], cluster.nic_of(g))] for g in gpus]
        else:
            self._nic_out = [self._link(f"g{g}.nic.out", bandwidth) for g in gpus]
            self._nic_in = [self._link(f"g{g}.nic.in", bandwidth) for g in gpus]
        self._nic_pcie_up: list[int] | None = None
        if isinstance(cluster.intra_node, PCIeFabric):
            self.max_stage_links = max(self.max_stage_links, 4)
        elif nic.gpu_nic_pcie_bandwidth_per_direction is not None:
            hop = nic.gpu_nic_pcie_bandwidth_per_direction
            self._nic_pcie_up = [self._link(f"g{g}.nic_pcie.up", hop) for g in gpus]
            self._nic_pcie_down = [self._link(f"g{g}.nic_pcie.down", hop) for g in gpus]
            self.max_stage_links = 4
        else:
            self.max_stage_links = max(self.max_stage_links, 2)
        if nic.nodes_per_leaf is not None:
            self._build_leaves(cluster, nic)

    def _build_leaves(self, cluster: Cluster, nic: InterNodeFabric) -> None:
        """The leaf of every GPU's NIC, and every leaf's uplinks (one aggregate, or one per spine with ECMP)."""
        assert nic.nodes_per_leaf is not None
        nics_per_node = nic.nics_per_node or cluster.gpus_per_node
        rails = nics_per_node if nic.rail_optimized else 1
        group = [self._node[g] // nic.nodes_per_leaf for g in range(cluster.num_gpus)]
        self._leaf = [group[g] * rails + (cluster.nic_of(g) if nic.rail_optimized else 0) for g in range(cluster.num_gpus)]
        self._ecmp_spines = nic.spines if nic.ecmp else 1
        self._uplink: dict[tuple[int, int], int] = {}
        self._downlink: dict[tuple[int, int], int] = {}
        for leaf in sorted(set(self._leaf)):
            nodes_on_leaf = len({self._node[g] for g in range(cluster.num_gpus) if self._leaf[g] == leaf})
            nics_on_leaf = nodes_on_leaf * (nics_per_node // rails)
            total = nics_on_leaf * nic.nic_bandwidth_per_direction / nic.oversubscription
            for spine in range(self._ecmp_spines):
                name = f"leaf{leaf}.spine{spine}" if nic.ecmp else f"leaf{leaf}"
                self._uplink[(leaf, spine)] = self._link(f"{name}.up", total / self._ecmp_spines)
                self._downlink[(leaf, spine)] = self._link(f"{name}.down", total / self._ecmp_spines)
        self.max_stage_links += 2

    def _spine_links(self, src: int, dst: int) -> tuple[int, ...]:
        """The leaf uplink and downlink between two GPUs' NICs (none on one leaf or without leaves)."""
        if self._leaf is None or self._leaf[src] == self._leaf[dst]:
            return ()
        spine = ecmp_spine(src, dst, self._ecmp_spines)
        return (self._uplink[(self._leaf[src], spine)], self._downlink[(self._leaf[dst], spine)])

    @property
    def intra_class(self) -> LinkClass:
        """The link class of a message between two GPUs of one node."""
        return "nvswitch" if self._nvswitch else ("full_mesh" if self._full_mesh else "pcie")

    def link_classes(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """The link class of each message ``src[i] -> dst[i]``: ``network`` across nodes, else the node's fabric."""
        node = np.asarray(self._node, dtype=np.int64)
        return np.where(node[src] != node[dst], "network", self.intra_class)

    def slowest_hop(self, gpus: tuple[int, ...]) -> tuple[LinkClass, float]:
        """The link class of the slowest hop among ``gpus`` (the network if they span nodes) and the
        bandwidth of one message over it, uncontended (bytes/s)."""
        first = gpus[0]
        remote = [gpu for gpu in gpus if self._node[gpu] != self._node[first]]
        if remote:
            return "network", min(stage.bandwidth_bytes_per_s for stage in self.route(first, remote[0]))
        if len(gpus) < 2:
            return self.intra_class, math.inf
        return self.intra_class, min(stage.bandwidth_bytes_per_s for stage in self.route(first, gpus[1]))

    def _stage(self, links: tuple[int, ...], latency_s: float) -> Stage:
        capacity = self._capacity
        return Stage(links, latency_s, min([capacity[link] for link in links]))

    def route(self, src: int, dst: int) -> tuple[Stage, ...]:
        """The stages a message from GPU ``src`` to GPU ``dst`` goes through."""
        if src == dst:
            raise ValueError("a GPU does not send messages to itself")
        if self._node[src] != self._node[dst]:
            return self._inter_node_route(src, dst)
        latency_s = self._intra_latency_s
        if self._nvswitch:
            return (self._stage((self._up[src], self._down[dst]), latency_s),)
        if self._full_mesh:
            return (self._stage((self._mesh[(src, dst)],), latency_s),)
        crossing = self._crossing(src, dst)
        if not self._peer_to_peer:
            into_host = self._stage((self._up[src], self._bridge_up[self._socket[src]]), latency_s)
            out_of_host = self._stage(crossing + (self._bridge_down[self._socket[dst]], self._down[dst]), latency_s)
            return (into_host, out_of_host)
        if self._socket[src] == self._socket[dst] and self._switch[src] == self._switch[dst]:
            return (self._stage((self._up[src], self._down[dst]), latency_s),)
        links = (
            (self._up[src], self._bridge_up[self._socket[src]])
            + crossing
            + (self._bridge_down[self._socket[dst]], self._down[dst])
        )
        return (self._stage(links, latency_s),)

    def routes(self, src: np.ndarray, dst: np.ndarray, latency_floor_s: np.ndarray, sentinel: int) -> RouteArrays:
        """The route of every message ``src[i] -> dst[i]`` as arrays, padded with the link ``sentinel``: the
        stages of :meth:`route`, the last one's latency raised to ``latency_floor_s[i]`` as
        :func:`with_latency_floor` raises it. NVSwitch nodes and the NICs between NVSwitch or full-mesh
        nodes are routed in whole arrays; other pairs (full-mesh and PCIe nodes) one at a time."""
        count = src.shape[0]
        links = np.full((count, self.max_stages, self.max_stage_links), sentinel, dtype=np.int64)
        latency_s = np.zeros((count, self.max_stages))
        stages = np.ones(count, dtype=np.int64)
        node = self._array("_node")
        remote = node[src] != node[dst]
        routed = np.zeros(count, dtype=bool)
        if self._nvswitch:
            local = np.flatnonzero(~remote)
            links[local, 0, 0] = self._array("_up")[src[local]]
            links[local, 0, 1] = self._array("_down")[dst[local]]
            latency_s[local, 0] = self._intra_latency_s
            routed[local] = True
        if (self._nvswitch or self._full_mesh) and remote.any():
            self._route_nics(np.flatnonzero(remote), src, dst, links)
            latency_s[remote, 0] = self._nic_latency_s
            routed |= remote
        for index in np.flatnonzero(~routed).tolist():
            route = self.route(int(src[index]), int(dst[index]))
            stages[index] = len(route)
            for position, stage in enumerate(route):
                links[index, position, : len(stage.links)] = stage.links
                latency_s[index, position] = stage.latency_s
        total_s = latency_s.sum(axis=1)
        raised = np.flatnonzero(latency_floor_s > total_s)
        last = stages[raised] - 1
        latency_s[raised, last] = (latency_s[raised, last] + latency_floor_s[raised]) - total_s[raised]
        return RouteArrays(links, latency_s, stages)

    def _route_nics(self, messages: np.ndarray, src: np.ndarray, dst: np.ndarray, links: np.ndarray) -> None:
        """Fill the one-stage NIC routes of ``messages`` (between NVSwitch or full-mesh nodes) into ``links``."""
        a, b = src[messages], dst[messages]
        before = [] if self._nic_pcie_up is None else [self._array("_nic_pcie_up")[a]]
        after = [] if self._nic_pcie_up is None else [self._array("_nic_pcie_down")[b]]
        out, into = self._array("_nic_out")[a], self._array("_nic_in")[b]
        crossing = np.zeros(messages.shape[0], dtype=bool)
        spine_links: list[np.ndarray] = []
        if self._leaf is not None:
            leaf = self._array("_leaf")
            crossing = leaf[a] != leaf[b]
            spine = ecmp_spines(a, b, self._ecmp_spines)
            spine_links = [self._spine_array("_uplink")[leaf[a], spine], self._spine_array("_downlink")[leaf[b], spine]]
        for rows, columns in ((~crossing, [*before, out, into, *after]), (crossing, [*before, out, *spine_links, into, *after])):
            for position, column in enumerate(columns):
                links[messages[rows], 0, position] = column[rows]

    def _array(self, name: str) -> np.ndarray:
        """The per-GPU list attribute ``name`` as an array, built once."""
        array = self._arrays.get(name)
        if array is None:
            array = self._arrays[name] = np.asarray(getattr(self, name), dtype=np.int64)
        return array

    def _spine_array(self, name: str) -> np.ndarray:
        """The leaf-spine link dictionary ``name`` (``(leaf, spine) -> link``) as a (leaves, spines) array, built once."""
        array = self._arrays.get(name)
        if array is None:
            links: dict[tuple[int, int], int] = getattr(self, name)
            array = np.full((max(leaf for leaf, _ in links) + 1, self._ecmp_spines), -1, dtype=np.int64)
            for (leaf, spine), link in links.items():
                array[leaf, spine] = link
            self._arrays[name] = array
        return array

    def _crossing(self, src: int, dst: int) -> tuple[int, ...]:
        """The inter-socket link between two GPUs of one node, if they sit on different sockets."""
        (node, src_socket), (_, dst_socket) = self._socket[src], self._socket[dst]
        return (self._inter_socket[(node, src_socket)],) if src_socket != dst_socket else ()

    def _inter_node_route(self, src: int, dst: int) -> tuple[Stage, ...]:
        nics = (self._nic_out[src],) + self._spine_links(src, dst) + (self._nic_in[dst],)
        if self._nvswitch or self._full_mesh:
            if self._nic_pcie_up is None:
                return (self._stage(nics, self._nic_latency_s),)
            links = (self._nic_pcie_up[src],) + nics + (self._nic_pcie_down[dst],)
            return (self._stage(links, self._nic_latency_s),)
        if self._peer_to_peer:
            return (self._stage((self._up[src],) + nics + (self._down[dst],), self._nic_latency_s),)
        src_socket, dst_socket = self._socket[src], self._socket[dst]
        into_host = self._stage((self._up[src], self._bridge_up[src_socket]), self._intra_latency_s)
        across = self._stage((self._bridge_down[src_socket],) + nics + (self._bridge_up[dst_socket],), self._nic_latency_s)
        out_of_host = self._stage((self._bridge_down[dst_socket], self._down[dst]), self._intra_latency_s)
        return (into_host, across, out_of_host)


def ecmp_spine(src: int, dst: int, spines: int) -> int:
    """The spine ECMP pins the flow ``src -> dst`` to: a fixed multiplicative hash of the endpoints
    (switches hash packet headers; what matters is that the choice ignores load, so flows collide)."""
    return 0 if spines == 1 else _endpoint_hash(src, dst) % spines


def ecmp_spines(src: np.ndarray, dst: np.ndarray, spines: int) -> np.ndarray:
    """:func:`ecmp_spine` of every flow ``src[i] -> dst[i]`` at once."""
    if spines == 1:
        return np.zeros(src.shape[0], dtype=np.int64)
    return _endpoint_hash(src.astype(np.int64), dst.astype(np.int64)) % spines


def _endpoint_hash(a, b):
    """The 32-bit hash of ECMP's endpoints, for ints or int64 arrays alike (no product overflows 64 bits
    for GPU numbers below 2**20)."""
    mixed = (a * 0x9E3779B1 + b * 0x85EBCA77 + (a ^ b) * 0xC2B2AE3D) & 0xFFFFFFFF
    return (mixed ^ (mixed >> 16)) * 0x45D9F3B & 0xFFFFFFFF


def with_latency_floor(stages: tuple[Stage, ...], floor_s: float) -> tuple[Stage, ...]:
    """The route with its last stage's latency raised so the latencies sum to at least ``floor_s``."""
    total_s = sum(stage.latency_s for stage in stages)
    if floor_s <= total_s:
        return stages
    return stages[:-1] + (stages[-1]._replace(latency_s=stages[-1].latency_s + floor_s - total_s),)
