"""`stockscale plan`: the sizing question answered from a calibrated model, and (`--verify`) checked against
measured boundaries. The library (stockscale.experiments.plan) does the work; this module parses the flags,
prints the answer and maps bad input to one line and exit 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from stockscale.bounds import MAX_MULTIPLIER, MAX_WORKERS
from stockscale.cli.parser import add_train_flags, load_config, positive_int, size
from stockscale.errors import InputError

COST_FLAGS = {
    "node_cpus": "vCPUs per node, billed (default 2)",
    "price_vcpu_hour": "$ per vCPU-hour (default 0.04)",
    "price_gib_hour": "$ per GiB-hour (default 0.005)",
    "pod_startup_seconds": "seconds of pod start-up per trial: an assumption (default 20)",
    "trials": "trials of the search whose cost is shown (default 18)",
    "price_gib": "$ per GiB of memory when buying a machine (default 5)",
    "price_core": "$ per core when buying a machine (default 50)",
    "amortization_years": "years a bought machine is written off over (default 3)",
    "utilization": "share of the time a bought machine is used, 0..1 (default 0.5)",
}


def add_plan_parser(commands: argparse._SubParsersAction) -> None:
    plan = commands.add_parser("plan", help="how many workers of what size, how long, what cost: predicted from a "
                                            "calibration, checked with --verify")
    plan.add_argument("--memory-limit", type=size, required=True, help="memory limit per worker (e.g. 700MiB)")
    plan.add_argument("--workers", type=positive_int("--workers", MAX_WORKERS),
                      help="the largest multiplier this many workers hold under the limit")
    plan.add_argument("--multiplier", type=positive_int("--multiplier", MAX_MULTIPLIER),
                      help="the fewest workers this multiplier needs, and the peak per worker")
    plan.add_argument("--loader", choices=("memory", "lazy", "stream"), default="memory",
                      help="how workers hold the data (default memory, as the scale test)")
    plan.add_argument("--json", action="store_true", help="print one JSON object (docs/results.md)")
    plan.add_argument("--calibration", type=Path,
                      help="calibration folder (default results/calibration/<model digest>, made when absent or "
                           "stale; a folder named here that holds another model's calibration is refused)")
    plan.add_argument("--recalibrate", action="store_true", help="make the calibration again even when valid")
    plan.add_argument("--verify", action="store_true",
                      help="measure the predicted boundary with the scale test's boundary search and print "
                           "predicted against measured (writes <out>/verification.json)")
    plan.add_argument("--verify-workers", help="--verify: comma-separated world sizes (default: --workers)")
    plan.add_argument("--verify-loaders", help="--verify: comma-separated loaders (default: --loader)")
    plan.add_argument("--out", type=Path, default=Path("results/plan"), help="--verify's results folder")
    cost = plan.add_argument_group("cost (assumptions, printed beside the figures)")
    for name, text in COST_FLAGS.items():
        cost.add_argument("--" + name.replace("_", "-"), dest=name, help=text)
    add_train_flags(plan, skip=("multiplier", "loader", "data", "checkpoint_dir", "max_steps"))
    plan.set_defaults(handler=cmd_plan)


def cost_settings(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from stockscale.experiments.plan.cost import CostSettings

    values = {name: getattr(args, name) for name in COST_FLAGS if getattr(args, name) is not None}
    try:
        return CostSettings.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else "cost"
        raise InputError(f"--{name.replace('_', '-')}: {first['msg']}, not {values.get(name)!r}") from None


def _progress(as_json: bool) -> Any:
    from stockscale.console import log

    return lambda text: log(text, sys.stderr if as_json else None)


def cmd_plan(args: argparse.Namespace) -> int:
    from stockscale.data.dataset import dataset_size
    from stockscale.experiments.plan.calibration import calibration_key, default_folder, ensure_calibration
    from stockscale.experiments.plan.planner import format_plan, make_plan
    from stockscale.files import to_json
    from stockscale.launch.local import LocalRunner
    from stockscale.limits import check_limit

    if args.verify:
        return cmd_verify(args)
    if (args.workers is None) == (args.multiplier is None):
        raise InputError("give --workers K (the largest multiplier K workers hold) or --multiplier M (the fewest "
                         "workers M needs), not both")
    cfg = load_config(args, {"loader": args.loader})
    limit = check_limit(args.memory_limit)
    assert limit is not None
    cost = cost_settings(args)
    key = calibration_key(cfg)
    folder = args.calibration or default_folder(key)
    size = dataset_size(cfg)  # one ticker or several pooled (--source, --tickers)
    on_event = _progress(args.json)
    calibration = ensure_calibration(cfg, [args.loader], folder, args.calibration is not None, LocalRunner(),
                                     size.windows, size.train_days, args.recalibrate, on_event)
    info = {"folder": str(folder), "made_at": calibration.loaders[args.loader].made_at,
            "seconds": calibration.loaders[args.loader].seconds,
            "ran": [run.name for run in calibration.loaders[args.loader].runs]}
    plan = make_plan(calibration, args.loader, limit, cfg.epochs, cost, workers=args.workers,
                     multiplier=args.multiplier, calibration_info=info)
    print(to_json(plan.model_dump(mode="json"), indent=None) if args.json else format_plan(plan), flush=True)
    return 0


def _list(text: str | None, default: list[Any], parse: Any, what: str) -> list[Any]:
    if text is None:
        return default
    try:
        values = [parse(part.strip()) for part in text.split(",") if part.strip()]
    except (ValueError, argparse.ArgumentTypeError) as error:
        raise InputError(f"{what}: {error}") from None
    if not values:
        raise InputError(f"{what} needs at least one value")
    return values


def _loader_name(text: str) -> str:
    if text not in ("memory", "lazy", "stream"):
        raise ValueError(f"{text!r} is not memory, lazy or stream")
    return text


def cmd_verify(args: argparse.Namespace) -> int:
    """Predict, then measure with the scale test's boundary search, per loader and world size."""
    from stockscale.console import log
    from stockscale.data.dataset import dataset_size
    from stockscale.experiments.plan.calibration import calibration_key, default_folder, ensure_calibration
    from stockscale.experiments.plan.verify import format_verification, verify_point, write_verification
    from stockscale.launch.local import LocalRunner
    from stockscale.limits import check_limit

    if args.multiplier is not None:
        raise InputError("--verify measures the boundary for --verify-workers (or --workers); it takes no --multiplier")
    loaders = _list(args.verify_loaders, [args.loader], _loader_name, "--verify-loaders")
    worlds = _list(args.verify_workers, [args.workers or 1], positive_int("value", MAX_WORKERS), "--verify-workers")
    cfg = load_config(args, {"loader": loaders[0]})
    limit = check_limit(args.memory_limit)
    assert limit is not None
    folder = args.calibration or default_folder(calibration_key(cfg))
    size = dataset_size(cfg)  # one ticker or several pooled (--source, --tickers)
    launcher = LocalRunner(log_dir=args.out / "logs")
    calibration = ensure_calibration(cfg, loaders, folder, args.calibration is not None, launcher,
                                     size.windows, size.train_days, args.recalibrate, log)
    points = []
    for loader in loaders:
        for world in worlds:
            points.append(verify_point(calibration, cfg, loader, world, limit, launcher, args.out, on_event=log))
    path = args.out / "verification.json"
    write_verification(path, points, limit, {name: entry.seconds for name, entry in calibration.loaders.items()})
    log(format_verification(points))
    log(f"results: {path}")
    return 0


def add_parsers(commands: argparse._SubParsersAction) -> None:
    add_plan_parser(commands)
