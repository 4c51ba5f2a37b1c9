"""Containers against processes (issue 10), from real runs through the docker and local launchers:

1. start-up of one trial: the wall time of a 1-step training run as a container against the same run as a
   local process (median of --repeats each), and the ratio;
2. DDP samples/s: 4 containers (Master + 3 Workers on the run's own network) against 4 local processes, same
   settings and threads, one run each (goal: containers >= 0.9x processes);
3. the image's size (goal: at most 1.2 GB).

Needs a running engine and the image (deploy/build-image.sh --offline).
Usage: python benchmarks/containers.py [--steps 150] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
from pathlib import Path

import psutil

from stockscale.launch.docker import DockerRunner, connect_engine
from stockscale.launch.local import LocalRunner
from stockscale.launch.runner import Runner, TrainJob


def run(launcher: Runner, job: TrainJob) -> tuple[float, dict]:
    result = launcher.run(job)
    if result.status != "success" or result.metrics is None:
        raise SystemExit(f"{launcher.name} {job.name}: {result.status} {result.detail}")
    return result.wall_seconds, result.metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    engine = connect_engine()
    version = engine.version()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM; engine {version.get('Platform', {}).get('Name', '')}"
          f" {version.get('Version')}; containers and processes share this machine")
    launchers: dict[str, Runner] = {"process": LocalRunner(), "container": DockerRunner(run_prefix="bench")}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tiny = {"epochs": 1, "max_steps": 1, "hidden_size": 16, "num_layers": 1}
        starts: dict[str, list[float]] = {name: [] for name in launchers}
        for repeat in range(args.repeats):
            for name, launcher in launchers.items():
                job = TrainJob(name=f"start-{name}-{repeat}", config=tiny, run_dir=root / f"start-{name}-{repeat}",
                               threads=1)
                starts[name].append(run(launcher, job)[0])
        median = {name: statistics.median(times) for name, times in starts.items()}
        print(f"\n1. one trial, 1 step of a tiny LSTM, wall time (median of {args.repeats})")
        for name, seconds in median.items():
            print(f"   {name:<9}: {seconds:5.2f} s   (runs: {', '.join(f'{s:.2f}' for s in starts[name])})")
        print(f"   container / process: {median['container'] / median['process']:.2f}x")

        speed = {"hidden_size": 128, "num_layers": 2, "batch_size": 64, "epochs": 1000, "max_steps": args.steps,
                 "multiplier": 4}
        rates = {}
        for name, launcher in launchers.items():
            job = TrainJob(name=f"ddp-{name}", config=speed, run_dir=root / f"ddp-{name}", workers=4, threads=1)
            rates[name] = run(launcher, job)[1]["samples_per_second"]
        print(f"\n2. DDP, 4 workers x 1 thread, hidden 128, 2 layers, batch 64 per worker, {args.steps} steps")
        for name, rate in rates.items():
            print(f"   4 {name}es: {rate:8.0f} samples/s" if name == "process" else
                  f"   4 {name}s: {rate:8.0f} samples/s")
        print(f"   containers / processes: {rates['container'] / rates['process']:.2f}x (goal >= 0.9x)")

    image = engine.images.get(launchers["container"].spec.image)
    print(f"\n3. image {launchers['container'].spec.image}: {image.attrs['Size'] / 1e9:.2f} GB (goal <= 1.2 GB)")


if __name__ == "__main__":
    main()
