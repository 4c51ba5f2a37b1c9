"""The searches a controller schedules: a Trainer v2 OptimizationJob (its controller makes a TrainJob per trial)
or a Katib Experiment (a Trial per point, and a batch Job per Trial; katib.py renders it). stockscale submits
the one object, then follows the trial objects the controller makes, matches each ended trial to its config by
the parameters it was handed, and reads its result from its pod's log.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from stockscale.launch.base import JobResult, TrainJob
from stockscale.launch.kubernetes import katib, runs
from stockscale.launch.kubernetes import manifests as m
from stockscale.launch.kubernetes.logs import read_log
from stockscale.launch.kubernetes.outcome import name_of, pytorchjob_result, trial_result, true_condition
from stockscale.launch.kubernetes.tracking import ENDED, RunTracker, give_up
from stockscale.space import Space
from stockscale.worker import EpochReport, parse_epoch_line

KATIB_TRIAL_ENDED = ("Succeeded", "Failed", "EarlyStopped", "Killed", "MetricsUnavailable")


def run_optimization(run: RunTracker, jobs: list[TrainJob], manifest: dict[str, Any],
                     on_result: Callable[[JobResult], None] | None) -> dict[int, JobResult]:
    """One OptimizationJob: its controller creates a TrainJob per trial (labelled with our run, through
    the template); each finished trial is matched to its config by the parameters it was handed, and its
    result read from its rank-0 pod like any TrainJob's."""
    run.create(manifest)
    name = name_of(manifest)
    keys = [param["name"] for param in manifest["spec"]["parameters"]]
    wanted = [{key: m.param_text(m.plain_config(job.config)[key]) for key in keys} for job in jobs]
    results: dict[int, JobResult] = {}
    collected: set[str] = set()
    deadline = _search_deadline(run, jobs, manifest["spec"]["parallelTrials"])

    def collect(trial: dict[str, Any]) -> None:
        trial_name = name_of(trial)
        collected.add(trial_name)
        env = {var.get("name"): var.get("value") for var in trial["spec"].get("trainer", {}).get("env") or []}
        params = {key: env.get(f"{run.spec.optimization_env_prefix}{key}") for key in keys}
        index = next((i for i, want in enumerate(wanted) if want == params and i not in results), None)
        if index is None:
            run.event(f"trial TrainJob {trial_name} ran {params}, a point already run or not in the search")
            return
        master = run.master_pod("TrainJob", trial_name)
        lines = [] if master is None else read_log(run.api, run.namespace, master, container=m.TRAINER_NODE)
        path = f"{m.RESULTS}/{run.run_id}/trials/{master}"
        result = pytorchjob_result(jobs[index].name, trial, run.pods_of("TrainJob", trial_name), lines,
                                   run.result_dir(path, run.spec.pvc_access_mode == "ReadWriteMany"),
                                   waited=(time.time(), time.time()), kind="TrainJob", master_pod=master)
        results[index] = result
        run.event(f"trial {index} ({jobs[index].name}, TrainJob {trial_name}): {result.status}")
        if on_result is not None:
            on_result(result)

    _follow_trials(run, jobs, results, on_result, deadline, name=name, parent_kind="OptimizationJob",
                        parent_ended=("Complete", "Failed"), trial_kind="TrainJob", trial_api=m.TRAINJOB_API,
                        trial_ended=ENDED, collected=collected, collect=collect)
    if not run.keep:
        run.delete("OptimizationJob", name)  # its TrainJobs and their pods go with it (owner references)
        run.event(f"deleted OptimizationJob {name}")
    return results

