"""The command line: parse, validate, call the library, turn its errors into one-line messages.

Heavy imports (torch, numpy, matplotlib, the kubernetes client) happen inside the commands that need them,
so `stockscale --help` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from stockscale.bounds import MAX_COUNT, MAX_MULTIPLIER, MAX_SECONDS, MAX_SEED, MAX_SIZE, MAX_WORKERS
from stockscale.errors import InputError, StockscaleError, WorkerFailure
from stockscale.worker import EXIT_INPUT, EXIT_INTERRUPTED, EXIT_MEMORY, result_line


class UsageError(InputError):
    """A flag argparse refused."""


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that shows each flag's default, unless the text already says it or there is none to show
    (argparse's ArgumentDefaultsHelpFormatter also prints "(default: None)" and "(default: False)")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if ("default" in text or not action.option_strings or default in (None, False, argparse.SUPPRESS)
                or isinstance(action, argparse._VersionAction)):
            return text
        shown = ",".join(map(str, default)) if isinstance(default, list | tuple) else str(default)
        return f"{text} (default {shown.replace('%', '%%')})"


class Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so every bad flag is one line, exit 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


# ------------------------------------------------------------------------------------------------ flags

# TrainConfig fields and their flags: every field has one, named after it (a YAML key = a flag = a search
# parameter). Values stay strings here; the config model validates them and names the flag on error.


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def train_fields() -> list[str]:
    """TrainConfig's fields, in order: each has a flag named after it (a YAML key = a flag = a search parameter)."""
    from stockscale.config import TrainConfig

    return list(TrainConfig.model_fields)


