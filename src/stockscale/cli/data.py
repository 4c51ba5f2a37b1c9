"""`stockscale data`: write a scaled dataset (N noisy replicas as shards), describe one."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stockscale.bounds import MAX_MULTIPLIER, MAX_SEED
from stockscale.cli.parser import Parser, int_at_least, non_negative_float, positive_int

if TYPE_CHECKING:
    from stockscale.config import TrainConfig
    from stockscale.data.windows import PooledData


def cmd_data_scale(args: argparse.Namespace) -> int:
    from stockscale.config import build_train_config
    from stockscale.console import log
    from stockscale.data.dataset import prepare_from_config
    from stockscale.data.replicas import ReplicaSpec
    from stockscale.data.shards import source_record, write_dataset
    from stockscale.data.windows import PooledData
    from stockscale.locks import beside_lock

    values = {"source": args.source, "tickers": args.tickers, "start": args.start, "end": args.end,
              "multiplier": args.multiplier, "noise": args.noise, "seed": args.seed}
    cfg = build_train_config({k: v for k, v in values.items() if v is not None}, "flags")
    prepared = prepare_from_config(cfg)
    if isinstance(prepared, PooledData):
        return _scale_pooled(args, cfg, prepared)
    out = args.out or Path("datasets") / f"{cfg.source.split(':', 1)[-1].lower()}-x{cfg.multiplier}"
    spec = ReplicaSpec(prepared.train_series, cfg.multiplier, cfg.noise, cfg.seed,
                       price_std=prepared.stats.price_std)
    log(f"writing {cfg.multiplier} replicas ({spec.total_windows} training windows) to {out}")

    with beside_lock(out, "stockscale data scale"):  # one writer per --out
        manifest = write_dataset(prepared, spec, source_record(cfg, prepared), out, _shard_progress)
    print_dataset_info(out, manifest)
    return 0


def _shard_progress(done: int, total: int) -> None:
    from stockscale.console import log

    if done == total or done % max(1, total // 10) == 0:
        log(f"shard {done}/{total}")


def _scale_pooled(args: argparse.Namespace, cfg: TrainConfig, pooled: PooledData) -> int:
    """Several tickers: shards that hold whole tickers (data/ticker_shards.py), named in the manifest."""
    from stockscale.console import log
    from stockscale.data.ticker_shards import pooled_source_record, pooled_specs, write_pooled_dataset
    from stockscale.locks import beside_lock

    kind, _, rest = cfg.source.partition(":")
    name = Path(rest).stem.lower() if kind in ("csv", "csv-dir") else rest.lower().replace(",", "-")
    out = args.out or Path("datasets") / f"{name}-x{cfg.multiplier}"
    for warning in pooled.warnings():
        log(warning)
    specs = pooled_specs(pooled, cfg.multiplier, cfg.noise, cfg.seed)
    label = " SYNTHETIC" if pooled.synthetic else ""
    log(f"writing {cfg.multiplier} replicas of {len(specs)}{label} tickers "
        f"({sum(spec.total_windows for spec in specs)} training windows) to {out}")
    with beside_lock(out, "stockscale data scale"):  # one writer per --out
        manifest = write_pooled_dataset(pooled, specs, pooled_source_record(cfg, pooled), out, _shard_progress)
    print_dataset_info(out, manifest)
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from stockscale.console import log
    from stockscale.data.synthetic import write_synthetic_csv

    write_synthetic_csv(args.out, args.tickers, args.days, args.seed)
    log(f"wrote {args.tickers} SYNTHETIC tickers x {args.days} days (geometric Brownian motion, seed {args.seed}) "
        f"to {args.out}, marked by {args.out.name}.synthetic.json")
    return 0


def cmd_data_info(args: argparse.Namespace) -> int:
    from stockscale.data.shards import read_manifest

    print_dataset_info(args.directory, read_manifest(args.directory))
    return 0


def print_dataset_info(directory: Path, manifest: dict[str, Any]) -> None:
    from stockscale.config import format_size
    from stockscale.console import log
    from stockscale.data.shards import disk_bytes

    source = manifest["source"]
    log(f"dataset        {directory}")
    log(f"source         {source['spec']} {source['start']}..{source['end']}")
    log(f"multiplier     {manifest['multiplier']} (noise {manifest['noise']}, seed {manifest['seed']})")
    every = " of every ticker" if manifest.get("tickers") else ""
    log(f"train windows  {manifest['train_windows']:,} ({manifest['windows_per_replica']} per replica{every})")
    log(f"shards         {len(manifest['shards'])}")
    tickers = manifest.get("tickers")
    if tickers:
        from stockscale.data.sources import is_synthetic

        label = " SYNTHETIC" if is_synthetic(source["spec"]) else ""
        log(f"tickers        {_ticker_line(tickers, label)}")
    log(f"on disk        {format_size(disk_bytes(directory, manifest))}")
    log(f"materialized   {format_size(manifest['materialized_bytes'])} as float32 windows [N, 60, 5]")


def _ticker_line(tickers: list[dict[str, Any]], label: str, shown: int = 8) -> str:
    """`N tickers, whole ones per shard: A (shard 0), B (shards 1-2), ...`: which shard holds which ticker."""
    def one(record: dict[str, Any]) -> str:
        first, count = record["first_shard"], record["shards"]
        where = f"shard {first}" if count == 1 else f"shards {first}-{first + count - 1}"
        return f"{record['ticker']} ({where}, {record['train_days']} training days)"

    names = [one(record) for record in tickers[:shown]]
    more = f", ... {len(tickers) - shown} more" if len(tickers) > shown else ""
    return f"{len(tickers)}{label}, each shard one ticker's replicas: {', '.join(names)}{more}"


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """`stockscale data ACTION`: scale, info."""
    from stockscale.config import field_help

    data = commands.add_parser("data", help="scaled datasets: write one, describe one")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", parser_class=Parser, required=True,
                                        help="`stockscale data ACTION --help` lists its flags")
    scale = data_commands.add_parser("scale", help="write N noisy replicas of the training series as shards")
    scale.add_argument("--multiplier", type=positive_int("--multiplier", MAX_MULTIPLIER), required=True,
                       help="number of replicas of the training series (replica 0 is the original)")
    scale.add_argument("--seed", type=int_at_least("--seed", 0, MAX_SEED - 1), help=field_help("seed"))
    scale.add_argument("--noise", type=non_negative_float("--noise", 100.0), help=field_help("noise"))
    scale.add_argument("--source", help=field_help("source"))
    scale.add_argument("--tickers", help=field_help("tickers"))
    scale.add_argument("--start", help=field_help("start"))
    scale.add_argument("--end", help=field_help("end"))
    scale.add_argument("--out", type=Path, help="dataset directory (default datasets/<ticker>-x<N>)")
    scale.set_defaults(handler=cmd_data_scale)
    synth = data_commands.add_parser("synth", help="write a SYNTHETIC long-format CSV of N tickers (geometric "
                                     "Brownian motion) in the all_stocks_5yr layout, for tests and benchmarks")
    synth.add_argument("--tickers", type=positive_int("--tickers", 100_000), required=True, help="tickers")
    synth.add_argument("--days", type=int_at_least("--days", 2, 100_000), required=True, help="trading days")
    synth.add_argument("--seed", type=int_at_least("--seed", 0, MAX_SEED - 1), default=0, help="random seed")
    synth.add_argument("--out", type=Path, required=True, help="the CSV file to write")
    synth.set_defaults(handler=cmd_data_synth)
    info = data_commands.add_parser("info", help="summarize a dataset directory")
    info.add_argument("directory", type=Path, help="a dataset directory written by `stockscale data scale`")
    info.set_defaults(handler=cmd_data_info)
