"""The objects of one training run: a PyTorchJob (Training Operator v1) or a TrainJob (Kubeflow Trainer v2), and
the NetworkPolicy that guards its rendezvous.

A ReadWriteOnce volume attaches to one node, so by default only the master of a training job mounts the PVC
and the workers get an emptyDir at /results; with `pvc_access_mode: ReadWriteMany` every pod mounts it.

Checkpoints. Rank 0 alone reads and writes the checkpoint folder (checkpoint.py; the other ranks get what they
need from it, and never need the folder to exist), so a job keeps its checkpoints exactly when rank 0's
/results is the PVC: a PyTorchJob's master (unless a search trial's pods mount no PVC), a one-node TrainJob,
or a TrainJob of several nodes on a ReadWriteMany PVC. Where rank 0's /results is an emptyDir, no checkpoint
folder is passed (they would not survive the pod), and one the config names is refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from stockscale.config import TrainConfig
from stockscale.errors import InputError
from stockscale.launch.cluster_spec import MASTER_PORT, ClusterSpec
from stockscale.launch.kubernetes.manifests.naming import (
    APP,
    LABEL_APP,
    LABEL_RUN,
    TRAINER_NODE,
    TRAINJOB_API,
    k8s_name,
    run_labels,
)
from stockscale.launch.pods import (
    RESULTS,
    checkpoint_flags,
    plain_config,
    pod_template,
    pvc_volume,
    scratch_volume,
    train_flags,
)

TRAINER_RUNTIME = "torch-distributed"
PATCH_MANAGER = "stockscale"

# ------------------------------------------------------------------------------------------------- PyTorchJob


def pytorchjob_manifest(
    spec: ClusterSpec,
    *,
    name: str,
    run_id: str,
    config: TrainConfig | Mapping[str, Any],
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
    lost = None if mount_pvc else ("a search trial's pods mount no PVC here (trials_mount_pvc false, or unset "
                                   "with pvc_access_mode ReadWriteOnce), so its checkpoints would go to an "
                                   "emptyDir and be lost with the pod: set trials_mount_pvc true or "
                                   "pvc_access_mode ReadWriteMany in the cluster spec")
    threads, out, args = _train_command(spec, run_id, name, config, workers, out, threads, "with several workers "
                                        "only the master mounts the ReadWriteOnce PVC, but the config reads a file "
                                        "or dataset every worker needs: use pvc_access_mode ReadWriteMany or "
                                        "bundled data with multiplier", lost_checkpoints=lost)
    labels = run_labels(run_id, component, job=name, trial=trial)
    every_pod_mounts = spec.pvc_access_mode == "ReadWriteMany"

    def replica(replicas: int, results: dict[str, Any]) -> dict[str, Any]:
        return {
            "replicas": replicas,
            "restartPolicy": "Never",
            "template": pod_template(spec, labels, args, threads=threads, memory_limit=memory_limit,
                                      results=results, port=True),
        }

    master_results = pvc_volume(spec) if mount_pvc else scratch_volume()
    replicas = {"Master": replica(1, master_results)}
    if workers > 1:
        worker_results = pvc_volume(spec) if mount_pvc and every_pod_mounts else scratch_volume()
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


# ---------------------------------------------------------------------------------- TrainJob (Trainer v2)


def trainjob_manifest(
    spec: ClusterSpec,
    *,
    name: str,
    run_id: str,
    config: TrainConfig | Mapping[str, Any],
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
    A ReadWriteOnce PVC is mounted only when there is one node (every node shares one pod template); several
    nodes on it keep no checkpoints (see the module docstring).
    """
    one_volume_per_node = spec.pvc_access_mode == "ReadWriteOnce" and workers > 1
    lost = (f"a TrainJob with {workers} nodes cannot keep checkpoints on a ReadWriteOnce PVC (its nodes share one "
            "pod template, so none mounts it, and node 0's checkpoints would go to an emptyDir and be lost with "
            "the pod): set pvc_access_mode ReadWriteMany in the cluster spec, or use --k8s-kind pytorchjob (its "
            "master mounts the PVC)") if one_volume_per_node else None
    threads, out, args = _train_command(spec, run_id, name, config, workers, out, threads, "a TrainJob with "
                                        "several nodes cannot share a ReadWriteOnce PVC, but the config reads a "
                                        "file or dataset every node needs: use pvc_access_mode ReadWriteMany",
                                        lost_checkpoints=lost)
    labels = run_labels(run_id, "train", job=name)
    results = scratch_volume() if one_volume_per_node else pvc_volume(spec)
    template = pod_template(spec, labels, args, threads=threads, memory_limit=memory_limit, results=results,
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


def _train_command(spec: ClusterSpec, run_id: str, name: str, config: TrainConfig | Mapping[str, Any], workers: int,
                   out: str | None, threads: int | None, shared_files: str, *,
                   lost_checkpoints: str | None) -> tuple[int, str, list[str]]:
    """(threads, out, args) of a training job's `stockscale train`; `shared_files` is the error when several
    workers would each need a file on a ReadWriteOnce PVC only one of them mounts; `lost_checkpoints` is None
    when rank 0's /results is the PVC, else why its checkpoints would not survive there (then none are passed,
    and a checkpoint folder the config names is refused with it)."""
    if workers < 1:
        raise InputError(f"workers must be at least 1, not {workers}")
    values = plain_config(config)
    reads_files = values.get("data") is not None or str(values.get("source", "")).startswith("csv:")
    if workers > 1 and spec.pvc_access_mode == "ReadWriteOnce" and reads_files:
        raise InputError(shared_files)
    named = values.get("checkpoint_dir")
    if named is not None and lost_checkpoints is not None:
        raise InputError(f"--checkpoint-dir {named}: {lost_checkpoints}")
    if named is not None and not f"{named}/".startswith(f"{RESULTS}/"):
        raise InputError(f"--checkpoint-dir {named}: on the cluster a checkpoint folder must be under {RESULTS} "
                         "(the PVC); anywhere else in the pod it is an emptyDir or the read-only root filesystem")
    values["threads"] = threads = threads or values.get("threads") or spec.threads
    out = out or f"{RESULTS}/{run_id}/{name}"
    checkpoints = [] if lost_checkpoints is not None else checkpoint_flags(values, out)
    return threads, out, ["train", *train_flags(values), *checkpoints, "--out", out]

