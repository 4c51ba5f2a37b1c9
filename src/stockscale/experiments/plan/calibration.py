"""Calibration: a few short real runs that measure what the models need, kept in a folder and remade when stale.

Per loader, one LocalLauncher batch run one job at a time (so no run's memory or time is measured beside
another's): 1 and 2 workers on a small dataset (a full epoch of about 20+ steps each: the fixed cost per
worker, the seconds per step and the time outside the training loop at that world size), and one worker at a
second, larger size (two steps: the check of the layout's bytes per window). A subprocess that imports what a
worker imports reports the file pages in its RSS (the shared libraries a cgroup does not charge again).

The folder holds `calibration.json` (format: docs/results.md). It belongs to one model: its key names the
model settings (model, batch, data source), the machine (CPU model, cores, memory, limit mechanism) and the
stockscale and torch versions. Another machine or version makes it stale: it is remade. Another model's
folder is refused when the user named it (`--calibration DIR`); the default folder is one per model
(results/calibration/<model digest>), so it never holds another model's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
from pydantic import BaseModel, ConfigDict, ValidationError

from stockscale.config import TrainConfig
from stockscale.errors import InputError
from stockscale.experiments.plan.layout import bytes_per_window, windows_held
from stockscale.files import utc_timestamp, write_json_atomic
from stockscale.launch.base import JobResult, Launcher, TrainJob
from stockscale.launch.local import default_threads
from stockscale.limits import detect_mechanism

KIND = "plan_calibration"
FORMAT_VERSION = 2  # 2: runs with baselines "cheap"; a version-1 file is remade
WORLDS = (1, 2)  # larger worlds are modelled (memory_model, time_model) and checked by --verify
MODEL_FIELDS = ("source", "tickers", "start", "end", "train_frac", "val_frac", "noise", "seed", "hidden_size",
                "num_layers", "dropout", "batch_size", "device")
SECOND_SIZE_BYTES = {"memory": 160 * 2**20, "lazy": 64 * 2**20, "stream": 8 * 2**20}  # data at the check point
MIN_TIME_STEPS = 20

_SHARED_PROBE = """
import torch, stockscale.train
from stockscale.model import LSTMRegressor
m = LSTMRegressor(5, 8, 1, 0.0)
m(torch.zeros(2, 60, 5)).sum().backward()
fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(sum(int(fields.get(k, "0 kB").split()[0]) for k in ("RssFile", "RssShmem")) * 1024)
"""


class CalibrationKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: dict[str, Any]
    machine: dict[str, Any]
    versions: dict[str, Any]


class CalibrationRun(BaseModel):
    """One run the calibration made: what it asked for and what came of it."""

    name: str
    workers: int
    threads: int
    multiplier: int
    max_steps: int | None
    status: str
    detail: str = ""
    wall_seconds: float
    peak_rss_bytes: list[int]
    train_seconds: float | None = None
    steps: int | None = None
    windows_per_worker: int


class LoaderCalibration(BaseModel):
    """What one loader's runs measured, and the layout check."""

    loader: str
    runs: list[CalibrationRun]
    fixed_bytes: dict[int, float]
    step_seconds: dict[int, float]
    overhead_seconds: dict[int, float]
    warmup_seconds: float = 0.0           # the first steps' extra time, once per run
    layout_bytes_per_window: float
    measured_bytes_per_window: float      # the slope between the small and the second size, one worker
    layout_residual_bytes: float          # measured peak at the second size less the layout's prediction
    largest_windows_per_worker: int
    seconds: float
    made_at: str


class CalibrationFile(BaseModel):
    kind: str = KIND
    format_version: int = FORMAT_VERSION
    key: CalibrationKey
    windows_per_replica: int
    train_days: int
    shared_file_bytes: int
    limit_mechanism: str
    loaders: dict[str, LoaderCalibration]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def calibration_key(cfg: TrainConfig) -> CalibrationKey:
    """What a calibration is valid for: the model settings, this machine and these versions."""
    settings = cfg.to_dict()

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return CalibrationKey(
        model={name: settings[name] for name in MODEL_FIELDS},
        machine={"cpu_model": cpu_model(), "cores": usable_cores(), "memory_bytes": psutil.virtual_memory().total,
                 "limit_mechanism": detect_mechanism()},
        versions={"stockscale": version("stockscale"), "torch": version("torch")})


