"""Calibration: a few short real runs that measure what the models need, kept in a folder and remade when stale.

Per loader, LocalRunner runs one job at a time (so no run's memory or time is measured beside another's):
first one worker at a second, larger size (two steps: the check of the layout's bytes per window, and the
short run of the time model), then 1 and 2 workers on a small dataset (the fixed cost per worker, the seconds
per step and the time outside the training loop at that world size). A subprocess that imports what a worker
imports reports the file pages in its RSS (the shared libraries a cgroup does not charge again). Every run has
cheap baselines, as the scale test's probes have: with "all", rank 0 lets its data go and then loads
scikit-learn (~110 MiB), so a small run's peak is the library's, not its data's. The
start-up of a warm worker and of a container are measured once per calibration (startup.py).

Time budget (any model size): each loader's calibration aims at BUDGET_SECONDS (60 s; the first loader's
includes the shared-pages probe and the start-up measurements). The short run gives a step time (its
train_seconds / its steps, an over-estimate: it holds the warm-up) and a time outside training (wall less
train_seconds); the two time runs are then given the steps that fit in what is left, each run's cost taken
as that outside time plus steps x the short run's step time x its world size (a step of w workers on these
cores taken as w times one worker's, an over-estimate here): `time_run_steps`. At most a full epoch of the
small dataset (about MIN_TIME_STEPS+), at least MIN_BUDGET_STEPS (twice the short run's, so two run lengths
still split the warm-up from the steady step time); a model whose MIN_BUDGET_STEPS steps alone overrun the
budget goes over it, and `seconds` records what it took.

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

from stockscale.config import TrainConfig, build_train_config
from stockscale.errors import InputError
from stockscale.experiments.plan.layout import bytes_per_window, windows_held
from stockscale.experiments.plan.startup import Startup, measure_container, measure_warm
from stockscale.files import utc_timestamp, write_json_atomic
from stockscale.launch.local import default_threads
from stockscale.launch.runner import JobResult, Runner, TrainJob
from stockscale.limits import detect_mechanism

KIND = "plan_calibration"
FORMAT_VERSION = 2  # 2: runs with baselines "cheap"; a version-1 file is remade
WORLDS = (1, 2)  # larger worlds are modelled (memory_model, time_model) and checked by --verify
MODEL_FIELDS = ("source", "tickers", "start", "end", "train_frac", "val_frac", "noise", "seed", "hidden_size",
                "num_layers", "dropout", "batch_size", "device")
SECOND_SIZE_BYTES = {"memory": 160 * 2**20, "lazy": 64 * 2**20, "stream": 8 * 2**20}  # data at the check point
MIN_TIME_STEPS = 20     # the small dataset's full epoch has at least this many steps
BUDGET_SECONDS = 60.0   # what one loader's calibration aims at (module docstring)
SHORT_STEPS = 2         # the second-size run: the layout check and the time model's short run
MIN_BUDGET_STEPS = 2 * SHORT_STEPS

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
    startup: dict[str, Startup] = {}   # warm_worker, container (startup.py); absent in older files: measured then


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
                     worlds: tuple[int, ...] = WORLDS, time_steps: int | None = None) -> list[TrainJob]:
    """The loader's runs: each world size on a small dataset (a full epoch, or `time_steps` steps when fewer),
    then one worker at the second size (SHORT_STEPS steps)."""
    base = {name: value for name, value in cfg.to_dict().items() if name in MODEL_FIELDS}
    # As the scale test's probes (which --verify measures against): cheap baselines. With "all", rank 0 lets its
    # data go and then loads scikit-learn (~110 MiB), so a small run's peak is that library's, not its data's,
    # and the two sizes' slope no longer measures the bytes per window.
    base.update(loader=loader, epochs=1, checkpoint_dir=None, baselines="cheap")
    jobs = []
    for world in worlds:
        multiplier = max(2 * world, -(-MIN_TIME_STEPS * cfg.batch_size * world // windows_per_replica))
        full = -(-windows_held(multiplier, windows_per_replica, world) // cfg.batch_size)
        steps = time_steps if time_steps is not None and time_steps < full else None
        jobs.append(TrainJob(name=f"{loader}-w{world}-m{multiplier}", run_dir=folder / "runs" / f"{loader}-w{world}",
                             config=build_train_config({**base, "multiplier": multiplier, "max_steps": steps},
                                                       "calibration"), workers=world,
                             threads=default_threads(world), timeout=300))
    per_window = bytes_per_window(loader, train_days, windows_per_replica) or bytes_per_window(
        "lazy", train_days, windows_per_replica)
    second = max(jobs[0].config.multiplier * 8,
                 round(SECOND_SIZE_BYTES[loader] / (per_window * windows_per_replica)))
    jobs.append(TrainJob(name=f"{loader}-w1-m{second}", run_dir=folder / "runs" / f"{loader}-second",
                         config=build_train_config({**base, "multiplier": second, "max_steps": SHORT_STEPS},
                                                   "calibration"), workers=1,
                         threads=default_threads(1), timeout=300))
    return jobs


def time_run_steps(seconds_left: float, short_wall: float, short_train: float, short_steps: int,
                   worlds: tuple[int, ...] = WORLDS) -> int:
    """Steps for each time run so that they all end within `seconds_left` (the rule in the module docstring):
    each costs the short run's time outside training plus steps x its step time x the run's world size."""
    per_step = short_train / max(1, short_steps)
    outside = max(0.0, short_wall - short_train)
    affordable = (seconds_left - outside * len(worlds)) / max(1e-9, per_step * sum(worlds))
    return max(MIN_BUDGET_STEPS, int(affordable))


def _run_record(job: TrainJob, result: JobResult, windows_per_replica: int) -> CalibrationRun:
    metrics = result.metrics or {}
    multiplier = job.config.multiplier
    return CalibrationRun(
        name=job.name, workers=job.workers, threads=job.threads or 1, multiplier=multiplier,
        max_steps=job.config.max_steps, status=result.status, detail=result.detail,
        wall_seconds=result.wall_seconds, peak_rss_bytes=list(result.peak_rss_bytes),
        train_seconds=metrics.get("train_seconds"), steps=metrics.get("steps"),
        windows_per_worker=windows_held(multiplier, windows_per_replica, job.workers))


def calibrate_loader(cfg: TrainConfig, loader: str, launcher: Runner, folder: Path, windows_per_replica: int,
                     train_days: int, on_event: Callable[[str], None] = lambda _: None,
                     started: float | None = None) -> LoaderCalibration:
    """Run the loader's calibration jobs (one at a time: the short run, then the time runs sized to the budget
    from it) and derive its figures. `started`: when this loader's budget began (default now)."""
    started = time.perf_counter() if started is None else started
    jobs = calibration_jobs(cfg, loader, windows_per_replica, train_days, folder)
    for job in jobs:
        shutil.rmtree(job.run_dir, ignore_errors=True)

    def told(result: JobResult) -> None:
        on_event(f"  calibration {result.name}: {result.status} in {result.wall_seconds:.1f} s")

    try:
        results = launcher.run_many(jobs[-1:], 1, told)
        short = results[0]
        train = (short.metrics or {}).get("train_seconds")
        if short.status == "success" and train is not None:
            steps = time_run_steps(BUDGET_SECONDS - (time.perf_counter() - started), short.wall_seconds,
                                   float(train), int((short.metrics or {}).get("steps") or SHORT_STEPS))
            jobs = [*calibration_jobs(cfg, loader, windows_per_replica, train_days, folder, time_steps=steps)[:-1],
                    jobs[-1]]
            results = launcher.run_many(jobs[:-1], 1, told) + results
        else:
            jobs = jobs[-1:]
    finally:
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
    # per world size: the fixed bytes, the steady step time and the time outside training
    fixed: dict[int, float] = {}
    step_seconds: dict[int, float] = {}
    overhead: dict[int, float] = {}
    for run in runs[:-1]:
        fixed[run.workers] = max(run.peak_rss_bytes) - layout * run.windows_per_worker
        assert run.train_seconds is not None and run.steps
        step_seconds[run.workers] = max(0.0, run.train_seconds - warmup) / run.steps
        overhead[run.workers] = max(0.0, run.wall_seconds - run.train_seconds)
    slope = ((max(second.peak_rss_bytes) - max(small.peak_rss_bytes))
             / (second.windows_per_worker - small.windows_per_worker))
    residual = max(second.peak_rss_bytes) - (fixed[1] + layout * second.windows_per_worker)
    return LoaderCalibration(
        loader=loader, runs=runs, fixed_bytes=fixed, step_seconds=step_seconds, overhead_seconds=overhead,
        warmup_seconds=warmup, layout_bytes_per_window=layout, measured_bytes_per_window=slope,
        layout_residual_bytes=residual,
        largest_windows_per_worker=max(run.windows_per_worker for run in runs),
        seconds=time.perf_counter() - started, made_at=utc_timestamp())


