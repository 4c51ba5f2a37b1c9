"""`stockscale train`: one process, one rank of a distributed run, N workers through a launcher, or a job on
Kubernetes. A worker's contract (its result line, its exit codes) is stockscale.worker's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from stockscale.bounds import MAX_WORKERS
from stockscale.cli.k8s import add_k8s_flags, on_cluster, refuse_kubernetes_only_flags
from stockscale.cli.launchers import choose_runner
from stockscale.cli.parser import add_train_flags, load_config, positive_float, positive_int, size
from stockscale.cli.tracking import add_track_flag, open_track, pods_tracking_env
from stockscale.errors import InputError, WorkerFailure
from stockscale.launch.registry import BACKENDS
from stockscale.worker import EXIT_MEMORY, RunMetrics, result_line

if TYPE_CHECKING:
    from stockscale.config import TrainConfig
    from stockscale.distributed import DistEnv
    from stockscale.progress import TrainProgress
    from stockscale.tracking import Tracker


def default_run_dir(prefix: str = "train") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{stamp}-{prefix}"
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def cmd_train(args: argparse.Namespace) -> int:
    from stockscale.distributed import DistEnv
    from stockscale.locks import beside_lock

    trial = None
    if args.trials is not None:
        from stockscale.config import read_trial

        trial = read_trial(args.trials, os.environ.get("JOB_COMPLETION_INDEX"))
    cfg = load_config(args, trial)
    if args.backend == "local":
        from stockscale.kubeflow_trial import trial_parameters

        params = trial_parameters(os.environ)  # a pod of an OptimizationJob's trial: the controller's point
        if params:
            cfg = cfg.updated(params, "KUBEFLOW_TRAINER_OPT_* parameters")
    if args.backend == "kubernetes":
        return tracked_train(args, args.out or Path("runs") / "kubernetes", lambda tracker:
                             train_on_kubernetes(cfg, args, tracker))
    refuse_kubernetes_only_flags(args)
    out = args.out or default_run_dir()
    env = DistEnv.from_environ()
    launch = args.backend == "docker" or args.workers > 1 or args.memory_limit is not None
    if launch and env.is_distributed:
        raise InputError("--workers/--memory-limit launch workers; this process is already a worker "
                         f"(WORLD_SIZE={env.world_size} in the environment)")
    if env.is_distributed and getattr(args, "track", None) is not None:
        raise InputError("--track is for the process that starts the workers (--workers N), not for a rank "
                         f"(WORLD_SIZE={env.world_size} in the environment)")
    # One run per --out: the command that owns it holds the lock (a DDP rank's launcher already does).
    with contextlib.nullcontext() if env.is_distributed else beside_lock(out, "stockscale train"):
        return tracked_train(args, out, lambda tracker: train_with_launcher(cfg, out, args, tracker) if launch
                             else train_here(cfg, out, env, tracker))


def tracked_train(args: argparse.Namespace, out: Path, work: Callable[[Tracker | None], int]) -> int:
    """Run `work` as one tracked run named after its run directory (--track), its store beside that folder."""
    from stockscale.tracking import tracked

    if args.dry_run:
        return work(None)  # manifests only: nothing runs, nothing to track
    tracker = open_track(args, out.parent)
    if tracker is not None:
        args.pod_env = pods_tracking_env(tracker, args.backend)
    with tracked(tracker, "train", out.name, {}, lambda: [out / "metrics.json", out / "config.yaml"]):
        return work(tracker)


def train_here(cfg: TrainConfig, out: Path, env: DistEnv, tracker: Tracker | None = None) -> int:
    """Train in this process (one process, or one rank when the environment says so). In a pod whose env
    names the driver's MLflow run, rank 0 logs its own child run (cli/pod_tracking.py)."""
    import time

    from stockscale.cli.pod_tracking import TrackedProgress, pod_run
    from stockscale.console import RichTrainProgress, train_progress
    from stockscale.errors import TrainingDiverged
    from stockscale.kubeflow_trial import TrainerStatusProgress, TrainerStatusReporter
    from stockscale.launch.runner import JobResult
    from stockscale.progress import TrialPruned
    from stockscale.train import train

    bar = train_progress() if env.is_main else None
    reporter = TrainerStatusReporter.from_environ(os.environ) if env.is_main else None
    status = None if reporter is None else TrainerStatusProgress(bar, reporter)  # a Trainer's trial
    progress = status or bar
    started = time.time()
    try:
        with contextlib.nullcontext() if tracker is not None else pod_run(env, out) as pod:
            tracker = tracker or pod
            result = train(cfg, out, stoppable(TrackedProgress(progress, pod) if pod is not None else progress, env),
                           env)
            if tracker is not None:
                peaks = [worker["peak_rss_bytes"] for worker in result.get("workers", [])]
                tracker.on_result(JobResult(name=out.name, status="success", metrics=cast(RunMetrics, result),
                                            start_time=started, end_time=time.time(), peak_rss_bytes=peaks,
                                            run_dir=str(out)),
                                  cfg.to_dict(), {"stockscale.kind": "train"})
    except TrialPruned as pruned:  # the launcher asked this pod to stop (its stop file): it ends as a success
        print(json.dumps({"status": "pruned", "detail": str(pruned), "rank": env.rank,
                          "epochs_completed": pruned.epoch}), flush=True)
        return 0
    except MemoryError:
        print(json.dumps({"status": "oom", "detail": "MemoryError", "rank": env.rank}), flush=True)
        return EXIT_MEMORY
    except TrainingDiverged as error:
        print(json.dumps({"status": "error", "detail": str(error), "rank": env.rank}), flush=True)
        raise
    finally:
        if isinstance(bar, RichTrainProgress):
            bar.close()
    if status is not None:
        test = result.get("test") or {}
        status.finish((result.get("val") or {}).get("loss"),
                      {"test_rmse": test["rmse"]} if isinstance(test.get("rmse"), float) else None)
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


