"""The demo's own predictions and the report's view of them: what the planner said before the scale tests
ran (`<results>/plan/predictions.json`, docs/results.md), set against the boundaries they then measured, as
a table and a plot. The report's projection section shows these in place of the old straight line fitted
across world sizes.
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel, ValidationError

from stockscale.config import format_size
from stockscale.experiments.plan.calibration import CalibrationFile
from stockscale.experiments.plan.cost import CostSettings
from stockscale.experiments.plan.planner import make_plan
from stockscale.experiments.results import LoadedResults
from stockscale.files import utc_timestamp, write_json_atomic

KIND = "plan_predictions"
FORMAT_VERSION = 1
PREDICTIONS = Path("plan") / "predictions.json"
STEP = math.sqrt(2)


class Prediction(BaseModel):
    mode: str
    loader: str
    workers: int
    largest_multiplier: int
    largest_multiplier_interval: list[int | None]
    bounded: bool                     # False: the stream loader, nothing grows with the data
    peak_bytes_per_worker: float
    peak_bytes_per_worker_interval: list[float]
    extrapolation: float
    world_extrapolation: float
    fixed_source: str


class Predictions(BaseModel):
    kind: str = KIND
    format_version: int = FORMAT_VERSION
    made_at: str
    memory_limit_bytes: int
    calibration_seconds: dict[str, float]
    predictions: list[Prediction]


def predict_cases(calibration: CalibrationFile, cases: list[tuple[str, str, int]], limit: int) -> Predictions:
    """The planner's answer for each (mode, loader, workers) under `limit`."""
    rows = []
    for mode, loader, workers in cases:
        plan = make_plan(calibration, loader, limit, 1, CostSettings(), workers=workers)
        assert plan.largest_multiplier is not None and plan.largest_multiplier_interval is not None
        rows.append(Prediction(
            mode=mode, loader=loader, workers=workers, largest_multiplier=plan.largest_multiplier,
            largest_multiplier_interval=plan.largest_multiplier_interval, bounded=plan.depends_on_workers,
            peak_bytes_per_worker=plan.peak_bytes_per_worker,
            peak_bytes_per_worker_interval=plan.peak_bytes_per_worker_interval, extrapolation=plan.extrapolation,
            world_extrapolation=plan.world_extrapolation, fixed_source=plan.fixed_source))
    return Predictions(made_at=utc_timestamp(), memory_limit_bytes=limit,
                       calibration_seconds={name: entry.seconds for name, entry in calibration.loaders.items()},
                       predictions=rows)


def write_predictions(results_dir: Path, predictions: Predictions) -> Path:
    path = results_dir / PREDICTIONS
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, predictions.model_dump(mode="json"))
    return path


def read_predictions(results_dir: Path) -> tuple[Predictions | None, str]:
    """The predictions file, or None and why (missing; unreadable names the file)."""
    path = results_dir / PREDICTIONS
    if not path.is_file():
        return None, "no planner predictions (stockscale demo writes them before its scale tests)"
    try:
        return Predictions.model_validate(json.loads(path.read_text(encoding="utf-8"))), ""
    except (OSError, ValueError, ValidationError):
        return None, f"{path} is not a planner predictions file"


class Compared(BaseModel):
    prediction: Prediction
    largest_success: int | None
    smallest_failure: int | None
    measured: bool
    hit: bool | None                   # the bracket within one sqrt-2 step of the prediction
    # The demo's lattice is not centred on the prediction: a bracket can lie partly within one step of it
    # (the boundary may be within, the runs cannot tell).
    in_part: bool = False


def compare(predictions: Predictions, results: LoadedResults) -> list[Compared]:
    """Each prediction beside the scale test of the same mode, loader and workers (when one ran)."""
    rows = []
    for p in predictions.predictions:
        run = next((run for run in results.scale_tests if run.data.settings.mode == p.mode
                    and run.data.settings.loader == p.loader and run.data.settings.workers == p.workers), None)
        if run is None:
            rows.append(Compared(prediction=p, largest_success=None, smallest_failure=None, measured=False, hit=None))
            continue
        success = max((r.multiplier for r in run.data.results if r.status == "success"), default=None)
        failure = min((r.multiplier for r in run.data.results if r.status in ("oom", "timeout")
                       and (success is None or r.multiplier > success)), default=None)
        if not p.bounded or p.largest_multiplier > max(r.multiplier for r in run.data.results) * STEP:
            hit = failure is None and success is not None  # predicted beyond what was probed: nothing may fail
        else:
            hit = (success is not None and failure is not None and success >= p.largest_multiplier / STEP - 1
                   and failure <= p.largest_multiplier * STEP + 1)
        in_part = (not hit and (success or 1) <= p.largest_multiplier * STEP
                   and (failure is None or failure >= p.largest_multiplier / STEP))
        rows.append(Compared(prediction=p, largest_success=success, smallest_failure=failure, measured=True, hit=hit,
                             in_part=in_part))
    return rows


