"""ClusterRun: what one run (a training job or a search) puts on the cluster, and watching it start; the
ground every kind shares (training.py, search_jobs.py, controllers.py). KubernetesRunner is one (runner.py).

It creates objects so that a create retried after a lost answer is not taken for a name another run holds,
remembers what it created and deleted (so Ctrl-C can say what is left, `left_behind`), ends the run when a pod
can never start (broken config, unschedulable, Pending past `startup_timeout`, image pulls included), and tells
the command line about progress, each message once.
"""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from stockscale.errors import InputError
from stockscale.launch.cluster_spec import ClusterSpec
from stockscale.launch.kubernetes import manifests as m
from stockscale.launch.kubernetes.api import KubeApi, NameTakenError
from stockscale.launch.kubernetes.outcome import (
    PULL_PROBLEMS,
    is_pending,
    name_of,
    pod_failure,
    start_problem,
    unschedulable,
)
from stockscale.launch.kubernetes.session import ClusterSession
from stockscale.launch.pods import RESULTS
from stockscale.launch.runner import TrainJob

SUBMISSION_ANNOTATION = "stockscale/submission"
DEFAULT_STARTUP_TIMEOUT = 600.0
T = TypeVar("T")


class ClusterRun:
    """One run's objects on the cluster and the settings for waiting on them. See the module docstring."""

    def __init__(self, spec: ClusterSpec | None = None, *, api: KubeApi | None = None, kubeconfig: Path | None = None,
                 context: str | None = None, run_id: str | None = None, run_prefix: str = "stockscale",
                 keep: bool = False, on_line: Callable[[str], None] | None = None,
                 on_event: Callable[[str], None] | None = None, poll: float = 2.0, watch_window: float = 30.0,
                 startup_timeout: float = DEFAULT_STARTUP_TIMEOUT) -> None:
        self.spec = spec or ClusterSpec()
        self.session = ClusterSession(self.spec.namespace, api=api, kubeconfig=kubeconfig, context=context)
        self._run_id = m.check_run_id(run_id) if run_id else m.make_run_id(run_prefix)
        self.keep, self.on_line, self.on_event = keep, on_line, on_event
        self.poll, self.watch_window, self.startup_timeout = poll, watch_window, startup_timeout
        self.submitted: list[str] = []  # "Kind/name" of every object this run created
        self.deleted: set[str] = set()  # ... and of those it deleted again
        self.interrupted = False
        self._told: set[str] = set()
        self._pending_since: dict[str, float] = {}  # pod name -> when this client first saw it Pending

    @property
    def run_id(self) -> str:
        return self._run_id

    @property
    def namespace(self) -> str:
        return self.spec.namespace

    @property
    def api(self) -> KubeApi:
        """The API connection, made on first use (rendering and dry runs need no cluster)."""
        return self.session.api

    def out_dir(self, job: TrainJob) -> str:
        return f"{RESULTS}/{self.run_id}/{m.k8s_name(job.name, limit=63)}"

    def result_dir(self, path: str, mounted: bool) -> str | None:
        """Where a run directory lies: on the PVC (a `pvc://claim/...` location), or nowhere (emptyDir)."""
        return f"pvc://{self.spec.pvc_name}{path.removeprefix(RESULTS)}" if mounted else None

    def interruptible(self, work: Callable[[], T]) -> T:
        """`work()`, remembering a Ctrl-C (`interrupted`) before it goes on up."""
        try:
            return work()
        except KeyboardInterrupt:
            self.interrupted = True
            raise

    def delete(self, run_id: str) -> list[str]:
        """Delete everything labelled with the run (`stockscale k8s delete RUN`); returns "Kind/name"s."""
        deleted = self.session.delete_run(run_id)
        if run_id == self.run_id:
            self.deleted.update(self.submitted)
        return deleted

    def left_behind(self) -> list[str]:
        """What this runner created and has not deleted ("Kind/name")."""
        return [item for item in self.submitted if item not in self.deleted]

    # ------------------------------------------------------------------------------------------- waiting

    def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create one object and return what the API server stored. A create retried after a lost answer may
        find its own first attempt there: a one-off annotation tells that apart from a name another run (or
        an earlier run id) holds."""
        kind, name = obj["kind"], name_of(obj)
        body = copy.deepcopy(dict(obj))
        token = secrets.token_hex(8)
        body["metadata"].setdefault("annotations", {})[SUBMISSION_ANNOTATION] = token
        try:
            stored = self.session.create(body)
        except NameTakenError:
            stored = next((obj for obj in self.session.list_kind(kind, self.run_id) if name_of(obj) == name
                           and (obj["metadata"].get("annotations") or {}).get(SUBMISSION_ANNOTATION) == token),
                          None)
            if stored is None:
                raise
        self.submitted.append(f"{kind}/{name}")
        self.event(f"created {kind} {name} in namespace {self.namespace}")
        return stored or body

    def remove(self, kind: str, name: str) -> None:
        """Delete one object this run created."""
        self.session.delete_object(kind, name)
        self.deleted.add(f"{kind}/{name}")

    def check_start(self, pods: list[dict[str, Any]]) -> None:
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
                self.delete(self.run_id)
            raise InputError(f"{problem}{hint}")

    def deadline(self, timeout: float | None, trials: int = 1, parallel: int = 1) -> float | None:
        """When (time.monotonic()) a run of `trials` jobs, at most `parallel` at once, each given `timeout`,
        gives up on what is still without a result; None without a timeout. The one deadline rule of every
        kind, a single training job (one trial) and every cluster search alike:

            waves * (timeout + startup_timeout),   waves = ceil(trials / parallel)

        because each wave's pods are new pods, and each pays its start-up (scheduling, image pull, the
        controller making it) before its own timeout can run out; the trials of one wave start together."""
        if timeout is None:
            return None
        waves = -(-trials // max(1, parallel))
        return time.monotonic() + waves * (timeout + self.startup_timeout)

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
