"""The models the LSTM has to beat, scored on the same validation and test windows as the LSTM.

Why these: one baseline (persistence) cannot tell "the LSTM learned something" from "the LSTM learned the
training period's drift". So beside persistence (tomorrow's close = today's) there are

- **drift**: today's close moved by the training days' mean daily log return: what a model that learned only
  the trend predicts;
- **ridge**: a linear model (scikit-learn's Ridge) on the same 60 x 5 window features the LSTM sees, fitted on
  the training windows only (replica 0, the original series: validation and test never enter the fit);
- **always_up** and **training_majority**: direction only (they predict no price): the share of days that went
  up, and the share that went the way most training days did. An LSTM's directional accuracy means something
  only beside these.

Every function takes arrays and returns numbers; nothing here trains the LSTM or writes a file.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import astuple, dataclass
from typing import Any

import numpy as np

from stockscale.config import SEQ_LEN
from stockscale.data.windows import EvalSet, NormStats, PooledData, PreparedData, make_features, sliding

# The ridge penalty is chosen among these by scikit-learn's leave-one-out cross-validation on the training
# windows (RidgeCV): 300 features against ~800 windows overfit at a small fixed penalty.
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 5, 15))

# Fitted ridges by what decides them (the training series' bytes and the statistics): a search's trials on a
# warm worker train on the same days, so each worker fits the ridge once instead of once per trial (0.15 s
# each). The fit is deterministic, so a kept one is the one a fresh fit would give.
_RIDGE_KEPT: OrderedDict[tuple[str, tuple[float, ...]], RidgeBaseline] = OrderedDict()
_RIDGE_KEPT_MOST = 4
_RIDGE_LOCK = threading.Lock()


def training_moves(train_close: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """Daily log returns of the training days' closes: one series, or each ticker's own (none across two)."""
    closes = [train_close] if isinstance(train_close, np.ndarray) else train_close
    return np.concatenate([np.diff(np.log(np.asarray(close, dtype=np.float64))) for close in closes])


def training_drift(train_close: np.ndarray | list[np.ndarray]) -> float:
    """Mean daily log return of the training days' closes (dollars in, log return per day out)."""
    moves = training_moves(train_close)
    return float(np.mean(moves)) if len(moves) else 0.0


def training_up_share(train_close: np.ndarray | list[np.ndarray]) -> float:
    """Share of training days whose close rose over the day before."""
    moves = training_moves(train_close)
    return float(np.mean(moves > 0)) if len(moves) else 0.0


def drift_prediction(evalset: EvalSet, drift: float) -> np.ndarray:
    """Today's close moved by the training drift: the next-day close of a model that learned only the trend."""
    return evalset.last_price * np.exp(drift)


@dataclass
class RidgeBaseline:
    """scikit-learn's Ridge on the flattened window features, predicting the LSTM's target (the next move)."""

    model: Any  # sklearn.linear_model.Ridge, fitted
    stats: NormStats
    alpha: float

    @classmethod
    def fit(cls, train_series: np.ndarray | list[np.ndarray], stats: NormStats, *,
            reuse: bool = True) -> RidgeBaseline:
        """Fit on every window of each of `train_series` (normalized training days, [T, 5]: one series, or one
        per ticker pooled; no window crosses two) and nothing else; the same series and statistics again (the
        next trial on a warm worker) get the ridge already fitted, unless `reuse` is False."""
        series = [train_series] if isinstance(train_series, np.ndarray) else train_series
        if not reuse:
            return cls._fit(series, stats)
        digest = hashlib.blake2b(digest_size=16)
        for one in series:
            digest.update(repr(one.shape).encode())
            digest.update(np.ascontiguousarray(one).tobytes())
        key = (digest.hexdigest(), astuple(stats))
        with _RIDGE_LOCK:
            if key in _RIDGE_KEPT:
                _RIDGE_KEPT.move_to_end(key)
                return _RIDGE_KEPT[key]
        fitted = cls._fit(series, stats)
        with _RIDGE_LOCK:
            _RIDGE_KEPT[key] = fitted
            while len(_RIDGE_KEPT) > _RIDGE_KEPT_MOST:
                _RIDGE_KEPT.popitem(last=False)
        return fitted

    @classmethod
    def _fit(cls, series: list[np.ndarray], stats: NormStats) -> RidgeBaseline:
        from sklearn.linear_model import RidgeCV  # imported here: only rank 0's evaluation needs it
        from threadpoolctl import threadpool_limits

        pairs = [make_features(sliding(one), one[SEQ_LEN:, 3], stats) for one in series if len(one) > SEQ_LEN]
        features, targets = np.concatenate([f for f, _ in pairs]), np.concatenate([t for _, t in pairs])
        # One BLAS thread: this small fit takes 0.15 s so, and seconds when BLAS threads fight torch's for cores.
        with threadpool_limits(1):
            model = RidgeCV(alphas=RIDGE_ALPHAS, gcv_mode="svd").fit(features.reshape(len(features), -1), targets)
        return cls(model, stats, float(model.alpha_))

    def outputs(self, evalset: EvalSet) -> np.ndarray:
        """The model's outputs in the target's units (the LSTM's units), one per window of `evalset`."""
        features, _ = make_features(evalset.windows, evalset.next_close, self.stats)
        return self.model.predict(features.reshape(len(features), -1)).astype(np.float32)


