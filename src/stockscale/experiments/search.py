"""Comparison 2, hyperparameter search: one trial at a time against several at once, same grid, same code.

The grid is the product of one list per parameter; any TrainConfig field can be a parameter. Trials go to a
Launcher (`parallel` at a time), longest-expected first so the makespan stays near its lower bound
max(sum / parallel, longest). The summary is rewritten after every trial, so Ctrl-C leaves a valid partial
summary and `resume` skips what already finished. Format: docs/results.md.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stockscale.config import TRAIN_FIELDS, build_train_config, read_yaml_mapping
from stockscale.errors import InputError
from stockscale.files import prepare_results_dir, utc_timestamp, write_json_atomic
from stockscale.launch.base import JobResult, Launcher, TrainJob
from stockscale.machine import machine_info

FORMAT_VERSION = 1
KIND = "hp_search"  # summary.json's "kind": the marker that lets a rerun clear this folder
DEFAULT_SPACE: dict[str, list[Any]] = {
    "lr": [1e-4, 5e-4, 1e-3],
    "hidden_size": [64, 128, 256],
    "num_layers": [2, 3],
}
# Parameters the search itself controls: a grid over them would not be a hyperparameter search.
NOT_SEARCHABLE = {"data", "threads", "device", "checkpoint_dir"}


def load_space(path: Path) -> dict[str, list[Any]]:
    """A YAML mapping of parameter -> non-empty list of values, each value checked against TrainConfig."""
    raw = read_yaml_mapping(path, "space file")
    space: dict[str, list[Any]] = {}
    for name, values in raw.items():
        key = "lr" if name == "learning_rate" else str(name)
        if key not in TRAIN_FIELDS or key in NOT_SEARCHABLE:
            raise InputError(f"space file {path}: {name!r} is not a training parameter that can be searched")
        if not isinstance(values, list):
            raise InputError(f"space file {path}: {name} must be a list of values, not {type(values).__name__}")
        if not values:
            raise InputError(f"space file {path}: {name} has an empty list")
        for value in values:
            if isinstance(value, list | dict):
                raise InputError(f"space file {path}: {name} value {value!r} is not a single value")
            build_train_config({key: value}, f"space file {path}: {name}={value!r}")
        space[key] = values
    if not space:
        raise InputError(f"space file {path} names no parameters")
    return space


def grid(space: dict[str, list[Any]]) -> list[dict[str, Any]]:
    names = list(space)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*space.values())]


def expected_cost(config: dict[str, Any]) -> float:
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
    backend: str  # sequential | parallel | kubernetes
    workers: int  # trials at once
    space: dict[str, list[Any]]
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides applied to every trial
    threads_per_trial: int | None = None
    trial_timeout: float | None = None
    resume: bool = False
    emulated: bool = False


def trial_name(index: int) -> str:
    return f"trial-{index:02d}"


def trial_jobs(settings: SearchSettings, out: Path, skip: set[int] | frozenset[int] = frozenset()) -> list[TrainJob]:
    """One TrainJob per grid point (except `skip`), longest-expected first. A dry run renders these."""
    jobs = [
        TrainJob(name=trial_name(index), config={**settings.train, **config},
                 run_dir=out / "trials" / trial_name(index), threads=settings.threads_per_trial,
                 timeout=settings.trial_timeout)
        for index, config in enumerate(grid(settings.space)) if index not in skip
    ]
    return sorted(jobs, key=lambda job: expected_cost(job.config), reverse=True)


def run_search(settings: SearchSettings, launcher: Launcher, out: Path,
               on_result: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the grid and write `<out>/summary.json` after every trial; return the final summary."""
    configs = grid(settings.space)
    for index, config in enumerate(configs):
        build_train_config({**settings.train, **config}, f"trial {index} {config}")
    prepare_results_dir(out, "summary.json", KIND, ("trials", "summary.json"), clear=False)
    hashes = [trial_settings_hash(settings, config) for config in configs]
    previous = _finished_trials(out, configs, hashes) if settings.resume else {}
    if not settings.resume:
        prepare_results_dir(out, "summary.json", KIND, ("trials", "summary.json"), clear=True)
    summary: dict[str, Any] = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "started_at": utc_timestamp(),
        "finished_at": None,
        "complete": False,
        "settings": {
            "backend": settings.backend,
            "workers": settings.workers,
            "threads_per_trial": settings.threads_per_trial,
            "space": settings.space,
            "train": settings.train,
            "trial_timeout_seconds": settings.trial_timeout,
            "emulated": settings.emulated,
            "launcher": launcher.name,
            "machine": machine_info(),
        },
        "results": list(previous.values()),
    }
    lock = threading.Lock()

    def record(result: JobResult) -> None:
        index = int(result.name.rsplit("-", 1)[1])
        entry = trial_entry(index, configs[index], result)
        entry["settings_hash"] = hashes[index]
        with lock:
            summary["results"].append(entry)
            _write(out, summary)
        if on_result is not None:
            on_result(entry)

    jobs = trial_jobs(settings, out, skip=set(previous))
    for job in jobs:
        shutil.rmtree(job.run_dir, ignore_errors=True)  # an unfinished trial's leftovers
    _write(out, summary)
    try:
        launcher.run_many(jobs, settings.workers, record)
    finally:
        _write(out, summary)  # on Ctrl-C too: a valid partial summary
    summary["complete"], summary["finished_at"] = True, utc_timestamp()
    _write(out, summary)
    return summary


