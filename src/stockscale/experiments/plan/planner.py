"""`stockscale plan`'s answer: from the calibrated models, the largest multiplier K workers hold under a limit
(or the fewest workers a multiplier needs), the peak per worker, the epoch time, the start-up per backend and
the cost, each prediction with its interval and how far it lies beyond what calibration measured.

The answer is a pydantic model (`Plan`): `--json` prints it (docs/results.md), `format_plan` prints it for
a reader with every assumption beside the figures.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from stockscale.bounds import MAX_MULTIPLIER
from stockscale.config import format_size
from stockscale.errors import InputError
from stockscale.experiments.plan.calibration import CalibrationFile
from stockscale.experiments.plan.cost import (
    BackendSearch,
    BuyComparison,
    CostSettings,
    RentCost,
    buy_comparison,
    rent,
    search_cost,
    search_on_backend,
)
from stockscale.experiments.plan.layout import disk_bytes
from stockscale.experiments.plan.memory_model import Interval, MemoryModel
from stockscale.experiments.plan.models import bytes_per_window, memory_model, time_model
from stockscale.experiments.plan.startup import Startup
from stockscale.experiments.plan.time_model import TimeModel

KIND = "plan"


class Plan(BaseModel):
    kind: str = KIND
    loader: str
    memory_limit_bytes: int
    workers: int                                  # the workers the figures are for
    multiplier: int                               # the multiplier the figures are for
    largest_multiplier: int | None = None         # with --workers
    largest_multiplier_interval: list[int | None] | None = None
    workers_needed: int | None = None             # with --multiplier
    workers_needed_interval: list[int | None] | None = None
    peak_bytes_per_worker: float
    peak_bytes_per_worker_interval: list[float]
    limit_counts_bytes: float                     # what the limit counts of that peak (less shared file pages)
    fixed_bytes_per_worker: float
    fixed_source: str
    bytes_per_window: float
    bytes_per_window_source: str                  # the layout's figure, or the measured one where its check failed
    windows_per_worker: int
    depends_on_workers: bool
    disk_bytes: int | None                        # the stream loader's dataset on disk
    steps_per_epoch: int
    step_seconds: float
    step_source: str
    epoch_seconds: float
    epoch_seconds_interval: list[float]
    epochs: int
    run_seconds: float                            # start-up + epochs x epoch, one training run here
    extrapolation: float                          # windows per worker at the target / largest calibrated
    world_extrapolation: float                    # workers / largest calibrated world size
    startup: dict[str, Startup]
    cost: dict[str, RentCost]
    search_by_backend: dict[str, BackendSearch]   # the search's cost with each backend's per-trial start-up
    buy: BuyComparison
    assumptions: list[str]
    notes: list[str]
    calibration: dict[str, Any]


def window_source(calibration: CalibrationFile, loader: str) -> str:
    return bytes_per_window(calibration, loader)[1]


def _interval(value: Interval) -> list[float]:
    return [value.low, value.high]


def make_plan(calibration: CalibrationFile, loader: str, limit: int, epochs: int, cost: CostSettings,
              workers: int | None = None, multiplier: int | None = None,
              calibration_info: dict[str, Any] | None = None) -> Plan:
    """Answer one sizing question: exactly one of `workers` (-> largest multiplier) or `multiplier`
    (-> fewest workers). InputError when nothing fits or the answer is beyond the bounds."""
    if (workers is None) == (multiplier is None):
        raise InputError("give --workers K (the largest multiplier K workers hold) or --multiplier M (the fewest "
                         "workers M needs), not both")
    memory, timing = memory_model(calibration, loader), time_model(calibration, loader)
    memory.check_fits_at_all(limit)
    notes: list[str] = []
    fields: dict[str, Any] = {}
    if workers is not None:
        if not memory.fits(1, workers, limit):
            fixed = memory.fixed_for(workers)[0]
            raise InputError(f"does not fit with {workers} workers: each needs {format_size(memory.charged(fixed))} "
                             f"before any data, more than the limit of {format_size(limit)}")
        largest = memory.largest_multiplier(workers, limit)
        assert largest is not None
        fields.update(largest_multiplier=largest, largest_multiplier_interval=[
            memory.largest_multiplier(workers, limit, "high"), memory.largest_multiplier(workers, limit, "low")])
        target_m, target_w = largest, workers
    else:
        assert multiplier is not None
        needed = memory.workers_needed(multiplier, limit)
        if needed is None:
            raise memory.workers_beyond_bound(multiplier, limit)
        fields.update(workers_needed=needed, workers_needed_interval=[
            memory.workers_needed(multiplier, limit, "low"), memory.workers_needed(multiplier, limit, "high")])
        target_m, target_w = multiplier, needed
    if memory.bytes_per_window <= 0:
        notes.append("the stream loader's peak does not depend on the multiplier or the workers (pages are mapped "
                     f"per batch): it fits whenever one worker does; its data needs "
                     f"{format_size(disk_bytes(target_m, calibration.train_days))} of disk at {target_m}x")
        if workers is not None:
            notes.append(f"largest_multiplier is the most --multiplier accepts ({MAX_MULTIPLIER}), not a memory bound")
    peak = memory.peak(target_m, target_w)
    fixed, _, fixed_source = memory.fixed_for(target_w)
    step, _, step_source = timing.step_for(target_w)
    epoch = timing.epoch(target_m, target_w)
    overhead, overhead_source = timing.overhead_for(target_w)
    run_seconds = overhead + epochs * epoch.value
    not_measured = Startup(seconds=None, source="not measured: this calibration predates start-up measurements")
    process = Startup(seconds=overhead, source=f"measured: a fresh worker set's wall time less its training loop "
                                               f"({overhead_source})")
    startup = {
        "process": process,
        "warm_worker": calibration.startup.get("warm_worker", not_measured),
        "container": calibration.startup.get("container", not_measured),
        "pod": Startup(seconds=cost.pod_startup_seconds, source="assumption (--pod-startup-seconds)"),
    }
    train_seconds = epochs * epoch.value
    # WarmRunner runs a DDP trial (workers > 1) cold: then a trial here pays a fresh worker set's start-up.
    local = startup["warm_worker"] if target_w == 1 else process.model_copy(
        update={"source": f"{process.source}; WarmRunner runs DDP trials cold"})
    pod = Startup(seconds=cost.pod_startup_seconds + overhead,
                  source="assumption (--pod-startup-seconds) + the measured process start-up")
    by_backend = {name: search_on_backend(target_w, train_seconds, item, cost, limit)
                  for name, item in (("local", local), ("docker", startup["container"]), ("kubernetes", pod))}
    windows = memory.windows(target_m, target_w)
    entry = calibration.loaders[loader]
    return Plan(
        loader=loader, memory_limit_bytes=limit, workers=target_w, multiplier=target_m,
        peak_bytes_per_worker=peak.value, peak_bytes_per_worker_interval=_interval(peak),
        limit_counts_bytes=memory.charged(peak.value), fixed_bytes_per_worker=fixed, fixed_source=fixed_source,
        bytes_per_window=memory.bytes_per_window,
        bytes_per_window_source=window_source(calibration, loader), windows_per_worker=windows,
        depends_on_workers=memory.bytes_per_window > 0,
        disk_bytes=disk_bytes(target_m, calibration.train_days) if loader == "stream" else None,
        steps_per_epoch=timing.steps_per_epoch(target_m, target_w), step_seconds=step, step_source=step_source,
        epoch_seconds=epoch.value, epoch_seconds_interval=_interval(epoch), epochs=epochs, run_seconds=run_seconds,
        extrapolation=windows / max(1, entry.largest_windows_per_worker),
        world_extrapolation=target_w / max(entry.fixed_bytes),
        startup=startup,
        cost={"run": rent(target_w, run_seconds, cost, limit),
              "search": search_cost(target_w, run_seconds, cost, limit)},
        search_by_backend=by_backend,
        buy=buy_comparison(target_w, run_seconds, cost, limit),
        assumptions=[
            *cost.assumptions(limit),
            f"what the limit counts: peak RSS less {format_size(memory.shared_bytes)} of shared library pages a "
            f"cgroup does not charge again ({calibration.limit_mechanism})" if memory.shared_bytes else
            f"what the limit counts: peak RSS ({calibration.limit_mechanism})",
            "intervals: the memory model's margins from the calibration's layout check and a stated margin on "
            "the fixed cost; the time model's stated margins (15% measured world sizes, 35% modelled)",
        ],
        notes=notes, calibration=calibration_info or {}, **fields)


def models_for(calibration: CalibrationFile, loader: str) -> tuple[MemoryModel, TimeModel]:
    return memory_model(calibration, loader), time_model(calibration, loader)


def _bounds(values: list[Any] | None, unit: str = "") -> str:
    if not values:
        return ""
    low, high = ("-" if value is None else f"{value}{unit}" for value in values)
    return f" (interval {low}..{high})"


def format_plan(plan: Plan) -> str:
    """The plan for a reader: the answer, then how it was reached, then time, start-up, cost and assumptions."""
    size = format_size
    lines = [f"plan: {plan.loader} loader, limit {size(plan.memory_limit_bytes)} per worker"]
    if plan.largest_multiplier is not None:
        lines.append(f"  largest multiplier for {plan.workers} worker(s): {plan.largest_multiplier}x"
                     + _bounds(plan.largest_multiplier_interval, "x"))
    if plan.workers_needed is not None:
        lines.append(f"  fewest workers for {plan.multiplier}x: {plan.workers_needed}"
                     + _bounds(plan.workers_needed_interval))
    low, high = plan.peak_bytes_per_worker_interval
    lines += [
        f"  peak per worker: {size(plan.peak_bytes_per_worker)} ({size(low)}..{size(high)}) = fixed "
        f"{size(plan.fixed_bytes_per_worker)} ({plan.fixed_source}) + {plan.bytes_per_window:.1f} B x "
        f"{plan.windows_per_worker:,} windows; the limit counts {size(plan.limit_counts_bytes)}",
        f"  bytes per window: {plan.bytes_per_window_source}",
        f"  extrapolation: {plan.extrapolation:.1f}x the largest calibrated windows per worker, "
        f"{plan.world_extrapolation:.2f}x the largest calibrated world size",
    ]
    lines += [f"  note: {note}" for note in plan.notes]
    elow, ehigh = plan.epoch_seconds_interval
    lines.append(f"  epoch: {plan.epoch_seconds:.1f} s ({elow:.1f}..{ehigh:.1f}) = {plan.steps_per_epoch:,} steps x "
                 f"{plan.step_seconds * 1000:.1f} ms ({plan.step_source}); one run of {plan.epochs} epoch(s) "
                 f"{plan.run_seconds:.1f} s here")
    for name, item in plan.startup.items():
        value = "-" if item.seconds is None else f"{item.seconds:.2f} s"
        lines.append(f"  start-up, {name}: {value} ({item.source})")
    run, search = plan.cost["run"], plan.cost["search"]
    lines.append(f"  cost, one run on {plan.workers} node(s): {run.node_hours:.4f} node-hours, ${run.dollars:.4f}; "
                 f"search: {search.node_hours:.4f} node-hours, ${search.dollars:.4f}")
    for name, backend in plan.search_by_backend.items():
        found = ("not priced: its start-up was not measured" if backend.cost is None else
                 f"{backend.cost.node_hours:.4f} node-hours, ${backend.cost.dollars:.4f}")
        lines.append(f"  search with {name} trials ({backend.trials} x start-up + training): {found}")
    buy = plan.buy
    even = "never" if buy.break_even_hours is None else f"{buy.break_even_hours:,.0f} hours of use"
    runs = "" if buy.break_even_runs is None else f" ({buy.break_even_runs:,.0f} runs)"
    lines.append(f"  buy instead: one machine of {size(buy.memory_bytes)} and {buy.cores:g} cores costs "
                 f"${buy.price_dollars:,.0f}; renting {plan.workers} node(s) costs "
                 f"${buy.rent_dollars_per_hour:.4f}/hour, "
                 f"buying ${buy.bought_dollars_per_used_hour:.4f} per used hour: break-even after {even}{runs}; "
                 f"cheaper at the assumed utilization: {buy.cheaper}")
    lines += [f"  assumption: {text}" for text in plan.assumptions]
    return "\n".join(lines)
