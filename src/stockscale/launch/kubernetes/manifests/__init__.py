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

from stockscale.launch.cluster_spec import DNS_LABEL, MASTER_PORT
from stockscale.launch.kubernetes.manifests.cluster import (
    RBAC_RULES,
    default_manifests,
    rbac_manifests,
    search_driver_manifest,
)
from stockscale.launch.kubernetes.manifests.katib import EXPERIMENT_LABEL, experiment_manifest, value_text
from stockscale.launch.kubernetes.manifests.naming import (
    APP,
    COMPLETION_INDEX,
    CUSTOM_KINDS,
    LABEL_APP,
    LABEL_RUN,
    LABEL_TRIAL,
    NAME_LIMIT,
    OPTIMIZATION_JOB_LABEL,
    PYTORCHJOB_API,
    TRAINER_NODE,
    TRAINER_PORT,
    check_run_id,
    k8s_name,
    make_run_id,
    run_selector,
)
from stockscale.launch.kubernetes.manifests.searches import (
    OBJECTIVE,
    TRIALS_DIR,
    indexed_job_manifest,
    optimizationjob_manifest,
    trials_configmap,
)
from stockscale.launch.kubernetes.manifests.training import (
    network_policy_manifest,
    pytorchjob_manifest,
    trainjob_manifest,
)
from stockscale.launch.kubernetes.manifests.writing import file_name, to_yaml, write_manifests
from stockscale.launch.pods import RESULTS  # where every pod's results volume is mounted: part of every object's paths

__all__ = [
    "APP", "COMPLETION_INDEX", "CUSTOM_KINDS", "DNS_LABEL", "EXPERIMENT_LABEL", "LABEL_APP", "LABEL_RUN",
    "LABEL_TRIAL", "MASTER_PORT", "NAME_LIMIT", "OBJECTIVE", "OPTIMIZATION_JOB_LABEL", "PYTORCHJOB_API",
    "RBAC_RULES", "RESULTS",
    "TRAINER_NODE", "TRAINER_PORT", "TRIALS_DIR", "check_run_id", "default_manifests", "experiment_manifest",
    "file_name", "indexed_job_manifest", "k8s_name", "make_run_id", "network_policy_manifest",
    "optimizationjob_manifest", "pytorchjob_manifest", "rbac_manifests", "run_selector", "search_driver_manifest",
    "to_yaml", "trainjob_manifest", "trials_configmap", "value_text", "write_manifests",
]