def stoppable(progress: TrainProgress | None, env: DistEnv) -> TrainProgress | None:
    """`progress`, looking at the stop file after each epoch when the pod has one ($STOCKSCALE_STOP_FILE, an
    Indexed Job's trial) and this is a single process: a DDP rank that stopped alone would leave its peers
    waiting in a collective."""
    from stockscale.progress import StopFileProgress
    from stockscale.worker import STOP_FILE_ENV

    path = os.environ.get(STOP_FILE_ENV)
    return StopFileProgress(progress, Path(path)) if path and not env.is_distributed else progress


def print_run_summary(metrics: dict[str, Any]) -> None:
    from stockscale.console import log
    from stockscale.experiments.records import split_baselines
    from stockscale.experiments.report.reading import reading
    from stockscale.experiments.report.text import wrap

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
    baselines = split_baselines(metrics.get("baselines"))
    for name in ("drift", "ridge"):
        if name in baselines:
            log(row(name, baselines[name]))
    for name, label in (("always_up", "always up"), ("training_majority", "majority")):
        if name in baselines and baselines[name].get("directional_accuracy") is not None:
            log(f"  {label:<12} direction {baselines[name]['directional_accuracy'] * 100:5.1f}%")
    log(f"  the LSTM {verdict} the persistence baseline (tomorrow = today) on RMSE")
    print_ticker_summary(metrics)
    if baselines:
        for line in wrap("  ", "reading: " + reading(test, baselines)):
            log(line)
    log(f"{metrics['train_samples']} training windows, {metrics['steps']} steps, "
        f"{metrics['samples_per_second']:.0f} samples/s, peak RSS {metrics['peak_rss_bytes'] / 2**20:.0f} MiB, "
        f"{metrics['wall_seconds']:.1f}s")
    log(f"run directory: {metrics['run_dir']}")