def format_compared(rows: list[Compared], limit: int) -> str:
    intro = (f"Predicted by `stockscale plan` before the scale tests ran (limit {format_size(limit)} per worker), "
             "against what they measured. A hit: the measured bracket within one sqrt-2 step of the prediction "
             "(a prediction beyond the largest probe: no probe failed); in part: the bracket overlaps that window, "
             "the boundary may lie within it or not.")
    lines = [*textwrap.wrap(intro, 96, break_on_hyphens=False), "",
             f"{'side':<8} {'loader':<7} {'workers':>7}  {'predicted':>10} {'interval':>16} {'peak/worker':>12} "
             f"{'extrap.':>8}  {'measured':>14}  hit"]
    for row in rows:
        p = row.prediction
        low, high = p.largest_multiplier_interval
        interval = f"{low or '-'}..{high or '-'}"
        predicted = f"{p.largest_multiplier}x" if p.bounded else "any"
        measured = f"{row.largest_success or '-'}..{row.smallest_failure or '-'}" if row.measured else "not run"
        hit = "-" if row.hit is None else ("yes" if row.hit else "in part" if row.in_part else "MISS")
        lines.append(f"{p.mode:<8} {p.loader:<7} {p.workers:>7}  {predicted:>10} {interval:>16} "
                     f"{format_size(p.peak_bytes_per_worker):>12} {p.extrapolation:>7.1f}x  {measured:>14}  {hit}")
    lines.append("")
    lines.append("extrap.: the target's windows per worker over the largest calibrated; peak/worker at the prediction.")
    return "\n".join(lines)


def plot_compared(rows: list[Compared], path: Path | BinaryIO) -> Any:
    """Predicted multiplier (with its interval) beside the measured bracket, one column per case, log scale."""
    from matplotlib.figure import Figure

    from stockscale.experiments.plots import LOADER_COLOURS, PlotSkipped

    shown = [row for row in rows if row.measured and row.prediction.bounded]
    if not shown:
        raise PlotSkipped("no planner prediction with a measured boundary")
    fig = Figure(figsize=(7.5, 4.5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for x, row in enumerate(shown):
        p = row.prediction
        colour = LOADER_COLOURS.get(p.loader, "#000000")
        low, high = (value or p.largest_multiplier for value in p.largest_multiplier_interval)
        spread = [[p.largest_multiplier - low], [high - p.largest_multiplier]]
        ax.errorbar([x - 0.1], [p.largest_multiplier], yerr=spread, fmt="D", color=colour, capsize=4,
                    label="predicted (interval)" if x == 0 else None)
        if row.largest_success is not None:
            top = row.smallest_failure or row.largest_success
            ax.plot([x + 0.1, x + 0.1], [row.largest_success, top], color=colour, linewidth=6, alpha=0.5,
                    label="measured: largest success .. smallest failure" if x == 0 else None)
    ax.set_xticks(range(len(shown)), [f"{r.prediction.mode}\n{r.prediction.workers} w, {r.prediction.loader}"
                                      for r in shown])
    ax.set_yscale("log")
    ax.set_ylabel("dataset multiplier")
    ax.set_title("Boundary: the planner's prediction against the scale test's measurement")
    ax.legend(loc="upper left")
    fig.savefig(path, format="png")
    return fig


def planner_section(results: LoadedResults) -> tuple[str, list[Compared]]:
    """The report's text of the planner's predictions against the measurements (and the rows to plot)."""
    predictions, why = read_predictions(results.results_dir)
    if predictions is None:
        return f"not shown: {why}", []
    rows = compare(predictions, results)
    return format_compared(rows, predictions.memory_limit_bytes), rows


def predict_for_demo(out: Path, limit: int, workers: int, loaders: tuple[str, ...], launcher: Any,
                     on_event: Any, data: dict[str, Any] | None = None) -> Path:
    """The demo's own predictions, made before it measures: calibrate the demo's model on the demo's data
    (`data`: its --source; kept in <out>/calibration/<model digest>, reused while valid), predict one process
    and `workers` workers for each loader under the demo's limit, and write <out>/plan/predictions.json."""
    from stockscale.config import build_train_config
    from stockscale.data.dataset import dataset_size
    from stockscale.experiments.plan.calibration import calibration_key, default_folder, ensure_calibration

    cfg = build_train_config({**(data or {}), "loader": loaders[0]})
    size = dataset_size(cfg)
    folder = default_folder(calibration_key(cfg), out)
    calibration = ensure_calibration(cfg, list(loaders), folder, False, launcher, size.windows, size.train_days,
                                     on_event=on_event)
    cases = [(mode, loader, 1 if mode == "local" else workers) for loader in loaders for mode in ("local", "cluster")]
    predictions = predict_cases(calibration, cases, limit)
    for p in predictions.predictions:
        low, high = p.largest_multiplier_interval
        reach = f"{p.largest_multiplier}x ({low}..{high})" if p.bounded else "any multiplier (stream)"
        on_event(f"      planner: {p.mode}, {p.loader} loader, {p.workers} worker(s): fits up to {reach}, "
                 f"peak {format_size(p.peak_bytes_per_worker)}, extrapolation {p.extrapolation:.1f}x")
    return write_predictions(out, predictions)
