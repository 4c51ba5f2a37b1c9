"""Chronological splits, normalization fitted on the training days only, and 60-day windows.

Why this normalization: AAPL's test-period prices lie far above its training-period prices, so a model fed
raw (or globally standardized) prices sees inputs it never trained on. Instead:

- the *normalized series* is log price standardized with one mean/std shared by open/high/low/close, and
  log1p(volume) standardized on its own, both fitted on the training days; scaled datasets store replicas
  of this series (their noise is added to daily log returns: data/replicas.py);
- a window's *features* are its price columns minus its last close (so only the shape of the last 60 days
  matters, not the level), divided by the typical 60-day move, plus the standardized volume;
- the *target* is the next day's close minus today's, in units of the training daily move. A prediction
  turns back into dollars as `today's close * exp(pred * return_std * price_std)`.

A window ending on day t covers days t-59..t, and its target is day t+1: a part of D days has D - 60 windows,
and no window crosses a split boundary.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from stockscale.config import SEQ_LEN
from stockscale.data.sources import PriceSeries
from stockscale.errors import InputError

# Statistics stored in a dataset manifest (JSON) against the same ones fitted again from its source, perhaps on
# another machine: equal up to this relative tolerance, or the dataset is not the one its manifest describes.
STATS_RTOL = 1e-6
# Below this size a statistic counts as zero (a relative tolerance means nothing there); part of the same test.
STATS_ATOL = 1e-12


@dataclass(frozen=True)
class NormStats:
    """Statistics fitted on the training days; everything else is normalized with them."""

    price_mean: float
    price_std: float
    volume_mean: float
    volume_std: float
    return_std: float

    @classmethod
    def fit(cls, train_values: np.ndarray) -> NormStats:
        log_prices = np.log(train_values[:, :4])
        log_volume = np.log1p(train_values[:, 4])
        price_mean, price_std = float(log_prices.mean()), float(log_prices.std())
        volume_mean, volume_std = float(log_volume.mean()), float(log_volume.std())
        price_std = price_std if price_std > 0 else 1.0
        volume_std = volume_std if volume_std > 0 else 1.0
        daily = np.diff((log_prices[:, 3] - price_mean) / price_std)
        return_std = float(daily.std()) if len(daily) > 1 and daily.std() > 0 else 1.0
        return cls(price_mean, price_std, volume_mean, volume_std, return_std)

    def matches(self, other: NormStats) -> bool:
        """The same statistics up to STATS_RTOL (a JSON round trip, another machine's floating point)."""
        mine, theirs = self.to_dict(), other.to_dict()
        return all(math.isclose(mine[key], theirs[key], rel_tol=STATS_RTOL, abs_tol=STATS_ATOL) for key in mine)

    def normalize(self, values: np.ndarray) -> np.ndarray:
        """Raw OHLCV [T, 5] -> the normalized series, float32 [T, 5]."""
        out = np.empty(values.shape, dtype=np.float32)
        out[:, :4] = (np.log(values[:, :4]) - self.price_mean) / self.price_std
        out[:, 4] = (np.log1p(values[:, 4]) - self.volume_mean) / self.volume_std
        return out

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, float]) -> NormStats:
        return cls(**{key: float(data[key]) for key in cls.__dataclass_fields__})


def make_features(windows: np.ndarray, next_close: np.ndarray, stats: NormStats) -> tuple[np.ndarray, np.ndarray]:
    """Raw normalized windows [B, 60, 5] and next-day normalized closes [B] -> model inputs and targets.

    Every loader calls this on its batches, so all three give identical inputs for the same windows.
    """
    last_close = windows[:, -1:, 3:4]
    features = np.empty(windows.shape, dtype=np.float32)
    features[..., :4] = (windows[..., :4] - last_close) / np.float32(stats.return_std * np.sqrt(SEQ_LEN))
    features[..., 4] = windows[..., 4]
    targets = ((next_close - last_close[:, 0, 0]) / np.float32(stats.return_std)).astype(np.float32)
    return features, targets


