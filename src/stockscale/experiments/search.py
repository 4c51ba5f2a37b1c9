"""Comparison 2, hyperparameter search: one trial at a time against several at once, same space, same code.

One driver for every backend. It asks an Optuna study (experiments/study) for each trial, runs trials through
a Launcher (`parallel` at a time), feeds every epoch's validation loss to the pruner as the trial reports it
(TrainJob.judge: the launcher stops a pruned trial) and tells the study how each ended. `grid` (the default)
walks the product of the space's lists, longest-expected trial first so the makespan stays near its lower
bound max(sum / parallel, longest); `random` and `tpe` sample `trials` points from lists or ranges
(experiments/space). A launcher that takes jobs as they come (`streams_jobs`: local processes, warm workers)
gets the next trial when a slot frees, so TPE knows every result so far; one that needs a whole batch (an
Indexed Job) gets them all at once, or, for TPE, in waves of `parallel`.

The summary is rewritten after every trial, so Ctrl-C leaves a valid partial summary; `resume` keeps what
already finished with the same settings and continues the study from its journal. Format: docs/results.md.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stockscale.config import TrainConfig, TrainOverrides, build_train_config
from stockscale.errors import InputError
from stockscale.experiments.records import BestTrial, SearchSummaryRecord, TrialEntry, split_baselines
from stockscale.experiments.study import JOURNAL, PRUNERS, STRATEGIES, StudyDriver, open_study
from stockscale.files import prepare_results_dir, remove_entry, utc_timestamp, write_json_atomic
from stockscale.launch.base import JobResult, Launcher, TrainJob
from stockscale.launch.runner import Runner
from stockscale.locks import folder_lock
from stockscale.machine import machine_info
from stockscale.search.cluster import cluster_searcher
from stockscale.search.controller import check_cluster_pruner
from stockscale.search.registry import pruner as pruner_named
from stockscale.search.registry import strategy as strategy_named
from stockscale.search.searcher import TrialResult, TrialTemplate
from stockscale.space import Parameter, Space, grid, grid_size, load_space, parse_space, space_record
from stockscale.tracking import NO_TRACKING, Tracker
from stockscale.worker import EpochReport, JsonValue

if TYPE_CHECKING:
    import optuna

__all__ = ["DEFAULT_SPACE", "KIND", "SearchSettings", "expected_cost", "grid", "load_space",
           "run_search", "trial_jobs", "trial_name"]

FORMAT_VERSION = 1
KIND = "hp_search"  # summary.json's "kind": the marker that lets a rerun clear this folder
DEFAULT_SPACE: dict[str, list[Any]] = {
    "lr": [1e-4, 5e-4, 1e-3],
    "hidden_size": [64, 128, 256],
    "num_layers": [2, 3],
}
DEFAULT_EPOCHS = 2  # a search's trials train this many epochs unless --epochs says otherwise
CONTENTS = ("trials", "logs", "summary.json", JOURNAL, JOURNAL + ".lock")


def expected_cost(config: TrainOverrides) -> float:
    """Relative cost of a trial, for ordering only: LSTM work per sample grows with
    layers x hidden x (hidden + input), times the samples it will see (capped by max_steps)."""
    merged = build_train_config(config, "trial")
    hidden, layers = merged.hidden_size, merged.num_layers
    per_sample = 4 * hidden * (hidden + 5) + (layers - 1) * 4 * hidden * 2 * hidden
    samples = merged.epochs * merged.multiplier * 1000  # about 1,000 windows per replica by default
    if merged.max_steps is not None:
        samples = min(samples, merged.max_steps * merged.batch_size)
    return float(per_sample * samples)


@dataclass
class SearchSettings:
    """What a search runs. The defaults are the search's: `stockscale search` leaves to them whatever its
    flags do not say."""

    backend: str  # sequential | parallel | docker | kubernetes
    workers: int | None = None  # trials at once; default: 1 sequential, the cores here, every trial on a cluster
    space: Space | dict[str, JsonValue] = field(default_factory=lambda: dict(DEFAULT_SPACE))  # YAML form -> Space
    train: TrainOverrides = field(default_factory=lambda: TrainOverrides())  # every trial's (epochs: 2)
    threads_per_trial: int | None = None  # default: the cores split between the trials; a pod its CPU limit
    trial_timeout: float | None = None
    resume: bool = False
    emulated: bool = False
    strategy: str = "grid"  # grid | random | tpe
    trials: int | None = None  # random and tpe: how many trials in all (a resumed study's included)
    pruner: str = "none"  # none | asha | median

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InputError(f"unknown strategy {self.strategy!r}: choose {', '.join(STRATEGIES)}")
        if self.pruner not in PRUNERS:
            raise InputError(f"unknown pruner {self.pruner!r}: choose {', '.join(PRUNERS)}")
        if not all(isinstance(value, Parameter) for value in self.space.values()):
            self.space = parse_space(dict(self.space), "space")
        if self.strategy == "grid":
            if self.trials is not None:
                raise InputError("--trials is for --strategy random or tpe; a grid runs every combination")
            grid(self.parameters)  # a range in a grid: one line now
        elif self.trials is None:
            raise InputError(f"--strategy {self.strategy} needs --trials N")
        self.train = {"epochs": DEFAULT_EPOCHS, **self.train}
        if self.backend == "sequential" and self.workers not in (None, 1):
            raise InputError(f"--backend sequential runs one trial at a time; --workers {self.workers} needs "
                             "--backend parallel")
        cpus = os.cpu_count() or 1
        if self.workers is None:
            self.workers = {"sequential": 1, "kubernetes": self.trial_count}.get(self.backend, cpus)
        if self.threads_per_trial is None and self.backend != "kubernetes":
            self.threads_per_trial = max(1, cpus // self.workers)

    @property
    def parameters(self) -> Space:
        return self.space  # type: ignore[return-value]  # a Space after __post_init__

    @property
    def trial_count(self) -> int:
        """How many trials the search runs in all: the grid's size, or --trials."""
        return self.trials if self.trials is not None else grid_size(self.parameters) or 0

    @property
    def seed(self) -> int:
        """One seed for the search: every trial's training seed, and the sampler's."""
        return build_train_config(self.train, "search settings").seed


