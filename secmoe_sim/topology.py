"""Routes between GPUs: the ports a message holds on each hop, the hop's bandwidth and latency.

Ports are named strings (``"g3.nvlink.out"``); the network makes one capacity-1 resource per name.
A message holds every port of a hop at once (the sender's egress, the receiver's ingress, and any
shared element in between), so messages that share a port queue behind each other.

* NVSwitch: egress of the sender's NVLink port, ingress of the receiver's.
* PCIe with peer-to-peer: the sender's and receiver's x16 links; if the GPUs sit under different
  PCIe switches, also the host bridge (up from the sender's switch, down to the receiver's), and the
  inter-socket link when they are on different sockets.
* PCIe without peer-to-peer: two store-and-forward hops through host memory (GPU -> host bridge ->
  host, then host -> host bridge -> GPU), each paying latency and the full payload time.
* Between nodes: the sender's NIC egress and the receiver's NIC ingress; the fabric is non-blocking.
"""

from __future__ import annotations

from dataclasses import dataclass

from secmoe_sim.hardware import Cluster, NVSwitchFabric, PCIeFabric


@dataclass(frozen=True)
class Hop:
    """One store-and-forward stage of a message."""

    ports: tuple[str, ...]
    bandwidth_bytes_per_s: float
    latency_s: float


def route(cluster: Cluster, src: int, dst: int) -> tuple[Hop, ...]:
    """The hops a message from GPU ``src`` to GPU ``dst`` takes."""
    if src == dst:
        raise ValueError("a GPU does not send messages to itself")
    if cluster.node_of(src) != cluster.node_of(dst):
        nic = cluster.inter_node
        assert nic is not None  # validated: a multi-node cluster has an inter-node fabric
        return (Hop((f"g{src}.nic.out", f"g{dst}.nic.in"), nic.nic_bandwidth_per_direction, nic.latency),)
    fabric = cluster.intra_node
    if isinstance(fabric, NVSwitchFabric):
        return (Hop((f"g{src}.nvlink.out", f"g{dst}.nvlink.in"), fabric.bandwidth_per_direction, fabric.latency),)
    return _pcie_route(cluster, fabric, src, dst)


def _socket_of(cluster: Cluster, fabric: PCIeFabric, gpu: int) -> str:
    local = gpu % cluster.gpus_per_node
    return f"n{cluster.node_of(gpu)}.s{local // (cluster.gpus_per_node // fabric.sockets)}"


def _switch_of(cluster: Cluster, fabric: PCIeFabric, gpu: int) -> int:
    return (gpu % cluster.gpus_per_node) // fabric.gpus_per_switch


def _pcie_route(cluster: Cluster, fabric: PCIeFabric, src: int, dst: int) -> tuple[Hop, ...]:
    link, bridge = fabric.link_bandwidth_per_direction, fabric.host_bridge_bandwidth_per_direction
    src_socket, dst_socket = _socket_of(cluster, fabric, src), _socket_of(cluster, fabric, dst)
    crossing: tuple[str, ...] = ()
    crossing_bandwidth = bridge
    if src_socket != dst_socket:
        assert fabric.inter_socket_bandwidth_per_direction is not None
        crossing = (f"n{cluster.node_of(src)}.inter_socket.{src_socket}->{dst_socket}",)
        crossing_bandwidth = min(bridge, fabric.inter_socket_bandwidth_per_direction)
    if not fabric.peer_to_peer:
        up = Hop((f"g{src}.pcie.out", f"{src_socket}.bridge.up"), min(link, bridge), fabric.latency)
        down = Hop(crossing + (f"{dst_socket}.bridge.down", f"g{dst}.pcie.in"), min(link, crossing_bandwidth), fabric.latency)
        return (up, down)
    if src_socket == dst_socket and _switch_of(cluster, fabric, src) == _switch_of(cluster, fabric, dst):
        return (Hop((f"g{src}.pcie.out", f"g{dst}.pcie.in"), link, fabric.latency),)
    ports = (f"g{src}.pcie.out", f"{src_socket}.bridge.up") + crossing + (f"{dst_socket}.bridge.down", f"g{dst}.pcie.in")
    return (Hop(ports, min(link, crossing_bandwidth), fabric.latency),)


def one_message_s(cluster: Cluster, src: int, dst: int, payload_bytes: float = 0.0) -> float:
    """Time of one uncontended message: per-message overhead + per-hop latency + payload time."""
    return cluster.message_overhead + sum(
        hop.latency_s + payload_bytes / hop.bandwidth_bytes_per_s for hop in route(cluster, src, dst)
    )
