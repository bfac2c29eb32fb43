"""Fit a hardware description to a calibration trace, and say how well it predicts held-out shapes.

The simulator times a kernel as ``launches x launch overhead + fixed time + max(FLOPs / (peak x
efficiency(shape)), bytes / memory bandwidth)`` (:mod:`secmoe_sim.plan.costs`), with the efficiency
of GEMMs and fused attention by shape (:mod:`secmoe_sim.spec.kernel_efficiency`), and a collective
by its communication stack and the links (:mod:`secmoe_sim.plan.communication`,
:mod:`secmoe_sim.plan.topology`). The fit gives each of those numbers from measurements:

* ``host_overhead_per_op``: the median per-op time of the loops of tiny ops, the host's whole cost
  of issuing an op as the framework does (so ``kernel_launch_overhead`` is 0: it is inside); on a
  CPU the host is the device, so ``launch_queue_depth`` is 1 (an op runs as it is issued);
* ``memory_bandwidth``: one bandwidth for the memory-bound ops (copy, softmax, add), least squares
  in log time with the launch overhead fixed;
* ``peak_flops`` and ``gemm_shape_efficiency``: the GEMM shape model and an asymptotic rate per dtype
  (a fixed multiple of the first dtype's), least squares in log time with the launch overhead and
  bandwidth fixed (:mod:`.shape_fit`), in the form (narrowest dimension, or per dimension) whose fits
  predict left-out shape families better; the peak is the highest fitted rate (GEMM or attention),
  the models' peaks are rates over it;
* ``attention_shape_efficiency``: the same for fused attention (causal and non-causal kernels of the
  fused path), with the dtype ratios fixed; ``materialized_attention_shape_efficiency`` the same for
  the math path's kernels, when the trace has them;
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
error). The shape models are also checked across shape families (``gemm:cross_family``,
``attention:cross_family``, ``attention:math:cross_family``): each family (GEMMs by narrowest
dimension, attention by head width) is predicted by a fit that never saw it, and the class's
held-out columns pool those predictions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from secmoe_sim.calibrate import CalibrationError, shape_fit
from secmoe_sim.calibrate.trace import FUSED_PATHS, MATH_PATH, Trace, gemm_counts, launch_overhead_s, row_kernel
from secmoe_sim.plan.costs import Kernel, RooflineTimer, host_time_per_launch_s
from secmoe_sim.plan.topology import Topology
from secmoe_sim.spec.communication import Communication, EfficiencyKnot, HostStagedStack, LinkClass, NcclStack, Protocol, Stack
from secmoe_sim.spec.hardware import GPU, Cluster, Dtype, NVSwitchFabric, PCIeFabric
from secmoe_sim.spec.kernel_efficiency import AttentionShapeEfficiency, GemmShapeEfficiency
from secmoe_sim.spec.units import PERCENT

HOLDOUT_EVERY = 4  # every fourth shape of a class (ordered by size) is held out of the fit
HOLDOUT_OFFSET = 1  # ... starting with the second, so held-out shapes lie inside the fitted range
ROBUST_F_SCALE = 0.1  # soft-L1 loss: log-time residuals beyond ~10% count less than squared (disturbed timings)
ATTENTION_ROWS_TO_FIT = 2
GEMM_FORM_NAMES = {"narrowest": "narrowest-dimension", "per_dimension": "per-dimension"}
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
        raise CalibrationError("the trace needs at least two GEMM shapes to fit the GEMM shape model")
    warnings: tuple[str, ...] = ()
    datasheet = {str(k): v for k, v in base.gpu.peak_flops.items()} if base is not None else {}  # a base the user named
    missing = _unmeasured(trace) if base is None else []
    launch_s = _fit_launch(trace)
    host_s = _host_overhead_s(trace, base, sources)  # never from the default hardware
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
    context = _shape_context(trace, launch_s, bandwidth, base, sources)
    gpu = _fit_gpu(trace, context, host_s, base, datasheet, sources)
    links = tuple(_fit_links(trace.rows))
    cluster = _cluster(gpu, links, trace, base, sources)
    errors = error_table(trace, cluster, links, context)
    return FitResult(cluster=cluster, sources=sources, errors=errors, links=links, warnings=warnings)


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


def _fit_launch(trace: Trace) -> float:
    """The per-op dispatch time inside the trace's timings: measured by its launch rows, else 0 (the
    times of an imported table or profile are the kernels' own)."""
    launch_s = launch_overhead_s(trace)
    return 0.0 if launch_s is None else launch_s


