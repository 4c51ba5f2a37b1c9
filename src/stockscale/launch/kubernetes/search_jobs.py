"""The searches stockscale schedules itself, as two kinds: every trial in one Indexed Job (kind "job": pod i
trains config i of a ConfigMap; `parallelism` pods at a time; an index the cluster disrupted runs again), or
one single-replica PyTorchJob per config, at most `parallel` at once (kind "pytorchjob", which trains a single
run as a PyTorchJob too). Each trial's result comes from its pod's log.

Deadlines (ClusterRun.deadline, the one rule of every kind): a PyTorchJob trial ends as timed out after its own
timeout plus the start-up deadline; the Indexed Job search, when every trial has a timeout, gives up on the
trials still without a result after as many waves of trials as its parallelism allows, each wave its longest
timeout plus the start-up deadline (every wave's pods start anew).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from stockscale.errors import InputError
from stockscale.launch.kubernetes import manifests as m
from stockscale.launch.kubernetes.logs import read_log
from stockscale.launch.kubernetes.outcome import (
    disruption,
    is_finished,
    name_of,
    pod_index,
    pytorchjob_result,
    trial_result,
    true_condition,
)
from stockscale.launch.kubernetes.run import ClusterRun
from stockscale.launch.kubernetes.session import belongs
from stockscale.launch.kubernetes.training import Kind, Obj, give_up
from stockscale.launch.pods import RESULTS, plain_config
from stockscale.launch.runner import JobResult, ResultCallback, TrainJob


class IndexedJobKind(Kind):
    """Kind "job": a search as one Indexed Job with its trials ConfigMap; a single run as a PyTorchJob."""

    name = "job"

    def search_manifests(self, runner: ClusterRun, jobs: list[TrainJob], parallel: int) -> list[Obj]:
        if not jobs:
            raise InputError("a search needs at least one trial")
        if any(job.workers > 1 for job in jobs):
            raise InputError("Indexed Job trials are single processes: use kind pytorchjob for trials with "
                             "several workers")
        trials = [{**plain_config(job.config), **({"threads": job.threads} if job.threads else {})} for job in jobs]
        limits = [job.memory_limit for job in jobs if job.memory_limit is not None]
        timeouts = [job.timeout for job in jobs if job.timeout is not None]
        return [
            m.trials_configmap(runner.spec, runner.run_id, trials),
            m.indexed_job_manifest(runner.spec, run_id=runner.run_id, completions=len(jobs), parallelism=parallel,
                                   memory_limit=max(limits) if limits else None,
                                   timeout=max(timeouts) if timeouts else None),
        ]

    def search(self, runner: ClusterRun, jobs: list[TrainJob], manifests: list[Obj], parallel: int,
               on_result: ResultCallback | None) -> dict[int, JobResult]:
        return run_indexed(runner, jobs, manifests, on_result)


class PyTorchJobKind(Kind):
    """Kind "pytorchjob": a single run, or a search as one single-replica PyTorchJob per trial."""

    name = "pytorchjob"

    def search_manifests(self, runner: ClusterRun, jobs: list[TrainJob], parallel: int) -> list[Obj]:
        if not jobs:
            raise InputError("a search needs at least one trial")
        return [self.training(runner, job, component="search", trial=index, mount_pvc=runner.spec.mount_pvc_in_trials)
                for index, job in enumerate(jobs)]

    def search(self, runner: ClusterRun, jobs: list[TrainJob], manifests: list[Obj], parallel: int,
               on_result: ResultCallback | None) -> dict[int, JobResult]:
        return run_pytorchjobs(runner, self, jobs, manifests, parallel, on_result)


def run_indexed(run: ClusterRun, jobs: list[TrainJob], manifests: list[Obj],
                on_result: ResultCallback | None) -> dict[int, JobResult]:
    """The search as one Indexed Job (`manifests`: its trials ConfigMap, the Job): each trial's result from
    its pod, collected as pods finish; a pod the cluster disrupted is left for the Job to run again."""
    configmap, job_manifest = manifests
    run.create(configmap)
    job_name = name_of(job_manifest)
    try:
        created = run.create(job_manifest)
        _check_kept_backoff_limit_per_index(created, job_name)
    except InputError:
        if not run.keep:
            run.remove("Job", job_name)
            run.remove("ConfigMap", name_of(configmap))
        raise
    mounted = run.spec.mount_pvc_in_trials
    results: dict[int, JobResult] = {}
    timeouts = [job.timeout for job in jobs if job.timeout is not None]
    deadline = run.deadline(max(timeouts), len(jobs), job_manifest["spec"]["parallelism"]) \
        if len(timeouts) == len(jobs) else None

    def finish(pod: dict[str, Any]) -> None:
        index = pod_index(pod)
        if index is None or index in results or index >= len(jobs) or not is_finished(pod):
            return
        disrupted = disruption(pod) if pod.get("status", {}).get("phase") == "Failed" else None
        if disrupted and not job_ended:
            run.event(f"trial {index} ({jobs[index].name}): {disrupted}; the Job runs it again")
            return
        lines = read_log(run.api, run.namespace, name_of(pod))
        path = f"{RESULTS}/{run.run_id}/trials/{index}"
        result = trial_result(jobs[index].name, pod, lines, run.result_dir(path, mounted))
        results[index] = result
        run.event(f"trial {index} ({jobs[index].name}): {result.status}")
        if on_result is not None:
            on_result(result)

    job_ended = False
    while len(results) < len(jobs):
        window = run.window(deadline)
        if window is None:
            give_up([job.name for job in jobs], results, on_result, "timeout", "no result before the search's deadline")
            break
        for event in run.api.watch(run.api.core.list_namespaced_pod, run.namespace, window=window,
                                    label_selector=m.run_selector(run.run_id),
                                    what=f"watch the pods of Job {job_name}", kind="Pod",
                                    namespace=run.namespace):
            pod = event["object"]
            if not belongs(pod, run.run_id) or event["type"] == "DELETED":
                continue
            run.check_start([pod])
            finish(pod)
            if len(results) == len(jobs):
                break
        if len(results) == len(jobs):
            break
        job_now = run.api.call(run.api.batch.read_namespaced_job, job_name, run.namespace,
                                what=f"read Job {job_name}", kind="Job", namespace=run.namespace,
                                missing_ok=True)
        ended = true_condition(job_now, ("Complete", "Failed"))
        if job_now is None or ended is not None:
            job_ended = True
            for pod in run.session.list_kind("Pod", run.run_id):
                finish(pod)
            reason = "Job deleted" if ended is None else \
                f"Job {ended.get('reason') or ended['type']}: {ended.get('message') or ''}".strip()
            status = "timeout" if ended is not None and ended.get("reason") == "DeadlineExceeded" else "error"
            give_up([job.name for job in jobs], results, on_result, status, reason)
            break
    if not run.keep:
        run.remove("Job", job_name)
        run.remove("ConfigMap", name_of(configmap))
        run.event(f"deleted Job {job_name} and ConfigMap {name_of(configmap)}")
    return results


def run_pytorchjobs(run: ClusterRun, kind: Kind, jobs: list[TrainJob], manifests: list[Obj], parallel: int,
                    on_result: ResultCallback | None) -> dict[int, JobResult]:
    """The search as one PyTorchJob per trial (`manifests`, in the jobs' order), at most `parallel` at once:
    the next is submitted as soon as one ends."""
    pending = list(range(len(jobs)))
    active: dict[str, tuple[int, float, float | None]] = {}  # name -> (index, began, deadline)
    results: dict[int, JobResult] = {}
    mounted = run.spec.mount_pvc_in_trials

    def collect(index: int, obj: dict[str, Any] | None, began: float, timed_out: bool) -> None:
        name = name_of(manifests[index])
        lines = read_log(run.api, run.namespace, f"{name}-master-0")
        result = pytorchjob_result(jobs[index].name, obj, kind.pods(run, name), lines,
                                   run.result_dir(run.out_dir(jobs[index]), mounted),
                                   waited=(began, time.time()), timed_out=timed_out)
        results[index] = result
        del active[name]
        run.event(f"trial {index} ({jobs[index].name}): {result.status}")
        if on_result is not None:
            on_result(result)
        if not run.keep:
            run.remove("PyTorchJob", name)

    while pending or active:
        while pending and len(active) < parallel:
            index = pending.pop(0)
            run.create(manifests[index])
            active[name_of(manifests[index])] = (index, time.time(), run.deadline(jobs[index].timeout))
        deadlines = [deadline for _, _, deadline in active.values() if deadline is not None]
        window = run.window(min(deadlines) if deadlines else None) or 1.0
        for event in run.api.watch(run.api.custom.list_namespaced_custom_object, *m.PYTORCHJOB_API[:2],
                                    run.namespace, m.PYTORCHJOB_API[2], window=window,
                                    label_selector=m.run_selector(run.run_id),
                                    what=f"watch the PyTorchJobs of run {run.run_id}", kind="PyTorchJob",
                                    namespace=run.namespace):
            obj = event["object"]
            name = name_of(obj)
            if name not in active or event["type"] == "DELETED":
                continue
            if true_condition(obj, ("Succeeded", "Failed")) is not None:
                collect(active[name][0], obj, active[name][1], False)
                if pending:
                    break  # submit the next trial now
            if not active:
                break
        for index, began, deadline in list(active.values()):
            if deadline is not None and time.monotonic() >= deadline:
                collect(index, None, began, True)
        if active:
            run.check_start([pod for name in active for pod in kind.pods(run, name)])
    return results


def _check_kept_backoff_limit_per_index(stored: Mapping[str, Any], job_name: str) -> None:
    """Kubernetes older than 1.29 drops `backoffLimitPerIndex`: a failed trial would then be retried up
    to 6 times and one failure would fail the whole Job. Refuse instead of running something else."""
    if (stored.get("spec") or {}).get("backoffLimitPerIndex") is None:
        raise InputError(f"the API server dropped backoffLimitPerIndex from Job {job_name} (Kubernetes older "
                         "than 1.29, or the JobBackoffLimitPerIndex feature off): use kind pytorchjob "
                         "or a cluster of Kubernetes 1.29 or newer")

