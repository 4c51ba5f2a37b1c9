"""`stockscale k8s` (render, status, logs, delete) and the cluster flags that train and search share: the
cluster spec, the kubeconfig, what a run may leave on a cluster and how to remove it.

The kubernetes client is imported only by the commands that contact a cluster, never by `--help`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from stockscale.bounds import MAX_MULTIPLIER, MAX_WORKERS
from stockscale.cli.parser import Parser, int_at_least, positive_float, positive_int
from stockscale.errors import InputError, StockscaleError

if TYPE_CHECKING:
    from stockscale.launch.cluster_spec import ClusterSpec
    from stockscale.launch.kubernetes.runner import KubernetesRunner
    from stockscale.launch.kubernetes.session import ClusterSession
    from stockscale.launch.runner import Runner

T = TypeVar("T")


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
        group.add_argument("--startup-timeout", type=positive_float("--startup-timeout"), default=600.0,
                           help="seconds a pod may stay Pending (unscheduled, pulling its image) before the run "
                                "ends (default 600)")


def refuse_kubernetes_only_flags(args: argparse.Namespace) -> None:
    """--dry-run and --keep mean something only on a cluster; with a local backend they would be ignored."""
    if args.dry_run or args.keep:
        raise InputError("--dry-run and --keep are for --backend kubernetes")


def cluster_spec(args: argparse.Namespace, **more: Any) -> ClusterSpec:
    from stockscale.launch.cluster_spec import load_cluster_spec

    overrides = {"image": args.image, "namespace": getattr(args, "namespace", None),
                 "env": getattr(args, "pod_env", None) or None, **more}
    return load_cluster_spec(args.k8s_config, {k: v for k, v in overrides.items() if v is not None})


def kubernetes_runner(args: argparse.Namespace, prefix: str, **options: Any) -> KubernetesRunner:
    """The KubernetesRunner the cluster flags describe (`--k8s-kind` is limited to its KINDS by the parser)."""
    from stockscale.console import log
    from stockscale.launch.kubernetes.runner import KubernetesRunner

    spec = cluster_spec(args)
    if hasattr(args, "startup_timeout"):  # a command that submits
        options["startup_timeout"] = args.startup_timeout
        if spec.image_warning():
            log(f"warning: {spec.image_warning()}")
    return KubernetesRunner(spec, kubeconfig=args.kubeconfig, context=args.context, run_prefix=prefix,
                            keep=getattr(args, "keep", False), on_event=log, **options)


def on_cluster(runner: Runner, work: Callable[[], T]) -> T:
    """Run `work`; on Ctrl-C, offer to delete what the runner left behind on a cluster (a terminal is asked, a
    pipe is not); on an error, say how to delete what is still there. A runner that cleans up after itself
    (local processes, containers) leaves nothing behind, and nothing is asked."""
    from stockscale.console import log
    from stockscale.supervision import Terminated

    try:
        return work()
    except StockscaleError:
        if runner.left_behind():
            log(f"left on the cluster: {', '.join(runner.left_behind())}; remove with: "
                f"stockscale k8s delete {runner.run_id}")
        raise
    except KeyboardInterrupt as stop:
        if runner.left_behind() and runner.run_id is not None:
            log(f"interrupted; submitted: {', '.join(runner.left_behind())}")
            answer = ""
            if sys.stdin.isatty() and not isinstance(stop, Terminated):  # nobody to answer a kill
                answer = input(f"delete what run {runner.run_id} submitted? [y/N] ").strip().lower()
            if answer in ("y", "yes"):
                deleted = runner.delete(runner.run_id)
                log(f"deleted {len(deleted)} object(s)")
            else:
                log(f"left on the cluster; remove with: stockscale k8s delete {runner.run_id}")
        raise


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


def cluster_session(args: argparse.Namespace) -> ClusterSession:
    """The namespace of the cluster `--kubeconfig`/`--context` name, for status, logs and delete of any run."""
    from stockscale.launch.kubernetes.session import ClusterSession

    return ClusterSession(cluster_spec(args).namespace, kubeconfig=args.kubeconfig, context=args.context)


def cmd_k8s_status(args: argparse.Namespace) -> int:
    from stockscale.console import log

    session = cluster_session(args)
    if args.run is None:
        runs = session.list_runs()
        log("\n".join(runs) if runs else f"no stockscale runs in namespace {session.namespace}")
        return 0
    objects = session.status(args.run)
    if not objects:
        raise InputError(f"no objects of run {args.run} in namespace {session.namespace}")
    for obj in objects:
        log(f"{obj.kind:<12} {obj.name:<50} {obj.state:<10} {obj.detail}")
    return 0


def cmd_k8s_logs(args: argparse.Namespace) -> int:
    session = cluster_session(args)
    pods = session.logs(args.run, lambda pod, line: print(f"[{pod}] {line}", flush=True), follow=args.follow,
                         pod=args.pod, trial=args.trial)
    if not pods:
        raise InputError(f"no pods of run {args.run} in namespace {session.namespace}")
    return 0


def cmd_k8s_delete(args: argparse.Namespace) -> int:
    from stockscale.console import log

    session = cluster_session(args)
    if not args.yes and sys.stdin.isatty():
        answer = input(f"delete every object of run {args.run} in {session.namespace}? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            log("nothing deleted")
            return 0
    deleted = session.delete_run(args.run)
    log("\n".join(f"deleted {name}" for name in deleted) if deleted else f"no objects of run {args.run}")
    return 0


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """`stockscale k8s ACTION`: render, status, logs, delete."""
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
