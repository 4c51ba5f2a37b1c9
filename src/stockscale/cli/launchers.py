"""Where a command's flags become a Runner: the one RunnerOptions of launch/registry.py, made from the flags a
command has, and the backend's factory. train, the scale test, the demo (and the search) all ask here."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stockscale.launch.registry import ClusterOptions, RunnerOptions
    from stockscale.launch.runner import Runner
    from stockscale.space import Space


def cluster_options(args: argparse.Namespace, backend: str, controller: Mapping[str, Any] | None = None
                    ) -> ClusterOptions:
    """The cluster settings the flags give: none for local processes; the spec (--k8s-config, --image,
    --namespace, the tracking env) for docker; with Kubernetes also the kubeconfig, --keep, the start-up
    timeout and the kind."""
    from stockscale.cli.k8s import cluster_spec
    from stockscale.launch.registry import ClusterOptions

    if backend not in ("docker", "kubernetes"):
        return ClusterOptions()
    spec = cluster_spec(args)
    if backend == "docker":
        return ClusterOptions(spec=spec)
    flags = vars(args)
    return ClusterOptions(spec=spec, kubeconfig=flags.get("kubeconfig"), context=flags.get("context"),
                          keep=bool(flags.get("keep")), startup_timeout=flags.get("startup_timeout"),
                          kind=flags.get("k8s_kind"), controller=dict(controller or {}))


def runner_options(args: argparse.Namespace, backend: str, prefix: str, *, warm: bool = False,
                   log_dir: Path | None = None, on_line: Callable[[int, str], None] | None = None,
                   on_event: Callable[[str], None] | None = None,
                   controller: Mapping[str, Any] | None = None) -> RunnerOptions:
    from stockscale.launch.registry import RunnerOptions

    return RunnerOptions(prefix=prefix, log_dir=log_dir, on_line=on_line, on_event=on_event, warm=warm,
                         cluster=cluster_options(args, backend, controller))


def choose_runner(args: argparse.Namespace, prefix: str, *, warm: bool = False, log_dir: Path | None = None,
                  on_line: Callable[[int, str], None] | None = None,
                  on_event: Callable[[str], None] | None = None) -> Runner:
    """The Runner of `args.backend` (local, docker, kubernetes: launch/registry.py's table); everything after
    this goes through the Runner interface (launch/runner.py)."""
    from stockscale.launch.registry import make_runner

    backend = args.backend
    return make_runner(backend, runner_options(args, backend, prefix, warm=warm, log_dir=log_dir,
                                               on_line=on_line, on_event=on_event))


def choose_launcher(args: argparse.Namespace, prefix: str, *, warm: bool = False, log_dir: Path | None = None,
                    on_line: Callable[[int, str], None] | None = None,
                    on_event: Callable[[str], None] | None = None,
                    algorithm: str | None = None, space: Space | None = None,
                    trials: int | None = None, pruner: str | None = None) -> Runner:
    """Transitional (issue 21), for `stockscale search` until its Searchers take the space whole: search's
    backends sequential and parallel are local processes, and the algorithm, space, trials and pruner given
    go to a cluster's controller through the Kubernetes runner."""
    from stockscale.launch.registry import make_runner

    backend = "local" if args.backend in ("sequential", "parallel") else args.backend
    controller = {"algorithm": algorithm, "space": space, "trials": trials, "pruner": pruner}
    given: dict[str, object] = {key: value for key, value in controller.items() if value is not None}
    if backend == "kubernetes" and "algorithm" not in given and vars(args).get("k8s_algorithm"):
        given["algorithm"] = args.k8s_algorithm
    return make_runner(backend, runner_options(args, backend, prefix, warm=warm, log_dir=log_dir,
                                               on_line=on_line, on_event=on_event, controller=given))