def _host_overhead_s(trace: Trace, base: Cluster | None, sources: dict) -> float:
    """The fitted file's host time per op: measured, else the base hardware's, else 0."""
    launch_s = launch_overhead_s(trace)
    tiny = trace.rows[(trace.rows["primitive"] == "launch") & trace.rows["m"].isna()]
    sources["gpu.kernel_launch_overhead"] = "0: the host time per op below includes the launch"
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


@dataclass(frozen=True)
class ShapeFits:
    """The fitted shape models of one trace: GEMM, fused attention and the math path's attention."""

    gemm: shape_fit.GemmFit
    fused: shape_fit.AttentionFit | None
    math: shape_fit.AttentionFit | None


@dataclass(frozen=True)
class ShapeContext:
    """What the shape fits of a trace share: the launch and bandwidth already fitted, the priors, the floor."""

    launch_s: float
    bandwidth: float
    gemm_prior: GemmShapeEfficiency
    attention_prior: AttentionShapeEfficiency
    floor_s: float
    prior_source: str
    gemm_form: str = "narrowest"

    def fit(self, gemm_rows: pd.DataFrame, fused_rows: pd.DataFrame, math_rows: pd.DataFrame) -> ShapeFits:
        gemm = shape_fit.fit_gemm(gemm_rows, self.launch_s, self.bandwidth, self.gemm_prior, self.gemm_form)
        reference = gemm.rate_flops_per_s[next(iter(gemm.rate_flops_per_s))]
        dtype_scale = {dtype: rate / reference for dtype, rate in gemm.rate_flops_per_s.items()}

        def attention(rows: pd.DataFrame) -> shape_fit.AttentionFit | None:
            if len(rows) < ATTENTION_ROWS_TO_FIT:
                return None
            return shape_fit.fit_attention(rows, self.launch_s, self.bandwidth, dtype_scale, self.attention_prior, self.floor_s)

        return ShapeFits(gemm, attention(fused_rows), attention(math_rows))


def shaped_gpu(gpu: GPU, fits: ShapeFits, datasheet_peak: float = 0.0) -> GPU:
    """``gpu`` with the fitted peaks and shape models: the peak is the highest asymptotic rate (GEMM or
    fused attention), or ``datasheet_peak`` (the base hardware's, for the first dtype) when it is
    higher; each model's peak is its rate over it, so the models say what share of the datasheet the
    kernels reach. The op times are the same either way."""
    first = next(iter(fits.gemm.rate_flops_per_s))
    gemm_rate = fits.gemm.rate_flops_per_s[first]
    peak = max(gemm_rate, fits.fused.rate_flops_per_s[first] if fits.fused else 0.0, datasheet_peak)

    def relative(fit: shape_fit.AttentionFit | None) -> AttentionShapeEfficiency | None:
        return fit.model.model_copy(update={"peak": min(1.0, fit.rate_flops_per_s[first] / peak)}) if fit else None

    gemm_model = fits.gemm.model.model_copy(update={"peak": gemm_rate / peak})
    return gpu.model_copy(
        update={
            "peak_flops": {cast(Dtype, dtype): peak * rate / gemm_rate for dtype, rate in fits.gemm.rate_flops_per_s.items()},
            "compute_efficiency": gemm_model.peak,
            "efficiency_table": None,
            "attention_efficiency_table": None,
            "gemm_shape_efficiency": gemm_model,
            "attention_shape_efficiency": relative(fits.fused),
            "materialized_attention_shape_efficiency": relative(fits.math),
        }
    )


