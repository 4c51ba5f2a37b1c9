"""Predicted against measured: each prediction of the planner checked by real runs on this machine.

For each (loader, world size), the plan's largest multiplier under the limit becomes the base of the scale
test's own boundary search (scale_test.run_scale_test / find_boundary on the sqrt-2 lattice, no second search
here): the first probe is the prediction, so the search's bracket says directly how many lattice steps the
prediction was off. The prediction hits when the measured bracket [largest success, smallest failure] lies
within one sqrt-2 step of it on either side: the largest success at least prediction / sqrt 2 and the
smallest failure at most prediction x sqrt 2. The stream loader has no memory boundary to find: one probe at
`stream_multiplier` checks that it fits. The peak per worker is compared at the largest success; the epoch
time by one full epoch at a multiplier of about `TIME_STEPS` steps per worker.

Probes run one after another (never two at once), each a fresh worker set under its own limit.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from stockscale.config import TrainConfig, build_train_config
from stockscale.experiments.plan.calibration import MODEL_FIELDS, CalibrationFile
from stockscale.experiments.plan.cost import CostSettings
from stockscale.experiments.plan.models import memory_model, time_model
from stockscale.experiments.plan.planner import make_plan
from stockscale.experiments.results import ScaleRow
from stockscale.experiments.scale_settings import BoundarySearch, ScaleTestSettings
from stockscale.experiments.scale_test import run_scale_test
from stockscale.files import utc_timestamp, write_json_atomic
from stockscale.launch.local import default_threads
from stockscale.launch.runner import Runner, TrainJob
from stockscale.machine import machine_info

KIND = "plan_verification"
FORMAT_VERSION = 1
STEP = math.sqrt(2)
TIME_STEPS = 150
PEAK_TOLERANCE = 0.10
EPOCH_TOLERANCE = 0.25


class VerifiedPoint(BaseModel):
    loader: str
    workers: int
    model: dict[str, Any]
    predicted_multiplier: int
    predicted_interval: list[int | None] | None
    largest_success: int | None
    smallest_failure: int | None
    boundary_steps: list[float | None]     # the measured bracket in sqrt-2 steps from the prediction
    boundary_hit: bool
    peak_at: int | None                    # the multiplier the peaks are compared at (the largest success)
    predicted_peak_bytes: float | None
    measured_peak_bytes: float | None
    peak_error: float | None               # (predicted - measured) / measured
    peak_hit: bool | None
    time_multiplier: int
    predicted_epoch_seconds: float
    measured_epoch_seconds: float | None
    epoch_error: float | None
    epoch_hit: bool | None
    probes: int
    seconds: float
    scale_test: str


def _steps(value: int | None, base: int) -> float | None:
    return None if value is None else math.log(value / base) / math.log(STEP)


def verify_point(calibration: CalibrationFile, cfg: TrainConfig, loader: str, world: int, limit: int,
                 launcher: Runner, out: Path, stream_multiplier: int = 2000, time_steps: int = TIME_STEPS,
                 on_event: Callable[[str], None] = lambda _: None) -> VerifiedPoint:
    """Measure one (loader, world) point against its prediction (see the module's docstring)."""
    started = time.perf_counter()
    plan = make_plan(calibration, loader, limit, 1, CostSettings(), workers=world)
    memory, timing = memory_model(calibration, loader), time_model(calibration, loader)
    train = {name: value for name, value in cfg.to_dict().items() if name in MODEL_FIELDS}
    predicted = plan.largest_multiplier
    assert predicted is not None
    folder = out / f"{loader}-w{world}"
    probes = ScaleTestSettings(mode="local" if world == 1 else "cluster", workers=world, multipliers=[],
                               memory_limit=limit, timeout=600.0, loader=loader, max_steps=2, epochs=1,
                               threads=default_threads(world), train=train)
    if memory.bytes_per_window > 0:
        search = BoundarySearch(base=predicted, ceiling=min(4 * predicted, 1_000_000))
        settings = replace(probes, search=search)
    else:
        predicted = stream_multiplier
        settings = replace(probes, multipliers=[stream_multiplier])
    on_event(f"verify {loader}, {world} worker(s): predicted {plan.largest_multiplier}x, probing from {predicted}x")
    def probed(run: ScaleRow) -> None:
        on_event(f"  x{run.multiplier}: {run.status} in {run.wall_seconds or 0.0:.1f} s")

    doc = run_scale_test(settings, launcher, folder, probed)
    success = doc.boundary.largest_success if doc.boundary is not None else None
    failure = doc.boundary.smallest_failure if doc.boundary is not None else None
    if memory.bytes_per_window > 0:
        low, high = _steps(success, predicted), _steps(failure, predicted)
        hit = low is not None and high is not None and low >= -1.05 and high <= 1.05
    else:
        low, high, hit = _steps(success, predicted), None, success == predicted
    peak_measured = next((run.peak_per_worker() for run in doc.results
                          if run.multiplier == success and run.peak_per_worker()), None)
    peak_predicted = memory.peak(success, world).value if success is not None else None
    peak_error = (peak_predicted - peak_measured) / peak_measured if peak_measured and peak_predicted else None

    time_multiplier = max(1, round(time_steps * cfg.batch_size * world / calibration.windows_per_replica))
    predicted_epoch = timing.epoch(time_multiplier, world).value
    job = TrainJob(name=f"epoch-{loader}-w{world}", run_dir=folder / "epoch-run",
                   config=build_train_config({**train, "loader": loader, "multiplier": time_multiplier, "epochs": 1,
                                              "max_steps": None}, "verification"),
                   workers=world, threads=default_threads(world), timeout=600)
    shutil.rmtree(job.run_dir, ignore_errors=True)
    result = launcher.run(job)
    shutil.rmtree(job.run_dir, ignore_errors=True)
    measured_epoch = (result.metrics or {}).get("train_seconds") if result.status == "success" else None
    on_event(f"  epoch at {time_multiplier}x: {result.status} {result.detail}, predicted {predicted_epoch:.2f} s, "
             "measured "
             f"{measured_epoch if measured_epoch is None else round(measured_epoch, 2)} s")
    epoch_error = (predicted_epoch - measured_epoch) / measured_epoch if measured_epoch else None
    return VerifiedPoint(
        loader=loader, workers=world, model={k: train[k] for k in ("hidden_size", "num_layers", "batch_size")},
        predicted_multiplier=predicted, predicted_interval=plan.largest_multiplier_interval,
        largest_success=success, smallest_failure=failure, boundary_steps=[low, high], boundary_hit=hit,
        peak_at=success, predicted_peak_bytes=peak_predicted, measured_peak_bytes=peak_measured,
        peak_error=peak_error, peak_hit=None if peak_error is None else abs(peak_error) <= PEAK_TOLERANCE,
        time_multiplier=time_multiplier, predicted_epoch_seconds=predicted_epoch,
        measured_epoch_seconds=measured_epoch, epoch_error=epoch_error,
        epoch_hit=None if epoch_error is None else abs(epoch_error) <= EPOCH_TOLERANCE,
        probes=len(doc.results) + 1, seconds=time.perf_counter() - started, scale_test=str(folder / "results.json"))


def write_verification(path: Path, points: list[VerifiedPoint], limit: int,
                       calibration_seconds: dict[str, float]) -> dict[str, Any]:
    """The results file (docs/results.md): every point, hits and misses alike, and where it was measured."""
    doc = {"kind": KIND, "format_version": FORMAT_VERSION, "made_at": utc_timestamp(),
           "memory_limit_bytes": limit, "machine": machine_info(), "load_average": list(os.getloadavg()),
           "calibration_seconds": calibration_seconds,
           "tolerances": {"boundary_steps": 1, "peak": PEAK_TOLERANCE, "epoch": EPOCH_TOLERANCE},
           "points": [point.model_dump(mode="json") for point in points]}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, doc)
    return doc


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:+.0%}"


