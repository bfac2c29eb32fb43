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
* alpha-beta of each communication path, the stack and the fabric: :mod:`.link_fit`.

Every fit is least squares with a soft-L1 loss on log-time residuals, every fourth shape of a class
held out (:mod:`.fitting`); the error table of the simulator's own predictions on fitted, held-out and
left-out-family shapes is :mod:`.fit_errors`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd

from secmoe_sim.calibrate import CalibrationError, shape_fit
from secmoe_sim.calibrate.fit_errors import error_table
from secmoe_sim.calibrate.fitting import robust_fit, split_heldout, work_s
from secmoe_sim.calibrate.link_fit import COMM_FABRIC_OP, AlphaBeta, fit_links, fitted_cluster
from secmoe_sim.calibrate.shape_fit import ShapeContext, shaped_gpu
from secmoe_sim.calibrate.trace import Trace, launch_overhead_s, shape_class_rows
from secmoe_sim.plan.kernel_time import host_time_per_launch_s
from secmoe_sim.spec.hardware import GPU, Cluster, Dtype


@dataclass(frozen=True)
class FitResult:
    """The fitted cluster, where each number came from, and the error table per op class."""

    cluster: Cluster
    sources: dict[str, str]
    errors: pd.DataFrame
    links: tuple[AlphaBeta, ...]
    warnings: tuple[str, ...] = ()  # what came from the documented default base instead of a measurement


def fit_bandwidth(rows: pd.DataFrame, launch_s: float) -> float:
    """Memory bandwidth (bytes/s) that makes ``launch + bytes / bandwidth`` fit the rows."""
    traffic, measured = rows["traffic_bytes"].to_numpy(), rows["median_s"].to_numpy()

    def residuals(theta):
        return np.log((launch_s + traffic / np.exp(theta[0])) / measured)

    start = np.log(np.median(traffic / work_s(measured, launch_s)))
    return float(np.exp(robust_fit(residuals, np.array([start]))[0][0]))


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
    named_base = base  # its datasheet peak is the file's peak; the default hardware's never is
    links = tuple(fit_links(trace.rows))
    measured_launch_s = launch_overhead_s(trace)  # None: the trace has no launch rows
    missing = _unmeasured(trace, links) if base is None else []
    # the per-op dispatch inside the trace's timings: measured, else 0 (an imported table's or profile's
    # times are the kernels' own)
    launch_s = 0.0 if measured_launch_s is None else measured_launch_s
    host_s = _host_overhead_s(trace, measured_launch_s, base, sources)  # never from the default hardware
    if missing:
        from secmoe_sim.spec.loading import load_cluster

        base = load_cluster(DEFAULT_BASE_HARDWARE)
        unmeasured_host = " (the host's time per op is 0: no launch rows)" if measured_launch_s is None else ""
        warnings = (
            (
                f"no --base, and the trace does not measure {', '.join(missing)}: taken from the shipped "
                f"{DEFAULT_BASE_HARDWARE} hardware (with its node shape and launch queue depth){unmeasured_host}; "
                "pass --base for your machine"
            ),
        )
    bandwidth = _fit_memory(trace, launch_s, base, sources)
    context = _shape_context(trace, launch_s, bandwidth, base, sources)
    gpu = _fit_gpu(trace, context, host_s, base, named_base, sources)
    cluster = fitted_cluster(gpu, links, trace, base, sources)
    errors = error_table(trace, cluster, links, context)
    return FitResult(cluster=cluster, sources=sources, errors=errors, links=links, warnings=warnings)


def _unmeasured(trace: Trace, links: tuple[AlphaBeta, ...]) -> list[str]:
    """What a hardware file needs that the trace (and its fitted ``links``) does not measure (and a base would
    have to give)."""
    missing = []
    if trace.of("memory").empty:
        missing.append("memory-bound ops (the memory bandwidth)")
    if not trace.metadata.get("device_memory_bytes"):
        missing.append("the device memory")
    if not any(link.op == COMM_FABRIC_OP for link in links):
        missing.append("an all-to-all sweep (the fabric)")
    return missing


def _host_overhead_s(trace: Trace, launch_s: float | None, base: Cluster | None, sources: dict) -> float:
    """The fitted file's host time per op: measured (``launch_s``), else the base hardware's, else 0."""
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


def _fit_gpu(
    trace: Trace, context: ShapeContext, host_s: float, base: Cluster | None, named_base: Cluster | None, sources: dict
) -> GPU:
    """Peaks and shape models from the GEMM and attention rows; memory and name as recorded."""
    fit_rows = {name: split_heldout(rows, "flops")[0] for name, rows in shape_class_rows(trace.rows).items()}
    fits = context.fit(fit_rows)
    memory_capacity = trace.metadata.get("device_memory_bytes") or (base.gpu.memory_capacity if base else None)
    if memory_capacity is None:
        raise CalibrationError("the trace does not record the device memory; pass --base to take it from a hardware file")
    first = fits.gemm.reference_dtype
    datasheet_peak = float(named_base.gpu.peak_flops.get(cast(Dtype, first), 0.0)) if named_base else 0.0
    if datasheet_peak >= fits.highest_rate:
        sources["gpu.peak_flops"] = (
            f"the base hardware's {first} peak (above every fitted rate); other dtypes scaled by their fitted GEMM "
            "rate ratio; the shape models' peaks are the fitted rates over it"
        )
    else:
        sources["gpu.peak_flops"] = (
            f"highest fitted asymptotic rate ({'fused attention' if fits.fused_is_fastest else 'GEMM'}); other dtypes "
            "scaled by their fitted GEMM rate ratio; the shape models' peaks are rates over it"
        )
    sources["gpu.gemm_shape_efficiency"] = (
        f"fitted to {fits.gemm.rows_used} GEMM shapes ({', '.join(fits.gemm.rate_flops_per_s)}): "
        f"{sources['gpu.gemm_shape_efficiency']}; a fixed time per kernel; least squares in log time, a weak pull to "
        f"{context.prior_source}'s model"
    )
    sources["gpu.compute_efficiency"] = "the GEMM model's peak (used only by ops no shape model prices)"
    for field, fit, rows, path in (
        ("attention_shape_efficiency", fits.fused, fit_rows["attention"], "fused"),
        ("materialized_attention_shape_efficiency", fits.math, fit_rows["attention:math"], "math-path"),
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
        peak_flops={cast(Dtype, first): fits.gemm.rate_flops_per_s[first]},  # shaped_gpu sets the peaks
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
    sources["gpu.gemm_shape_efficiency"] = f"the {shape_fit.GEMM_FORM_NAMES[form]} form" + (
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
