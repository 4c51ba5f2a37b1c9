"""KubernetesLauncher: the Launcher protocol on a cluster with the Kubeflow Training Operator.

`run(job)` submits one PyTorchJob (Master 1 + Worker job.workers - 1), or with kind="trainjob" one Trainer v2
TrainJob (numNodes = job.workers), follows rank 0's log, waits with a watch for the job to end and returns a
JobResult with the metrics of the final JSON log line and the cluster's own timings. A job the cluster
disrupted (preemption, eviction) is resubmitted once under a new name, with the same output folder (and
checkpoints, see manifests.checkpoint_flags). `run_many(jobs, parallel)` runs a search: by default one
Indexed Job (pod i trains config i of a ConfigMap; `parallelism` pods at a time; a disrupted index runs
again), with kind="pytorchjob" one single-replica PyTorchJob per config, at most `parallel` at once, with
kind="optimizationjob" one Trainer v2 OptimizationJob, or with kind="katib" one Katib Experiment (katib.py).
Finished objects are deleted unless keep=True.

Deadlines: a pod that stays Pending longer than `startup_timeout` ends the run, and so does a pod the
scheduler reports Unschedulable (with its message); image pulls that fail are retried until that deadline.

Ctrl-C: the launcher stops waiting and re-raises KeyboardInterrupt; `submitted` names what it created,
`left_on_cluster()` what is still there, and `delete_run()` removes the run, so the command line can ask
whether to delete it.
"""

from __future__ import annotations

import copy
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from stockscale.errors import InputError
from stockscale.launch.base import JobResult, TrainJob
from stockscale.launch.kubernetes import katib, runs
from stockscale.launch.kubernetes import manifests as m
from stockscale.launch.kubernetes.api import KubeApi, NameTakenError, load_configuration
from stockscale.launch.kubernetes.logs import LogFollower, read_log
from stockscale.launch.kubernetes.outcome import (
    PULL_PROBLEMS,
    disruption,
    is_finished,
    is_pending,
    name_of,
    pod_failure,
    pod_index,
    pytorchjob_result,
    start_problem,
    state,
    trial_result,
    true_condition,
    unschedulable,
)
from stockscale.launch.kubernetes.spec import ClusterSpec

Kind = Literal["job", "pytorchjob", "trainjob", "optimizationjob", "katib"]
KINDS = ("job", "pytorchjob", "trainjob", "optimizationjob", "katib")
KATIB_TRIAL_ENDED = ("Succeeded", "Failed", "EarlyStopped", "Killed", "MetricsUnavailable")
JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"
ENDED = ("Succeeded", "Complete", "Failed")
DEFAULT_STARTUP_TIMEOUT = 600.0
OPERATOR_JOB_LABEL = "training.kubeflow.org/job-name"
SUBMISSION_ANNOTATION = "stockscale/submission"


