"""Fit a hardware description to a calibration trace, and say how well it predicts held-out shapes.

The simulator times a kernel as ``launches x launch overhead + max(FLOPs / (peak x efficiency(FLOPs)),
bytes / memory bandwidth)`` (:mod:`secmoe_sim.plan.costs`), with the efficiency interpolated linearly
in log FLOPs between table points, and a collective by its communication stack and the links
(:mod:`secmoe_sim.plan.communication`, :mod:`secmoe_sim.plan.topology`). The fit gives each of
those numbers from measurements:

* ``host_overhead_per_op``: the median per-op time of the loops of tiny ops, the host's whole cost
  of issuing an op as the framework does (so ``kernel_launch_overhead`` is 0: it is inside); on a
  CPU the host is the device, so ``launch_queue_depth`` is 1 (an op runs as it is issued);
* ``memory_bandwidth``: one bandwidth for the memory-bound ops (copy, softmax, add), least squares
  in log time with the launch overhead fixed;
* ``peak_flops`` and ``efficiency_table``: the GEMM rate at knots every half decade of FLOPs (a
  rate per dtype that is a fixed multiple of the first dtype's), least squares in log time with
  the launch overhead and bandwidth fixed and a light smoothness penalty; the peak is the highest
  fitted rate (GEMM or attention), the tables are rates over it;
* ``attention_efficiency_table``: the same for fused attention (non-causal kernels, when the trace
  has them: the causal ones check the cost model's half-the-FLOPs convention), with the peaks fixed;
* ``attention_floor_per_head``: the fastest any measured head ran, per sequence and head;
* alpha-beta of each communication path: ``time = alpha + bytes / beta`` per collective; the
  all-to-all sweep (the collective the simulator models) gives the stack (gloo: ``host_staged``
  with ``alpha`` per message; NCCL: ``nccl`` with one ``measured`` protocol launching in
  ``alpha``), the fabric bandwidth (the best any size achieved) and the stack's efficiency curve
  (each size's share of that bandwidth).

Every fit uses scipy's ``least_squares`` with a soft-L1 loss on log-time residuals, so a few timings
disturbed by other processes do not drag a fit. Each op class keeps every fourth shape (ordered by size)
out of its fit; the error table reports, per class, the error of the *simulator's own* prediction
(through ``costs.kernel_time_s``) on the fitted shapes and on the held-out ones (MAPE and the worst
error).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from secmoe_sim.calibrate import CalibrationError
from secmoe_sim.calibrate.trace import Trace, gemm_counts, launch_overhead_s, row_kernel
from secmoe_sim.plan.costs import Kernel, RooflineTimer, host_time_per_launch_s
from secmoe_sim.plan.topology import Topology
from secmoe_sim.spec.communication import Communication, EfficiencyKnot, HostStagedStack, LinkClass, NcclStack, Protocol, Stack
from secmoe_sim.spec.hardware import GPU, Cluster, Dtype, EfficiencyPoint, NVSwitchFabric, PCIeFabric

HOLDOUT_EVERY = 4  # every fourth shape of a class (ordered by size) is held out of the fit
HOLDOUT_OFFSET = 1  # ... starting with the second, so held-out shapes lie inside the fitted range
KNOTS_PER_DECADE = 2
SMOOTHNESS = 0.02  # weight of the second difference of log rates against log-time residuals
ROBUST_F_SCALE = 0.1  # soft-L1 loss: log-time residuals beyond ~10% count less than squared (disturbed timings)
PERCENT = 100.0
COMM_FABRIC_OP = "all_to_all"


@dataclass(frozen=True)
class RateTable:
    """A fitted rate curve: knots (FLOPs per kernel) and the rate at each, for the first dtype."""

    knots_flops: np.ndarray
    rates_flops_per_s: np.ndarray
    dtype_scale: dict[str, float]
    rows_used: int


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


@dataclass(frozen=True)
class FitResult:
    """The fitted cluster, where each number came from, and the error table per op class."""

    cluster: Cluster
    sources: dict[str, str]
    errors: pd.DataFrame
    links: tuple[AlphaBeta, ...]
    warnings: tuple[str, ...] = ()  # what came from the documented default base instead of a measurement


def split_heldout(rows: pd.DataFrame, size_column: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows to fit and rows held out: every fourth row by size, if the class has at least four."""
    ordered = rows.sort_values([size_column, "median_s"], kind="stable")
    if len(ordered) < HOLDOUT_EVERY:
        return ordered, ordered.iloc[0:0]
    held = (np.arange(len(ordered)) % HOLDOUT_EVERY) == HOLDOUT_OFFSET
    return ordered[~held], ordered[held]