def window_count(days: int) -> int:
    """Windows in a series of `days` days: each needs 60 days of input and one day to predict."""
    return max(0, days - SEQ_LEN)


def sliding(series: np.ndarray) -> np.ndarray:
    """Zero-copy view of all windows of a series [T, 5] -> [T - 60, 60, 5] (the last day only as a target)."""
    view = np.lib.stride_tricks.sliding_window_view(series[:-1], SEQ_LEN, axis=0)
    return view.transpose(0, 2, 1)


@dataclass
class EvalSet:
    """Windows of a validation or test part, with the dollar prices needed to score predictions."""

    name: str
    windows: np.ndarray  # [N, 60, 5] normalized
    next_close: np.ndarray  # [N] normalized
    last_price: np.ndarray  # [N] dollars, the close on the window's last day
    next_price: np.ndarray  # [N] dollars, the close to predict
    dates: np.ndarray  # [N] the date being predicted
    # Several tickers pooled (PooledData.eval_set): each window's log-price unit and its ticker's index in
    # `tickers`. None for one series, whose unit is its stats' return_std * price_std.
    log_scale: np.ndarray | None = None
    ticker_index: np.ndarray | None = None
    tickers: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.next_close)


@dataclass
class PreparedData:
    """A price series split chronologically and normalized with training-only statistics."""

    series: PriceSeries
    stats: NormStats
    normalized: np.ndarray  # [T, 5] float32
    train_end: int  # days [0, train_end) are training days
    val_end: int  # days [train_end, val_end) are validation days, the rest test

    @property
    def train_series(self) -> np.ndarray:
        return self.normalized[: self.train_end]

    @property
    def train_windows(self) -> int:
        return window_count(self.train_end)

    def eval_set(self, part: str) -> EvalSet:
        lo, hi = {"val": (self.train_end, self.val_end), "test": (self.val_end, len(self.normalized))}[part]
        normalized = self.normalized[lo:hi]
        prices = self.series.close[lo:hi]
        return EvalSet(
            name=part,
            windows=sliding(normalized),
            next_close=normalized[SEQ_LEN:, 3],
            last_price=prices[SEQ_LEN - 1 : -1],
            next_price=prices[SEQ_LEN:],
            dates=self.series.dates[lo + SEQ_LEN : hi],
        )

    def summary(self) -> dict[str, object]:
        dates = self.series.dates
        return {
            "source": self.series.name,
            "first_date": str(dates[0]),
            "last_date": str(dates[-1]),
            "days": len(dates),
            "train_days": self.train_end,
            "val_days": self.val_end - self.train_end,
            "test_days": len(dates) - self.val_end,
        }


def prepare(series: PriceSeries, train_frac: float, val_frac: float) -> PreparedData:
    """Split by days (70/15/15 by default) and normalize with statistics of the training days only."""
    days = len(series)
    train_end = int(round(days * train_frac))
    val_end = int(round(days * (train_frac + val_frac)))
    for part, length in (("train", train_end), ("val", val_end - train_end), ("test", days - val_end)):
        if window_count(length) < 1:
            raise InputError(
                f"{series.name}: the {part} split has {length} days; each split needs at least {SEQ_LEN + 1} "
                f"(use a longer date range: {days} days in all)"
            )
    stats = NormStats.fit(series.values[:train_end])
    return PreparedData(series, stats, stats.normalize(series.values), train_end, val_end)


# ------------------------------------------------------------------------------------ several tickers

# A pooled model's inputs are built with these statistics: every ticker's series is stored already divided by
# its own return_std (PooledData.train_bases), so make_features gives exactly the per-ticker features.
UNIT_STATS = NormStats(0.0, 1.0, 0.0, 1.0, 1.0)