def _fit_gpu(
    trace: Trace, context: ShapeContext, host_s: float, base: Cluster | None, datasheet: dict[str, float], sources: dict
) -> GPU:
    """Peaks and shape models from the GEMM and attention rows; memory and name as recorded."""
    fused_fit = split_heldout(fused_attention_rows(trace.rows), "flops")[0]
    math_fit = split_heldout(math_attention_rows(trace.rows), "flops")[0]
    fits = context.fit(split_heldout(trace.of("gemm"), "flops")[0], fused_fit, math_fit)
    memory_capacity = trace.metadata.get("device_memory_bytes") or (base.gpu.memory_capacity if base else None)
    if memory_capacity is None:
        raise CalibrationError("the trace does not record the device memory; pass --base to take it from a hardware file")
    first = next(iter(fits.gemm.rate_flops_per_s))
    attention_wins = fits.fused is not None and fits.fused.rate_flops_per_s[first] > fits.gemm.rate_flops_per_s[first]
    highest = max(fits.gemm.rate_flops_per_s[first], fits.fused.rate_flops_per_s[first] if fits.fused else 0.0)
    datasheet_peak = datasheet.get(first, 0.0)
    if datasheet_peak >= highest:
        sources["gpu.peak_flops"] = (
            f"the base hardware's {first} peak (above every fitted rate); other dtypes scaled by their fitted GEMM "
            "rate ratio; the shape models' peaks are the fitted rates over it"
        )
    else:
        sources["gpu.peak_flops"] = (
            f"highest fitted asymptotic rate ({'fused attention' if attention_wins else 'GEMM'}); other dtypes scaled "
            "by their fitted GEMM rate ratio; the shape models' peaks are rates over it"
        )
    sources["gpu.gemm_shape_efficiency"] = (
        f"fitted to {fits.gemm.rows_used} GEMM shapes ({', '.join(fits.gemm.rate_flops_per_s)}): "
        f"{sources['gpu.gemm_shape_efficiency']}; a fixed time per kernel; least squares in log time, a weak pull to "
        f"{context.prior_source}'s model"
    )
    sources["gpu.compute_efficiency"] = "the GEMM model's peak (used only by ops no shape model prices)"
    for field, fit, rows, path in (
        ("attention_shape_efficiency", fits.fused, fused_fit, "fused"),
        ("materialized_attention_shape_efficiency", fits.math, math_fit, "math-path"),
    ):
        if fit is None:
            fallback = "absent" if path == "fused" else "absent: materialized attention is priced as batched GEMMs"
            sources[f"gpu.{field}"] = f"not measured (fewer than two {path} attention shapes): {fallback}"
            continue
        flags = set(rows["causal"])
        kind = "causal and non-causal" if len(flags) > 1 else ("causal" if flags == {1.0} else "non-causal")
        sources[f"gpu.{field}"] = (
            f"fitted to {fit.rows_used} {kind} {path} attention shapes: head width (step "
            f"{fit.model.head_dim_granule}), context length, causal block, fixed time per kernel"
        )
    sources["gpu.memory_capacity"] = (
        "device memory recorded in the trace" if trace.metadata.get("device_memory_bytes") else "base hardware"
    )
    template = GPU(
        name=trace.metadata.get("device_name") or (base.gpu.name if base else "unknown"),
        peak_flops={cast(Dtype, first): fits.gemm.rate_flops_per_s[first]},
        memory_bandwidth=context.bandwidth,
        memory_capacity=memory_capacity,
        kernel_launch_overhead=0.0,
        host_overhead_per_op=host_s,
        attention_floor_per_head=context.floor_s,
        launch_queue_depth=_queue_depth(trace, base, sources),
    )
    return shaped_gpu(template, fits, datasheet_peak)


def _shape_context(trace: Trace, launch_s: float, bandwidth: float, base: Cluster | None, sources: dict) -> ShapeContext:
    """The launch, bandwidth, attention floor and priors the shape fits share: the priors are the base
    hardware's models, else the default hardware's."""
    from secmoe_sim.spec.loading import load_cluster

    gpu = base.gpu if base is not None else None
    default = load_cluster(DEFAULT_BASE_HARDWARE).gpu
    gemm = gpu.gemm_shape_efficiency if gpu else None
    attention = gpu.attention_shape_efficiency if gpu else None
    source = "the base hardware" if gemm is not None else f"the {DEFAULT_BASE_HARDWARE} hardware"
    gemm, attention = gemm or default.gemm_shape_efficiency, attention or default.attention_shape_efficiency
    assert gemm is not None and attention is not None, f"{DEFAULT_BASE_HARDWARE} carries both shape models"
    form, scores = shape_fit.choose_gemm_form(split_heldout(trace.of("gemm"), "flops")[0], launch_s, bandwidth, gemm)
    compared = ", ".join(f"{name} {score:.1%}" for name, score in scores.items())
    sources["gpu.gemm_shape_efficiency"] = f"the {GEMM_FORM_NAMES[form]} form" + (
        f", chosen by its error on left-out shape families ({compared})" if scores else ""
    )
    floor_s = _attention_floor_s(trace, launch_s, sources)
    return ShapeContext(launch_s, bandwidth, gemm, attention, floor_s, source, form)


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


def fused_attention_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The fused-attention rows (path ``fused``, or unnamed in older traces), causal or not: what the
    attention model is fitted to."""
    attention = rows[rows["primitive"] == "attention"]
    return attention[attention["path"].isin(FUSED_PATHS)]


def math_attention_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The attention rows of the math path (path ``math``): what the materialized-attention model is fitted to."""
    attention = rows[rows["primitive"] == "attention"]
    return attention[attention["path"] == MATH_PATH]


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


