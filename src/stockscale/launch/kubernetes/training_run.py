"""One training run on the cluster: submit a PyTorchJob (or a Trainer v2 TrainJob), follow rank 0's log, wait
with a watch for the job to end and return a JobResult with the metrics of the final JSON log line and the
cluster's own timings.

A job the cluster disrupted (preemption, eviction) is resubmitted once under a new name, with the same output
folder (and so its checkpoints, see manifests.checkpoint_flags). The job is given its own timeout plus the
start-up deadline; past that the run ends as timed out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from stockscale.errors import InputError
from stockscale.launch.base import JobResult, TrainJob
from stockscale.launch.kubernetes import runs
from stockscale.launch.kubernetes.logs import LogFollower, read_log
from stockscale.launch.kubernetes.outcome import name_of, pytorchjob_result, state, true_condition
from stockscale.launch.kubernetes.tracking import ENDED, RunTracker


def run_training(run: RunTracker, job: TrainJob, manifests: list[dict[str, Any]],
                 retry_manifest: Callable[[], dict[str, Any]]) -> JobResult:
    """Submit `manifests` (the job first, then what goes with it, such as its NetworkPolicy), stream rank 0's
    log to on_line, wait for the job, return its result; a job the cluster disrupted is resubmitted once as
    `retry_manifest()` (same output folder, so it resumes from its checkpoints)."""
    result = _run_one(run, job, manifests[0], extras=manifests[1:])
    if result.status == "preempted":
        run.event(f"{result.detail}: resubmitting once")
        result = _run_one(run, job, retry_manifest())
    if not run.keep:
        for extra in manifests[1:]:
            run.delete(extra["kind"], name_of(extra))
    return result


def _run_one(run: RunTracker, job: TrainJob, manifest: dict[str, Any],
             extras: list[dict[str, Any]] | None = None) -> JobResult:
    """Submit one job (and, once it exists, `extras` such as its NetworkPolicy) and wait for its result."""
    kind, name = manifest["kind"], name_of(manifest)
    stop = threading.Event()
    follower: LogFollower | None = None
    try:
        run.create(manifest)
        for extra in extras or []:
            run.create(extra)
        began = time.time()
        deadline = None if job.timeout is None else time.monotonic() + job.timeout + run.startup_timeout
        final, timed_out = None, False
        while True:
            master = run.master_pod(kind, name) if follower is None else None
            if master is not None:  # a PyTorchJob's at once; a TrainJob's once JobSet has made it
                follower = LogFollower(run.api, run.namespace, master, run.on_line, stop, run.poll,
                                       container=run.container(kind))
                follower.start()
            final, timed_out, done = _wait_job(run, kind, name, deadline, final)
            if done or timed_out:
                break
        stop.set()
        master = run.master_pod(kind, name)
        lines: list[str] = []
        if follower is not None:
            follower.join(timeout=10 * run.poll)
            if follower.error is not None:
                run.event(f"following the log of {follower.pod} failed: {follower.error}")
            lines = follower.lines if follower.complete and follower.pod == master else []
        if not lines and master is not None:
            lines = read_log(run.api, run.namespace, master, container=run.container(kind))
        mounted = kind == "PyTorchJob" or run.spec.pvc_access_mode == "ReadWriteMany" or job.workers == 1
        result = pytorchjob_result(job.name, final, run.pods_of(kind, name), lines,
                                   run.result_dir(run.out_dir(job), mounted=mounted),
                                   waited=(began, time.time()), timed_out=timed_out, kind=kind,
                                   master_pod=master)
    finally:
        stop.set()
    if not run.keep:
        run.delete(kind, name)
        run.event(f"deleted {kind} {name}")
    return result


def _wait_job(run: RunTracker, kind: str, name: str, deadline: float | None,
              last: dict[str, Any] | None) -> tuple[dict[str, Any] | None, bool, bool]:
    """Watch one PyTorchJob or TrainJob for one window: (last seen object, gave up at the deadline, ended)."""
    window = run.window(deadline)
    if window is None:
        return last, True, False
    group, version, plural = runs.CUSTOM_KINDS[kind]
    for event in run.api.watch(run.api.custom.list_namespaced_custom_object, group, version,
                               run.namespace, plural, window=window, field_selector=f"metadata.name={name}",
                               what=f"watch {kind} {name}", kind=kind, namespace=run.namespace):
        obj = event["object"]
        if name_of(obj) != name:
            continue
        if event["type"] == "DELETED":
            raise InputError(f"{kind} {name} was deleted before it finished")
        if last is None or state(obj) != state(last):
            run.event(f"{kind} {name}: {state(obj)}")
        last = obj
        if true_condition(obj, ENDED) is not None:
            return obj, False, True
    run.check_start(run.pods_of(kind, name), [name])
    return last, False, False
