"""Search-strategy figures (issue 14), from real runs on this machine:

1. **Time to the grid's best.** The full grid (18 configs) against TPE with ASHA pruning over the same space
   restricted to the grid's values, same machine, same run, same epochs. Figure: the seconds TPE+ASHA took
   until a finished trial came within 1% of the grid's best validation loss, against the grid's whole time
   (the grid only knows its best at its end). Goal: at most 0.5x. Random search is run beside them.
2. **Per-trial overhead, warm against cold.** The same parallel search with fresh processes per trial
   (LocalRunner) and with long-lived workers (WarmRunner): mean wall time minus training-loop time.
   Goal: warm at most 0.5 s.

The searches' summaries are kept under --out (hp_search_grid, hp_search_random, hp_search_tpe_asha), so
`stockscale compare --results <out>` draws the best-so-far plot from them.

Usage: python benchmarks/search_strategies.py [--out results-strategies] [--epochs 6] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from pathlib import Path
from statistics import mean

from stockscale.experiments.search import DEFAULT_SPACE, SearchSettings, run_search
from stockscale.launch.local import LocalRunner

GRID = DEFAULT_SPACE  # the search's own 18 configs


def warm_launcher():
    from stockscale.launch.warm import WarmRunner

    return WarmRunner()


def search(out: Path, strategy: str, pruner: str, trials: int | None, epochs: int, workers: int, threads: int,
           launcher) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    settings = SearchSettings(backend="parallel", parallel=workers, space=dict(GRID), strategy=strategy,
                              trials=trials, pruner=pruner, train={"epochs": epochs}, threads_per_trial=threads)
    return run_search(settings, launcher, out).document()


def time_to_reach(summary: dict, target: float, tolerance: float = 0.01) -> float | None:
    """Seconds from the search's launch until a finished trial's loss was within `tolerance` of `target`."""
    start = summary.get("launched_at") or min(trial["start_time"] for trial in summary["results"])
    hits = [trial["end_time"] - start for trial in summary["results"] if trial["status"] == "success"
            and trial["val_loss"] is not None and trial["val_loss"] <= target * (1 + tolerance)]
    return min(hits) if hits else None


def overhead(summary: dict) -> list[float]:
    return [trial["wall_seconds"] - trial["train_seconds"] for trial in summary["results"]
            if trial["status"] == "success" and trial.get("train_seconds") is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results-strategies"))
    parser.add_argument("--epochs", type=int, default=6, help="epochs per trial (ASHA's rungs: 1, 3, 9, ...)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--overhead-trials", type=int, default=12)
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    threads = max(1, cpus // args.workers)
    load = os.getloadavg()[0]
    print(f"machine: {platform.node()} {platform.machine()}, {cpus} cores, load {load:.1f}; grid {GRID}, "
          f"{args.epochs} epochs, {args.workers} trials at once x {threads} thread(s), warm workers")

    grid = search(args.out / "hp_search_grid", "grid", "none", None, args.epochs, args.workers, threads,
                  warm_launcher())
    best = grid["best"]["val_loss"]
    grid_time = grid["total_wall_seconds"]
    near = sum(trial["val_loss"] <= best * 1.01 for trial in grid["results"] if trial["status"] == "success")
    print(f"grid:       {len(grid['results'])} trials in {grid_time:6.1f} s, best val_loss {best:.4f} "
          f"({near} of {len(grid['results'])} configs within 1% of it)")
    for folder, strategy, pruner in (("hp_search_tpe_asha", "tpe", "asha"), ("hp_search_random", "random", "none")):
        started = time.monotonic()
        summary = search(args.out / folder, strategy, pruner, len(grid["results"]), args.epochs, args.workers,
                         threads, warm_launcher())
        reached, exact = time_to_reach(summary, best), time_to_reach(summary, best, 0.0)

        def ratio(seconds: float | None) -> str:
            return "not reached" if seconds is None else f"{seconds:.1f} s = {seconds / grid_time:.2f}x the grid's time"

        print(f"{strategy + '+' + pruner if pruner != 'none' else strategy:11} {len(summary['results'])} trials "
              f"({summary.get('pruned', 0)} pruned) in {time.monotonic() - started:6.1f} s, best "
              f"{summary['best']['val_loss']:.4f}; within 1% of the grid's best after {ratio(reached)}"
              + (" (goal <= 0.5x)" if strategy == "tpe" else "") + f"; the grid's best or better after {ratio(exact)}")

    n = args.overhead_trials
    small = {"lr": [1e-3], "hidden_size": [16, 32], "num_layers": [1]}
    for name, launcher in (("cold (a process per trial)", LocalRunner()), ("warm (long-lived workers)",
                                                                             warm_launcher())):
        out = args.out / "overhead"
        shutil.rmtree(out, ignore_errors=True)
        settings = SearchSettings(backend="parallel", parallel=args.workers, space=dict(small), strategy="random",
                                  trials=n, train={"epochs": 1, "max_steps": 20}, threads_per_trial=threads)
        values = overhead(run_search(settings, launcher, out).document())
        print(f"per-trial overhead, {name}: mean {mean(values):.2f} s, min {min(values):.2f} s, max "
              f"{max(values):.2f} s over {len(values)} trials (wall minus training loop; goal warm <= 0.5 s)")
    shutil.rmtree(args.out / "overhead", ignore_errors=True)


if __name__ == "__main__":
    main()
