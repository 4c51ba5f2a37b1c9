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

Each of --runs runs does the grid, then TPE+ASHA, then random (side by side); the figures are the medians
over the runs with their range. The last run's summaries stay under --out.

Usage: python benchmarks/search_strategies.py [--out results-strategies] [--epochs 6] [--workers 2] [--runs 5]
       [--skip-random] [--skip-overhead]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time
from pathlib import Path
from statistics import mean

from _spread import spread, stamp

from stockscale.experiments.search import DEFAULT_SPACE, SearchSettings, run_search
from stockscale.launch.local import LocalRunner
from stockscale.worker import JsonValue

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
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--skip-random", action="store_true", help="only the grid and TPE+ASHA")
    parser.add_argument("--skip-overhead", action="store_true", help="leave out part 2 (warm_overhead.py has it)")
    args = parser.parse_args()
    cpus = os.cpu_count() or 1
    threads = max(1, cpus // args.workers)
    print(f"machine: {platform.node()} {platform.machine()}, {cpus} cores; grid {GRID}, {args.epochs} epochs, "
          f"{args.workers} trials at once x {threads} thread(s), warm workers; {stamp()}")
    others = (("hp_search_tpe_asha", "tpe", "asha"),) + (() if args.skip_random else
                                                        (("hp_search_random", "random", "none"),))
    figures: dict[str, list[float]] = {}
    misses: dict[str, int] = {}

    def keep(key: str, value: float | None) -> None:
        if value is None:
            misses[key] = misses.get(key, 0) + 1
        else:
            figures.setdefault(key, []).append(value)

    for run in range(args.runs):
        grid = search(args.out / "hp_search_grid", "grid", "none", None, args.epochs, args.workers, threads,
                      warm_launcher())
        best = grid["best"]["val_loss"]
        grid_time = grid["total_wall_seconds"]
        near = sum(trial["val_loss"] <= best * 1.01 for trial in grid["results"] if trial["status"] == "success")
        keep("grid time", grid_time)
        keep("grid best", best)
        line = f"   run {run + 1}: grid {grid_time:.1f} s, best {best:.4f} ({near} of 18 within 1%)"
        for folder, strategy, pruner in others:
            started = time.monotonic()
            summary = search(args.out / folder, strategy, pruner, len(grid["results"]), args.epochs, args.workers,
                             threads, warm_launcher())
            took = time.monotonic() - started
            reached = time_to_reach(summary, best)
            keep(f"{strategy} time", took)
            keep(f"{strategy} / grid", took / grid_time)
            keep(f"{strategy} reach / grid", None if reached is None else reached / grid_time)
            keep(f"{strategy} pruned", summary.get("pruned", 0))
            keep(f"{strategy} best", summary["best"]["val_loss"])
            line += (f"; {strategy} {took:.1f} s ({summary.get('pruned', 0)} pruned), best "
                     f"{summary['best']['val_loss']:.4f}, within 1% after "
                     + ("not reached" if reached is None else f"{reached:.1f} s"))
        print(line + f"; {stamp()}")

    def show(key: str, fmt: str = "{:.2f}", unit: str = "") -> str:
        missed = f", not reached in {misses[key]} run(s)" if key in misses else ""
        return spread(figures.get(key, []), fmt, unit) + missed

    print(f"grid: {show('grid time', '{:.1f}', ' s')}; best val_loss {show('grid best', '{:.4f}')}")
    for _, strategy, pruner in others:
        name = strategy + ("+" + pruner if pruner != "none" else "")
        print(f"{name}: {show(f'{strategy} time', '{:.1f}', ' s')} = {show(f'{strategy} / grid', unit='x')} the "
              f"grid's time, {show(f'{strategy} pruned', '{:.0f}')} pruned, best {show(f'{strategy} best', '{:.4f}')}")
        print(f"   within 1% of the grid's best after {show(f'{strategy} reach / grid', unit='x')} the grid's time"
              + (" (goal <= 0.5x)" if strategy == "tpe" else ""))
    if args.skip_overhead:
        return

    n = args.overhead_trials
    small: dict[str, JsonValue] = {"lr": [1e-3], "hidden_size": [16, 32], "num_layers": [1]}
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
