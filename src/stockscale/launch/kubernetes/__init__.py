"""Kubernetes backend: manifests from one ClusterSpec, and a Runner that runs them through the official client.

Importing this package needs no cluster and not even the `kubernetes` package (the optional extra
`stockscale[k8s]`): the client is imported when a runner first talks to a cluster, and the names below are
imported when first used. What docker shares with it lies outside, in launch/: the ClusterSpec (image,
namespace, replica sizes, PVC: the YAML of --k8s-config, launch/cluster_spec.py) and the pods made from it
(launch/pods.py).

    manifests/      every object as a plain dict, one module per kind of object
    api.py          the official client: configuration, retries with backoff, one-line errors
    session.py      ClusterSession: one namespace's objects by kind; status, logs, deletion of any run
    outcome.py      finished pods and jobs -> JobResult (status, detail, metrics, the cluster's timings)
    logs.py         reading and following pod logs
    run.py          ClusterRun: one run's objects, its start-up deadline, its progress messages
    runner.py       KubernetesRunner (the Runner, a ClusterRun) and KINDS, the kinds by name
    training.py     the Kind base (render, then follow) and one training run; kind trainjob
    search_jobs.py  searches stockscale schedules: kind job (one Indexed Job), kind pytorchjob (one per trial)
    controllers.py  searches a controller schedules: kind optimizationjob, kind katib
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

_WHERE = {
    "ClusterSession": ".session", "KINDS": ".runner", "KubeApi": ".api", "KubernetesApiError": ".api",
    "KubernetesRunner": ".runner", "NameTakenError": ".api", "RunObject": ".session", "load_configuration": ".api",
    # the runner's settings, for whoever makes one
    "ClusterSpec": "stockscale.launch.cluster_spec", "load_cluster_spec": "stockscale.launch.cluster_spec",
}
__all__ = [*_WHERE, "render_defaults"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name], __name__), name)


def render_defaults(spec: Any, out_dir: Path) -> list[Path]:
    """`stockscale k8s render --out DIR`: namespace, PVC, ServiceAccount, Role, RoleBinding and the training
    PyTorchJob (listed in kustomization.yaml), plus search-driver.yaml (not listed: applied on purpose)."""
    from stockscale.launch.kubernetes import manifests as m

    return m.write_manifests(out_dir, m.default_manifests(spec),
                             unlisted={"search-driver.yaml": m.search_driver_manifest(spec)})
