"""The one place a backend's name becomes a Launcher: train, the scale test, the search and the demo all ask here."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from stockscale.cli.k8s import cluster_spec, kubernetes_runner

if TYPE_CHECKING:
    from stockscale.launch.base import Launcher
    from stockscale.space import Space


def choose_launcher(args: argparse.Namespace, prefix: str, *, warm: bool = False, log_dir: Path | None = None,
                    on_line: Callable[[int, str], None] | Callable[[str], None] | None = None,
                    on_event: Callable[[str], None] | None = None,
                    algorithm: Literal["grid", "random", "tpe"] | None = None, space: Space | None = None,
                    trials: int | None = None, pruner: str | None = None) -> Launcher:
    """The one place a backend's name becomes a Launcher; everything after this goes through its interface
    (launch/base.py). local, sequential and parallel are processes here (`warm`: long-lived workers that take
    one trial after another, for a search); docker, containers of the image here; kubernetes, a cluster.

    `on_line` gets a local or container worker's (rank, line), a cluster run's rank 0 line; `algorithm`,
    `space`, `trials` and `pruner` are for a cluster controller that searches itself (Katib). Options left
    None keep the launcher's own defaults."""
    given = {"log_dir": log_dir, "on_line": on_line, "on_event": on_event, "algorithm": algorithm, "space": space,
             "trials": trials, "pruner": pruner}
    options = {key: value for key, value in given.items() if value is not None}
    backend = getattr(args, "backend", "local")
    if backend == "kubernetes":
        options.pop("log_dir", None)  # pod logs stay on the cluster (stockscale k8s logs RUN)
        for key in ("algorithm", "space", "trials", "pruner"):
            options.pop(key, None)  # a cluster's controller gets them from its Searcher (search/katib.py)
        return kubernetes_runner(args, prefix, kind=args.k8s_kind, **options)
    for key in ("algorithm", "space", "trials", "pruner"):
        options.pop(key, None)  # only a cluster's controller searches itself
    if backend == "docker":
        from stockscale.launch.docker import DockerLauncher

        return DockerLauncher(cluster_spec(args), run_prefix=prefix, **options)
    options.pop("on_event", None)
    if warm:
        from stockscale.launch.warm import WarmLauncher

        return WarmLauncher(**options)
    from stockscale.launch.local import LocalLauncher

    return LocalLauncher(**options)
