"""What finished pods and jobs mean: a JobResult with status, detail, metrics and the cluster's own timings.

Pure functions over the JSON the API server returns, so every mapping is testable without a cluster:
- metrics are the last line of the pod log that is a JSON object (rank 0 prints its metrics last; warnings
  a library prints at exit may follow it, so the search goes backwards);
- a container terminated with reason OOMKilled is "oom" (a worker that caught MemoryError and said so in its
  JSON line is "oom" too; one that stopped when its pod was asked to, "pruned"), a pod past its
  activeDeadlineSeconds or a PyTorchJob past its deadline is "timeout", a pod the cluster disrupted (a
  DisruptionTarget condition: preemption, eviction, drain; or reason Evicted) is "preempted", anything else
  that failed is "error";
- times are the container's startedAt/finishedAt as the kubelet recorded them (else the job's
  startTime/completionTime), not when this client happened to notice.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from stockscale.launch.kubernetes.manifests.naming import COMPLETION_INDEX
from stockscale.launch.pods import CONTAINER
from stockscale.launch.runner import JobResult, Status
from stockscale.worker import RunMetrics, parse_result_line

LIMIT_MECHANISM = "kubernetes"
START_PROBLEMS = frozenset({"InvalidImageName", "CreateContainerConfigError", "CreateContainerError"})
PULL_PROBLEMS = frozenset({"ErrImagePull", "ImagePullBackOff"})  # often transient: retried until the deadline

Obj = Mapping[str, Any]


def parse_time(text: Any) -> float | None:
    """Unix seconds from an API timestamp ("2026-11-28T17:45:00Z"), or None."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def name_of(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("name", "?"))


def true_condition(obj: Obj | None, types: Iterable[str]) -> dict[str, Any] | None:
    """The last condition of `obj` whose type is one of `types` and whose status is "True"."""
    if obj is None:
        return None
    wanted = set(types)
    found = None
    for condition in obj.get("status", {}).get("conditions") or []:
        if condition.get("type") in wanted and condition.get("status") == "True":
            found = condition
    return found


def state(obj: Obj) -> str:
    """A one-word state for listings: the last true condition, else the pod phase, else "Pending"."""
    conditions = [c for c in obj.get("status", {}).get("conditions") or [] if c.get("status") == "True"]
    if obj.get("kind") != "Pod" and conditions:
        return str(conditions[-1].get("type"))
    return str(obj.get("status", {}).get("phase") or ("Pending" if obj.get("kind") == "Pod" else "Created"))


def pod_index(pod: Obj) -> int | None:
    """The completion index of an Indexed Job's pod (annotation, or the label on Kubernetes >= 1.28)."""
    meta = pod.get("metadata", {})
    for source in (meta.get("annotations") or {}, meta.get("labels") or {}):
        value = source.get(COMPLETION_INDEX)
        if value is not None and str(value).isdigit():
            return int(value)
    return None


def _container(pod: Obj) -> dict[str, Any] | None:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    for status in statuses:
        if status.get("name") == CONTAINER:
            return status
    return statuses[0] if statuses else None


