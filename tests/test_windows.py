"""Splits, normalization and windows: chronological, training-only statistics, level-independent features."""

import numpy as np

from stockscale.config import SEQ_LEN
from stockscale.data.sources import PriceSeries, load_source
from stockscale.data.windows import NormStats, make_features, prepare, sliding


def test_default_split_sizes_and_no_window_crosses_a_boundary():
    prepared = prepare(load_source("bundled:AAPL"), 0.70, 0.15)
    assert prepared.train_windows == prepared.train_end - SEQ_LEN
    assert 800 <= prepared.train_windows <= 870
    val, test = prepared.eval_set("val"), prepared.eval_set("test")
    # The first validation target is the 61st validation day: its inputs are all validation days.
    assert val.dates[0] == prepared.series.dates[prepared.train_end + SEQ_LEN]
    assert test.dates[0] == prepared.series.dates[prepared.val_end + SEQ_LEN]
    assert test.dates[-1] == prepared.series.dates[-1]
    assert len(val) == prepared.val_end - prepared.train_end - SEQ_LEN


def test_statistics_come_from_the_training_days_only():
    series = load_source("bundled:AAPL")
    prepared = prepare(series, 0.7, 0.15)
    values = series.values.copy()
    values[prepared.train_end :] *= 10  # change everything after the training days
    changed = prepare(PriceSeries(series.name, series.dates, values), 0.7, 0.15)
    assert changed.stats == prepared.stats


def test_features_do_not_depend_on_the_price_level():
    series = load_source("bundled:AAPL")
    stats = NormStats.fit(series.values[:800])
    low = stats.normalize(series.values[:200])
    high_values = series.values[:200].copy()
    high_values[:, :4] *= 5  # the same days at five times the price
    high = stats.normalize(high_values)
    x_low, y_low = make_features(sliding(low), low[SEQ_LEN:, 3], stats)
    x_high, y_high = make_features(sliding(high), high[SEQ_LEN:, 3], stats)
    np.testing.assert_allclose(x_low[..., :4], x_high[..., :4], atol=1e-4)
    np.testing.assert_allclose(y_low, y_high, atol=1e-4)


def test_sliding_windows_are_views_ending_before_their_target():
    series = np.arange(70 * 5, dtype=np.float32).reshape(70, 5)
    windows = sliding(series)
    assert windows.shape == (10, SEQ_LEN, 5)
    assert np.shares_memory(windows, series)
    np.testing.assert_array_equal(windows[3], series[3 : 3 + SEQ_LEN])