def trial_entry(index: int, config: dict[str, Any], result: JobResult) -> dict[str, Any]:
    metrics = result.metrics or {}
    test = metrics.get("test")
    return {
        "trial": index,
        "name": trial_name(index),
        "config": config,
        "status": result.status,
        "detail": result.detail,
        "start_time": result.start_time,
        "end_time": result.end_time,
        "wall_seconds": result.wall_seconds,
        "val_loss": (metrics.get("val") or {}).get("loss"),
        "test_rmse": test["rmse"] if test else None,
        "test": test,
        "baseline_test": (metrics.get("baseline") or {}).get("test"),
        "peak_rss_bytes": max(result.peak_rss_bytes) if result.peak_rss_bytes else metrics.get("peak_rss_bytes"),
        "run_dir": result.run_dir if result.status == "success" else None,
    }


def trial_settings_hash(settings: SearchSettings, config: dict[str, Any]) -> str:
    """A digest of everything that decides what a trial trains: its full TrainConfig (grid point and common
    settings, defaults included), the threads it gets and the content of its data (a CSV file, a dataset's
    manifest). `--resume` reuses a trial only when this matches, so a summary never mixes settings."""
    cfg = build_train_config({**settings.train, **config}, "trial")
    record = {"config": cfg.to_dict(), "threads": settings.threads_per_trial, "data": _data_digest(cfg)}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def _data_digest(cfg: Any) -> str | None:
    """The bytes behind a csv: source or a dataset directory (None for bundled data, fixed by the package)."""
    kind, _, rest = cfg.source.partition(":")
    path = Path(cfg.data) / "manifest.json" if cfg.data is not None else Path(rest) if kind == "csv" else None
    if path is None:
        return None
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "unreadable"


def _finished_trials(out: Path, configs: list[dict[str, Any]], hashes: list[str]) -> dict[int, dict[str, Any]]:
    """Successful trials of an earlier run in `out` whose config is still in the grid at the same index and
    that trained with the same full settings (see trial_settings_hash)."""
    path = out / "summary.json"
    if not path.is_file():
        return {}
    try:
        earlier = json.loads(path.read_text())
        results = earlier["results"]
    except (ValueError, KeyError, TypeError):
        raise InputError(f"--resume: {path} is not a readable search summary") from None
    finished = {}
    for entry in results:
        index = entry.get("trial")
        if (entry.get("status") == "success" and isinstance(index, int) and index < len(configs)
                and entry.get("config") == configs[index] and entry.get("settings_hash") == hashes[index]):
            finished[index] = entry
    return finished


def _write(out: Path, summary: dict[str, Any]) -> None:
    results = sorted(summary["results"], key=lambda entry: entry["trial"])
    summary["results"] = results
    done = [entry for entry in results if entry["status"] == "success"]
    starts = [entry["start_time"] for entry in results]
    ends = [entry["end_time"] for entry in results]
    summary["total_wall_seconds"] = (max(ends) - min(starts)) if results else 0.0
    summary["sum_trial_seconds"] = sum(entry["wall_seconds"] for entry in results)
    summary["successes"], summary["failures"] = len(done), len(results) - len(done)
    # Only a finite validation loss can be the best (a NaN compares false with everything).
    scored = [entry for entry in done
              if isinstance(entry["val_loss"], int | float) and math.isfinite(entry["val_loss"])]
    best = min(scored, key=lambda entry: entry["val_loss"], default=None)
    summary["best"] = None if best is None else {
        key: best[key] for key in ("trial", "name", "config", "val_loss", "test", "baseline_test", "run_dir")
    }
    write_json_atomic(out / "summary.json", summary)


def format_summary(summary: dict[str, Any]) -> str:
    settings = summary["settings"]
    lines = [
        f"search, {settings['backend']}: {len(summary['results'])} trials, {settings['workers']} at a time, "
        f"{settings['threads_per_trial']} thread(s) each",
        f"total {summary['total_wall_seconds']:.1f} s, sum of trial times {summary['sum_trial_seconds']:.1f} s, "
        f"{summary['successes']} succeeded, {summary['failures']} failed",
    ]
    best = summary.get("best")
    if best:
        test, base = best["test"] or {}, best["baseline_test"] or {}
        lines.append(f"best by validation loss: {best['name']} {best['config']} val_loss {best['val_loss']:.4f}")
        if "rmse" in test and "rmse" in base:
            lines.append(f"  test RMSE ${test['rmse']:.3f} (persistence baseline ${base['rmse']:.3f})")
    return "\n".join(lines)
