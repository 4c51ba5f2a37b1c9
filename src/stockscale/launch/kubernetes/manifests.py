"""Kubernetes objects as plain dicts: namespace, PVC, PyTorchJob, Indexed Job and its trials ConfigMap.

Rendering is pure (no cluster, no client library), so `stockscale k8s render`, `--dry-run` and the tests see
exactly what a submission sends. Every pod runs the worker command stockscale runs locally,
`stockscale train <flags> --out /results/<run>/<name>`, in a container named `pytorch` (the name the Training
Operator looks for) as a non-root user with a read-only root filesystem, no privilege escalation, no
capabilities and CPU/memory limits. Labels tie every object to its run:
`app.kubernetes.io/name=stockscale`, `stockscale/run=<run id>` (and `stockscale/trial=<i>` for search trials).

Volumes. Each DDP worker generates its own shards from the bundled data and the seed, so no pod needs a
shared data volume. The PVC holds outputs (rank 0's run directory) and data a user brings. A ReadWriteOnce
volume attaches to one node, so by default only the master of a training job mounts it and the workers get
an emptyDir at /results; with `pvc_access_mode: ReadWriteMany` every pod mounts it. Search trials may run
on several nodes at once, so they mount the PVC only when it is ReadWriteMany (or `trials_mount_pvc`); their
metrics come from the pod log either way.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml

from stockscale.config import build_train_config
from stockscale.errors import InputError
from stockscale.files import write_text_atomic
from stockscale.launch.kubernetes.spec import DNS_LABEL, MASTER_PORT, ClusterSpec, quantity

CONTAINER = "pytorch"
PORT_NAME = "pytorchjob-port"
RESULTS = "/results"
TRIALS_DIR = "/etc/stockscale"
TRIALS_FILE = f"{TRIALS_DIR}/trials.yaml"
APP = "stockscale"
LABEL_APP = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_RUN = "stockscale/run"
LABEL_JOB = "stockscale/job"
LABEL_TRIAL = "stockscale/trial"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
PYTORCHJOB_API = ("kubeflow.org", "v1", "pytorchjobs")
TRAINJOB_API = ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
OPTIMIZATIONJOB_API = ("trainer.kubeflow.org", "v1alpha1", "optimizationjobs")
EXPERIMENT_API = ("kubeflow.org", "v1beta1", "experiments")  # Katib
TRIAL_API = ("kubeflow.org", "v1beta1", "trials")
TRAINER_RUNTIME = "torch-distributed"
TRAINER_NODE = "node"  # the replicated job and the container of the torch-distributed runtime
TRAINER_PORT = 29500  # the port the Trainer's torch plugin gives PET_MASTER_PORT
PATCH_MANAGER = "stockscale"
DISRUPTION_TARGET = "DisruptionTarget"
DEFAULT_TRAIN_NAME = "stockscale-train"
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


# ------------------------------------------------------------------------------------------- training flags


def plain_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """TrainConfig overrides as YAML/JSON-friendly values (validated; unset values dropped; `lr` spelled so)."""
    values = {("lr" if key == "learning_rate" else key): value for key, value in config.items()
              if value is not None}
    build_train_config(values, "training config")
    return {key: _plain(value) for key, value in values.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return value


def train_flags(config: Mapping[str, Any]) -> list[str]:
    """`--field-with-dashes value` for every override, the flags `stockscale train` takes."""
    flags: list[str] = []
    for key, value in plain_config(config).items():
        flags += [f"--{key.replace('_', '-')}", value if isinstance(value, str) else _number(value)]
    return flags


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"training config: {value!r} cannot be passed as a command-line flag")
    return repr(value)


# --------------------------------------------------------------------------------------------- namespace, PVC


def namespace_manifest(spec: ClusterSpec) -> dict[str, Any]:
    """The namespace. Pod Security: baseline enforced, restricted warned and audited.

    stockscale's own containers meet the restricted profile; the Training Operator adds an init container to
    PyTorchJob workers (waiting for the master's DNS name) without a securityContext, which restricted would
    refuse, so restricted is not enforced.
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


# ------------------------------------------------------------------------------------------------ pod template


def _memory_limit(spec: ClusterSpec, memory_limit: int | None) -> tuple[str, str]:
    """(request, limit): a job's own limit in bytes wins; the request never exceeds the limit."""
    if memory_limit is None:
        return spec.memory_request, spec.memory_limit
    if memory_limit <= 0:
        raise InputError(f"memory limit {memory_limit} must be positive")
    request = spec.memory_request if quantity(spec.memory_request) <= memory_limit else str(memory_limit)
    return request, str(memory_limit)


def _pod_template(
    spec: ClusterSpec,
    labels: dict[str, str],
    args: list[str],
    *,
    threads: int,
    memory_limit: int | None,
    results: dict[str, Any],
    port: bool,
    extra_env: Sequence[dict[str, Any]] = (),
    extra_volumes: Sequence[dict[str, Any]] = (),
    extra_mounts: Sequence[dict[str, Any]] = (),
    deadline: float | None = None,
    restart_policy: str | None = None,
) -> dict[str, Any]:
    memory_request, memory_limit_text = _memory_limit(spec, memory_limit)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["stockscale"],
        "args": list(args),
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "TMPDIR", "value": "/tmp"},
            {"name": "MPLCONFIGDIR", "value": "/tmp/matplotlib"},
            {"name": "STOCKSCALE_CACHE", "value": "/tmp/stockscale-cache"},
            {"name": "OMP_NUM_THREADS", "value": str(threads)},
            *extra_env,
        ],
        "resources": {
            "requests": {"cpu": spec.cpu_request, "memory": memory_request},
            "limits": {"cpu": spec.cpu_limit, "memory": memory_limit_text},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": spec.run_as_user,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "results", "mountPath": RESULTS},
            *extra_mounts,
        ],
    }
    if port:
        container["ports"] = [{"name": PORT_NAME, "containerPort": MASTER_PORT, "protocol": "TCP"}]
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": spec.run_as_user,
            "runAsGroup": spec.run_as_user,
            "fsGroup": spec.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": spec.tmp_size}},
            {"name": "results", **results},
            *extra_volumes,
        ],
    }
    if restart_policy is not None:
        pod_spec["restartPolicy"] = restart_policy
    if deadline is not None:
        pod_spec["activeDeadlineSeconds"] = max(1, math.ceil(deadline))
    if spec.service_account:
        pod_spec["serviceAccountName"] = spec.service_account
    return {"metadata": {"labels": dict(labels)}, "spec": pod_spec}


