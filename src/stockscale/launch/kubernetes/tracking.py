"""RunTracker: what one run (a training job or a search) put on the cluster, and watching it start; the ground
the one-run code (training_run.py) and the search schedulers (search_jobs.py, search_controllers.py) share.

It creates objects so that a create retried after a lost answer is not taken for a name another run holds,
remembers what it created and deleted (so Ctrl-C can say what is left), ends the run when a pod can never
start (broken config, unschedulable, Pending past `startup_timeout`, image pulls included), finds rank 0's pod,
and tells the command line about progress, each message once.
"""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from stockscale.errors import InputError
from stockscale.launch.base import JobResult, TrainJob
from stockscale.launch.kubernetes import manifests as m
from stockscale.launch.kubernetes import runs
from stockscale.launch.kubernetes.api import KubeApi, NameTakenError
from stockscale.launch.kubernetes.outcome import (
    PULL_PROBLEMS,
    disruption,
    is_pending,
    name_of,
    pod_failure,
    pod_index,
    start_problem,
    unschedulable,
)
from stockscale.launch.kubernetes.session import ClusterSession
from stockscale.launch.kubernetes.spec import ClusterSpec

ENDED = ("Succeeded", "Complete", "Failed")
JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"
OPERATOR_JOB_LABEL = "training.kubeflow.org/job-name"
SUBMISSION_ANNOTATION = "stockscale/submission"
DEFAULT_STARTUP_TIMEOUT = 600.0


class RunTracker:
    """One run's objects on the cluster and the settings for waiting on them. See the module docstring."""

    def __init__(self, session: ClusterSession, spec: ClusterSpec, run_id: str, *, keep: bool = False,
                 on_line: Callable[[str], None] | None = None, on_event: Callable[[str], None] | None = None,
                 poll: float = 2.0, watch_window: float = 30.0,
                 startup_timeout: float = DEFAULT_STARTUP_TIMEOUT) -> None:
        self.session = session
        self.spec = spec
        self.run_id = run_id
        self.keep = keep
        self.on_line = on_line
        self.on_event = on_event
        self.poll = poll
        self.watch_window = watch_window
        self.startup_timeout = startup_timeout
        self.submitted: list[str] = []  # "Kind/name" of every object this run created
        self.deleted: set[str] = set()  # ... and of those it deleted again
        self._told: set[str] = set()
        self._pending_since: dict[str, float] = {}  # pod name -> when this client first saw it Pending

    @property
    def api(self) -> KubeApi:
        return self.session.api

    @property
    def namespace(self) -> str:
        return self.spec.namespace

    # ------------------------------------------------------------------------------------------- where

    def out_dir(self, job: TrainJob) -> str:
        return f"{m.RESULTS}/{self.run_id}/{m.k8s_name(job.name, limit=63)}"

    def result_dir(self, path: str, mounted: bool) -> str | None:
        """Where a run directory lies: on the PVC (a `pvc://claim/...` location), or nowhere (emptyDir)."""
        return f"pvc://{self.spec.pvc_name}{path.removeprefix(m.RESULTS)}" if mounted else None

    # --------------------------------------------------------------------------------- create, delete

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
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
        self.event(f"created {kind} {name} in namespace {self.namespace}")
        return stored or body

    def _holds(self, kind: str, name: str, token: str) -> dict[str, Any] | None:
        """The object called `name` if it is the one this very create sent (same one-off annotation)."""
        for obj in runs.list_kind(self.api, self.namespace, kind, self.run_id):
            annotations = obj["metadata"].get("annotations") or {}
            if name_of(obj) == name and annotations.get(SUBMISSION_ANNOTATION) == token:
                return obj
        return None

    def delete(self, kind: str, name: str) -> None:
        runs.delete_object(self.api, self.namespace, kind, name)
        self.deleted.add(f"{kind}/{name}")

    def left_on_cluster(self) -> list[str]:
        """What this run created and has not deleted ("Kind/name")."""
        return [item for item in self.submitted if item not in self.deleted]

    def delete_run(self) -> list[str]:
        """Delete everything labelled with this run; returns "Kind/name"s."""
        deleted = self.session.delete_run(self.run_id)
        self.deleted.update(self.submitted)
        return deleted

    # ------------------------------------------------------------------------------------------ waiting

    def check_start(self, pods: list[dict[str, Any]], names: list[str]) -> None:
        """Stop when a pod can never start: its config is broken, the scheduler cannot place it, or it stayed
        Pending (image pulls failing included) past the start-up deadline. Waiting would be forever."""
        now = time.monotonic()
        for pod in pods:
            if not is_pending(pod):
                self._pending_since.pop(name_of(pod), None)
                failure = pod_failure(pod)
                if failure is not None:
                    self.event(failure[1])
                continue
            since = self._pending_since.setdefault(name_of(pod), now)
            problem = start_problem(pod) or unschedulable(pod)
            pulling = start_problem(pod, PULL_PROBLEMS)
            if problem is None and pulling is not None:
                self.event(f"{pulling}: retrying until the start-up deadline ({self.startup_timeout:.0f}s)")
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

    def window(self, deadline: float | None) -> float | None:
        """How long the next watch may last: `watch_window`, shortened to the deadline; None once it passed."""
        if deadline is None:
            return self.watch_window
        left = deadline - time.monotonic()
        return None if left <= 0 else max(0.5, min(self.watch_window, left))

    def event(self, text: str) -> None:
        """Progress for the command line, each message once."""
        if self.on_event is not None and text not in self._told:
            self._told.add(text)
            self.on_event(text)

    # ---------------------------------------------------------------------------------------- the pods

    @staticmethod
    def container(kind: str) -> str:
        return m.TRAINER_NODE if kind == "TrainJob" else m.CONTAINER

    def master_pod(self, kind: str, name: str) -> str | None:
        """Rank 0's pod: `<job>-master-0` of a PyTorchJob; a TrainJob's node with completion index 0."""
        if kind == "PyTorchJob":
            return f"{name}-master-0"
        pods = [pod for pod in self.pods_of(kind, name) if pod_index(pod) == 0]
        running = [pod for pod in pods if not disruption(pod)]
        return name_of((running or pods)[-1]) if pods else None

    def pods_of(self, kind: str, job_name: str) -> list[dict[str, Any]]:
        pods = runs.list_kind(self.api, self.namespace, "Pod", self.run_id)
        if kind == "TrainJob":
            return [pod for pod in pods if (pod["metadata"].get("labels") or {}).get(JOBSET_LABEL) == job_name]
        return [pod for pod in pods
                if (pod["metadata"].get("labels") or {}).get(OPERATOR_JOB_LABEL) == job_name
                or name_of(pod).startswith(f"{job_name}-master-") or name_of(pod).startswith(f"{job_name}-worker-")]


def give_up(jobs: list[TrainJob], results: dict[int, JobResult], on_result: Callable[[JobResult], None] | None,
            status: Any, detail: str) -> None:
    """A result for every job of a search still without one: `status` ("timeout", "error") and `detail`."""
    now = time.time()
    for index, job in enumerate(jobs):
        if index not in results:
            results[index] = JobResult(name=job.name, status=status, detail=detail, start_time=now,
                                       end_time=now, limit_mechanism="kubernetes")
            if on_result is not None:
                on_result(results[index])
