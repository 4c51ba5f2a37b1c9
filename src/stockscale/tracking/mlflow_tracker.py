"""Runs tracked in MLflow through MLflow's own client, from the driver (the process running the CLI), or from
the pods themselves when they can reach the server (tracking_route: pod; pod_env, cli/pod_tracking.py).

The driver sees every JobResult whatever the backend (processes, warm workers, containers, pods), so it logs
them unless the pods do (then it logs only the parent, which it creates before the pods start, since its id
is in their env): a search is a parent run with a child per trial (a pruned one tagged `pruned`), a scale
test a parent with a child per probe, a demo a parent over both, `train` one run. Each child gets the full
TrainConfig as parameters, train/val loss per epoch, the final metrics, the peak memory of every worker, the
samples/s of every rank, the status and the limit mechanism as tags, and metrics.json as an artifact.

Logging runs on one background thread, in order, so a slow server never slows a trial. The first call that
fails (a server that is down, a store that cannot be written) gives one warning and switches tracking off for
the rest of the command: the results files stay the record. The HTTP client's retries are kept short
(MLFLOW_HTTP_REQUEST_MAX_RETRIES / _TIMEOUT, unless set), so a dead server costs seconds, not minutes.

Optuna's own MLflowCallback (optuna-integration) does not fit here: it is called by study.optimize, which this
search does not use (it asks and tells), it opens each trial's run through MLflow's fluent API, whose active
run is per thread (trials end on the launcher's threads, so they would not nest under the search), and it
logs only the sampled parameters and the final value: not the full config, the epochs, the memory or files.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from stockscale.tracking import PodTracking, tracking_route
from stockscale.worker import EpochReport

if TYPE_CHECKING:
    from stockscale.config import TrainOverrides
    from stockscale.launch.runner import JobResult
    from stockscale.worker import JsonValue

EXPERIMENT = "stockscale"
FLUSH_SECONDS = 60.0  # the most on_end waits for the queue to drain (a dead server fails fast: see above)
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
_STATUS = {"success": "FINISHED", "pruned": "KILLED"}  # anything else: FAILED


def _quiet_mlflow() -> None:
    """MLflow's and its store's own log lines and deprecation warnings stay out of the CLI's output."""
    for name in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for module in ("mlflow", "sqlalchemy", "alembic", "pydantic"):
        warnings.filterwarnings("ignore", module=rf"{module}(\.|$)")


@dataclass
class _Run:
    """A run as the caller sees it; `id` is set on the logging thread once MLflow created it."""

    kind: str
    name: str
    id: str | None = None
    live_epochs: bool = False  # its epochs were logged as they happened (log_epoch): not again from the result


