"""Kubernetes objects as plain dicts, one module per kind of object; this package re-exports them all.

Rendering is pure (no cluster, no client library), so `stockscale k8s render`, `--dry-run` and the tests see
exactly what a submission sends. What every pod looks like is launch/pods.py's (docker runs the same pods).

    naming.py    object names, run ids, the labels and API groups every object and every lookup share
    training.py  one training run: PyTorchJob, Trainer v2 TrainJob, the rendezvous NetworkPolicy
    searches.py  a search: trials ConfigMap + Indexed Job, OptimizationJob, the split of a space (`searched`)
    katib.py     a search as a Katib Experiment
    cluster.py   once per namespace: namespace, PVC, RBAC, search driver, what `k8s render` writes
    writing.py   YAML files and the kustomization.yaml
"""

from stockscale.launch.kubernetes.manifests.cluster import (
    DEFAULT_TRAIN_NAME,
    RBAC_RULES,
    SERVICE_ACCOUNT,
    default_manifests,
    namespace_manifest,
    pvc_manifest,
    rbac_manifests,
    search_driver_manifest,
)
from stockscale.launch.kubernetes.manifests.katib import (
    EXPERIMENT_LABEL,
    METRICS_FORMAT,
    experiment_manifest,
    value_text,
)
from stockscale.launch.kubernetes.manifests.naming import (
    APP,
    COMPLETION_INDEX,
    CUSTOM_KINDS,
    EXPERIMENT_API,
    LABEL_APP,
    LABEL_COMPONENT,
    LABEL_JOB,
    LABEL_RUN,
    LABEL_TRIAL,
    NAME_LIMIT,
    OPTIMIZATIONJOB_API,
    PYTORCHJOB_API,
    RUN_ID_LIMIT,
    TRAINER_NODE,
    TRAINER_PORT,
    TRAINJOB_API,
    TRIAL_API,
    check_run_id,
    k8s_name,
    make_run_id,
    run_labels,
    run_selector,
)
from stockscale.launch.kubernetes.manifests.searches import (
    DISRUPTION_TARGET,
    OBJECTIVE,
    OPTIMIZATION_TRIALS_MAX,
    TRIALS_DIR,
    TRIALS_FILE,
    indexed_job_manifest,
    optimizationjob_manifest,
    param_text,
    searched,
    trials_configmap,
    trials_configmap_name,
)
from stockscale.launch.kubernetes.manifests.training import (
    PATCH_MANAGER,
    TRAINER_RUNTIME,
    network_policy_manifest,
    pytorchjob_manifest,
    trainjob_manifest,
)
from stockscale.launch.kubernetes.manifests.writing import (
    PlainDumper,
    file_name,
    kustomization,
    to_yaml,
    write_manifests,
)
from stockscale.launch.kubernetes.spec import DNS_LABEL, MASTER_PORT
from stockscale.launch.pods import RESULTS  # where every pod's results volume is mounted: part of every object's paths

__all__ = [
    "APP", "COMPLETION_INDEX", "CUSTOM_KINDS", "DEFAULT_TRAIN_NAME", "DISRUPTION_TARGET", "DNS_LABEL",
    "EXPERIMENT_API", "EXPERIMENT_LABEL", "LABEL_APP", "LABEL_COMPONENT", "LABEL_JOB", "LABEL_RUN", "LABEL_TRIAL",
    "MASTER_PORT", "METRICS_FORMAT", "NAME_LIMIT", "OBJECTIVE", "OPTIMIZATIONJOB_API", "OPTIMIZATION_TRIALS_MAX",
    "PATCH_MANAGER", "PYTORCHJOB_API", "RBAC_RULES", "RESULTS", "RUN_ID_LIMIT", "SERVICE_ACCOUNT", "TRAINER_NODE",
    "TRAINER_PORT", "TRAINER_RUNTIME", "TRAINJOB_API", "TRIALS_DIR", "TRIALS_FILE", "TRIAL_API", "PlainDumper",
    "check_run_id", "default_manifests", "experiment_manifest", "file_name", "indexed_job_manifest", "k8s_name",
    "kustomization", "make_run_id", "namespace_manifest", "network_policy_manifest", "optimizationjob_manifest",
    "param_text", "pvc_manifest", "pytorchjob_manifest", "rbac_manifests", "run_labels", "run_selector", "searched",
    "search_driver_manifest", "to_yaml", "trainjob_manifest", "trials_configmap", "trials_configmap_name",
    "value_text", "write_manifests",
]
