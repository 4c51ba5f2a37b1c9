"""`stockscale evaluate`: the walk-forward evaluation (experiments/evaluate.py), its flags and its handler."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from stockscale.bounds import MAX_WORKERS
from stockscale.cli.experiments import _threads, experiment_train_overrides
from stockscale.cli.parser import add_train_flags, flag_renamed, modernise, non_negative_float, positive_int

if TYPE_CHECKING:
    from stockscale.launch.runner import JobResult


def add_parsers(commands: argparse._SubParsersAction) -> None:
    from stockscale.experiments.evaluate_settings import EvaluateSettings

    defaults = EvaluateSettings()
    evaluate = commands.add_parser("evaluate", help="walk-forward evaluation: the training over rolling origins "
                                   "and seeds, every model beside the baselines, a Diebold-Mariano test")
    evaluate.add_argument("--origins", type=positive_int("--origins", 100), default=defaults.origins,
                          help=f"rolling origins: spans as long as the configured one, each ending one test period "
                          f"earlier than the next (default {defaults.origins})")
    evaluate.add_argument("--seeds", type=positive_int("--seeds", 100), default=defaults.seeds,
                          help=f"seeds per origin: --seed, --seed + 1, ... (default {defaults.seeds})")
    evaluate.add_argument("--parallel", type=positive_int("--parallel", MAX_WORKERS),
                          help="runs at once on this machine (default 1)")
    evaluate.add_argument("--workers", type=positive_int("--workers", MAX_WORKERS),
                          help="the older spelling of --parallel (deprecated: --workers is DDP ranks elsewhere)")
    evaluate.add_argument("--timeout", type=non_negative_float("--timeout"), help="seconds per run (default: none)")
    evaluate.add_argument("--out", type=Path, help="results folder (default results/evaluate)")
    add_train_flags(evaluate, skip=("data", "checkpoint_dir"))
    evaluate.set_defaults(handler=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from stockscale.console import log
    from stockscale.experiments.evaluate import FOLDER, run_evaluation
    from stockscale.experiments.evaluate_settings import EvaluateSettings
    from stockscale.experiments.report.evaluation_table import format_evaluation_record
    from stockscale.launch.registry import RunnerOptions, make_runner

    modernise(args, [flag_renamed("workers", "parallel", why="runs at once; --workers is DDP ranks")])
    train = experiment_train_overrides(args, ())
    settings = EvaluateSettings(origins=args.origins, seeds=args.seeds, train=train, parallel=args.parallel or 1,
                                threads_per_run=_threads(train), timeout=args.timeout)
    out = args.out or Path("results") / FOLDER
    total = settings.origins * settings.seeds
    log(f"evaluate: {settings.origins} origins x {settings.seeds} seeds = {total} runs, {settings.parallel} at a "
        f"time -> {out}/evaluation.json")
    done = [0]

    def on_result(name: str, result: JobResult) -> None:
        done[0] += 1
        test = (result.metrics or {}).get("test") or {}
        rmse = f", test RMSE ${test['rmse']:.3f}" if "rmse" in test else ""
        log(f"  [{done[0]}/{total}] {name}: {result.status}{rmse}" + (f" ({result.detail})" if result.detail else ""))

    record = run_evaluation(settings, make_runner("local", RunnerOptions(warm=True, log_dir=out / "logs")), out,
                            on_result)
    for line in format_evaluation_record(record):
        log(line)
    log(f"evaluation: {out / 'evaluation.json'}")
    return 0