def format_verification(points: list[VerifiedPoint]) -> str:
    """The error table, every point including the misses."""
    head = (f"{'loader':<7} {'model':<7} {'workers':>7}  {'predicted':>9}  {'measured':>15}  {'steps':>11}  "
            f"{'hit':<4} {'peak pred':>9} {'peak meas':>9} {'err':>5} {'hit':<4} {'epoch pred':>10} "
            f"{'meas':>7} {'err':>5} {'hit':<4}")
    lines = [head]

    def mark(value: bool | None) -> str:
        return "-" if value is None else ("yes" if value else "MISS")

    def mib(value: float | None) -> str:
        return "-" if value is None else f"{value / 2**20:.0f}M"

    for p in points:
        bracket = f"{p.largest_success or '-'}..{p.smallest_failure or '-'}"
        steps = "/".join("-" if s is None else f"{s:+.1f}" for s in p.boundary_steps)
        model = f"{p.model['hidden_size']}x{p.model['num_layers']}"
        measured = "-" if p.measured_epoch_seconds is None else f"{p.measured_epoch_seconds:.2f}"
        lines.append(f"{p.loader:<7} {model:<7} {p.workers:>7}  {p.predicted_multiplier:>8}x  {bracket:>15}  "
                     f"{steps:>11}  {mark(p.boundary_hit):<4} {mib(p.predicted_peak_bytes):>9} "
                     f"{mib(p.measured_peak_bytes):>9} {_percent(p.peak_error):>5} {mark(p.peak_hit):<4} "
                     f"{p.predicted_epoch_seconds:>10.2f} {measured:>7} {_percent(p.epoch_error):>5} "
                     f"{mark(p.epoch_hit):<4}")
    return "\n".join(lines)
