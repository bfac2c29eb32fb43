"""Fitting the simulated overhead against E: which shape does it have, and how sure are we?

Every form is linear in its coefficients: ``overhead(E) = basis(E) @ coefficients``, fitted by least
squares (scipy ``curve_fit``, whose covariance gives the standard errors):

==================  =======================================  =====================================
form                overhead(E)                              coefficients
==================  =======================================  =====================================
``constant``        ``gamma``                                gamma
``quadratic``       ``alpha E^2`` (the paper's)              alpha
``quadratic_full``  ``alpha E^2 + beta E + gamma``           alpha, beta, gamma
``linear``          ``beta E + gamma``                       beta, gamma
``log``             ``c log E + gamma``                      c, gamma
``physical``        ``o M(E) + eta T(E) + gamma``            per_message_s, traffic_factor, gamma
==================  =======================================  =====================================

``physical`` is the simulator's own shape (docs/model.md, section 6): ``M(E)`` the messages a GPU
posts per layer and ``T(E)`` the time its bottleneck link needs for the bytes it moves, both
computed from the placement and the hardware (:mod:`secmoe_sim.analysis.physical`); it is built
per case and added to the standard forms.

A sweep has few points (a handful of feasible E), so forms are ranked by AICc, the small-sample
Akaike criterion ``n ln(RSS/n) + 2k + 2k(k+1)/(n-k-1)``, and only forms with at least
``k + RANK_MARGIN`` points take part: with fewer, the AICc penalty alone decides (four points let a
one-coefficient form beat any two-coefficient form unless its residuals are twenty times larger).
The residual variance ``RSS/n`` is floored at ``(RESIDUAL_FLOOR x mean |overhead|)^2`` so that a
perfect fit (a simulator is deterministic, so exact fits happen) does not score minus infinity.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

RESIDUAL_FLOOR = 1e-6  # relative to the mean overhead: below this, residuals are rounding noise
RANK_MARGIN = 3  # a form with k coefficients is ranked only with at least k + 3 points
PAPER_R2 = 0.9  # the paper's form "holds" only where it also explains this much of the variance
QUADRATIC_FORMS = ("quadratic", "quadratic_full")

Basis = Callable[[np.ndarray], np.ndarray]  # E (n,) -> design matrix (n, k)


@dataclass(frozen=True)
class Form:
    """A shape of the overhead: its design matrix as a function of E, and its coefficient names."""

    name: str
    formula: str
    coefficients: tuple[str, ...]
    basis: Basis

    def __call__(self, experts: np.ndarray, values: np.ndarray) -> np.ndarray:
        return np.asarray(self.basis(np.asarray(experts, dtype=float)) @ np.asarray(values, dtype=float), dtype=float)


def _columns(*functions: Callable[[np.ndarray], np.ndarray]) -> Basis:
    return lambda e: np.column_stack([np.broadcast_to(np.asarray(f(e), dtype=float), e.shape) for f in functions])


STANDARD_FORMS = (
    Form("constant", "gamma", ("gamma",), _columns(np.ones_like)),
    Form("quadratic", "alpha E^2", ("alpha",), _columns(np.square)),
    Form(
        "quadratic_full", "alpha E^2 + beta E + gamma", ("alpha", "beta", "gamma"), _columns(np.square, lambda e: e, np.ones_like)
    ),
    Form("linear", "beta E + gamma", ("beta", "gamma"), _columns(lambda e: e, np.ones_like)),
    Form("log", "c log E + gamma", ("c", "gamma"), _columns(np.log, np.ones_like)),
)


def physical_form(messages: Callable[[np.ndarray], np.ndarray], traffic_s: Callable[[np.ndarray], np.ndarray]) -> Form:
    """The simulator's shape for one case: ``per_message_s M(E) + traffic_factor T(E) + gamma``.

    ``messages`` and ``traffic_s`` give, per E, the messages a GPU posts and the bottleneck-link time
    of its bytes (in the view's units: one GPU, or all GPUs summed). Fitted to data made by the
    hardware the coefficients are the per-message overhead, ~1 and the fixed costs.
    """
    return Form(
        "physical",
        "o M(E) + eta T(E) + gamma",
        ("per_message_s", "traffic_factor", "gamma"),
        _columns(messages, traffic_s, np.ones_like),
    )


@dataclass(frozen=True)
class FormFit:
    """One form fitted to (E, overhead) points; coefficients and their standard errors in seconds."""

    form: Form
    coefficients: dict[str, float]
    standard_errors: dict[str, float]
    r2: float
    aicc: float
    rss: float
    points: int

    @property
    def name(self) -> str:
        return self.form.name

    @property
    def formula(self) -> str:
        return self.form.formula

    @property
    def ranked(self) -> bool:
        """Whether there are enough points for this form to take part in the ranking."""
        return self.points >= len(self.coefficients) + RANK_MARGIN

    def __call__(self, experts: float | np.ndarray) -> np.ndarray:
        values = [self.coefficients[name] for name in self.form.coefficients]
        return self.form(np.atleast_1d(np.asarray(experts, dtype=float)), np.asarray(values))


def fit_form(form: Form, experts: np.ndarray, overhead_s: np.ndarray) -> FormFit:
    """Least-squares fit of one form; standard errors from the covariance of the estimate."""
    x, y = np.asarray(experts, dtype=float), np.asarray(overhead_s, dtype=float)
    n, k = len(x), len(form.coefficients)
    if n < k:
        raise ValueError(f"{form.name} needs at least {k} points, got {n}")
    scale = max(float(np.mean(np.abs(y))), np.finfo(float).tiny)
    design = form.basis(x)
    start, *_ = np.linalg.lstsq(design, y / scale, rcond=None)  # exact for a linear form: curve_fit refines it
    if n > k:
        with warnings.catch_warnings():  # a singular design leaves the covariance undefined: reported as inf
            warnings.simplefilter("ignore", OptimizeWarning)
            scaled, covariance = curve_fit(lambda e, *p: form(e, np.asarray(p)), x, y / scale, p0=start)
        errors = np.sqrt(np.clip(np.diag(covariance), 0.0, None)) * scale
    else:
        scaled, errors = start, np.full(k, np.inf, dtype=float)
    coefficients = np.asarray(scaled, dtype=float) * scale
    residuals = y - form(x, coefficients)
    rss = float(np.sum(residuals**2))
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - rss / total if total > 0 else (1.0 if rss <= (RESIDUAL_FLOOR * scale) ** 2 * n else 0.0)
    return FormFit(
        form=form,
        coefficients=dict(zip(form.coefficients, map(float, coefficients))),
        standard_errors=dict(zip(form.coefficients, map(float, errors))),
        r2=r2,
        aicc=aicc(rss, n, k, floor_variance=(RESIDUAL_FLOOR * scale) ** 2),
        rss=rss,
        points=n,
    )


def aicc(rss: float, n: int, k: int, floor_variance: float) -> float:
    """Small-sample AIC with a floor on the residual variance; ``inf`` when undefined (n <= k + 1)."""
    if n - k - 1 <= 0:
        return math.inf
    variance = max(rss / n, floor_variance, np.finfo(float).tiny)  # all-zero data: no underflow to log(0)
    return n * math.log(variance) + 2 * k + 2 * k * (k + 1) / (n - k - 1)


def fit_all(experts: np.ndarray, overhead_s: np.ndarray, extra: tuple[Form, ...] = ()) -> dict[str, FormFit]:
    """Every form (the standard ones and ``extra``) that has at least as many points as coefficients, by name."""
    return {
        form.name: fit_form(form, experts, overhead_s)
        for form in STANDARD_FORMS + extra
        if len(experts) >= len(form.coefficients)
    }


def best_form(fits: dict[str, FormFit]) -> str:
    """The ranked form with the lowest AICc (ties to the simpler form); ``""`` when no form can be ranked."""
    ranked = [fit for fit in fits.values() if fit.ranked]
    if not ranked:
        return ""
    return min(ranked, key=lambda f: (f.aicc, len(f.coefficients))).name


def paper_form_holds(fits: dict[str, FormFit], best: str) -> bool:
    """The paper's quadratic form is the ranked best and explains at least ``PAPER_R2`` of the variance."""
    return best in QUADRATIC_FORMS and fits[best].r2 >= PAPER_R2 and fits[best].points >= 1 + RANK_MARGIN