def model_digest(key: CalibrationKey) -> str:
    return hashlib.sha256(json.dumps(key.model, sort_keys=True).encode()).hexdigest()[:12]


def default_folder(key: CalibrationKey, results: Path = Path("results")) -> Path:
    return results / "calibration" / model_digest(key)


def read_calibration(folder: Path, key: CalibrationKey, explicit: bool) -> tuple[CalibrationFile | None, str]:
    """The folder's calibration when it is valid for `key`, else (None, why it is remade).

    A folder the user named that holds another model's calibration is an InputError: remaking it would
    throw away what someone calibrated on purpose."""
    path = folder / "calibration.json"
    if not path.is_file():
        return None, "absent"
    try:
        calibration = CalibrationFile.model_validate_json(path.read_bytes())
    except (ValidationError, OSError, ValueError):
        if explicit:
            raise InputError(f"{path} is not a stockscale plan calibration") from None
        return None, "unreadable"
    if calibration.kind != KIND:
        raise InputError(f"{path} is not a stockscale plan calibration (kind {calibration.kind!r})")
    if calibration.key.model != key.model:
        changed = sorted(name for name in set(key.model) | set(calibration.key.model)
                         if key.model.get(name) != calibration.key.model.get(name))
        if explicit:
            raise InputError(f"calibration {folder} is for another model ({', '.join(changed)} differ): use another "
                             "--calibration folder or leave it out")
        return None, f"made for another model ({', '.join(changed)})"
    for part in ("machine", "versions"):
        if getattr(calibration.key, part) != getattr(key, part):
            return None, f"stale: another {part}"
    if calibration.format_version != FORMAT_VERSION:
        return None, f"stale: format version {calibration.format_version}, now {FORMAT_VERSION}"
    return calibration, "valid"