def trial_name(index: int) -> str:
    return f"trial-{index:02d}"


def trial_jobs(settings: SearchSettings, out: Path) -> list[TrainJob]:
    """The trials a search would run, as a dry run renders them (see trial_points)."""
    return [_job(settings, out, index, config) for index, config in trial_points(settings)]


def trial_points(settings: SearchSettings) -> list[tuple[int, TrainOverrides]]:
    """(trial number, config) of every trial known before any result: the grid's points, longest-expected
    first, or the first `trials` points the seeded sampler would choose with no results yet."""
    if settings.strategy == "grid":
        points = list(enumerate(grid(settings.parameters)))
        points.sort(key=lambda point: expected_cost({**settings.train, **point[1]}), reverse=True)
    else:
        import optuna

        from stockscale.experiments.study import make_sampler, suggest

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(sampler=make_sampler(settings.strategy, settings.seed))
        points = []
        for _ in range(settings.trial_count):
            trial = study.ask()
            points.append((trial.number, {name: suggest(trial, name, parameter)
                                          for name, parameter in settings.parameters.items()}))
    return points


def trial_template(settings: SearchSettings, out: Path) -> TrialTemplate:
    """What every trial shares, for a Searcher (temporary, issue 21: the cluster's searchers use it)."""
    return TrialTemplate(config=build_train_config(settings.train, "search settings"), trials_dir=out / "trials",
                         threads=settings.threads_per_trial, timeout=settings.trial_timeout)


def _job(settings: SearchSettings, out: Path, index: int, config: TrainOverrides,
         judge: Callable[[EpochReport], bool] | None = None) -> TrainJob:
    return TrainJob(name=trial_name(index), config={**settings.train, **config},
                    run_dir=out / "trials" / trial_name(index), threads=settings.threads_per_trial,
                    timeout=settings.trial_timeout, judge=judge)


def run_search(settings: SearchSettings, launcher: Launcher, out: Path,
               on_result: Callable[[TrialEntry], None] | None = None,
               tracker: Tracker | None = None) -> SearchSummaryRecord:
    """Run the search and write `<out>/summary.json` after every trial; return the final summary. The folder
    is locked for the whole search (locks.folder_lock): a second search on it is refused, never mixed in. A
    `tracker` is told the search (a parent run) and each trial's result as it arrives (its children)."""
    points = grid(settings.parameters) if settings.strategy == "grid" else []
    for index, config in enumerate(points):
        build_train_config({**settings.train, **config}, f"trial {index} {config}")
    prepare_results_dir(out, "summary.json", KIND, (), clear=False)  # exists and is writable, to hold the lock
    with folder_lock(out, "stockscale search"):
        return _run_search(settings, launcher, out, points, on_result, tracker or NO_TRACKING)