class MlflowTracker:
    """The Tracker (stockscale.tracking) that logs to MLflow. `uri` None: `<results_dir>/mlflow.db`, with the
    artifacts in `<results_dir>/mlartifacts` (what `mlflow ui --backend-store-uri sqlite:///...` opens).
    `pod`: this is a pod's own `stockscale train`, its run a child of the driver's run that `pod` names."""

    def __init__(self, uri: str | None, results_dir: Path, on_warning: Callable[[str], None],
                 pod: PodTracking | None = None) -> None:
        for key, value in _HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        _quiet_mlflow()
        results_dir = Path(results_dir).resolve()
        self.uri = uri or f"sqlite:///{results_dir / 'mlflow.db'}"
        self._artifact_root = None if uri else (results_dir / "mlartifacts").as_uri()
        self._on_warning = on_warning
        self._client: MlflowClient | None = None
        self._experiment: str | None = None
        self._stack: list[_Run] = []
        self._lock = threading.Lock()
        self._failed = False
        self._route = "pod" if pod is not None else "driver"  # tag stockscale.tracking_route of every run
        self._pods_log = False  # the driver's: its jobs' pods log their own runs, so on_result logs none
        self._reserved: _Run | None = None  # the run pod_env created for the next outermost on_start
        self._outer = _Run("driver", "", id=pod.parent_run_id) if pod is not None else None
        if pod is not None:
            self.uri, self._experiment = pod.uri, pod.experiment_id
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------- the protocol

    def on_start(self, kind: str, name: str, params: Mapping[str, JsonValue]) -> None:
        with self._lock:
            parent = self._stack[-1] if self._stack else self._outer
            reserved, self._reserved = (self._reserved, None) if not self._stack else (None, self._reserved)
            run = reserved or _Run(kind, name)
            run.kind, run.name = kind, name
            self._stack.append(run)
        started = time.time()
        if reserved is not None:  # created by pod_env, its id already in the pods' env
            self._submit(lambda: self._adopt(run, _flat(params), {"stockscale.kind": kind}))
            return
        self._submit(lambda: self._create(run, parent, _flat(params), {"stockscale.kind": kind}, started))

    def on_result(self, result: JobResult, config: TrainOverrides, tags: Mapping[str, str]) -> None:
        with self._lock:
            parent = self._stack[-1] if self._stack else self._outer
        if self._pods_log:  # the pod logged this job's run itself (pod_env): no duplicate from the driver
            return
        self._submit(lambda: self._log_result(parent, result, config, dict(tags)))

    def log_epoch(self, epoch: int, train_loss: float, val_loss: float, seconds: float) -> None:
        """One epoch of the innermost run as it ends (a pod's `stockscale train`: the curve grows live)."""
        with self._lock:
            run = self._stack[-1] if self._stack else None
        if run is None:
            return
        run.live_epochs = True
        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, epoch) for key, value in
                   (("train_loss", train_loss), ("val_loss", val_loss), ("epoch_seconds", seconds))]

        def log() -> None:
            if run.id is not None:
                _log_batch(self._mlflow()[0], run.id, metrics=metrics)

        self._submit(log)

    def on_end(self, complete: bool, artifacts: Sequence[Path]) -> None:
        with self._lock:
            run = self._stack.pop() if self._stack else None
            outermost = not self._stack
        if run is not None:
            self._submit(lambda: self._end(run, complete, list(artifacts)))
        if outermost:
            self.flush()

    def pod_env(self, backend: str) -> dict[str, str]:
        """When `backend`'s pods can reach the server (tracking_route), the env that has each pod log its own
        run: the server, and the parent run, created now (its id must be in the pod template) and adopted by
        the next outermost on_start. Otherwise, or when the server does not answer, nothing: the driver logs.
        Every run records which it was (tag stockscale.tracking_route)."""
        if tracking_route(self.uri, backend) != "pod" or self._stack:
            return {}
        run = _Run("pending", "")
        self._submit(lambda: self._create(run, None, {}, {}, time.time()))
        self.flush()
        if run.id is None or self._experiment is None:
            return {}
        self._reserved, self._pods_log, self._route = run, True, "pod"
        self._submit(lambda: _log_batch(self._mlflow()[0], run.id or "", tags=self._route_tags()))
        return PodTracking(self.uri, self._experiment, run.id).env()

    # --------------------------------------------------------------------------------- logging thread

    def _submit(self, work: Callable[[], None]) -> None:
        if self._failed:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._drain, name="stockscale-mlflow", daemon=True)
            self._thread.start()
        self._queue.put(work)

    def _drain(self) -> None:
        while (work := self._queue.get()) is not None:
            try:
                if not self._failed:
                    work()
            except Exception as error:  # tracking never fails a run: one warning, then quiet
                self._failed = True
                reason = " ".join(str(error).split())[:300] or type(error).__name__
                self._on_warning(f"MLflow tracking at {self.uri} stopped ({type(error).__name__}: {reason}); "
                                 "the results files keep every run")
            finally:
                self._queue.task_done()

    def flush(self, timeout: float = FLUSH_SECONDS) -> None:
        """Wait until everything submitted so far was logged (or given up on)."""
        if self._thread is None:
            return
        done = threading.Event()
        self._queue.put(done.set)
        done.wait(timeout)

    # ---------------------------------------------------------------------------------- MLflow calls

    def _mlflow(self) -> tuple[MlflowClient, str]:
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.uri)
        if self._experiment is None:
            client = self._client
            found = client.get_experiment_by_name(EXPERIMENT)
            if found is None:
                try:
                    experiment = client.create_experiment(EXPERIMENT, artifact_location=self._artifact_root)
                except Exception:  # another process created it first
                    found = client.get_experiment_by_name(EXPERIMENT)
                    if found is None:
                        raise
                    experiment = found.experiment_id
            else:
                experiment = found.experiment_id
            self._client, self._experiment = client, experiment
        return self._client, self._experiment

    def _route_tags(self) -> dict[str, str]:
        return {"stockscale.tracking_route": self._route}

    def _create(self, run: _Run, parent: _Run | None, params: dict[str, str], tags: dict[str, str],
                started: float) -> None:
        client, experiment = self._mlflow()
        tags = {**tags, **self._route_tags()}
        if parent is not None and parent.id is not None:
            tags["mlflow.parentRunId"] = parent.id
        created = client.create_run(experiment, run_name=run.name, start_time=_ms(started), tags=tags)
        run.id = created.info.run_id
        _log_batch(client, run.id, params=params)

    def _adopt(self, run: _Run, params: dict[str, str], tags: dict[str, str]) -> None:
        if run.id is not None:
            client, _ = self._mlflow()
            client.update_run(run.id, name=run.name)
            _log_batch(client, run.id, params=params, tags=tags)

    def _end(self, run: _Run, complete: bool, artifacts: list[Path]) -> None:
        if run.id is None:
            return
        client, _ = self._mlflow()
        for path in artifacts:
            client.log_artifact(run.id, str(path))
        client.set_terminated(run.id, "FINISHED" if complete else "FAILED")

    def _log_result(self, parent: _Run | None, result: JobResult, config: TrainOverrides,
                    tags: dict[str, str]) -> None:
        client, experiment = self._mlflow()
        metrics = dict(result.metrics or {})
        tags = {**tags, **self._route_tags(), "stockscale.status": result.status,
                "stockscale.limit_mechanism": result.limit_mechanism or "none"}
        if result.detail:
            tags["stockscale.detail"] = result.detail[:5000]
        if result.status == "pruned":
            tags["pruned"] = "true"
        params = _flat(_mapping(metrics.get("config")) or _full_config(config))
        if parent is not None and parent.kind == "train":  # `stockscale train`: the run itself, not a child
            run_id, own = parent.id, False
        else:
            if parent is not None and parent.id is not None:
                tags["mlflow.parentRunId"] = parent.id
            created = client.create_run(experiment, run_name=result.name, start_time=_ms(result.start_time),
                                        tags={"stockscale.kind": tags.pop("stockscale.kind", "job")})
            run_id, own = created.info.run_id, True
        if run_id is None:
            return
        live = not own and parent is not None and parent.live_epochs  # its curve is already there
        epochs = [] if live else _epoch_metrics(result, metrics)
        _log_batch(client, run_id, params=params, tags=tags, metrics=epochs + _final_metrics(result, metrics))
        metrics_file = Path(result.run_dir) / "metrics.json" if result.run_dir else None
        if metrics_file is not None and metrics_file.is_file():
            client.log_artifact(run_id, str(metrics_file))
        if own:
            client.set_terminated(run_id, _STATUS.get(result.status, "FAILED"), end_time=_ms(result.end_time))


