"""KubernetesLauncher: the Launcher protocol on a cluster with the Kubeflow Training Operator.

`run(job)` submits one PyTorchJob (Master 1 + Worker job.workers - 1), follows the master's log, waits with a
watch for Succeeded or Failed and returns a JobResult with the metrics of the final JSON log line and the
cluster's own timings. `run_many(jobs, parallel)` runs a search: by default one Indexed Job (pod i trains
config i of a ConfigMap; `parallelism` pods at a time), or with kind="pytorchjob" one single-replica
PyTorchJob per config, at most `parallel` at once. Finished objects are deleted unless keep=True.

Ctrl-C: the launcher stops waiting and re-raises KeyboardInterrupt; `submitted` names what it created and
`delete_run()` removes the run, so the command line can ask whether to delete it.
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
from stockscale.launch.kubernetes import manifests as m
from stockscale.launch.kubernetes import runs
from stockscale.launch.kubernetes.api import KubeApi, NameTakenError, load_configuration
from stockscale.launch.kubernetes.logs import LogFollower, read_log
from stockscale.launch.kubernetes.outcome import (
    is_finished,
    name_of,
    pod_failure,
    pod_index,
    pytorchjob_result,
    start_problem,
    state,
    trial_result,
    true_condition,
)
from stockscale.launch.kubernetes.spec import ClusterSpec

Kind = Literal["job", "pytorchjob"]
OPERATOR_JOB_LABEL = "training.kubeflow.org/job-name"
SUBMISSION_ANNOTATION = "stockscale/submission"


class KubernetesLauncher:
    """Runs TrainJobs as PyTorchJobs or an Indexed Job. See the module docstring."""

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
        startup_timeout: float = 1800.0,
    ) -> None:
        if kind not in ("job", "pytorchjob"):
            raise InputError(f"--k8s-kind must be job or pytorchjob, not {kind!r}")
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
        self.submitted: list[str] = []  # "Kind/name" of every object this launcher created
        self.interrupted = False
        self._told: set[str] = set()

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

    def run_manifest(self, job: TrainJob) -> dict[str, Any]:
        """The PyTorchJob `run(job)` submits."""
        return m.pytorchjob_manifest(
            self.spec, name=self.object_name(job), run_id=self.run_id, config=job.config, workers=job.workers,
            out=self.out_dir(job), memory_limit=job.memory_limit, threads=job.threads, timeout=job.timeout)

    def search_manifests(self, jobs: list[TrainJob], parallel: int) -> list[dict[str, Any]]:
        """What `run_many(jobs, parallel)` submits: ConfigMap + Indexed Job, or one PyTorchJob per job."""
        if not jobs:
            raise InputError("a search needs at least one trial")
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
        obj = self.run_manifest(job)
        return m.write_manifests(out_dir, {m.file_name(obj): obj})

    def write_search_manifests(self, jobs: list[TrainJob], parallel: int, out_dir: Path) -> list[Path]:
        """Dry run of `run_many(jobs, parallel)`: every manifest it would submit, in `out_dir`."""
        return m.write_manifests(out_dir, {m.file_name(obj): obj for obj in self.search_manifests(jobs, parallel)})

    # ------------------------------------------------------------------------------------------- one job

    def run(self, job: TrainJob) -> JobResult:
        """Submit one PyTorchJob, stream the master's log to on_line, wait for it, return its result."""
        manifest = self.run_manifest(job)
        name = name_of(manifest)
        stop = threading.Event()
        try:
            self._create(manifest)
            follower = LogFollower(self.api, self.namespace, f"{name}-master-0", self.on_line, stop, self.poll)
            follower.start()
            began = time.time()
            deadline = None if job.timeout is None else time.monotonic() + job.timeout + self.startup_timeout
            final, timed_out = self._wait_pytorchjob(name, deadline)
            stop.set()
            follower.join(timeout=10 * self.poll)
            lines = follower.lines if follower.complete else read_log(self.api, self.namespace, f"{name}-master-0")
            if follower.error is not None:
                self._event(f"following the log of {name}-master-0 failed: {follower.error}")
            pods = self._pods_of(name)
            result = pytorchjob_result(job.name, final, pods, lines,
                                       self.result_dir(self.out_dir(job), mounted=True),
                                       waited=(began, time.time()), timed_out=timed_out)
        except KeyboardInterrupt:
            self.interrupted = True
            raise
        finally:
            stop.set()
        if not self.keep:
            runs.delete_object(self.api, self.namespace, "PyTorchJob", name)
            self._event(f"deleted PyTorchJob {name}")
        return result

    def _wait_pytorchjob(self, name: str, deadline: float | None) -> tuple[dict[str, Any] | None, bool]:
        """Watch one PyTorchJob until it succeeds or fails: (last seen object, gave up at the deadline)."""
        last: dict[str, Any] | None = None
        seen_state = ""
        while True:
            window = self._window(deadline)
            if window is None:
                return last, True
            for event in self.api.watch(self.api.custom.list_namespaced_custom_object, *m.PYTORCHJOB_API[:2],
                                        self.namespace, m.PYTORCHJOB_API[2], window=window,
                                        field_selector=f"metadata.name={name}", what=f"watch PyTorchJob {name}",
                                        kind="PyTorchJob", namespace=self.namespace):
                obj = event["object"]
                if name_of(obj) != name:
                    continue
                if event["type"] == "DELETED":
                    raise InputError(f"PyTorchJob {name} was deleted before it finished")
                last = obj
                if state(obj) != seen_state:
                    seen_state = state(obj)
                    self._event(f"PyTorchJob {name}: {seen_state}")
                if true_condition(obj, ("Succeeded", "Failed")) is not None:
                    return obj, False
            self._check_start(self._pods_of(name), [name])

    def _pods_of(self, job_name: str) -> list[dict[str, Any]]:
        pods = runs.list_kind(self.api, self.namespace, "Pod", self.run_id)
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
        try:
            self._create(job_manifest)
        except InputError:
            if not self.keep:
                runs.delete_object(self.api, self.namespace, "ConfigMap", name_of(configmap))
            raise
        job_name = name_of(job_manifest)
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
            lines = read_log(self.api, self.namespace, name_of(pod))
            path = f"{m.RESULTS}/{self.run_id}/trials/{index}"
            result = trial_result(jobs[index].name, pod, lines, self.result_dir(path, mounted))
            results[index] = result
            self._event(f"trial {index} ({jobs[index].name}): {result.status}")
            if on_result is not None:
                on_result(result)

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
                for pod in runs.list_kind(self.api, self.namespace, "Pod", self.run_id):
                    finish(pod)
                reason = "Job deleted" if job_now is None else \
                    f"Job {ended.get('reason') or ended['type']}: {ended.get('message') or ''}".strip()
                status = "timeout" if ended is not None and ended.get("reason") == "DeadlineExceeded" else "error"
                self._give_up(jobs, results, on_result, status, reason)
                break
        if not self.keep:
            runs.delete_object(self.api, self.namespace, "Job", job_name)
            runs.delete_object(self.api, self.namespace, "ConfigMap", name_of(configmap))
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
            result = pytorchjob_result(jobs[index].name, obj, self._pods_of(name), lines,
                                       self.result_dir(self.out_dir(jobs[index]), mounted),
                                       waited=(began, time.time()), timed_out=timed_out)
            results[index] = result
            del active[name]
            self._event(f"trial {index} ({jobs[index].name}): {result.status}")
            if on_result is not None:
                on_result(result)
            if not self.keep:
                runs.delete_object(self.api, self.namespace, "PyTorchJob", name)

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
                self._check_start([pod for name in active for pod in self._pods_of(name)], list(active))
        return results

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

    def _create(self, obj: Mapping[str, Any]) -> None:
        """Create one object. A create retried after a lost answer may find its own first attempt there:
        a one-off annotation tells that apart from a name another run (or an earlier --run-id) holds."""
        kind, name = obj["kind"], name_of(obj)
        common: dict[str, Any] = {"what": f"create {kind} {name} in namespace {self.namespace}", "kind": kind,
                                  "namespace": self.namespace}
        body = copy.deepcopy(dict(obj))
        token = secrets.token_hex(8)
        body["metadata"].setdefault("annotations", {})[SUBMISSION_ANNOTATION] = token
        try:
            if kind == "PyTorchJob":
                self.api.call(self.api.custom.create_namespaced_custom_object, *m.PYTORCHJOB_API[:2],
                              self.namespace, m.PYTORCHJOB_API[2], body, **common)
            elif kind == "Job":
                self.api.call(self.api.batch.create_namespaced_job, self.namespace, body, **common)
            elif kind == "ConfigMap":
                self.api.call(self.api.core.create_namespaced_config_map, self.namespace, body, **common)
            else:  # pragma: no cover - stockscale creates no other kinds
                raise ValueError(f"cannot create {kind}")
        except NameTakenError:
            if not self._holds(kind, name, token):
                raise
        self.submitted.append(f"{kind}/{name}")
        self._event(f"created {kind} {name} in namespace {self.namespace}")

    def _holds(self, kind: str, name: str, token: str) -> bool:
        """Is the object called `name` the one this very create sent (same one-off annotation)?"""
        for obj in runs.list_kind(self.api, self.namespace, kind, self.run_id):
            annotations = obj["metadata"].get("annotations") or {}
            if name_of(obj) == name and annotations.get(SUBMISSION_ANNOTATION) == token:
                return True
        return False

    def _check_start(self, pods: list[dict[str, Any]], names: list[str]) -> None:
        """Stop early when a pod can never start (image not found, bad config): waiting would be forever."""
        for pod in pods:
            problem = start_problem(pod)
            if problem is None:
                continue
            hint = (f"; is the image {self.spec.image} loaded into the cluster (deploy/deploy.sh) or pushed "
                    "(IMAGE=...)?") if "Image" in problem else ""
            if not self.keep:
                self.delete_run()
            raise InputError(f"{problem}{hint}")
        for pod in pods:
            failure = pod_failure(pod)
            if failure is not None:
                self._event(failure[1])

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
        return runs.delete_run(self.api, self.namespace, run_id or self.run_id)
