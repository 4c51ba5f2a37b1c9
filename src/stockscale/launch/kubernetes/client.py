"""KubernetesLauncher: the Launcher protocol on a cluster with the Kubeflow Training Operator (or Trainer v2,
or Katib): it renders what a job or a search submits and hands the running to the module for that job.

`run(job)` submits one PyTorchJob (Master 1 + Worker job.workers - 1), or with kind="trainjob" one Trainer v2
TrainJob (numNodes = job.workers), and waits for its result (training_run.py). `run_many(jobs, parallel)` runs
a search: by default one Indexed Job, with kind="pytorchjob" one single-replica PyTorchJob per config
(search_jobs.py), with kind="optimizationjob" one Trainer v2 OptimizationJob, or with kind="katib" one Katib
Experiment (search_controllers.py). Finished objects are deleted unless keep=True. `status`, `logs` and
`delete` of any run are a ClusterSession's (session.py); what one run created, its start-up deadline and its
progress messages are its RunTracker's (tracking.py).

Deadlines: a pod that stays Pending longer than `startup_timeout` ends the run, and so does a pod the
scheduler reports Unschedulable (with its message); image pulls that fail are retried until that deadline.

Ctrl-C: the launcher stops waiting and re-raises KeyboardInterrupt; `submitted` names what it created,
`left_on_cluster()` what is still there, and `delete_run()` removes the run, so the command line can ask
whether to delete it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from stockscale.errors import InputError
from stockscale.launch.base import JobResult, TrainJob
from stockscale.launch.kubernetes import katib, runs
from stockscale.launch.kubernetes import manifests as m
from stockscale.launch.kubernetes.api import KubeApi
from stockscale.launch.kubernetes.search_controllers import run_katib, run_optimization
from stockscale.launch.kubernetes.search_jobs import run_indexed, run_pytorchjobs
from stockscale.launch.kubernetes.session import ClusterSession
from stockscale.launch.kubernetes.spec import ClusterSpec
from stockscale.launch.kubernetes.tracking import DEFAULT_STARTUP_TIMEOUT, RunTracker
from stockscale.launch.kubernetes.training_run import run_training
from stockscale.space import Space

Kind = Literal["job", "pytorchjob", "trainjob", "optimizationjob", "katib"]
KINDS = ("job", "pytorchjob", "trainjob", "optimizationjob", "katib")


class _OnTracker:
    """A launcher setting kept on its RunTracker, the one place the running code reads it from."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, launcher: KubernetesLauncher | None, owner: type) -> Any:
        return self if launcher is None else getattr(launcher.tracker, self.name)

    def __set__(self, launcher: KubernetesLauncher, value: Any) -> None:
        setattr(launcher.tracker, self.name, value)