def _knots(flops: np.ndarray) -> np.ndarray:
    low, high = np.log10(flops.min()), np.log10(flops.max())
    count = max(2, int(np.ceil((high - low) * KNOTS_PER_DECADE)) + 1)
    return np.logspace(low, high, count) if high > low else np.array([flops.min(), flops.min() * 10])


def fit_rate_table(
    rows: pd.DataFrame,
    launch_s: float,
    bandwidth_bytes_per_s: float,
    dtype_scale: dict[str, float] | None = None,
    floor_s: np.ndarray | None = None,
) -> RateTable:
    """Knot rates that make ``launch + max(F / rate(F), bytes / bandwidth, floor)`` fit the rows' medians.

    ``dtype_scale`` fixes the rate of each dtype relative to the first; without it the scales of
    the other dtypes are fitted too. ``floor_s`` is each row's least time (attention's per-head
    floor), 0 by default.
    """
    flops, traffic = rows["flops"].to_numpy(), rows["traffic_bytes"].to_numpy()
    floor = np.zeros(len(rows)) if floor_s is None else np.asarray(floor_s, dtype=float)
    measured, dtypes = rows["median_s"].to_numpy(), rows["dtype"].to_numpy()
    ordered_dtypes = list(dict.fromkeys(rows["dtype"].value_counts().index))
    knots = _knots(flops)
    log_knots, log_flops = np.log(knots), np.log(flops)
    fitted_dtypes = ordered_dtypes[1:] if dtype_scale is None else []
    fixed_scale = dtype_scale or {}

    def unpack(theta):
        scale = {ordered_dtypes[0]: 1.0, **fixed_scale, **dict(zip(fitted_dtypes, np.exp(theta[len(knots) :])))}
        return np.exp(theta[: len(knots)]), scale

    def residuals(theta):
        knot_rates, scale = unpack(theta)
        rate = np.interp(log_flops, log_knots, knot_rates) * np.array([scale[d] for d in dtypes])
        predicted = launch_s + np.maximum(np.maximum(flops / rate, traffic / bandwidth_bytes_per_s), floor)
        smooth = SMOOTHNESS * np.diff(theta[: len(knots)], 2)
        return np.concatenate([np.log(predicted / measured), smooth])

    empirical = np.log(flops / np.maximum(measured - launch_s, measured * 0.05))
    nearest = np.abs(log_flops[None, :] - log_knots[:, None]).argmin(axis=0)
    start = np.array(
        [np.median(empirical[nearest == j]) if np.any(nearest == j) else np.median(empirical) for j in range(len(knots))]
    )
    theta = _robust_fit(residuals, np.concatenate([start, np.zeros(len(fitted_dtypes))]))
    knot_rates, scale = unpack(theta)
    return RateTable(knots, knot_rates, scale, len(rows))


def _robust_fit(residuals: Callable[[np.ndarray], np.ndarray], start: np.ndarray) -> np.ndarray:
    """Least squares with a soft-L1 loss (scipy), so a few disturbed timings do not pull the fit."""
    return np.asarray(least_squares(residuals, start, loss="soft_l1", f_scale=ROBUST_F_SCALE).x, dtype=float)


def fit_bandwidth(rows: pd.DataFrame, launch_s: float) -> float:
    """Memory bandwidth (bytes/s) that makes ``launch + bytes / bandwidth`` fit the rows."""
    traffic, measured = rows["traffic_bytes"].to_numpy(), rows["median_s"].to_numpy()

    def residuals(theta):
        return np.log((launch_s + traffic / np.exp(theta[0])) / measured)

    start = np.log(np.median(traffic / np.maximum(measured - launch_s, measured * 0.05)))
    return float(np.exp(_robust_fit(residuals, np.array([start]))[0]))


def fit_alpha_beta(rows: pd.DataFrame) -> tuple[float, float]:
    """``(alpha_s, beta_bytes_per_s)`` of ``alpha + bytes / beta`` fitted in log time."""
    size, measured = rows["bytes"].to_numpy(), rows["median_s"].to_numpy()

    def residuals(theta):
        return np.log((np.exp(theta[0]) + size / np.exp(theta[1])) / measured)

    start = [np.log(measured.min()), np.log(size.max() / measured.max())]
    alpha_log, beta_log = _robust_fit(residuals, np.array(start))
    return float(np.exp(alpha_log)), float(np.exp(beta_log))


# --- the whole fit ----------------------------------------------------------------------------


