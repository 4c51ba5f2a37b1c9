"""Replica noise in return units: added to each day's log return and cumulated, so a replica keeps the
original's day-to-day behaviour instead of gaining a planted mean reversion."""

import numpy as np
import pytest

from stockscale.config import NOISE, build_train_config
from stockscale.data.dataset import open_training_data, prepare_from_config
from stockscale.data.replicas import ReplicaSpec


@pytest.fixture(scope="module")
def prepared():
    return prepare_from_config(build_train_config({}))


def _close_moves(series: np.ndarray, price_std: float) -> np.ndarray:
    """Daily log returns of the close from normalized series [..., T, 5]."""
    return np.diff(series[..., 3], axis=-1).astype(np.float64) * price_std


def _lag1(moves: np.ndarray) -> float:
    centred = moves - moves.mean()
    return float(np.sum(centred[1:] * centred[:-1]) / np.sum(centred**2))


def _replicas(prepared, noise: float, count: int = 65) -> np.ndarray:
    spec = ReplicaSpec(prepared.train_series, count, noise, 7, price_std=prepared.stats.price_std,
                       replicas_per_shard=count)
    return spec.generate(spec.shards()[0])


def test_sigma_is_a_daily_log_return(prepared):
    price_std = prepared.stats.price_std
    original = _close_moves(prepared.train_series, price_std)
    sigma = float(original.std())  # noise as large as the returns themselves: the moves' std grows by sqrt 2
    replicas = _replicas(prepared, sigma)
    added = _close_moves(replicas[1:], price_std) - original
    assert added.std() == pytest.approx(sigma, rel=0.02)
    ratio = np.mean([_close_moves(r, price_std).std() for r in replicas[1:]]) / original.std()
    assert ratio == pytest.approx(np.sqrt(2), rel=0.03)


def test_default_noise_is_a_tenth_of_the_returns_std_and_keeps_their_autocorrelation(prepared):
    price_std = prepared.stats.price_std
    original = _close_moves(prepared.train_series, price_std)
    assert 0.05 < NOISE / original.std() < 0.2
    replicas = _replicas(prepared, NOISE)
    ratio = np.mean([_close_moves(r, price_std).std() for r in replicas[1:]]) / original.std()
    assert ratio == pytest.approx(np.sqrt(1 + (NOISE / original.std()) ** 2), abs=0.003)
    # Level noise put -e_t into one move and +e_t into the next: a lag-1 autocorrelation pushed negative
    # (-0.043 -> -0.075 in one replica). Return noise only dilutes it towards zero.
    lags = np.array([_lag1(_close_moves(r, price_std)) for r in replicas[1:]])
    assert abs(lags.mean() - _lag1(original)) < 0.01
    assert lags.mean() >= _lag1(original) - 0.005


def test_the_whole_day_moves_together_and_volume_is_untouched(prepared):
    replicas = _replicas(prepared, NOISE, count=3)
    offsets = replicas[1:] - prepared.train_series
    for column in range(3):  # open, high, low shift with the close: a day's range stays its own
        np.testing.assert_allclose(offsets[..., column], offsets[..., 3], atol=1e-5)
    np.testing.assert_array_equal(offsets[..., 4], 0)
    np.testing.assert_array_equal(offsets[:, 0], 0)  # every path starts from the original's first day
    assert replicas.dtype == np.float32 and replicas.shape == (3, *prepared.train_series.shape)


def test_validation_and_test_stay_the_original_data():
    clean = open_training_data(build_train_config({}))
    scaled = open_training_data(build_train_config({"multiplier": 3, "noise": 0.05}))
    for split in ("val", "test"):
        np.testing.assert_array_equal(scaled.prepared.eval_set(split).windows, clean.prepared.eval_set(split).windows)
    assert scaled.total_windows == 3 * clean.total_windows