def _run_search(settings: SearchSettings, launcher: Launcher, out: Path, points: list[TrainOverrides],
                on_result: Callable[[TrialEntry], None] | None, tracker: Tracker) -> SearchSummaryRecord:
    prepare_results_dir(out, "summary.json", KIND, CONTENTS, clear=not settings.resume)
    study_hash = search_settings_hash(settings)
    previous = _finished_trials(out, settings, points) if settings.resume else {}
    study, continued = open_study(out, settings.strategy, settings.pruner, settings.seed, study_hash,
                                  settings.resume)
    if settings.strategy != "grid" and not continued:
        previous = {}  # a sampled trial belongs to its study: a new study starts from nothing
    summary: SearchSummaryRecord = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "started_at": utc_timestamp(),
        "finished_at": None,
        "complete": False,
        "settings": {
            "backend": settings.backend,
            "workers": settings.workers,
            "threads_per_trial": settings.threads_per_trial,
            "space": space_record(settings.parameters),
            "strategy": settings.strategy,
            "trials": settings.trial_count,
            "pruner": settings.pruner,
            "seed": settings.seed,
            "train": settings.train,
            "trial_timeout_seconds": settings.trial_timeout,
            "emulated": settings.emulated,
            "launcher": launcher.name,
            "machine": machine_info(),
        },
        "results": list(previous.values()),
    }
    driver = StudyDriver(study, settings.parameters, pruning=settings.pruner != "none", journal=out / JOURNAL)
    lock = threading.Lock()
    running: dict[str, tuple[int, TrainOverrides, optuna.Trial | None]] = {}

    def start(index: int, config: TrainOverrides, trial: optuna.Trial | None) -> TrainJob:
        last_epoch = build_train_config({**settings.train, **config}, f"trial {index} {config}").epochs
        judge = None if trial is None else (
            lambda report: driver.report(trial, report.epoch, report.val_loss, last_epoch))
        job = _job(settings, out, index, config, judge=judge)
        remove_entry(job.run_dir)  # an unfinished trial's leftovers (a symlink: the link, never its target)
        remove_entry(out / "logs" / job.name)
        with lock:
            running[job.name] = (index, config, trial)
        return job

    def record(result: JobResult) -> None:
        with lock:
            index, config, trial = running.pop(result.name)
        entry = trial_entry(index, config, result)
        entry["settings_hash"] = trial_settings_hash(settings, config)
        if trial is not None:
            entry["study_trial"] = trial.number
            driver.tell(trial, result.status, entry["val_loss"])
        with lock:
            summary["results"].append(entry)
            _write(out, summary)
        tracker.on_result(result, {**settings.train, **config}, {"stockscale.kind": "trial", "trial": str(index)})
        if on_result is not None:
            on_result(entry)

    def grid_jobs() -> Iterator[TrainJob]:
        for index, config in trial_points(settings):
            if index not in previous:
                trial, _ = driver.ask(fixed=config)
                yield start(index, config, trial)

    def sampled_jobs() -> Iterator[TrainJob]:
        for _ in range(max(0, settings.trial_count - len(previous))):
            trial, config = driver.ask()
            yield start(trial.number, config, trial)

    # Temporary (issue 21, h21k8s) until the driver calls a Searcher: a cluster controller (Katib, an
    # OptimizationJob) runs the search from the space whole; each trial it reports is recorded with the
    # parameters it assigned, and no study of ours asks or is told.
    searcher = cluster_searcher(launcher)
    if searcher is None and isinstance(launcher, Runner):  # every launcher, once all subclass Runner
        check_cluster_pruner(launcher, pruner_named(settings.pruner))
    jobs = grid_jobs() if settings.strategy == "grid" else sampled_jobs()
    summary["launched_at"] = time.time()  # the total counts from here: a warm launcher's start is in it
    _write(out, summary)
    tracker.on_start("search", out.name, summary["settings"])
    try:
        if searcher is not None:
            def told(trial: TrialResult) -> None:
                with lock:
                    running[trial.result.name] = (trial.number, trial.params, None)
                record(trial.result)

            searcher.search(settings.parameters, strategy_named(settings.strategy), pruner_named(settings.pruner),
                            trial_template(settings, out), settings.workers, trials=settings.trial_count,
                            on_trial=told)
        elif getattr(launcher, "streams_jobs", False):
            launcher.run_many(jobs, settings.workers, record)
        else:
            # A batch launcher takes its jobs at once; TPE learns between waves of `workers` trials.
            adaptive = settings.strategy == "tpe"
            wave = settings.workers if adaptive else settings.trial_count
            while batch := list(itertools.islice(jobs, max(1, wave))):
                launcher.run_many(batch, settings.workers, record)
    except BaseException:
        tracker.on_end(False, [out / "summary.json"])
        raise
    finally:
        _write(out, summary)  # on Ctrl-C too: a valid partial summary
    summary["complete"], summary["finished_at"] = True, utc_timestamp()
    _write(out, summary)
    tracker.on_end(True, [out / "summary.json"])
    return summary