@dataclass
class PooledData:
    """Several tickers for one pooled model, split on one calendar: every ticker's training days end on the
    same date and its test days begin on the same date, so no ticker's test days come before another's
    training days. Each ticker is normalized with statistics of its own training days (`parts`)."""

    name: str
    parts: list[PreparedData]  # one per ticker kept, in source order; part.series.ticker names it
    first_val_day: np.datetime64
    first_test_day: np.datetime64
    skipped: list[str] = field(default_factory=list)
    synthetic: bool = False
    stats: NormStats = UNIT_STATS

    @property
    def tickers(self) -> tuple[str, ...]:
        return tuple(part.series.ticker for part in self.parts)

    @property
    def train_windows(self) -> int:
        return sum(part.train_windows for part in self.parts)

    def train_bases(self) -> list[np.ndarray]:
        """Each ticker's normalized training days, price columns in units of its own daily move, float32."""
        bases = []
        for part in self.parts:
            base = part.train_series.copy()
            base[:, :4] /= np.float32(part.stats.return_std)
            bases.append(base)
        return bases

    def eval_set(self, which: str) -> EvalSet:
        """The validation or test windows of every ticker, one after another, in the pooled units."""
        sets = [part.eval_set(which) for part in self.parts]
        windows, next_close, scale = [], [], []
        for part, one in zip(self.parts, sets, strict=True):
            unit = np.float32(part.stats.return_std)
            w = one.windows.copy()
            w[..., :4] /= unit
            windows.append(w)
            next_close.append(one.next_close / unit)
            scale.append(np.full(len(one), part.stats.return_std * part.stats.price_std))
        return EvalSet(which, np.concatenate(windows), np.concatenate(next_close),
                       np.concatenate([one.last_price for one in sets]),
                       np.concatenate([one.next_price for one in sets]), np.concatenate([one.dates for one in sets]),
                       log_scale=np.concatenate(scale),
                       ticker_index=np.concatenate([np.full(len(one), i) for i, one in enumerate(sets)]),
                       tickers=self.tickers)

    def warnings(self) -> list[str]:
        if not self.skipped:
            return []
        return [f"skipped {len(self.skipped)} ticker(s) with too few days for a {SEQ_LEN}-day window in every "
                f"split: {', '.join(self.skipped)}"]

    def summary(self) -> dict[str, object]:
        first = min(part.series.dates[0] for part in self.parts)
        last = max(part.series.dates[-1] for part in self.parts)
        summary: dict[str, object] = {
            "source": self.name, "first_date": str(first), "last_date": str(last),
            "days": sum(len(part.series) for part in self.parts),
            "train_days": sum(part.train_end for part in self.parts),
            "val_days": sum(part.val_end - part.train_end for part in self.parts),
            "test_days": sum(len(part.series) - part.val_end for part in self.parts),
            "tickers": list(self.tickers), "skipped_tickers": list(self.skipped),
            "first_val_day": str(self.first_val_day), "first_test_day": str(self.first_test_day),
        }
        if self.synthetic:
            summary["synthetic"] = True
        return summary


def prepare_pooled(name: str, panel: list[PriceSeries], train_frac: float, val_frac: float,
                   synthetic: bool = False) -> PooledData:
    """Split every ticker at the same two calendar dates (the train/val/test shares of all trading days any
    ticker has), normalize each on its own training days, and skip (and name) those too short to have a
    window in each split."""
    calendar = np.unique(np.concatenate([series.dates for series in panel]))
    first_val = calendar[min(len(calendar) - 1, int(round(len(calendar) * train_frac)))]
    first_test = calendar[min(len(calendar) - 1, int(round(len(calendar) * (train_frac + val_frac))))]
    parts, skipped = [], []
    for series in panel:
        train_end = int(np.searchsorted(series.dates, first_val))
        val_end = int(np.searchsorted(series.dates, first_test))
        lengths = (train_end, val_end - train_end, len(series) - val_end)
        if min(window_count(length) for length in lengths) < 1:
            skipped.append(series.ticker)
            continue
        stats = NormStats.fit(series.values[:train_end])
        parts.append(PreparedData(series, stats, stats.normalize(series.values), train_end, val_end))
    if not parts:
        raise InputError(f"{name}: no ticker has {SEQ_LEN + 1} days in each split (train before {first_val}, "
                         f"validation before {first_test}, test after)")
    return PooledData(name, parts, first_val, first_test, skipped, synthetic)