DEFAULT_BASE_HARDWARE = "h100-hgx"  # what a partial trace without --base is completed from (docs/calibration.md)


def fit_trace(trace: Trace, base: Cluster | None = None) -> FitResult:
    """Fit every number the trace measures; the rest (and the node shape) comes from ``base``.

    Without ``base``, a trace that does not measure everything a hardware file needs (memory-bound
    ops, the device memory, a fabric) is completed from the shipped :data:`DEFAULT_BASE_HARDWARE`
    hardware, and the result's ``warnings`` say what was taken from it.
    """
    sources: dict[str, str] = {}
    if len(trace.of("gemm")) < 2:
        raise CalibrationError("the trace needs at least two GEMM shapes to fit an efficiency table")
    warnings: tuple[str, ...] = ()
    missing = _unmeasured(trace) if base is None else []
    launch_s = _fit_launch(trace, base, sources)  # never from the default: imported times are the kernels' own
    if missing:
        from secmoe_sim.spec.loading import load_cluster

        base = load_cluster(DEFAULT_BASE_HARDWARE)
        unmeasured_host = " (the host's time per op is 0: no launch rows)" if launch_overhead_s(trace) is None else ""
        warnings = (
            (
                f"no --base, and the trace does not measure {', '.join(missing)}: taken from the shipped "
                f"{DEFAULT_BASE_HARDWARE} hardware (with its node shape and launch queue depth){unmeasured_host}; "
                "pass --base for your machine"
            ),
        )
    bandwidth = _fit_memory(trace, launch_s, base, sources)
    gpu = _fit_gpu(trace, launch_s, bandwidth, base, sources)
    links = tuple(_fit_links(trace.rows))
    cluster = _cluster(gpu, links, trace, base, sources)
    return FitResult(cluster=cluster, sources=sources, errors=error_table(trace, cluster, links), links=links, warnings=warnings)


def _unmeasured(trace: Trace) -> list[str]:
    """What a hardware file needs that the trace does not measure (and a base would have to give)."""
    missing = []
    if trace.of("memory").empty:
        missing.append("memory-bound ops (the memory bandwidth)")
    if not trace.metadata.get("device_memory_bytes"):
        missing.append("the device memory")
    if not any(link.op == COMM_FABRIC_OP for link in _fit_links(trace.rows)):
        missing.append("an all-to-all sweep (the fabric)")
    return missing


def _fit_launch(trace: Trace, base: Cluster | None, sources: dict) -> float:
    launch_s = launch_overhead_s(trace)
    tiny = trace.rows[(trace.rows["primitive"] == "launch") & trace.rows["m"].isna()]
    sources["gpu.kernel_launch_overhead"] = "0: the measured host time per op below includes the launch"
    if launch_s is not None:
        sources["gpu.host_overhead_per_op"] = f"median per-op time of {len(tiny)} loops of tiny ops ({', '.join(tiny['op'])})"
        return launch_s
    if base is not None:
        sources["gpu.host_overhead_per_op"] = "not measured (no launch rows): the base hardware's host time per op"
        return host_time_per_launch_s(base.gpu)
    sources["gpu.host_overhead_per_op"] = "not measured (no launch rows in the trace): 0"
    return 0.0


def _fit_memory(trace: Trace, launch_s: float, base: Cluster | None, sources: dict) -> float:
    memory = trace.of("memory")
    memory_fit, _ = split_heldout(memory, "traffic_bytes")
    if not memory_fit.empty:
        sources["gpu.memory_bandwidth"] = (
            f"fitted to {len(memory_fit)} memory-bound timings ({', '.join(sorted(set(memory['op'])))}): "
            "t = launch + bytes / bandwidth"
        )
        return fit_bandwidth(memory_fit, launch_s)
    if base is not None:
        sources["gpu.memory_bandwidth"] = "not measured (no memory rows): kept from the base hardware"
        return base.gpu.memory_bandwidth
    raise CalibrationError("the trace has no memory-bound ops; pass --base to take the memory bandwidth from it")


