"""The report's reading of a model: sentences computed from the numbers, for a drift model and a real one."""

from stockscale.config import build_train_config
from stockscale.experiments.records import split_baselines
from stockscale.experiments.report.reading import reading
from stockscale.train import train

BASELINES = {
    "persistence": {"rmse": 1.587, "directional_accuracy": None},
    "drift": {"rmse": 1.605, "daily_log_return": 0.0013},
    "ridge": {"rmse": 1.599},
    "always_up": {"directional_accuracy": 0.419},
}


def test_a_model_that_says_up_every_day_is_read_as_a_drift_model():
    drift_like = {"rmse": 1.611, "mean_predicted_move": 0.0016, "up_share": 1.0, "directional_accuracy": 0.419}
    text = reading(drift_like, BASELINES)
    assert "+0.160 %/day (training drift +0.130 %/day)" in text
    assert '"up" on 100 % of the days' in text and "a drift model" in text
    assert "41.9 % of the days, equal to always-up's 41.9 %" in text
    assert "no model beats persistence" in text
    assert "random walk" not in text


def test_a_model_that_moves_both_ways_and_beats_persistence_is_named():
    model = {"rmse": 1.50, "mean_predicted_move": 0.0001, "up_share": 0.55, "directional_accuracy": 0.53}
    text = reading(model, BASELINES)
    assert "drift model" not in text
    assert "above always-up's" in text
    assert "the LSTM beats persistence" in text


def test_the_reading_of_a_real_run_quotes_its_own_metrics(tmp_path):
    cfg = build_train_config({"epochs": 1, "max_steps": 2, "hidden_size": 8, "num_layers": 1, "threads": 1})
    metrics = train(cfg, tmp_path / "run")
    baselines = split_baselines(metrics["baselines"])
    text = reading(metrics["test"], baselines)
    assert f"{metrics['test']['up_share'] * 100:.0f} % of the days" in text
    assert f"persistence ${metrics['baseline']['test']['rmse']:.3f}" in text
    assert f"training drift {metrics['baselines']['drift']['daily_log_return'] * 100:+.3f} %/day" in text
