"""Fit the shape models of GEMM and fused-attention efficiency (:mod:`secmoe_sim.spec.kernel_efficiency`)
to measured kernels, and group the kernels into the shape families the fit is checked across.

A measured GEMM row (``count`` GEMMs ``(m, k) @ (k, n)`` in one call) is modelled as the simulator
times it (:func:`secmoe_sim.plan.kernel_time.kernel_time_s`)::

    launch + count x fixed_time + max(FLOPs / (rate[dtype] x e(m, k, n)), bytes / bandwidth)

with ``e`` the model at ``peak = 1`` and ``rate[dtype]`` the asymptotic GEMM rate of each dtype (a
fixed multiple of the first dtype's). An attention row (fused or math path, each fitted apart) the
same way, with the attention model, its own asymptotic rate, and the per-head floor: ``launch +
max(fixed + work, batch x heads x floor)``.

Parameters are fitted in log space by scipy's ``least_squares`` with a soft-L1 loss on log-time
residuals (a few disturbed timings count less), plus a weak pull of every shape parameter towards a
prior (the base hardware's model, or the documented default) and of the asymptotic rate towards the
best rate any row reached: a parameter the rows cannot identify (a trace without narrow shapes, or
without small kernels, or with none near saturation) stays there instead of drifting to wherever it
costs nothing. The attention kernel's head-width step is discrete: the prior's and each
of :data:`HEAD_DIM_GRANULES` is fitted and the best kept (the prior's when the rows cannot tell them
apart: widths that are all multiples of every candidate).

Families (:func:`gemm_families`, :func:`attention_families`): GEMMs by their narrowest dimension
(``m``, ``k`` or ``n``; a tie goes to the earlier of m, k, n), attention by head width. The fit is
checked on every family with that family left out of it (``calibrate.fit_errors.error_table``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd

from secmoe_sim.calibrate.fitting import robust_fit, work_s
from secmoe_sim.spec.hardware import GPU, Dtype
from secmoe_sim.spec.kernel_efficiency import MAX_FIXED_TIME_S, AttentionShapeEfficiency, GemmShapeEfficiency

PRIOR_WEIGHT = 0.05  # log-space pull of each shape parameter towards its prior, against log-time residuals
HEAD_DIM_GRANULES = (1, 8, 16, 32)
START_SCALES = (1.0, 0.1, 0.01, 10.0)  # the prior's half sizes and fixed time, and decades around them
TIE_TOLERANCE = 1e-6  # a head-width step must fit better than this (relative cost) to replace the prior's
SMALLEST_TIME_S = 1e-9  # fixed times are fitted in log space: this is "none"
MAX_PARAMETER = 1e12  # half sizes beyond this mean "no such effect" (and fixed times are far below it)
GEMM_DIMENSIONS = ("m", "k", "n")
ATTENTION_ROWS_TO_FIT = 2


@dataclass(frozen=True)
class GemmFit:
    """The fitted GEMM model (``peak = 1``) and the asymptotic rate of each dtype."""

    model: GemmShapeEfficiency
    rate_flops_per_s: dict[str, float]  # the reference dtype (the rows' most common) first
    rows_used: int

    @property
    def reference_dtype(self) -> str:
        """The dtype whose rate is fitted (the others are fitted multiples of it)."""
        return next(iter(self.rate_flops_per_s))

    @property
    def dtype_scale(self) -> dict[str, float]:
        """Each dtype's rate over the reference dtype's."""
        reference = self.rate_flops_per_s[self.reference_dtype]
        return {dtype: rate / reference for dtype, rate in self.rate_flops_per_s.items()}


@dataclass(frozen=True)
class AttentionFit:
    """A fitted attention model (``peak = 1``) and its asymptotic rate of each dtype."""

    model: AttentionShapeEfficiency
    rate_flops_per_s: dict[str, float]
    rows_used: int


def gemm_families(rows: pd.DataFrame) -> np.ndarray:
    """Each GEMM row's family: the name of its narrowest dimension (a tie to the earlier of m, k, n)."""
    dims = rows[list(GEMM_DIMENSIONS)].to_numpy(dtype=float)
    return np.array(GEMM_DIMENSIONS)[dims.argmin(axis=1)]


