"""Replay: op times taken from a measured trace instead of the roofline estimate.

:class:`ReplayTimer` implements :class:`~secmoe_sim.plan.kernel_time.KernelTimer`. For one launch of a kernel
it looks up the measured time of the same primitive in the layer's dtype:

1. **exact**: a measured row with the very same shape gives its median time;
2. **interpolated**: rows that share the shape's fixed dimensions (GEMM: ``k, n``; attention:
   ``tokens, head_dim, causal``) and differ in the dimension that grows with the data (GEMM:
   ``m x count`` rows; attention: ``batch x heads`` instances; memory: bytes) are interpolated
   linearly in log time against log size, through their monotone (isotonic least-squares) fit, so
   more work is never faster;
3. **flops_interpolated**: without such rows, the same in log time against log FLOPs (memory:
   bytes) over every row of the primitive (attention: of the same causal flag);
4. **extrapolated**: outside the measured range of the curve used. Along a curve of rule 2, the
   measured time at the curve's nearer end, scaled by how the fallback timer (the scenario's
   roofline with its shape models) says the op's time changes from that end to the requested
   size: the measurement sets the level, the model the scaling. Along a FLOPs curve of rule 3
   (no shape to scale), below the range the smallest measured time and above it the largest
   measured shape's time after launch scaled in proportion to the size (its rate held). Every
   extrapolated op is flagged;
5. **roofline**: a primitive the trace does not measure at all falls back to the scenario's
   roofline (flagged too).

Attention is looked up among the rows of its path: a layer with ``attention: materialized`` among the
math path's rows (``path`` ``math``), every other among the fused ones; a trace without rows of that
path leaves the kernel to the roofline. A measured time includes the per-op dispatch cost, so the timer charges the trace's launch
overhead (:func:`~secmoe_sim.calibrate.trace.launch_overhead_s`) as the launch and the rest as
the kernel: at a measured shape, launch + kernel is exactly the measured median. A kernel of
``launches`` launches costs ``launches`` looked-up launches. A backward kernel (``is_backward``)
costs twice its forward measurement, the simulator's convention for backward ops.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import isotonic_regression

from secmoe_sim.calibrate import CalibrationError
from secmoe_sim.calibrate.trace import (
    SHAPE_COLUMNS,
    Trace,
    attention_counts,
    file_sha256,
    gemm_counts,
    launch_overhead_s,
    shape_class_rows,
)
from secmoe_sim.plan.costs import Kernel, backward_factor
from secmoe_sim.plan.kernel_time import KernelTimer, RooflineTimer
from secmoe_sim.plan.steps import LayerPlan
from secmoe_sim.spec.scenario import Scenario

KINDS = ("exact", "interpolated", "flops_interpolated", "extrapolated", "roofline")
UNMEASURED_WARNING_FRACTION = 0.1  # above this share of kernels timed outside the trace, the replay warns
REPLAYED = ("gemm", "attention", "memory")
SHAPE_MATCH = 1e-9  # relative tolerance of a shape at the end of a curve
SHAPE_DIGITS = 9  # significant digits that identify a shape for an exact match
MATERIALIZED = "attention:math"  # the table of the math path's attention rows (trace.shape_class_rows)


@dataclass(frozen=True)
class Lookup:
    """The measured time of one forward launch (dispatch included) and how it was obtained."""

    time_s: float
    kind: str
    anchor_ratio: float = 1.0  # an extrapolation along a shape curve: the measured end's size over the requested one


@dataclass(frozen=True)
class _Curve:
    """Monotone log-time against log-size points of one set of rows."""

    log_size: np.ndarray
    log_time: np.ndarray

    @classmethod
    def of(cls, sizes: np.ndarray, times_s: np.ndarray) -> _Curve:
        points = pd.DataFrame({"size": np.log(sizes), "time": np.log(times_s)}).groupby("size")["time"].mean()
        return cls(points.index.to_numpy(), isotonic_regression(points.to_numpy()).x)

    def at(self, size: float, launch_s: float) -> tuple[float, bool]:
        """Time at ``size`` and whether it was extrapolated (below the range: the smallest time; above:
        the largest shape's rate held)."""
        log_size = np.log(size)
        if log_size < self.log_size[0] - SHAPE_MATCH:
            return float(np.exp(self.log_time[0])), True
        if log_size > self.log_size[-1] + SHAPE_MATCH:
            largest_s = float(np.exp(self.log_time[-1]))
            work_s = max(largest_s - launch_s, 0.0) * float(np.exp(log_size - self.log_size[-1]))
            return launch_s + work_s, True
        return float(np.exp(np.interp(log_size, self.log_size, self.log_time))), False

    def nearer_end(self, size: float) -> tuple[float, float] | None:
        """``(end size, its time)`` when ``size`` lies outside the range, else None."""
        log_size = np.log(size)
        if log_size < self.log_size[0] - SHAPE_MATCH:
            return float(np.exp(self.log_size[0])), float(np.exp(self.log_time[0]))
        if log_size > self.log_size[-1] + SHAPE_MATCH:
            return float(np.exp(self.log_size[-1])), float(np.exp(self.log_time[-1]))
        return None


def _scale(primitive: str, shape: dict) -> float:
    """The dimension that grows with the data."""
    if primitive == "gemm":
        return shape["m"] * shape["count"]
    if primitive == "attention":
        return shape["batch"] * shape["heads"]
    return shape["bytes"]


def _fixed(primitive: str, shape: dict) -> tuple:
    """The dimensions that identify a curve along the growing one."""
    if primitive == "gemm":
        return (shape["k"], shape["n"])
    if primitive == "attention":
        return (shape["tokens"], shape["head_dim"], shape["causal"])
    return ()


def _size(primitive: str, shape: dict, dtype: str) -> float:
    """FLOPs (GEMM, attention) or bytes (memory) of one launch."""
    if primitive == "gemm":
        return gemm_counts(shape["m"], shape["k"], shape["n"], shape["count"], dtype)["flops"]
    if primitive == "attention":
        return attention_counts(shape["batch"], shape["heads"], shape["tokens"], shape["head_dim"], bool(shape["causal"]), dtype)[
            "flops"
        ]
    return shape["bytes"]


class _PrimitiveTable:
    """The measured rows of one primitive in one dtype, indexed for the lookup rules."""

    def __init__(self, primitive: str, rows: pd.DataFrame, dtype: str, launch_s: float):
        self.primitive, self.dtype, self.launch_s = primitive, dtype, launch_s
        columns = SHAPE_COLUMNS[primitive]
        shapes = [dict(zip(columns, values)) for values in rows[list(columns)].itertuples(index=False, name=None)]
        times = rows["median_s"].to_numpy()
        self.exact: dict[tuple, list[float]] = {}
        for shape, time_s in zip(shapes, times):
            self.exact.setdefault(self._key(shape), []).append(time_s)
        groups: dict[tuple, list[tuple[float, float]]] = {}
        for shape, time_s in zip(shapes, times):
            groups.setdefault(_fixed(primitive, shape), []).append((_scale(primitive, shape), time_s))
        self.groups = {key: _Curve.of(*map(np.array, zip(*points))) for key, points in groups.items()}
        by_family: dict[tuple, list[tuple[float, float]]] = {}
        for shape, time_s in zip(shapes, times):
            by_family.setdefault(self._family(shape), []).append((_size(primitive, shape, dtype), time_s))
        self.families = {key: _Curve.of(*map(np.array, zip(*points))) for key, points in by_family.items()}

    def _family(self, shape: dict) -> tuple:
        return (shape["causal"],) if self.primitive == "attention" else ()

    def _key(self, shape: dict) -> tuple:
        return tuple(float(f"{shape[c]:.{SHAPE_DIGITS}g}") for c in SHAPE_COLUMNS[self.primitive])

    def lookup(self, shape: dict) -> Lookup:
        times = self.exact.get(self._key(shape))
        if times is not None:
            return Lookup(float(np.median(times)), "exact")
        group = self.groups.get(_fixed(self.primitive, shape))
        if group is not None:
            size = _scale(self.primitive, shape)
            end = group.nearer_end(size)
            if end is not None:  # the fallback model scales the measured end to the requested size
                return Lookup(end[1], "extrapolated", anchor_ratio=end[0] / size)
            time_s, _ = group.at(size, self.launch_s)
            return Lookup(time_s, "interpolated")
        family = self.families.get(self._family(shape))
        if family is None:
            return Lookup(np.nan, "roofline")
        time_s, extrapolated = family.at(_size(self.primitive, shape, self.dtype), self.launch_s)
        return Lookup(time_s, "extrapolated" if extrapolated else "flops_interpolated")


class ReplayTimer:
    """Kernel times from a trace (rules in the module docstring); ``fallback`` for unmeasured primitives."""

    def __init__(self, trace: Trace, dtype: str, fallback: KernelTimer):
        rows = trace.rows[trace.rows["dtype"] == dtype]
        measured = sorted(set(rows["primitive"]) & set(REPLAYED))
        if not measured:
            dtypes = sorted(set(trace.rows.loc[trace.rows["primitive"].isin(REPLAYED), "dtype"]))
            raise CalibrationError(
                f"the trace has no GEMM, attention or memory timings in {dtype} (it has: {', '.join(dtypes) or 'none'})"
            )
        self.fallback = fallback
        self.launch_s = launch_overhead_s(trace)
        launch_s = self.launch_s or 0.0
        classes = {**shape_class_rows(rows), "memory": rows[rows["primitive"] == "memory"]}  # attention: a table per path
        self.tables = {
            name: _PrimitiveTable(str(members["primitive"].iloc[0]), members, dtype, launch_s)
            for name, members in classes.items()
            if len(members)
        }
        self._found: dict[tuple, Lookup] = {}

    @classmethod
    def for_scenario(cls, trace: Trace, scenario: Scenario) -> ReplayTimer:
        layer = scenario.workload.layer
        return cls(trace, layer.dtype, RooflineTimer(scenario.hardware.gpu, layer.dtype))

    def lookup(self, kernel: Kernel) -> Lookup:
        """One forward launch of ``kernel``: its measured time and how it was found."""
        key = (kernel.primitive, kernel.shape, kernel.launches)
        if key not in self._found:
            materialized = kernel.primitive == "attention" and kernel.dims().get("materialized")
            table = self.tables.get(MATERIALIZED if materialized else kernel.primitive)
            if table is None or not kernel.shape:
                self._found[key] = Lookup(np.nan, "roofline")
            else:
                shape = kernel.dims()
                first = kernel.shape[0][0]
                shape[first] = shape[first] / kernel.launches
                self._found[key] = table.lookup(shape)
        return self._found[key]

    def kernel_time_s(self, kernel: Kernel) -> float:
        found = self.lookup(kernel)
        if found.kind == "roofline":
            return self.fallback.kernel_time_s(kernel)
        per_launch_s = max(found.time_s - (self.launch_s or 0.0), 0.0)
        if found.anchor_ratio != 1.0:
            one = replace(kernel.scaled(1.0 / kernel.launches), launches=1, is_backward=False)
            per_launch_s *= self.fallback.kernel_time_s(one) / self.fallback.kernel_time_s(one.scaled(found.anchor_ratio))
        factor = backward_factor(kernel.primitive) if kernel.is_backward else 1.0
        return kernel.launches * per_launch_s * factor

    def launch_time_s(self, kernel: Kernel) -> float:
        if self.launch_s is None or self.lookup(kernel).kind == "roofline":
            return self.fallback.launch_time_s(kernel)
        return kernel.launches * self.launch_s


# --- what the replay did, for the outputs ------------------------------------------------------


@dataclass(frozen=True)
class ReplayReport:
    """Per (entry, E) how each kernel was timed, and every extrapolated or roofline op."""

    trace_path: Path
    counts: pd.DataFrame
    flagged: pd.DataFrame

    def summary_columns(self, summary: pd.DataFrame) -> pd.DataFrame:
        """The summary with ``replay_<kind>_ops`` columns added."""
        return summary.merge(self.counts, on=["label", "num_experts"], how="left")

    def unmeasured_fraction(self) -> float:
        """Share of kernels timed outside the trace's measured range (extrapolated, or by the roofline)."""
        totals = self.counts[[f"replay_{kind}_ops" for kind in KINDS]].sum()
        total = int(totals.sum())
        unmeasured = int(totals["replay_extrapolated_ops"] + totals["replay_roofline_ops"])
        return unmeasured / total if total else 0.0

    def metadata(self) -> dict:
        totals = self.counts[[f"replay_{kind}_ops" for kind in KINDS]].sum()
        return {
            "trace": str(self.trace_path),
            "trace_sha256": file_sha256(self.trace_path),
            **{name: int(value) for name, value in totals.items()},
            "unmeasured_fraction": self.unmeasured_fraction(),
            "flagged_ops_file": "replay_flagged_ops.csv" if len(self.flagged) else None,
        }


def census(plans: list[LayerPlan], timer: ReplayTimer, trace_path: Path) -> ReplayReport:
    """Classify every kernel of every plan by the lookup rule that timed it."""
    counts, flagged = [], []
    for plan in plans:
        tally: Counter = Counter()
        seen = set()
        for gpu, program in enumerate(plan.programs):
            for step in program:
                if not isinstance(step, Kernel):
                    continue
                kind = timer.lookup(step).kind
                tally[kind] += 1
                key = (step.name, step.shape, step.launches, step.is_backward)
                if kind in ("extrapolated", "roofline") and key not in seen:
                    seen.add(key)
                    flagged.append(
                        {
                            "label": plan.label,
                            "num_experts": plan.num_experts,
                            "op": step.name,
                            "kind": kind,
                            "primitive": step.primitive,
                            "launches": step.launches,
                            "shape": " ".join(f"{k}={v:g}" for k, v in step.shape),
                        }
                    )
        counts.append(
            {"label": plan.label, "num_experts": plan.num_experts, **{f"replay_{kind}_ops": tally[kind] for kind in KINDS}}
        )
    return ReplayReport(trace_path, pd.DataFrame(counts), pd.DataFrame(flagged))


def replay_results(scenario: Scenario, seed: int | None, trace: Trace, trace_path: Path):
    """Simulate ``scenario`` with replayed op times; the results carry the replay columns."""
    from secmoe_sim.simulation import layer_plans, simulate

    timer = ReplayTimer.for_scenario(trace, scenario)
    results = simulate(scenario, seed=seed, timer=timer)
    report = census(layer_plans(scenario, results.seed), timer, trace_path)
    return replace(results, summary=report.summary_columns(results.summary)), report
