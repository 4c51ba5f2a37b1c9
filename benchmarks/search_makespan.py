"""Hyperparameter-search figures (issue 5), from real runs of the 18-config grid with short training:

- the makespan of `--backend local --parallel 2` against its lower bound max(sum of trial times / 2,
  longest trial), both from the same run (goal: <= 1.15x);
- the sequential total beside it;
- the per-trial overhead (hand-over, data, evaluation, writing; the warm workers' own start is outside
  every trial but inside the makespan): trial wall time minus its training-loop time.

Usage: python benchmarks/search_makespan.py [--max-steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

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
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    print(f"machine: {platform.node()} {platform.machine()}, {cpus} cores; 18 configs, {args.max_steps} steps each")
    with tempfile.TemporaryDirectory() as tmp:
        parallel = search("parallel", 2, max(1, cpus // 2), args.max_steps, Path(tmp) / "parallel")
        sequential = search("sequential", 1, cpus, args.max_steps, Path(tmp) / "sequential")
        times = [trial["wall_seconds"] for trial in parallel["results"]]
        bound = max(sum(times) / 2, max(times))
        makespan = parallel["total_wall_seconds"]
        print(f"parallel, 2 workers x {max(1, cpus // 2)} thread: makespan {makespan:6.1f} s   lower bound "
              f"{bound:6.1f} s (sum {sum(times):.1f} s / 2, longest {max(times):.1f} s)   ratio "
              f"{makespan / bound:.3f} (goal <= 1.15)")
        print(f"sequential, 1 trial x {cpus} threads: total {sequential['total_wall_seconds']:6.1f} s   "
              f"speed-up of parallel {sequential['total_wall_seconds'] / makespan:.2f}x")
        for name, summary in (("parallel", parallel), ("sequential", sequential)):
            values = overheads(summary)
            print(f"per-trial overhead ({name}): mean {sum(values) / len(values):.2f} s, "
                  f"min {min(values):.2f} s, max {max(values):.2f} s  (wall time minus training loop)")


if __name__ == "__main__":
    main()
