"""Data-parallel figures (issue 4), from real runs of `stockscale train` through the local launcher:

1. samples/s with 1 and with 2 workers (1 thread each), hidden 128, 2 layers (goal: >= 1.8x on 2 cores);
2. per-worker peak RSS with N = 1, 2, 4 workers on the same dataset with the memory loader: the data share
   must fall as 1/N.

Usage: python benchmarks/ddp_scaling.py [--steps 150] [--multiplier 400] [--repeats 5] [--skip-memory]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import psutil
from _spread import spread, stamp

from stockscale.config import build_train_config
from stockscale.launch.local import LocalRunner
from stockscale.launch.runner import TrainJob


def run(workers: int, config: dict, root: Path, name: str) -> dict:
    job = TrainJob(name=name, config=build_train_config(config), run_dir=root / name, workers=workers, threads=1)
    result = LocalRunner().run(job)
    if result.status != "success":
        raise SystemExit(f"{name}: {result.status} {result.detail}")
    return {"metrics": result.metrics, "peak": result.peak_rss_bytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--multiplier", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5, help="pairs of 1- and 2-worker runs (median reported)")
    parser.add_argument("--skip-memory", action="store_true", help="only the speed-up (part 1)")
    parser.add_argument("--skip-speed", action="store_true", help="only the memory figures (part 2)")
    parser.add_argument("--memory-runs", type=int, default=5, help="runs of each N for the memory figures")
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM; workers are local processes (emulated cluster)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        speed = {"hidden_size": 128, "num_layers": 2, "batch_size": 64, "epochs": 1000, "max_steps": args.steps,
                 "multiplier": 4}
        # Pairs run side by side (1 worker, then 2): load from other work on the machine hits both alike; the
        # figure is the median of the pairs' ratios, with their spread, never the best run.
        pairs = []
        if args.skip_speed:
            args.repeats = 0
        print(f"\n1. samples/s, hidden 128, 2 layers, batch 64 per worker, 1 thread per worker, {args.steps} steps, "
              f"{args.repeats} pairs; started {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
              f"load average {os.getloadavg()[0]:.2f}")
        for i in range(args.repeats):
            one = run(1, speed, root, f"speed-1-{i}")["metrics"]["samples_per_second"]
            two = run(2, speed, root, f"speed-2-{i}")["metrics"]["samples_per_second"]
            pairs.append((one, two))
            print(f"   pair {i + 1}: 1 worker {one:8.0f}, 2 workers {two:8.0f} samples/s = {two / one:.2f}x "
                  f"(load average {os.getloadavg()[0]:.2f})")
        ratios = sorted(two / one for one, two in pairs)
        if ratios:
            print(f"   speed-up 2 vs 1: median {statistics.median(ratios):.2f}x, from {ratios[0]:.2f}x to "
                  f"{ratios[-1]:.2f}x over {len(ratios)} pairs (goal >= 1.8x); median samples/s "
                  f"{statistics.median(p[0] for p in pairs):.0f} vs {statistics.median(p[1] for p in pairs):.0f}; "
                  f"{stamp()}")
        if args.skip_memory:
            return

        memory = {"hidden_size": 16, "num_layers": 1, "epochs": 1, "max_steps": 2, "loader": "memory",
                  "multiplier": args.multiplier}
        print(f"\n2. per-worker peak RSS, memory loader, {args.multiplier}x "
              f"({args.multiplier * 821:,} windows, {args.multiplier * 821 * 1200 / 2**20:.0f} MiB materialized)")
        peaks: dict[int, list[float]] = {1: [], 2: [], 4: []}
        helds: dict[int, list[float]] = {1: [], 2: [], 4: []}
        for repeat in range(args.memory_runs):  # interleaved N = 1, 2, 4, then again
            for workers in peaks:
                out = run(workers, memory, root, f"mem-{workers}-{repeat}")
                peaks[workers].append(max(out["peak"]) / 2**20)
                helds[workers].append(out["metrics"]["data_resident_bytes"] / 2**20)
            print(f"   run {repeat + 1}: peak RSS per worker " + ", ".join(
                f"N={n} {peaks[n][-1]:.0f} MiB" for n in peaks) + f"; {stamp()}")
        base = statistics.median(helds[1])
        for workers in peaks:
            share = base / statistics.median(helds[workers])
            print(f"   N={workers}: peak RSS per worker {spread(peaks[workers], '{:.0f}', ' MiB')}; data held by "
                  f"rank 0 {spread(helds[workers], '{:.1f}', ' MiB')} = 1/{share:.2f} of N=1")


if __name__ == "__main__":
    main()
