"""What a run left in the cluster, found by its labels: status, logs, deletion (`stockscale k8s ...`).

Every object stockscale creates carries `app.kubernetes.io/name=stockscale` and `stockscale/run=<run id>`;
pods inherit the labels from their templates. Listing asks the API server for that label selector and checks
the labels again here, so a server that ignores the selector cannot widen what gets deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stockscale.launch.kubernetes.api import KubeApi
from stockscale.launch.kubernetes.logs import TAIL_LINES, iter_lines
from stockscale.launch.kubernetes.manifests import (
    APP,
    CONTAINER,
    EXPERIMENT_API,
    LABEL_APP,
    LABEL_RUN,
    OPTIMIZATIONJOB_API,
    PYTORCHJOB_API,
    TRAINER_NODE,
    TRAINJOB_API,
    TRIAL_API,
    run_selector,
)
from stockscale.launch.kubernetes.outcome import container_times, name_of, parse_time, pod_index, state

CUSTOM_KINDS = {"PyTorchJob": PYTORCHJOB_API, "TrainJob": TRAINJOB_API, "OptimizationJob": OPTIMIZATIONJOB_API,
                "Experiment": EXPERIMENT_API, "Trial": TRIAL_API}
JOB_KINDS = ("Experiment", "OptimizationJob", "TrainJob", "PyTorchJob", "Job")
KINDS = (*JOB_KINDS, "ConfigMap", "NetworkPolicy", "Pod")


@dataclass
class RunObject:
    """One object of a run, as `stockscale k8s status` shows it."""

    kind: str
    name: str
    state: str
    detail: str = ""
    started: float | None = None
    finished: float | None = None


def belongs(obj: dict[str, Any], run_id: str | None) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return labels.get(LABEL_APP) == APP and (run_id is None or labels.get(LABEL_RUN) == run_id)


def list_kind(api: KubeApi, namespace: str, kind: str, run_id: str | None) -> list[dict[str, Any]]:
    """Objects of one kind with stockscale's labels (of one run, or of every run when run_id is None)."""
    selector = run_selector(run_id) if run_id is not None else f"{LABEL_APP}={APP}"
    what = f"list {kind}s in namespace {namespace}"
    common: dict[str, Any] = {"what": what, "kind": kind, "namespace": namespace, "label_selector": selector}
    if kind in CUSTOM_KINDS:  # a cluster without the CRD simply has none of them
        group, version, plural = CUSTOM_KINDS[kind]
        body = api.call(api.custom.list_namespaced_custom_object, group, version, namespace, plural,
                        ok_statuses=(404,), **common)
    elif kind == "NetworkPolicy":
        body = api.call(api.networking.list_namespaced_network_policy, namespace, **common)
    elif kind == "Job":
        body = api.call(api.batch.list_namespaced_job, namespace, **common)
    elif kind == "ConfigMap":
        body = api.call(api.core.list_namespaced_config_map, namespace, **common)
    elif kind == "Pod":
        body = api.call(api.core.list_namespaced_pod, namespace, **common)
    else:
        raise ValueError(f"unknown kind {kind}")
    items = [item for item in (body or {}).get("items") or [] if belongs(item, run_id)]
    for item in items:
        item["kind"] = kind  # list items come without their kind
    return sorted(items, key=name_of)


def list_runs(api: KubeApi, namespace: str) -> list[str]:
    """Run ids that still have a job of some kind in the namespace."""
    runs = set()
    for kind in JOB_KINDS:
        for obj in list_kind(api, namespace, kind, None):
            runs.add(obj["metadata"]["labels"][LABEL_RUN])
    return sorted(runs)


def run_status(api: KubeApi, namespace: str, run_id: str) -> list[RunObject]:
    """Every object of a run with a one-word state and, for pods, the container's times."""
    rows = []
    for kind in KINDS:
        for obj in list_kind(api, namespace, kind, run_id):
            status = obj.get("status") or {}
            if kind == "Pod":
                started, finished = container_times(obj)
                index = pod_index(obj)
                detail = f"trial {index}" if index is not None else ""
            else:
                started, finished = parse_time(status.get("startTime")), parse_time(status.get("completionTime"))
                detail = _job_counts(status) if kind == "Job" else ""
            rows.append(RunObject(kind, name_of(obj), state(obj) if kind not in ("ConfigMap", "NetworkPolicy")
                                  else "-", detail,
                                  started, finished))
    return rows


def _job_counts(status: dict[str, Any]) -> str:
    counts = [f"{status.get(key, 0) or 0} {key}" for key in ("active", "succeeded", "failed")]
    return ", ".join(counts)


def delete_run(api: KubeApi, namespace: str, run_id: str) -> list[str]:
    """Delete a run's jobs (their pods go with them), ConfigMaps and any pod left; returns "Kind/name"s."""
    deleted = []
    for kind in KINDS:
        for obj in list_kind(api, namespace, kind, run_id):
            if delete_object(api, namespace, kind, name_of(obj)):
                deleted.append(f"{kind}/{name_of(obj)}")
    return deleted


def delete_object(api: KubeApi, namespace: str, kind: str, name: str) -> bool:
    """Delete one object (dependents in the background); False if it was already gone."""
    common: dict[str, Any] = {"what": f"delete {kind} {name}", "kind": kind, "namespace": namespace,
                              "missing_ok": True, "propagation_policy": "Background"}
    if kind in CUSTOM_KINDS:
        group, version, plural = CUSTOM_KINDS[kind]
        body = api.call(api.custom.delete_namespaced_custom_object, group, version, namespace, plural, name,
                        **common)
    elif kind == "NetworkPolicy":
        body = api.call(api.networking.delete_namespaced_network_policy, name, namespace, **common)
    elif kind == "Job":
        body = api.call(api.batch.delete_namespaced_job, name, namespace, **common)
    elif kind == "ConfigMap":
        body = api.call(api.core.delete_namespaced_config_map, name, namespace, **common)
    elif kind == "Pod":
        body = api.call(api.core.delete_namespaced_pod, name, namespace, **common)
    else:
        raise ValueError(f"unknown kind {kind}")
    return body is not None


def container_of(pod: dict[str, Any]) -> str:
    """The training container: `pytorch` in stockscale's own templates, `node` under a Trainer v2 runtime."""
    names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
    return TRAINER_NODE if TRAINER_NODE in names and CONTAINER not in names else CONTAINER


def run_logs(api: KubeApi, namespace: str, run_id: str, on_line: Callable[[str, str], None], *,
             follow: bool = False, pod: str | None = None, trial: int | None = None) -> list[str]:
    """Pass every log line of a run's pods (or of one pod or trial) to `on_line(pod, line)`, pod by pod.

    With `follow`, each pod's log is followed until its container ends before the next pod's is read.
    Returns the pods whose logs were read.
    """
    pods = list_kind(api, namespace, "Pod", run_id)
    if pod is not None:
        pods = [obj for obj in pods if name_of(obj) == pod]
    if trial is not None:
        pods = [obj for obj in pods if pod_index(obj) == trial
                or (obj["metadata"].get("labels") or {}).get("stockscale/trial") == str(trial)]
    shown = []
    for obj in pods:
        name = name_of(obj)
        response = api.open_log(name, namespace, container=container_of(obj), follow=follow,
                                read_timeout=3600.0 if follow else api.timeout,
                                tail_lines=None if follow else TAIL_LINES)
        if response is None:
            continue
        for line in iter_lines(response):
            on_line(name, line)
        shown.append(name)
    return shown
