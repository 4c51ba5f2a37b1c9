"""`stockscale demo`: both comparisons on this machine, then the report — the whole demonstration, one command.

The memory limit is not a guess: a first run measures what one worker needs with the base data (Python,
torch, the model), and the limit is that plus a fixed headroom for training data. Each scale test then
searches for its boundary (scale_test.find_boundary: bracket by doubling, bisect to sqrt 2): the memory
loader's known footprint (1,200 bytes a window) gives the first guess, just under where one process (or N
workers, holding 1/N of the data each) should run out, and a ceiling (twice what N workers should hold) that
no probe passes. The lazy loader's search starts where the memory loader's failed: the question it answers
is whether the same processes get past that size. The boundaries themselves are measured: the runs decide,
the plan only says where to start.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, cast

from stockscale.config import TrainOverrides, build_train_config
from stockscale.data.dataset import prepare_from_config
from stockscale.data.replicas import materialized_bytes
from stockscale.experiments.report import format_report_text, write_report
from stockscale.experiments.results import SEARCH_FOLDERS, ScaleRow, ScaleTest, Trial, load_results, scale_test_folder
from stockscale.experiments.scale_test import BoundarySearch, ScaleTestSettings, run_scale_test
from stockscale.experiments.search import DEFAULT_SPACE, SearchSettings, run_search
from stockscale.launch.local import LocalRunner
from stockscale.launch.runner import Runner, TrainJob
from stockscale.launch.warm import WarmRunner
from stockscale.space import Value, parse_space
from stockscale.tracking import Tracker, tracked

MiB = 2**20


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo: how much data, how many workers, which grid, how much training."""

    workers: int
    headroom: int  # bytes of training data one process may hold under the limit
    scale_steps: int
    space: dict[str, list[Value]]
    search_train: TrainOverrides = field(default_factory=lambda: TrainOverrides())
    timeout: float = 300.0
    recheck: tuple[int, int] = (2, 2)  # the best config again: rolling origins x seeds (stockscale evaluate)

    def search(self, windows_per_replica: int, workers: int) -> BoundarySearch:
        """The boundary search for `workers` workers on the sqrt-2 lattice around what one process should hold
        with the memory loader (`fits`, the lattice's base): the first probe one step under what `workers`
        should hold, the ceiling twice what the plan's N workers should hold. These are the sizes of the
        sqrt-2 grid the demo walked before, from fits/2 to 2N fits; the search probes only a few of them."""
        fits = max(1.0, self.headroom / materialized_bytes(windows_per_replica))
        half_steps = round(2 * math.log2(workers))  # sqrt-2 steps from one process's share to N workers'
        top = BoundarySearch(base=fits, ceiling=2**62).multiplier(round(2 * math.log2(2 * self.workers)))
        return BoundarySearch(base=fits, ceiling=top, start_step=half_steps - 1)


FULL = DemoPlan(workers=4, headroom=512 * MiB, scale_steps=20, space=cast(dict[str, list[Value]], DEFAULT_SPACE),
                search_train={"epochs": 2})
QUICK = DemoPlan(workers=2, headroom=256 * MiB, scale_steps=3,
                 space={"lr": [1e-3, 5e-3], "hidden_size": [16, 32], "num_layers": [1]},
                 search_train={"max_steps": 5, "epochs": 1})


def memory_limit_for(baseline: int, plan: DemoPlan) -> int:
    """The measured base footprint plus the plan's headroom, rounded up to 16 MiB."""
    return int(math.ceil((baseline + plan.headroom) / (16 * MiB)) * 16 * MiB)


def measure_baseline(launcher: Runner, out: Path, data: TrainOverrides | None = None) -> int:
    """Peak RSS of one worker training on the 1x data with the memory loader, no limit."""
    run_dir = out / "calibration"
    shutil.rmtree(run_dir, ignore_errors=True)
    config: TrainOverrides = {**(data or {}), "loader": "memory", "max_steps": 2, "epochs": 1, "baselines": "cheap"}
    result = launcher.run(TrainJob(name="calibration", config=build_train_config(config, "calibration"),
                                   run_dir=run_dir, workers=1))
    if result.status != "success":
        raise RuntimeError(f"the calibration run failed: {result.status} {result.detail}")
    shutil.rmtree(run_dir, ignore_errors=True)
    return max(result.peak_rss_bytes)


def recheck_best(out: Path, plan: DemoPlan, cpus: int, on_event: Callable[[str], None],
                 data: TrainOverrides | None = None) -> None:
    """The search's best config trained again over a few rolling origins and seeds (a small `stockscale
    evaluate`), so the report shows how much one trial at one seed on one split moves, not one number."""
    from stockscale.data.sources import is_pooled, parse_tickers
    from stockscale.experiments.evaluate import FOLDER, run_evaluation
    from stockscale.experiments.evaluate_settings import EvaluateSettings
    from stockscale.experiments.results import best_search

    source = build_train_config(dict(data or {}))
    if is_pooled(source.source, parse_tickers(source.tickers)):
        on_event("      the best config is not re-checked: walk-forward evaluation over several tickers is not "
                 "built yet")
        return
    best = best_search(load_results(out))
    if best is None or best.data.best is None:
        on_event("      no successful trial: the best config is not re-checked")
        return
    origins, seeds = plan.recheck
    config = {key: value for key, value in best.data.best.config.items() if key != "seed"}
    on_event(f"      the best config again ({', '.join(f'{k}={v}' for k, v in config.items())}): {origins} rolling "
             f"origins x {seeds} seeds")
    settings = EvaluateSettings(origins=origins, seeds=seeds, train={**plan.search_train, **(data or {}), **config},
                                parallel=cpus, threads_per_run=1)
    run_evaluation(settings, WarmRunner(log_dir=out / "logs"), out / FOLDER,
                   lambda name, result: on_event(f"      {name} {result.status}"))


