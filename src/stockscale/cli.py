"""The command line: parse, validate, call the library, turn its errors into one-line messages.

Heavy imports (torch, numpy, matplotlib, the kubernetes client) happen inside the commands that need them,
so `stockscale --help` answers at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from stockscale.errors import InputError, StockscaleError

EXIT_INPUT = 2
EXIT_MEMORY = 3  # a worker that raised MemoryError: the launcher reports it as oom
EXIT_INTERRUPTED = 130


class UsageError(InputError):
    """A flag argparse refused."""


class Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so every bad flag is one line, exit 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


# ------------------------------------------------------------------------------------------------ flags

# TrainConfig fields and their flags: every field has one, named after it (a YAML key = a flag = a search
# parameter). Values stay strings here; the config model validates them and names the flag on error.
TRAIN_FLAGS: dict[str, str] = {
    "source": "bundled:TICKER (default bundled:AAPL), csv:PATH or yahoo:TICKER (optional extra)",
    "start": "first date, YYYY-MM-DD (default: five years before the bundled series ends)",
    "end": "last date, YYYY-MM-DD",
    "train_frac": "training share of the days (default 0.70)",
    "val_frac": "validation share of the days (default 0.15)",
    "multiplier": "grow the training data to N noisy replicas (default 1)",
    "noise": "replica noise sigma in normalized units (default 0.01)",
    "data": "train on a dataset directory written by `stockscale data scale`",
    "loader": "memory | lazy | stream: how training data is held (default lazy)",
    "hidden_size": "LSTM hidden size (default 64)",
    "num_layers": "LSTM layers (default 2)",
    "dropout": "dropout between LSTM layers (default 0.2)",
    "lr": "Adam learning rate (default 0.001)",
    "batch_size": "batch size per worker (default 64)",
    "epochs": "epochs (default 10)",
    "max_steps": "stop after this many optimizer steps",
    "seed": "random seed (default 42)",
    "device": "auto | cpu | cuda (default auto: CUDA when present)",
    "threads": "torch threads per process",
}


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def add_train_flags(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--config", type=Path, help="YAML file of training settings (flags override it)")
    for field, text in TRAIN_FLAGS.items():
        if field not in skip:
            group.add_argument(flag(field), dest=field, metavar=field.upper(), help=text)


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {field: getattr(args, field) for field in TRAIN_FLAGS if getattr(args, field, None) is not None}


def load_config(args: argparse.Namespace, extra: dict[str, Any] | None = None):  # -> TrainConfig
    from stockscale.config import load_train_config

    overrides = {**train_overrides(args), **(extra or {})}
    return load_train_config(args.config, overrides, flags={key: flag(key) for key in overrides})


def positive_int(what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            kind = "not an integer" if _is_float(text) else "not a number"
            raise argparse.ArgumentTypeError(f"{what} {text!r} is {kind}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{what} must be at least 1, not {value}")
        return value

    return parse


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def non_negative_float(what: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} {text!r} is not a number") from None
        if value < 0 or value != value:
            raise argparse.ArgumentTypeError(f"{what} must not be negative, not {text}")
        return value

    return parse


def size(text: str) -> int:
    from stockscale.config import parse_size

    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def default_run_dir(prefix: str = "train") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{stamp}-{prefix}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


# ------------------------------------------------------------------------------------------------ train


def cmd_train(args: argparse.Namespace) -> int:
    from stockscale.distributed import DistEnv

    cfg = load_config(args)
    out = args.out or default_run_dir()
    env = DistEnv.from_environ()
    if args.workers > 1 or args.memory_limit is not None:
        if env.is_distributed:
            raise InputError("--workers/--memory-limit launch workers; this process is already a worker "
                             f"(WORLD_SIZE={env.world_size} in the environment)")
        return train_with_launcher(cfg, out, args)
    return train_here(cfg, out, env)


def train_here(cfg: Any, out: Path, env: Any) -> int:
    """Train in this process (one process, or one rank when the environment says so)."""
    from stockscale.console import RichTrainProgress, train_progress
    from stockscale.train import train

    progress = train_progress() if env.is_main else None
    if out.exists() and env.is_main:
        raise InputError(f"run directory {out} already exists")
    try:
        result = train(cfg, out, progress, env)
    except MemoryError:
        print(json.dumps({"status": "oom", "detail": "MemoryError", "rank": env.rank}), flush=True)
        return EXIT_MEMORY
    finally:
        if isinstance(progress, RichTrainProgress):
            progress.close()
    if env.is_main:
        print_run_summary(result)
    print(json.dumps(result_line(result)), flush=True)
    return 0


def result_line(metrics: dict[str, Any]) -> dict[str, Any]:
    """The final stdout line: the metrics without the per-epoch history (that is in history.json)."""
    return {key: value for key, value in metrics.items() if key != "history"}


def print_run_summary(metrics: dict[str, Any]) -> None:
    from stockscale.console import log

    def row(name: str, m: dict[str, Any]) -> str:
        direction = m.get("directional_accuracy")
        direction_text = f"{direction * 100:5.1f}%" if direction is not None else "    - "
        return (f"  {name:<12} RMSE ${m['rmse']:7.3f}  MAE ${m['mae']:7.3f}  MAPE {m['mape']:5.2f}%  "
                f"direction {direction_text}")

    test, base = metrics["test"], metrics["baseline"]["test"]
    verdict = "beats" if test["rmse"] < base["rmse"] else "does not beat"
    log(f"test set: {test['windows']} days, {metrics['data']['source']}, dollars (split-adjusted)")
    log(row("LSTM", test))
    log(row("persistence", base))
    log(f"  the LSTM {verdict} the persistence baseline (tomorrow = today) on RMSE")
    log(f"{metrics['train_samples']} training windows, {metrics['steps']} steps, "
        f"{metrics['samples_per_second']:.0f} samples/s, peak RSS {metrics['peak_rss_bytes'] / 2**20:.0f} MiB, "
        f"{metrics['wall_seconds']:.1f}s")
    log(f"run directory: {metrics['run_dir']}")


def train_with_launcher(cfg: Any, out: Path, args: argparse.Namespace) -> int:
    """Workers in child processes (an emulated cluster, or one limited process) through the local launcher."""
    from stockscale.console import log
    from stockscale.launch.base import TrainJob
    from stockscale.launch.local import LocalLauncher
    from stockscale.limits import check_limit

    if args.memory_limit is not None:
        check_limit(args.memory_limit)
    if out.exists():
        raise InputError(f"run directory {out} already exists")

    def relay(rank: int, line: str) -> None:
        if rank == 0 and not line.startswith("{"):
            log(line)

    job = TrainJob(name=out.name, config=cfg.to_dict(), run_dir=out, workers=args.workers,
                   memory_limit=args.memory_limit, threads=cfg.threads, timeout=args.timeout)
    result = LocalLauncher(on_line=relay).run(job)
    if result.status != "success" or result.metrics is None:
        raise WorkerRunFailed(f"training failed: {result.status}: {result.detail}")
    print(json.dumps(result.metrics), flush=True)
    return 0


class WorkerRunFailed(StockscaleError):
    exit_code = 1


# ------------------------------------------------------------------------------------------------- data


def cmd_data_scale(args: argparse.Namespace) -> int:
    from stockscale.config import build_train_config
    from stockscale.console import log
    from stockscale.data.dataset import prepare_from_config, source_record
    from stockscale.data.scaled import ReplicaSpec, write_dataset

    values = {"source": args.source, "start": args.start, "end": args.end, "multiplier": args.multiplier,
              "noise": args.noise, "seed": args.seed}
    cfg = build_train_config({k: v for k, v in values.items() if v is not None}, "flags")
    out = args.out or Path("datasets") / f"{cfg.source.split(':', 1)[-1].lower()}-x{cfg.multiplier}"
    prepared = prepare_from_config(cfg)
    spec = ReplicaSpec(prepared.train_series, cfg.multiplier, cfg.noise, cfg.seed)
    log(f"writing {cfg.multiplier} replicas ({spec.total_windows} training windows) to {out}")

    def on_shard(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) == 0:
            log(f"shard {done}/{total}")

    manifest = write_dataset(prepared, spec, source_record(cfg, prepared), out, on_shard)
    print_dataset_info(out, manifest)
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from stockscale.data.scaled import read_manifest

    print_dataset_info(args.directory, read_manifest(args.directory))
    return 0


def print_dataset_info(directory: Path, manifest: dict[str, Any]) -> None:
    from stockscale.config import format_size
    from stockscale.console import log
    from stockscale.data.scaled import disk_bytes

    source = manifest["source"]
    log(f"dataset        {directory}")
    log(f"source         {source['spec']} {source['start']}..{source['end']}")
    log(f"multiplier     {manifest['multiplier']} (noise {manifest['noise']}, seed {manifest['seed']})")
    log(f"train windows  {manifest['train_windows']:,} ({manifest['windows_per_replica']} per replica)")
    log(f"shards         {len(manifest['shards'])}")
    log(f"on disk        {format_size(disk_bytes(directory, manifest))}")
    log(f"materialized   {format_size(manifest['materialized_bytes'])} as float32 windows [N, 60, 5]")


# ------------------------------------------------------------------------------------------------ parser


def build_parser() -> Parser:
    parser = Parser(prog="stockscale", description="What a cluster gives over one machine when training an "
                    "LSTM stock model: dataset scale and hyperparameter search, measured.")
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    train = commands.add_parser("train", help="train the LSTM (one process, N local workers, or Kubernetes)")
    add_train_flags(train)
    train.add_argument("--out", type=Path, help="run directory (default runs/<time>-train)")
    run = train.add_argument_group("where it runs")
    run.add_argument("--workers", type=positive_int("--workers"), default=1,
                     help="DDP workers: local processes with a PyTorchJob's environment (default 1)")
    run.add_argument("--memory-limit", type=size, help="memory limit per worker: 512MiB, 2GiB, 4Gi")
    run.add_argument("--timeout", type=non_negative_float("--timeout"), help="seconds before the run is stopped")
    train.set_defaults(handler=cmd_train)

    data = commands.add_parser("data", help="scaled datasets: write one, describe one")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", parser_class=Parser, required=True)
    scale = data_commands.add_parser("scale", help="write N noisy replicas of the training series as shards")
    scale.add_argument("--multiplier", type=positive_int("--multiplier"), required=True)
    scale.add_argument("--seed", type=positive_int_or_zero("--seed"))
    scale.add_argument("--noise", type=non_negative_float("--noise"))
    scale.add_argument("--source", help=TRAIN_FLAGS["source"])
    scale.add_argument("--start", help=TRAIN_FLAGS["start"])
    scale.add_argument("--end", help=TRAIN_FLAGS["end"])
    scale.add_argument("--out", type=Path, help="dataset directory (default datasets/<ticker>-x<N>)")
    scale.set_defaults(handler=cmd_data_scale)
    info = data_commands.add_parser("info", help="summarize a dataset directory")
    info.add_argument("directory", type=Path)
    info.set_defaults(handler=cmd_data_info)
    return parser


def positive_int_or_zero(what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} {text!r} is not an integer") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"{what} must not be negative, not {value}")
        return value

    return parse


def _version() -> str:
    from stockscale import __version__

    return f"stockscale {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "handler", None) is None:
            parser.print_help()
            return EXIT_INPUT
        return args.handler(args)
    except StockscaleError as error:
        print(f"stockscale: error: {error}", file=sys.stderr, flush=True)
        return error.exit_code
    except KeyboardInterrupt:
        print("stockscale: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
