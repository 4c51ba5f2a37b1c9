"""The one place a backend's name becomes a Launcher: train, the scale test, the search and the demo all ask here."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from stockscale.cli.k8s import cluster_spec, kubernetes_launcher

if TYPE_CHECKING:
    from stockscale.launch.base import Launcher


def choose_launcher(args: argparse.Namespace, prefix: str, *, warm: bool = False, **options: Any) -> Launcher:
    """The one place a backend's name becomes a Launcher; everything after this goes through its interface
    (launch/base.py). local, sequential and parallel are processes here (`warm`: long-lived workers that take
    one trial after another, for a search); docker, containers of the image here; kubernetes, a cluster."""
    backend = getattr(args, "backend", "local")
    if backend == "kubernetes":
        options.pop("log_dir", None)  # pod logs stay on the cluster (stockscale k8s logs RUN)
        more = {"kind": args.k8s_kind, "algorithm": getattr(args, "k8s_algorithm", None)}
        return kubernetes_launcher(args, prefix, **{**{k: v for k, v in more.items() if v is not None}, **options})
    if backend == "docker":
        from stockscale.launch.docker import DockerLauncher

        return DockerLauncher(cluster_spec(args), run_prefix=prefix, **options)
    options.pop("on_event", None)
    if warm:
        from stockscale.launch.warm import WarmLauncher

        return WarmLauncher(**options)
    from stockscale.launch.local import LocalLauncher

    return LocalLauncher(**options)

