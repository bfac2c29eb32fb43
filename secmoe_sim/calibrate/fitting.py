"""What every calibration fit shares: scipy's least squares with a soft-L1 loss, the time a timing
spent after its launch, and the held-out split every op class is checked on.

The soft-L1 loss makes log-time residuals beyond about 10% count linearly rather than squared, so a
few timings disturbed by other processes do not drag a fit.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

ROBUST_F_SCALE = 0.1  # soft-L1 loss: log-time residuals beyond ~10% count less than squared (disturbed timings)
MIN_WORK_SHARE = 0.05  # a timing's work is at least this share of it, however large the launch it includes
HOLDOUT_EVERY = 4  # every fourth shape of a class (ordered by size) is held out of the fit
HOLDOUT_OFFSET = 1  # ... starting with the second, so held-out shapes lie inside the fitted range


def robust_fit(residuals: Callable[[np.ndarray], np.ndarray], start: np.ndarray) -> tuple[np.ndarray, float]:
    """The parameters least squares with a soft-L1 loss finds from ``start``, and the cost it reached."""
    result = least_squares(residuals, start, loss="soft_l1", f_scale=ROBUST_F_SCALE)
    return np.asarray(result.x, dtype=float), float(result.cost)


def work_s(measured_s: np.ndarray, launch_s: float) -> np.ndarray:
    """Each timing less its launch (at least :data:`MIN_WORK_SHARE` of it): what a start value's rate or
    bandwidth is estimated from."""
    return np.maximum(measured_s - launch_s, measured_s * MIN_WORK_SHARE)


def split_heldout(rows: pd.DataFrame, size_column: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows to fit and rows held out: every fourth row by size, if the class has at least four."""
    ordered = rows.sort_values([size_column, "median_s"], kind="stable")
    if len(ordered) < HOLDOUT_EVERY:
        return ordered, ordered.iloc[0:0]
    held = (np.arange(len(ordered)) % HOLDOUT_EVERY) == HOLDOUT_OFFSET
    return ordered[~held], ordered[held]