class KubernetesLauncher:
    """Runs TrainJobs as PyTorchJobs, Trainer v2 TrainJobs, an Indexed Job or an OptimizationJob. See the
    module docstring."""

    name = "kubernetes"

    def __init__(
        self,
        spec: ClusterSpec | None = None,
        *,
        api: KubeApi | None = None,
        kubeconfig: Path | None = None,
        context: str | None = None,
        run_id: str | None = None,
        run_prefix: str = "stockscale",
        kind: Kind = "job",
        keep: bool = False,
        on_line: Callable[[str], None] | None = None,
        on_event: Callable[[str], None] | None = None,
        poll: float = 2.0,
        watch_window: float = 30.0,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        algorithm: Literal["grid", "random", "tpe"] = "grid",
    ) -> None:
        if kind not in KINDS:
            raise InputError(f"--k8s-kind must be one of {', '.join(KINDS)}, not {kind!r}")
        if algorithm not in katib.ALGORITHMS or (algorithm == "tpe" and kind != "katib"):
            raise InputError(f"--k8s-algorithm {algorithm} is not one --k8s-kind {kind} runs (tpe is for katib; "
                             "optimizationjob searches by grid or random)")
        self.spec = spec or ClusterSpec()
        self._api = api
        self.kubeconfig = kubeconfig
        self.context = context
        self.run_id = m.check_run_id(run_id) if run_id else m.make_run_id(run_prefix)
        self.kind = kind
        self.keep = keep
        self.on_line = on_line
        self.on_event = on_event
        self.poll = poll
        self.watch_window = watch_window
        self.startup_timeout = startup_timeout
        self.algorithm = algorithm
        self.submitted: list[str] = []  # "Kind/name" of every object this launcher created
        self.deleted: set[str] = set()  # ... and of those it deleted again
        self.interrupted = False
        self._told: set[str] = set()
        self._pending_since: dict[str, float] = {}  # pod name -> when this client first saw it Pending

    @property
    def namespace(self) -> str:
        return self.spec.namespace

    @property
    def api(self) -> KubeApi:
        """The API connection, made on first use (rendering and dry runs need no cluster)."""
        if self._api is None:
            self._api = KubeApi(load_configuration(self.kubeconfig, self.context))
        return self._api

    # ------------------------------------------------------------------------------------------- rendering

    def object_name(self, job: TrainJob) -> str:
        return m.k8s_name(self.run_id, job.name)

    def out_dir(self, job: TrainJob) -> str:
        return f"{m.RESULTS}/{self.run_id}/{m.k8s_name(job.name, limit=63)}"

    def result_dir(self, path: str, mounted: bool) -> str | None:
        """Where a run directory lies: on the PVC (a `pvc://claim/...` location), or nowhere (emptyDir)."""
        return f"pvc://{self.spec.pvc_name}{path.removeprefix(m.RESULTS)}" if mounted else None

    def run_manifest(self, job: TrainJob, name: str | None = None) -> dict[str, Any]:
        """The PyTorchJob (or, with kind="trainjob", the TrainJob) `run(job)` submits."""
        render = m.trainjob_manifest if self.kind == "trainjob" else m.pytorchjob_manifest
        return render(
            self.spec, name=name or self.object_name(job), run_id=self.run_id, config=job.config,
            workers=job.workers, out=self.out_dir(job), memory_limit=job.memory_limit, threads=job.threads,
            timeout=job.timeout)

    def network_policy(self) -> dict[str, Any]:
        """The run's rendezvous NetworkPolicy (PyTorchJob port 23456, Trainer v2 port 29500)."""
        port = m.TRAINER_PORT if self.kind == "trainjob" else m.MASTER_PORT
        return m.network_policy_manifest(self.spec, self.run_id, port)

    def run_manifests(self, job: TrainJob) -> list[dict[str, Any]]:
        """Everything `run(job)` submits: the job, and the NetworkPolicy when there are several workers."""
        needs_policy = self.spec.network_policy and job.workers > 1
        return [self.run_manifest(job), *([self.network_policy()] if needs_policy else [])]

    def search_manifests(self, jobs: list[TrainJob], parallel: int) -> list[dict[str, Any]]:
        """What `run_many(jobs, parallel)` submits: ConfigMap + Indexed Job, or one PyTorchJob per job."""
        if not jobs:
            raise InputError("a search needs at least one trial")
        if self.kind == "trainjob":
            raise InputError("--k8s-kind trainjob is for stockscale train; a search runs as job, pytorchjob, "
                             "optimizationjob or katib")
        if self.kind == "katib":
            return [katib.experiment_manifest(self.spec, run_id=self.run_id, configs=[job.config for job in jobs],
                                              parallelism=parallel, algorithm=self.algorithm,
                                              threads=jobs[0].threads, memory_limit=jobs[0].memory_limit,
                                              timeout=jobs[0].timeout)]
        if self.kind == "optimizationjob":
            return [m.optimizationjob_manifest(self.spec, run_id=self.run_id, configs=[job.config for job in jobs],
                                               parallelism=parallel, algorithm=self.algorithm,
                                               threads=jobs[0].threads, memory_limit=jobs[0].memory_limit,
                                               timeout=jobs[0].timeout)]
        if self.kind == "pytorchjob":
            return [self._trial_pytorchjob(index, job) for index, job in enumerate(jobs)]
        if any(job.workers > 1 for job in jobs):
            raise InputError("Indexed Job trials are single processes: use --k8s-kind pytorchjob for trials "
                             "with several workers")
        trials = [{**job.config, **({"threads": job.threads} if job.threads else {})} for job in jobs]
        limits = [job.memory_limit for job in jobs if job.memory_limit is not None]
        timeouts = [job.timeout for job in jobs if job.timeout is not None]
        return [
            m.trials_configmap(self.spec, self.run_id, trials),
            m.indexed_job_manifest(self.spec, run_id=self.run_id, completions=len(jobs), parallelism=parallel,
                                   memory_limit=max(limits) if limits else None,
                                   timeout=max(timeouts) if timeouts else None),
        ]

    def _trial_pytorchjob(self, index: int, job: TrainJob) -> dict[str, Any]:
        return m.pytorchjob_manifest(
            self.spec, name=self.object_name(job), run_id=self.run_id, config=job.config, workers=job.workers,
            out=self.out_dir(job), memory_limit=job.memory_limit, threads=job.threads, timeout=job.timeout,
            component="search", trial=index, mount_pvc=self.spec.mount_pvc_in_trials)

    def write_run_manifests(self, job: TrainJob, out_dir: Path) -> list[Path]:
        """Dry run of `run(job)`: its manifest (and a kustomization.yaml) in `out_dir`, nothing submitted."""
        return m.write_manifests(out_dir, {m.file_name(obj): obj for obj in self.run_manifests(job)})

    def write_search_manifests(self, jobs: list[TrainJob], parallel: int, out_dir: Path) -> list[Path]:
        """Dry run of `run_many(jobs, parallel)`: every manifest it would submit, in `out_dir`."""
        return m.write_manifests(out_dir, {m.file_name(obj): obj for obj in self.search_manifests(jobs, parallel)})

    # ------------------------------------------------------------------------------------------- one job

    def run(self, job: TrainJob) -> JobResult:
        """Submit one training job, stream rank 0's log to on_line, wait for it, return its result; a job the
        cluster disrupted is resubmitted once (same output folder, so it resumes from its checkpoints)."""
        manifests = self.run_manifests(job)
        try:
            result = self._run_one(job, manifests[0], extras=manifests[1:])
            if result.status == "preempted":
                self._event(f"{result.detail}: resubmitting once")
                retry = self.run_manifest(job, name=m.k8s_name(self.object_name(job), "retry"))
                result = self._run_one(job, retry)
        except KeyboardInterrupt:
            self.interrupted = True
            raise
        if not self.keep:
            for extra in manifests[1:]:
                self._delete(extra["kind"], name_of(extra))
        return result

    def _run_one(self, job: TrainJob, manifest: dict[str, Any],
                 extras: list[dict[str, Any]] | None = None) -> JobResult:
        """Submit one job (and, once it exists, `extras` such as its NetworkPolicy) and wait for its result."""
        kind, name = manifest["kind"], name_of(manifest)
        stop = threading.Event()
        follower: LogFollower | None = None
        try:
            self._create(manifest)
            for extra in extras or []:
                self._create(extra)
            began = time.time()
            deadline = None if job.timeout is None else time.monotonic() + job.timeout + self.startup_timeout
            final, timed_out = None, False
            while True:
                master = self._master_pod(kind, name) if follower is None else None
                if master is not None:  # a PyTorchJob's at once; a TrainJob's once JobSet has made it
                    follower = LogFollower(self.api, self.namespace, master, self.on_line, stop, self.poll,
                                           container=self._container(kind))
                    follower.start()
                final, timed_out, done = self._wait_job(kind, name, deadline, final)
                if done or timed_out:
                    break
            stop.set()
            master = self._master_pod(kind, name)
            lines: list[str] = []
            if follower is not None:
                follower.join(timeout=10 * self.poll)
                if follower.error is not None:
                    self._event(f"following the log of {follower.pod} failed: {follower.error}")
                lines = follower.lines if follower.complete and follower.pod == master else []
            if not lines and master is not None:
                lines = read_log(self.api, self.namespace, master, container=self._container(kind))
            mounted = kind == "PyTorchJob" or self.spec.pvc_access_mode == "ReadWriteMany" or job.workers == 1
            result = pytorchjob_result(job.name, final, self._pods_of(kind, name), lines,
                                       self.result_dir(self.out_dir(job), mounted=mounted),
                                       waited=(began, time.time()), timed_out=timed_out, kind=kind,
                                       master_pod=master)
        finally:
            stop.set()
        if not self.keep:
            self._delete(kind, name)
            self._event(f"deleted {kind} {name}")
        return result

    def _wait_job(self, kind: str, name: str, deadline: float | None,
                  last: dict[str, Any] | None) -> tuple[dict[str, Any] | None, bool, bool]:
        """Watch one PyTorchJob or TrainJob for one window: (last seen object, gave up at the deadline, ended)."""
        window = self._window(deadline)
        if window is None:
            return last, True, False
        group, version, plural = runs.CUSTOM_KINDS[kind]
        for event in self.api.watch(self.api.custom.list_namespaced_custom_object, group, version,
                                    self.namespace, plural, window=window, field_selector=f"metadata.name={name}",
                                    what=f"watch {kind} {name}", kind=kind, namespace=self.namespace):
            obj = event["object"]
            if name_of(obj) != name:
                continue
            if event["type"] == "DELETED":
                raise InputError(f"{kind} {name} was deleted before it finished")
            if last is None or state(obj) != state(last):
                self._event(f"{kind} {name}: {state(obj)}")
            last = obj
            if true_condition(obj, ENDED) is not None:
                return obj, False, True
        self._check_start(self._pods_of(kind, name), [name])
        return last, False, False

    @staticmethod
    def _container(kind: str) -> str:
        return m.TRAINER_NODE if kind == "TrainJob" else m.CONTAINER

    def _master_pod(self, kind: str, name: str) -> str | None:
        """Rank 0's pod: `<job>-master-0` of a PyTorchJob; a TrainJob's node with completion index 0."""
        if kind == "PyTorchJob":
            return f"{name}-master-0"
        pods = [pod for pod in self._pods_of(kind, name) if pod_index(pod) == 0]
        running = [pod for pod in pods if not disruption(pod)]
        return name_of((running or pods)[-1]) if pods else None

    def _pods_of(self, kind: str, job_name: str) -> list[dict[str, Any]]:
        pods = runs.list_kind(self.api, self.namespace, "Pod", self.run_id)
        if kind == "TrainJob":
            return [pod for pod in pods if (pod["metadata"].get("labels") or {}).get(JOBSET_LABEL) == job_name]
        return [pod for pod in pods
                if (pod["metadata"].get("labels") or {}).get(OPERATOR_JOB_LABEL) == job_name
                or name_of(pod).startswith(f"{job_name}-master-") or name_of(pod).startswith(f"{job_name}-worker-")]

    # ---------------------------------------------------------------------------------------------- search

    def run_many(self, jobs: list[TrainJob], parallel: int,
                 on_result: Callable[[JobResult], None] | None = None) -> list[JobResult]:
        """Run every job on the cluster, `parallel` at a time; results in the jobs' order."""
        manifests = self.search_manifests(jobs, parallel)
        try:
            if self.kind == "pytorchjob":
                results = self._run_pytorchjobs(jobs, manifests, max(1, parallel), on_result)
            elif self.kind == "optimizationjob":
                results = self._run_optimization(jobs, manifests[0], on_result)
            elif self.kind == "katib":
                results = self._run_katib(jobs, manifests[0], on_result)
            else:
                results = self._run_indexed(jobs, manifests, on_result)
        except KeyboardInterrupt:
            self.interrupted = True
            raise
        return [results[index] for index in sorted(results)]

    def _run_indexed(self, jobs: list[TrainJob], manifests: list[dict[str, Any]],
                     on_result: Callable[[JobResult], None] | None) -> dict[int, JobResult]:
        configmap, job_manifest = manifests
        self._create(configmap)
        job_name = name_of(job_manifest)
        try:
            created = self._create(job_manifest)
            self._check_kept_backoff_limit_per_index(created, job_name)
        except InputError:
            if not self.keep:
                self._delete("Job", job_name)
                self._delete("ConfigMap", name_of(configmap))
            raise
        mounted = self.spec.mount_pvc_in_trials
        results: dict[int, JobResult] = {}
        timeouts = [job.timeout for job in jobs if job.timeout is not None]
        deadline = None
        if len(timeouts) == len(jobs):
            waves = -(-len(jobs) // max(1, job_manifest["spec"]["parallelism"]))
            deadline = time.monotonic() + waves * max(timeouts) + self.startup_timeout

        def finish(pod: dict[str, Any]) -> None:
            index = pod_index(pod)
            if index is None or index in results or index >= len(jobs) or not is_finished(pod):
                return
            disrupted = disruption(pod) if pod.get("status", {}).get("phase") == "Failed" else None
            if disrupted and not job_ended:
                self._event(f"trial {index} ({jobs[index].name}): {disrupted}; the Job runs it again")
                return
            lines = read_log(self.api, self.namespace, name_of(pod))
            path = f"{m.RESULTS}/{self.run_id}/trials/{index}"
            result = trial_result(jobs[index].name, pod, lines, self.result_dir(path, mounted))
            results[index] = result
            self._event(f"trial {index} ({jobs[index].name}): {result.status}")
            if on_result is not None:
                on_result(result)

        job_ended = False
        while len(results) < len(jobs):
            window = self._window(deadline)
            if window is None:
                self._give_up(jobs, results, on_result, "timeout", "no result before the search's deadline")
                break
            for event in self.api.watch(self.api.core.list_namespaced_pod, self.namespace, window=window,
                                        label_selector=m.run_selector(self.run_id),
                                        what=f"watch the pods of Job {job_name}", kind="Pod",
                                        namespace=self.namespace):
                pod = event["object"]
                if not runs.belongs(pod, self.run_id) or event["type"] == "DELETED":
                    continue
                self._check_start([pod], [job_name])
                finish(pod)
                if len(results) == len(jobs):
                    break
            if len(results) == len(jobs):
                break
            job_now = self.api.call(self.api.batch.read_namespaced_job, job_name, self.namespace,
                                    what=f"read Job {job_name}", kind="Job", namespace=self.namespace,
                                    missing_ok=True)
            ended = true_condition(job_now, ("Complete", "Failed"))
            if job_now is None or ended is not None:
                job_ended = True
                for pod in runs.list_kind(self.api, self.namespace, "Pod", self.run_id):
                    finish(pod)
                reason = "Job deleted" if job_now is None else \
                    f"Job {ended.get('reason') or ended['type']}: {ended.get('message') or ''}".strip()
                status = "timeout" if ended is not None and ended.get("reason") == "DeadlineExceeded" else "error"
                self._give_up(jobs, results, on_result, status, reason)
                break
        if not self.keep:
            self._delete("Job", job_name)
            self._delete("ConfigMap", name_of(configmap))
            self._event(f"deleted Job {job_name} and ConfigMap {name_of(configmap)}")
        return results

    def _run_pytorchjobs(self, jobs: list[TrainJob], manifests: list[dict[str, Any]], parallel: int,
                         on_result: Callable[[JobResult], None] | None) -> dict[int, JobResult]:
        pending = list(range(len(jobs)))
        active: dict[str, tuple[int, float, float | None]] = {}  # name -> (index, began, deadline)
        results: dict[int, JobResult] = {}
        mounted = self.spec.mount_pvc_in_trials

        def collect(index: int, obj: dict[str, Any] | None, began: float, timed_out: bool) -> None:
            name = name_of(manifests[index])
            lines = read_log(self.api, self.namespace, f"{name}-master-0")
            result = pytorchjob_result(jobs[index].name, obj, self._pods_of("PyTorchJob", name), lines,
                                       self.result_dir(self.out_dir(jobs[index]), mounted),
                                       waited=(began, time.time()), timed_out=timed_out)
            results[index] = result
            del active[name]
            self._event(f"trial {index} ({jobs[index].name}): {result.status}")
            if on_result is not None:
                on_result(result)
            if not self.keep:
                self._delete("PyTorchJob", name)

        while pending or active:
            while pending and len(active) < parallel:
                index = pending.pop(0)
                self._create(manifests[index])
                timeout = jobs[index].timeout
                deadline = None if timeout is None else time.monotonic() + timeout + self.startup_timeout
                active[name_of(manifests[index])] = (index, time.time(), deadline)
            deadlines = [deadline for _, _, deadline in active.values() if deadline is not None]
            window = self._window(min(deadlines) if deadlines else None) or 1.0
            for event in self.api.watch(self.api.custom.list_namespaced_custom_object, *m.PYTORCHJOB_API[:2],
                                        self.namespace, m.PYTORCHJOB_API[2], window=window,
                                        label_selector=m.run_selector(self.run_id),
                                        what=f"watch the PyTorchJobs of run {self.run_id}", kind="PyTorchJob",
                                        namespace=self.namespace):
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
                self._check_start([pod for name in active for pod in self._pods_of("PyTorchJob", name)],
                                  list(active))
        return results

    def _run_optimization(self, jobs: list[TrainJob], manifest: dict[str, Any],
                          on_result: Callable[[JobResult], None] | None) -> dict[int, JobResult]:
        """One OptimizationJob: its controller creates a TrainJob per trial (labelled with our run, through
        the template); each finished trial is matched to its config by the parameters it was handed, and its
        result read from its rank-0 pod like any TrainJob's."""
        self._create(manifest)
        name = name_of(manifest)
        keys = [param["name"] for param in manifest["spec"]["parameters"]]
        wanted = [{key: m.param_text(m.plain_config(job.config)[key]) for key in keys} for job in jobs]
        results: dict[int, JobResult] = {}
        collected: set[str] = set()
        timeouts = [job.timeout for job in jobs if job.timeout is not None]
        deadline = None
        if len(timeouts) == len(jobs):
            waves = -(-len(jobs) // manifest["spec"]["parallelTrials"])
            deadline = time.monotonic() + waves * (max(timeouts) + self.startup_timeout)

        def collect(trial: dict[str, Any]) -> None:
            trial_name = name_of(trial)
            collected.add(trial_name)
            env = {var.get("name"): var.get("value") for var in trial["spec"].get("trainer", {}).get("env") or []}
            params = {key: env.get(f"{self.spec.optimization_env_prefix}{key}") for key in keys}
            index = next((i for i, want in enumerate(wanted) if want == params and i not in results), None)
            if index is None:
                self._event(f"trial TrainJob {trial_name} ran {params}, a point already run or not in the search")
                return
            master = self._master_pod("TrainJob", trial_name)
            lines = [] if master is None else read_log(self.api, self.namespace, master, container=m.TRAINER_NODE)
            path = f"{m.RESULTS}/{self.run_id}/trials/{master}"
            result = pytorchjob_result(jobs[index].name, trial, self._pods_of("TrainJob", trial_name), lines,
                                       self.result_dir(path, self.spec.pvc_access_mode == "ReadWriteMany"),
                                       waited=(time.time(), time.time()), kind="TrainJob", master_pod=master)
            results[index] = result
            self._event(f"trial {index} ({jobs[index].name}, TrainJob {trial_name}): {result.status}")
            if on_result is not None:
                on_result(result)

        self._follow_trials(jobs, results, on_result, deadline, name=name, parent_kind="OptimizationJob",
                            parent_ended=("Complete", "Failed"), trial_kind="TrainJob", trial_api=m.TRAINJOB_API,
                            trial_ended=ENDED, collected=collected, collect=collect)
        if not self.keep:
            self._delete("OptimizationJob", name)  # its TrainJobs and their pods go with it (owner references)
            self._event(f"deleted OptimizationJob {name}")
        return results

    def _run_katib(self, jobs: list[TrainJob], manifest: dict[str, Any],
                   on_result: Callable[[JobResult], None] | None) -> dict[int, JobResult]:
        """One Katib Experiment: its controller creates a Trial per point (labelled with our run: Katib copies
        the Experiment's labels) and a batch Job per Trial; each ended Trial is matched to its config by its
        parameter assignments, and its result read from its pod's log (the final JSON line), or, when that
        log is gone, from the validation loss Katib's metrics collector observed."""
        self._create(manifest)
        name = name_of(manifest)
        keys = [param["name"] for param in manifest["spec"]["parameters"]]
        wanted = [{key: katib.value_text(m.plain_config(job.config)[key]) for key in keys} for job in jobs]
        results: dict[int, JobResult] = {}
        collected: set[str] = set()
        timeouts = [job.timeout for job in jobs if job.timeout is not None]
        deadline = None
        if len(timeouts) == len(jobs):
            waves = -(-len(jobs) // manifest["spec"]["parallelTrialCount"])
            deadline = time.monotonic() + waves * (max(timeouts) + self.startup_timeout)

        def collect(trial: dict[str, Any]) -> None:
            trial_name = name_of(trial)
            collected.add(trial_name)
            params = katib.trial_assignments(trial)
            index = next((i for i, want in enumerate(wanted) if want == params and i not in results), None)
            if index is None:
                self._event(f"Katib trial {trial_name} ran {params}, a point already run or not in the search")
                return
            pods = [pod for pod in runs.list_kind(self.api, self.namespace, "Pod", self.run_id)
                    if (pod["metadata"].get("labels") or {}).get("job-name") == trial_name]
            pod = pods[-1] if pods else None
            lines = [] if pod is None else read_log(self.api, self.namespace, name_of(pod), container=m.CONTAINER)
            path = f"{m.RESULTS}/{self.run_id}/trials/{name_of(pod) if pod else trial_name}"
            run_dir = self.result_dir(path, self.spec.mount_pvc_in_trials)
            observed = katib.trial_metric(trial)
            if pod is not None and (lines or observed is None):
                result = trial_result(jobs[index].name, pod, lines, run_dir)
            else:
                ended = true_condition(trial, KATIB_TRIAL_ENDED) or {}
                ok = ended.get("type") == "Succeeded" and observed is not None
                now = time.time()
                result = JobResult(
                    name=jobs[index].name, status="success" if ok else "error",
                    detail="" if ok else f"Katib trial {trial_name}: {ended.get('reason') or ended.get('type')}",
                    metrics={"val": {"loss": float(observed["min"])}} if ok and observed else None,
                    start_time=now, end_time=now, limit_mechanism="kubernetes")
            results[index] = result
            self._event(f"trial {index} ({jobs[index].name}, Katib trial {trial_name}): {result.status}")
            if on_result is not None:
                on_result(result)

        self._follow_trials(jobs, results, on_result, deadline, name=name, parent_kind="Experiment",
                            parent_ended=("Succeeded", "Failed"), trial_kind="Trial", trial_api=katib.TRIAL_API,
                            trial_ended=KATIB_TRIAL_ENDED, collected=collected, collect=collect)
        if not self.keep:
            self._delete("Experiment", name)  # its Trials, their Jobs and pods go with it (owner references)
            self._event(f"deleted Experiment {name}")
        return results

    def _follow_trials(self, jobs: list[TrainJob], results: dict[int, JobResult],
                       on_result: Callable[[JobResult], None] | None, deadline: float | None, *, name: str,
                       parent_kind: str, parent_ended: tuple[str, ...], trial_kind: str,
                       trial_api: tuple[str, str, str], trial_ended: tuple[str, ...], collected: set[str],
                       collect: Callable[[dict[str, Any]], None]) -> None:
        """Until every job has a result: watch the run's trial objects (a search controller's TrainJobs or
        Katib's Trials) and `collect` each that ended. When the parent (`name`, of `parent_kind`) has ended or
        is gone and no trial still runs, the jobs left without a result are given up as not run."""
        while len(results) < len(jobs):
            window = self._window(deadline)
            if window is None:
                self._give_up(jobs, results, on_result, "timeout", "no result before the search's deadline")
                return
            group, version, plural = trial_api
            for event in self.api.watch(self.api.custom.list_namespaced_custom_object, group, version,
                                        self.namespace, plural, window=window,
                                        label_selector=m.run_selector(self.run_id),
                                        what=f"watch the {trial_kind}s of {parent_kind} {name}", kind=trial_kind,
                                        namespace=self.namespace):
                trial = event["object"]
                if event["type"] != "DELETED" and name_of(trial) not in collected \
                        and true_condition(trial, trial_ended) is not None:
                    collect(trial)
                if len(results) == len(jobs):
                    return
            self._check_start(runs.list_kind(self.api, self.namespace, "Pod", self.run_id), [name])
            now = runs.list_kind(self.api, self.namespace, parent_kind, self.run_id)
            ended = true_condition(now[0], parent_ended) if now else None
            if not now or ended is not None:
                trials = runs.list_kind(self.api, self.namespace, trial_kind, self.run_id)
                for trial in trials:
                    if name_of(trial) not in collected and true_condition(trial, trial_ended) is not None:
                        collect(trial)
                if any(true_condition(trial, trial_ended) is None for trial in trials):
                    continue  # trials still running after the parent ended: let them finish
                reason = f"{parent_kind} deleted" if not now else \
                    f"{parent_kind} {ended.get('reason') or ended['type']}: {ended.get('message') or ''}".strip()
                self._give_up(jobs, results, on_result, "error", f"not run ({reason})")
                return

    def _give_up(self, jobs: list[TrainJob], results: dict[int, JobResult],
                 on_result: Callable[[JobResult], None] | None, status: Any, detail: str) -> None:
        now = time.time()
        for index, job in enumerate(jobs):
            if index not in results:
                results[index] = JobResult(name=job.name, status=status, detail=detail, start_time=now,
                                           end_time=now, limit_mechanism="kubernetes")
                if on_result is not None:
                    on_result(results[index])

    # --------------------------------------------------------------------------------------------- helpers

    def _create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create one object and return what the API server stored. A create retried after a lost answer may
        find its own first attempt there: a one-off annotation tells that apart from a name another run (or
        an earlier --run-id) holds."""
        kind, name = obj["kind"], name_of(obj)
        common: dict[str, Any] = {"what": f"create {kind} {name} in namespace {self.namespace}", "kind": kind,
                                  "namespace": self.namespace}
        body = copy.deepcopy(dict(obj))
        token = secrets.token_hex(8)
        body["metadata"].setdefault("annotations", {})[SUBMISSION_ANNOTATION] = token
        stored: dict[str, Any] | None = None
        try:
            if kind in runs.CUSTOM_KINDS:
                group, version, plural = runs.CUSTOM_KINDS[kind]
                stored = self.api.call(self.api.custom.create_namespaced_custom_object, group, version,
                                       self.namespace, plural, body, **common)
            elif kind == "Job":
                stored = self.api.call(self.api.batch.create_namespaced_job, self.namespace, body, **common)
            elif kind == "ConfigMap":
                stored = self.api.call(self.api.core.create_namespaced_config_map, self.namespace, body, **common)
            elif kind == "NetworkPolicy":
                stored = self.api.call(self.api.networking.create_namespaced_network_policy, self.namespace, body,
                                       **common)
            else:  # pragma: no cover - stockscale creates no other kinds
                raise ValueError(f"cannot create {kind}")
        except NameTakenError:
            stored = self._holds(kind, name, token)
            if stored is None:
                raise
        self.submitted.append(f"{kind}/{name}")
        self._event(f"created {kind} {name} in namespace {self.namespace}")
        return stored or body

    def _holds(self, kind: str, name: str, token: str) -> dict[str, Any] | None:
        """The object called `name` if it is the one this very create sent (same one-off annotation)."""
        for obj in runs.list_kind(self.api, self.namespace, kind, self.run_id):
            annotations = obj["metadata"].get("annotations") or {}
            if name_of(obj) == name and annotations.get(SUBMISSION_ANNOTATION) == token:
                return obj
        return None

    def _check_kept_backoff_limit_per_index(self, stored: Mapping[str, Any], job_name: str) -> None:
        """Kubernetes older than 1.29 drops `backoffLimitPerIndex`: a failed trial would then be retried up
        to 6 times and one failure would fail the whole Job. Refuse instead of running something else."""
        if (stored.get("spec") or {}).get("backoffLimitPerIndex") is None:
            raise InputError(f"the API server dropped backoffLimitPerIndex from Job {job_name} (Kubernetes older "
                             "than 1.29, or the JobBackoffLimitPerIndex feature off): use --k8s-kind pytorchjob "
                             "or a cluster of Kubernetes 1.29 or newer")

    def _delete(self, kind: str, name: str) -> None:
        runs.delete_object(self.api, self.namespace, kind, name)
        self.deleted.add(f"{kind}/{name}")

    def left_on_cluster(self) -> list[str]:
        """What this launcher created and has not deleted ("Kind/name")."""
        return [item for item in self.submitted if item not in self.deleted]

    def _check_start(self, pods: list[dict[str, Any]], names: list[str]) -> None:
        """Stop when a pod can never start: its config is broken, the scheduler cannot place it, or it stayed
        Pending (image pulls failing included) past the start-up deadline. Waiting would be forever."""
        now = time.monotonic()
        for pod in pods:
            if not is_pending(pod):
                self._pending_since.pop(name_of(pod), None)
                failure = pod_failure(pod)
                if failure is not None:
                    self._event(failure[1])
                continue
            since = self._pending_since.setdefault(name_of(pod), now)
            problem = start_problem(pod) or unschedulable(pod)
            pulling = start_problem(pod, PULL_PROBLEMS)
            if problem is None and pulling is not None:
                self._event(f"{pulling}: retrying until the start-up deadline ({self.startup_timeout:.0f}s)")
            if problem is None and now - since >= self.startup_timeout:
                problem = (f"{pulling}, still after {self.startup_timeout:.0f}s" if pulling else
                           f"pod {name_of(pod)} is still Pending after the start-up deadline of "
                           f"{self.startup_timeout:.0f}s (--startup-timeout)")
            if problem is None:
                continue
            hint = (f"; is the image {self.spec.image} loaded into the cluster (deploy/deploy.sh) or pushed "
                    "(IMAGE=...)?") if "Image" in problem else ""
            if not self.keep:
                self.delete_run()
            raise InputError(f"{problem}{hint}")

    def _window(self, deadline: float | None) -> float | None:
        if deadline is None:
            return self.watch_window
        left = deadline - time.monotonic()
        return None if left <= 0 else max(0.5, min(self.watch_window, left))

    def _event(self, text: str) -> None:
        """Progress for the command line, each message once."""
        if self.on_event is not None and text not in self._told:
            self._told.add(text)
            self.on_event(text)

    # ------------------------------------------------------------------------------------ the k8s command

    def status(self, run_id: str | None = None) -> list[runs.RunObject]:
        return runs.run_status(self.api, self.namespace, run_id or self.run_id)

    def list_runs(self) -> list[str]:
        return runs.list_runs(self.api, self.namespace)

    def logs(self, run_id: str, on_line: Callable[[str, str], None], *, follow: bool = False,
             pod: str | None = None, trial: int | None = None) -> list[str]:
        return runs.run_logs(self.api, self.namespace, run_id, on_line, follow=follow, pod=pod, trial=trial)

    def delete_run(self, run_id: str | None = None) -> list[str]:
        """Delete everything labelled with the run (default: this launcher's run); returns "Kind/name"s."""
        deleted = runs.delete_run(self.api, self.namespace, run_id or self.run_id)
        if run_id in (None, self.run_id):
            self.deleted.update(self.submitted)
        return deleted

    def delete(self, run_id: str) -> list[str]:
        """The Launcher interface's delete: every object of the run, as `stockscale k8s delete RUN`."""
        return self.delete_run(run_id)