def _pvc_volume(spec: ClusterSpec) -> dict[str, Any]:
    return {"persistentVolumeClaim": {"claimName": spec.pvc_name}}


def _scratch_volume() -> dict[str, Any]:
    return {"emptyDir": {}}


# ------------------------------------------------------------------------------------------------- PyTorchJob


def pytorchjob_manifest(
    spec: ClusterSpec,
    *,
    name: str,
    run_id: str,
    config: Mapping[str, Any],
    workers: int = 1,
    out: str | None = None,
    memory_limit: int | None = None,
    threads: int | None = None,
    timeout: float | None = None,
    component: str = "train",
    trial: int | None = None,
    mount_pvc: bool = True,
) -> dict[str, Any]:
    """One training run as a PyTorchJob: Master 1 + Worker (workers - 1), each `stockscale train ...`.

    The operator gives every replica MASTER_ADDR/MASTER_PORT/WORLD_SIZE/RANK (and PET_*); nprocPerNode is 1,
    so WORLD_SIZE is the replica count. Pods are never restarted (an OOM kill is a result, not a glitch), and
    running pods are removed when the job ends while finished ones stay for their logs.
    """
    if workers < 1:
        raise InputError(f"workers must be at least 1, not {workers}")
    values = plain_config(config)
    if workers > 1 and spec.pvc_access_mode == "ReadWriteOnce" and _reads_user_files(values):
        raise InputError("with several workers only the master mounts the ReadWriteOnce PVC, but the config "
                         "reads a file or dataset every worker needs: use pvc_access_mode ReadWriteMany or "
                         "bundled data with --multiplier")
    threads = threads or values.get("threads") or spec.threads
    values["threads"] = threads
    out = out or f"{RESULTS}/{run_id}/{name}"
    args = ["train", *train_flags(values), *checkpoint_flags(values, out), "--out", out]
    labels = run_labels(run_id, component, job=name, trial=trial)
    every_pod_mounts = spec.pvc_access_mode == "ReadWriteMany"

    def replica(replicas: int, results: dict[str, Any]) -> dict[str, Any]:
        return {
            "replicas": replicas,
            "restartPolicy": "Never",
            "template": _pod_template(spec, labels, args, threads=threads, memory_limit=memory_limit,
                                      results=results, port=True),
        }

    master_results = _pvc_volume(spec) if mount_pvc else _scratch_volume()
    replicas = {"Master": replica(1, master_results)}
    if workers > 1:
        worker_results = _pvc_volume(spec) if mount_pvc and every_pod_mounts else _scratch_volume()
        replicas["Worker"] = replica(workers - 1, worker_results)
    run_policy: dict[str, Any] = {"cleanPodPolicy": "Running", "backoffLimit": 0,
                                  "ttlSecondsAfterFinished": spec.ttl_seconds_after_finished}
    if timeout is not None:
        run_policy["activeDeadlineSeconds"] = max(1, math.ceil(timeout))
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name, "namespace": spec.namespace, "labels": dict(labels)},
        "spec": {"nprocPerNode": "1", "runPolicy": run_policy, "pytorchReplicaSpecs": replicas},
    }


