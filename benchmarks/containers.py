"""Containers against processes (issue 10), from real runs through the docker and local launchers:

1. start-up of one trial: the wall time of a 1-step training run as a container against the same run as a
   local process, and the ratio;
2. DDP samples/s: 4 containers (Master + 3 Workers on the run's own network) against 4 local processes, same
   settings and threads (goal: containers >= 0.9x processes);
3. the image's size (goal: at most 1.2 GB).

Needs a running engine and the image (deploy/build-image.sh --offline).
Both parts run container and process side by side, --runs times; the figures are the medians (of the
runs' ratios, too) with their range.

Usage: python benchmarks/containers.py [--steps 150] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
from pathlib import Path

import psutil
from _spread import spread, stamp

from stockscale.config import build_train_config
from stockscale.launch.docker import DockerRunner, connect_engine
from stockscale.launch.local import LocalRunner
from stockscale.launch.runner import Runner, TrainJob
from stockscale.worker import RunMetrics


def run(launcher: Runner, job: TrainJob) -> tuple[float, RunMetrics]:
    result = launcher.run(job)
    if result.status != "success" or result.metrics is None:
        raise SystemExit(f"{launcher.name} {job.name}: {result.status} {result.detail}")
    return result.wall_seconds, result.metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    engine = connect_engine()
    version = engine.version()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM; engine {version.get('Platform', {}).get('Name', '')}"
          f" {version.get('Version')}; containers and processes share this machine; {stamp()}")
    containers = DockerRunner(run_prefix="bench")
    launchers: dict[str, Runner] = {"process": LocalRunner(), "container": containers}
    tiny = build_train_config({"epochs": 1, "max_steps": 1, "hidden_size": 16, "num_layers": 1})
    speed = build_train_config({"hidden_size": 128, "num_layers": 2, "batch_size": 64, "epochs": 1000,
                                "max_steps": args.steps, "multiplier": 4})
    starts: dict[str, list[float]] = {name: [] for name in launchers}
    rates: dict[str, list[float]] = {name: [] for name in launchers}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for repeat in range(args.runs + 1):  # the first start of each is a warm-up (page cache, image layers)
            for name, launcher in launchers.items():
                job = TrainJob(name=f"start-{name}-{repeat}", config=tiny, run_dir=root / f"start-{name}-{repeat}",
                               threads=1)
                seconds = run(launcher, job)[0]
                if repeat:
                    starts[name].append(seconds)
        for repeat in range(args.runs):
            for name, launcher in launchers.items():
                job = TrainJob(name=f"ddp-{name}-{repeat}", config=speed, run_dir=root / f"ddp-{name}-{repeat}",
                               workers=4, threads=1)
                rates[name].append(run(launcher, job)[1]["samples_per_second"])
            print(f"   run {repeat + 1}: DDP 4 containers {rates['container'][-1]:.0f}, 4 processes "
                  f"{rates['process'][-1]:.0f} samples/s; {stamp()}")
    print(f"\n1. one trial, 1 step of a tiny LSTM, wall time ({args.runs} runs each, interleaved)")
    for name, times in starts.items():
        print(f"   {name:<9}: {spread(times, unit=' s')}")
    start_ratios = [c / p for c, p in zip(starts["container"], starts["process"], strict=True)]
    print(f"   container / process: {spread(start_ratios, unit='x')}")
    print(f"\n2. DDP, 4 workers x 1 thread, hidden 128, 2 layers, batch 64 per worker, {args.steps} steps")
    print(f"   4 processes : {spread(rates['process'], '{:.0f}', ' samples/s')}")
    print(f"   4 containers: {spread(rates['container'], '{:.0f}', ' samples/s')}")
    ratios = [c / p for c, p in zip(rates["container"], rates["process"], strict=True)]
    print(f"   containers / processes: {spread(ratios, unit='x')} (goal >= 0.9x)")

    image = engine.images.get(containers.spec.image)
    print(f"\n3. image {containers.spec.image}: {image.attrs['Size'] / 1e9:.2f} GB (goal <= 1.2 GB); "
          f"ended {stamp()}")


if __name__ == "__main__":
    main()
