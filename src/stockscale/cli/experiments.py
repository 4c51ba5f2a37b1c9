"""The experiments: `stockscale scale-test` (comparison 1), `search` (comparison 2), `compare` (the report)
and `demo` (all of it). Each command's parser and handler sit together; the experiment itself is a library
call into stockscale.experiments, whose settings carry the defaults.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from stockscale.bounds import MAX_WORKERS
from stockscale.cli.k8s import add_image_flags, add_k8s_flags, on_cluster, refuse_kubernetes_only_flags
from stockscale.cli.launchers import choose_runner, here_backends
from stockscale.cli.parser import (
    add_train_flags,
    boundary_range,
    deprecation_notice,
    flag,
    load_config,
    multipliers,
    positive_float,
    positive_int,
    resolution,
    size,
    size_text,
)
from stockscale.cli.tracking import add_track_flag, open_track, pods_tracking_env
from stockscale.errors import InputError, SettingError
from stockscale.experiments.scale_settings import DEFAULT_MULTIPLIERS, BoundarySearch, ScaleTestSettings
from stockscale.launch.registry import BACKENDS

if TYPE_CHECKING:
    from stockscale.config import TrainOverrides
    from stockscale.experiments.results import ScaleRow, Trial

T = TypeVar("T")


def experiment_train_overrides(args: argparse.Namespace, controlled: Sequence[str]) -> TrainOverrides:
    """Training flags (and --config) that apply to every run of an experiment: validated once, together
    (naming the culprit), and given as the config's one serialisation (TrainConfig.overrides(): field names,
    so lr is `lr` here whichever way a config file spells it, and a searched lr replaces it)."""
    values = load_config(args).overrides()
    for key in (*controlled, "checkpoint_dir"):  # experiments' runs are short and never resume
        values.pop(key, None)
    return values


def _threads(train: TrainOverrides) -> int | None:
    """--threads (or the config's threads), taken out of the per-run overrides (validated with them)."""
    value = train.pop("threads", None)
    return value if isinstance(value, int) else None


# ------------------------------------------------------------------------------------------- scale test


def add_scale_test_parser(commands: argparse._SubParsersAction) -> None:
    """`stockscale scale-test`: dataset scale, one process against N workers. The defaults, shown in the help,
    are ScaleTestSettings' own."""
    defaults = ScaleTestSettings()
    scale_test = commands.add_parser("scale-test", help="comparison 1: dataset scale, one process vs N workers")
    scale_test.add_argument("--mode", choices=("local", "cluster"), default=defaults.mode,
                            help="local: one process; cluster: N workers (the emulated cluster)")
    scale_test.add_argument("--workers", type=positive_int("--workers", MAX_WORKERS),
                            help=f"workers in cluster mode (default {ScaleTestSettings.default_workers('cluster')})")
    scale_test.add_argument("--backend", choices=here_backends(), default="local",
                            help="cluster mode's workers: local processes (default) or containers of the image")
    scale_test.add_argument("--multipliers", type=multipliers,
                            help="comma-separated dataset multipliers, run as a grid "
                            f"(default {','.join(map(str, defaults.multipliers))})")
    scale_test.add_argument("--search", type=boundary_range, metavar="START:CEILING",
                            help="find the boundary instead: double from START (halve after a failure), never "
                            "above CEILING, then bisect between the last success and the first failure")
    scale_test.add_argument("--resolution", type=resolution,
                            help="--search tries only START x RESOLUTION^k and stops when the last success and the "
                            f"first failure are neighbours (default {BoundarySearch.resolution:.3f}: as fine as a "
                            "sqrt-2 grid)")
    scale_test.add_argument("--memory-limit", type=size, default=defaults.memory_limit,
                            help="memory limit per process or worker (default "
                            f"{size_text(defaults.memory_limit) if defaults.memory_limit else 'none'})")
    scale_test.add_argument("--timeout", type=positive_float("--timeout"), default=defaults.timeout,
                            help=f"seconds per run (default {defaults.timeout:g})")
    scale_test.add_argument("--loader", choices=("memory", "lazy", "stream"), default=defaults.loader,
                            help=f"how workers hold the data (default {defaults.loader}, as the original "
                            "demonstration)")
    scale_test.add_argument("--max-steps", type=positive_int("--max-steps"), default=defaults.max_steps,
                            help=f"optimizer steps per run (default {defaults.max_steps}: the data is loaded whole "
                            "either way)")
    scale_test.add_argument("--epochs", type=positive_int("--epochs", 1_000_000), default=defaults.epochs,
                            help="epochs per run; --max-steps usually ends the run first")
    scale_test.add_argument("--keep-going", action="store_true",
                            help="grid: run every multiplier past an oom/timeout")
    scale_test.add_argument("--out", type=Path, help="results folder (default results/scale_test_<mode>)")
    add_train_flags(scale_test, skip=("multiplier", "loader", "max_steps", "epochs", "data", "checkpoint_dir"))
    add_image_flags(scale_test, "containers (--backend docker)")
    add_track_flag(scale_test)
    scale_test.set_defaults(handler=cmd_scale_test)


def cmd_scale_test(args: argparse.Namespace) -> int:
    from stockscale.console import log
    from stockscale.experiments.results import scale_test_folder
    from stockscale.experiments.scale_test import format_table, run_scale_test
    from stockscale.files import prepare_results_dir
    from stockscale.launch.local import describe_limit

    workers = args.workers or ScaleTestSettings.default_workers(args.mode)
    if args.resolution is not None and args.search is None:  # a flag of the search's lattice, without one
        raise InputError("--resolution is for --search")
    search = None
    if args.search is not None:
        lattice = {} if args.resolution is None else {"resolution": args.resolution}
        search = BoundarySearch(base=args.search[0], ceiling=args.search[1], **lattice)
    grid = args.multipliers if args.multipliers is not None else [] if search else list(DEFAULT_MULTIPLIERS)
    train = experiment_train_overrides(args, ("multiplier", "loader", "max_steps", "epochs"))
    try:  # the settings check which go together (once); their message names the settings, here the flags
        settings = ScaleTestSettings(
            mode=args.mode, workers=workers, backend=args.backend, multipliers=grid,
            memory_limit=args.memory_limit, timeout=args.timeout, loader=args.loader, max_steps=args.max_steps,
            epochs=args.epochs, threads=_threads(train), train=train, keep_going=args.keep_going, search=search)
    except SettingError as error:
        raise InputError(error.naming(flag)) from None
    out = args.out or Path("results") / scale_test_folder(args.mode)
    prepare_results_dir(out, "results.json", "scale_test", (), clear=False)  # a file or unwritable: refused now
    sizes = (f"boundary search from {search.start}x up to {search.ceiling}x" if search else
             f"multipliers {','.join(map(str, settings.multipliers))}")
    log(f"scale test, {args.mode}: {sizes}, {workers} worker(s), "
        f"loader {args.loader}, limit {describe_limit(args.memory_limit, None)} -> {out}/results.json")

    def on_result(run: ScaleRow) -> None:
        peak = (run.peak_per_worker() or 0) / 2**20
        log(f"  x{run.multiplier}: {run.status} in {run.wall_seconds or 0.0:.1f}s, peak {peak:.0f} MiB/worker"
            + (f" ({run.detail})" if run.detail else ""))

    tracker = open_track(args, out.parent)
    if tracker is not None:
        args.pod_env = pods_tracking_env(tracker, args.backend)
    with choose_runner(args, "scale", log_dir=out / "logs") as runner:
        doc = run_scale_test(settings, runner, out, on_result, tracker)
    log(format_table(doc))
    log(f"results: {out / 'results.json'}")
    return 0


# ----------------------------------------------------------------------------------------------- search


OLD_SEARCH_BACKENDS = ("sequential", "parallel")  # both mean local (deprecated spellings; summary.json's words)
CONTROLLERS = ("katib", "optimizationjob")  # --k8s-kind values whose controller searches itself


def add_search_parser(commands: argparse._SubParsersAction) -> None:
    """`stockscale search`: the hyperparameter search; its flags and cmd_search are the search's whole CLI. The
    strategies and pruners offered are the registry's (search/registry.py)."""
    from stockscale.search.registry import PRUNERS, STRATEGIES

    search = commands.add_parser("search", help="comparison 2: the hyperparameter grid, sequential vs parallel")
    search.add_argument("--backend", choices=(*BACKENDS, *OLD_SEARCH_BACKENDS),
                        metavar="{local,docker,kubernetes}",
                        help="local: trials on this machine, --parallel at once (default 1, with every core); "
                        "docker: --parallel trials at once as containers of the image on this machine (the Indexed "
                        "Job's pods); kubernetes: Jobs on a cluster. sequential and parallel, the older spellings, "
                        "are local with one or several trials at once, as summary.json records it (default "
                        "sequential)")
    search.add_argument("--parallel", type=positive_int("--parallel", MAX_WORKERS),
                        help="trials at once (default: local 1, docker the number of cores, kubernetes every trial)")
    search.add_argument("--workers", type=positive_int("--workers", MAX_WORKERS), help=argparse.SUPPRESS)
    search.add_argument("--space", type=Path,
                        help="YAML space: a list of values per parameter, or a range in Katib's terms (type "
                        "double|int|categorical, min/max, log, choices); see docs/search.md (default: the 18 configs)")
    search.add_argument("--strategy", choices=tuple(STRATEGIES),
                        help="; ".join(f"{item.name}: {item.help}" for item in STRATEGIES.values()) + " (default grid)")
    search.add_argument("--trials", type=positive_int("--trials"), help="random and tpe: how many trials")
    search.add_argument("--pruner", choices=tuple(PRUNERS), default="none",
                        help="stop trials early by their validation loss after each epoch: "
                        + "; ".join(f"{item.name}: {item.help}" for item in PRUNERS.values()) + " (default none)")
    search.add_argument("--trial-timeout", type=positive_float("--trial-timeout"),
                        help="seconds per trial (default: no limit)")
    search.add_argument("--resume", action="store_true",
                        help="keep trials already finished in --out with the same settings and continue the study")
    search.add_argument("--out", type=Path,
                        help="results folder (default results/hp_search_<local|parallel|docker|cloud>)")
    search.add_argument("--k8s-kind", choices=("job", "pytorchjob", "optimizationjob", "katib"), default="job",
                        help="kubernetes: one Indexed Job (default), one PyTorchJob per config, a Trainer v2 "
                             "OptimizationJob, or a Katib Experiment")
    search.add_argument("--k8s-algorithm", choices=tuple(STRATEGIES), default="grid",
                        help="optimizationjob and katib: the older spelling of --strategy")
    add_train_flags(search, skip=("data", "checkpoint_dir"))
    add_k8s_flags(search)
    add_track_flag(search)
    search.set_defaults(handler=cmd_search)


def cmd_search(args: argparse.Namespace) -> int:
    from stockscale.config import build_train_config
    from stockscale.console import log
    from stockscale.experiments.results import SEARCH_FOLDERS
    from stockscale.experiments.search import (
        DEFAULT_SPACE,
        SearchSettings,
        load_space,
        run_search,
        search_dry_run,
    )
    from stockscale.experiments.search_summary import format_summary
    from stockscale.files import prepare_results_dir
    from stockscale.space import grid_size, parse_space

    notices = []  # said once the settings are accepted: a refused command prints its one line only
    parallel = args.parallel
    if args.workers is not None:
        if parallel is not None and parallel != args.workers:
            raise InputError(f"--workers {args.workers} and --parallel {parallel} disagree: --parallel alone says it")
        parallel = args.workers
        notices.append((f"search --workers {args.workers}", f"--parallel {args.workers}"))
    backend = args.backend or "local"
    if backend in OLD_SEARCH_BACKENDS:
        notices.append((f"--backend {backend}", "--backend local" + (" --parallel N" if backend == "parallel" else "")))
    controller = args.k8s_kind if backend == "kubernetes" and args.k8s_kind in CONTROLLERS else None
    strategy_flag = "--k8s-algorithm" if not args.strategy and args.k8s_kind in CONTROLLERS else "--strategy"
    strategy = args.strategy or (args.k8s_algorithm if args.k8s_kind in CONTROLLERS else "grid")
    if args.strategy and args.k8s_algorithm != "grid" and args.k8s_algorithm != args.strategy:
        raise InputError(f"--k8s-algorithm {args.k8s_algorithm} and --strategy {args.strategy} disagree: "
                         "--strategy alone says it")
    space = load_space(args.space) if args.space else parse_space(DEFAULT_SPACE, "space")
    train = experiment_train_overrides(args, tuple(space))
    threads = _threads(train)
    count = args.trials
    if strategy != "grid" and count is None and not args.strategy:
        count = grid_size(space)  # --k8s-algorithm random or tpe: as many points as the grid has
    settings = SearchSettings(backend=backend, parallel=parallel, space=space,
                              train=build_train_config(train, "flags"), threads_per_trial=threads,
                              strategy=strategy, trials=count, pruner=args.pruner, trial_timeout=args.trial_timeout,
                              resume=args.resume, searcher=controller or "optuna")
    out = args.out or Path("results") / SEARCH_FOLDERS[settings.mode]
    if settings.backend != "kubernetes":
        refuse_kubernetes_only_flags(args)
    for old, new in notices:
        deprecation_notice(old, new)
    if not args.dry_run:
        prepare_results_dir(out, "summary.json", "hp_search", (), clear=False)  # a file or unwritable: refused now
    tracker = None if args.dry_run else open_track(args, out.parent)
    args.backend = settings.backend
    if tracker is not None:
        args.pod_env = pods_tracking_env(tracker, args.backend)
    runner = choose_runner(args, "search", warm=True, log_dir=out / "logs")
    if args.dry_run:
        from stockscale.experiments.dry_run import write_dry_run_marker

        written = _spelled(lambda: search_dry_run(settings, runner, out), strategy_flag, strategy)
        for path in written:
            log(f"wrote {path}")
        try:
            marker = write_dry_run_marker(out, "search", args.backend, written)
        except OSError as error:
            raise InputError(f"cannot write {out / 'dry_run.json'} ({error.strerror})") from None
        log(f"wrote {marker} (`stockscale compare` reports this folder as a dry run: nothing ran)")
        return 0
    trials, at_once = settings.trial_count, settings.trials_at_once
    how = "" if strategy == "grid" else f" ({strategy}, pruner {args.pruner})"
    log(f"search, {settings.mode}{how}: {trials} trials, {at_once} at a time, "
        f"{settings.threads_per_trial or 'default'} thread(s) each -> {out}/summary.json")
    if settings.searcher == "optuna":  # our own study, in the journal the dashboard reads
        log(f"watch it live: {dashboard_command(out)}  (pip install optuna-dashboard)")
    done = [0]

    def on_result(entry: Trial) -> None:
        done[0] += 1
        loss = f", val_loss {entry.val_loss:.4f}" if entry.val_loss is not None else ""
        log(f"  [{done[0]}/{trials}] {entry.name} {entry.config}: {entry.status} in "
            f"{entry.wall_seconds or 0.0:.1f}s{loss}" + (f" ({entry.detail})" if entry.detail else ""))

    summary = on_cluster(runner, lambda: _spelled(lambda: run_search(settings, runner, out, on_result, tracker),
                                                  strategy_flag, strategy))
    log(format_summary(summary))
    log(f"summary: {out / 'summary.json'}")
    return 0


def _spelled(work: Callable[[], T], flag: str, strategy: str) -> T:
    """Run `work`; a refusal that names the strategy setting names it as the user spelled it (--k8s-algorithm,
    the older spelling of --strategy), so the one line points at the flag given."""
    try:
        return work()
    except InputError as error:
        if flag == "--strategy":
            raise
        text = str(error).replace(f"--strategy {strategy}", f"{flag} {strategy}")
        raise InputError(text.replace(f"strategy {strategy}", f"{flag} {strategy}")) from None


def dashboard_command(out: Path) -> str:
    """The command that shows a search live in optuna-dashboard (pip install optuna-dashboard), which opens
    the study's journal file itself."""
    import shlex

    from stockscale.search.study import JOURNAL

    return f"optuna-dashboard {shlex.quote(str(out / JOURNAL))}"


# ---------------------------------------------------------------------------------------------- compare


def add_compare_parser(commands: argparse._SubParsersAction) -> None:
    """`stockscale compare`: the report, with the projection's prices and sizes."""
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
    print(f"page: {report.with_name('report.html')} (self-contained: open it in a browser)", flush=True)
    print(f"report: {report}", flush=True)
    return 0


# ------------------------------------------------------------------------------------------------- demo


def add_demo_parser(commands: argparse._SubParsersAction) -> None:
    """`stockscale demo`: both comparisons and the report in one command."""
    demo = commands.add_parser("demo", help="everything: both comparisons on this machine, then the report")
    demo.add_argument("--quick", action="store_true",
                      help="a smaller grid, fewer workers and fewer steps: minutes rather than a quarter of an hour")
    demo.add_argument("--out", type=Path, help="results folder (default results/)")
    demo.add_argument("--backend", choices=here_backends(), default="local",
                      help="the cluster side (its scale test and the parallel search): local processes "
                           "(default) or containers of the image")
    demo.add_argument("--source", help="the data of every stage (default bundled:AAPL; bundled:all pools the "
                                       "four bundled tickers; any --source of train)")
    add_image_flags(demo, "containers (--backend docker)")
    add_track_flag(demo)
    demo.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from stockscale.console import log
    from stockscale.experiments.demo import run_demo

    out = args.out or Path("results")
    if args.source is not None:
        from stockscale.config import build_train_config

        build_train_config({"source": args.source}, "flags")  # a bad --source is one line before anything runs
    log(f"stockscale demo{' --quick' if args.quick else ''}: both comparisons on this machine -> {out}/")
    tracker = open_track(args, out)
    if tracker is not None:
        args.pod_env = pods_tracking_env(tracker, args.backend)
    cluster = choose_runner(args, "demo", log_dir=out / "logs") if args.backend == "docker" else None
    text, report = run_demo(out, args.quick, log, cluster, args.source, tracker)
    print(text, flush=True)
    log(f"page: {report.with_name('report.html')} (self-contained: open it in a browser)")
    log(f"report: {report}")
    return 0


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """The experiment commands, in the order `stockscale --help` lists them."""
    add_scale_test_parser(commands)
    add_search_parser(commands)
    add_compare_parser(commands)
    add_demo_parser(commands)
