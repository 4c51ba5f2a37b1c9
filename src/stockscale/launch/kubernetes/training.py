"""A kind (render, then follow) and one training run on the cluster: submit a PyTorchJob (or a Trainer v2
TrainJob), follow rank 0's log, wait with a watch for the job to end and return a JobResult with the metrics of
the final JSON log line and the cluster's own timings.

A job the cluster disrupted (preemption, eviction) is resubmitted once under a new name, with the same output
folder (and so its checkpoints, see pods.checkpoint_flags), where rank 0 alone resumes from them and hands
the other ranks what they need (checkpoint.resume). A job whose rank 0 has no PVC (a TrainJob of several nodes
on a ReadWriteOnce PVC) keeps no checkpoints (manifests/training.py): the runner says so, and that its
resubmission starts over. The job is given its own timeout plus the start-up deadline (ClusterRun.deadline, the
one rule of every kind); past that the run ends as timed out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

from stockscale.errors import InputError
from stockscale.launch.kubernetes import manifests as m
from stockscale.launch.kubernetes.logs import LogFollower, read_log
from stockscale.launch.kubernetes.outcome import (
    disruption,
    name_of,
    pod_index,
    pytorchjob_result,
    state,
    true_condition,
)
from stockscale.launch.kubernetes.run import ClusterRun
from stockscale.launch.pods import CONTAINER
from stockscale.launch.runner import JobResult, ResultCallback, TrainJob

ENDED = ("Succeeded", "Complete", "Failed")
JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"
OPERATOR_JOB_LABEL = "training.kubeflow.org/job-name"
Obj = dict[str, Any]


class Kind:
    """One kind of object a run submits: how it renders, and how the runner follows it to its results.

    Every kind trains one job as a PyTorchJob unless it says otherwise (TrainJobKind); a kind that runs a
    search stockscale schedules overrides `search_manifests` and `search`."""

    name: ClassVar[str]
    # Its search stops a trial its judge says to (search_jobs.py: the searches stockscale schedules itself);
    # False: its trials run to their end, or a controller's rules stop them (Katib's early stopping).
    prunes: ClassVar[bool] = False
    port: ClassVar[int] = m.MASTER_PORT  # the rendezvous port its NetworkPolicy names
    container: ClassVar[str] = CONTAINER  # the training container of its pods
    renders: ClassVar[Callable[..., Obj]] = staticmethod(m.pytorchjob_manifest)  # the object that trains a job

    def training(self, runner: ClusterRun, job: TrainJob, name: str | None = None, **more: Any) -> Obj:
        """The object that trains `job` (`more`: what a search's trial adds)."""
        return self.renders(
            runner.spec, name=name or m.k8s_name(runner.run_id, job.name), run_id=runner.run_id, config=job.config,
            workers=job.workers, out=runner.out_dir(job), memory_limit=job.memory_limit, threads=job.threads,
            timeout=job.timeout, **more)

    def run_manifests(self, runner: ClusterRun, job: TrainJob) -> list[Obj]:
        """Everything `run(job)` submits: the job, and the NetworkPolicy when there are several workers."""
        needs_policy = runner.spec.network_policy and job.workers > 1
        policy = [m.network_policy_manifest(runner.spec, runner.run_id, self.port)] if needs_policy else []
        return [self.training(runner, job), *policy]

    def pods(self, runner: ClusterRun, name: str) -> list[Obj]:
        """The pods of training object `name` (the operator's label, or the names it gives its replicas)."""
        return [pod for pod in runner.session.list_kind("Pod", runner.run_id)
                if (pod["metadata"].get("labels") or {}).get(OPERATOR_JOB_LABEL) == name
                or name_of(pod).startswith((f"{name}-master-", f"{name}-worker-"))]

    def master(self, runner: ClusterRun, name: str) -> str | None:
        """Rank 0's pod: `<job>-master-0` of a PyTorchJob."""
        return f"{name}-master-0"

    def run(self, runner: ClusterRun, job: TrainJob) -> JobResult:
        return run_training(runner, self, job, self.run_manifests(runner, job), lambda: self.training(
            runner, job, name=m.k8s_name(m.k8s_name(runner.run_id, job.name), "retry")))

    def search_manifests(self, runner: ClusterRun, jobs: list[TrainJob], parallel: int) -> list[Obj]:
        raise InputError(f"kind {self.name} runs no search of given trials: a search runs as kind job or "
                         "pytorchjob, or katib or optimizationjob choosing its own trials")

    def search(self, runner: ClusterRun, jobs: list[TrainJob], manifests: list[Obj], parallel: int,
               on_result: ResultCallback | None) -> dict[int, JobResult]:
        raise InputError(f"kind {self.name} runs no search of given trials")  # search_manifests said so first


class TrainJobKind(Kind):
    """A Kubeflow Trainer v2 TrainJob (numNodes = workers) on the torch-distributed runtime."""

    name = "trainjob"
    port = m.TRAINER_PORT
    container = m.TRAINER_NODE
    renders = staticmethod(m.trainjob_manifest)

    def pods(self, runner: ClusterRun, name: str) -> list[Obj]:
        return [pod for pod in runner.session.list_kind("Pod", runner.run_id)
                if (pod["metadata"].get("labels") or {}).get(JOBSET_LABEL) == name]

    def master(self, runner: ClusterRun, name: str) -> str | None:
        """The node with completion index 0 (once JobSet has made it), the one not disrupted if there are two."""
        pods = [pod for pod in self.pods(runner, name) if pod_index(pod) == 0]
        running = [pod for pod in pods if not disruption(pod)]
        return name_of((running or pods)[-1]) if pods else None

    def search_manifests(self, runner: ClusterRun, jobs: list[TrainJob], parallel: int) -> list[Obj]:
        raise InputError("kind trainjob is for stockscale train; a search runs as job, pytorchjob, "
                         "optimizationjob or katib")


def run_training(run: ClusterRun, kind: Kind, job: TrainJob, manifests: list[Obj], retry: Any) -> JobResult:
    """Submit `manifests` (the job first, then what goes with it, such as its NetworkPolicy), stream rank 0's
    log to on_line, wait for the job, return its result; a job the cluster disrupted is resubmitted once as
    `retry()` (same output folder, so it resumes from its checkpoints)."""
    kept = checkpoint_dir(manifests[0])
    if kept is None:
        run.event(f"{manifests[0]['kind']} {name_of(manifests[0])} keeps no checkpoints (rank 0's /results is an "
                  "emptyDir): resubmitted after a disruption it starts over; pvc_access_mode ReadWriteMany keeps them")
    result = _run_one(run, kind, job, manifests[0], extras=manifests[1:])
    if result.status == "preempted":
        again = f"it resumes from {kept}" if kept else "it starts over, without checkpoints"
        run.event(f"{result.detail}: resubmitting once ({again})")
        result = _run_one(run, kind, job, retry())
    if not run.keep:
        for extra in manifests[1:]:
            run.remove(extra["kind"], name_of(extra))
    return result


def checkpoint_dir(manifest: Obj) -> str | None:
    """The checkpoint folder rank 0 of a PyTorchJob or TrainJob writes (its --checkpoint-dir), None if none."""
    spec = manifest["spec"]
    args = spec["trainer"]["args"] if "trainer" in spec else \
        spec["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["args"]
    return str(args[args.index("--checkpoint-dir") + 1]) if "--checkpoint-dir" in args else None


def _run_one(run: ClusterRun, of: Kind, job: TrainJob, manifest: Obj,
             extras: list[Obj] | None = None) -> JobResult:
    """Submit one job (and, once it exists, `extras` such as its NetworkPolicy) and wait for its result."""
    kind, name = manifest["kind"], name_of(manifest)
    stop = threading.Event()
    follower: LogFollower | None = None
    try:
        run.create(manifest)
        for extra in extras or []:
            run.create(extra)
        began = time.time()
        deadline = run.deadline(job.timeout)
        final, timed_out = None, False
        while True:
            master = of.master(run, name) if follower is None else None
            if master is not None:  # a PyTorchJob's at once; a TrainJob's once JobSet has made it
                follower = LogFollower(run.api, run.namespace, master, run.on_line, stop, run.poll,
                                       container=of.container)
                follower.start()
            final, timed_out, done = _wait_job(run, of, kind, name, deadline, final)
            if done or timed_out:
                break
        stop.set()
        master = of.master(run, name)
        lines: list[str] = []
        if follower is not None:
            follower.join(timeout=10 * run.poll)
            if follower.error is not None:
                run.event(f"following the log of {follower.pod} failed: {follower.error}")
            lines = follower.lines if follower.complete and follower.pod == master else []
        if not lines and master is not None:
            lines = read_log(run.api, run.namespace, master, container=of.container)
        mounted = kind == "PyTorchJob" or run.spec.pvc_access_mode == "ReadWriteMany" or job.workers == 1
        result = pytorchjob_result(job.name, final, of.pods(run, name), lines,
                                   run.result_dir(run.out_dir(job), mounted=mounted),
                                   waited=(began, time.time()), timed_out=timed_out, kind=kind,
                                   master_pod=master)
    finally:
        stop.set()
    if not run.keep:
        run.remove(kind, name)
        run.event(f"deleted {kind} {name}")
    return result


def _wait_job(run: ClusterRun, of: Kind, kind: str, name: str, deadline: float | None,
              last: Obj | None) -> tuple[Obj | None, bool, bool]:
    """Watch one PyTorchJob or TrainJob for one window: (last seen object, gave up at the deadline, ended)."""
    window = run.window(deadline)
    if window is None:
        return last, True, False
    group, version, plural = m.CUSTOM_KINDS[kind]
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
    run.check_start(of.pods(run, name))
    return last, False, False


def give_up(names: list[str], results: dict[int, JobResult], on_result: ResultCallback | None, status: Any,
            detail: str) -> list[int]:
    """A result for every trial of a search (`names`, by index) still without one, `status` and `detail`, each
    to on_result; returns their indices."""
    now = time.time()
    missing = [index for index in range(len(names)) if index not in results]
    for index in missing:
        results[index] = JobResult(name=names[index], status=status, detail=detail, start_time=now, end_time=now,
                                   limit_mechanism="kubernetes")
        if on_result is not None:
            on_result(results[index])
    return missing
