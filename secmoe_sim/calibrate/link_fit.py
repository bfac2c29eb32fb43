"""The communication paths of a calibration trace: an alpha-beta fit per collective and path, the
stack the all-to-all sweep measured, and the intra-node fabric it implies.

``time = alpha + bytes / beta`` per collective on each path (log-time least squares, every fourth
size held out). The all-to-all sweep (the collective the simulator models) gives the stack (gloo:
``host_staged`` with ``alpha`` per message; NCCL: ``nccl`` with one ``measured`` protocol launching in
``alpha``), the fabric bandwidth (the best any size achieved) and the stack's efficiency curve (each
size's share of that bandwidth).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from secmoe_sim.calibrate import CalibrationError
from secmoe_sim.calibrate.fitting import robust_fit, split_heldout
from secmoe_sim.calibrate.trace import Trace
from secmoe_sim.plan.topology import Topology
from secmoe_sim.spec.communication import Communication, EfficiencyKnot, HostStagedStack, LinkClass, NcclStack, Protocol, Stack
from secmoe_sim.spec.hardware import GPU, Cluster, NVSwitchFabric, PCIeFabric

COMM_FABRIC_OP = "all_to_all"


@dataclass(frozen=True)
class AlphaBeta:
    """``time = alpha_s + bytes / beta_bytes_per_s`` of one collective on one path."""

    op: str
    path: str
    alpha_s: float
    beta_bytes_per_s: float
    rows_used: int

    def time_s(self, message_bytes: np.ndarray) -> np.ndarray:
        return self.alpha_s + np.asarray(message_bytes) / self.beta_bytes_per_s


def fit_alpha_beta(rows: pd.DataFrame) -> tuple[float, float]:
    """``(alpha_s, beta_bytes_per_s)`` of ``alpha + bytes / beta`` fitted in log time."""
    size, measured = rows["bytes"].to_numpy(), rows["median_s"].to_numpy()

    def residuals(theta):
        return np.log((np.exp(theta[0]) + size / np.exp(theta[1])) / measured)

    start = [np.log(measured.min()), np.log(size.max() / measured.max())]
    (alpha_log, beta_log), _ = robust_fit(residuals, np.array(start))
    return float(np.exp(alpha_log)), float(np.exp(beta_log))


def fit_links(rows: pd.DataFrame) -> list[AlphaBeta]:
    """The alpha-beta fit of every (collective, path) with at least two fitted sizes."""
    links = []
    comm = rows[rows["primitive"] == "comm"]
    for (op, path), group in comm.groupby(["op", "path"], sort=True):
        fitted, _ = split_heldout(group, "bytes")
        if len(fitted) >= 2:
            alpha_s, beta = fit_alpha_beta(fitted)
            links.append(AlphaBeta(str(op), str(path), alpha_s, beta, len(fitted)))
    return links


def measured_stack(link: AlphaBeta, rows: pd.DataFrame, link_class: LinkClass, floor_s: float) -> tuple[Stack, float]:
    """The stack the collective sweep measured, and the link bandwidth it implies.

    The bandwidth is the alpha-beta fit's ``beta``; the efficiency curve is what each measured size
    achieved, ``size / (time - alpha)``, as a share of it (at most 1), so the ramp of achieved
    bandwidth with message size is kept, not just its asymptote. Only sizes whose bytes take at
    least ``alpha`` at ``beta`` are knots: below that the time is the fixed cost and the achieved
    bandwidth is noise (the curve clamps to its first knot). ``alpha`` less the fabric's latency
    ``floor_s`` is the fixed cost: per message for gloo (a host-staged library), the launch of a
    collective for NCCL (one protocol, ``measured``).
    """
    by_size = rows.groupby("bytes", sort=True)["median_s"].median()
    sizes, times = by_size.index.to_numpy(dtype=float), by_size.to_numpy(dtype=float)
    measurable = sizes / link.beta_bytes_per_s >= link.alpha_s
    shares = sizes / np.maximum(times - link.alpha_s, 1e-12) / link.beta_bytes_per_s
    curve = [
        EfficiencyKnot(size=float(size), efficiency=float(np.clip(share, 1e-6, 1.0)))
        for size, share in zip(sizes[measurable], shares[measurable])
    ]
    bandwidth = link.beta_bytes_per_s
    fixed_s = max(0.0, link.alpha_s - floor_s)
    efficiency: dict[LinkClass, list[EfficiencyKnot]] = {link_class: curve} if curve else {}
    if link.path.startswith("nccl"):
        protocol = Protocol(name="measured", launch=fixed_s, step_latency={link_class: floor_s}, bandwidth_fraction=1.0)
        return NcclStack(kind="nccl", protocols=[protocol], efficiency=efficiency), bandwidth
    return HostStagedStack(kind="host_staged", message_overhead=fixed_s, efficiency=efficiency), bandwidth


def fitted_cluster(gpu: GPU, links: tuple[AlphaBeta, ...], trace: Trace, base: Cluster | None, sources: dict) -> Cluster:
    """The cluster around the fitted ``gpu``: the all-to-all sweep's fabric and stack, on the base's node
    shape (or one device, or the GPUs the collectives ran on, without a base)."""
    fabric_link = next((link for link in links if link.op == COMM_FABRIC_OP), None)
    if base is None and fabric_link is None:
        raise CalibrationError("the trace has no all-to-all timings to fit a fabric; pass --base to take the fabric from it")
    if fabric_link is None:
        assert base is not None
        sources["intra_node"] = "not measured (no all-to-all rows): kept from the base hardware"
        return base.model_copy(update={"gpu": gpu})
    described = f"{fabric_link.path} {fabric_link.op}, {fabric_link.rows_used} sizes"
    rows = trace.rows[
        (trace.rows["primitive"] == "comm") & (trace.rows["op"] == fabric_link.op) & (trace.rows["path"] == fabric_link.path)
    ]
    stack_name = "nccl (one measured protocol)" if fabric_link.path.startswith("nccl") else "host_staged (gloo)"
    if base is None:
        device = trace.metadata.get("device", "device")
        world_size = int(trace.metadata.get("comm_world_size", 1))
        sources["gpus_per_node"] = (
            f"the {world_size} GPUs the collectives ran on"
            if device != "cpu"
            else "1: the CPU is one device; the fabric below is the loopback link between two processes "
            "on it, used only if gpus_per_node is raised"
        )
        stack, bandwidth = measured_stack(fabric_link, rows, "nvswitch", 0.0)
        sources["intra_node.bandwidth_per_direction"] = f"the best achieved bandwidth of the sweep ({described})"
        sources["intra_node.latency"] = "0: the alpha-beta fit does not split alpha; all of it is the stack's fixed cost"
        sources["communication"] = f"{stack_name}: alpha of the alpha-beta fit as its fixed cost, efficiency per measured size"
        return Cluster(
            name=f"calibrated-{device}",
            gpu=gpu,
            nodes=1,
            gpus_per_node=1 if device == "cpu" else world_size,
            intra_node=NVSwitchFabric(kind="nvswitch", bandwidth_per_direction=bandwidth, latency=0.0),
            communication=Communication(default=stack),
        )
    fabric = base.intra_node
    link_class: LinkClass = Topology(base).intra_class
    stack, bandwidth = measured_stack(fabric_link, rows, link_class, fabric.latency)
    field = "bandwidth_per_direction" if isinstance(fabric, NVSwitchFabric) else "link_bandwidth_per_direction"
    fabric = fabric.model_copy(update={field: bandwidth})
    sources[f"intra_node.{field}"] = f"the best achieved bandwidth of the sweep ({described})"
    sources["communication"] = (
        f"{stack_name}: alpha of the alpha-beta fit ({described}) minus the base fabric latency as its fixed cost, "
        "efficiency per measured size"
    )
    if isinstance(fabric, PCIeFabric):
        sources["intra_node.host_bridge_bandwidth_per_direction"] = "kept from the base hardware"
    return base.model_copy(
        update={"gpu": gpu, "intra_node": fabric, "message_overhead": None, "communication": Communication(default=stack)}
    )