# ---------------------------------------------------------------------------------- checkpoints (issue 12)


def checkpoint_flags(values: Mapping[str, Any], out: str) -> list[str]:
    """`--checkpoint-dir <out>.checkpoints` unless the config names its own: the one place the Kubernetes side
    wires checkpoints.

    A training job writes its checkpoints beside its run directory on the PVC (not inside it: the run
    directory appears only when training has finished), so the job resubmitted after a disruption, with the
    same `out`, resumes from the last complete epoch.
    """
    return [] if values.get("checkpoint_dir") else ["--checkpoint-dir", f"{out}.checkpoints"]


# ---------------------------------------------------------------------------------- TrainJob (Trainer v2)


def trainjob_manifest(
    spec: ClusterSpec,
    *,
    name: str,
    run_id: str,
    config: Mapping[str, Any],
    workers: int = 1,
    out: str | None = None,
    memory_limit: int | None = None,
    threads: int | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """One training run as a Kubeflow Trainer v2 TrainJob on the stock `torch-distributed` runtime.

    numNodes = workers, one process per node (numProcPerNode 1): the torch plugin gives every node
    PET_NNODES, PET_NPROC_PER_NODE, PET_NODE_RANK (the completion index), PET_MASTER_ADDR and
    PET_MASTER_PORT, which `stockscale train` reads directly (no torchrun in between). Image, command,
    args, env and resources are the trainer's own fields; the pod's and container's security settings,
    volumes and our labels go through a runtime patch, the only place the API lets a TrainJob set them.
    The patch cannot switch off the service account token (automountServiceAccountToken is not patchable).
    A ReadWriteOnce PVC is mounted only when there is one node (every node shares one pod template).
    """
    if workers < 1:
        raise InputError(f"workers must be at least 1, not {workers}")
    values = plain_config(config)
    one_volume_per_node = spec.pvc_access_mode == "ReadWriteOnce" and workers > 1
    if one_volume_per_node and _reads_user_files(values):
        raise InputError("a TrainJob with several nodes cannot share a ReadWriteOnce PVC, but the config reads "
                         "a file or dataset every node needs: use pvc_access_mode ReadWriteMany")
    threads = threads or values.get("threads") or spec.threads
    values["threads"] = threads
    out = out or f"{RESULTS}/{run_id}/{name}"
    args = ["train", *train_flags(values), *checkpoint_flags(values, out), "--out", out]
    labels = run_labels(run_id, "train", job=name)
    results = _scratch_volume() if one_volume_per_node else _pvc_volume(spec)
    template = _pod_template(spec, labels, args, threads=threads, memory_limit=memory_limit, results=results,
                             port=False, extra_env=[{"name": "PYTHONUNBUFFERED", "value": "1"}])
    container = template["spec"]["containers"][0]
    pod_patch: dict[str, Any] = {
        "securityContext": template["spec"]["securityContext"],
        "volumes": template["spec"]["volumes"],
        "containers": [{"name": TRAINER_NODE, "securityContext": container["securityContext"],
                        "volumeMounts": container["volumeMounts"]}],
    }
    if spec.service_account:
        pod_patch["serviceAccountName"] = spec.service_account
    trainjob_spec: dict[str, Any] = {
        "runtimeRef": {"apiGroup": TRAINJOB_API[0], "kind": "ClusterTrainingRuntime", "name": TRAINER_RUNTIME},
        "trainer": {
            "image": container["image"],
            "command": container["command"],
            "args": container["args"],
            "env": container["env"],
            "numNodes": workers,
            "numProcPerNode": 1,
            "resourcesPerNode": container["resources"],
        },
        "runtimePatches": [{
            "manager": PATCH_MANAGER,
            "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [{
                "name": TRAINER_NODE,
                "template": {"spec": {"template": {"metadata": {"labels": dict(labels)}, "spec": pod_patch}}},
            }]}}},
        }],
    }
    if timeout is not None:
        trainjob_spec["activeDeadlineSeconds"] = max(1, math.ceil(timeout))
    return {
        "apiVersion": f"{TRAINJOB_API[0]}/{TRAINJOB_API[1]}",
        "kind": "TrainJob",
        "metadata": {"name": name, "namespace": spec.namespace, "labels": dict(labels)},
        "spec": trainjob_spec,
    }


