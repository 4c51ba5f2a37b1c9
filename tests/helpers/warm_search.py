"""A small warm search for the signal tests: two long trials on WarmRunner, Ctrl-C/SIGTERM handled as the
CLI handles them. Prints {"workers": [pids]} once both trials are training, then waits to be stopped."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import psutil

from stockscale.config import build_train_config
from stockscale.launch.runner import TrainJob
from stockscale.launch.warm import WarmRunner
from stockscale.supervision import terminate_as_interrupt


def main() -> int:
    out = Path(sys.argv[1])
    told = threading.Event()

    def on_line(_rank: int, line: str) -> None:
        workers = [child.pid for child in psutil.Process().children(recursive=True)
                   if "stockscale.launch.warm_worker" in " ".join(child.cmdline())]
        if len(workers) == 2 and '"event": "epoch"' in line and not told.is_set():
            told.set()
            print(json.dumps({"workers": workers}), flush=True)

    config = {"epochs": 1000, "hidden_size": 8, "num_layers": 1, "batch_size": 256, "device": "cpu"}
    jobs = [TrainJob(name=f"t{i}", config=build_train_config(config), run_dir=out / f"t{i}", threads=1,
                     memory_limit=1024**3)
            for i in range(4)]
    try:
        with terminate_as_interrupt():
            WarmRunner(on_line=on_line, grace_seconds=2.0).run_many(jobs, parallel=2)
    except KeyboardInterrupt:
        print(json.dumps({"interrupted": True}), flush=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