def _fit_gpu(trace: Trace, launch_s: float, bandwidth: float, base: Cluster | None, sources: dict) -> GPU:
    """Peaks and efficiency tables from the GEMM and attention rows; memory and name as recorded."""
    gemm_fit, _ = split_heldout(trace.of("gemm"), "flops")
    gemm_table = fit_rate_table(gemm_fit, launch_s, bandwidth)
    attention_fit, _ = split_heldout(attention_rows(trace.rows), "flops")
    floor_s = _attention_floor_s(trace, launch_s, sources)
    heads = (attention_fit["batch"] * attention_fit["heads"]).to_numpy() if len(attention_fit) else None
    attention_table = (
        fit_rate_table(attention_fit, launch_s, bandwidth, gemm_table.dtype_scale, None if heads is None else heads * floor_s)
        if len(attention_fit) >= 2
        else None
    )
    gemm_peak = gemm_table.rates_flops_per_s.max()
    peak = max(gemm_peak, attention_table.rates_flops_per_s.max() if attention_table else 0.0)
    memory_capacity = trace.metadata.get("device_memory_bytes") or (base.gpu.memory_capacity if base else None)
    if memory_capacity is None:
        raise CalibrationError("the trace does not record the device memory; pass --base to take it from a hardware file")
    sources["gpu.peak_flops"] = (
        f"highest fitted rate ({'GEMM' if peak == gemm_peak else 'attention'}); "
        "other dtypes scaled by their fitted GEMM rate ratio; the tables are rates over it"
    )
    sources["gpu.efficiency_table"] = (
        f"GEMM rate / peak at {len(gemm_table.knots_flops)} knots, least squares in log time over "
        f"{gemm_table.rows_used} shapes ({', '.join(gemm_table.dtype_scale)})"
    )
    sources["gpu.compute_efficiency"] = "the efficiency of the largest fitted GEMMs (unused while efficiency_table is given)"
    if attention_table:
        flags = set(attention_fit["causal"])
        kind = "causal and non-causal" if len(flags) > 1 else ("causal" if flags == {1.0} else "non-causal")
        sources["gpu.attention_efficiency_table"] = (
            f"attention rate / peak at {len(attention_table.knots_flops)} knots over "
            f"{attention_table.rows_used} {kind} fused-attention shapes"
        )
    sources["gpu.memory_capacity"] = (
        "device memory recorded in the trace" if trace.metadata.get("device_memory_bytes") else "base hardware"
    )
    return GPU(
        name=trace.metadata.get("device_name") or (base.gpu.name if base else "unknown"),
        peak_flops={cast(Dtype, dtype): peak * scale for dtype, scale in gemm_table.dtype_scale.items()},
        compute_efficiency=float(gemm_table.rates_flops_per_s[-1] / peak),
        efficiency_table=_table(gemm_table, peak),
        attention_efficiency_table=_table(attention_table, peak) if attention_table else None,
        memory_bandwidth=bandwidth,
        memory_capacity=memory_capacity,
        kernel_launch_overhead=0.0,
        host_overhead_per_op=launch_s,
        attention_floor_per_head=floor_s,
        launch_queue_depth=_queue_depth(trace, base, sources),
    )


def _attention_floor_s(trace: Trace, launch_s: float, sources: dict) -> float:
    """The least time any measured attention head took (per sequence and head, launch excluded): no
    shape ran a head faster, so the floor never speeds a measured shape up, and it holds the time of
    the many-narrow-heads shapes that a rate by FLOPs alone would make too fast."""
    attention = trace.rows[trace.rows["primitive"] == "attention"]
    if attention.empty:
        sources["gpu.attention_floor_per_head"] = "not measured (no attention rows): 0"
        return 0.0
    per_head = (attention["median_s"] - launch_s) / (attention["batch"] * attention["heads"])  # one launch per call
    floor = float(max(per_head.min(), 0.0))
    sources["gpu.attention_floor_per_head"] = f"the fastest head of {len(attention)} attention shapes (time / (batch x heads))"
    return floor


def _queue_depth(trace: Trace, base: Cluster | None, sources: dict) -> int:
    """1 on a CPU (eager ops run as they are issued), else the base's or the default queue depth."""
    if trace.metadata.get("device") == "cpu":
        sources["gpu.launch_queue_depth"] = "1: on a CPU the host runs each op itself"
        return 1
    if base is not None:
        sources["gpu.launch_queue_depth"] = "kept from the base hardware"
        return base.gpu.launch_queue_depth
    depth = int(GPU.model_fields["launch_queue_depth"].default)
    sources["gpu.launch_queue_depth"] = f"{depth}: the default (not measured)"
    return depth


