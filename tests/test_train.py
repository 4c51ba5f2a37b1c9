"""`stockscale train`: real training on the bundled data, honest metrics, artifacts, a final JSON line."""

import json

import numpy as np
import pytest
import torch
import yaml

from stockscale.config import build_train_config
from stockscale.train import load_model, train
from tests.conftest import TINY


def test_train_prints_metrics_beside_the_baseline_and_a_final_json_line(cli, tmp_path):
    ran = cli("train", *TINY, "--out", tmp_path / "run")
    assert ran.code == 0, ran.err
    assert "persistence" in ran.out and "LSTM" in ran.out
    result = ran.last_json
    assert result["status"] == "success"
    assert set(result["test"]) >= {"rmse", "mae", "mape", "directional_accuracy"}
    assert result["baseline"]["test"]["directional_accuracy"] is None
    assert result["steps"] == 3
    assert result["train_samples"] == result["data"]["train_days"] - 60
    assert "history" not in result  # the stdout line stays short; history.json has it


def test_run_directory_holds_config_metrics_history_checkpoint_predictions(cli, tmp_path):
    out = tmp_path / "run"
    assert cli("train", *TINY, "--lr", "0.01", "--out", out).code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "config.yaml", "history.json", "metrics.json", "model.pt", "predictions.json"]
    assert yaml.safe_load((out / "config.yaml").read_text())["lr"] == 0.01
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("val", "test", "baseline", "train_samples", "samples_per_second", "wall_seconds", "peak_rss_bytes"):
        assert key in metrics
    assert metrics["peak_rss_bytes"] > 50 * 2**20
    history = json.loads((out / "history.json").read_text())
    assert history[0]["epoch"] == 1 and "train_loss" in history[0] and "val_loss" in history[0]
    state = torch.load(out / "model.pt", weights_only=True)
    assert "head.weight" in state
    model = load_model(out)
    assert model(torch.zeros(2, 60, 5)).shape == (2,)
    predictions = json.loads((out / "predictions.json").read_text())
    assert len(predictions["actual"]) == len(predictions["predicted"]) == metrics["test"]["windows"]


def test_training_is_deterministic_for_a_seed(tmp_path):
    cfg = build_train_config({"epochs": 1, "max_steps": 4, "hidden_size": 8, "num_layers": 1, "threads": 1})
    first = train(cfg, tmp_path / "a")
    second = train(cfg, tmp_path / "b")
    assert first["test"] == second["test"]
    other = train(cfg.model_copy(update={"seed": 7}), tmp_path / "c")
    assert other["test"]["rmse"] != first["test"]["rmse"]


def test_metrics_are_scored_in_dollars_against_the_real_prices(tmp_path):
    cfg = build_train_config({"epochs": 1, "max_steps": 2, "hidden_size": 8, "num_layers": 1, "threads": 1})
    metrics = train(cfg, tmp_path / "run")
    predictions = json.loads((tmp_path / "run" / "predictions.json").read_text())
    actual, predicted = np.array(predictions["actual"]), np.array(predictions["predicted"])
    assert abs(np.sqrt(np.mean((predicted - actual) ** 2)) - metrics["test"]["rmse"]) < 1e-9
    baseline = np.array(predictions["baseline"])
    assert abs(np.sqrt(np.mean((baseline - actual) ** 2)) - metrics["baseline"]["test"]["rmse"]) < 1e-9
    # AAPL closed between $50 and $100 (adjusted) in the test period: these are dollars, not normalized units.
    assert 30 < actual.mean() < 120


def test_config_file_with_flags_on_top(cli, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("epochs: 1\nmax_steps: 2\nhidden_size: 8\nnum_layers: 1\nlearning_rate: 0.01\n")
    ran = cli("train", "--config", config, "--lr", "0.005", "--threads", "1", "--out", tmp_path / "run")
    assert ran.code == 0, ran.err
    assert ran.last_json["config"]["lr"] == 0.005 and ran.last_json["steps"] == 2


@pytest.mark.slow
def test_plain_log_lines_when_stdout_is_not_a_terminal(cli_process, tmp_path):
    ran = cli_process("train", *TINY, "--out", tmp_path / "run")
    assert ran.code == 0, ran.err
    assert "epoch 1/1 train_loss" in ran.out
    assert "\x1b[" not in ran.out  # no terminal control codes in logs
    json.loads(ran.out.strip().splitlines()[-1])


def test_csv_source_trains(cli, tmp_path):
    from tests.conftest import write_csv

    path = write_csv(tmp_path / "prices.csv", rows=500)
    ran = cli("train", *TINY, "--source", f"csv:{path}", "--out", tmp_path / "run")
    assert ran.code == 0, ran.err
    assert ran.last_json["data"]["source"] == f"csv:{path}"


@pytest.mark.slow
def test_an_indexed_job_pod_trains_the_entry_of_its_completion_index(cli_process, tmp_path):
    trials = tmp_path / "trials.yaml"
    trials.write_text("- {hidden_size: 8, num_layers: 1, max_steps: 2, epochs: 1}\n"
                      "- {hidden_size: 12, num_layers: 1, max_steps: 2, epochs: 1}\n")
    ran = cli_process("train", "--trials", trials, "--out", tmp_path / "run", env={"JOB_COMPLETION_INDEX": "1"})
    assert ran.code == 0, ran.err
    assert ran.last_json["config"]["hidden_size"] == 12
