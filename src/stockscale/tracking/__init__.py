"""Experiment tracking: what the experiments tell a tracker as they run, and `--track` turned into one.

The experiments (search, scale test, demo) and `stockscale train` call only the `Tracker` protocol: a run
starts (`on_start`, nestable: a demo holds searches, a search holds trials), each JobResult is told as it
arrives (`on_result`, one child run each), and the run ends (`on_end`, with the files worth keeping). They
never import a tracking library, so MLflow stays an optional extra (tracking/mlflow_tracker.py). A tracker
never raises into the run it watches: the results files stay the record, tracking is a copy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlparse

from stockscale.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from stockscale.config import TrainOverrides
    from stockscale.launch.runner import JobResult
    from stockscale.worker import JsonValue

KINDS = ("mlflow",)
# What the driver puts into a pod's env so that the pod's `stockscale train` logs its own run (docs/results.md).
URI_VARIABLE = "MLFLOW_TRACKING_URI"
PARENT_VARIABLE = "STOCKSCALE_MLFLOW_PARENT_RUN_ID"
EXPERIMENT_VARIABLE = "STOCKSCALE_MLFLOW_EXPERIMENT_ID"
_LOOPBACK = ("localhost", "::1", "0.0.0.0")


class Tracker(Protocol):
    """Told what an experiment runs while it runs. Thread-safe; no method raises."""

    def on_start(self, kind: str, name: str, params: Mapping[str, JsonValue]) -> None:
        """A run begins (train, search, scale-test, demo); until its on_end, results are its children."""
        ...

    def on_result(self, result: JobResult, config: TrainOverrides, tags: Mapping[str, str]) -> None:
        """One job ended (a trial, a probe, a training run): its parameters, epochs, metrics and files."""
        ...

    def on_end(self, complete: bool, artifacts: Sequence[Path]) -> None:
        """The innermost run ends (complete: it ran to its end); `artifacts` are files to keep with it. The
        outermost one also waits until everything told was logged."""
        ...

    @property
    def uri(self) -> str:
        """Where the runs go (shown to the user)."""
        ...

    def pod_env(self, backend: str) -> dict[str, str]:
        """Environment for the pods of `backend` when they log their own runs (tracking_route: pod); else
        empty, and the driver logs every run."""
        ...


class _NoTracking:
    """The tracker when none was asked for: every call does nothing (so callers need no `if tracker`)."""

    uri = ""

    def on_start(self, kind: str, name: str, params: Mapping[str, JsonValue]) -> None:
        pass

    def on_result(self, result: JobResult, config: TrainOverrides, tags: Mapping[str, str]) -> None:
        pass

    def on_end(self, complete: bool, artifacts: Sequence[Path]) -> None:
        pass

    def pod_env(self, backend: str) -> dict[str, str]:
        return {}


NO_TRACKING: Tracker = _NoTracking()


@contextmanager
def tracked(tracker: Tracker | None, kind: str, name: str, params: Mapping[str, JsonValue],
            artifacts: Callable[[], Sequence[Path]] = tuple) -> Iterator[None]:
    """on_start, then on_end when the block ends: complete when it ran through, not on an error or Ctrl-C."""
    if tracker is None:
        yield
        return
    tracker.on_start(kind, name, params)
    complete = False
    try:
        yield
        complete = True
    finally:
        tracker.on_end(complete, [path for path in artifacts() if path.is_file()])


@dataclass(frozen=True)
class TrackSpec:
    """`--track mlflow[:URI]`: which tracker, and where it keeps its runs (None: a store in the results)."""

    kind: str
    uri: str | None = None


def parse_track(text: str) -> TrackSpec:
    """`mlflow` or `mlflow:URI` (http://host:5000, sqlite:///path/mlflow.db, databricks, ...)."""
    kind, sep, uri = text.partition(":")
    if kind not in KINDS:
        raise ValueError(f"--track {text!r}: choose mlflow or mlflow:URI")
    if sep and not uri.strip():
        raise ValueError(f"--track {text!r}: the URI after 'mlflow:' is empty")
    return TrackSpec(kind, uri.strip() or None)


def reachable_from_pods(uri: str) -> bool:
    """Whether containers and pods could reach `uri` too: a server on a host name or address other than this
    machine's loopback (a file or sqlite store, or 127.0.0.1, is only the driver's)."""
    parsed = urlparse(uri)
    host = parsed.hostname or ""
    return parsed.scheme in ("http", "https") and bool(host) and host not in _LOOPBACK \
        and not host.startswith("127.")


def tracking_route(uri: str, backend: str) -> str:
    """Who logs a job's run: `pod` when the job runs in a Kubernetes pod that can reach the server (its own
    `stockscale train` logs it, live), else `driver` (the CLI logs it from the JobResult). Docker's containers
    have no network at all (launch/containers.py), and local processes are the driver's own children."""
    return "pod" if backend == "kubernetes" and reachable_from_pods(uri) else "driver"


@dataclass(frozen=True)
class PodTracking:
    """Where a pod logs its run: the server, the experiment, and the driver's run it is a child of."""

    uri: str
    experiment_id: str
    parent_run_id: str

    def env(self) -> dict[str, str]:
        """The variables the pod template carries (ClusterSpec.env); from_env reads them back in the pod."""
        return {URI_VARIABLE: self.uri, EXPERIMENT_VARIABLE: self.experiment_id,
                PARENT_VARIABLE: self.parent_run_id}

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> PodTracking | None:
        """The pod's tracking, when the driver set all three variables (a URI alone is the user's own)."""
        values = [environ.get(name, "").strip() for name in (URI_VARIABLE, EXPERIMENT_VARIABLE, PARENT_VARIABLE)]
        return cls(*values) if all(values) else None


def open_tracker(spec: TrackSpec, results_dir: Path, on_warning: Callable[[str], None]) -> Tracker:
    """The tracker `spec` names, its store defaulting to `<results_dir>/mlflow.db`; InputError (exit 2, one
    line naming the extra) when its library is not installed."""
    try:
        from stockscale.tracking.mlflow_tracker import MlflowTracker
    except ImportError as error:
        raise InputError(f"--track mlflow needs MLflow, which is not installed ({error.name}): "
                         "pip install 'stockscale[mlflow]'") from None
    return MlflowTracker(spec.uri, results_dir, on_warning)
