"""The baselines beside the LSTM: computed on known arrays, fitted on the training days only, in metrics.json."""

import json

import numpy as np
import pytest

from stockscale.baselines import (
    Baselines,
    RidgeBaseline,
    direction_score,
    drift_prediction,
    prediction_summary,
    training_drift,
    training_up_share,
)
from stockscale.config import SEQ_LEN, build_train_config
from stockscale.data.sources import PriceSeries
from stockscale.data.windows import EvalSet, prepare
from stockscale.train import train


def _evalset(last, nxt):
    last, nxt = np.asarray(last, dtype=np.float64), np.asarray(nxt, dtype=np.float64)
    n = len(last)
    return EvalSet("test", np.zeros((n, SEQ_LEN, 5), np.float32), np.zeros(n, np.float32), last, nxt,
                   np.arange(n))


def _series(close: np.ndarray) -> PriceSeries:
    days = len(close)
    dates = np.datetime64("2000-01-03", "D") + np.arange(days)
    values = np.stack([close, close * 1.01, close * 0.99, close, np.full(days, 1e6)], axis=1)
    return PriceSeries("synthetic", dates, values)


def test_drift_is_the_mean_daily_log_return_of_the_training_closes():
    close = 100 * np.exp(np.cumsum([0.0, 0.01, -0.02, 0.04]))
    assert training_drift(close) == pytest.approx(0.01)
    assert training_up_share(close) == pytest.approx(2 / 3)
    evalset = _evalset([10.0, 20.0], [11.0, 19.0])
    np.testing.assert_allclose(drift_prediction(evalset, 0.01), [10 * np.exp(0.01), 20 * np.exp(0.01)])


def test_direction_baselines_are_the_share_of_days_that_moved_their_way():
    evalset = _evalset([10, 10, 10, 10, 10], [11, 12, 9, 10, 13])  # 3 up, 1 down, 1 flat
    assert direction_score(evalset, up=True) == {"directional_accuracy": 0.6, "windows": 5}
    assert direction_score(evalset, up=False)["directional_accuracy"] == 0.2


def test_prediction_summary_tells_a_constant_drift_from_a_model_that_moves_both_ways():
    evalset = _evalset([10, 10, 10, 10], [11, 9, 11, 9])
    drifting = prediction_summary(drift_prediction(evalset, 0.002), evalset)
    assert drifting["up_share"] == 1.0 and drifting["mean_predicted_move"] == pytest.approx(0.002)
    both = prediction_summary(np.array([10.5, 9.5, 10.5, 9.5]), evalset)
    assert both["up_share"] == 0.5 and abs(both["mean_predicted_move"]) < 0.01


def test_ridge_is_fitted_on_the_training_windows_only():
    rng = np.random.default_rng(0)
    close = 50 * np.exp(np.cumsum(rng.normal(0.0, 0.02, 400)))
    prepared = prepare(_series(close), 0.6, 0.2)
    changed = close.copy()
    changed[prepared.train_end:] *= np.exp(np.cumsum(rng.normal(0.05, 0.1, len(close) - prepared.train_end)))
    prepared_changed = prepare(_series(changed), 0.6, 0.2)
    a = RidgeBaseline.fit(prepared.train_series, prepared.stats, reuse=False)
    b = RidgeBaseline.fit(prepared_changed.train_series, prepared_changed.stats, reuse=False)
    np.testing.assert_array_equal(a.model.coef_, b.model.coef_)  # the test days did not move the fit
    # ...while changing a training day does.
    trained = close.copy()
    trained[100] *= 1.2
    prepared_trained = prepare(_series(trained), 0.6, 0.2)
    c = RidgeBaseline.fit(prepared_trained.train_series, prepared_trained.stats, reuse=False)
    assert not np.allclose(a.model.coef_, c.model.coef_)


def test_the_same_training_days_again_get_the_ridge_already_fitted_and_others_a_new_fit():
    rng = np.random.default_rng(2)
    close = 50 * np.exp(np.cumsum(rng.normal(0.0, 0.02, 400)))
    prepared = prepare(_series(close), 0.6, 0.2)
    first = RidgeBaseline.fit(prepared.train_series, prepared.stats)
    again = RidgeBaseline.fit(prepared.train_series.copy(), prepared.stats)  # equal days, another array
    assert again is first  # a warm worker's next trial: no second fit
    fresh = RidgeBaseline.fit(prepared.train_series, prepared.stats, reuse=False)
    test = prepared.eval_set("test")
    np.testing.assert_array_equal(again.outputs(test), fresh.outputs(test))  # what a fresh fit would predict
    moved = close.copy()
    moved[50] *= 1.1  # a training day changed: a new fit
    other = prepare(_series(moved), 0.6, 0.2)
    assert RidgeBaseline.fit(other.train_series, other.stats) is not first


def test_ridge_finds_a_linear_signal_the_window_holds():
    # Each day's return is minus half the day before's: a linear model on the window can predict it.
    rng = np.random.default_rng(1)
    shocks = rng.normal(0, 0.02, 2000)
    returns = np.empty_like(shocks)
    returns[0] = shocks[0]
    for t in range(1, len(shocks)):
        returns[t] = -0.5 * returns[t - 1] + shocks[t]
    prepared = prepare(_series(100 * np.exp(np.cumsum(returns))), 0.7, 0.15)
    scores = Baselines.fit(prepared).scores({"test": prepared.eval_set("test")})
    assert scores["ridge"]["test"]["rmse"] < 0.95 * scores["persistence"]["test"]["rmse"]
    assert scores["ridge"]["test"]["directional_accuracy"] > 0.6


def test_metrics_json_holds_every_baseline_on_the_same_test_windows(tmp_path):
    cfg = build_train_config({"epochs": 1, "max_steps": 2, "hidden_size": 8, "num_layers": 1, "threads": 1})
    metrics = train(cfg, tmp_path / "run")
    baselines = metrics["baselines"]
    assert set(baselines) == {"persistence", "drift", "ridge", "always_up", "training_majority"}
    windows = metrics["test"]["windows"]
    for name in ("persistence", "drift", "ridge"):
        assert set(baselines[name]["test"]) >= {"rmse", "mae", "directional_accuracy", "windows"}
        assert baselines[name]["test"]["windows"] == windows
    assert baselines["persistence"]["test"]["rmse"] == metrics["baseline"]["test"]["rmse"]  # the old key stays
    assert baselines["training_majority"]["direction"] in ("up", "down")
    predictions = json.loads((tmp_path / "run" / "predictions.json").read_text())
    actual = np.array(predictions["actual"])
    drift = np.array(predictions["baselines"]["drift"])
    assert np.sqrt(np.mean((drift - actual) ** 2)) == pytest.approx(baselines["drift"]["test"]["rmse"])
    assert 0.0 <= metrics["test"]["up_share"] <= 1.0


def test_cheap_baselines_leave_only_the_ridge_out(tmp_path):
    cfg = build_train_config({"epochs": 1, "max_steps": 1, "hidden_size": 8, "num_layers": 1, "threads": 1,
                              "baselines": "cheap"})
    metrics = train(cfg, tmp_path / "run")
    assert set(metrics["baselines"]) == {"persistence", "drift", "always_up", "training_majority"}
    predictions = json.loads((tmp_path / "run" / "predictions.json").read_text())
    assert set(predictions["baselines"]) == {"drift"}