def add_train_flags(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    """One flag per TrainConfig field, its help and default taken from the field, so flags cannot drift from the
    config. Values stay strings here; the config model validates them (bounds included) and names the flag."""
    from stockscale.config import field_help

    group = parser.add_argument_group("training")
    group.add_argument("--config", type=Path, help="YAML file of training settings (flags override it)")
    for field in train_fields():
        if field not in skip:
            group.add_argument(flag(field), dest=field, metavar=field.upper(), help=field_help(field))


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {field: getattr(args, field) for field in train_fields() if getattr(args, field, None) is not None}


def load_config(args: argparse.Namespace, extra: dict[str, Any] | None = None):  # -> TrainConfig
    from stockscale.config import load_train_config

    overrides = {**train_overrides(args), **(extra or {})}
    return load_train_config(args.config, overrides, flags={key: flag(key) for key in overrides})


def _named(what: str) -> str:
    """The value's name for a parser's message: empty for a flag, which argparse already names
    ("argument --workers: must be at least 1, not 0"), so no message says the flag twice."""
    return "" if not what or what.startswith("-") else f"{what} "


def int_at_least(what: str, minimum: int, maximum: int = MAX_COUNT) -> Callable[[str], int]:
    """An argparse type: an integer in [minimum, maximum], with a message that says which rule the text broke."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            kind = "not an integer" if _is_float(text) else "not a number"
            raise argparse.ArgumentTypeError(f"{_named(what)}{text!r} is {kind}") from None
        if value < minimum:
            rule = f"must be at least {minimum}" if minimum else "must not be negative"
            raise argparse.ArgumentTypeError(f"{_named(what)}{rule}, not {value}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"{_named(what)}must be at most {maximum}, not {text}")
        return value

    return parse


def positive_int(what: str, maximum: int = MAX_COUNT) -> Callable[[str], int]:
    return int_at_least(what, 1, maximum)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def non_negative_float(what: str, maximum: float = MAX_SECONDS) -> Callable[[str], float]:
    """An argparse type: a finite number in [0, maximum] (inf and nan are refused)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{_named(what)}{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{_named(what)}must be a finite number, not {text}")
        if value < 0:
            raise argparse.ArgumentTypeError(f"{_named(what)}must not be negative, not {text}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"{_named(what)}must be at most {maximum:g}, not {text}")
        return value

    return parse


def size(text: str) -> int:
    from stockscale.config import parse_size

    try:
        value = parse_size(text)
    except (ValueError, OverflowError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if value > MAX_SIZE:
        raise argparse.ArgumentTypeError(f"size {text!r} is more than the maximum of 1 PiB")
    return value


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

    trial = None
    if args.trials is not None:
        from stockscale.config import read_trial

        trial = read_trial(args.trials, os.environ.get("JOB_COMPLETION_INDEX"))
    cfg = load_config(args, trial)
    if args.backend == "kubernetes":
        return train_on_kubernetes(cfg, args)
    refuse_kubernetes_only_flags(args)
    out = args.out or default_run_dir()
    env = DistEnv.from_environ()
    if args.backend == "docker" or args.workers > 1 or args.memory_limit is not None:
        if env.is_distributed:
            raise InputError("--workers/--memory-limit launch workers; this process is already a worker "
                             f"(WORLD_SIZE={env.world_size} in the environment)")
        return train_with_launcher(cfg, out, args)
    return train_here(cfg, out, env)


def train_here(cfg: Any, out: Path, env: Any) -> int:
    """Train in this process (one process, or one rank when the environment says so)."""
    from stockscale.console import RichTrainProgress, train_progress
    from stockscale.errors import TrainingDiverged
    from stockscale.train import train

    progress = train_progress() if env.is_main else None
    try:
        result = train(cfg, out, progress, env)
    except MemoryError:
        print(json.dumps({"status": "oom", "detail": "MemoryError", "rank": env.rank}), flush=True)
        return EXIT_MEMORY
    except TrainingDiverged as error:
        print(json.dumps({"status": "error", "detail": str(error), "rank": env.rank}), flush=True)
        raise
    finally:
        if isinstance(progress, RichTrainProgress):
            progress.close()
    if env.is_main:
        print_run_summary(result)
    print(result_line(result), flush=True)
    if env.is_distributed:
        # Gloo's worker threads can still hold work objects when the interpreter finalizes, which aborts the
        # process now and then (pytorch/pytorch#190489) and would turn a finished rank into a failed one.
        # Everything is written and flushed: leave without finalization.
        sys.stderr.flush()
        os._exit(0)
    return 0


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
    """Workers in child processes or containers (an emulated cluster, or one limited process)."""
    from stockscale.console import log
    from stockscale.launch.base import TrainJob

    if out.exists():
        raise InputError(f"run directory {out} already exists")

    def relay(rank: int, line: str) -> None:
        if rank == 0 and not line.startswith("{"):
            log(line)

    job = TrainJob(name=out.name, config=cfg.to_dict(), run_dir=out, workers=args.workers,
                   memory_limit=args.memory_limit, threads=cfg.threads, timeout=args.timeout)
    result = choose_launcher(args, "train", on_line=relay, on_event=log).run(job)
    if result.status != "success" or result.metrics is None:
        raise WorkerFailure(f"training failed: {result.status}: {result.detail}")
    print(json.dumps(result.metrics), flush=True)
    return 0


# ------------------------------------------------------------------------------------------------- data


def cmd_data_scale(args: argparse.Namespace) -> int:
    from stockscale.config import build_train_config
    from stockscale.console import log
    from stockscale.data.dataset import prepare_from_config
    from stockscale.data.replicas import ReplicaSpec
    from stockscale.data.shards import source_record, write_dataset

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


# ------------------------------------------------------------------------------------------ experiments


def multipliers(text: str) -> list[int]:
    parse = positive_int("value", MAX_MULTIPLIER)
    values = [parse(part.strip()) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("needs at least one value, e.g. 1,10,50")
    return sorted(set(values))


def boundary_range(text: str) -> tuple[int, int]:
    """--search START:CEILING, two positive integers, START <= CEILING."""
    start_text, sep, ceiling_text = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"--search {text!r} is not START:CEILING, e.g. 100:5000")
    parse = positive_int("--search value")
    start, ceiling = parse(start_text.strip()), parse(ceiling_text.strip())
    if start > ceiling:
        raise argparse.ArgumentTypeError(f"--search start {start} is above the ceiling {ceiling}")
    return start, ceiling


def resolution(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--resolution {text!r} is not a number") from None
    if not 1 < value < math.inf:
        raise argparse.ArgumentTypeError(f"--resolution must be a finite number above 1, not {text}")
    return value


def experiment_train_overrides(args: argparse.Namespace, controlled: Sequence[str]) -> dict[str, Any]:
    """Training flags (and --config) that apply to every run of an experiment, validated once up front."""
    from stockscale.config import read_yaml_mapping

    values = read_yaml_mapping(args.config, "config file") if args.config is not None else {}
    values.update(train_overrides(args))
    for key in (*controlled, "checkpoint_dir"):  # experiments' runs are short and never resume
        values.pop(key, None)
    load_config(args)  # validates the file and the flags together, naming the culprit
    return values


def _threads(train: dict[str, Any]) -> int | None:
    """--threads (or the config's threads), taken out of the per-run overrides as the validated integer."""
    from stockscale.config import build_train_config

    value = train.pop("threads", None)
    return None if value is None else build_train_config({"threads": value}, "--threads").threads


def cmd_scale_test(args: argparse.Namespace) -> int:
    from stockscale.console import log
    from stockscale.experiments.results import scale_test_folder
    from stockscale.experiments.scale_test import (
        DEFAULT_MULTIPLIERS,
        BoundarySearch,
        ScaleTestSettings,
        format_table,
        run_scale_test,
    )
    from stockscale.files import prepare_results_dir
    from stockscale.launch.local import describe_limit
    from stockscale.limits import check_limit

    if args.mode == "local" and args.workers not in (None, 1):
        raise InputError(f"--mode local runs one process; --workers {args.workers} needs --mode cluster")
    if args.backend == "docker" and args.mode != "cluster":
        raise InputError("--backend docker runs the cluster side: use it with --mode cluster")
    workers = args.workers or (4 if args.mode == "cluster" else 1)
    if args.search is not None and (args.multipliers is not None or args.keep_going):
        raise InputError("--search finds the boundary itself; it does not take --multipliers or --keep-going")
    if args.resolution is not None and args.search is None:
        raise InputError("--resolution is for --search")
    search = None
    if args.search is not None:
        search = BoundarySearch(base=args.search[0], ceiling=args.search[1],
                                resolution=args.resolution or math.sqrt(2))
    check_limit(args.memory_limit)
    train = experiment_train_overrides(args, ("multiplier", "loader", "max_steps", "epochs"))
    settings = ScaleTestSettings(
        mode=args.mode, workers=workers, multipliers=[] if search else (args.multipliers or list(DEFAULT_MULTIPLIERS)),
        memory_limit=args.memory_limit, timeout=args.timeout, loader=args.loader, max_steps=args.max_steps,
        epochs=args.epochs, threads=_threads(train), train=train, keep_going=args.keep_going,
        search=search,
    )
    out = args.out or Path("results") / scale_test_folder(args.mode)
    prepare_results_dir(out, "results.json", "scale_test", (), clear=False)  # a file or unwritable: refused now
    sizes = (f"boundary search from {search.start}x up to {search.ceiling}x" if search else
             f"multipliers {','.join(map(str, settings.multipliers))}")
    log(f"scale test, {args.mode}: {sizes}, {workers} worker(s), "
        f"loader {args.loader}, limit {describe_limit(args.memory_limit, None)} -> {out}/results.json")

    def on_result(run: dict[str, Any]) -> None:
        peak = max(run["peak_rss_bytes"]) / 2**20 if run["peak_rss_bytes"] else 0
        log(f"  x{run['multiplier']}: {run['status']} in {run['wall_seconds']:.1f}s, peak {peak:.0f} MiB/worker"
            + (f" ({run['detail']})" if run["detail"] else ""))

    doc = run_scale_test(settings, choose_launcher(args, "scale", log_dir=out / "logs"), out, on_result)
    log(format_table(doc))
    log(f"results: {out / 'results.json'}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from stockscale.console import log
    from stockscale.experiments.results import SEARCH_FOLDERS
    from stockscale.experiments.search import (
        DEFAULT_EPOCHS,
        DEFAULT_SPACE,
        SearchSettings,
        format_summary,
        load_space,
        run_search,
    )
    from stockscale.experiments.space import grid_size, parse_space
    from stockscale.files import prepare_results_dir

    strategy = args.strategy or (args.k8s_algorithm if args.k8s_kind in ("optimizationjob", "katib") else "grid")
    if args.strategy and args.k8s_algorithm != "grid" and args.k8s_algorithm != args.strategy:
        raise InputError(f"--k8s-algorithm {args.k8s_algorithm} and --strategy {args.strategy} disagree: "
                         "--strategy alone says it")
    if strategy == "tpe" and args.k8s_kind == "optimizationjob":
        flag = "--strategy" if args.strategy else "--k8s-algorithm"
        raise InputError(f"{flag} tpe needs --k8s-kind katib or job: an OptimizationJob searches by grid or random")
    space = load_space(args.space) if args.space else parse_space(DEFAULT_SPACE, "space")
    cpus = os.cpu_count() or 1
    if args.backend == "sequential" and args.workers not in (None, 1):
        raise InputError(f"--backend sequential runs one trial at a time; --workers {args.workers} needs "
                         "--backend parallel")
    if strategy == "grid" and args.trials is not None:
        raise InputError("--trials is for --strategy random or tpe; a grid runs every combination")
    train = experiment_train_overrides(args, tuple(space))
    train.setdefault("epochs", DEFAULT_EPOCHS)
    threads = _threads(train)
    count = args.trials
    if strategy != "grid" and count is None and not args.strategy:
        count = grid_size(space)  # --k8s-algorithm random or tpe: as many points as the grid has
    settings = SearchSettings(backend=args.backend, workers=1, space=space, train=train, strategy=strategy,
                              trials=count, pruner=args.pruner, trial_timeout=args.trial_timeout,
                              resume=args.resume)
    trials = settings.trial_count
    if args.backend == "kubernetes":
        workers = args.workers or trials  # every trial at once, unless asked otherwise
        # pods default to their CPU limit
    else:
        workers = 1 if args.backend == "sequential" else (args.workers or cpus)
        threads = threads or max(1, cpus // workers)
    settings.workers, settings.threads_per_trial = workers, threads
    out = args.out or Path("results") / SEARCH_FOLDERS[args.backend]
    if args.backend != "kubernetes":
        refuse_kubernetes_only_flags(args)
    if not args.dry_run:
        prepare_results_dir(out, "summary.json", "hp_search", (), clear=False)  # a file or unwritable: refused now
    launcher = choose_launcher(args, "search", log_dir=out / "logs")
    if args.dry_run:
        from stockscale.experiments.dry_run import write_dry_run_marker
        from stockscale.experiments.search import trial_jobs

        written = launcher.write_search_manifests(trial_jobs(settings, out), workers, out)
        for path in written:
            log(f"wrote {path}")
        try:
            marker = write_dry_run_marker(out, "search", args.backend, written)
        except OSError as error:
            raise InputError(f"cannot write {out / 'dry_run.json'} ({error.strerror})") from None
        log(f"wrote {marker} (`stockscale compare` reports this folder as a dry run: nothing ran)")
        return 0
    how = "" if strategy == "grid" else f" ({strategy}, pruner {args.pruner})"
    log(f"search, {args.backend}{how}: {trials} trials, {workers} at a time, {threads or 'default'} thread(s) "
        f"each -> {out}/summary.json")
    done = [0]

    def on_result(entry: dict[str, Any]) -> None:
        done[0] += 1
        loss = f", val_loss {entry['val_loss']:.4f}" if entry["val_loss"] is not None else ""
        log(f"  [{done[0]}/{trials}] {entry['name']} {entry['config']}: {entry['status']} in "
            f"{entry['wall_seconds']:.1f}s{loss}" + (f" ({entry['detail']})" if entry["detail"] else ""))

    summary = on_cluster(launcher, lambda: run_search(settings, launcher, out, on_result))
    log(format_summary(summary))
    log(f"summary: {out / 'summary.json'}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from stockscale.experiments.projection import build_projection_settings
    from stockscale.experiments.report import format_report_text, write_report
    from stockscale.experiments.results import load_results

    settings = build_projection_settings({
        "nodes": args.nodes, "node_memory_bytes": args.node_memory, "node_cpus": args.node_cpus,
        "price_vcpu_hour": args.price_vcpu_hour, "price_gib_hour": args.price_gib_hour,
        "pod_startup_seconds": args.pod_startup,
    })
    results = load_results(args.results)
    print(format_report_text(results, settings), flush=True)
    report = write_report(results, args.out or args.results / "report", settings)
    print(f"report: {report}", flush=True)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from stockscale.console import log
    from stockscale.experiments.demo import run_demo

    out = args.out or Path("results")
    log(f"stockscale demo{' --quick' if args.quick else ''}: both comparisons on this machine -> {out}/")
    cluster = choose_launcher(args, "demo", log_dir=out / "logs") if args.backend == "docker" else None
    text, report = run_demo(out, args.quick, log, cluster)
    print(text, flush=True)
    log(f"report: {report}")
    return 0


# ------------------------------------------------------------------------------------------- kubernetes


def add_image_flags(parser: argparse.ArgumentParser,
                    title: str = "containers and kubernetes (--backend docker|kubernetes)") -> argparse._ArgumentGroup:
    group = parser.add_argument_group(title)
    group.add_argument("--k8s-config", type=Path, help="cluster spec YAML: image, namespace, sizes, PVC")
    group.add_argument("--image", help="container image (default stockscale:<version>, see deploy/build-image.sh)")
    return group


def add_k8s_flags(parser: argparse.ArgumentParser, run_flags: bool = True, connect: bool = True) -> None:
    """The cluster flags: with `run_flags`, a command that runs in containers or on Kubernetes with --backend;
    without `connect`, an offline command (k8s render) that takes the cluster spec but contacts nothing."""
    if run_flags:
        title = "containers and kubernetes (--backend docker|kubernetes)"
    else:
        title = "kubernetes cluster" if connect else "cluster spec (offline: nothing is contacted)"
    group = add_image_flags(parser, title)
    group.add_argument("--namespace", help="namespace (default stock-training)")
    if not connect:
        return
    group.add_argument("--kubeconfig", type=Path, help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, "
                       "or the in-cluster service account)")
    group.add_argument("--context", help="kubeconfig context")
    if run_flags:
        group.add_argument("--keep", action="store_true", help="keep finished objects on the cluster")
        group.add_argument("--dry-run", action="store_true", help="write the manifests to --out, submit nothing")
        group.add_argument("--startup-timeout", type=non_negative_float("--startup-timeout"), default=600.0,
                           help="seconds a pod may stay Pending (unscheduled, pulling its image) before the run "
                                "ends (default 600)")


def refuse_kubernetes_only_flags(args: argparse.Namespace) -> None:
    """--dry-run and --keep mean something only on a cluster; with a local backend they would be ignored."""
    if args.dry_run or args.keep:
        raise InputError("--dry-run and --keep are for --backend kubernetes")


def choose_launcher(args: argparse.Namespace, prefix: str, **options: Any) -> Any:
    """The one place a backend's name becomes a Launcher; everything after this goes through its interface
    (launch/base.py). local, sequential and parallel are processes here; docker, containers of the image here;
    kubernetes, a cluster."""
    backend = getattr(args, "backend", "local")
    if backend == "kubernetes":
        options.pop("log_dir", None)  # pod logs stay on the cluster (stockscale k8s logs RUN)
        more = {"kind": args.k8s_kind, "algorithm": getattr(args, "k8s_algorithm", None)}
        return kubernetes_launcher(args, prefix, **options, **{k: v for k, v in more.items() if v is not None})
    if backend == "docker":
        from stockscale.launch.docker import DockerLauncher

        return DockerLauncher(cluster_spec(args), run_prefix=prefix, **options)
    from stockscale.launch.local import LocalLauncher

    options.pop("on_event", None)
    return LocalLauncher(**options)


def cluster_spec(args: argparse.Namespace, **more: Any) -> Any:
    from stockscale.launch.kubernetes import load_cluster_spec

    overrides = {"image": args.image, "namespace": getattr(args, "namespace", None), **more}
    return load_cluster_spec(args.k8s_config, {k: v for k, v in overrides.items() if v is not None})


def kubernetes_launcher(args: argparse.Namespace, prefix: str, **options: Any) -> Any:
    from stockscale.console import log
    from stockscale.launch.kubernetes import KubernetesLauncher

    spec = cluster_spec(args)
    if hasattr(args, "startup_timeout"):  # a command that submits
        options["startup_timeout"] = args.startup_timeout
        if spec.image_warning():
            log(f"warning: {spec.image_warning()}")
    return KubernetesLauncher(spec, kubeconfig=args.kubeconfig, context=args.context,
                              run_prefix=prefix, keep=getattr(args, "keep", False), on_event=log, **options)


def on_cluster(launcher: Any, work: Callable[[], Any]) -> Any:
    """Run `work`; on Ctrl-C, offer to delete what was submitted to a cluster (a terminal is asked, a pipe is
    not); on an error, say how to delete what is still there. Launchers that clean up after themselves (local
    processes, containers) leave nothing to name."""
    from stockscale.console import log
    from stockscale.supervision import Terminated

    if not hasattr(launcher, "left_on_cluster"):
        return work()
    try:
        return work()
    except StockscaleError:
        if launcher.left_on_cluster():
            log(f"left on the cluster: {', '.join(launcher.left_on_cluster())}; remove with: "
                f"stockscale k8s delete {launcher.run_id}")
        raise
    except KeyboardInterrupt as stop:
        if launcher.left_on_cluster():
            log(f"interrupted; submitted: {', '.join(launcher.left_on_cluster())}")
            answer = ""
            if sys.stdin.isatty() and not isinstance(stop, Terminated):  # nobody to answer a kill
                answer = input(f"delete what run {launcher.run_id} submitted? [y/N] ").strip().lower()
            if answer in ("y", "yes"):
                deleted = launcher.delete_run()
                log(f"deleted {len(deleted)} object(s)")
            else:
                log(f"left on the cluster; remove with: stockscale k8s delete {launcher.run_id}")
        raise


def train_on_kubernetes(cfg: Any, args: argparse.Namespace) -> int:
    """Submit a PyTorchJob (Master + workers-1 Workers) or a Trainer v2 TrainJob (--k8s-kind trainjob), follow
    rank 0's log, collect its metrics."""
    from stockscale.console import log
    from stockscale.launch.base import TrainJob

    if args.trials is not None:
        raise InputError("--trials is what a search's pods run; use stockscale search --backend kubernetes")
    config = cfg.model_dump(mode="json", exclude_unset=True)
    job = TrainJob(name="train", config=config, run_dir=Path("train"), workers=args.workers,
                   memory_limit=args.memory_limit, threads=cfg.threads, timeout=args.timeout)
    launcher = choose_launcher(args, "train", on_line=log)
    if args.dry_run:
        out = args.out or Path("manifests") / launcher.run_id
        for path in launcher.write_run_manifests(job, out):
            log(f"wrote {path}")
        return 0

    def work() -> int:
        result = launcher.run(job)
        if result.status != "success" or result.metrics is None:
            raise WorkerFailure(f"training on the cluster failed: {result.status}: {result.detail}")
        print(json.dumps(result.metrics), flush=True)
        return 0

    return on_cluster(launcher, work)


def cmd_k8s_render(args: argparse.Namespace) -> int:
    from stockscale.console import log
    from stockscale.launch.kubernetes import render_defaults

    more = {"storage_class": args.storage_class, "pvc_size": args.pvc_size, "workers": args.workers,
            "multiplier": args.multiplier}
    spec = cluster_spec(args, **{k: v for k, v in more.items() if v is not None})
    for path in render_defaults(spec, args.out):
        log(f"wrote {path}")
    log(f"apply with: kubectl apply -k {args.out}")
    return 0


def cmd_k8s_status(args: argparse.Namespace) -> int:
    from stockscale.console import log

    launcher = kubernetes_launcher(args, "status")
    if args.run is None:
        runs = launcher.list_runs()
        log("\n".join(runs) if runs else f"no stockscale runs in namespace {launcher.namespace}")
        return 0
    objects = launcher.status(args.run)
    if not objects:
        raise InputError(f"no objects of run {args.run} in namespace {launcher.namespace}")
    for obj in objects:
        log(f"{obj.kind:<12} {obj.name:<50} {obj.state:<10} {obj.detail}")
    return 0


def cmd_k8s_logs(args: argparse.Namespace) -> int:
    launcher = kubernetes_launcher(args, "logs")
    pods = launcher.logs(args.run, lambda pod, line: print(f"[{pod}] {line}", flush=True), follow=args.follow,
                         pod=args.pod, trial=args.trial)
    if not pods:
        raise InputError(f"no pods of run {args.run} in namespace {launcher.namespace}")
    return 0


def cmd_k8s_delete(args: argparse.Namespace) -> int:
    from stockscale.console import log

    launcher = kubernetes_launcher(args, "delete")
    if not args.yes and sys.stdin.isatty():
        answer = input(f"delete every object of run {args.run} in {launcher.namespace}? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            log("nothing deleted")
            return 0
    deleted = launcher.delete_run(args.run)
    log("\n".join(f"deleted {name}" for name in deleted) if deleted else f"no objects of run {args.run}")
    return 0


# ------------------------------------------------------------------------------------------------ parser


def build_parser() -> Parser:
    from stockscale.config import field_help

    parser = Parser(prog="stockscale", description="What a cluster gives over one machine when training an "
                    "LSTM stock model: dataset scale and hyperparameter search, measured.")
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser,
                                     help="`stockscale COMMAND --help` lists its flags")

    train = commands.add_parser("train", help="train the LSTM (one process, N local workers, or Kubernetes)")
    add_train_flags(train)
    train.add_argument("--out", type=Path, help="run directory (default runs/<time>-train)")
    train.add_argument("--trials", type=Path, help="YAML list of config overrides; trains entry "
                       "$JOB_COMPLETION_INDEX (one pod of a Kubernetes Indexed Job)")
    run = train.add_argument_group("where it runs")
    run.add_argument("--workers", type=positive_int("--workers", MAX_WORKERS), default=1,
                     help="DDP workers: local processes with a PyTorchJob's environment (default 1)")
    run.add_argument("--memory-limit", type=size,
                     help="memory limit per worker: 512MiB, 2GiB, 4Gi (default: no limit)")
    run.add_argument("--timeout", type=non_negative_float("--timeout"),
                     help="seconds before the run is stopped (default: no limit)")
    run.add_argument("--backend", choices=("local", "docker", "kubernetes"), default="local",
                     help="local processes (default), containers of the image on this machine (docker or "
                          "podman), or a PyTorchJob/TrainJob on Kubernetes")
    run.add_argument("--k8s-kind", choices=("pytorchjob", "trainjob"), default="pytorchjob",
                     help="kubernetes: a Training Operator v1 PyTorchJob (default) or a Trainer v2 TrainJob")
    add_k8s_flags(train)
    train.set_defaults(handler=cmd_train)

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
    info = data_commands.add_parser("info", help="summarize a dataset directory")
    info.add_argument("directory", type=Path, help="a dataset directory written by `stockscale data scale`")
    info.set_defaults(handler=cmd_data_info)

    scale_test = commands.add_parser("scale-test", help="comparison 1: dataset scale, one process vs N workers")
    scale_test.add_argument("--mode", choices=("local", "cluster"), default="local",
                            help="local: one process; cluster: N workers (the emulated cluster)")
    scale_test.add_argument("--workers", type=positive_int("--workers", MAX_WORKERS),
                            help="workers in cluster mode (default 4)")
    scale_test.add_argument("--backend", choices=("local", "docker"), default="local",
                            help="cluster mode's workers: local processes (default) or containers of the image")
    scale_test.add_argument("--multipliers", type=multipliers,
                            help="comma-separated dataset multipliers, run as a grid (default 1,10,50,100,200)")
    scale_test.add_argument("--search", type=boundary_range, metavar="START:CEILING",
                            help="find the boundary instead: double from START (halve after a failure), never "
                            "above CEILING, then bisect between the last success and the first failure")
    scale_test.add_argument("--resolution", type=resolution,
                            help="--search tries only START x RESOLUTION^k and stops when the last success and the "
                            "first failure are neighbours (default 1.414: as fine as a sqrt-2 grid)")
    scale_test.add_argument("--memory-limit", type=size, default=2**30,
                            help="memory limit per process or worker (default 1GiB)")
    scale_test.add_argument("--timeout", type=non_negative_float("--timeout"), default=600.0,
                            help="seconds per run (default 600)")
    scale_test.add_argument("--loader", choices=("memory", "lazy", "stream"), default="memory",
                            help="how workers hold the data (default memory, as the original demonstration)")
    scale_test.add_argument("--max-steps", type=positive_int("--max-steps"), default=50,
                            help="optimizer steps per run (default 50: the data is loaded whole either way)")
    scale_test.add_argument("--epochs", type=positive_int("--epochs", 1_000_000), default=1,
                            help="epochs per run; --max-steps usually ends the run first")
    scale_test.add_argument("--keep-going", action="store_true",
                            help="grid: run every multiplier past an oom/timeout")
    scale_test.add_argument("--out", type=Path, help="results folder (default results/scale_test_<mode>)")
    add_train_flags(scale_test, skip=("multiplier", "loader", "max_steps", "epochs", "data", "checkpoint_dir"))
    add_image_flags(scale_test, "containers (--backend docker)")
    scale_test.set_defaults(handler=cmd_scale_test)

    search = commands.add_parser("search", help="comparison 2: the hyperparameter grid, sequential vs parallel")
    search.add_argument("--backend", choices=("sequential", "parallel", "docker", "kubernetes"), default="sequential",
                        help="sequential: one trial at a time with every core; parallel: --workers trials at "
                        "once on this machine; docker: --workers trials at once as containers of the image on this "
                        "machine (the Indexed Job's pods); kubernetes: Jobs on a cluster")
    search.add_argument("--workers", type=positive_int("--workers", MAX_WORKERS),
                        help="trials at once (default: parallel and docker, the number of cores; kubernetes, every "
                        "trial)")
    search.add_argument("--space", type=Path,
                        help="YAML space: a list of values per parameter, or a range in Katib's terms (type "
                        "double|int|categorical, min/max, log, choices); see docs/search.md (default: the 18 configs)")
    search.add_argument("--strategy", choices=("grid", "random", "tpe"),
                        help="grid: every combination of the lists (default); random, tpe: --trials points chosen "
                        "by Optuna's random or TPE sampler")
    search.add_argument("--trials", type=positive_int("--trials"), help="random and tpe: how many trials")
    search.add_argument("--pruner", choices=("none", "asha", "median"), default="none",
                        help="stop trials early by their validation loss after each epoch: asha (successive "
                        "halving), median, or none")
    search.add_argument("--trial-timeout", type=non_negative_float("--trial-timeout"),
                        help="seconds per trial (default: no limit)")
    search.add_argument("--resume", action="store_true",
                        help="keep trials already finished in --out with the same settings and continue the study")
    search.add_argument("--out", type=Path,
                        help="results folder (default results/hp_search_<local|parallel|docker|cloud>)")
    search.add_argument("--k8s-kind", choices=("job", "pytorchjob", "optimizationjob", "katib"), default="job",
                        help="kubernetes: one Indexed Job (default), one PyTorchJob per config, a Trainer v2 "
                             "OptimizationJob, or a Katib Experiment")
    search.add_argument("--k8s-algorithm", choices=("grid", "random", "tpe"), default="grid",
                        help="optimizationjob and katib: the older spelling of --strategy")
    add_train_flags(search, skip=("data", "checkpoint_dir"))
    add_k8s_flags(search)
    search.set_defaults(handler=cmd_search)

    compare = commands.add_parser("compare", help="the comparison report from whatever results exist")
    compare.add_argument("--results", type=Path, default=Path("results"), help="results folder (default results/)")
    compare.add_argument("--out", type=Path, help="report folder (default <results>/report)")
    projection = compare.add_argument_group("projection for a real cluster")
    projection.add_argument("--nodes", help="comma-separated node counts (default 1,2,4,8,18)")
    projection.add_argument("--node-memory", help="memory per node or worker (default 4Gi)")
    projection.add_argument("--node-cpus", help="vCPUs per node (default 2)")
    projection.add_argument("--price-vcpu-hour", help="$ per vCPU-hour (default 0.04)")
    projection.add_argument("--price-gib-hour", help="$ per GiB-hour (default 0.005)")
    projection.add_argument("--pod-startup", help="seconds of pod start-up per trial (default 20)")
    compare.set_defaults(handler=cmd_compare)

    demo = commands.add_parser("demo", help="everything: both comparisons on this machine, then the report")
    demo.add_argument("--quick", action="store_true",
                      help="a smaller grid, fewer workers and fewer steps: minutes rather than a quarter of an hour")
    demo.add_argument("--out", type=Path, help="results folder (default results/)")
    demo.add_argument("--backend", choices=("local", "docker"), default="local",
                      help="the cluster side (its scale test and the parallel search): local processes "
                           "(default) or containers of the image")
    add_image_flags(demo, "containers (--backend docker)")
    demo.set_defaults(handler=cmd_demo)

    k8s = commands.add_parser("k8s", help="Kubernetes: render manifests; status, logs, delete of a run")
    k8s_commands = k8s.add_subparsers(dest="k8s_command", metavar="ACTION", parser_class=Parser, required=True,
                                      help="`stockscale k8s ACTION --help` lists its flags")
    render = k8s_commands.add_parser("render", help="namespace, PVC and the training PyTorchJob as YAML")
    render.add_argument("--out", type=Path, required=True, help="folder for the YAML (kubectl apply -k DIR)")
    render.add_argument("--storage-class", help="storage class of the PVC")
    render.add_argument("--pvc-size", help="size of the PVC (default 5Gi)")
    render.add_argument("--workers", type=positive_int("--workers", MAX_WORKERS), help="DDP world size (default 4)")
    render.add_argument("--multiplier", type=positive_int("--multiplier", MAX_MULTIPLIER),
                        help="dataset multiplier (default 100)")
    add_k8s_flags(render, run_flags=False, connect=False)
    render.set_defaults(handler=cmd_k8s_render)
    status = k8s_commands.add_parser("status", help="the objects of a run (without RUN: the runs)")
    status.add_argument("run", nargs="?", metavar="RUN", help="a run id (as `k8s status` lists them)")
    add_k8s_flags(status, run_flags=False)
    status.set_defaults(handler=cmd_k8s_status)
    logs = k8s_commands.add_parser("logs", help="the pod logs of a run")
    logs.add_argument("run", metavar="RUN", help="a run id (as `k8s status` lists them)")
    logs.add_argument("--follow", action="store_true", help="keep printing new lines until the pods end")
    logs.add_argument("--pod", help="one pod only")
    logs.add_argument("--trial", type=int_at_least("--trial", 0), help="one search trial only")
    add_k8s_flags(logs, run_flags=False)
    logs.set_defaults(handler=cmd_k8s_logs)
    delete = k8s_commands.add_parser("delete", help="delete every object of a run")
    delete.add_argument("run", metavar="RUN", help="a run id (as `k8s status` lists them)")
    delete.add_argument("--yes", action="store_true", help="do not ask")
    add_k8s_flags(delete, run_flags=False)
    delete.set_defaults(handler=cmd_k8s_delete)
    return parser


def _version() -> str:
    from stockscale import __version__

    return f"stockscale {__version__}"


def leave_now(code: int) -> NoReturn:
    """End a finished `stockscale train` process without interpreter finalization.

    Tearing down an interpreter that has imported torch takes about half a second, and every scale-test probe
    and search trial is such a process. By now the run directory is written and closed, and the result line
    printed: flush the streams and leave. Only for a process started as `stockscale train` (main() without
    argv); a caller that passes argv, such as the tests, gets the exit code back.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more can reach the reader
            stream.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    from stockscale.supervision import Terminated, follow_parent, terminate_as_interrupt

    parser = build_parser()
    try:
        with terminate_as_interrupt():
            follow_parent()
            args = parser.parse_args(argv)
            if getattr(args, "handler", None) is None:
                parser.print_help()
                return EXIT_INPUT
            code = args.handler(args)
        if argv is None and args.command == "train":
            leave_now(code)
        return code
    except StockscaleError as error:
        print(f"stockscale: error: {error}", file=sys.stderr, flush=True)
        return error.exit_code
    except Terminated as stop:
        print(f"stockscale: terminated by {signal.Signals(stop.signum).name}", file=sys.stderr, flush=True)
        return 128 + stop.signum
    except KeyboardInterrupt:
        print("stockscale: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
