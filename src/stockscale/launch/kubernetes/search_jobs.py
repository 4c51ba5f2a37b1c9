"""The searches stockscale schedules itself, as two kinds: every trial in one Indexed Job (kind "job": pod i
trains config i of a ConfigMap; `parallelism` pods at a time; an index the cluster disrupted runs again), or
one single-replica PyTorchJob per config, at most `parallel` at once (kind "pytorchjob", which trains a single
run as a PyTorchJob too). Each trial's result comes from its pod's log.

Both prune (`Kind.prunes`): a trial with a judge has its rank 0 log followed while it runs (logs.JudgedLog),
and when the judge says stop, an Indexed Job's pod is annotated `stockscale/stop` (its worker ends after that
epoch and exits 0, so the index completes: a failed index would fail the Job, and an ignored failure would
train the trial again), and a trial's PyTorchJob is deleted (the operator deletes its pods). Either trial is
recorded "pruned" with the epochs it reported up to the judge's stop.

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
from stockscale.launch.kubernetes.logs import JudgedLog, read_log
from stockscale.launch.kubernetes.outcome import (
    disruption,
    is_finished,
    name_of,
    pod_index,
    pruned_result,
    pytorchjob_result,
    trial_result,
    true_condition,
)
from stockscale.launch.kubernetes.run import ClusterRun
from stockscale.launch.kubernetes.session import belongs
from stockscale.launch.kubernetes.training import Kind, Obj, give_up
from stockscale.launch.pods import RESULTS, plain_config
from stockscale.launch.runner import JobResult, ResultCallback, TrainJob
from stockscale.worker import STOP_ANNOTATION, parse_epoch_line


class IndexedJobKind(Kind):
    """Kind "job": a search as one Indexed Job with its trials ConfigMap; a single run as a PyTorchJob."""

    name = "job"
    prunes = True

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
    prunes = True

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
    judged: dict[int, JudgedLog] = {}  # the trials with a judge, followed while their pods run

    def trial(index: int) -> JudgedLog:
        def ask_stop(pod: str) -> None:
            run.session.annotate_pod(pod, {STOP_ANNOTATION: "pruned"})
            run.event(f"trial {index} ({jobs[index].name}): pruned, pod {pod} asked to stop after this epoch")

        if index not in judged:
            judged[index] = JudgedLog(run.api, run.namespace, jobs[index].judge, ask_stop, run.poll)
        return judged[index]

    def follow(pod: dict[str, Any]) -> None:
        index = pod_index(pod)
        if index is not None and index < len(jobs) and index not in results and jobs[index].judge is not None \
                and not is_finished(pod):
            trial(index).follow(name_of(pod))

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
        judge = trial(index)
        result.epochs = judge.end(lines)
        if judge.error is not None:
            run.event(f"trial {index} ({jobs[index].name}): following its log failed: {judge.error}")
        if result.status == "pruned" and judge.pruned_after is not None:
            result.detail = f"pruned after epoch {judge.pruned_after}; the pod said: {result.detail}"
        elif judge.asked:  # asked too late: it finished, and every epoch it trained is the result's
            result.epochs = [report for report in map(parse_epoch_line, lines) if report is not None]
        results[index] = result
        run.event(f"trial {index} ({jobs[index].name}): {result.status}")
        if on_result is not None:
            on_result(result)

    job_ended = False
    try:
        while len(results) < len(jobs):
            window = run.window(deadline)
            if window is None:
                give_up([job.name for job in jobs], results, on_result, "timeout",
                        "no result before the search's deadline")
                break
            for event in run.api.watch(run.api.core.list_namespaced_pod, run.namespace, window=window,
                                        label_selector=m.run_selector(run.run_id),
                                        what=f"watch the pods of Job {job_name}", kind="Pod",
                                        namespace=run.namespace):
                pod = event["object"]
                if not belongs(pod, run.run_id) or event["type"] == "DELETED":
                    continue
                run.check_start([pod])
                follow(pod)
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
    finally:
        for followed in judged.values():
            followed.stop()  # every follower ends with the search
    if not run.keep:
        run.remove("Job", job_name)
        run.remove("ConfigMap", name_of(configmap))
        run.event(f"deleted Job {job_name} and ConfigMap {name_of(configmap)}")
    return results


def run_pytorchjobs(run: ClusterRun, kind: Kind, jobs: list[TrainJob], manifests: list[Obj], parallel: int,
                    on_result: ResultCallback | None) -> dict[int, JobResult]:
    """The search as one PyTorchJob per trial (`manifests`, in the jobs' order), at most `parallel` at once:
    the next is submitted as soon as one ends. A trial its judge stops is deleted (its pods go with it) and
    ends as pruned: the judge was asked, so its answer wins over a success that raced the deletion."""
    pending = list(range(len(jobs)))
    active: dict[str, tuple[int, float, float | None]] = {}  # name -> (index, began, deadline)
    judged: dict[str, JudgedLog] = {}  # name -> its master's log, followed when the trial has a judge
    results: dict[int, JobResult] = {}
    mounted = run.spec.mount_pvc_in_trials

    def submit(index: int) -> None:
        name = name_of(manifests[index])
        run.create(manifests[index])
        active[name] = (index, time.time(), run.deadline(jobs[index].timeout))
        if jobs[index].judge is not None:
            def ask_stop(_pod: str) -> None:
                run.remove("PyTorchJob", name)
                run.event(f"trial {index} ({jobs[index].name}): pruned, PyTorchJob {name} deleted")

            judged[name] = JudgedLog(run.api, run.namespace, jobs[index].judge, ask_stop, run.poll)
            judged[name].follow(f"{name}-master-0")

    def pruned(name: str) -> bool:
        return name in judged and judged[name].asked

    def collect(index: int, obj: dict[str, Any] | None, began: float, timed_out: bool) -> None:
        name = name_of(manifests[index])
        follower = judged.pop(name, None) or JudgedLog(run.api, run.namespace, None, lambda _pod: None)
        if follower.asked:
            result = pruned_result(jobs[index].name, f"pruned after epoch {follower.pruned_after}: PyTorchJob "
                                   f"{name} deleted", began, time.time())
            lines: list[str] = []
        else:
            lines = read_log(run.api, run.namespace, f"{name}-master-0")
            result = pytorchjob_result(jobs[index].name, obj, kind.pods(run, name), lines,
                                       run.result_dir(run.out_dir(jobs[index]), mounted),
                                       waited=(began, time.time()), timed_out=timed_out)
        result.epochs = follower.end(lines)
        results[index] = result
        del active[name]
        run.event(f"trial {index} ({jobs[index].name}): {result.status}")
        if on_result is not None:
            on_result(result)
        if not run.keep:
            run.remove("PyTorchJob", name)

    try:
        while pending or active:
            while pending and len(active) < parallel:
                submit(pending.pop(0))
            deadlines = [deadline for _, _, deadline in active.values() if deadline is not None]
            window = run.window(min(deadlines) if deadlines else None) or 1.0
            for event in run.api.watch(run.api.custom.list_namespaced_custom_object, *m.PYTORCHJOB_API[:2],
                                        run.namespace, m.PYTORCHJOB_API[2], window=window,
                                        label_selector=m.run_selector(run.run_id),
                                        what=f"watch the PyTorchJobs of run {run.run_id}", kind="PyTorchJob",
                                        namespace=run.namespace):
                obj = event["object"]
                name = name_of(obj)
                if name not in active or (event["type"] == "DELETED" and not pruned(name)):
                    continue
                if pruned(name) or true_condition(obj, ("Succeeded", "Failed")) is not None:
                    collect(active[name][0], obj, active[name][1], False)
                    if pending:
                        break  # submit the next trial now
                if not active:
                    break
            for name, (index, began, deadline) in list(active.items()):
                if pruned(name) or (deadline is not None and time.monotonic() >= deadline):
                    collect(index, None, began, not pruned(name))
            if active:
                run.check_start([pod for name in active for pod in kind.pods(run, name)])
    finally:
        for follower in judged.values():
            follower.stop()
    return results


def _check_kept_backoff_limit_per_index(stored: Mapping[str, Any], job_name: str) -> None:
    """Kubernetes older than 1.29 drops `backoffLimitPerIndex`: a failed trial would then be retried up
    to 6 times and one failure would fail the whole Job. Refuse instead of running something else."""
    if (stored.get("spec") or {}).get("backoffLimitPerIndex") is None:
        raise InputError(f"the API server dropped backoffLimitPerIndex from Job {job_name} (Kubernetes older "
                         "than 1.29, or the JobBackoffLimitPerIndex feature off): use kind pytorchjob "
                         "or a cluster of Kubernetes 1.29 or newer")