def trial_entry(index: int, config: TrainOverrides, result: JobResult) -> TrialEntry:
    metrics = result.metrics or {}
    test = metrics.get("test")
    val_loss = (metrics.get("val") or {}).get("loss")
    if result.status == "pruned" and result.epochs:
        val_loss = result.epochs[-1].val_loss  # the last loss it reported before the pruner stopped it
    return {
        "trial": index,
        "name": trial_name(index),
        "config": config,
        "status": result.status,
        "detail": result.detail,
        "start_time": result.start_time,
        "end_time": result.end_time,
        "wall_seconds": result.wall_seconds,
        "train_seconds": metrics.get("train_seconds"),
        "epochs_done": len(result.epochs) or metrics.get("epochs_completed"),
        "val_loss": val_loss,
        "test_rmse": test["rmse"] if test else None,
        "test": test,
        "baseline_test": (metrics.get("baseline") or {}).get("test"),
        "baselines_test": split_baselines(metrics.get("baselines")),
        "peak_rss_bytes": max(result.peak_rss_bytes) if result.peak_rss_bytes else metrics.get("peak_rss_bytes"),
        "run_dir": result.run_dir if result.status == "success" else None,
    }


def search_settings_hash(settings: SearchSettings) -> str:
    """A digest of what decides the whole study: strategy, pruner, space and the common trial settings.
    A resumed search continues its study only when this matches."""
    record = {"strategy": settings.strategy, "pruner": settings.pruner, "space": space_record(settings.parameters),
              "config": build_train_config(settings.train, "search settings").to_dict(),
              "threads": settings.threads_per_trial}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def trial_settings_hash(settings: SearchSettings, config: TrainOverrides) -> str:
    """A digest of everything that decides what a trial trains: its full TrainConfig (grid point and common
    settings, defaults included), the threads it gets and the content of its data (a CSV file, a dataset's
    manifest). `--resume` reuses a trial only when this matches, so a summary never mixes settings."""
    cfg = build_train_config({**settings.train, **config}, "trial")
    record = {"config": cfg.to_dict(), "threads": settings.threads_per_trial, "data": _data_digest(cfg)}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def _data_digest(cfg: TrainConfig) -> str | None:
    """The bytes behind a csv: source or a dataset directory (None for bundled data, fixed by the package)."""
    kind, _, rest = cfg.source.partition(":")
    path = Path(cfg.data) / "manifest.json" if cfg.data is not None else Path(rest) if kind == "csv" else None
    if path is None:
        return None
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "unreadable"


def _finished_trials(out: Path, settings: SearchSettings, points: list[TrainOverrides]
                    ) -> dict[int, TrialEntry]:
    """Trials of an earlier run in `out` that a resumed search keeps: those that finished (succeeded, or were
    pruned by a sampled search's pruner) and trained with the same full settings (trial_settings_hash); a grid
    trial also keeps its config at the same index of the grid."""
    from stockscale.experiments.results import read_search_summary

    path = out / "summary.json"
    if not path.is_file():
        return {}
    # Validated as compare reads it: a damaged summary is one line, and what is kept is well-typed.
    results = [trial.model_dump() for trial in read_search_summary(path).results]
    finished = {}
    kept = ("success",) if settings.strategy == "grid" else ("success", "pruned")
    for entry in results:
        index, config = entry.get("trial"), entry.get("config")
        if not (entry.get("status") in kept and isinstance(index, int) and isinstance(config, dict)):
            continue
        if settings.strategy == "grid" and not (index < len(points) and config == points[index]):
            continue
        if entry.get("settings_hash") == trial_settings_hash(settings, config):
            finished[index] = entry
    return finished


def _write(out: Path, summary: SearchSummaryRecord) -> None:
    results = sorted(summary["results"], key=lambda entry: entry["trial"])
    summary["results"] = results
    done = [entry for entry in results if entry["status"] == "success"]
    pruned = sum(entry["status"] == "pruned" for entry in results)
    starts = [entry["start_time"] for entry in results] + [summary.get("launched_at") or math.inf]
    ends = [entry["end_time"] for entry in results]
    summary["total_wall_seconds"] = (max(ends) - min(starts)) if results else 0.0
    summary["sum_trial_seconds"] = sum(entry["wall_seconds"] for entry in results)
    summary["successes"], summary["pruned"] = len(done), pruned
    summary["failures"] = len(results) - len(done) - pruned
    # Only a finite validation loss can be the best (a NaN compares false with everything).
    scored = [entry for entry in done
              if isinstance(entry["val_loss"], int | float) and math.isfinite(entry["val_loss"])]
    best = min(scored, key=lambda entry: entry["val_loss"], default=None)
    summary["best"] = None if best is None else BestTrial(
        trial=best["trial"], name=best["name"], config=best["config"], val_loss=best["val_loss"], test=best["test"],
        baseline_test=best["baseline_test"], run_dir=best["run_dir"], baselines_test=best.get("baselines_test", {}))
    write_json_atomic(out / "summary.json", summary)

