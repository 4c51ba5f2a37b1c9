"""The one table of backends: a name (`--backend local|docker|kubernetes`) and the factory that makes its Runner.

Every command that runs training asks here, with one typed `RunnerOptions`; each factory reads the options it
needs and ignores the rest, so no caller drops keyword arguments by the backend's name. A new backend is one
module with a `Runner` subclass (launch/runner.py) plus one `register_backend(name, factory)` call or one line
in BACKENDS below; the CLI's `--backend` choices are the table's keys.

Factories import their backend when called, so the table costs nothing to import (`--help` stays fast).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stockscale.errors import InputError
from stockscale.launch.runner import Runner

if TYPE_CHECKING:
    from stockscale.launch.cluster_spec import ClusterSpec


@dataclass(frozen=True)
class ClusterOptions:
    """What a backend with a cluster spec reads: the image and sizes (`spec`); for Kubernetes also where the
    cluster is, whether finished objects stay, how long a pod may stay Pending, and the kind of object.
"""

    spec: ClusterSpec | None = None
    kubeconfig: Path | None = None
    context: str | None = None
    keep: bool = False
    startup_timeout: float | None = None
    kind: str | None = None


@dataclass(frozen=True)
class RunnerOptions:
    """Everything a factory may read. `prefix` starts a run's id (containers, cluster objects); `log_dir` keeps
    each replica's log (local and docker; a cluster keeps its pods' logs); `on_line(rank, line)` gets each line
    a replica prints (a cluster run's: rank 0's); `on_event` gets a runner's own messages; `warm` asks for
    long-lived workers that take one trial after another (a search's or an evaluation's local runner)."""

    prefix: str = "stockscale"
    log_dir: Path | None = None
    on_line: Callable[[int, str], None] | None = None
    on_event: Callable[[str], None] | None = None
    warm: bool = False
    cluster: ClusterOptions = field(default_factory=ClusterOptions)


RunnerFactory = Callable[[RunnerOptions], Runner]


def local_runner(options: RunnerOptions) -> Runner:
    """Processes on this machine: one per rank (LocalRunner), or warm workers for trials (WarmRunner)."""
    if options.warm:
        from stockscale.launch.warm import WarmRunner

        return WarmRunner(on_line=options.on_line, log_dir=options.log_dir)
    from stockscale.launch.local import LocalRunner

    return LocalRunner(on_line=options.on_line, log_dir=options.log_dir)


def docker_runner(options: RunnerOptions) -> Runner:
    """Containers of the image on this machine, each holding its pod's limits."""
    from stockscale.launch.docker import DockerRunner

    return DockerRunner(options.cluster.spec, on_line=options.on_line, on_event=options.on_event,
                        log_dir=options.log_dir, run_prefix=options.prefix)


def kubernetes_runner(options: RunnerOptions) -> Runner:
    """Jobs on a cluster, as the kind of object `cluster.kind` names (launch/kubernetes/kinds.py); its pods'
    logs stay there (`stockscale k8s logs RUN`), so `log_dir` is not read."""
    from stockscale.console import log
    from stockscale.launch.kubernetes.runner import KubernetesRunner

    cluster = options.cluster
    on_event = options.on_event or log
    if cluster.spec is not None and cluster.spec.image_warning():
        on_event(f"warning: {cluster.spec.image_warning()}")
    on_line = options.on_line
    more: dict[str, Any] = {**({"kind": cluster.kind} if cluster.kind else {}),
                            **({"startup_timeout": cluster.startup_timeout} if cluster.startup_timeout else {})}
    return KubernetesRunner(cluster.spec, kubeconfig=cluster.kubeconfig, context=cluster.context,
                            run_prefix=options.prefix, keep=cluster.keep, on_event=on_event,
                            on_line=None if on_line is None else lambda line: on_line(0, line), **more)


BACKENDS: dict[str, RunnerFactory] = {
    "local": local_runner,
    "docker": docker_runner,
    "kubernetes": kubernetes_runner,
}


def register_backend(name: str, factory: RunnerFactory) -> None:
    """Add (or replace) a backend: `make_runner(name, options)` then calls `factory(options)`."""
    BACKENDS[name] = factory


def make_runner(backend: str, options: RunnerOptions | None = None) -> Runner:
    """The Runner of `backend`, made from `options`; one line naming the setting for an unknown backend."""
    factory = BACKENDS.get(backend)
    if factory is None:
        raise InputError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    return factory(options or RunnerOptions())
