"""The planner's start-up per backend (measured, or why not) and the calibration's time budget."""

from __future__ import annotations

import json
import time

import pytest

from stockscale.config import build_train_config
from stockscale.experiments.plan.calibration import (
    BUDGET_SECONDS,
    MIN_BUDGET_STEPS,
    MODEL_FIELDS,
    calibrate_loader,
    time_run_steps,
)
from stockscale.experiments.plan.startup import measure_container, measure_warm
from stockscale.launch.local import LocalRunner

TINY = {"hidden_size": 8, "num_layers": 1}


# ----------------------------------------------------------------------------------- the budget rule


def test_the_time_runs_get_the_steps_the_budget_leaves():
    # the 256 x 3 model on a loaded machine: 2 steps in 11 s (a 5.5 s step) and 8 s outside training
    steps = time_run_steps(BUDGET_SECONDS - 20, short_wall=19.0, short_train=11.0, short_steps=2)
    assert steps == MIN_BUDGET_STEPS  # 40 s left buys no more than the floor: (40 - 16) / (5.5 x 3) = 1.4
    # the default model: 2 steps in 0.4 s: the time runs may take up to 60 s
    steps = time_run_steps(BUDGET_SECONDS - 10, short_wall=6.0, short_train=0.4, short_steps=2)
    assert steps == int((50 - 2 * 5.6) / (0.2 * 3))
    # what the rule allots fits what is left, by the rule's own (over-)estimate of each run
    assert 2 * 5.6 + steps * 0.2 * (1 + 2) <= 50


def test_the_floor_keeps_two_run_lengths_for_the_steady_step_time():
    assert time_run_steps(0.0, short_wall=100.0, short_train=90.0, short_steps=2) == MIN_BUDGET_STEPS > 2


@pytest.mark.slow
def test_a_larger_model_calibrates_within_the_budget_rule(tmp_path):
    """A real calibration of a 128 x 2 model (memory loader): its time runs are sized from the short run, and the
    whole takes about the budget (a loaded machine may add the floor's few steps)."""
    from stockscale.data.dataset import dataset_size

    cfg = build_train_config({"hidden_size": 128, "num_layers": 2, "loader": "memory"})
    size = dataset_size(cfg)
    started = time.perf_counter()
    entry = calibrate_loader(cfg, "memory", LocalRunner(), tmp_path, size.windows, size.train_days)
    took = time.perf_counter() - started
    short, time_runs = entry.runs[-1], entry.runs[:-1]
    assert short.steps == 2 and all(run.steps and run.steps >= MIN_BUDGET_STEPS for run in time_runs)
    assert entry.step_seconds[1] > 0 and entry.seconds == pytest.approx(took, abs=1.0)
    floor_cost = sum(run.wall_seconds for run in time_runs if run.steps == MIN_BUDGET_STEPS)
    assert took <= BUDGET_SECONDS * 1.25 or floor_cost > 0.5 * took


# ------------------------------------------------------------------------------------------ start-up


@pytest.mark.slow
def test_the_warm_start_up_is_measured_on_a_prewarmed_worker(tmp_path):
    startup = measure_warm(build_train_config(TINY), MODEL_FIELDS, tmp_path)
    assert startup.seconds is not None and startup.source.startswith("measured")
    assert len(startup.samples) == 2 and min(startup.samples) <= startup.seconds <= max(startup.samples)
    assert not (tmp_path / "startup").exists()


def test_without_an_engine_the_container_start_up_says_not_measured(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")  # an engine socket nobody serves
    startup = measure_container(build_train_config(TINY), MODEL_FIELDS, tmp_path)
    assert startup.seconds is None and startup.source.startswith("not measured: no engine")


@pytest.mark.slow
def test_plan_reports_each_start_up_and_prices_the_search_with_it(cli, tmp_path, monkeypatch):
    """A real calibration (tiny model): the warm worker is measured, the container not (no engine), and the
    search on this machine is priced with the warm start-up, on Kubernetes with the pod assumption."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    ran = cli("plan", "--memory-limit", "600MiB", "--workers", "1", "--json", "--calibration", tmp_path / "cal",
              "--hidden-size", "8", "--num-layers", "1")
    assert ran.code == 0, ran.err
    plan = json.loads(ran.out)
    warm, container = plan["startup"]["warm_worker"], plan["startup"]["container"]
    assert warm["seconds"] is not None and warm["source"].startswith("measured")
    assert container["seconds"] is None and container["source"].startswith("not measured: no engine")
    search = plan["search_by_backend"]
    assert search["local"]["startup"]["seconds"] == warm["seconds"] and search["local"]["cost"]["seconds"] > 0
    assert search["docker"]["cost"] is None
    assert search["kubernetes"]["startup"]["source"].startswith("assumption")
    saved = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert saved["startup"]["warm_worker"]["seconds"] == warm["seconds"]