def measure_shared_bytes() -> int:
    """File pages (shared libraries) in the RSS of a process that imported what a worker imports."""
    done = subprocess.run([sys.executable, "-c", _SHARED_PROBE], capture_output=True, text=True, check=False,
                          timeout=120)
    try:
        return int(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return 0


def calibration_jobs(cfg: TrainConfig, loader: str, windows_per_replica: int, train_days: int, folder: Path,
                     worlds: tuple[int, ...] = WORLDS) -> list[TrainJob]:
    """The loader's runs: each world size on a small dataset (a full epoch), one worker at the second size."""
    base = {name: value for name, value in cfg.to_dict().items() if name in MODEL_FIELDS}
    # baselines "cheap", as the scale test's probes run (scale_test.run_config): the ridge baseline's library
    # loads after the data is let go, so its ~110 MiB would be the peak of a small run and not of a large one,
    # and the slope between them would not be the data's.
    base.update(loader=loader, epochs=1, checkpoint_dir=None, baselines="cheap")
    jobs = []
    for world in worlds:
        multiplier = max(2 * world, -(-MIN_TIME_STEPS * cfg.batch_size * world // windows_per_replica))
        jobs.append(TrainJob(name=f"{loader}-w{world}-m{multiplier}", run_dir=folder / "runs" / f"{loader}-w{world}",
                             config={**base, "multiplier": multiplier, "max_steps": None}, workers=world,
                             threads=default_threads(world), timeout=300))
    per_window = bytes_per_window(loader, train_days, windows_per_replica) or bytes_per_window(
        "lazy", train_days, windows_per_replica)
    second = max(jobs[0].config["multiplier"] * 8,  # type: ignore[operator]
                 round(SECOND_SIZE_BYTES[loader] / (per_window * windows_per_replica)))
    jobs.append(TrainJob(name=f"{loader}-w1-m{second}", run_dir=folder / "runs" / f"{loader}-second",
                         config={**base, "multiplier": second, "max_steps": 2}, workers=1,
                         threads=default_threads(1), timeout=300))
    return jobs


def _run_record(job: TrainJob, result: JobResult, windows_per_replica: int) -> CalibrationRun:
    metrics = result.metrics or {}
    multiplier = int(job.config["multiplier"])  # type: ignore[arg-type]
    return CalibrationRun(
        name=job.name, workers=job.workers, threads=job.threads or 1, multiplier=multiplier,
        max_steps=job.config.get("max_steps"), status=result.status, detail=result.detail,  # type: ignore[arg-type]
        wall_seconds=result.wall_seconds, peak_rss_bytes=list(result.peak_rss_bytes),
        train_seconds=metrics.get("train_seconds"), steps=metrics.get("steps"),
        windows_per_worker=windows_held(multiplier, windows_per_replica, job.workers))


def calibrate_loader(cfg: TrainConfig, loader: str, launcher: Launcher, folder: Path, windows_per_replica: int,
                     train_days: int, on_event: Callable[[str], None] = lambda _: None) -> LoaderCalibration:
    """Run the loader's calibration jobs (one LocalLauncher batch, one at a time) and derive its figures."""
    started = time.perf_counter()
    jobs = calibration_jobs(cfg, loader, windows_per_replica, train_days, folder)
    for job in jobs:
        shutil.rmtree(job.run_dir, ignore_errors=True)
    results = launcher.run_many(jobs, 1, lambda r: on_event(f"  calibration {r.name}: {r.status} in "
                                                            f"{r.wall_seconds:.1f} s"))
    shutil.rmtree(folder / "runs", ignore_errors=True)
    runs = [_run_record(job, result, windows_per_replica) for job, result in zip(jobs, results, strict=True)]
    failed = [run for run in runs if run.status != "success" or not run.peak_rss_bytes]
    if failed:
        raise RuntimeError(f"calibration run {failed[0].name} failed: {failed[0].status} {failed[0].detail}")
    layout = bytes_per_window(loader, train_days, windows_per_replica)
    small, second = runs[0], runs[-1]
    assert small.train_seconds is not None and small.steps and second.train_seconds is not None and second.steps
    # The first steps are slower (lazy initialization in torch): one worker's two runs of different lengths
    # split its training loop into a warm-up and a steady step time; the warm-up is taken as the same for
    # every world size (stated in time_model).
    steady = (small.train_seconds - second.train_seconds) / max(1, small.steps - second.steps)
    warmup = min(max(0.0, second.train_seconds - second.steps * steady), 0.5 * small.train_seconds)
    fixed, steps, overhead = {}, {}, {}
    for run in runs[:-1]:
        fixed[run.workers] = max(run.peak_rss_bytes) - layout * run.windows_per_worker
        assert run.train_seconds is not None and run.steps
        steps[run.workers] = max(0.0, run.train_seconds - warmup) / run.steps
        overhead[run.workers] = max(0.0, run.wall_seconds - run.train_seconds)
    slope = ((max(second.peak_rss_bytes) - max(small.peak_rss_bytes))
             / (second.windows_per_worker - small.windows_per_worker))
    residual = max(second.peak_rss_bytes) - (fixed[1] + layout * second.windows_per_worker)
    return LoaderCalibration(
        loader=loader, runs=runs, fixed_bytes=fixed, step_seconds=steps, overhead_seconds=overhead,
        warmup_seconds=warmup, layout_bytes_per_window=layout, measured_bytes_per_window=slope,
        layout_residual_bytes=residual,
        largest_windows_per_worker=max(run.windows_per_worker for run in runs),
        seconds=time.perf_counter() - started, made_at=utc_timestamp())


def ensure_calibration(cfg: TrainConfig, loaders: list[str], folder: Path, explicit: bool, launcher: Launcher,
                       windows_per_replica: int, train_days: int, recalibrate: bool = False,
                       on_event: Callable[[str], None] = lambda _: None) -> CalibrationFile:
    """The folder's calibration, with every loader asked for; made (or completed) and written when needed."""
    key = calibration_key(cfg)
    calibration, why = (None, "asked to recalibrate") if recalibrate else read_calibration(folder, key, explicit)
    if calibration is None:
        on_event(f"calibration in {folder}: {why}, making it")
        calibration = CalibrationFile(key=key, windows_per_replica=windows_per_replica, train_days=train_days,
                                      shared_file_bytes=measure_shared_bytes(), limit_mechanism=detect_mechanism(),
                                      loaders={})
    missing = [loader for loader in loaders if loader not in calibration.loaders]
    for loader in missing:
        on_event(f"calibrating the {loader} loader: worlds {', '.join(map(str, WORLDS))} and a second size")
        calibration.loaders[loader] = calibrate_loader(cfg, loader, launcher, folder, windows_per_replica,
                                                       train_days, on_event)
    if missing:
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / "calibration.json", calibration.model_dump(mode="json"))
    return calibration
