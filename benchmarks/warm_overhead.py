"""Per-trial overhead of a search's trials, warm (WarmRunner) against cold (LocalRunner), issue 14.

Overhead is a trial's wall time (from when it was handed over to its result) minus its `train_seconds` (the
epochs' training steps): for a cold trial a fresh process's start, imports and data; for a warm one what is
left, the data loader, validation and test passes, writing the run directory and the pipe. Both run the same
`--trials` tiny trials (seeds 0..N-1) `--parallel` at a time; the whole search's wall time is shown too (a
warm search's worker start-up is in no trial, but is in it). Goal: warm mean overhead at most 0.5 s.

Each of --runs runs does the cold search, then the warm one (side by side); the figures are the medians of
the runs' mean overheads, with their range.

Usage: python benchmarks/warm_overhead.py [--trials 8] [--parallel 2] [--epochs 2] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from _spread import spread, stamp

from stockscale.config import build_train_config
from stockscale.launch.local import LocalRunner
from stockscale.launch.runner import TrainJob
from stockscale.launch.warm import WarmRunner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    config = {"epochs": args.epochs, "hidden_size": 16, "num_layers": 1, "batch_size": 128, "device": "cpu"}
    threads = max(1, len(os.sched_getaffinity(0)) // args.parallel)
    print(f"{args.trials} trials, parallel {args.parallel}, {threads} thread(s) each, config {config}; "
          f"{os.cpu_count()} cores; {stamp()}")
    means: dict[str, list[float]] = {"cold": [], "warm": []}
    walls: dict[str, list[float]] = {"cold": [], "warm": []}
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as scratch:
            for kind, launcher in (("cold", LocalRunner()), ("warm", WarmRunner())):
                jobs = [TrainJob(name=f"t{i}", config=build_train_config({**config, "seed": i}),
                                 run_dir=Path(scratch) / kind / f"t{i}", threads=threads) for i in range(args.trials)]
                started = time.perf_counter()
                with launcher:
                    results = launcher.run_many(jobs, args.parallel)
                total = time.perf_counter() - started
                metrics = [result.metrics for result in results if result.status == "success"]
                if len(metrics) != len(results) or None in metrics:
                    raise SystemExit(f"a trial did not succeed: {results}")
                overheads = [result.wall_seconds - float(m["train_seconds"])
                             for result, m in zip(results, metrics, strict=True) if m is not None]
                means[kind].append(statistics.mean(overheads))
                walls[kind].append(total)
                print(f"   run {run + 1} {kind}: overhead mean {means[kind][-1]:.3f} s (min {min(overheads):.3f}, "
                      f"max {max(overheads):.3f}), search wall {total:.1f} s")
    for kind in means:
        print(f"{kind}: mean overhead per trial {spread(means[kind], '{:.3f}', ' s')}; search wall "
              f"{spread(walls[kind], '{:.1f}', ' s')} (goal: warm <= 0.5 s)")
    print(f"ended {stamp()}")


if __name__ == "__main__":
    main()
