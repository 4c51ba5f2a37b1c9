"""Kubernetes objects as plain dicts, one module per kind of object; this package re-exports them all.

Rendering is pure (no cluster, no client library), so `stockscale k8s render`, `--dry-run` and the tests see
exactly what a submission sends.

    naming.py    object names, run ids, the labels and API groups every object and every lookup share
    pods.py      the pod of one `stockscale train` process: container, security, limits, volumes, flags
    training.py  one training run: PyTorchJob, Trainer v2 TrainJob, the rendezvous NetworkPolicy
    searches.py  a search: trials ConfigMap + Indexed Job, OptimizationJob, search_parameters (also Katib's)
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
from stockscale.launch.kubernetes.manifests.naming import (
    APP,
    COMPLETION_INDEX,
    CONTAINER,
    EXPERIMENT_API,
    LABEL_APP,
    LABEL_COMPONENT,
    LABEL_JOB,
    LABEL_RUN,
    LABEL_TRIAL,
    NAME_LIMIT,
    OPTIMIZATIONJOB_API,
    PYTORCHJOB_API,
    RESULTS,
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
from stockscale.launch.kubernetes.manifests.pods import (
    PORT_NAME,
    checkpoint_flags,
    flag_text,
    plain_config,
    pod_template,
    pvc_volume,
    scratch_volume,
    train_flags,
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
    search_parameters,
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

__all__ = [
    "APP", "COMPLETION_INDEX", "CONTAINER", "DEFAULT_TRAIN_NAME", "DISRUPTION_TARGET", "DNS_LABEL",
    "EXPERIMENT_API", "LABEL_APP", "LABEL_COMPONENT", "LABEL_JOB", "LABEL_RUN", "LABEL_TRIAL", "MASTER_PORT",
    "NAME_LIMIT", "OBJECTIVE", "OPTIMIZATIONJOB_API", "OPTIMIZATION_TRIALS_MAX", "PATCH_MANAGER", "PORT_NAME",
    "PYTORCHJOB_API", "RBAC_RULES", "RESULTS", "RUN_ID_LIMIT", "SERVICE_ACCOUNT", "TRAINER_NODE", "TRAINER_PORT",
    "TRAINER_RUNTIME", "TRAINJOB_API", "TRIALS_DIR", "TRIALS_FILE", "TRIAL_API", "PlainDumper", "check_run_id",
    "checkpoint_flags", "default_manifests", "file_name", "flag_text", "indexed_job_manifest", "k8s_name",
    "kustomization", "make_run_id", "namespace_manifest", "network_policy_manifest", "optimizationjob_manifest",
    "param_text", "plain_config", "pod_template", "pvc_manifest", "pvc_volume", "pytorchjob_manifest",
    "rbac_manifests", "run_labels", "run_selector", "scratch_volume", "search_driver_manifest", "search_parameters",
    "to_yaml", "train_flags", "trainjob_manifest", "trials_configmap", "trials_configmap_name", "write_manifests",
]