def ensure_calibration(cfg: TrainConfig, loaders: list[str], folder: Path, explicit: bool, launcher: Runner,
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
    started = time.perf_counter()
    if calibration.loaders and not calibration.startup:
        on_event("calibration: this folder has no start-up measurements; measuring them")
    measured = measure_startups(cfg, folder, calibration.startup, on_event)
    missing = [loader for loader in loaders if loader not in calibration.loaders]
    for loader in missing:
        on_event(f"calibrating the {loader} loader: worlds {', '.join(map(str, WORLDS))} and a second size "
                 f"(aiming at {BUDGET_SECONDS:g} s)")
        calibration.loaders[loader] = calibrate_loader(cfg, loader, launcher, folder, windows_per_replica,
                                                       train_days, on_event, started)
        started = time.perf_counter()
    if missing or measured != calibration.startup:
        calibration.startup = measured
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / "calibration.json", calibration.model_dump(mode="json"))
    return calibration


def measure_startups(cfg: TrainConfig, folder: Path, known: dict[str, Startup],
                     on_event: Callable[[str], None] = lambda _: None) -> dict[str, Startup]:
    """The warm worker's and the container's start-up: the known ones as they are (a "not measured" too, until
    --recalibrate: an engine started since is measured then), the absent ones measured now."""
    found = dict(known)
    for name, measure in (("warm_worker", measure_warm), ("container", measure_container)):
        if name in found:
            continue
        found[name] = measure(cfg, MODEL_FIELDS, folder)
        value = found[name].seconds
        on_event(f"  start-up, {name}: " + (found[name].source if value is None else f"{value:.2f} s"))
    return found
