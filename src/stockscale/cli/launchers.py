"""Where a command's flags become a Runner: the one RunnerOptions of launch/registry.py, made from the flags a
command has, and the backend's factory. train, the scale test, the demo (and the search) all ask here."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stockscale.launch.registry import ClusterOptions, RunnerOptions
    from stockscale.launch.runner import Runner


def cluster_options(args: argparse.Namespace, backend: str) -> ClusterOptions:
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
                          kind=flags.get("k8s_kind"))


def runner_options(args: argparse.Namespace, backend: str, prefix: str, *, warm: bool = False,
                   log_dir: Path | None = None, on_line: Callable[[int, str], None] | None = None,
                   on_event: Callable[[str], None] | None = None) -> RunnerOptions:
    from stockscale.launch.registry import RunnerOptions

    return RunnerOptions(prefix=prefix, log_dir=log_dir, on_line=on_line, on_event=on_event, warm=warm,
                         cluster=cluster_options(args, backend))


def choose_runner(args: argparse.Namespace, prefix: str, *, warm: bool = False, log_dir: Path | None = None,
                  on_line: Callable[[int, str], None] | None = None,
                  on_event: Callable[[str], None] | None = None) -> Runner:
    """The Runner of `args.backend` (local, docker, kubernetes: launch/registry.py's table); everything after
    this goes through the Runner interface (launch/runner.py)."""
    from stockscale.launch.registry import make_runner

    backend = args.backend
    return make_runner(backend, runner_options(args, backend, prefix, warm=warm, log_dir=log_dir,
                                               on_line=on_line, on_event=on_event))


def here_backends() -> tuple[str, ...]:
    """The backends whose workers run on this machine (every registered one but a cluster's): the scale test's
    and the demo's `--backend` choices, since both compare against this machine's own processes."""
    from stockscale.launch.registry import BACKENDS

    return tuple(name for name in BACKENDS if name != "kubernetes")