def attention_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The attention rows the table is fitted to: the non-causal ones when there are any.

    The cost model counts half the score FLOPs for causal attention (it assumes the kernel skips
    the masked half). The fit takes the rate from full (non-causal) kernels and *checks* that
    assumption on the causal rows (their own error class) instead of bending the table to it.
    """
    attention = rows[rows["primitive"] == "attention"]
    full = attention[attention["causal"] == 0]
    return full if len(full) >= 2 else attention


def _table(table: RateTable, peak: float) -> tuple[EfficiencyPoint, ...]:
    return tuple(
        EfficiencyPoint(flops=float(f), efficiency=float(min(1.0, r / peak)))
        for f, r in zip(table.knots_flops, table.rates_flops_per_s)
    )


def _fit_links(rows: pd.DataFrame) -> list[AlphaBeta]:
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


def _cluster(gpu: GPU, links: tuple[AlphaBeta, ...], trace: Trace, base: Cluster | None, sources: dict) -> Cluster:
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


# --- errors -----------------------------------------------------------------------------------


def predicted_s(rows: pd.DataFrame, cluster: Cluster) -> np.ndarray:
    """The simulator's time for gemm, attention, memory and launch rows on ``cluster``."""
    gpu = cluster.gpu
    times = []
    for _, row in rows.iterrows():
        timer = RooflineTimer(gpu, row["dtype"])
        if row["primitive"] == "launch":
            per_op = host_time_per_launch_s(gpu)
            if not np.isnan(row["m"]):  # a loop of small section GEMMs: each one a launch and a kernel
                counts = gemm_counts(row["m"], row["k"], row["n"], 1, row["dtype"])
                per_op += timer.kernel_time_s(
                    Kernel("section", "calibration", counts["flops"], counts["traffic_bytes"], primitive="gemm")
                )
            times.append(row["count"] * per_op)
        else:
            kernel = row_kernel(row)
            times.append(timer.launch_time_s(kernel) + timer.kernel_time_s(kernel))
    return np.array(times)


def _error_row(op_class: str, fitted: pd.DataFrame, held: pd.DataFrame, fitted_error: np.ndarray, held_error: np.ndarray) -> dict:
    def mape(errors):
        return float(np.mean(np.abs(errors)) * PERCENT) if len(errors) else np.nan

    def worst(errors):
        return float(errors[np.argmax(np.abs(errors))] * PERCENT) if len(errors) else np.nan

    return {
        "op_class": op_class,
        "fitted_shapes": len(fitted),
        "heldout_shapes": len(held),
        "mape_fitted_pct": mape(fitted_error),
        "mape_heldout_pct": mape(held_error),
        "worst_heldout_pct": worst(held_error),
        "worst_fitted_pct": worst(fitted_error),
    }


def error_table(trace: Trace, cluster: Cluster, links: tuple[AlphaBeta, ...]) -> pd.DataFrame:
    """Per op class: the relative error ``predicted / measured - 1`` on fitted and held-out shapes.

    Section loops (``launch``) are never fitted: their whole class is a held-out check of the
    launch overhead plus the GEMM table on tiny section GEMMs. Likewise causal attention
    (``attention:causal``) when the table was fitted to non-causal kernels.
    """
    rows = trace.rows
    table = []
    attention = rows[rows["primitive"] == "attention"]
    fitted_attention = attention_rows(rows)
    classes = [
        ("gemm", rows[rows["primitive"] == "gemm"]),
        ("attention", fitted_attention),
        ("memory", rows[rows["primitive"] == "memory"]),
    ]
    for op_class, members in classes:
        fitted, held = split_heldout(members, "traffic_bytes" if op_class == "memory" else "flops")
        if len(fitted):
            errors = [predicted_s(part, cluster) / part["median_s"].to_numpy() - 1 for part in (fitted, held)]
            table.append(_error_row(op_class, fitted, held, *errors))
    unfitted = attention.drop(fitted_attention.index)
    if len(unfitted):  # causal attention, checked against the table of full kernels
        table.append(
            _error_row(
                "attention:causal",
                unfitted.iloc[0:0],
                unfitted,
                np.array([]),
                predicted_s(unfitted, cluster) / unfitted["median_s"].to_numpy() - 1,
            )
        )
    launch = rows[rows["primitive"] == "launch"]
    fitted, held = launch[launch["m"].isna()], launch[launch["m"].notna()]
    if len(launch):
        errors = [predicted_s(part, cluster) / part["median_s"].to_numpy() - 1 for part in (fitted, held)]
        table.append(_error_row("launch", fitted, held, *errors))
    comm = rows[rows["primitive"] == "comm"]
    for link in links:
        fitted, held = split_heldout(comm[(comm["op"] == link.op) & (comm["path"] == link.path)], "bytes")
        errors = [link.time_s(part["bytes"].to_numpy()) / part["median_s"].to_numpy() - 1 for part in (fitted, held)]
        table.append(_error_row(f"comm:{link.op}", fitted, held, *errors))
    return pd.DataFrame(table)