def attention_families(rows: pd.DataFrame) -> np.ndarray:
    """Each attention row's family: its head width."""
    return np.array([f"head_dim={int(width)}" for width in rows["head_dim"]])


def _bounded(log_values: np.ndarray) -> list[float]:
    """Shape parameters from their logs, kept inside what the models accept while the fit searches."""
    return [float(v) for v in np.clip(np.exp(log_values), SMALLEST_TIME_S, MAX_PARAMETER)]


def _robust(
    residuals: Callable[[np.ndarray], np.ndarray],
    starts: list[np.ndarray],
    shape_slice: slice,
    scales: tuple[float, ...] = (),
) -> tuple[np.ndarray, float]:
    """The best of fits from each of ``starts`` with its shape parameters (``shape_slice``) scaled by each
    of :data:`START_SCALES`: the saturations trade against each other and the rate, so one start can
    stop in a poor valley (a GPU prior on a CPU trace)."""
    best: tuple[np.ndarray, float] | None = None
    for start in starts:
        for scale in scales or START_SCALES:
            begin = start.copy()
            begin[shape_slice] += np.log(scale)
            found = robust_fit(residuals, begin)
            if best is None or found[1] < best[1]:
                best = found
    assert best is not None
    return best


def _with_measured_fixed_time(start: np.ndarray, fixed_index: int, kernel_s: np.ndarray) -> list[np.ndarray]:
    """``start``, and ``start`` with its fixed time at half the fastest kernel's time (``kernel_s``: each
    row's time per kernel, launch excluded) when that is longer: a fixed time fitted in log space from a
    prior of none (``SMALLEST_TIME_S``) has no slope to climb, so without the second start a floor that
    every small kernel shows would never be found."""
    measured_fixed = float(np.log(max(0.5 * float(np.min(kernel_s)), SMALLEST_TIME_S)))
    if measured_fixed <= start[fixed_index]:
        return [start]
    second = start.copy()
    second[fixed_index] = measured_fixed
    return [start, second]


