"""The statistics of a walk-forward evaluation: mean and spread per model, and the Diebold-Mariano test.

Why a test and not just the means: over a few hundred test days, a model whose RMSE is 1 % below
persistence's may be chance. The Diebold-Mariano test asks whether the mean of the loss differential
d_t = loss(model)_t - loss(persistence)_t is zero, with a variance that allows for autocorrelated d_t (HAC,
Newey-West). It is computed as statsmodels' OLS of d on a constant with cov_type="HAC": the constant's
t-statistic is the DM statistic (asymptotically normal), nothing is hand-rolled here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

SIGNIFICANCE = 0.05


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, sample standard deviation, min and max of the values that were measured (None left out)."""
    measured = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not measured:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    array = np.asarray(measured)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else None,
            "min": float(array.min()), "max": float(array.max()), "n": len(array)}


def newey_west_lags(days: int) -> int:
    """The usual Newey-West bandwidth, floor(4 (n/100)^(2/9)): 4 lags for 129 days, 5 for 645."""
    return int(math.floor(4 * (days / 100) ** (2 / 9))) if days > 0 else 0


def diebold_mariano(model_loss: np.ndarray, base_loss: np.ndarray, lags: int | None = None) -> dict[str, Any]:
    """DM test of equal predictive accuracy: `model_loss` and `base_loss` per day (the same days, in time order).

    Returns the mean loss differential (negative: the model's loss is lower), the statistic, its two-sided
    p-value, the HAC lags and which forecast is significantly better at SIGNIFICANCE (None: neither)."""
    import statsmodels.api as sm

    differential = np.asarray(model_loss, dtype=np.float64) - np.asarray(base_loss, dtype=np.float64)
    days = len(differential)
    lags = newey_west_lags(days) if lags is None else lags
    out: dict[str, Any] = {"days": days, "mean_loss_difference": float(differential.mean()) if days else None,
                           "statistic": None, "p_value": None, "hac_maxlags": lags, "better": None}
    if days < 3 or float(np.ptp(differential)) == 0.0:
        return out  # no variance to test against: identical forecasts, or too few days
    fit = sm.OLS(differential, np.ones(days)).fit(cov_type="HAC", cov_kwds={"maxlags": lags})
    statistic, p_value = float(fit.tvalues[0]), float(fit.pvalues[0])
    if math.isfinite(statistic) and math.isfinite(p_value):
        out["statistic"], out["p_value"] = statistic, p_value
        if p_value < SIGNIFICANCE:
            out["better"] = "model" if statistic < 0 else "baseline"
    return out