# ------------------------------------------------------------------------- OptimizationJob (Trainer v2)

OBJECTIVE = "val_loss"
OPTIMIZATION_TRIALS_MAX = 100  # the CRD's maximum numTrials


def optimizationjob_manifest(
    spec: ClusterSpec,
    *,
    run_id: str,
    configs: Sequence[Mapping[str, Any]],
    parallelism: int,
    algorithm: str = "grid",
    threads: int | None = None,
    memory_limit: int | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """A search as one Trainer v2 OptimizationJob: the settings that vary between `configs` become categorical
    parameters, the rest fixed flags of every trial's `stockscale train`.

    The controller hands a trial its parameters as env vars (`<optimization_env_prefix><name>`), which the
    trial's args take through Kubernetes' own `$(VAR)` expansion. `grid` needs `configs` to be the full
    product of the values (the API's grid takes categorical parameters only); `random` samples len(configs)
    points from the same values. Each trial writes to /results/<run>/trials/<its pod name>.
    """
    if algorithm not in ("grid", "random"):
        raise InputError(f"an OptimizationJob searches by grid or random, not {algorithm!r}")
    if len(configs) > OPTIMIZATION_TRIALS_MAX:
        raise InputError(f"an OptimizationJob runs at most {OPTIMIZATION_TRIALS_MAX} trials, not {len(configs)}: "
                         "use --k8s-kind job")
    values, choices, varying, fixed = search_parameters(configs, "an OptimizationJob", algorithm, _param_text)
    fixed.setdefault("threads", threads or spec.threads)
    out = f"{RESULTS}/{run_id}/trials/$(POD_NAME)"
    params = [arg for key in varying for arg in (f"--{key.replace('_', '-')}",
                                                 f"$({spec.optimization_env_prefix}{key})")]
    template = trainjob_manifest(spec, name=run_id, run_id=run_id, config=fixed, workers=1, out=out,
                                 memory_limit=memory_limit, timeout=timeout)
    trainer = template["spec"]["trainer"]
    trainer["args"] = [*trainer["args"][:-2], *params, *trainer["args"][-2:]]
    trainer["env"].append({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    labels = run_labels(run_id, "search")
    search_algorithm: dict[str, Any] = {"grid": {}} if algorithm == "grid" else {"random": {}}
    return {
        "apiVersion": f"{OPTIMIZATIONJOB_API[0]}/{OPTIMIZATIONJOB_API[1]}",
        "kind": "OptimizationJob",
        "metadata": {"name": run_id, "namespace": spec.namespace, "labels": dict(labels)},
        "spec": {
            "numTrials": len(values),
            "parallelTrials": max(1, min(parallelism, len(values))),
            "objectives": [{"metric": OBJECTIVE, "direction": "Minimize"}],
            "searchAlgorithm": search_algorithm,
            "parameters": [{"name": key, "searchSpace": {"categorical": {"choices": choices[key]}}}
                           for key in varying],
            "trainJobTemplate": {"metadata": {"labels": dict(labels)}, "spec": template["spec"]},
        },
    }


def search_parameters(
    configs: Sequence[Mapping[str, Any]], what: str, algorithm: str, text: Callable[[Any], str],
) -> tuple[list[dict[str, Any]], dict[str, list[str]], list[str], dict[str, Any]]:
    """What a search run by a controller (an OptimizationJob, a Katib Experiment) makes of `configs`: the
    validated configs, each setting's distinct values as `text` spells them, the settings that vary (its
    parameters), and the ones that do not (fixed flags of every trial). `grid` needs the configs to be the
    full product of the values; `what` names the kind in messages."""
    values = [plain_config(config) for config in configs]
    if not values:
        raise InputError("a search needs at least one trial")
    keys = list(dict.fromkeys(key for config in values for key in config))
    missing = [key for key in keys if any(key not in config for config in values)]
    if missing:
        raise InputError(f"{what} needs every trial to set the same keys; {', '.join(missing)} vary")
    choices = {key: list(dict.fromkeys(text(config[key]) for config in values)) for key in keys}
    varying = [key for key in keys if len(choices[key]) > 1]
    if not varying:
        raise InputError(f"{what} needs at least one setting that varies between trials")
    if algorithm == "grid" and math.prod(len(choices[key]) for key in varying) != len(values):
        raise InputError("the trials are not a full grid of their values: use --k8s-algorithm random or "
                         "--k8s-kind job")
    fixed = {key: values[0][key] for key in keys if key not in varying}
    return values, choices, varying, fixed


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else _number(value)
    if len(text) > 64:
        raise InputError(f"an OptimizationJob choice has at most 64 characters: {text[:40]}...")
    return text


# ------------------------------------------------------------------------------------ rendezvous policy


def network_policy_manifest(spec: ClusterSpec, run_id: str, port: int = MASTER_PORT) -> dict[str, Any]:
    """Only the run's own pods may reach its training pods, the rendezvous port (`port`) included.

    DDP peers also connect to each other on ports the process group picks (gloo, NCCL), so the policy
    admits every port from the run's own pods and nothing from anywhere else (an annotation names the
    rendezvous port it protects). Enforced only where the network plugin implements NetworkPolicy.
    """
    selector = {"matchLabels": {LABEL_APP: APP, LABEL_RUN: run_id}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": k8s_name(run_id, "rendezvous", limit=63), "namespace": spec.namespace,
                     "labels": run_labels(run_id, "network"),
                     "annotations": {"stockscale/rendezvous-port": str(port)}},
        "spec": {
            "podSelector": selector,
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": selector}]}],
        },
    }


def _reads_user_files(values: Mapping[str, Any]) -> bool:
    return values.get("data") is not None or str(values.get("source", "")).startswith("csv:")


# ----------------------------------------------------------------------------------------- Indexed Job search


def trials_configmap(spec: ClusterSpec, run_id: str, trials: list[dict[str, Any]]) -> dict[str, Any]:
    """The search's configs, one YAML list: pod number i trains entry i (`stockscale train --trials`)."""
    text = yaml.dump([plain_config(trial) for trial in trials], Dumper=_Dumper, sort_keys=False,
                     default_flow_style=False)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": trials_configmap_name(run_id), "namespace": spec.namespace,
                     "labels": run_labels(run_id, "search")},
        "data": {"trials.yaml": text},
    }


