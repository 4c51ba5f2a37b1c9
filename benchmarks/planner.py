"""Planner benchmark (issue 20): predicted against measured, at limits that fit 8 workers in 24 GiB.

For each model size, the calibration is made (timed: the goal is at most 60 s per loader here), then every
(loader, world size) point is verified as `stockscale plan --verify` does: the predicted boundary probed by
the scale test's own boundary search (a hit: the measured bracket within one sqrt-2 step of the prediction),
the peak per worker at the largest success (a hit: within 10%), one full epoch (a hit: within 25%). The
whole error table is printed, misses included, and written to <out>/benchmark.json.

The full matrix (memory, lazy and stream at 1, 2, 4 and 8 workers, two model sizes) is heavy on a 2-core
machine; choose parts with the flags.

Usage: python benchmarks/planner.py [--loaders memory,lazy,stream] [--worlds 1,2,4,8] [--models 64x2,256x3]
       [--memory-limit 700MiB] [--time-steps 150] [--out results/plan/benchmark]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from stockscale.config import build_train_config, parse_size
from stockscale.data.dataset import prepare_from_config
from stockscale.data.windows import PreparedData
from stockscale.experiments.plan.calibration import ensure_calibration
from stockscale.experiments.plan.verify import format_verification, verify_point, write_verification
from stockscale.launch.local import LocalRunner

EIGHT_IN_24_GIB = 3 * 2**30  # the largest per-worker limit that fits 8 workers in 24 GiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loaders", default="memory,lazy,stream")
    parser.add_argument("--worlds", default="1,2,4,8")
    parser.add_argument("--models", default="64x2,256x3", help="HIDDENxLAYERS, comma-separated")
    parser.add_argument("--memory-limit", default="700MiB")
    parser.add_argument("--out", type=Path, default=Path("results/plan/benchmark"))
    parser.add_argument("--time-steps", type=int, default=150, help="steps per worker of the epoch-time run")
    args = parser.parse_args()
    limit = parse_size(args.memory_limit)
    if limit > EIGHT_IN_24_GIB:
        parser.error(f"--memory-limit {args.memory_limit} does not fit 8 workers in 24 GiB")
    loaders = args.loaders.split(",")
    worlds = [int(w) for w in args.worlds.split(",")]
    print(f"planner benchmark: loaders {loaders}, worlds {worlds}, models {args.models}, limit {args.memory_limit}; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    points, calibration_seconds = [], {}
    launcher = LocalRunner(log_dir=args.out / "logs")
    for text in args.models.split(","):
        hidden, layers = (int(part) for part in text.split("x"))
        cfg = build_train_config({"hidden_size": hidden, "num_layers": layers, "loader": loaders[0]})
        prepared = prepare_from_config(cfg)
        if not isinstance(prepared, PreparedData):
            raise SystemExit("the planner benchmark calibrates on one ticker (the bundled AAPL)")
        folder = args.out / f"calibration-{text}"
        shutil.rmtree(folder, ignore_errors=True)
        started = time.perf_counter()
        calibration = ensure_calibration(cfg, loaders, folder, True, launcher, prepared.train_windows,
                                         prepared.train_end, on_event=lambda line: print(line, flush=True))
        total = time.perf_counter() - started
        for loader, entry in calibration.loaders.items():
            calibration_seconds[f"{text}/{loader}"] = entry.seconds
            print(f"calibration {text} {loader}: {entry.seconds:.1f} s ({'within' if entry.seconds <= 60 else 'OVER'} "
                  f"60 s); layout {entry.layout_bytes_per_window:.1f} B/window, measured "
                  f"{entry.measured_bytes_per_window:.1f}", flush=True)
        print(f"calibration {text}: {total:.1f} s for {len(loaders)} loader(s)", flush=True)
        for loader in loaders:
            for world in worlds:
                points.append(verify_point(calibration, cfg, loader, world, limit, launcher, args.out / text,
                                           time_steps=args.time_steps, on_event=lambda line: print(line, flush=True)))
                write_verification(args.out / "benchmark.json", points, limit, calibration_seconds)
    print(format_verification(points))
    hits = {name: sum(1 for p in points if getattr(p, f"{name}_hit")) for name in ("boundary", "peak", "epoch")}
    print(f"hits of {len(points)} points: boundary {hits['boundary']}, peak {hits['peak']}, epoch {hits['epoch']}; "
          f"load average {os.getloadavg()[0]:.2f}; results: {args.out / 'benchmark.json'}")


if __name__ == "__main__":
    main()
