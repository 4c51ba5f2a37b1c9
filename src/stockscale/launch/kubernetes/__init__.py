"""Kubernetes backend: manifests from one ClusterSpec, and a Launcher that runs them through the official client.

Importing this package needs no cluster and not even the `kubernetes` package (the optional extra
`stockscale[k8s]`): the client is imported when a launcher first talks to a cluster.

    spec.py           ClusterSpec: image, namespace, replica sizes, PVC (the YAML of --k8s-config)
    manifests/        every object as a plain dict, one module per kind (naming, pods, training, searches,
                      cluster); writing them as YAML
    api.py            the official client: configuration, retries with backoff, one-line errors
    outcome.py        finished pods and jobs -> JobResult (status, detail, metrics, the cluster's timings)
    logs.py           reading and following pod logs
    runs.py           status, logs, deletion of a run by its labels
    session.py        ClusterSession: one namespace's runs for `stockscale k8s status|logs|delete`
    tracking.py       RunTracker: what one run created, its start-up deadline, its progress messages
    training_run.py   one training job: submit, follow rank 0's log, wait, resubmit once if disrupted
    search_jobs.py    searches stockscale schedules: one Indexed Job, or a PyTorchJob per trial
    search_controllers.py  searches a controller schedules: OptimizationJob, Katib Experiment
    katib.py          the Katib Experiment and reading its Trials
    client.py         KubernetesLauncher (the Launcher protocol): renders, then hands over to the above
"""

from pathlib import Path

from stockscale.launch.kubernetes.api import KubeApi, KubernetesApiError, NameTakenError, load_configuration
from stockscale.launch.kubernetes.client import KubernetesLauncher
from stockscale.launch.kubernetes.manifests import (
    default_manifests,
    make_run_id,
    search_driver_manifest,
    write_manifests,
)
from stockscale.launch.kubernetes.runs import RunObject
from stockscale.launch.kubernetes.session import ClusterSession
from stockscale.launch.kubernetes.spec import ClusterSpec, load_cluster_spec


def render_defaults(spec: ClusterSpec, out_dir: Path) -> list[Path]:
    """`stockscale k8s render --out DIR`: namespace, PVC, ServiceAccount, Role, RoleBinding and the training
    PyTorchJob (listed in kustomization.yaml), plus search-driver.yaml (not listed: applied on purpose)."""
    return write_manifests(out_dir, default_manifests(spec),
                           unlisted={"search-driver.yaml": search_driver_manifest(spec)})


__all__ = [
    "ClusterSession",
    "ClusterSpec",
    "KubeApi",
    "KubernetesApiError",
    "KubernetesLauncher",
    "NameTakenError",
    "RunObject",
    "default_manifests",
    "load_cluster_spec",
    "load_configuration",
    "make_run_id",
    "render_defaults",
    "write_manifests",
]
