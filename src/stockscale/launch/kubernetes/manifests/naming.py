"""The names and labels that tie a run's objects together: one place for what every manifest and every lookup
of a run (`stockscale k8s status|logs|delete`, the launcher's watches) must agree on.

Labels: `app.kubernetes.io/name=stockscale`, `stockscale/run=<run id>` (and `stockscale/trial=<i>` for search
trials). Object names are DNS-1035 labels, shortened with a hash where they would be too long.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import UTC, datetime

from stockscale.errors import InputError
from stockscale.launch.cluster_spec import DNS_LABEL

APP = "stockscale"
LABEL_APP = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_RUN = "stockscale/run"
LABEL_JOB = "stockscale/job"
LABEL_TRIAL = "stockscale/trial"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
# The one label an OptimizationJob's trial TrainJobs carry (kubeflow/trainer optimizationjob_controller.go at
# commit c4c5e1bf57d96460ea7b71fead104737a4afaf27, constructTrialTrainJob): not the run's labels.
OPTIMIZATION_JOB_LABEL = "trainer.kubeflow.org/optimization-job"
PYTORCHJOB_API = ("kubeflow.org", "v1", "pytorchjobs")
TRAINJOB_API = ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
OPTIMIZATIONJOB_API = ("trainer.kubeflow.org", "v1alpha1", "optimizationjobs")
EXPERIMENT_API = ("kubeflow.org", "v1beta1", "experiments")  # Katib
TRIAL_API = ("kubeflow.org", "v1beta1", "trials")
CUSTOM_KINDS = {"PyTorchJob": PYTORCHJOB_API, "TrainJob": TRAINJOB_API, "OptimizationJob": OPTIMIZATIONJOB_API,
                "Experiment": EXPERIMENT_API, "Trial": TRIAL_API}  # (group, version, plural)
TRAINER_NODE = "node"  # the replicated job and the container of the torch-distributed runtime
TRAINER_PORT = 29500  # the port the Trainer's torch plugin gives PET_MASTER_PORT
NAME_LIMIT = 50  # leaves room for "-worker-NNN" and the operator's service names within 63 characters
RUN_ID_LIMIT = 40


def k8s_name(*parts: str, limit: int = NAME_LIMIT) -> str:
    """A DNS-1035 label made of `parts` (lowercased, other characters become '-'), shortened with a hash."""
    text = "-".join(part for part in parts if part)
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower())
    name = re.sub(r"-{2,}", "-", name).strip("-") or "x"
    if not name[0].isalpha():
        name = f"s-{name}"
    if len(name) > limit:
        digest = hashlib.sha1(text.encode()).hexdigest()[:6]
        name = f"{name[: limit - 7].rstrip('-')}-{digest}"
    return name


def make_run_id(prefix: str = "stockscale", now: datetime | None = None) -> str:
    """A fresh run id: `<prefix>-<UTC yyyymmdd-hhmmss>-<4 hex>`, unique enough for one namespace."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return k8s_name(prefix, stamp, secrets.token_hex(2), limit=RUN_ID_LIMIT)


def check_run_id(run_id: str) -> str:
    """A run id given by the user must already be a label value and an object name."""
    if len(run_id) > RUN_ID_LIMIT or not DNS_LABEL.match(run_id) or not run_id[0].isalpha():
        raise InputError(f"run id {run_id!r} must be lowercase letters, digits and '-', start with a letter "
                         f"and have at most {RUN_ID_LIMIT} characters")
    return run_id


def run_labels(run_id: str, component: str, job: str | None = None, trial: int | None = None) -> dict[str, str]:
    labels = {LABEL_APP: APP, LABEL_COMPONENT: component, LABEL_RUN: run_id}
    if job is not None:
        labels[LABEL_JOB] = job
    if trial is not None:
        labels[LABEL_TRIAL] = str(trial)
    return labels


def run_selector(run_id: str) -> str:
    return f"{LABEL_APP}={APP},{LABEL_RUN}={run_id}"