def held_out_by_family(families: np.ndarray, predicted_without: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Each row's prediction by a fit that left its whole family out: ``predicted_without(held)`` refits
    on the rows outside the mask ``held`` and predicts those inside it (a family that is every row is
    left unpredicted: NaN)."""
    predicted = np.full(len(families), np.nan)
    for family in sorted(set(families)):
        held = families == family
        if not held.all():
            predicted[held] = predicted_without(held)
    return predicted


@dataclass(frozen=True)
class _Rows:
    """The columns of trace rows a fit evaluates on every step, as arrays (taken once, not per evaluation)."""

    m: np.ndarray
    k: np.ndarray
    n: np.ndarray
    count: np.ndarray
    head_dim: np.ndarray
    tokens: np.ndarray
    causal: np.ndarray
    heads: np.ndarray
    flops: np.ndarray
    traffic_bytes: np.ndarray
    measured_s: np.ndarray

    @classmethod
    def of(cls, rows: pd.DataFrame) -> _Rows:
        def column(name: str) -> np.ndarray:
            return rows[name].to_numpy(dtype=float)

        return cls(
            m=column("m"),
            k=column("k"),
            n=column("n"),
            count=column("count"),
            head_dim=column("head_dim"),
            tokens=column("tokens"),
            causal=column("causal") > 0,
            heads=column("batch") * column("heads"),
            flops=column("flops"),
            traffic_bytes=column("traffic_bytes"),
            measured_s=column("median_s"),
        )


def _gemm_times_s(model: GemmShapeEfficiency, rate: np.ndarray, rows: _Rows, launch_s: float, bandwidth: float) -> np.ndarray:
    """The modelled time of each GEMM row (see the module docstring)."""
    work_s = np.maximum(rows.flops / (rate * model.efficiency(rows.m, rows.k, rows.n)), rows.traffic_bytes / bandwidth)
    return launch_s + rows.count * model.fixed_time + work_s


def best_rate(rows: pd.DataFrame, launch_s: float) -> float:
    """The highest rate any row reached (FLOPs over its time after launch): where an asymptotic rate is
    pulled to when the rows do not identify it (every kernel far from saturating)."""
    return float(np.max(rows["flops"] / work_s(rows["median_s"].to_numpy(), launch_s)))


GEMM_FORM_NAMES = {"narrowest": "narrowest-dimension", "per_dimension": "per-dimension"}
GEMM_FORMS: dict[str, tuple[str, ...]] = {  # the half sizes each form fits (fixed_time always); the rest are off
    "narrowest": ("half_dim", "half_flops"),
    "per_dimension": ("half_m", "half_k", "half_n"),
}


def fit_gemm(
    rows: pd.DataFrame, launch_s: float, bandwidth: float, prior: GemmShapeEfficiency, form: str = "narrowest"
) -> GemmFit:
    """The GEMM model of ``form`` (:data:`GEMM_FORMS`) and the rates that fit ``rows`` (see the module docstring)."""
    halves = GEMM_FORMS[form]
    dtypes = list(dict.fromkeys(rows["dtype"].value_counts().index))
    arrays = _Rows.of(rows)
    dtype_index = rows["dtype"].map({dtype: i for i, dtype in enumerate(dtypes)}).to_numpy()
    prior_log = np.log([getattr(prior, name) or 1.0 for name in halves] + [max(prior.fixed_time, SMALLEST_TIME_S)])
    start_rate = np.log(best_rate(rows[rows["dtype"] == dtypes[0]], launch_s))
    shape = slice(1, 2 + len(halves))  # the half sizes and the fixed time

    def unpack(theta: np.ndarray) -> tuple[GemmShapeEfficiency, np.ndarray]:
        *sizes, fixed = _bounded(theta[shape])
        fixed = min(fixed, MAX_FIXED_TIME_S)
        fields: dict[str, float] = dict.fromkeys(("half_dim", "half_flops", "half_m", "half_k", "half_n"), 0.0)
        fields.update(zip(halves, sizes), peak=1.0, fixed_time=fixed)
        model = GemmShapeEfficiency.model_construct(None, **fields)
        scales = np.concatenate([[1.0], np.exp(theta[shape.stop :])])  # the first dtype's rate, then the others' ratios
        return model, float(np.exp(theta[0])) * scales[dtype_index]

    def residuals(theta: np.ndarray) -> np.ndarray:
        model, rate = unpack(theta)
        fit = np.log(_gemm_times_s(model, rate, arrays, launch_s, bandwidth) / arrays.measured_s)
        return np.concatenate([fit, PRIOR_WEIGHT * (theta[: shape.stop] - np.concatenate([[start_rate], prior_log]))])

    start = np.concatenate([[start_rate], prior_log, np.zeros(len(dtypes) - 1)])
    starts = _with_measured_fixed_time(start, shape.stop - 1, work_s(arrays.measured_s, launch_s) / arrays.count)
    theta, _ = _robust(residuals, starts, shape)
    model = GemmShapeEfficiency.model_validate(unpack(theta)[0].model_dump())
    ratios = np.concatenate([[1.0], np.exp(theta[shape.stop :])])
    rates = {dtype: float(np.exp(theta[0]) * ratios[i]) for i, dtype in enumerate(dtypes)}
    return GemmFit(model, rates, len(rows))


def gemm_family_errors(
    rows: pd.DataFrame, launch_s: float, bandwidth: float, prior: GemmShapeEfficiency, form: str
) -> np.ndarray:
    """``predicted / measured - 1`` of every GEMM row by a fit of ``form`` that left its whole family out
    (the shape_fit model's own times, for choosing a form; the calibration reports the simulator's)."""

    def predicted_without(held: np.ndarray) -> np.ndarray:
        fit = fit_gemm(rows[~held], launch_s, bandwidth, prior, form)
        rate = np.array([fit.rate_flops_per_s.get(dtype, np.nan) for dtype in rows["dtype"].to_numpy()[held]])
        return _gemm_times_s(fit.model, rate, _Rows.of(rows[held]), launch_s, bandwidth)

    return held_out_by_family(gemm_families(rows), predicted_without) / rows["median_s"].to_numpy() - 1


def choose_gemm_form(
    rows: pd.DataFrame, launch_s: float, bandwidth: float, prior: GemmShapeEfficiency
) -> tuple[str, dict[str, float]]:
    """The form of :data:`GEMM_FORMS` whose fits predict whole left-out families best (mean absolute
    error; the narrowest-dimension form on a tie or with fewer than two families), and each form's error."""
    if len(set(gemm_families(rows))) < 2:
        return "narrowest", {}
    scores = {form: float(np.nanmean(np.abs(gemm_family_errors(rows, launch_s, bandwidth, prior, form)))) for form in GEMM_FORMS}
    return min(scores, key=lambda form: (scores[form], form != "narrowest")), scores


def _attention_times_s(
    model: AttentionShapeEfficiency, rate: np.ndarray, rows: _Rows, launch_s: float, bandwidth: float, floor_s: float
) -> np.ndarray:
    """The modelled time of each attention row (see the module docstring)."""
    efficiency = model.efficiency(rows.head_dim, rows.tokens, rows.tokens, rows.causal)
    work_s = np.maximum(rows.flops / (rate * efficiency), rows.traffic_bytes / bandwidth)
    return launch_s + np.maximum(model.fixed_time + work_s, rows.heads * floor_s)


def fit_attention(
    rows: pd.DataFrame,
    launch_s: float,
    bandwidth: float,
    dtype_scale: dict[str, float],
    prior: AttentionShapeEfficiency,
    floor_s: float,
) -> AttentionFit:
    """The attention model and rate that fit ``rows``, at the best head-width step; the dtypes keep
    the GEMM fit's rate ratios (``dtype_scale``, 1 for the reference dtype whose rate is fitted)."""
    arrays = _Rows.of(rows)
    prior_log = np.log(
        [prior.half_head_dim or 1.0, prior.half_context or 1.0, prior.causal_block or 1.0, max(prior.fixed_time, SMALLEST_TIME_S)]
    )
    reference = next(iter(dtype_scale))  # the GEMM fit's reference dtype comes first
    start_rate = np.log(best_rate(rows[rows["dtype"] == reference], launch_s) if (rows["dtype"] == reference).any() else 1.0)
    start = np.concatenate([[start_rate], prior_log])
    shape = slice(1, 5)  # theta: the rate, then the half head width, half context, causal block and fixed time
    starts = _with_measured_fixed_time(start, shape.stop - 1, work_s(arrays.measured_s, launch_s))
    relative_rate = rows["dtype"].map(dtype_scale).to_numpy(dtype=float)

    def fit_at(granule: int, scales: tuple[float, ...]) -> tuple[float, AttentionFit]:
        def unpack(theta: np.ndarray) -> tuple[AttentionShapeEfficiency, np.ndarray]:
            half_head_dim, half_context, block, fixed = _bounded(theta[shape])
            fixed = min(fixed, MAX_FIXED_TIME_S)
            model = AttentionShapeEfficiency.model_construct(
                peak=1.0,
                head_dim_granule=granule,
                half_head_dim=half_head_dim,
                half_context=half_context,
                causal_block=block,
                fixed_time=fixed,
            )
            return model, float(np.exp(theta[0])) * relative_rate

        def residuals(theta: np.ndarray) -> np.ndarray:
            model, rate = unpack(theta)
            fit = np.log(_attention_times_s(model, rate, arrays, launch_s, bandwidth, floor_s) / arrays.measured_s)
            return np.concatenate([fit, PRIOR_WEIGHT * (theta[: shape.stop] - start)])

        theta, cost = _robust(residuals, starts, shape, scales)
        model = AttentionShapeEfficiency.model_validate(unpack(theta)[0].model_dump())
        reference_rate = float(np.exp(theta[0]))
        return cost, AttentionFit(model, {dtype: reference_rate * scale for dtype, scale in dtype_scale.items()}, len(rows))

    best: tuple[float, AttentionFit] | None = None
    for granule in dict.fromkeys((prior.head_dim_granule, *HEAD_DIM_GRANULES)):  # the prior's first: it wins ties
        found = fit_at(granule, START_SCALES[:1])  # the step by one start each, then the best step from every start
        if best is None or found[0] < best[0] * (1 - TIE_TOLERANCE):
            best = found
    assert best is not None
    return fit_at(best[1].model.head_dim_granule, START_SCALES)[1]


@dataclass(frozen=True)
class ShapeFits:
    """The fitted shape models of one trace: GEMM, fused attention and the math path's attention."""

    gemm: GemmFit
    fused: AttentionFit | None
    math: AttentionFit | None

    @property
    def highest_rate(self) -> float:
        """The highest asymptotic rate of the reference dtype, GEMM or fused attention."""
        dtype = self.gemm.reference_dtype
        return max(self.gemm.rate_flops_per_s[dtype], self.fused.rate_flops_per_s[dtype] if self.fused else 0.0)

    @property
    def fused_is_fastest(self) -> bool:
        return (
            self.fused is not None
            and self.fused.rate_flops_per_s[self.gemm.reference_dtype] > self.gemm.rate_flops_per_s[self.gemm.reference_dtype]
        )


@dataclass(frozen=True)
class ShapeContext:
    """What the shape fits of a trace share: the launch and bandwidth already fitted, the priors, the
    attention floor, the GEMM form (and where the priors came from, for the file's comments)."""

    launch_s: float
    bandwidth: float
    gemm_prior: GemmShapeEfficiency
    attention_prior: AttentionShapeEfficiency
    floor_s: float
    prior_source: str
    gemm_form: str = "narrowest"

    def fit(self, rows_by_class: dict[str, pd.DataFrame]) -> ShapeFits:
        """The three models fitted to the rows of each shape class (``calibrate.trace.shape_class_rows``);
        an attention class with fewer than :data:`ATTENTION_ROWS_TO_FIT` rows gets no model."""
        gemm = fit_gemm(rows_by_class["gemm"], self.launch_s, self.bandwidth, self.gemm_prior, self.gemm_form)

        def attention(rows: pd.DataFrame) -> AttentionFit | None:
            if len(rows) < ATTENTION_ROWS_TO_FIT:
                return None
            return fit_attention(rows, self.launch_s, self.bandwidth, gemm.dtype_scale, self.attention_prior, self.floor_s)

        return ShapeFits(gemm, attention(rows_by_class["attention"]), attention(rows_by_class["attention:math"]))


def shaped_gpu(gpu: GPU, fits: ShapeFits, datasheet_peak: float = 0.0) -> GPU:
    """``gpu`` with the fitted peaks and shape models: the peak is the highest asymptotic rate (GEMM or
    fused attention), or ``datasheet_peak`` (the base hardware's, for the reference dtype) when it is
    higher; each model's peak is its rate over it, so the models say what share of the datasheet the
    kernels reach. The op times are the same either way."""
    dtype = fits.gemm.reference_dtype
    gemm_rate = fits.gemm.rate_flops_per_s[dtype]
    peak = max(fits.highest_rate, datasheet_peak)

    def relative(fit: AttentionFit | None) -> AttentionShapeEfficiency | None:
        return fit.model.model_copy(update={"peak": min(1.0, fit.rate_flops_per_s[dtype] / peak)}) if fit else None

    gemm_model = fits.gemm.model.model_copy(update={"peak": gemm_rate / peak})
    return gpu.model_copy(
        update={
            "peak_flops": {cast(Dtype, name): peak * scale for name, scale in fits.gemm.dtype_scale.items()},
            "compute_efficiency": gemm_model.peak,
            "efficiency_table": None,
            "attention_efficiency_table": None,
            "gemm_shape_efficiency": gemm_model,
            "attention_shape_efficiency": relative(fits.fused),
            "materialized_attention_shape_efficiency": relative(fits.math),
        }
    )
