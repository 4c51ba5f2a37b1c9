"""Comparison 1, dataset scale: where one process hits its memory limit, against N workers under the same
per-worker limit.

Each multiplier runs in fresh process(es) through a Launcher, so the local and cluster sides differ only in
`workers`. Runs go from small to large and stop at the first oom or timeout (unless keep_going): past the
boundary every larger size fails the same way. The results file is rewritten after every run, so an
interrupted test still leaves a valid (incomplete) file. Format: docs/results.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stockscale.config import TrainConfig, build_train_config
from stockscale.data.dataset import prepare_from_config
from stockscale.data.scaled import materialized_bytes
from stockscale.files import prepare_results_dir, utc_timestamp, write_json_atomic
from stockscale.launch.base import JobResult, Launcher, TrainJob
from stockscale.machine import machine_info

FORMAT_VERSION = 1
KIND = "scale_test"  # results.json's "kind": the marker that lets a rerun clear this folder
DEFAULT_MULTIPLIERS = (1, 10, 50, 100, 200)
STOPPING = ("oom", "timeout")


@dataclass
class ScaleTestSettings:
    mode: str  # "local" (one process) or "cluster" (workers)
    workers: int
    multipliers: list[int]
    memory_limit: int | None
    timeout: float | None
    loader: str
    max_steps: int | None
    epochs: int | None
    threads: int | None
    train: dict[str, Any] = field(default_factory=dict)  # other TrainConfig overrides, the same for every run
    keep_going: bool = False
    backend: str = "local"
    emulated: bool = True


def run_config(settings: ScaleTestSettings, multiplier: int) -> TrainConfig:
    overrides = {**settings.train, "multiplier": multiplier, "loader": settings.loader}
    if settings.max_steps is not None:
        overrides["max_steps"] = settings.max_steps
    if settings.epochs is not None:
        overrides["epochs"] = settings.epochs
    return build_train_config(overrides, "scale test settings")


def run_scale_test(settings: ScaleTestSettings, launcher: Launcher, out: Path,
                   on_result: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run every multiplier (smallest first) and write `<out>/results.json`; return its content."""
    base_cfg = run_config(settings, 1)
    windows_per_replica = prepare_from_config(base_cfg).train_windows  # also checks the source up front
    runs_dir = out / "runs"
    # An earlier test's results and run directories are replaced, but only where results.json says so.
    prepare_results_dir(out, "results.json", KIND, ("runs", "results.json"), clear=True)
    doc: dict[str, Any] = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "started_at": utc_timestamp(),
        "finished_at": None,
        "complete": False,
        "settings": settings_record(settings, launcher),
        "results": [],
    }
    write_json_atomic(out / "results.json", doc)
    for multiplier in sorted(settings.multipliers):
        cfg = run_config(settings, multiplier)
        job = TrainJob(name=f"m{multiplier}", config=cfg.to_dict(), run_dir=runs_dir / f"m{multiplier}",
                       workers=settings.workers, memory_limit=settings.memory_limit, threads=settings.threads,
                       timeout=settings.timeout)
        result = launcher.run(job)
        entry = result_entry(multiplier, multiplier * windows_per_replica, result)
        doc["results"].append(entry)
        if result.limit_mechanism:
            doc["settings"]["limit_mechanism"] = result.limit_mechanism
        write_json_atomic(out / "results.json", doc)
        if on_result is not None:
            on_result(entry)
        if entry["status"] in STOPPING and not settings.keep_going:
            break
    doc["finished_at"], doc["complete"] = utc_timestamp(), True
    write_json_atomic(out / "results.json", doc)
    return doc


def settings_record(settings: ScaleTestSettings, launcher: Launcher) -> dict[str, Any]:
    return {
        "mode": settings.mode,
        # Containers of the image on this machine are still an emulated cluster: they share its cores.
        "backend": "docker" if launcher.name == "docker" else settings.backend,
        "emulated": settings.emulated and settings.workers > 1,
        "workers": settings.workers,
        "memory_limit_bytes": settings.memory_limit,
        "limit_mechanism": None,
        "timeout_seconds": settings.timeout,
        "loader": settings.loader,
        "max_steps": settings.max_steps,
        "epochs": settings.epochs,
        "threads_per_worker": settings.threads,
        "multipliers": sorted(settings.multipliers),
        "train": settings.train,
        "launcher": launcher.name,
        "machine": machine_info(),
    }


def result_entry(multiplier: int, windows: int, result: JobResult) -> dict[str, Any]:
    metrics = result.metrics or {}
    return {
        "multiplier": multiplier,
        "status": result.status,
        "detail": result.detail,
        "train_windows": metrics.get("train_samples", windows),
        "dataset_bytes": materialized_bytes(metrics.get("train_samples", windows)),
        "wall_seconds": result.wall_seconds,
        "peak_rss_bytes": list(result.peak_rss_bytes),
        "samples_per_second": metrics.get("samples_per_second"),
        "steps": metrics.get("steps"),
        "data_resident_bytes": metrics.get("data_resident_bytes"),
        "run_dir": result.run_dir if result.status == "success" else None,
    }


def format_table(doc: dict[str, Any]) -> str:
    """The results as a fixed-width table, for the terminal."""
    settings = doc["settings"]
    limit = settings["memory_limit_bytes"]
    lines = [
        f"scale test, {settings['mode']}: {settings['workers']} worker(s)"
        + (" (emulated: processes sharing this machine's cores)" if settings["emulated"] else "")
        + f", limit {limit / 2**20:.0f} MiB per worker ({settings['limit_mechanism'] or 'no limit'})"
        if limit else f"scale test, {settings['mode']}: {settings['workers']} worker(s), no memory limit",
        f"loader {settings['loader']}, max steps {settings['max_steps']}, timeout {settings['timeout_seconds']} s",
        f"{'multiplier':>10}  {'status':<8} {'windows':>10} {'dataset':>10} {'time s':>8} {'peak RSS/worker':>16}"
        f" {'samples/s':>10}  detail",
    ]
    for run in doc["results"]:
        peak = max(run["peak_rss_bytes"]) if run["peak_rss_bytes"] else None
        rate = run["samples_per_second"]
        peak_text, rate_text = (f"{peak / 2**20:.0f} MiB" if peak else "-"), (f"{rate:.0f}" if rate else "-")
        lines.append(
            f"{run['multiplier']:>10}  {run['status']:<8} {run['train_windows']:>10,} "
            f"{run['dataset_bytes'] / 2**20:>7.0f} MiB {run['wall_seconds']:>8.1f} "
            f"{peak_text:>16} {rate_text:>10}  {run['detail']}"
        )
    return "\n".join(lines)
