"""Fit the shape models of GEMM and fused-attention efficiency (:mod:`secmoe_sim.spec.kernel_efficiency`)
to measured kernels, and group the kernels into the shape families the fit is checked across.

A measured GEMM row (``count`` GEMMs ``(m, k) @ (k, n)`` in one call) is modelled as the simulator
times it (:func:`secmoe_sim.plan.costs.kernel_time_s`)::

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
checked on every family with that family left out of it (``calibrate.fit.error_table``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from secmoe_sim.spec.kernel_efficiency import MAX_FIXED_TIME_S, AttentionShapeEfficiency, GemmShapeEfficiency

PRIOR_WEIGHT = 0.05  # log-space pull of each shape parameter towards its prior, against log-time residuals
ROBUST_F_SCALE = 0.1  # soft-L1 loss: log-time residuals beyond ~10% count less than squared
HEAD_DIM_GRANULES = (1, 8, 16, 32)
START_SCALES = (1.0, 0.1, 0.01, 10.0)  # the prior's half sizes and fixed time, and decades around them
TIE_TOLERANCE = 1e-6  # a head-width step must fit better than this (relative cost) to replace the prior's
SMALLEST_TIME_S = 1e-9  # fixed times are fitted in log space: this is "none"
MAX_PARAMETER = 1e12  # half sizes beyond this mean "no such effect" (and fixed times are far below it)
GEMM_DIMENSIONS = ("m", "k", "n")


@dataclass(frozen=True)
class GemmFit:
    """The fitted GEMM model (``peak = 1``) and the asymptotic rate of each dtype."""

    model: GemmShapeEfficiency
    rate_flops_per_s: dict[str, float]
    rows_used: int


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
    residuals: Callable[[np.ndarray], np.ndarray], start: np.ndarray, shape_slice: slice, scales: tuple[float, ...] = ()
) -> tuple[np.ndarray, float]:
    """The best of fits started at ``start`` with its shape parameters (``shape_slice``) scaled by each of
    :data:`START_SCALES`: the saturations trade against each other and the rate, so one start can stop
    in a poor valley (a GPU prior on a CPU trace)."""
    best = None
    for scale in scales or START_SCALES:
        begin = start.copy()
        begin[shape_slice] += np.log(scale)
        result = least_squares(residuals, begin, loss="soft_l1", f_scale=ROBUST_F_SCALE)
        if best is None or result.cost < best.cost:
            best = result
    assert best is not None
    return np.asarray(best.x, dtype=float), float(best.cost)


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
    measured = rows["median_s"].to_numpy()
    return float(np.max(rows["flops"] / np.maximum(measured - launch_s, measured * 0.05)))


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

    theta, _ = _robust(residuals, np.concatenate([[start_rate], prior_log, np.zeros(len(dtypes) - 1)]), shape)
    model = GemmShapeEfficiency.model_validate(unpack(theta)[0].model_dump())
    ratios = np.concatenate([[1.0], np.exp(theta[shape.stop :])])
    rates = {dtype: float(np.exp(theta[0]) * ratios[i]) for i, dtype in enumerate(dtypes)}
    return GemmFit(model, rates, len(rows))


def gemm_family_errors(
    rows: pd.DataFrame, launch_s: float, bandwidth: float, prior: GemmShapeEfficiency, form: str
) -> np.ndarray:
    """``predicted / measured - 1`` of every GEMM row by a fit of ``form`` that left its whole family out
    (the shape_fit model's own times, for choosing a form; the calibration reports the simulator's)."""
    families = gemm_families(rows)
    errors = np.zeros(len(rows))
    for family in set(families):
        held = families == family
        if held.all():
            continue
        fit = fit_gemm(rows[~held], launch_s, bandwidth, prior, form)
        dtypes = rows["dtype"].to_numpy()[held]
        rate = np.array([fit.rate_flops_per_s.get(dtype, np.nan) for dtype in dtypes])
        predicted = _gemm_times_s(fit.model, rate, _Rows.of(rows[held]), launch_s, bandwidth)
        errors[held] = predicted / rows["median_s"].to_numpy()[held] - 1
    return errors


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
    reference = next(dtype for dtype, scale in dtype_scale.items() if scale == 1.0)
    start_rate = np.log(best_rate(rows[rows["dtype"] == reference], launch_s) if (rows["dtype"] == reference).any() else 1.0)
    start = np.concatenate([[start_rate], prior_log])
    relative_rate = rows["dtype"].map(dtype_scale).to_numpy(dtype=float)

    def fit_at(granule: int, scales: tuple[float, ...]) -> tuple[float, AttentionFit]:
        def unpack(theta: np.ndarray) -> tuple[AttentionShapeEfficiency, np.ndarray]:
            half_head_dim, half_context, block, fixed = _bounded(theta[1:5])
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
            return np.concatenate([fit, PRIOR_WEIGHT * (theta[:5] - start)])

        theta, cost = _robust(residuals, start, slice(1, 5), scales)
        model = AttentionShapeEfficiency.model_validate(unpack(theta)[0].model_dump())
        reference_rate = float(np.exp(theta[0]))
        return cost, AttentionFit(model, {dtype: reference_rate * scale for dtype, scale in dtype_scale.items()}, len(rows))

    best: tuple[float, AttentionFit] | None = None
    for granule in dict.fromkeys((prior.head_dim_granule, *HEAD_DIM_GRANULES)):  # the prior's first: it wins ties
        found = fit_at(granule, START_SCALES[:1])  # the step by one start each, then the best step from every start
        if best is None or found[0] < best[0] * (1 - TIE_TOLERANCE):
            best = found
    assert best is not None
    best = fit_at(best[1].model.head_dim_granule, START_SCALES)
    assert best is not None
    return best[1]