def predicted_s(rows: pd.DataFrame, cluster: Cluster, launch_s: float) -> np.ndarray:
    """The simulator's time for gemm, attention, memory and launch rows on ``cluster``, with ``launch_s``
    per op: the dispatch the trace's timings include (:func:`_fit_launch`)."""
    gpu = cluster.gpu
    times = []
    for _, row in rows.iterrows():
        timer = RooflineTimer(gpu, row["dtype"])
        if row["primitive"] == "launch":
            per_op = launch_s
            if not np.isnan(row["m"]):  # a loop of small section GEMMs: each one a launch and a kernel
                counts = gemm_counts(row["m"], row["k"], row["n"], 1, row["dtype"])
                shape = (("m", row["m"]), ("k", row["k"]), ("n", row["n"]), ("count", 1.0))
                section = Kernel(
                    "section", "calibration", counts["flops"], counts["traffic_bytes"], primitive="gemm", shape=shape
                )
                per_op += timer.kernel_time_s(section)
            times.append(row["count"] * per_op)
        else:
            kernel = row_kernel(row)
            times.append(kernel.launches * launch_s + timer.kernel_time_s(kernel))
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


def error_table(trace: Trace, cluster: Cluster, links: tuple[AlphaBeta, ...], context: ShapeContext) -> pd.DataFrame:
    """Per op class: the relative error ``predicted / measured - 1`` on fitted and held-out shapes.

    Section loops (``launch``) are never fitted: their whole class is a held-out check of the
    launch overhead plus the GEMM model on tiny section GEMMs. The ``:cross_family`` classes hold
    out whole shape families (:func:`cross_family_errors`).
    """
    rows = trace.rows
    table = []
    shaped = {
        "gemm": rows[rows["primitive"] == "gemm"],
        "attention": fused_attention_rows(rows),
        "attention:math": math_attention_rows(rows),
    }
    for op_class, members in [*shaped.items(), ("memory", rows[rows["primitive"] == "memory"])]:
        fitted, held = split_heldout(members, "traffic_bytes" if op_class == "memory" else "flops")
        if len(fitted):
            errors = [_errors(part, cluster, context.launch_s) for part in (fitted, held)]
            table.append(_error_row(op_class, fitted, held, *errors))
    for op_class, members in shaped.items():
        held_errors = cross_family_errors(trace, members, op_class, cluster, context)
        if held_errors is not None:
            table.append(_error_row(f"{op_class}:cross_family", members.iloc[0:0], members, np.array([]), held_errors))
    launch = rows[rows["primitive"] == "launch"]
    fitted, held = launch[launch["m"].isna()], launch[launch["m"].notna()]
    if len(launch):
        errors = [_errors(part, cluster, context.launch_s) for part in (fitted, held)]
        table.append(_error_row("launch", fitted, held, *errors))
    comm = rows[rows["primitive"] == "comm"]
    for link in links:
        fitted, held = split_heldout(comm[(comm["op"] == link.op) & (comm["path"] == link.path)], "bytes")
        errors = [link.time_s(part["bytes"].to_numpy()) / part["median_s"].to_numpy() - 1 for part in (fitted, held)]
        table.append(_error_row(f"comm:{link.op}", fitted, held, *errors))
    return pd.DataFrame(table)


def _errors(rows: pd.DataFrame, cluster: Cluster, launch_s: float) -> np.ndarray:
    return predicted_s(rows, cluster, launch_s) / rows["median_s"].to_numpy() - 1


def cross_family_errors(
    trace: Trace, members: pd.DataFrame, op_class: str, cluster: Cluster, context: ShapeContext
) -> np.ndarray | None:
    """The error of every row of ``members`` (the rows of ``op_class``: ``gemm``, ``attention`` or
    ``attention:math``) predicted by a fit that left its whole shape family out (None with fewer than
    two families). The refit is the calibration's own (same launch, bandwidth, floor and priors; the
    other classes fitted on all their rows), the prediction the simulator's."""
    families = shape_fit.gemm_families(members) if op_class == "gemm" else shape_fit.attention_families(members)
    if len(set(families)) < 2:
        return None
    classes = {
        "gemm": trace.of("gemm"),
        "attention": fused_attention_rows(trace.rows),
        "attention:math": math_attention_rows(trace.rows),
    }
    errors = np.empty(len(members))
    for family in sorted(set(families)):
        held = families == family
        fits = context.fit(*(members[~held] if name == op_class else rows for name, rows in classes.items()))
        first = next(iter(fits.gemm.rate_flops_per_s))
        peaks = {str(k): v for k, v in cluster.gpu.peak_flops.items()}
        refitted = cluster.model_copy(update={"gpu": shaped_gpu(cluster.gpu, fits, peaks.get(first, 0.0))})
        errors[held] = _errors(members[held], refitted, context.launch_s)
    return errors