def _terminated(pod: Obj) -> dict[str, Any] | None:
    status = _container(pod)
    if status is None:
        return None
    return (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get("terminated")


def container_times(pod: Obj | None) -> tuple[float | None, float | None]:
    """(startedAt, finishedAt) of the training container; the pod's startTime when it never ran."""
    if pod is None:
        return None, None
    terminated = _terminated(pod)
    if terminated:
        return parse_time(terminated.get("startedAt")), parse_time(terminated.get("finishedAt"))
    running = ((_container(pod) or {}).get("state") or {}).get("running") or {}
    return parse_time(running.get("startedAt") or pod.get("status", {}).get("startTime")), None


def is_finished(pod: Obj) -> bool:
    return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")


def start_problem(pod: Obj, reasons: frozenset[str] = START_PROBLEMS) -> str | None:
    """Why a pod cannot start (its config is broken; with PULL_PROBLEMS: its image is not pulled), or None."""
    for status in pod.get("status", {}).get("containerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in reasons:
            message = " ".join(str(waiting.get("message", "")).split())[:200]
            return f"pod {name_of(pod)}: {waiting['reason']}" + (f" ({message})" if message else "")
    return None


def unschedulable(pod: Obj) -> str | None:
    """The scheduler's message when it cannot place the pod (PodScheduled False, reason Unschedulable)."""
    for condition in pod.get("status", {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False" \
                and condition.get("reason") == "Unschedulable":
            message = " ".join(str(condition.get("message") or "no node fits").split())[:300]
            return f"pod {name_of(pod)} cannot be scheduled: {message}"
    return None


def is_pending(pod: Obj) -> bool:
    return pod.get("status", {}).get("phase") in (None, "", "Pending")


def disruption(pod: Obj) -> str | None:
    """Why the cluster took the pod away (preemption, eviction, node drain), or None if it did not."""
    status = pod.get("status", {})
    for condition in status.get("conditions") or []:
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            why = " ".join(f"{condition.get('reason') or ''}: {condition.get('message') or ''}".split())
            return f"pod {name_of(pod)} was disrupted ({why.strip(': ')[:200]})"
    if status.get("reason") == "Evicted":
        message = " ".join(str(status.get("message") or "").split())[:200]
        return f"pod {name_of(pod)} was evicted" + (f" ({message})" if message else "")
    return None


def pod_failure(pod: Obj) -> tuple[Status, str] | None:
    """How a pod failed, or None if it did not: ("oom" | "preempted" | "timeout" | "error", detail)."""
    name = name_of(pod)
    status = pod.get("status", {})
    terminated = _terminated(pod)
    if terminated and terminated.get("reason") == "OOMKilled":
        return "oom", f"OOMKilled (pod {name})"
    disrupted = disruption(pod)
    if disrupted and (status.get("phase") == "Failed" or (terminated and terminated.get("exitCode", 0) != 0)):
        return "preempted", disrupted
    if status.get("reason") == "DeadlineExceeded":
        return "timeout", f"pod {name} ran past its activeDeadlineSeconds"
    if terminated and terminated.get("exitCode", 0) != 0:
        reason = terminated.get("reason")
        extra = f", {reason}" if reason and reason != "Error" else ""
        return "error", f"exit code {terminated.get('exitCode')} (pod {name}{extra})"
    if status.get("phase") == "Failed":
        why = " ".join(f"{status.get('reason') or ''} {status.get('message') or ''}".split())[:200]
        return "error", f"pod {name} failed" + (f": {why}" if why else "")
    return None


def peak_rss(metrics: Mapping[str, Any] | None) -> list[int]:
    """Per-worker peak RSS as the workers measured it (the cluster does not report it to us)."""
    if not metrics:
        return []
    workers = metrics.get("workers")
    if isinstance(workers, list) and all(isinstance(w, dict) and "peak_rss_bytes" in w for w in workers) \
            and workers:
        return [int(w["peak_rss_bytes"]) for w in workers]
    if isinstance(metrics.get("peak_rss_bytes"), int | float):
        return [int(metrics["peak_rss_bytes"])]
    return []


def _result(name: str, status: Status, detail: str, metrics: RunMetrics | None, start: float | None,
            end: float | None, run_dir: str | None) -> JobResult:
    now = time.time()
    start = start if start is not None else now
    end = max(start, now) if end is None else max(start, end)
    succeeded = status == "success"
    return JobResult(name=name, status=status, detail=detail, metrics=metrics if succeeded else None,
                     start_time=start, end_time=end, peak_rss_bytes=peak_rss(metrics),
                     run_dir=run_dir if succeeded else None, limit_mechanism=LIMIT_MECHANISM)


def pruned_result(name: str, detail: str, start: float, end: float) -> JobResult:
    """A trial the search's pruner stopped by deleting it: no metrics, no run directory."""
    return _result(name, "pruned", detail, None, start, end, None)


def _worker_said(metrics: RunMetrics | None) -> tuple[Status, str] | None:
    """A worker that caught its own failure says so in its JSON line (e.g. MemoryError -> "oom"); one that
    stopped when its pod was asked to (a pruned trial, which exits 0) says "pruned"."""
    said = (metrics or {}).get("status")
    if said in ("oom", "timeout", "error", "pruned"):
        return cast(Status, said), str((metrics or {}).get("detail") or said)
    return None


def _success_or_missing(metrics: RunMetrics | None, where: str) -> tuple[Status, str]:
    if metrics is None:
        return "error", f"finished without a JSON result line in the log of {where}"
    said = _worker_said(metrics)
    if said:
        return said[0], f"{said[1]} ({where})"
    return "success", ""


def trial_result(name: str, pod: Obj, lines: list[str], run_dir: str | None) -> JobResult:
    """The result of one finished search pod (an Indexed Job's index, or a PyTorchJob's only replica)."""
    metrics = parse_result_line(lines)
    start, end = container_times(pod)
    where = f"pod {name_of(pod)}"
    if pod.get("status", {}).get("phase") == "Succeeded":
        status, detail = _success_or_missing(metrics, where)
    else:
        status, detail = pod_failure(pod) or ("error", f"{where} failed")
        said = _worker_said(metrics)
        if status == "error" and said:
            status, detail = said[0], f"{said[1]} ({where})"
    return _result(name, status, detail, metrics, start, end, run_dir)


def pytorchjob_result(
    name: str,
    job: Obj | None,
    pods: Sequence[Obj],
    lines: list[str],
    run_dir: str | None,
    *,
    waited: tuple[float, float],
    timed_out: bool = False,
    kind: str = "PyTorchJob",
    master_pod: str | None = None,
) -> JobResult:
    """The result of a finished (or given up on) PyTorchJob or TrainJob from its status, its pods and the log
    of rank 0 (`master_pod`, default the PyTorchJob's `<job>-master-0`). A TrainJob ends Complete, a
    PyTorchJob Succeeded; both end Failed."""
    job_name = name_of(job) if job is not None else name
    master_name = master_pod or f"{job_name}-master-0"
    metrics = parse_result_line(lines)
    master = next((pod for pod in pods if name_of(pod) == master_name), None)
    start, end = container_times(master)
    job_status = job.get("status", {}) if job is not None else {}
    start = start if start is not None else parse_time(job_status.get("startTime")) or waited[0]
    end = end if end is not None else parse_time(job_status.get("completionTime")) or waited[1]
    ordered = ([master] if master is not None else []) + [pod for pod in pods if pod is not master]
    failures = [failure for failure in (pod_failure(pod) for pod in ordered) if failure is not None]

    if timed_out:
        now_state = state(job) if job is not None else "unknown"
        return _result(name, "timeout", f"gave up after {waited[1] - waited[0]:.0f}s: {kind} {job_name} "
                       f"still {now_state}", metrics, start, end, run_dir)
    condition = true_condition(job, ("Succeeded", "Complete", "Failed"))
    if condition is not None and condition["type"] in ("Succeeded", "Complete"):
        status, detail = _success_or_missing(metrics, f"pod {master_name}")
        return _result(name, status, detail, metrics, start, end, run_dir)
    message = " ".join(str((condition or {}).get("message", "")).split())[:200]
    for failed in ("oom", "preempted", "timeout"):
        match = next((failure for failure in failures if failure[0] == failed), None)
        if match:
            return _result(name, failed, match[1], metrics, start, end, run_dir)
    if "deadline" in message.lower():
        return _result(name, "timeout", message, metrics, start, end, run_dir)
    said = _worker_said(metrics)
    if said:
        return _result(name, said[0], f"{said[1]} (pod {master_name})", metrics, start, end, run_dir)
    if failures:
        return _result(name, "error", failures[0][1], metrics, start, end, run_dir)
    return _result(name, "error", message or f"{kind} {job_name} failed", metrics, start, end, run_dir)
