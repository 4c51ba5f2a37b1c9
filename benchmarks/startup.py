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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _spread import spread

TRAIN = [sys.executable, "-m", "stockscale", "train", "--max-steps", "1", "--epochs", "1"]
IMPORT_TORCH = [sys.executable, "-c", "import torch"]
CHEAP = ["--baselines", "cheap"]  # the same run without the ridge baseline (and its scikit-learn import)
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
    torch_runs, train_runs, cheap_runs = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.repeats + 1):
            torch_run = timed(IMPORT_TORCH)
            train_run = timed([*TRAIN, "--out", str(Path(tmp) / f"run-{index}")])
            cheap_run = timed([*TRAIN, *CHEAP, "--out", str(Path(tmp) / f"cheap-{index}")])
            if index:  # the first triple is the warm-up
                torch_runs.append(torch_run)
                train_runs.append(train_run)
                cheap_runs.append(cheap_run)
    load = os.getloadavg()
    print(f"{args.repeats} fresh processes each (interleaved), medians with their range, load average "
          f"{load[0]:.2f} at the end:")
    rows = (("python -c 'import torch'", torch_runs), ("stockscale train --max-steps 1 --epochs 1", train_runs),
            ("  the same with --baselines cheap", cheap_runs))
    for label, runs in rows:
        print(f"  {label:<44}: wall {spread([run[0] for run in runs], unit=' s')}; "
              f"CPU {spread([run[1] for run in runs], unit=' s')}")
    for label, runs in rows[1:]:
        ratios = [run[0] / torch[0] for run, torch in zip(runs, torch_runs, strict=True)]
        print(f"  ratio {label.strip():<38}/ import torch: {spread(ratios, unit='x')} wall (goal <= 1.5x)")

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