class KubernetesLauncher:
    """Runs TrainJobs as PyTorchJobs, Trainer v2 TrainJobs, an Indexed Job, an OptimizationJob or a Katib
    Experiment. See the module docstring."""

    name = "kubernetes"
    streams_jobs = False  # a search is one object (Indexed Job, OptimizationJob, Experiment): all jobs first
    keep = _OnTracker()
    on_line = _OnTracker()
    on_event = _OnTracker()
    poll = _OnTracker()
    watch_window = _OnTracker()
    startup_timeout = _OnTracker()

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
        space: Space | None = None,
        trials: int | None = None,
        pruner: str = "none",
    ) -> None:
        if kind not in KINDS:
            raise InputError(f"--k8s-kind must be one of {', '.join(KINDS)}, not {kind!r}")
        if algorithm not in katib.ALGORITHMS or (algorithm == "tpe" and kind != "katib"):
            raise InputError(f"--k8s-algorithm {algorithm} is not one --k8s-kind {kind} runs (tpe is for katib; "
                             "optimizationjob searches by grid or random)")
        self.spec = spec or ClusterSpec()
        self.session = ClusterSession(self.spec.namespace, api=api, kubeconfig=kubeconfig, context=context)
        run_id = m.check_run_id(run_id) if run_id else m.make_run_id(run_prefix)
        self.tracker = RunTracker(self.session, self.spec, run_id, keep=keep, on_line=on_line, on_event=on_event,
                                  poll=poll, watch_window=watch_window, startup_timeout=startup_timeout)
        if pruner != "none" and (kind != "katib" or pruner != "median"):
            raise InputError(f"--pruner {pruner} on a cluster is Katib's early stopping: use --k8s-kind katib "
                             "--pruner median (stockscale's own pruners stop local processes and containers)")
        self.kind = kind
        self.algorithm = algorithm
        # A search a controller runs (Katib, an OptimizationJob) samples from the space itself.
        self.space = space if algorithm != "grid" else None
        self.trials, self.pruner = trials, pruner
        self.interrupted = False

    @property
    def searches_itself(self) -> bool:
        """Whether the cluster's controller chooses the trials (Katib, an OptimizationJob): the search then
        hands it every trial at once and asks no sampler of its own."""
        return self.kind in ("katib", "optimizationjob")

    @property
    def run_id(self) -> str:
        return self.tracker.run_id

    @property
    def namespace(self) -> str:
        return self.spec.namespace

    @property
    def api(self) -> KubeApi:
        """The API connection, made on first use (rendering and dry runs need no cluster)."""
        return self.session.api

    @property
    def submitted(self) -> list[str]:
        """"Kind/name" of every object this launcher created."""
        return self.tracker.submitted

    @property
    def deleted(self) -> set[str]:
        """"Kind/name" of the objects it created and deleted again."""
        return self.tracker.deleted

    # ------------------------------------------------------------------------------------------- rendering

    def object_name(self, job: TrainJob) -> str:
        return m.k8s_name(self.run_id, job.name)

    def out_dir(self, job: TrainJob) -> str:
        return self.tracker.out_dir(job)

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
                                              timeout=jobs[0].timeout, space=self.space,
                                              max_trials=self.trials or len(jobs),
                                              early_stopping=self.pruner == "median")]
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

    # ------------------------------------------------------------------------------------------- running

    def run(self, job: TrainJob) -> JobResult:
        """Submit one training job, stream rank 0's log to on_line, wait for it, return its result; a job the
        cluster disrupted is resubmitted once (same output folder, so it resumes from its checkpoints)."""
        manifests = self.run_manifests(job)
        try:
            return run_training(self.tracker, job, manifests, retry_manifest=lambda: self.run_manifest(
                job, name=m.k8s_name(self.object_name(job), "retry")))
        except KeyboardInterrupt:
            self.interrupted = True
            raise

    def run_many(self, jobs: list[TrainJob], parallel: int,
                 on_result: Callable[[JobResult], None] | None = None) -> list[JobResult]:
        """Run every job on the cluster, `parallel` at a time; results in the jobs' order."""
        manifests = self.search_manifests(jobs, parallel)
        try:
            if self.kind == "pytorchjob":
                results = run_pytorchjobs(self.tracker, jobs, manifests, max(1, parallel), on_result)
            elif self.kind == "optimizationjob":
                results = run_optimization(self.tracker, jobs, manifests[0], on_result)
            elif self.kind == "katib":
                results = run_katib(self.tracker, jobs, manifests[0], on_result, self.space)
            else:
                results = run_indexed(self.tracker, jobs, manifests, on_result)
        except KeyboardInterrupt:
            self.interrupted = True
            raise
        return [results[index] for index in sorted(results)]

    def left_on_cluster(self) -> list[str]:
        """What this launcher created and has not deleted ("Kind/name")."""
        return self.tracker.left_on_cluster()

    # ------------------------------------------------------------------------------------ the k8s command

    def status(self, run_id: str | None = None) -> list[runs.RunObject]:
        return self.session.status(run_id or self.run_id)

    def list_runs(self) -> list[str]:
        return self.session.list_runs()

    def logs(self, run_id: str, on_line: Callable[[str, str], None], *, follow: bool = False,
             pod: str | None = None, trial: int | None = None) -> list[str]:
        return self.session.logs(run_id, on_line, follow=follow, pod=pod, trial=trial)

    def delete_run(self, run_id: str | None = None) -> list[str]:
        """Delete everything labelled with the run (default: this launcher's run); returns "Kind/name"s."""
        if run_id in (None, self.run_id):
            return self.tracker.delete_run()
        return self.session.delete_run(run_id)

    def delete(self, run_id: str) -> list[str]:
        """The Launcher interface's delete: every object of the run, as `stockscale k8s delete RUN`."""
        return self.delete_run(run_id)
