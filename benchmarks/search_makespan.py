"""Hyperparameter-search figures (issue 5), from real runs of the 18-config grid with short training:

- the makespan of `--backend local --parallel 2` against its lower bound max(sum of trial times / 2,
  longest trial), both from the same run (goal: <= 1.15x);
- the sequential total beside it;
- the per-trial overhead (hand-over, data, evaluation, writing; the warm workers' own start is outside
  every trial but inside the makespan): trial wall time minus its training-loop time.

Each of --runs runs does the parallel search, then the sequential one (side by side); the figures are the
medians over the runs with their range.

Usage: python benchmarks/search_makespan.py [--max-steps 20] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path

from _spread import spread, stamp

from stockscale.experiments.search import DEFAULT_SPACE, SearchSettings, run_search
from stockscale.launch.warm import WarmRunner


def search(backend: str, workers: int, threads: int, max_steps: int, out: Path) -> dict:
    settings = SearchSettings(backend=backend, parallel=workers, space=DEFAULT_SPACE,
                              train={"epochs": 1000, "max_steps": max_steps}, threads_per_trial=threads)
    return run_search(settings, WarmRunner(), out).document()  # what `stockscale search` runs trials on here


def overheads(summary: dict) -> list[float]:
    values = []
    for trial in summary["results"]:
        metrics = json.loads((Path(trial["run_dir"]) / "metrics.json").read_text())
        values.append(trial["wall_seconds"] - metrics["train_seconds"])
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    threads = max(1, cpus // 2)
    print(f"machine: {platform.node()} {platform.machine()}, {cpus} cores; 18 configs, {args.max_steps} steps each; "
          f"{stamp()}")
    figures: dict[str, list[float]] = {key: [] for key in ("makespan", "bound", "ratio", "sequential", "speedup",
                                                          "overhead parallel", "overhead sequential")}
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            parallel = search("parallel", 2, threads, args.max_steps, Path(tmp) / "parallel")
            sequential = search("sequential", 1, cpus, args.max_steps, Path(tmp) / "sequential")
            times = [trial["wall_seconds"] for trial in parallel["results"]]
            bound = max(sum(times) / 2, max(times))
            makespan = parallel["total_wall_seconds"]
            total = sequential["total_wall_seconds"]
            for key, value in (("makespan", makespan), ("bound", bound), ("ratio", makespan / bound),
                               ("sequential", total), ("speedup", total / makespan),
                               ("overhead parallel", statistics.mean(overheads(parallel))),
                               ("overhead sequential", statistics.mean(overheads(sequential)))):
                figures[key].append(value)
        print(f"   run {run + 1}: parallel makespan {makespan:6.1f} s, lower bound {bound:6.1f} s (sum "
              f"{sum(times):.1f} s / 2, longest {max(times):.1f} s) = {makespan / bound:.3f}; sequential "
              f"{total:6.1f} s = {total / makespan:.2f}x the parallel makespan; {stamp()}")
    print(f"parallel, 2 workers x {threads} thread: makespan {spread(figures['makespan'], '{:.1f}', ' s')}")
    print(f"   its lower bound max(sum / 2, longest): {spread(figures['bound'], '{:.1f}', ' s')}")
    print(f"   makespan / bound: {spread(figures['ratio'], '{:.3f}')} (goal <= 1.15)")
    print(f"sequential, 1 trial x {cpus} threads: total {spread(figures['sequential'], '{:.1f}', ' s')}")
    print(f"   parallel is faster by {spread(figures['speedup'], unit='x')}")
    for name in ("parallel", "sequential"):
        print(f"per-trial overhead ({name}, mean of the run's trials): "
              f"{spread(figures['overhead ' + name], unit=' s')}  (wall time minus training loop)")


if __name__ == "__main__":
    main()