def run_demo(out: Path, quick: bool, on_event: Callable[[str], None],
             cluster: Runner | None = None, source: str | None = None,
             tracker: Tracker | None = None) -> tuple[str, Path]:
    """Run every stage into `out` (a results folder); return the printed comparison and the report path.

    `cluster` runs the cluster side (its scale tests and the parallel search), for example containers of
    the image; by default it is the same local launcher as the one-machine side. `source` is the data of
    every stage (default the bundled AAPL series; `bundled:all` pools the four bundled tickers). A `tracker`
    gets the demo as a parent run over its scale tests and searches (each a parent of its runs), the report as
    its artifacts.
    """
    report_dir = out / "report"
    with tracked(tracker, "demo", out.name, {"quick": quick, "cluster": (cluster.name if cluster else "local")},
                 lambda: [*sorted(report_dir.glob("report.*")), *sorted(report_dir.glob("*.png"))]):
        return _run_demo(out, quick, on_event, cluster, source, tracker)


def _run_demo(out: Path, quick: bool, on_event: Callable[[str], None], cluster: Runner | None,
              source: str | None, tracker: Tracker | None) -> tuple[str, Path]:
    data: TrainOverrides = {"source": source} if source else {}
    plan = QUICK if quick else FULL
    cpus = os.cpu_count() or 1
    launcher = LocalRunner(log_dir=out / "logs")
    cluster = cluster or launcher
    stages = 8
    stage = iter(range(1, stages + 1))

    def announce(text: str) -> None:
        on_event(f"[{next(stage)}/{stages}] {text}")

    announce(f"data: {source or 'the bundled AAPL series'}, split and normalized")
    windows = prepare_from_config(build_train_config(dict(data))).train_windows
    baseline = measure_baseline(launcher, out, data)
    limit = memory_limit_for(baseline, plan)
    local_search, cluster_search = plan.search(windows, 1), plan.search(windows, plan.workers)
    on_event(f"      one worker needs {baseline / MiB:.0f} MiB with the base data; limit per process/worker: "
             f"{limit / MiB:.0f} MiB; boundary search from {local_search.start}x (one process) and "
             f"{cluster_search.start}x ({plan.workers} workers), up to {local_search.ceiling}x")
    # The planner predicts each boundary before the scale tests measure it; the report sets them side by side.
    from stockscale.experiments.plan.report import predict_for_demo

    predict_for_demo(out, limit, plan.workers, ("memory",) if quick else ("memory", "lazy"), launcher, on_event,
                     dict(data))

    def scale(mode: Literal["local", "cluster"], loader: str, search: BoundarySearch) -> ScaleTest:
        workers = 1 if mode == "local" else plan.workers
        runner = launcher if mode == "local" else cluster
        if mode == "local":
            who = "one process"
        else:
            who = f"{workers} containers ({runner.name})" if runner.name != "local" else \
                f"emulated cluster, {workers} workers"
        announce(f"scale test, {who}, {loader} loader")
        settings = ScaleTestSettings(mode=mode, workers=workers, backend="local" if mode == "local" else runner.name,
                                     multipliers=[], memory_limit=limit,
                                     timeout=plan.timeout, loader=loader, max_steps=plan.scale_steps, epochs=1,
                                     threads=max(1, cpus // workers), search=search, train=dict(data))

        def report(run: ScaleRow) -> None:
            peak = (run.peak_per_worker() or 0) / MiB
            detail = f" ({run.detail})" if run.detail else ""
            on_event(f"      x{run.multiplier}: {run.status}, {run.wall_seconds or 0.0:.1f}s, "
                     f"peak {peak:.0f} MiB/worker{detail}")

        return run_scale_test(settings, runner, out / scale_test_folder(mode, loader), report, tracker)

    def from_failure(search: BoundarySearch, memory: ScaleTest) -> BoundarySearch:
        """The lazy loader's search: first probe where the memory loader failed (its own start if it never did)."""
        failed = memory.boundary.smallest_failure if memory.boundary is not None else None
        return replace(search, start_step=search.step_of(failed)) if failed else search

    local_memory = scale("local", "memory", local_search)
    cluster_memory = scale("cluster", "memory", cluster_search)
    scale("local", "lazy", from_failure(local_search, local_memory))
    scale("cluster", "lazy", from_failure(cluster_search, cluster_memory))

    def search(backend: str, workers: int) -> None:
        trials = math.prod(len(values) for values in plan.space.values())
        announce(f"search, {backend}: {trials} configs, {workers} at a time")
        settings = SearchSettings(backend=backend, parallel=workers, space=parse_space(dict(plan.space), "space"),
                                  train={**plan.search_train, **data},
                                  threads_per_trial=max(1, cpus // workers))
        done = [0]

        def report(entry: Trial) -> None:
            done[0] += 1
            on_event(f"      [{done[0]}/{trials}] {entry.name} {entry.status} {entry.wall_seconds or 0.0:.1f}s")

        # Trials here run on warm workers (launch/warm.py): a process per trial would spend seconds starting up.
        runner = WarmRunner(log_dir=out / "logs") if cluster.name == "local" or backend == "sequential" else cluster
        run_search(settings, runner, out / SEARCH_FOLDERS[backend], report, tracker)

    search("sequential", 1)
    search("parallel" if cluster.name == "local" else cluster.name, cpus)
    recheck_best(out, plan, cpus, on_event, data)

    announce("report")
    results = load_results(out)
    return format_report_text(results), write_report(results, out / "report")