def _mapping(value: object) -> Mapping[str, object]:
    """A part of a result line that should be a mapping, or none: nothing validates a worker's line."""
    return value if isinstance(value, Mapping) else {}


def _ms(seconds: float) -> int | None:
    return int(seconds * 1000) if seconds else None


def _flat(values: Mapping[str, object], prefix: str = "") -> dict[str, str]:
    """Parameters as MLflow keeps them: one string per key, nested mappings as dotted keys."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return flat


def _full_config(config: TrainOverrides) -> dict[str, object]:
    """Every TrainConfig field (defaults included) of a job that left no metrics; its overrides if invalid."""
    from stockscale.config import build_train_config

    try:
        return dict(build_train_config(config, "tracked run").to_dict())
    except Exception:
        return dict(config)


def _epoch_history(result: JobResult, metrics: Mapping[str, object]) -> list[EpochReport]:
    """The epochs the launcher saw (a pruned trial's too), or else metrics.json's history (a direct run)."""
    if result.epochs:
        return list(result.epochs)
    history = metrics.get("history")
    if not isinstance(history, list) and result.run_dir:
        try:
            history = json.loads((Path(result.run_dir) / "metrics.json").read_text()).get("history")
        except (OSError, ValueError, AttributeError):
            history = None
    reports = []
    for entry in history if isinstance(history, list) else []:
        # metrics.json's history always has val_loss (train.py writes it with every epoch)
        if (isinstance(entry, dict) and isinstance(entry.get("epoch"), int)
                and isinstance(entry.get("val_loss"), int | float)):
            reports.append(EpochReport(epoch=entry["epoch"], val_loss=entry["val_loss"],
                                       train_loss=entry.get("train_loss"), seconds=entry.get("seconds")))
    return reports


def _epoch_metrics(result: JobResult, metrics: Mapping[str, object]) -> list[Metric]:
    now = int(time.time() * 1000)
    found = []
    for report in _epoch_history(result, metrics):
        for key, value in (("train_loss", report.train_loss), ("val_loss", report.val_loss),
                           ("epoch_seconds", report.seconds)):
            if isinstance(value, int | float):
                found.append(Metric(key, float(value), now, report.epoch))
    return found


def _final_metrics(result: JobResult, metrics: Mapping[str, object]) -> list[Metric]:
    """The run's end: scores per split (and the baseline's), its times and throughput, and per worker its peak
    memory (as the launcher measured it) and samples/s (as each rank reported it)."""
    history = _epoch_history(result, metrics)
    step = history[-1].epoch if history else 0  # the last epoch's step: the final values sit on its curve end
    values: dict[str, object] = {"wall_seconds": result.wall_seconds}
    for key in ("train_seconds", "samples_per_second", "steps", "epochs_completed", "train_samples",
                "data_resident_bytes", "world_size"):
        values[key] = metrics.get(key)
    for split in ("val", "test"):
        for key, value in _mapping(metrics.get(split)).items():
            values[f"{split}_{key}"] = value
    for key, value in _mapping(_mapping(metrics.get("baseline")).get("test")).items():
        values[f"baseline_test_{key}"] = value
    if history:
        values.pop("val_loss", None)  # the last epoch's, already on the per-epoch curve
    for index, peak in enumerate(result.peak_rss_bytes):
        values[f"peak_rss_bytes/worker_{index}"] = peak
    workers = metrics.get("workers")
    for worker in workers if isinstance(workers, list) else []:
        if isinstance(worker, dict) and "rank" in worker:
            values[f"samples_per_second/rank_{worker['rank']}"] = worker.get("samples_per_second")
    now = int(time.time() * 1000)
    return [Metric(key, float(value), now, step) for key, value in values.items()
            if isinstance(value, int | float) and not isinstance(value, bool) and value == value]


def _log_batch(client: MlflowClient, run_id: str, *, params: Mapping[str, str] | None = None,
               tags: Mapping[str, str] | None = None, metrics: Sequence[Metric] = ()) -> None:
    """MLflow's batch limits: 100 params, 100 tags and 1000 metrics a call."""
    param_list = [Param(key, value[:6000]) for key, value in (params or {}).items()]
    tag_list = [RunTag(key, value) for key, value in (tags or {}).items()]
    metric_list = list(metrics)
    while param_list or tag_list or metric_list:
        client.log_batch(run_id, metrics=metric_list[:1000], params=param_list[:100], tags=tag_list[:100])
        param_list, tag_list, metric_list = param_list[100:], tag_list[100:], metric_list[1000:]
