"""A pod's `stockscale train` logging its own MLflow run, when the driver put the tracking variables into its env.

On Kubernetes, when the server is reachable from the pods (stockscale.tracking.tracking_route), the driver
creates the parent run and hands the pods MLFLOW_TRACKING_URI, STOCKSCALE_MLFLOW_EXPERIMENT_ID and
STOCKSCALE_MLFLOW_PARENT_RUN_ID (PodTracking.env). Rank 0 then logs a child run of that parent through the same
MlflowTracker the driver uses (one mapping from a result to a run): the full TrainConfig, each epoch's losses as
the epoch ends (through the progress callbacks), the final metrics, the peak memory of each worker, samples/s,
the status and metrics.json, tagged stockscale.tracking_route=pod. The other ranks log nothing. A server that
is down costs one warning line on stderr; training goes on and metrics.json stays the record.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from stockscale.progress import ForwardingProgress, TrainProgress

if TYPE_CHECKING:
    from stockscale.distributed import DistEnv
    from stockscale.tracking.mlflow_tracker import MlflowTracker


def _warn(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr, flush=True)


@contextmanager
def pod_run(env: DistEnv, out: Path) -> Iterator[MlflowTracker | None]:
    """The run of this pod's training, open for the block (its status: FINISHED when the block ran through),
    or None when this is not rank 0 or the driver set no tracking variables."""
    from stockscale.tracking import PodTracking, tracked

    pod = PodTracking.from_env(os.environ) if env.is_main else None
    if pod is None:
        yield None
        return
    try:
        from stockscale.tracking.mlflow_tracker import MlflowTracker
    except ImportError as error:
        _warn(f"{pod.uri} not tracked: MLflow is not installed in this image ({error.name})")
        yield None
        return
    tracker = MlflowTracker(None, out.parent, _warn, pod=pod)
    with tracked(tracker, "train", out.name, {}):
        yield tracker


class TrackedProgress(ForwardingProgress):
    """The progress callbacks of a tracked run: passed on to `inner`, and each epoch's end logged as it ends."""

    def __init__(self, inner: TrainProgress | None, tracker: MlflowTracker) -> None:
        super().__init__(inner)
        self.tracker = tracker

    def epoch_end(self, epoch: int, train_loss: float, val_loss: float, seconds: float) -> None:
        super().epoch_end(epoch, train_loss, val_loss, seconds)
        self.tracker.log_epoch(epoch, train_loss, val_loss, seconds)
