"""`stockscale demo`: both comparisons on this machine, then the report — the whole demonstration, one command.

The memory limit is not a guess: a first run measures what one worker needs with the base data (Python,
torch, the model), and the limit is that plus a fixed headroom for training data. The multipliers are then
chosen from the memory loader's known footprint (1,200 bytes a window) so that one process under the limit
fails inside the grid and N workers, holding 1/N of the data each, fail only further up. The boundaries
themselves are measured: the runs decide, the plan only makes sure the grid spans them on any machine.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stockscale.config import build_train_config
from stockscale.data.dataset import prepare_from_config
from stockscale.data.scaled import materialized_bytes
from stockscale.experiments.report import format_report_text, load_results, write_report
from stockscale.experiments.scale_test import ScaleTestSettings, run_scale_test
from stockscale.experiments.search import DEFAULT_SPACE, SearchSettings, run_search
from stockscale.launch.base import Launcher, TrainJob
from stockscale.launch.local import LocalLauncher

MiB = 2**20


@dataclass(frozen=True)
class DemoPlan:
    """Sizes of one demo: how much data, how many workers, which grid, how much training."""

    workers: int
    headroom: int  # bytes of training data one process may hold under the limit
    scale_steps: int
    space: dict[str, list[Any]]
    search_train: dict[str, Any] = field(default_factory=dict)
    timeout: float = 300.0

    def multipliers(self, windows_per_replica: int) -> list[int]:
        """1x, then a geometric grid (steps of sqrt 2) from half of what one process should hold to twice
        what N workers should hold, so both boundaries fall inside it with a resolution of sqrt 2."""
        fits = self.headroom / materialized_bytes(windows_per_replica)
        factors, factor = [], 0.5
        while factor <= 2 * self.workers + 1e-9:
            factors.append(factor)
            factor *= math.sqrt(2)
        return sorted({1, *(max(2, round(fits * factor)) for factor in factors)})


FULL = DemoPlan(workers=4, headroom=512 * MiB, scale_steps=20, space=DEFAULT_SPACE,
                search_train={"epochs": 2})
QUICK = DemoPlan(workers=2, headroom=256 * MiB, scale_steps=3,
                 space={"lr": [1e-3, 5e-3], "hidden_size": [16, 32], "num_layers": [1]},
                 search_train={"max_steps": 5, "epochs": 1})


def memory_limit_for(baseline: int, plan: DemoPlan) -> int:
    """The measured base footprint plus the plan's headroom, rounded up to 16 MiB."""
    return int(math.ceil((baseline + plan.headroom) / (16 * MiB)) * 16 * MiB)


def measure_baseline(launcher: Launcher, out: Path) -> int:
    """Peak RSS of one worker training on the 1x data with the memory loader, no limit."""
    run_dir = out / "calibration"
    shutil.rmtree(run_dir, ignore_errors=True)
    result = launcher.run(TrainJob(name="calibration", config={"loader": "memory", "max_steps": 2, "epochs": 1},
                                   run_dir=run_dir, workers=1))
    if result.status != "success":
        raise RuntimeError(f"the calibration run failed: {result.status} {result.detail}")
    shutil.rmtree(run_dir, ignore_errors=True)
    return max(result.peak_rss_bytes)


def run_demo(out: Path, quick: bool, on_event: Callable[[str], None],
             cluster: Launcher | None = None) -> tuple[str, Path]:
    """Run every stage into `out` (a results folder); return the printed comparison and the report path.

    `cluster` runs the cluster side (its scale tests and the parallel search), for example containers of
    the image; by default it is the same local launcher as the one-machine side.
    """
    plan = QUICK if quick else FULL
    cpus = os.cpu_count() or 1
    launcher = LocalLauncher(log_dir=out / "logs")
    cluster = cluster or launcher
    stages = 8
    stage = iter(range(1, stages + 1))

    def announce(text: str) -> None:
        on_event(f"[{next(stage)}/{stages}] {text}")

    announce("data: the bundled AAPL series, split and normalized")
    windows = prepare_from_config(build_train_config({})).train_windows
    baseline = measure_baseline(launcher, out)
    limit = memory_limit_for(baseline, plan)
    multipliers = plan.multipliers(windows)
    on_event(f"      one worker needs {baseline / MiB:.0f} MiB with the base data; limit per process/worker: "
             f"{limit / MiB:.0f} MiB; multipliers {', '.join(map(str, multipliers))}")

    def scale(mode: str, loader: str) -> None:
        workers = 1 if mode == "local" else plan.workers
        runner = launcher if mode == "local" else cluster
        if mode == "local":
            who = "one process"
        else:
            who = f"{workers} containers ({runner.name})" if runner.name != "local" else \
                f"emulated cluster, {workers} workers"
        announce(f"scale test, {who}, {loader} loader")
        settings = ScaleTestSettings(mode=mode, workers=workers, multipliers=multipliers, memory_limit=limit,
                                     timeout=plan.timeout, loader=loader, max_steps=plan.scale_steps, epochs=1,
                                     threads=max(1, cpus // workers))
        suffix = "" if loader == "memory" else f"_{loader}"

        def report(run: dict[str, Any]) -> None:
            peak = max(run["peak_rss_bytes"]) / MiB if run["peak_rss_bytes"] else 0.0
            detail = f" ({run['detail']})" if run["detail"] else ""
            on_event(f"      x{run['multiplier']}: {run['status']}, {run['wall_seconds']:.1f}s, "
                     f"peak {peak:.0f} MiB/worker{detail}")

        run_scale_test(settings, runner, out / f"scale_test_{mode}{suffix}", report)

    scale("local", "memory")
    scale("cluster", "memory")
    scale("local", "lazy")
    scale("cluster", "lazy")

    def search(backend: str, workers: int) -> None:
        trials = math.prod(len(values) for values in plan.space.values())
        announce(f"search, {backend}: {trials} configs, {workers} at a time")
        settings = SearchSettings(backend=backend, workers=workers, space=plan.space, train=plan.search_train,
                                  threads_per_trial=max(1, cpus // workers))
        done = [0]

        def report(entry: dict[str, Any]) -> None:
            done[0] += 1
            on_event(f"      [{done[0]}/{trials}] {entry['name']} {entry['status']} {entry['wall_seconds']:.1f}s")

        folder = {"sequential": "hp_search_local", "parallel": "hp_search_parallel", "docker": "hp_search_docker"}
        run_search(settings, launcher if backend == "sequential" else cluster, out / folder[backend], report)

    search("sequential", 1)
    search("parallel" if cluster.name == "local" else cluster.name, cpus)

    announce("report")
    results = load_results(out)
    return format_report_text(results), write_report(results, out / "report")