def direction_score(evalset: EvalSet, up: bool) -> dict[str, Any]:
    """Directional accuracy of always predicting `up` (or always down): the share of days that moved that way.

    A day without a move counts as wrong for both directions, as it does for the LSTM (np.sign = 0)."""
    moves = np.sign(evalset.next_price - evalset.last_price)
    wanted = 1.0 if up else -1.0
    return {"directional_accuracy": float(np.mean(moves == wanted)) if len(moves) else None,
            "windows": len(moves)}


def prediction_summary(predicted: np.ndarray, evalset: EvalSet) -> dict[str, Any]:
    """What a model's predictions did: their mean log move per day and the share of days it said "up".

    These are what tell a drift model from one that reads the window: a near-constant positive mean move with
    an "up" share near 1 is the training trend, whatever the RMSE."""
    moves = np.log(np.asarray(predicted, dtype=np.float64) / evalset.last_price)
    return {"mean_predicted_move": float(np.mean(moves)) if len(moves) else None,
            "up_share": float(np.mean(moves > 0)) if len(moves) else None}


def score(predicted: np.ndarray, evalset: EvalSet) -> dict[str, Any]:
    """RMSE, MAE (dollars), MAPE (%) and directional accuracy of predicted closes against the actual ones.

    A prediction equal to today's close (the persistence baseline) has no direction: directional accuracy
    is then null rather than a number that pretends it guessed.
    """
    actual, last = evalset.next_price, evalset.last_price
    error = predicted - actual
    predicted_move, actual_move = np.sign(predicted - last), np.sign(actual - last)
    directional = None
    if np.any(predicted_move != 0):
        directional = float(np.mean(predicted_move == actual_move))
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "mape": float(np.mean(np.abs(error) / actual) * 100),
        "directional_accuracy": directional,
        "windows": len(actual),
    }


def to_price(outputs: np.ndarray, evalset: EvalSet, stats: NormStats) -> np.ndarray:
    """Predicted next-day closes in dollars from outputs in the target's units: today's close moved by the
    predicted log return (pooled over tickers, each window's own ticker's unit: `evalset.log_scale`)."""
    unit = stats.return_std * stats.price_std if evalset.log_scale is None else evalset.log_scale
    return evalset.last_price * np.exp(outputs.astype(np.float64) * unit)


@dataclass
class Baselines:
    """Every baseline's predictions on the evaluation sets, fitted once per run on the training days."""

    drift: float
    up_share: float
    ridge: RidgeBaseline | None  # None: left out (TrainConfig.baselines "cheap")

    @classmethod
    def fit(cls, prepared: PreparedData | PooledData, ridge: bool = True) -> Baselines:
        """Fitted on the training days only; pooled over tickers, the drift and the up share are over every
        ticker's training days (no return across two tickers) and the ridge over every ticker's windows."""
        if isinstance(prepared, PooledData):
            closes = [part.series.close[: part.train_end] for part in prepared.parts]
            series = prepared.train_bases()
        else:
            closes, series = [prepared.series.close[: prepared.train_end]], [prepared.train_series]
        return cls(training_drift(closes), training_up_share(closes),
                   RidgeBaseline.fit(series, prepared.stats) if ridge else None)

    def predictions(self, evalset: EvalSet) -> dict[str, np.ndarray]:
        """Next-day closes in dollars by every baseline that predicts a price."""
        out = {"persistence": evalset.last_price, "drift": drift_prediction(evalset, self.drift)}
        if self.ridge is not None:
            out["ridge"] = to_price(self.ridge.outputs(evalset), evalset, self.ridge.stats)
        return out

    def scores(self, sets: dict[str, EvalSet]) -> dict[str, Any]:
        """metrics.json's `baselines`: each baseline's score on each split (docs/results.md)."""
        out: dict[str, Any] = {
            "persistence": {}, "drift": {"daily_log_return": self.drift}, "always_up": {},
            "training_majority": {"direction": "up" if self.up_share >= 0.5 else "down",
                                  "train_up_share": self.up_share},
        }
        if self.ridge is not None:
            out["ridge"] = {"alpha": self.ridge.alpha}
        for split, evalset in sets.items():
            for name, predicted in self.predictions(evalset).items():
                out[name][split] = {**score(predicted, evalset), **prediction_summary(predicted, evalset)}
            out["always_up"][split] = direction_score(evalset, up=True)
            out["training_majority"][split] = direction_score(evalset, up=self.up_share >= 0.5)
        return out
