"""`stockscale evaluate`: walk-forward evaluation over rolling origins and seeds, written to evaluation.json.

Why: one chronological split and one seed cannot tell a model that learned something from one that learned
the training period's drift and met a test period that happened to suit it (or not). So the same training is
repeated on K spans of the series, each as long as the configured one and ending one test period earlier than
the next, so that the K test periods' predicted days lie end to end without overlap (the last is the
configured run's own),
with S seeds on each. Every run is an ordinary training run (train.py, through a Runner: the same code path
as a search's trials) and scores the LSTM beside the baselines on its own test days; the evaluation then
reports each model's mean and spread over the K x S runs and a Diebold-Mariano test of each model against
persistence on the K test periods strung together (evaluation_stats.py).

Format: docs/results.md (`results/evaluate/evaluation.json`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from stockscale.config import TrainOverrides, build_train_config
from stockscale.errors import InputError
from stockscale.experiments.evaluate_settings import EvaluateSettings
from stockscale.experiments.evaluation_stats import diebold_mariano, spread
from stockscale.experiments.records import split_baselines
from stockscale.files import prepare_results_dir, utc_timestamp, write_json_atomic
from stockscale.launch.runner import JobResult, Runner, TrainJob
from stockscale.machine import machine_info

KIND = "evaluation"
FORMAT_VERSION = 1
FOLDER = "evaluate"
CONTENTS = ("evaluation.json", "runs")
PRICE_MODELS = ("lstm", "persistence", "drift", "ridge")
DIRECTION_MODELS = ("always_up", "training_majority")
METRICS = ("rmse", "mae", "directional_accuracy", "mean_predicted_move", "up_share")


@dataclass(frozen=True)
class Fold:
    """One rolling origin: the span [start, end] of trading days a run trains, validates and tests on."""

    index: int
    start: date
    end: date


def plan_folds(train: TrainOverrides, origins: int) -> tuple[list[Fold], int]:
    """The K spans, oldest first, each as many trading days as the configured span and one test period's
    predicted days earlier than the next (the test split less the 60 days of its first window), so that the
    predicted days of the K test periods lie end to end; returns them and the predicted days per fold. Too
    little history before the configured span is an InputError."""
    from stockscale.data.dataset import prepare_from_config, series_cache_dir
    from stockscale.data.series_cache import load_series
    from stockscale.data.windows import PooledData, window_count

    cfg = build_train_config(dict(train), "evaluation settings")
    base = prepare_from_config(cfg)
    if isinstance(base, PooledData):
        raise InputError(f"{cfg.source}: walk-forward evaluation over several tickers is not built yet (its "
                         "Diebold-Mariano test reads one series' daily losses): evaluate one ticker at a time")
    test_days = window_count(len(base.series) - base.val_end)  # the days a fold predicts
    history = load_series(cfg.source, date(1, 1, 1), base.series.dates[-1].astype(date), series_cache_dir())
    dates = history.dates
    first = int(np.searchsorted(dates, base.series.dates[0]))
    last = int(np.searchsorted(dates, base.series.dates[-1]))
    earliest = first - (origins - 1) * test_days
    if earliest < 0:
        raise InputError(f"{cfg.source}: {origins} origins need {-earliest} trading days before "
                         f"{base.series.dates[0]} and the series starts at {dates[0]}: use fewer --origins or a "
                         "later --start")
    folds = []
    for index in range(origins):
        back = (origins - 1 - index) * test_days
        folds.append(Fold(index, dates[first - back].astype(date), dates[last - back].astype(date)))
    return folds, test_days


def _run_name(fold: int, seed: int) -> str:
    return f"fold-{fold}-seed-{seed}"


def _jobs(settings: EvaluateSettings, folds: list[Fold], seeds: list[int], out: Path) -> list[TrainJob]:
    jobs = []
    for fold in folds:
        for seed in seeds:
            config: TrainOverrides = {**settings.train, "start": fold.start.isoformat(),
                                      "end": fold.end.isoformat(), "seed": seed}
            jobs.append(TrainJob(name=_run_name(fold.index, seed),
                                 config=build_train_config(dict(config), f"fold {fold.index} seed {seed}"),
                                 run_dir=out / "runs" / _run_name(fold.index, seed),
                                 threads=settings.threads_per_run, timeout=settings.timeout))
    return jobs


def _run_entry(result: JobResult, seed: int) -> dict[str, Any]:
    metrics = result.metrics or {}
    return {"seed": seed, "status": result.status, "detail": result.detail, "run_dir": result.run_dir,
            "wall_seconds": result.end_time - result.start_time, "test": metrics.get("test"),
            "baselines_test": split_baselines(metrics.get("baselines"))}


def _losses(run_dir: str | None) -> dict[str, Any] | None:
    """Per-day squared errors of the LSTM and the price baselines from a run's predictions.json."""
    if run_dir is None:
        return None
    try:
        data = json.loads((Path(run_dir) / "predictions.json").read_text(encoding="utf-8"))
        actual = np.asarray(data["actual"], dtype=np.float64)
        predicted = {"lstm": data["predicted"], "persistence": data["baseline"], **data.get("baselines", {})}
        return {"dates": data["dates"],
                **{name: (np.asarray(values, dtype=np.float64) - actual) ** 2 for name, values in predicted.items()}}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def model_scores(folds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each model's metrics over every successful run: mean, spread, min, max (evaluation_stats.spread)."""
    runs = [run for fold in folds for run in fold["runs"] if run["status"] == "success"]
    scores: dict[str, dict[str, Any]] = {}
    for name in (*PRICE_MODELS, *DIRECTION_MODELS):
        rows = [run["test"] if name == "lstm" else run["baselines_test"].get(name) for run in runs]
        rows = [row for row in rows if row]
        metrics = METRICS if name in PRICE_MODELS else ("directional_accuracy",)
        scores[name] = {metric: spread([row.get(metric) for row in rows]) for metric in metrics}
    drift = [run["baselines_test"].get("drift", {}).get("daily_log_return") for run in runs]
    scores["drift"]["daily_log_return"] = spread(drift)
    return scores


def dm_tests(folds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each model against persistence, squared error, on the folds' test days end to end. The LSTM's loss on a
    day is the mean over its seeds (the expected loss of a run with a seed drawn at random)."""
    series: dict[str, list[np.ndarray]] = {name: [] for name in PRICE_MODELS}
    for fold in folds:
        losses = [loss for loss in (_losses(run["run_dir"]) for run in fold["runs"] if run["status"] == "success")
                  if loss is not None]
        if not losses or any(loss["dates"] != losses[0]["dates"] for loss in losses):
            continue  # a fold without a complete, consistent set of runs is left out of the test
        series["lstm"].append(np.mean([loss["lstm"] for loss in losses], axis=0))
        for name in PRICE_MODELS[1:]:
            if name not in losses[0]:
                break
            series[name].append(losses[0][name])
    tests: dict[str, dict[str, Any]] = {}
    if not series["persistence"]:
        return tests
    base = np.concatenate(series["persistence"])
    for name in ("lstm", "drift", "ridge"):
        if len(series[name]) == len(series["persistence"]):
            tests[name] = {"against": "persistence", "loss": "squared error",
                           **diebold_mariano(np.concatenate(series[name]), base)}
    return tests


def run_evaluation(settings: EvaluateSettings, launcher: Runner, out: Path,
                   on_result: Callable[[str, JobResult], None] | None = None) -> dict[str, Any]:
    """Run every fold x seed, then write `<out>/evaluation.json` (a rerun replaces an earlier evaluation's)."""
    base_seed = build_train_config(dict(settings.train), "evaluation settings").seed
    seeds = [base_seed + offset for offset in range(settings.seeds)]
    folds, test_days = plan_folds(settings.train, settings.origins)
    jobs = _jobs(settings, folds, seeds, out)
    prepare_results_dir(out, "evaluation.json", KIND, CONTENTS, clear=True)
    started = utc_timestamp()
    run_settings = {"origins": settings.origins, "seeds": seeds, "train": dict(settings.train),
                    "parallel": settings.parallel, "threads_per_run": settings.threads_per_run,
                    "timeout_seconds": settings.timeout, "machine": machine_info()}
    # Written first, so that an interrupted evaluation leaves a folder the next one may clear and compare reads.
    write_json_atomic(out / "evaluation.json", {
        "kind": KIND, "format_version": FORMAT_VERSION, "started_at": started, "finished_at": None,
        "complete": False, "settings": run_settings, "folds": [], "models": {}, "diebold_mariano": {}})

    def told(result: JobResult) -> None:
        if on_result is not None:
            on_result(result.name, result)

    results = {result.name: result for result in launcher.run_many(jobs, max(1, settings.parallel), told)}
    fold_records: list[dict[str, Any]] = []
    for fold in folds:
        runs = [_run_entry(results[_run_name(fold.index, seed)], seed) for seed in seeds
                if _run_name(fold.index, seed) in results]
        dates: list[str] = next((loss["dates"] for loss in (_losses(run["run_dir"]) for run in runs) if loss), [])
        fold_records.append({"fold": fold.index, "start": fold.start.isoformat(), "end": fold.end.isoformat(),
                             "predicted_days": test_days, "test_first_date": dates[0] if dates else None,
                             "test_last_date": dates[-1] if dates else None, "runs": runs})
    record = {
        "kind": KIND, "format_version": FORMAT_VERSION, "started_at": started, "finished_at": utc_timestamp(),
        "complete": all(run["status"] == "success" for fold in fold_records for run in fold["runs"])
        and len(results) == len(jobs),
        "settings": run_settings,
        "folds": fold_records,
        "models": model_scores(fold_records),
        "diebold_mariano": dm_tests(fold_records),
    }
    write_json_atomic(out / "evaluation.json", _finite(record))
    return record


def _finite(value: Any) -> Any:
    """The record with every non-finite float as null: results files are strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value
