"""DockerRunner: training jobs as containers of the stockscale image, each holding its pod's limits.

Pods for real on one machine. `run(job)` renders the PyTorchJob that `--backend kubernetes` would submit and
starts each replica as a container (launch/containers.py translates the pod template), on a network this run
creates for itself: internal (no route off the machine), where replicas reach each other by their pod names
(`<run>-master-0`). `run_many(jobs, parallel)` renders the search's Indexed Job and trials ConfigMap and
starts container i with `JOB_COMPLETION_INDEX=i` and the trials file mounted read-only, `parallel` at a time,
with no network at all. Results come back as from pods: the last JSON line of the container's log.

Statuses: a container the engine reports OOMKilled (or that exited 137 after reaching its limit) is `oom`,
named in the detail; a worker's own MemoryError report is `oom` too; the job's timeout is `timeout`; any
other exit is `error` with the code and the log's last line.

Nothing is left behind: every container and network carries the run's labels and the launcher's pid; all are
removed after success, failure, timeout or Ctrl-C (the CLI turns SIGTERM into the same path), and a new
launcher sweeps what a killed one left (its pid is dead). Docker or podman: the Docker SDK talks to either
engine's API socket. The engine session and the sweep live in launch/docker_engine.py; following one container
and reading how it ended in launch/docker_replica.py; when a job ends is launch/replicas.py's one policy. The
dry run (`render`) is each container's options, as `containers.create` would get them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import stockscale.launch.kubernetes.manifests as m
from stockscale.files import open_log, owner_tag
from stockscale.launch.cluster_spec import ClusterSpec
from stockscale.launch.containers import Pod, container_options, replica_pods
from stockscale.launch.docker_engine import (
    LABEL_BACKEND,
    LABEL_OWNER,
    STAGING_PREFIX,
    connect_engine,
    owner_token,
    signals_deferred,
)
from stockscale.launch.docker_engine import check_image as check_engine_image
from stockscale.launch.docker_engine import sweep as sweep_engine
from stockscale.launch.docker_replica import RunningContainer, log_lines, watch_memory
from stockscale.launch.replicas import EpochWatch, check_job, supervise
from stockscale.launch.runner import (
    JobResult,
    LineCallback,
    ResultCallback,
    Runner,
    Status,
    TrainJob,
    run_many_interruptible,
)
from stockscale.limits import check_limit
from stockscale.worker import parse_result_line

# Re-exported: callers and tests name the engine's helpers through the launcher's module.
__all__ = ["LABEL_BACKEND", "LABEL_OWNER", "STAGING_PREFIX", "DockerRunner", "connect_engine"]

WAIT_TICK = 0.2
LOG_TAIL = 50


class DockerRunner(Runner):
    """Runs TrainJobs as containers of `spec.image`; see the module docstring.

    `on_line(rank, line)` receives every log line of every container (from reader threads). `keep` leaves
    finished containers for `logs`/`delete`. `log_dir` keeps each container's log as `<log_dir>/<job>/<pod>.log`.
    """

    name = "docker"
    streams_jobs = False  # a search is one Indexed Job: run_many reads every job first

    def __init__(self, spec: ClusterSpec | None = None, *, engine: Any = None,
                 on_line: Callable[[int, str], None] | None = None, on_event: Callable[[str], None] | None = None,
                 log_dir: Path | None = None, keep: bool = False, run_prefix: str = "stockscale") -> None:
        # One machine is one node: a ReadWriteOnce volume can be mounted by every trial, as it is here.
        self.spec = (spec or ClusterSpec()).model_copy(update={"trials_mount_pvc": True})
        self._engine = engine
        self._owns_engine = engine is None  # one handed in stays the caller's to close
        self.on_line = on_line
        self.on_event = on_event
        self.log_dir = log_dir
        self.keep = keep
        self.run_prefix = run_prefix
        self._abort = threading.Event()
        self._lock = threading.Lock()
        self._swept = False

    # ------------------------------------------------------------------------------------------- engine

    @property
    def engine(self) -> Any:
        """The engine connection, made on first use; the first use also checks the image and sweeps."""
        if not self._swept:
            self._swept = True
            self.check_image()
            self.sweep()
        return self._connection()

    def _connection(self) -> Any:
        if self._engine is None:
            self._engine = connect_engine()
        return self._engine

    def check_image(self) -> None:
        check_engine_image(self._connection(), self.spec.image)

    def sweep(self) -> list[str]:
        """Remove containers, networks and staging folders whose launcher is dead; returns what went."""
        removed = sweep_engine(self._connection())
        for text in removed:
            self._event(f"swept {text} left by a launcher that is gone")
        return removed

    # ---------------------------------------------------------------------------------------- interface

    def run(self, job: TrainJob) -> JobResult:
        """One job: Master 1 + Worker (workers - 1) containers on the run's own network."""
        _check_job(job)
        engine = self.engine
        run_id = m.make_run_id(self.run_prefix)
        pods = self._replicas(job, run_id)
        start = time.time()
        running: list[RunningContainer] = []
        watch = EpochWatch(judge=job.judge, on_line=self.on_line)
        with self._staging(run_id) as staging:
            try:
                network = None
                if job.workers > 1:
                    with signals_deferred():
                        network = engine.networks.create(run_id, driver="bridge", internal=True,
                                                         labels=self._labels(run_id)).name
                for rank, pod in enumerate(pods):
                    with signals_deferred():  # a container the engine makes is one this launcher holds
                        running.append(self._start(pod, rank, run_id, job, {"results": staging}, {}, network,
                                                   watch))
                status, detail = supervise(running, watch, start=start, timeout=job.timeout, abort=self._abort,
                                           tick=WAIT_TICK)
            finally:
                self._finish(running, [f"{m.LABEL_RUN}={run_id}"])
            watch.reraise()
            if status == "success":
                self._deliver(staging / "run", job.run_dir)
        return self._result(job, status, detail, start, running, watch)

    def run_many(self, jobs: Iterable[TrainJob], parallel: int,
                 on_result: ResultCallback | None = None) -> list[JobResult]:
        """A search: the Indexed Job's pods, `parallel` at a time (several-worker jobs: one `run` each)."""
        jobs = list(jobs)
        if any(job.workers > 1 for job in jobs):
            return run_many_interruptible(self.run, jobs, parallel, on_result, self._abort)
        for job in jobs:
            _check_job(job)
        engine = self.engine  # noqa: F841 - connects, checks the image and sweeps once, before any thread
        run_id = m.make_run_id(self.run_prefix)
        configmap, template = self._indexed(jobs, parallel, run_id)
        with self._staging(run_id) as staging:
            trials_dir = staging / "trials-configmap"
            trials_dir.mkdir()
            for name, text in configmap["data"].items():
                (trials_dir / name).write_text(text, encoding="utf-8")
                (trials_dir / name).chmod(0o644)
            results = staging / "results"
            results.mkdir()
            self._hand_over(results)
            by_job = {id(job): index for index, job in enumerate(jobs)}

            def run_trial(job: TrainJob) -> JobResult:
                index = by_job[id(job)]
                pod = self._trial_pod(template, run_id, index)
                return self._run_trial(job, pod, run_id, index, {"results": results, "trials": trials_dir},
                                       results / run_id / "trials" / str(index))

            return run_many_interruptible(run_trial, jobs, parallel, on_result, self._abort)

    def render(self, jobs: Sequence[TrainJob], parallel: int) -> dict[str, str]:
        """The dry run of `run_many`: each container's options as `containers.create` would get them
        (`<container>.json`; the host folders standing for the volumes are made when the run starts). Jobs
        of several workers: each one's PyTorchJob replicas (run_many runs them one `run` each); single-worker
        jobs, one or many: the Indexed Job's pods. Nothing is asked of the engine."""
        run_id = m.make_run_id(self.run_prefix)
        if any(job.workers > 1 for job in jobs):
            return self._replica_files(jobs, run_id)
        files: dict[str, str] = {}
        placeholders = {"results": Path("<staging>/results"), "trials": Path("<staging>/trials-configmap")}
        for job in jobs:
            _check_job(job)
        configmap, template = self._indexed(list(jobs), parallel, run_id)
        for name, text in configmap["data"].items():
            files[f"trials-configmap/{name}"] = text
        for index, _job in enumerate(jobs):
            pod = self._trial_pod(template, run_id, index)
            pod.labels.update(self._labels(run_id))
            files[f"{pod.name}.json"] = _as_json(container_options(
                pod, volumes=placeholders,
                field_values={f"metadata.annotations['{m.COMPLETION_INDEX}']": str(index)}))
        return files

    def render_run(self, job: TrainJob) -> dict[str, str]:
        """The dry run of `run(job)`: its PyTorchJob's replicas as containers."""
        return self._replica_files([job], m.make_run_id(self.run_prefix))

    def _replica_files(self, jobs: Sequence[TrainJob], run_id: str) -> dict[str, str]:
        files: dict[str, str] = {}
        placeholders = {"results": Path("<staging>/results"), "trials": Path("<staging>/trials-configmap")}
        for number, job in enumerate(jobs):
            _check_job(job)
            job_run = run_id if len(jobs) == 1 else f"{run_id}-{number}"
            network = job_run if job.workers > 1 else None
            for pod in self._replicas(job, job_run):
                pod.labels.update(self._labels(job_run))
                files[f"{pod.name}.json"] = _as_json(container_options(pod, volumes=placeholders,
                                                                       network=network))
        return files

    def logs(self, run_id: str, on_line: LineCallback, *, follow: bool = False) -> list[str]:
        """Every line of every container of a run (kept with keep=True, or still running)."""
        containers = self.engine.containers.list(all=True, filters={"label": f"{m.LABEL_RUN}={run_id}"})
        for container in sorted(containers, key=lambda c: c.name):
            for line in log_lines(container, follow=follow):
                on_line(container.name, line)
        return [container.name for container in containers]

    def delete(self, run_id: str) -> list[str]:
        """Remove every container and network of a run; returns "container/name"s and "network/name"s."""
        engine = self.engine
        removed = []
        for container in engine.containers.list(all=True, filters={"label": f"{m.LABEL_RUN}={run_id}"}):
            with contextlib.suppress(Exception):
                container.remove(force=True)
                removed.append(f"container/{container.name}")
        for network in engine.networks.list(filters={"label": f"{m.LABEL_RUN}={run_id}"}):
            with contextlib.suppress(Exception):
                network.remove()
                removed.append(f"network/{network.name}")
        return removed

    def close(self) -> None:
        """Let go of the engine connection this runner made (a later use connects again)."""
        if self._owns_engine and self._engine is not None:
            with contextlib.suppress(Exception):
                self._engine.close()
            self._engine = None

    # --------------------------------------------------------------------------------------------- runs

    def _replicas(self, job: TrainJob, run_id: str) -> list[Pod]:
        """The pods of one job: the PyTorchJob `--backend kubernetes` would submit, its config from the one
        serialisation (`TrainConfig.overrides()`, as the pod template's train flags)."""
        manifest = m.pytorchjob_manifest(
            self.spec, name=run_id, run_id=run_id, config=job.config.overrides(), workers=job.workers,
            out=f"{m.RESULTS}/run", memory_limit=job.memory_limit, threads=job.threads, timeout=job.timeout)
        return replica_pods(manifest)

    def _indexed(self, jobs: list[TrainJob], parallel: int, run_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """A search's trials ConfigMap (each trial's overrides, its threads beside them) and the Indexed Job's
        pod template."""
        trials = [{**job.config.overrides(), **({"threads": job.threads} if job.threads else {})} for job in jobs]
        limits = [job.memory_limit for job in jobs if job.memory_limit is not None]
        timeouts = [job.timeout for job in jobs if job.timeout is not None]
        configmap = m.trials_configmap(self.spec, run_id, trials)
        indexed = m.indexed_job_manifest(self.spec, run_id=run_id, completions=len(jobs), parallelism=parallel,
                                         memory_limit=max(limits) if limits else None,
                                         timeout=max(timeouts) if timeouts else None, stop_file=False)
        return configmap, indexed["spec"]["template"]

    @staticmethod
    def _trial_pod(template: dict[str, Any], run_id: str, index: int) -> Pod:
        return Pod(name=f"{run_id}-{index}", template=template,
                   labels={**template["metadata"]["labels"], m.LABEL_TRIAL: str(index)})

    def _run_trial(self, job: TrainJob, pod: Pod, run_id: str, index: int, volumes: dict[str, Path],
                   out: Path) -> JobResult:
        start = time.time()
        running: list[RunningContainer] = []
        watch = EpochWatch(judge=job.judge, on_line=self.on_line)
        try:
            running.append(self._start(pod, 0, run_id, job, volumes,
                                       {f"metadata.annotations['{m.COMPLETION_INDEX}']": str(index)}, None, watch))
            status, detail = supervise(running, watch, start=start, timeout=job.timeout, abort=self._abort,
                                       tick=WAIT_TICK)
        finally:
            self._finish(running, [f"{m.LABEL_RUN}={run_id}", f"{m.LABEL_TRIAL}={index}"])
        watch.reraise()
        if status == "success":
            self._deliver(out, job.run_dir)
        return self._result(job, status, detail, start, running, watch)

    def _start(self, pod: Pod, rank: int, run_id: str, job: TrainJob, volumes: dict[str, Path],
               field_values: dict[str, str], network: str | None, watch: EpochWatch) -> RunningContainer:
        pod.labels.update(self._labels(run_id))
        options = container_options(pod, volumes=volumes, field_values=field_values, network=network)
        container = self._engine.containers.create(**options)
        running = RunningContainer(pod, rank, container, memory_limit=job.memory_limit)
        running.threads = [
            threading.Thread(target=self._follow, args=(running, job, watch), daemon=True,
                             name=f"{pod.name}-log"),
            threading.Thread(target=watch_memory, args=(running,), daemon=True, name=f"{pod.name}-stats"),
        ]
        container.start()
        for thread in running.threads:
            thread.start()
        self._event(f"started container {pod.name}")
        return running

    def _follow(self, running: RunningContainer, job: TrainJob, watch: EpochWatch) -> None:
        log = None
        if self.log_dir is not None:
            log = open_log(self.log_dir, job.name, f"{running.pod.name}.log")
        with log if log is not None else contextlib.nullcontext():
            for line in log_lines(running.container, follow=True):
                running.lines.append(line)
                if log is not None:
                    log.write(line + "\n")
                watch.see(running.rank, line)

    def _finish(self, running: list[RunningContainer], selector: list[str]) -> None:
        """Remove what one job made, found by its labels (`selector`): its containers, unless kept and finished,
        and its network. By label, not only by handle: an interrupt that lands after the engine made a
        container or network but before this launcher held it must not leave it behind."""
        engine = self._connection()
        kept = {w.container.id for w in running if self.keep and w.exit_code is not None}
        with contextlib.suppress(Exception):
            for container in engine.containers.list(all=True, filters={"label": selector}):
                if container.id not in kept:
                    with contextlib.suppress(Exception):
                        container.remove(force=True)
        for worker in running:
            for thread in worker.threads:
                thread.join(timeout=5)
        if not kept:
            with contextlib.suppress(Exception):
                for network in engine.networks.list(filters={"label": selector}):
                    with contextlib.suppress(Exception):
                        network.remove()

    def _result(self, job: TrainJob, status: Status, detail: str, start: float,
                running: list[RunningContainer], watch: EpochWatch) -> JobResult:
        metrics = parse_result_line(running[0].lines) if status == "success" and running else None
        if metrics is not None and "run_dir" in metrics:
            # The worker names its run directory as the container sees it (/results/...): say where it is here.
            metrics["run_dir"] = str(job.run_dir)
        workers = {entry.get("rank"): entry.get("peak_rss_bytes") for entry in (metrics or {}).get("workers", [])}
        peaks = []
        for worker in running:
            own = (parse_result_line(worker.lines) or {}).get("peak_rss_bytes")
            # The worker's own VmHWM when it lived to report it; else the engine's memory samples (a lower bound).
            peaks.append(int(workers.get(worker.rank) or own or worker.peak_bytes))
        return JobResult(name=job.name, status=status, detail=detail, metrics=metrics, start_time=start,
                         end_time=time.time(), peak_rss_bytes=peaks,
                         run_dir=str(job.run_dir) if Path(job.run_dir).exists() else None,
                         limit_mechanism="docker" if job.memory_limit is not None else None,
                         epochs=list(watch.epochs))

    # ------------------------------------------------------------------------------------------ helpers

    def _labels(self, run_id: str) -> dict[str, str]:
        return {m.LABEL_APP: m.APP, m.LABEL_RUN: run_id, LABEL_OWNER: owner_token(), LABEL_BACKEND: self.name}

    @contextlib.contextmanager
    def _staging(self, run_id: str) -> Iterator[Path]:
        """A host folder standing for the PVC, writable by the pod's user; removed afterwards."""
        folder = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{owner_tag()}-{run_id}-"))
        try:
            self._hand_over(folder)
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _hand_over(self, folder: Path) -> None:
        """Let the container's user write `folder`, as fsGroup lets a pod write its volume."""
        if os.geteuid() == 0:
            os.chown(folder, self.spec.run_as_user, self.spec.run_as_user)
            folder.chmod(0o755)
        else:
            folder.chmod(0o777)  # a fresh folder of this run alone; the container's user is not the caller

    def _deliver(self, produced: Path, run_dir: Path) -> None:
        """Move what the container wrote to the run directory, owned by whoever runs stockscale."""
        if not produced.is_dir():
            return
        if os.geteuid() == 0:
            for path in [produced, *produced.rglob("*")]:
                os.lchown(path, 0, 0)
        run_dir = Path(run_dir)
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        if run_dir.exists():
            shutil.rmtree(run_dir)
        shutil.move(str(produced), str(run_dir))

    def _event(self, text: str) -> None:
        if self.on_event is not None:
            with self._lock:
                self.on_event(text)


def _as_json(options: dict[str, Any]) -> str:
    """A container's options as JSON (a Mount is a dict; anything else as its text)."""
    return json.dumps(options, indent=2, sort_keys=True, default=str) + "\n"


def _check_job(job: TrainJob) -> None:
    check_job(job)
    check_limit(job.memory_limit)
