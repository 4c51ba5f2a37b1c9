"""The objects of a search: the Indexed Job stockscale schedules itself (with its trials ConfigMap), and the
Trainer v2 OptimizationJob whose controller schedules the trials; `search_parameters`, the split of the configs
into parameters and fixed flags, is shared with Katib's Experiment (katib.py).

Search trials may run on several nodes at once, so they mount the PVC only when it is ReadWriteMany (or
`trials_mount_pvc`); their metrics come from the pod log either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import yaml

from stockscale.errors import InputError
from stockscale.launch.kubernetes.manifests.naming import (
    COMPLETION_INDEX,
    OPTIMIZATIONJOB_API,
    RESULTS,
    k8s_name,
    run_labels,
)
from stockscale.launch.kubernetes.manifests.pods import (
    flag_text,
    plain_config,
    pod_template,
    pvc_volume,
    scratch_volume,
)
from stockscale.launch.kubernetes.manifests.training import trainjob_manifest
from stockscale.launch.kubernetes.manifests.writing import PlainDumper
from stockscale.launch.kubernetes.spec import ClusterSpec

TRIALS_DIR = "/etc/stockscale"
TRIALS_FILE = f"{TRIALS_DIR}/trials.yaml"
DISRUPTION_TARGET = "DisruptionTarget"
OBJECTIVE = "val_loss"
OPTIMIZATION_TRIALS_MAX = 100  # the CRD's maximum numTrials

# ----------------------------------------------------------------------------------------- Indexed Job search


def trials_configmap(spec: ClusterSpec, run_id: str, trials: list[dict[str, Any]]) -> dict[str, Any]:
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
    results = pvc_volume(spec) if spec.mount_pvc_in_trials else scratch_volume()
    template = pod_template(
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



# ------------------------------------------------------------------------- OptimizationJob (Trainer v2)


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
    values, choices, varying, fixed = search_parameters(configs, "an OptimizationJob", algorithm, param_text)
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


def param_text(value: Any) -> str:
    """A parameter's value as an OptimizationJob choice (a string of at most 64 characters)."""
    text = value if isinstance(value, str) else flag_text(value)
    if len(text) > 64:
        raise InputError(f"an OptimizationJob choice has at most 64 characters: {text[:40]}...")
    return text

