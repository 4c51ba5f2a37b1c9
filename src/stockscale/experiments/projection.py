"""What the measured results suggest for a real cluster: a projection, not a measurement.

Two questions the original demonstration left as "next steps", answered from numbers we did measure:
- the hyperparameter search on K nodes: its makespan (the measured per-trial times placed longest first on
  the least-loaded node, each trial paying a pod start-up) and what the nodes cost for that long;
- the dataset scale with K workers of a given memory size: a straight line fitted to the measured per-worker
  peak memory against the per-worker data share (multiplier / workers), solved for the largest multiplier
  whose share still fits.
Every assumption is a field of `ProjectionSettings` and is printed beside the figures, so a reader can tell
the projection from the measurements it extrapolates.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stockscale.config import format_size, one_line, parse_size
from stockscale.errors import InputError
from stockscale.experiments.timings import OUTLIER_FACTOR, robust_durations

if TYPE_CHECKING:
    from stockscale.experiments.results import LoadedResults

GIB = 1024**3


class ProjectionSettings(BaseModel):
    """The assumptions of the projection. Defaults follow the original demonstration's PyTorchJob replica
    (limits: cpu 2, memory 4Gi) and typical on-demand cloud prices (about $0.04 per vCPU-hour and $0.005
    per GiB-hour, the order of a general-purpose VM's price split into its CPU and memory shares)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    nodes: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 18], min_length=1,
                             description="cluster sizes K to project for (nodes for the search, workers "
                                         "for the dataset scale)")
    pod_startup_seconds: float = Field(20.0, ge=0, le=86_400, description="added to every trial: scheduling, image, "
                                                               "imports, data")
    node_cpus: float = Field(2.0, gt=0, le=100_000, description="vCPUs per node (billed)")
    node_memory_bytes: int = Field(4 * GIB, gt=0, le=2**50, description="memory per node or worker (billed, and the "
                                                              "per-worker limit for the dataset scale)")
    price_vcpu_hour: float = Field(0.04, ge=0, le=1e6, description="dollars per vCPU-hour")
    price_gib_hour: float = Field(0.005, ge=0, le=1e6, description="dollars per GiB-hour")

    @field_validator("nodes")
    @classmethod
    def _sorted_positive(cls, value: list[int]) -> list[int]:
        if any(k < 1 or k > 100_000 for k in value):
            raise ValueError("every node count must be between 1 and 100000")
        return sorted(set(value))

    @field_validator("node_memory_bytes", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return parse_size(value) if isinstance(value, str) else value

    def node_price_per_hour(self) -> float:
        """Dollars one node costs per hour at these prices."""
        return self.node_cpus * self.price_vcpu_hour + self.node_memory_bytes / GIB * self.price_gib_hour


def build_projection_settings(values: dict[str, Any]) -> ProjectionSettings:
    """Validate CLI values (None = default) into ProjectionSettings, or raise InputError with one line."""
    try:
        return ProjectionSettings.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as error:
        raise InputError(one_line(error, "projection settings")) from None
    except ValueError as error:  # parse_size inside a "before" validator
        raise InputError(f"projection settings: node_memory: {error}") from None


def lpt_makespan(durations: Sequence[float], nodes: int, overhead: float = 0.0) -> float:
    """Makespan of `durations` on `nodes` identical nodes, longest first onto the least-loaded node
    (Graham's LPT list scheduling: within 4/3 of the optimum), each job taking `overhead` more."""
    if nodes < 1:
        raise ValueError("nodes must be at least 1")
    loads = [0.0] * nodes
    for duration in sorted(durations, reverse=True):
        least = heapq.heappop(loads)
        heapq.heappush(loads, least + duration + overhead)
    return max(loads)


@dataclass
class SearchProjectionRow:
    nodes: int
    makespan_seconds: float
    speedup: float | None       # against the measured sequential total, when there is one
    node_hours: float
    cost_dollars: float


@dataclass
class SearchProjection:
    source: str                 # which measured search the trial times come from
    trials: int
    sum_seconds: float
    longest_seconds: float
    measured_sequential_seconds: float | None
    rows: list[SearchProjectionRow]
    replaced: list[tuple[str, float, float]] = field(default_factory=list)  # (trial, measured s, used s)
    sequential_note: str = ""   # how the sequential time the speedups divide was taken


def project_search(durations: Sequence[float], settings: ProjectionSettings, source: str,
                   measured_sequential_seconds: float | None = None) -> SearchProjection | None:
    """The search on each K of `settings.nodes`: makespan, speedup, node-hours and cost. None without trials.

    Nodes are billed for the whole makespan (an idle node still costs), which is how a cluster sized for
    the search is paid for."""
    if not durations:
        return None
    rows = []
    for k in settings.nodes:
        makespan = lpt_makespan(durations, k, settings.pod_startup_seconds)
        node_hours = k * makespan / 3600
        speedup = measured_sequential_seconds / makespan if measured_sequential_seconds else None
        rows.append(SearchProjectionRow(k, makespan, speedup, node_hours,
                                        node_hours * settings.node_price_per_hour()))
    return SearchProjection(source, len(durations), float(sum(durations)), float(max(durations)),
                            measured_sequential_seconds, rows)


@dataclass
class LinearFit:
    """bytes = intercept + slope * x, x = multiplier / workers (the per-worker data share)."""

    intercept: float
    slope: float
    points: int
    x_min: float
    x_max: float
    max_residual: float

    def predict(self, x: float) -> float:
        return self.intercept + self.slope * x


def fit_line(points: Sequence[tuple[float, float]]) -> LinearFit | None:
    """Least-squares line through (x, y) points; None when fewer than two distinct x values."""
    xs = [float(x) for x, _ in points]
    ys = [float(y) for _, y in points]
    if len(set(xs)) < 2:
        return None
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    intercept = mean_y - slope * mean_x
    residual = max(abs(y - (intercept + slope * x)) for x, y in zip(xs, ys, strict=True))
    return LinearFit(intercept, slope, n, min(xs), max(xs), residual)


@dataclass
class ScaleProjectionRow:
    workers: int
    max_multiplier: int | None  # None: the fixed part alone does not fit in the memory


@dataclass
class ScaleProjection:
    loader: str
    fit: LinearFit | None
    note: str                   # why there is no fit, or what the fit rests on
    memory_bytes: int
    rows: list[ScaleProjectionRow]


def max_multiplier(fit: LinearFit, workers: int, memory_bytes: int) -> int | None:
    """Largest integer multiplier m with fit(m / workers) <= memory_bytes; None when not even m = 1 fits.
    Only meaningful for a positive slope (the caller checks)."""
    room = memory_bytes - fit.intercept
    if room <= 0:
        return None
    m = math.floor(room * workers / fit.slope + 1e-9)
    return m if m >= 1 else None


def project_scale(loader: str, points: Sequence[tuple[float, float]],
                  settings: ProjectionSettings) -> ScaleProjection:
    """Largest multiplier with K workers of `settings.node_memory_bytes`, from (multiplier / workers,
    per-worker peak bytes) points of successful runs."""
    memory = settings.node_memory_bytes
    fit = fit_line(points)
    if fit is None:
        return ScaleProjection(loader, None, "fewer than two distinct data shares among the successful runs: "
                               "no line to fit", memory, [])
    if fit.slope <= 0:
        return ScaleProjection(loader, fit, "peak memory did not grow with the data share in the measured "
                               f"range (slope {format_size(fit.slope)} per unit): no bound projected",
                               memory, [])
    rows = [ScaleProjectionRow(k, max_multiplier(fit, k, memory)) for k in settings.nodes]
    return ScaleProjection(loader, fit, f"line fitted to {fit.points} successful runs (local and cluster)",
                           memory, rows)


@dataclass
class Projection:
    """Everything the report prints under "projection, not a measurement"."""

    settings: ProjectionSettings
    search: SearchProjection | None
    search_note: str            # why there is no search projection
    scale: list[ScaleProjection]
    scale_note: str             # why there is no scale projection
    # The planner's predictions against the measured boundaries (experiments/plan/report.py); when set, the
    # report shows them in place of the straight line above, which mixes world sizes and loaders' fixed costs.
    planner: str = ""


def build_projection(results: LoadedResults, settings: ProjectionSettings) -> Projection:
    """Feed the measured per-trial times and per-worker peaks into the projection.

    Trial times come from the sequential search when there is one (each trial had the machine to itself,
    like a node), else from the parallel search (trials shared the cores: slower than a node would be),
    else from the cloud search (pod times, start-up already inside them)."""
    search, search_note = None, "no search results (run `stockscale search`)"
    source = next((results.search(role) for role in ("sequential", "parallel", "cloud") if results.search(role)),
                  None)
    if source is not None:
        durations, replaced = robust_durations(source, results.searches)
        caveat = {"sequential": "", "parallel": " (trials shared the cores: slower than on a node of their own)",
                  "cloud": " (pod times: start-up counted inside them, then added again)"}.get(source.role, "")
        base = results.search("sequential")
        measured = base.data.total_wall_seconds if base is not None and base.data.complete else None
        sequential_note = ""
        if measured is not None and source is base and replaced:
            excess = sum(outlier.seconds - used for outlier, used in replaced)
            sequential_note = (f"the measured sequential {_seconds(measured)} less the outliers' excess "
                               f"{_seconds(excess)}")
            measured -= excess
        search = project_search(durations, settings, f"the {source.role} search{caveat}", measured)
        if search is None:
            search_note = f"the {source.role} search recorded no trial times"
        else:
            search.replaced = [(outlier.name, outlier.seconds, used) for outlier, used in replaced]
            search.sequential_note = sequential_note
    scale = []
    loaders = sorted({run.data.settings.loader for run in results.scale_tests},
                     key=lambda loader: (loader != "memory", loader))
    for loader in loaders:
        points = [(row.multiplier / run.data.settings.workers, peak)
                  for run in results.scale_tests if run.data.settings.loader == loader
                  for row in run.data.results
                  if row.status == "success" and (peak := row.peak_per_worker()) is not None]
        scale.append(project_scale(loader, points, settings))
    scale_note = "" if scale else "no scale test results (run `stockscale scale-test`)"
    return Projection(settings, search, search_note, scale, scale_note)


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 100 else f"{value:.1f} s"


def format_projection(projection: Projection) -> str:
    """Plain fixed-width text; every assumption printed beside the figures it shapes."""
    s = projection.settings
    lines = ["PROJECTION FOR A REAL CLUSTER (projection, not a measurement)", "=" * 62]
    lines.append(f"Assumed node: {s.node_cpus:g} vCPU, {format_size(s.node_memory_bytes)}; "
                 f"pod start-up {s.pod_startup_seconds:g} s per trial (an assumption: not measured here);")
    lines.append(f"price ${s.price_vcpu_hour:g}/vCPU-hour + ${s.price_gib_hour:g}/GiB-hour "
                 f"= ${s.node_price_per_hour():.4f} per node-hour.")
    lines += ["", "Hyperparameter search on K nodes"]
    search = projection.search
    if search is None:
        lines.append(f"  not projected: {projection.search_note}")
    else:
        lines.append(f"  From the {search.trials} per-trial times measured in {search.source} "
                     f"(sum {_seconds(search.sum_seconds)}, longest {_seconds(search.longest_seconds)}),")
        lines.append("  one trial per node at a time at the measured speed, placed longest first on the "
                     "least-loaded node;")
        lines.append("  nodes billed for the whole makespan.")
        for name, measured_seconds, used in search.replaced:
            lines.append(f"  {name} took {_seconds(measured_seconds)}, over {OUTLIER_FACTOR:g}x its config's time "
                         f"in the other search(es): an outlier,")
            lines.append(f"  counted here at its typical {_seconds(used)} (the median-based estimate).")
        if search.sequential_note:
            lines.append(f"  Speedups against {search.sequential_note}.")
        speedup_head = "speedup vs measured sequential" if search.measured_sequential_seconds else "speedup"
        lines.append(f"  {'nodes':>5}  {'makespan':>9}  {speedup_head:>30}  {'node-hours':>10}  {'cost':>9}")
        for row in search.rows:
            speedup = f"{row.speedup:.2f}x" if row.speedup is not None else "n/a (no sequential run)"
            lines.append(f"  {row.nodes:>5}  {_seconds(row.makespan_seconds):>9}  {speedup:>30}  "
                         f"{row.node_hours:>10.4f}  {'$' + format(row.cost_dollars, '.4f'):>9}")
        bound = max(search.longest_seconds + s.pod_startup_seconds, 0.0)
        lines.append(f"  No K does better than the longest trial plus start-up: {_seconds(bound)}.")
    if projection.planner:
        lines += ["", "Dataset scale: the planner's predictions (`stockscale plan`), each with its interval and "
                  "extrapolation factor"]
        lines += ["  " + line if line else "" for line in projection.planner.splitlines()]
        return "\n".join(lines)
    lines += ["", f"Dataset scale with K workers of {format_size(s.node_memory_bytes)} each"]
    if not projection.scale:
        lines.append(f"  not projected: {projection.scale_note}")
    for scale in projection.scale:
        fit = scale.fit
        lines.append(f"  {scale.loader} loader: {scale.note}.")
        if fit is None:
            continue
        lines.append(f"    per-worker peak = {format_size(fit.intercept)} + {format_size(fit.slope)} x "
                     "(multiplier / workers)")
        lines.append(f"    (measured shares multiplier / workers from {fit.x_min:g} to {fit.x_max:g}; largest "
                     f"residual {format_size(fit.max_residual)})")
        if not scale.rows:
            continue
        lines.append(f"    {'workers':>7}  {'largest multiplier':>18}")
        for scale_row in scale.rows:
            reach = (f"{scale_row.max_multiplier}x" if scale_row.max_multiplier is not None
                     else "none (fixed part too big)")
            lines.append(f"    {scale_row.workers:>7}  {reach:>18}")
        lines.append("    A straight-line extrapolation beyond the measured shares: the real boundary also")
        lines.append("    depends on the node's other processes and on what the limit counts (a cgroup counts")
        lines.append("    page cache too).")
    return "\n".join(lines)