def trials_configmap_name(run_id: str) -> str:
    return k8s_name(run_id, "trials", limit=63)


def indexed_job_manifest(
    spec: ClusterSpec,
    *,
    run_id: str,
    completions: int,
    parallelism: int,
    memory_limit: int | None = None,
    threads: int | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Every trial of a search in one Indexed Job: pod i trains entry i of the trials ConfigMap.

    `backoffLimitPerIndex: 0` lets one trial fail (out of memory, say) without failing or retrying the others
    (Kubernetes 1.29 or newer; older API servers drop the field, which the launcher checks). The
    podFailurePolicy ignores failures of pods the cluster disrupted (preemption, eviction, node drain: a
    DisruptionTarget condition), so such an index runs again instead of counting as failed; it needs
    restartPolicy Never. `timeout` becomes each pod's activeDeadlineSeconds: a per-trial limit.
    """
    if completions < 1:
        raise InputError("a search needs at least one trial")
    threads = threads or spec.threads
    args = ["train", "--trials", TRIALS_FILE, "--out", f"{RESULTS}/{run_id}/trials/$(JOB_COMPLETION_INDEX)"]
    labels = run_labels(run_id, "search")
    results = _pvc_volume(spec) if spec.mount_pvc_in_trials else _scratch_volume()
    template = _pod_template(
        spec, labels, args, threads=threads, memory_limit=memory_limit, results=results, port=False,
        extra_env=[
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "JOB_COMPLETION_INDEX",
             "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}},
        ],
        extra_volumes=[{"name": "trials", "configMap": {"name": trials_configmap_name(run_id)}}],
        extra_mounts=[{"name": "trials", "mountPath": TRIALS_DIR, "readOnly": True}],
        deadline=timeout,
        restart_policy="Never",
    )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": run_id, "namespace": spec.namespace, "labels": dict(labels)},
        "spec": {
            "completionMode": "Indexed",
            "completions": completions,
            "parallelism": max(1, min(parallelism, completions)),
            "backoffLimitPerIndex": 0,
            "podFailurePolicy": {"rules": [
                {"action": "Ignore", "onPodConditions": [{"type": DISRUPTION_TARGET, "status": "True"}]},
            ]},
            "ttlSecondsAfterFinished": spec.ttl_seconds_after_finished,
            "template": template,
        },
    }


# ------------------------------------------------------------------------------------------------- RBAC

SERVICE_ACCOUNT = "stockscale"
# Exactly the calls the launcher and `stockscale k8s` make (tests/test_k8s_rbac.py checks every request).
RBAC_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("", "configmaps", ("create", "list", "delete")),
    ("", "pods", ("get", "list", "watch", "delete")),
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
    template = _pod_template(spec, labels, args, threads=1, memory_limit=None, results=_pvc_volume(spec),
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


# ------------------------------------------------------------------------------------------ defaults, files


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


def kustomization(files: Iterable[str]) -> dict[str, Any]:
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": list(files)}


def file_name(obj: Mapping[str, Any]) -> str:
    return f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


class _Dumper(yaml.SafeDumper):
    """Plain YAML: a value used twice is written twice, never as an anchor and alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(obj: Mapping[str, Any]) -> str:
    return yaml.dump(dict(obj), Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def write_manifests(out_dir: Path, files: Mapping[str, Mapping[str, Any]],
                    unlisted: Mapping[str, Mapping[str, Any]] | None = None) -> list[Path]:
    """Write `{file name: object}` plus a kustomization.yaml listing them; each file replaced atomically.
    `unlisted` files are written too but left out of the kustomization (applied only on purpose)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} exists and is not a directory")
    written = []
    try:
        for name, obj in {**files, **(unlisted or {})}.items():
            path = out_dir / name
            write_text_atomic(path, to_yaml(obj))
            written.append(path)
        path = out_dir / "kustomization.yaml"
        write_text_atomic(path, to_yaml(kustomization(files)))
    except OSError as error:
        raise InputError(f"cannot write manifests to {out_dir} ({error.strerror})") from None
    return [*written, path]

