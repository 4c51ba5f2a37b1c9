"""Comparison 2, hyperparameter search: one trial at a time against several at once, same space, same code.

The driver for every backend and every searcher. It turns SearchSettings into a TrialTemplate (the common
settings, validated once, and how each trial runs), picks the searcher (search/choice.py: our Optuna study
over the runner, or a cluster controller that searches itself) and calls `searcher.search(space, strategy,
pruner, template, parallel, ...)`. Which trials run, and when, is the searcher's business; this module
records them: `summary.json` is rewritten after every trial (so Ctrl-C leaves a valid partial summary),
`--resume` keeps what already finished with the same settings, and a tracker is told the search and each
trial. Format: docs/results.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from stockscale.config import TrainConfig, TrainOverrides, build_train_config
from stockscale.errors import InputError
from stockscale.experiments.records import split_baselines
from stockscale.experiments.results import (
    Best,
    Machine,
    Scalar,
    SearchSettingsRecord,
    SearchSummary,
    SplitMetrics,
    Trial,
    read_search_summary,
)
from stockscale.files import prepare_results_dir, remove_entry, utc_timestamp, write_json_atomic
from stockscale.launch.registry import BACKENDS
from stockscale.launch.runner import Runner, TrainJob
from stockscale.locks import folder_lock
from stockscale.machine import machine_info
from stockscale.search.choice import SEARCHERS, choose_searcher
from stockscale.search.optuna_searcher import StudyFile, known_jobs, val_loss
from stockscale.search.registry import Pruner, Strategy, pruner, strategy
from stockscale.search.searcher import Searcher, TrialResult, TrialTemplate, trial_name
from stockscale.search.study import JOURNAL, study_continues
from stockscale.space import Parameter, Space, grid, grid_size, load_space, parse_space, space_record
from stockscale.tracking import NO_TRACKING, Tracker
from stockscale.worker import JsonValue

__all__ = ["DEFAULT_SPACE", "KIND", "SearchSettings", "grid", "load_space", "run_search", "search_dry_run",
           "trial_jobs", "trial_name"]

FORMAT_VERSION: Literal[1] = 1
KIND: Literal["hp_search"] = "hp_search"  # summary.json's "kind": the marker that lets a rerun clear this folder
DEFAULT_SPACE: dict[str, JsonValue] = {
    "lr": [1e-4, 5e-4, 1e-3],
    "hidden_size": [64, 128, 256],
    "num_layers": [2, 3],
}
DEFAULT_EPOCHS = 2  # a search's trials train this many epochs unless --epochs says otherwise
CONTENTS = ("trials", "logs", "summary.json", JOURNAL, JOURNAL + ".lock")
# The old --backend spellings: both are local; summary.json still records a local search as one of them.
LOCAL_MODES = ("sequential", "parallel")
_TRIAL_ENTRY = re.compile(r"trial-\d+")


@dataclass
class SearchSettings:
    """What a search runs, checked here, once: every flag combination of a search is refused in this one place
    (what a cluster controller cannot do, by its Searcher's `check`). The defaults are the search's:
    `stockscale search` leaves to them whatever its flags do not say."""

    backend: str = "local"  # local | docker | kubernetes (sequential | parallel: the old spellings of local)
    parallel: int | None = None  # trials at once; default: 1 here, the cores in containers, every trial on a cluster
    space: Space | dict[str, JsonValue] = field(default_factory=lambda: dict(DEFAULT_SPACE))  # YAML form -> Space
    # every trial's common settings (epochs: 2); a dict is validated into a TrainConfig here, once
    train: TrainConfig | TrainOverrides = field(default_factory=lambda: build_train_config({}))
    threads_per_trial: int | None = None  # default: the cores split between the trials; a pod its CPU limit
    trial_timeout: float | None = None
    resume: bool = False
    emulated: bool = False
    strategy: str = "grid"  # a registered strategy (search/registry.py)
    trials: int | None = None  # sampled strategies: how many trials in all (a resumed study's included)
    pruner: str = "none"  # a registered pruner
    searcher: str = "optuna"  # who chooses the trials (search/choice.py): optuna | katib | optimizationjob
    mode: str = field(init=False, default="")  # summary.json's backend: sequential | parallel | docker | kubernetes

    def __post_init__(self) -> None:
        try:
            chosen = strategy(self.strategy)
            pruner(self.pruner)
        except ValueError as error:
            raise InputError(str(error)) from None
        legacy = self.backend if self.backend in LOCAL_MODES else None
        if legacy is not None:
            self.backend = "local"
        if self.backend not in BACKENDS:
            raise InputError(f"unknown backend {self.backend!r}: choose {', '.join(BACKENDS)}")
        if self.searcher not in SEARCHERS:
            raise InputError(f"unknown searcher {self.searcher!r}: choose {', '.join(SEARCHERS)}")
        if not all(isinstance(value, Parameter) for value in self.space.values()):
            self.space = parse_space(dict(self.space), "space")
        if not isinstance(self.train, TrainConfig):
            self.train = build_train_config(self.train, "search settings")  # a dict: validated here, once
        if "epochs" not in self.train.model_fields_set:
            self.train = self.train.model_copy(update={"epochs": DEFAULT_EPOCHS})
        if chosen.lists_grid:
            if self.trials is not None:
                raise InputError("--trials is for --strategy random or tpe; a grid runs every combination")
            for number, point in enumerate(grid(self.parameters)):  # a range in a grid, a point that cannot train
                self.train.updated(point, f"trial {number} {point}")
        elif self.trials is None:
            raise InputError(f"--strategy {self.strategy} needs --trials N")
        if legacy == "sequential" and self.parallel not in (None, 1):
            raise InputError(f"--backend sequential runs one trial at a time; --parallel {self.parallel} needs "
                             "--backend local")
        cpus = os.cpu_count() or 1
        if self.parallel is None:
            self.parallel = {"local": cpus if legacy == "parallel" else 1, "docker": cpus}.get(self.backend,
                                                                                              self.trial_count)
        if self.backend == "local":
            self.mode = legacy or ("parallel" if self.parallel > 1 else "sequential")
        else:
            self.mode = self.backend
        if self.threads_per_trial is None and self.backend != "kubernetes":
            self.threads_per_trial = max(1, cpus // self.parallel)

    @property
    def parameters(self) -> Space:
        assert all(isinstance(value, Parameter) for value in self.space.values())
        return self.space  # type: ignore[return-value]  # a Space after __post_init__

    @property
    def config(self) -> TrainConfig:
        assert isinstance(self.train, TrainConfig)
        return self.train

    @property
    def trials_at_once(self) -> int:
        assert self.parallel is not None
        return self.parallel

    @property
    def chosen_strategy(self) -> Strategy:
        return strategy(self.strategy)

    @property
    def chosen_pruner(self) -> Pruner:
        return pruner(self.pruner)

    @property
    def trial_count(self) -> int:
        """How many trials the search runs in all: the grid's size, or --trials."""
        return self.trials if self.trials is not None else grid_size(self.parameters) or 0

    @property
    def seed(self) -> int:
        """One seed for the search: every trial's training seed, and the sampler's."""
        return self.config.seed

    def template(self, out: Path) -> TrialTemplate:
        """What every trial shares; a trial is this with its point on top."""
        return TrialTemplate(config=self.config, trials_dir=out / "trials", threads=self.threads_per_trial,
                             timeout=self.trial_timeout)


def checked_searcher(settings: SearchSettings, runner: Runner, study: StudyFile | None = None) -> Searcher:
    """The settings' searcher over `runner`, having refused (one line) what it cannot run."""
    searcher = choose_searcher(settings.searcher, runner, study)
    searcher.check(settings.chosen_strategy, settings.chosen_pruner)
    return searcher


def trial_jobs(settings: SearchSettings, out: Path) -> list[TrainJob]:
    """The trials our study knows before any result (a dry run's): the grid's points, longest-expected first,
    or the first `trials` points the seeded sampler chooses."""
    return known_jobs(settings.parameters, settings.chosen_strategy, settings.template(out),
                      trials=settings.trial_count)


def search_dry_run(settings: SearchSettings, runner: Runner, out: Path) -> list[Path]:
    """Write what the search would start into `out` (the searcher's render; nothing runs); returns the files."""
    searcher = checked_searcher(settings, runner)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder")
    return searcher.dry_run(settings.parameters, settings.chosen_strategy, settings.chosen_pruner,
                            settings.template(out), settings.trials_at_once, trials=settings.trial_count,
                            out_dir=out)


def run_search(settings: SearchSettings, runner: Runner, out: Path,
               on_result: Callable[[Trial], None] | None = None,
               tracker: Tracker | None = None) -> SearchSummary:
    """Run the search and write `<out>/summary.json` after every trial; return the final summary. The folder
    is locked for the whole search (locks.folder_lock): a second search on it is refused, never mixed in. A
    `tracker` is told the search (a parent run) and each trial's result as it arrives (its children)."""
    checked_searcher(settings, runner)  # what the searcher cannot run is refused before the folder is touched
    prepare_results_dir(out, "summary.json", KIND, (), clear=False)  # exists and is writable, to hold the lock
    with folder_lock(out, "stockscale search"):
        return _run_search(settings, runner, out, on_result, tracker or NO_TRACKING)


def _run_search(settings: SearchSettings, runner: Runner, out: Path, on_result: Callable[[Trial], None] | None,
                tracker: Tracker) -> SearchSummary:
    prepare_results_dir(out, "summary.json", KIND, CONTENTS, clear=not settings.resume)
    study_hash = search_settings_hash(settings)
    previous = _finished_trials(out, settings) if settings.resume else {}
    if previous and not settings.chosen_strategy.lists_grid and not study_continues(out / JOURNAL, study_hash):
        previous = {}  # a sampled trial belongs to its study: a new study starts from nothing
    _remove_unfinished(out, previous)
    study = StudyFile(journal=out / JOURNAL, settings_hash=study_hash, resume=settings.resume,
                      kept={number: dict(entry.config) for number, entry in previous.items()})
    searcher = checked_searcher(settings, runner, study)
    summary = SearchSummary(
        kind=KIND, format_version=FORMAT_VERSION, started_at=utc_timestamp(), finished_at=None, complete=False,
        settings=settings_record(settings, runner), total_wall_seconds=0.0, successes=0, failures=0,
        results=list(previous.values()), best=None)
    lock = threading.Lock()

    def record(trial: TrialResult) -> None:
        entry = trial_entry(trial, trial_settings_hash(settings, trial.params))
        with lock:
            summary.results.append(entry)
            _write(out, summary)
        tracker.on_result(trial.result, {**settings.config.overrides(), **trial.params},
                          {"stockscale.kind": "trial", "trial": str(trial.number)})
        if on_result is not None:
            on_result(entry)

    summary.launched_at = time.time()  # the total counts from here: a warm runner's start is in it
    _write(out, summary)
    tracker.on_start("search", out.name, summary.settings.model_dump(mode="json", exclude_unset=True))
    try:
        searcher.search(settings.parameters, settings.chosen_strategy, settings.chosen_pruner,
                        settings.template(out), settings.trials_at_once, trials=settings.trial_count,
                        on_trial=record)
    except BaseException:
        tracker.on_end(False, [out / "summary.json"])
        raise
    finally:
        with lock:
            _write(out, summary)  # on Ctrl-C too: a valid partial summary
    summary.complete, summary.finished_at = True, utc_timestamp()
    _write(out, summary)
    tracker.on_end(True, [out / "summary.json"])
    return summary


def settings_record(settings: SearchSettings, runner: Runner) -> SearchSettingsRecord:
    return SearchSettingsRecord(
        backend=settings.mode, workers=settings.parallel, threads_per_trial=settings.threads_per_trial,
        space=space_record(settings.parameters), strategy=settings.strategy, trials=settings.trial_count,
        pruner=settings.pruner, seed=settings.seed, train=scalars(settings.config.overrides()),
        trial_timeout_seconds=settings.trial_timeout, emulated=settings.emulated, launcher=runner.name,
        machine=Machine.model_validate(machine_info()))


def trial_entry(trial: TrialResult, settings_hash: str) -> Trial:
    """A finished trial as summary.json records it."""
    result = trial.result
    metrics = result.metrics or {}
    test = metrics.get("test")
    baselines = metrics.get("baseline")
    baseline = baselines.get("test") if baselines else None
    entry = Trial(
        trial=trial.number, name=trial_name(trial.number), config=scalars(trial.params), status=result.status,
        detail=result.detail, start_time=result.start_time, end_time=result.end_time,
        wall_seconds=result.wall_seconds, train_seconds=metrics.get("train_seconds"),
        epochs_done=len(result.epochs) or metrics.get("epochs_completed"), val_loss=val_loss(result),
        test_rmse=test["rmse"] if test else None,
        test=SplitMetrics.model_validate(test) if test else None,
        baseline_test=SplitMetrics.model_validate(baseline) if baseline else None,
        baselines_test=split_baselines(metrics.get("baselines")),
        peak_rss_bytes=max(result.peak_rss_bytes) if result.peak_rss_bytes else metrics.get("peak_rss_bytes"),
        run_dir=result.run_dir if result.status == "success" else None, settings_hash=settings_hash)
    if trial.study_trial is not None:
        entry.study_trial = trial.study_trial
    return entry


def scalars(values: TrainOverrides) -> dict[str, Scalar]:
    """A config as summary.json holds it: scalars only (the model refuses anything nested when it is built)."""
    return cast("dict[str, Scalar]", dict(values))


def search_settings_hash(settings: SearchSettings) -> str:
    """A digest of what decides the whole study: strategy, pruner, space and the common trial settings.
    A resumed search continues its study only when this matches."""
    record = {"strategy": settings.strategy, "pruner": settings.pruner, "space": space_record(settings.parameters),
              "config": settings.config.to_dict(), "threads": settings.threads_per_trial}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def trial_settings_hash(settings: SearchSettings, params: TrainOverrides) -> str:
    """A digest of everything that decides what a trial trains: its full TrainConfig (its point and the common
    settings, defaults included), the threads it gets and the content of its data (a CSV file, a dataset's
    manifest). `--resume` reuses a trial only when this matches, so a summary never mixes settings."""
    cfg = settings.config.updated(params, "trial")
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


def _finished_trials(out: Path, settings: SearchSettings) -> dict[int, Trial]:
    """Trials of an earlier run in `out` that a resumed search keeps: those that finished (succeeded, or were
    pruned by a sampled search's pruner) and trained with the same full settings (trial_settings_hash); a grid
    trial also keeps its config at the same index of the grid."""
    path = out / "summary.json"
    if not path.is_file():
        return {}
    # Validated as compare reads it: a damaged summary is one line, and what is kept is well-typed.
    results = read_search_summary(path).results
    lists_grid = settings.chosen_strategy.lists_grid
    points = grid(settings.parameters) if lists_grid else []
    kept = ("success",) if lists_grid else ("success", "pruned")
    finished = {}
    for entry in results:
        if entry.status not in kept:
            continue
        if lists_grid and not (entry.trial < len(points) and entry.config == points[entry.trial]):
            continue
        if entry.settings_hash == trial_settings_hash(settings, dict(entry.config)):
            finished[entry.trial] = entry
    return finished


def _remove_unfinished(out: Path, kept: dict[int, Trial]) -> None:
    """An earlier run's trials that are not kept leave no run folder or log behind (a symlink: the link is
    removed, never its target), so a trial run again starts clean."""
    keep = {trial_name(number) for number in kept}
    for folder in (out / "trials", out / "logs"):
        if folder.is_dir() and not folder.is_symlink():
            for entry in folder.iterdir():
                if _TRIAL_ENTRY.fullmatch(entry.name) and entry.name not in keep:
                    remove_entry(entry)


def _write(out: Path, summary: SearchSummary) -> None:
    """Recount the totals and the best trial, then replace summary.json."""
    results = sorted(summary.results, key=lambda entry: entry.trial)
    summary.results = results
    done = [entry for entry in results if entry.status == "success"]
    pruned = sum(entry.status == "pruned" for entry in results)
    starts = [entry.start_time or 0.0 for entry in results] + [summary.launched_at or math.inf]
    ends = [entry.end_time or 0.0 for entry in results]
    summary.total_wall_seconds = (max(ends) - min(starts)) if results else 0.0
    summary.sum_trial_seconds = sum(entry.wall_seconds or 0.0 for entry in results)
    summary.successes, summary.pruned = len(done), pruned
    summary.failures = len(results) - len(done) - pruned
    # Only a finite validation loss can be the best (a NaN compares false with everything).
    scored = [entry for entry in done if entry.val_loss is not None and math.isfinite(entry.val_loss)]
    best = min(scored, key=lambda entry: entry.val_loss or 0.0, default=None)
    summary.best = None if best is None or best.val_loss is None else Best(
        trial=best.trial, name=best.name, config=best.config, val_loss=best.val_loss, test=best.test,
        baseline_test=best.baseline_test, run_dir=best.run_dir, baselines_test=best.baselines_test)
    write_json_atomic(out / "summary.json", summary.document())