def print_ticker_summary(metrics: dict[str, Any]) -> None:
    """A pooled run's extra lines: how many tickers (SYNTHETIC when they are), and the best and worst."""
    from stockscale.console import log

    tickers = metrics.get("tickers")
    if not tickers:
        return
    kind = "SYNTHETIC tickers (not real data)" if metrics["data"].get("synthetic") else "tickers"
    skipped = f", {len(tickers['skipped'])} skipped (too few days)" if tickers["skipped"] else ""
    log(f"  pooled over {tickers['count']} {kind}{skipped}; by test MAPE:")
    for label in ("best", "worst"):
        pick = tickers[label]
        log(f"  {label:<5} {pick['ticker']:<8} MAPE {pick['test_mape']:5.2f}%  persistence "
            f"{pick['persistence_test_mape']:5.2f}%")


def train_with_launcher(cfg: TrainConfig, out: Path, args: argparse.Namespace, tracker: Tracker | None = None) -> int:
    """Workers in child processes or containers (an emulated cluster, or one limited process)."""
    from stockscale.console import log
    from stockscale.launch.runner import TrainJob

    if out.exists():
        raise InputError(f"run directory {out} already exists")

    def relay(rank: int, line: str) -> None:
        if rank == 0 and not line.startswith("{"):
            log(line)

    job = TrainJob(name=out.name, config=cfg, run_dir=out, workers=args.workers,
                   memory_limit=args.memory_limit, threads=cfg.threads, timeout=args.timeout)
    with choose_runner(args, "train", on_line=relay, on_event=log) as runner:
        result = runner.run(job)
    if tracker is not None:
        tracker.on_result(result, cfg.to_dict(), {"stockscale.kind": "train"})
    if result.status != "success" or result.metrics is None:
        raise WorkerFailure(f"training failed: {result.status}: {result.detail}")
    print(json.dumps(result.metrics), flush=True)
    return 0



def train_on_kubernetes(cfg: TrainConfig, args: argparse.Namespace, tracker: Tracker | None = None) -> int:
    """Submit a PyTorchJob (Master + workers-1 Workers) or a Trainer v2 TrainJob (--k8s-kind trainjob), follow
    rank 0's log, collect its metrics."""
    from stockscale.console import log
    from stockscale.launch.runner import TrainJob

    if args.trials is not None:
        raise InputError("--trials is what a search's pods run; use stockscale search --backend kubernetes")
    job = TrainJob(name="train", config=cfg, run_dir=Path("train"), workers=args.workers,
                   memory_limit=args.memory_limit, threads=cfg.threads, timeout=args.timeout)
    launcher = choose_runner(args, "train", on_line=lambda _rank, line: log(line))
    if args.dry_run:
        out = args.out or Path("manifests") / (launcher.run_id or "train")
        for path in launcher.dry_run_run(job, out):
            log(f"wrote {path}")
        return 0

    def work() -> int:
        result = launcher.run(job)
        if tracker is not None:
            tracker.on_result(result, cfg.overrides(), {"stockscale.kind": "train"})
        if result.status != "success" or result.metrics is None:
            raise WorkerFailure(f"training on the cluster failed: {result.status}: {result.detail}")
        print(json.dumps(result.metrics), flush=True)
        return 0

    return on_cluster(launcher, work)


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """`stockscale train`: every TrainConfig field as a flag, and where the run happens."""
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
    run.add_argument("--timeout", type=positive_float("--timeout"),
                     help="seconds before the run is stopped (default: no limit)")
    run.add_argument("--backend", choices=tuple(BACKENDS), default="local",
                     help="local processes (default), containers of the image on this machine (docker or "
                          "podman), or a PyTorchJob/TrainJob on Kubernetes")
    run.add_argument("--k8s-kind", choices=("pytorchjob", "trainjob"), default="pytorchjob",
                     help="kubernetes: a Training Operator v1 PyTorchJob (default) or a Trainer v2 TrainJob")
    add_k8s_flags(train)
    add_track_flag(train)
    train.set_defaults(handler=cmd_train)
