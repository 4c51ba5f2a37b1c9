"""`stockscale data`: write a scaled dataset (N noisy replicas as shards), describe one."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stockscale.bounds import MAX_MULTIPLIER, MAX_SEED
from stockscale.cli.parser import Parser, int_at_least, non_negative_float, positive_int


def cmd_data_scale(args: argparse.Namespace) -> int:
    from stockscale.config import build_train_config
    from stockscale.console import log
    from stockscale.data.dataset import prepare_from_config
    from stockscale.data.replicas import ReplicaSpec
    from stockscale.data.shards import source_record, write_dataset
    from stockscale.locks import beside_lock

    values = {"source": args.source, "start": args.start, "end": args.end, "multiplier": args.multiplier,
              "noise": args.noise, "seed": args.seed}
    cfg = build_train_config({k: v for k, v in values.items() if v is not None}, "flags")
    out = args.out or Path("datasets") / f"{cfg.source.split(':', 1)[-1].lower()}-x{cfg.multiplier}"
    prepared = prepare_from_config(cfg)
    if not hasattr(prepared, "train_series"):
        from stockscale.errors import InputError

        raise InputError(f"data scale: source {cfg.source} holds several tickers; writing their shards is not "
                         "built yet (train on it directly with --loader memory or lazy)")
    spec = ReplicaSpec(prepared.train_series, cfg.multiplier, cfg.noise, cfg.seed,
                       price_std=prepared.stats.price_std)
    log(f"writing {cfg.multiplier} replicas ({spec.total_windows} training windows) to {out}")

    def on_shard(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) == 0:
            log(f"shard {done}/{total}")

    with beside_lock(out, "stockscale data scale"):  # one writer per --out
        manifest = write_dataset(prepared, spec, source_record(cfg, prepared), out, on_shard)
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
    log(f"train windows  {manifest['train_windows']:,} ({manifest['windows_per_replica']} per replica)")
    log(f"shards         {len(manifest['shards'])}")
    log(f"on disk        {format_size(disk_bytes(directory, manifest))}")
    log(f"materialized   {format_size(manifest['materialized_bytes'])} as float32 windows [N, 60, 5]")


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
