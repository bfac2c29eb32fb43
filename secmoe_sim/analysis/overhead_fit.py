"""Fitting the simulated overhead against E: which shape does it have, and how sure are we?

Four forms, each linear in its coefficients and fitted by least squares (scipy ``curve_fit``,
whose covariance gives the standard errors):

==================  =============================  ==============
form                overhead(E)                    coefficients
==================  =============================  ==============
``quadratic``       ``alpha E^2`` (the paper's)     alpha
``quadratic_full``  ``alpha E^2 + beta E + gamma``  alpha, beta, gamma
``linear``          ``beta E + gamma``              beta, gamma
``log``             ``c log E + gamma``             c, gamma
==================  =============================  ==============

A sweep has few points (a handful of feasible E), so forms are ranked by AICc, the small-sample
Akaike criterion ``n ln(RSS/n) + 2k + 2k(k+1)/(n-k-1)``. The residual variance ``RSS/n`` is
floored at ``(RESIDUAL_FLOOR x mean |overhead|)^2`` so that a perfect fit (a simulator is
deterministic, so exact fits happen) does not score minus infinity and win by rounding noise.
A form with as many coefficients as points minus one or more cannot be ranked (AICc undefined).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

RESIDUAL_FLOOR = 1e-6  # relative to the mean overhead: below this, residuals are rounding noise


def _quadratic(e, alpha):
    return alpha * e**2


def _quadratic_full(e, alpha, beta, gamma):
    return alpha * e**2 + beta * e + gamma


def _linear(e, beta, gamma):
    return beta * e + gamma


def _log(e, c, gamma):
    return c * np.log(e) + gamma


OverheadForm = Callable[..., np.ndarray]
FORMS: dict[str, tuple[OverheadForm, tuple[str, ...]]] = {
    "quadratic": (_quadratic, ("alpha",)),
    "quadratic_full": (_quadratic_full, ("alpha", "beta", "gamma")),
    "linear": (_linear, ("beta", "gamma")),
    "log": (_log, ("c", "gamma")),
}
FORM_FORMULAS = {
    "quadratic": "alpha E^2",
    "quadratic_full": "alpha E^2 + beta E + gamma",
    "linear": "beta E + gamma",
    "log": "c log E + gamma",
}


@dataclass(frozen=True)
class FormFit:
    """One form fitted to (E, overhead) points; coefficients and their standard errors in seconds."""

    form: str
    coefficients: dict[str, float]
    standard_errors: dict[str, float]
    r2: float
    aicc: float
    rss: float
    points: int

    def __call__(self, experts: float | np.ndarray) -> float | np.ndarray:
        function, names = FORMS[self.form]
        return function(np.asarray(experts, dtype=float), *(self.coefficients[n] for n in names))

    @property
    def formula(self) -> str:
        return FORM_FORMULAS[self.form]


def fit_form(form: str, experts: np.ndarray, overhead_s: np.ndarray) -> FormFit:
    """Least-squares fit of one form; standard errors from the covariance of the estimate."""
    function, names = FORMS[form]
    x, y = np.asarray(experts, dtype=float), np.asarray(overhead_s, dtype=float)
    n, k = len(x), len(names)
    if n < k:
        raise ValueError(f"{form} needs at least {k} points, got {n}")
    scale = max(float(np.mean(np.abs(y))), np.finfo(float).tiny)
    # Linear in its coefficients: start from the exact least-squares solution on a scaled problem.
    design = np.column_stack([function(x, *np.eye(k)[i]) for i in range(k)])
    start, *_ = np.linalg.lstsq(design / scale, y / scale, rcond=None)
    if n > k:
        with warnings.catch_warnings():  # a singular design leaves the covariance undefined: reported as inf
            warnings.simplefilter("ignore", OptimizeWarning)
            scaled, covariance = curve_fit(lambda e, *p: function(e, *p), x, y / scale, p0=start)
        errors = np.sqrt(np.clip(np.diag(covariance), 0.0, None)) * scale
    else:
        scaled, errors = start, np.full(k, np.inf, dtype=float)
    coefficients = np.asarray(scaled, dtype=float) * scale
    residuals = y - function(x, *coefficients)
    rss = float(np.sum(residuals**2))
    total = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - rss / total if total > 0 else (1.0 if rss == 0 else 0.0)
    return FormFit(
        form=form,
        coefficients=dict(zip(names, map(float, coefficients))),
        standard_errors=dict(zip(names, map(float, errors))),
        r2=r2,
        aicc=aicc(rss, n, k, floor_variance=(RESIDUAL_FLOOR * scale) ** 2),
        rss=rss,
        points=n,
    )


def aicc(rss: float, n: int, k: int, floor_variance: float) -> float:
    """Small-sample AIC with a floor on the residual variance; ``inf`` when undefined (n <= k + 1)."""
    if n - k - 1 <= 0:
        return math.inf
    variance = max(rss / n, floor_variance)
    return n * math.log(variance) + 2 * k + 2 * k * (k + 1) / (n - k - 1)


def fit_all(experts: np.ndarray, overhead_s: np.ndarray) -> dict[str, FormFit]:
    """Every form that has enough points, by name."""
    fits = {}
    for form, (_, names) in FORMS.items():
        if len(experts) >= len(names):
            fits[form] = fit_form(form, experts, overhead_s)
    return fits


def best_form(fits: dict[str, FormFit]) -> str:
    """The form with the lowest AICc (ties go to the simpler form, listed first by coefficient count)."""
    ranked = sorted(fits.values(), key=lambda f: (f.aicc, len(f.coefficients)))
    return ranked[0].form
