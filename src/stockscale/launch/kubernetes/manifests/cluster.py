"""What a namespace needs once, before any run: the namespace itself, the results PVC, the RBAC that lets
stockscale (and only what it does) run there, and the in-cluster search driver; `default_manifests` is the set
`stockscale k8s render` writes.
"""

from __future__ import annotations

from typing import Any

from stockscale.launch.cluster_spec import ClusterSpec
from stockscale.launch.kubernetes.manifests.katib import KATIB_INJECTION
from stockscale.launch.kubernetes.manifests.naming import APP, LABEL_APP, LABEL_COMPONENT
from stockscale.launch.kubernetes.manifests.training import pytorchjob_manifest
from stockscale.launch.pods import RESULTS, pod_template, pvc_volume

DEFAULT_TRAIN_NAME = "stockscale-train"

# --------------------------------------------------------------------------------------------- namespace, PVC


def namespace_manifest(spec: ClusterSpec) -> dict[str, Any]:
    """The namespace. Pod Security: baseline enforced, restricted warned and audited.

    stockscale's own containers meet the restricted profile; the Training Operator adds an init container to
    PyTorchJob workers (waiting for the master's DNS name) without a securityContext, which restricted would
    refuse, so restricted is not enforced.

    Katib's pod webhook injects its metrics collector only into pods of a namespace labelled
    `katib.kubeflow.org/metrics-collector-injection: enabled` (kubeflow/katib v0.19.0,
    manifests/v1beta1/components/webhook/webhooks.yaml, the pod mutator's namespaceSelector); without it a
    Katib search's trials report no metric. The webhook mutates only pods a Trial owns.
    """
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": spec.namespace,
            "labels": {
                LABEL_APP: APP,
                "pod-security.kubernetes.io/enforce": "baseline",
                "pod-security.kubernetes.io/warn": "restricted",
                "pod-security.kubernetes.io/audit": "restricted",
                KATIB_INJECTION: "enabled",
            },
        },
    }


def pvc_manifest(spec: ClusterSpec) -> dict[str, Any]:
    """The results volume: rank 0's run directories and any data a user copies in."""
    pvc_spec: dict[str, Any] = {
        "accessModes": [spec.pvc_access_mode],
        "resources": {"requests": {"storage": spec.pvc_size}},
    }
    if spec.storage_class:
        pvc_spec["storageClassName"] = spec.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": spec.pvc_name, "namespace": spec.namespace, "labels": {LABEL_APP: APP}},
        "spec": pvc_spec,
    }


# ------------------------------------------------------------------------------------------------- RBAC

SERVICE_ACCOUNT = "stockscale"
# Exactly the calls the launcher and `stockscale k8s` make (tests/test_k8s_rbac.py checks every request).
RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("", "configmaps", ("create", "list", "delete")),
    ("", "pods", ("get", "list", "watch", "patch", "delete")),  # patch: a pruned trial's stop annotation
    ("", "pods/log", ("get",)),
    ("batch", "jobs", ("create", "get", "list", "delete")),
    ("kubeflow.org", "pytorchjobs", ("create", "list", "watch", "delete")),
    ("trainer.kubeflow.org", "trainjobs", ("create", "list", "watch", "delete")),
    ("trainer.kubeflow.org", "optimizationjobs", ("create", "list", "delete")),
    ("kubeflow.org", "experiments", ("create", "list", "delete")),
    ("kubeflow.org", "trials", ("list", "watch")),
    ("networking.k8s.io", "networkpolicies", ("create", "list", "delete")),
)


def rbac_manifests(spec: ClusterSpec) -> dict[str, dict[str, Any]]:
    """A ServiceAccount, a Role with only the verbs stockscale uses, and the RoleBinding between them.

    Bind the Role to a user (a RoleBinding with `kind: User`) to let them run stockscale in the namespace,
    or run the search driver in a pod with `serviceAccountName: stockscale`.
    """
    meta = {"namespace": spec.namespace, "labels": {LABEL_APP: APP}}
    rules = [{"apiGroups": [group], "resources": [resource], "verbs": list(verbs)}
             for group, resource, verbs in RBAC_RULES]
    return {
        "serviceaccount.yaml": {"apiVersion": "v1", "kind": "ServiceAccount",
                                "metadata": {"name": SERVICE_ACCOUNT, **meta}},
        "role.yaml": {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                      "metadata": {"name": SERVICE_ACCOUNT, **meta}, "rules": rules},
        "rolebinding.yaml": {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": SERVICE_ACCOUNT, **meta},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SERVICE_ACCOUNT},
            "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": spec.namespace}],
        },
    }


def search_driver_manifest(spec: ClusterSpec) -> dict[str, Any]:
    """A Job that runs `stockscale search --backend kubernetes` inside the cluster under the stockscale
    ServiceAccount (its token mounted: the driver talks to the API server; the trial pods still get none)."""
    args = ["search", "--backend", "kubernetes", "--namespace", spec.namespace, "--image", spec.image,
            "--out", f"{RESULTS}/hp_search_cloud"]
    labels = {LABEL_APP: APP, LABEL_COMPONENT: "search-driver"}
    template = pod_template(spec, labels, args, threads=1, memory_limit=None, results=pvc_volume(spec),
                             port=False, restart_policy="Never")
    template["spec"]["automountServiceAccountToken"] = True
    template["spec"]["serviceAccountName"] = SERVICE_ACCOUNT
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "stockscale-search-driver", "namespace": spec.namespace, "labels": labels},
        "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": spec.ttl_seconds_after_finished,
                 "template": template},
    }


# ------------------------------------------------------------------------------------------------ defaults


def default_manifests(spec: ClusterSpec) -> dict[str, dict[str, Any]]:
    """What `stockscale k8s render` applies: namespace, PVC, RBAC and the large-dataset training PyTorchJob."""
    config = {"multiplier": spec.multiplier, **spec.train}
    return {
        "namespace.yaml": namespace_manifest(spec),
        "pvc.yaml": pvc_manifest(spec),
        **rbac_manifests(spec),
        "pytorchjob.yaml": pytorchjob_manifest(spec, name=DEFAULT_TRAIN_NAME, run_id=DEFAULT_TRAIN_NAME,
                                               config=config, workers=spec.workers,
                                               out=f"{RESULTS}/{DEFAULT_TRAIN_NAME}"),
    }
