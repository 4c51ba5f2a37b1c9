"""The objects of a search: the Indexed Job stockscale schedules itself (with its trials ConfigMap), and the
Trainer v2 OptimizationJob whose controller schedules the trials; `searched`, the split of a space into the
parameters a controller varies and the flags every trial shares, is Katib's Experiment's too (katib.py).

Search trials may run on several nodes at once, so they mount the PVC only when it is ReadWriteMany (or
`trials_mount_pvc`); their metrics come from the pod log either way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from stockscale.config import TrainConfig, TrainOverrides
from stockscale.errors import InputError
from stockscale.launch.cluster_spec import ClusterSpec
from stockscale.launch.kubernetes.manifests.naming import COMPLETION_INDEX, OPTIMIZATIONJOB_API, k8s_name, run_labels
from stockscale.launch.kubernetes.manifests.training import trainjob_manifest
from stockscale.launch.kubernetes.manifests.writing import PlainDumper
from stockscale.launch.pods import RESULTS, flag_text, plain_config, pod_template, pvc_volume, scratch_volume
from stockscale.search.registry import STRATEGIES
from stockscale.space import Space
from stockscale.worker import STOP_FILE_ENV, JsonValue

TRIALS_DIR = "/etc/stockscale"
TRIALS_FILE = f"{TRIALS_DIR}/trials.yaml"
PODINFO_DIR = "/etc/podinfo"  # the pod's own annotations (a downward-API volume): where a stop request appears
STOP_FILE = f"{PODINFO_DIR}/annotations"
DISRUPTION_TARGET = "DisruptionTarget"
OBJECTIVE = "val_loss"
OPTIMIZATION_TRIALS_MAX = 100  # the CRD's maximum numTrials

# ----------------------------------------------------------------------------------------- Indexed Job search


def trials_configmap(spec: ClusterSpec, run_id: str, trials: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The search's configs, one YAML list: pod number i trains entry i (`stockscale train --trials`)."""
    text = yaml.dump([plain_config(trial) for trial in trials], Dumper=PlainDumper, sort_keys=False,
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
    stop_file: bool = True,
) -> dict[str, Any]:
    """Every trial of a search in one Indexed Job: pod i trains entry i of the trials ConfigMap.

    `backoffLimitPerIndex: 0` lets one trial fail (out of memory, say) without failing or retrying the others
    (Kubernetes 1.29 or newer; older API servers drop the field, which the launcher checks). The
    podFailurePolicy ignores failures of pods the cluster disrupted (preemption, eviction, node drain: a
    DisruptionTarget condition), so such an index runs again instead of counting as failed; it needs
    restartPolicy Never. `timeout` becomes each pod's activeDeadlineSeconds: a per-trial limit.

    A pruned trial must end as a success: a failed index fails the whole Job at its end (reason
    FailedIndexes, even under backoffLimitPerIndex), and an Ignore rule would make a new pod train it again
    (https://kubernetes.io/docs/concepts/workloads/controllers/job/, "Backoff limit per index" and "Pod
    failure policy", batch/v1 as of Kubernetes 1.33; the kubelet's rewrite of a downward-API file: "Expose
    Pod Information to Containers Through Files").
    So the driver asks a pod to stop by annotating it (`stockscale/stop`); the pod sees its annotations in a
    downward-API volume, which the kubelet rewrites when they change, and its worker, told the file by
    $STOCKSCALE_STOP_FILE, ends after the epoch it is in and exits 0 (worker.py). `stop_file` False leaves
    that out (the docker backend runs these pods as containers and stops a pruned one itself).
    """
    if completions < 1:
        raise InputError("a search needs at least one trial")
    threads = threads or spec.threads
    args = ["train", "--trials", TRIALS_FILE, "--out", f"{RESULTS}/{run_id}/trials/$(JOB_COMPLETION_INDEX)"]
    labels = run_labels(run_id, "search")
    results = pvc_volume(spec) if spec.mount_pvc_in_trials else scratch_volume()
    podinfo: list[dict[str, Any]] = [{"name": "podinfo", "downwardAPI": {"items": [
        {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}}]}}] if stop_file else []
    template = pod_template(
        spec, labels, args, threads=threads, memory_limit=memory_limit, results=results, port=False,
        extra_env=[
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "JOB_COMPLETION_INDEX",
             "valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}},
            *([{"name": STOP_FILE_ENV, "value": STOP_FILE}] if stop_file else []),
        ],
        extra_volumes=[{"name": "trials", "configMap": {"name": trials_configmap_name(run_id)}}, *podinfo],
        # Not a subPath mount: the kubelet does not update a downward-API file mounted with subPath.
        extra_mounts=[{"name": "trials", "mountPath": TRIALS_DIR, "readOnly": True},
                      *({"name": volume["name"], "mountPath": PODINFO_DIR, "readOnly": True} for volume in podinfo)],
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



# ------------------------------------------------------------------------- OptimizationJob (Trainer v2)


def searched(space: Space, config: TrainConfig, what: str) -> tuple[list[str], dict[str, Any]]:
    """How a controller (an OptimizationJob, a Katib Experiment) searches `space` over every trial's `config`:
    the parameters it varies (the space's, less a list of one value) and the settings every trial shares as
    flags (`config` with those one values, less what varies). Each value the space can give is validated here,
    before anything is submitted."""
    varying = [name for name, parameter in space.items()
               if parameter.choices is None or len(parameter.choices) > 1]
    if not varying:
        raise InputError(f"{what} needs at least one setting that varies between trials")
    for name in varying:
        parameter = space[name]
        ends = [parameter.min, parameter.max] if parameter.choices is None else []
        values: list[JsonValue] = [*(parameter.choices or ()), *(int(end or 0) if parameter.type == "int" else end
                                                                 for end in ends)]
        for value in values:
            config.updated({name: value}, f"{what} parameter {name}")
    one: TrainOverrides = {name: parameter.choices[0] for name, parameter in space.items()
                           if name not in varying and parameter.choices is not None}
    shared = plain_config(config.updated(one, what) if one else config)
    return varying, {key: value for key, value in shared.items() if key not in varying}


def check_grid(space: Space, varying: list[str], trials: int) -> None:
    """A controller's grid walks exactly the product of the lists: `trials` must be all of it."""
    points = math.prod(len(space[name].choices or ()) for name in varying)
    if trials != points:
        raise InputError(f"{trials} trials are not a full grid of the space's {points} points: use strategy "
                         "random, or kind job")


def optimizationjob_manifest(
    spec: ClusterSpec,
    *,
    run_id: str,
    space: Space,
    config: TrainConfig,
    trials: int,
    parallelism: int,
    algorithm: str = "grid",
    threads: int | None = None,
    memory_limit: int | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """A search as one Trainer v2 OptimizationJob: the space's lists become categorical parameters, `config`
    the fixed flags of every trial's `stockscale train`.

    The controller hands a trial its parameters as env vars, `KUBEFLOW_TRAINER_OPT_<NAME>` (the name
    upper-cased, `-` as `_`), appended to the trainer's env (EnvOptParamPrefix and constructTrialTrainJob,
    kubeflow/trainer pkg/controller/optimizationjob_controller.go at commit
    c4c5e1bf57d96460ea7b71fead104737a4afaf27); `stockscale train` reads them itself (kubeflow_trial.py), so
    the args carry only what every trial shares. `grid` asks for the full product of the lists (the API's grid
    takes categorical parameters only); `random` for `trials` points from the same lists: what the controller
    makes of them is its own (docs/kubernetes.md). Each trial writes to /results/<run>/trials/<its pod name>.
    """
    algorithms = [known.optimization_job for known in STRATEGIES.values() if known.optimization_job]
    if algorithm not in algorithms:
        raise InputError(f"an OptimizationJob searches by {' or '.join(algorithms)}, not {algorithm!r}")
    if trials > OPTIMIZATION_TRIALS_MAX:
        raise InputError(f"an OptimizationJob runs at most {OPTIMIZATION_TRIALS_MAX} trials, not {trials}: "
                         "use kind job")
    varying, fixed = searched(space, config, "an OptimizationJob")
    ranges = [name for name in varying if space[name].choices is None]
    if ranges:
        raise InputError(f"an OptimizationJob searches lists only, and {', '.join(ranges)} is a range: use kind "
                         "katib or job")
    if algorithm == "grid":
        check_grid(space, varying, trials)
    values = {**fixed, "threads": fixed.get("threads") or threads or spec.threads}
    out = f"{RESULTS}/{run_id}/trials/$(POD_NAME)"
    template = trainjob_manifest(spec, name=run_id, run_id=run_id, config=values, workers=1, out=out,
                                 memory_limit=memory_limit, timeout=timeout)
    trainer = template["spec"]["trainer"]
    trainer["env"].append({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    labels = run_labels(run_id, "search")
    return {
        "apiVersion": f"{OPTIMIZATIONJOB_API[0]}/{OPTIMIZATIONJOB_API[1]}",
        "kind": "OptimizationJob",
        "metadata": {"name": run_id, "namespace": spec.namespace, "labels": dict(labels)},
        "spec": {
            "numTrials": trials,
            "parallelTrials": max(1, min(parallelism, trials)),
            "objectives": [{"metric": OBJECTIVE, "direction": "Minimize"}],
            "searchAlgorithm": {algorithm: {}},
            "parameters": [{"name": key, "searchSpace": {"categorical": {
                "choices": list(dict.fromkeys(param_text(value) for value in space[key].choices or ()))}}}
                           for key in varying],
            "trainJobTemplate": {"metadata": {"labels": dict(labels)}, "spec": template["spec"]},
        },
    }


def param_text(value: Any) -> str:
    """A parameter's value as a controller carries it (a string, at most 64 characters for an OptimizationJob),
    and as `stockscale train` parses it back."""
    text = value if isinstance(value, str) else flag_text(value)
    if len(text) > 64:
        raise InputError(f"an OptimizationJob choice has at most 64 characters: {text[:40]}...")
    return text