def run_katib(run: RunTracker, jobs: list[TrainJob], manifest: dict[str, Any],
              on_result: Callable[[JobResult], None] | None, space: Space | None = None) -> dict[int, JobResult]:
    """One Katib Experiment: its controller creates a Trial per point (labelled with our run: Katib copies
    the Experiment's labels) and a batch Job per Trial; each ended Trial is matched to its config by its
    parameter assignments, and its result read from its pod's log (the final JSON line), or, when that
    log is gone, from the validation loss Katib's metrics collector observed. With `space`, Katib samples
    the points itself: each ended Trial fills the next job, and its result carries the config it ran. A
    Trial Katib's early stopping ended is `pruned`, with the epochs its log reported."""
    run.create(manifest)
    name = name_of(manifest)
    keys = [param["name"] for param in manifest["spec"]["parameters"]]
    wanted = [{key: katib.value_text(m.plain_config(job.config)[key]) for key in keys} for job in jobs]
    results: dict[int, JobResult] = {}
    collected: set[str] = set()
    deadline = _search_deadline(run, jobs, manifest["spec"]["parallelTrialCount"])

    def collect(trial: dict[str, Any]) -> None:
        trial_name = name_of(trial)
        collected.add(trial_name)
        params = katib.trial_assignments(trial)
        if space is not None:
            index = next((i for i in range(len(jobs)) if i not in results), None)
        else:
            index = next((i for i, want in enumerate(wanted) if want == params and i not in results), None)
        if index is None:
            run.event(f"Katib trial {trial_name} ran {params}, a point already run or not in the search")
            return
        pods = [pod for pod in runs.list_kind(run.api, run.namespace, "Pod", run.run_id)
                if (pod["metadata"].get("labels") or {}).get("job-name") == trial_name]
        pod = pods[-1] if pods else None
        lines = [] if pod is None else read_log(run.api, run.namespace, name_of(pod), container=m.CONTAINER)
        path = f"{m.RESULTS}/{run.run_id}/trials/{name_of(pod) if pod else trial_name}"
        run_dir = run.result_dir(path, run.spec.mount_pvc_in_trials)
        observed = katib.trial_metric(trial)
        ended = true_condition(trial, KATIB_TRIAL_ENDED) or {}
        if pod is not None and (lines or observed is None):
            result = trial_result(jobs[index].name, pod, lines, run_dir)
        else:
            ok = ended.get("type") == "Succeeded" and observed is not None
            now = time.time()
            result = JobResult(
                name=jobs[index].name, status="success" if ok else "error",
                detail="" if ok else f"Katib trial {trial_name}: {ended.get('reason') or ended.get('type')}",
                metrics={"val": {"loss": float(observed["min"])}} if ok and observed else None,
                start_time=now, end_time=now, limit_mechanism="kubernetes")
        result.epochs = [report for line in lines if (report := parse_epoch_line(line)) is not None]
        if ended.get("type") == "EarlyStopped":
            result.status, result.detail, result.metrics = "pruned", "stopped early by Katib's medianstop", None
            if not result.epochs and observed is not None:
                with contextlib.suppress(TypeError, ValueError):  # Katib says "unavailable" when it has none
                    result.epochs = [EpochReport(0, float(observed["latest"]))]
        if space is not None:
            result.config = katib.assigned_config(params, space)
        results[index] = result
        run.event(f"trial {index} ({jobs[index].name}, Katib trial {trial_name}): {result.status}")
        if on_result is not None:
            on_result(result)

    _follow_trials(run, jobs, results, on_result, deadline, name=name, parent_kind="Experiment",
                        parent_ended=("Succeeded", "Failed"), trial_kind="Trial", trial_api=katib.TRIAL_API,
                        trial_ended=KATIB_TRIAL_ENDED, collected=collected, collect=collect)
    if not run.keep:
        run.delete("Experiment", name)  # its Trials, their Jobs and pods go with it (owner references)
        run.event(f"deleted Experiment {name}")
    return results

def _search_deadline(run: RunTracker, jobs: list[TrainJob], parallel: int) -> float | None:
    """When a controller's search is given up on: each wave of `parallel` trials may take the longest trial
    timeout plus the start-up allowance; None when any trial has no timeout."""
    timeouts = [job.timeout for job in jobs if job.timeout is not None]
    if len(timeouts) != len(jobs):
        return None
    return time.monotonic() + -(-len(jobs) // parallel) * (max(timeouts) + run.startup_timeout)


def _follow_trials(run: RunTracker, jobs: list[TrainJob], results: dict[int, JobResult],
                   on_result: Callable[[JobResult], None] | None, deadline: float | None, *, name: str,
                   parent_kind: str, parent_ended: tuple[str, ...], trial_kind: str,
                   trial_api: tuple[str, str, str], trial_ended: tuple[str, ...], collected: set[str],
                   collect: Callable[[dict[str, Any]], None]) -> None:
    """Until every job has a result: watch the run's trial objects (a search controller's TrainJobs or
    Katib's Trials) and `collect` each that ended. When the parent (`name`, of `parent_kind`) has ended or
    is gone and no trial still runs, the jobs left without a result are given up as not run."""
    while len(results) < len(jobs):
        window = run.window(deadline)
        if window is None:
            give_up(jobs, results, on_result, "timeout", "no result before the search's deadline")
            return
        group, version, plural = trial_api
        for event in run.api.watch(run.api.custom.list_namespaced_custom_object, group, version,
                                    run.namespace, plural, window=window,
                                    label_selector=m.run_selector(run.run_id),
                                    what=f"watch the {trial_kind}s of {parent_kind} {name}", kind=trial_kind,
                                    namespace=run.namespace):
            trial = event["object"]
            if event["type"] != "DELETED" and name_of(trial) not in collected \
                    and true_condition(trial, trial_ended) is not None:
                collect(trial)
            if len(results) == len(jobs):
                return
        run.check_start(runs.list_kind(run.api, run.namespace, "Pod", run.run_id), [name])
        now = runs.list_kind(run.api, run.namespace, parent_kind, run.run_id)
        ended = true_condition(now[0], parent_ended) if now else None
        if not now or ended is not None:
            trials = runs.list_kind(run.api, run.namespace, trial_kind, run.run_id)
            for trial in trials:
                if name_of(trial) not in collected and true_condition(trial, trial_ended) is not None:
                    collect(trial)
            if any(true_condition(trial, trial_ended) is None for trial in trials):
                continue  # trials still running after the parent ended: let them finish
            reason = f"{parent_kind} deleted" if not now else \
                f"{parent_kind} {ended.get('reason') or ended['type']}: {ended.get('message') or ''}".strip()
            give_up(jobs, results, on_result, "error", f"not run ({reason})")
            return

