"""Start-up cost of a fresh training process (issue 13): `stockscale train --max-steps 1 --epochs 1` against
`python -c "import torch"`, and where one short run's seconds go.

Goal: the train command's wall time at most 1.5x that of importing torch. Both commands run as fresh
processes, interleaved (so drift in the machine's load hits both alike), `--repeats` times each after one
warm-up of each (which also fills the base-series cache, as any earlier run would); the ratio is of the
medians. CPU seconds (user + system) are shown beside the wall times: on a machine shared with other work
they move less than wall time. The phases come from the run's own `phase_seconds` (metrics.json):
start-up is the process's age when train() began (interpreter, imports, config); "write and exit" is the
rest of the measured wall time.

Usage: python benchmarks/startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = [sys.executable, "-m", "stockscale", "train", "--max-steps", "1", "--epochs", "1"]
IMPORT_TORCH = [sys.executable, "-c", "import torch"]
PHASES = {"startup": "start-up: interpreter, imports, config", "setup": "seed, threads, device",
          "data": "data preparation", "model": "model + optimizer construction", "train": "training (1 step)",
          "evaluate": "evaluation (val and test)"}


def timed(argv: list[str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system of the child) and stdout of one fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import torch  # only for its version; the timed runs are fresh processes

    load = os.getloadavg()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start")
    torch_runs, train_runs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.repeats + 1):
            torch_run = timed(IMPORT_TORCH)
            train_run = timed([*TRAIN, "--out", str(Path(tmp) / f"run-{index}")])
            if index:  # the first pair is the warm-up
                torch_runs.append(torch_run)
                train_runs.append(train_run)
    torch_wall = statistics.median(run[0] for run in torch_runs)
    train_wall = statistics.median(run[0] for run in train_runs)
    torch_cpu = statistics.median(run[1] for run in torch_runs)
    train_cpu = statistics.median(run[1] for run in train_runs)
    load = os.getloadavg()
    print(f"median of {args.repeats} fresh processes each (interleaved), load average {load[0]:.2f} at the end:")
    print(f"  python -c 'import torch'                        : {torch_wall:6.2f} s wall  {torch_cpu:6.2f} s CPU")
    print(f"  stockscale train --max-steps 1 --epochs 1       : {train_wall:6.2f} s wall  {train_cpu:6.2f} s CPU")
    print(f"  ratio train / import torch                      : {train_wall / torch_wall:6.2f} x wall "
          f"{train_cpu / torch_cpu:6.2f} x CPU   (goal <= 1.5x wall)")

    wall, _, stdout = sorted(train_runs, key=lambda run: run[0])[len(train_runs) // 2]  # the median run
    metrics = json.loads(stdout.strip().splitlines()[-1])
    phases = metrics.get("phase_seconds")
    if phases is None:
        print("phases: not recorded by this version of stockscale (no phase_seconds in its metrics)")
        return
    print(f"phases of the median run ({wall:.2f} s wall):")
    accounted = 0.0
    for key, text in PHASES.items():
        value = phases.get(key)
        if value is None:
            print(f"  {text:<42} not measured on this platform")
            continue
        accounted += value
        print(f"  {text:<42} {value:6.2f} s  {value / wall * 100:5.1f} %")
    rest = wall - accounted
    print(f"  {'write the run directory, exit':<42} {rest:6.2f} s  {rest / wall * 100:5.1f} %")


if __name__ == "__main__":
    main()
