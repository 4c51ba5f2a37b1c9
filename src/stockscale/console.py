"""How progress looks: a rich progress bar on a terminal, plain log lines anywhere else (pods, CI, pipes).

Only the CLI uses this module; the library reports through `stockscale.progress` callbacks.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from stockscale.progress import TrainProgress


def is_terminal(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stdout
    return hasattr(stream, "isatty") and stream.isatty()


def log(text: str, stream: TextIO | None = None) -> None:
    """One plain line, flushed at once so pod logs and pipes see it as it happens."""
    print(text, file=stream or sys.stdout, flush=True)


def epoch_line(epoch: int, train_loss: float, val_loss: float, seconds: float, now: datetime | None = None) -> str:
    """The progress line rank 0 prints after every epoch, for whatever reads a trial's stdout as it runs: a
    timestamp, one space, then a JSON object with an "event" key (which a final result line never has; the
    result line is always printed after it, so the last JSON line of a worker's stdout is still its result).

    The timestamp is for Katib's StdOut metrics collector, whose medianstop early stopping orders a trial's
    observations by it: the collector's TEXT parser takes a line's first space-separated field as the
    observation's time when Go's `time.Parse(time.RFC3339Nano, ...)` reads it, and gives every other line
    the zero time (kubeflow/katib v0.19.0, pkg/metricscollector/v1beta1/file-metricscollector/
    file-metricscollector.go, parseLogsInTextFormat). UTC with microseconds and a Z is such a value.
    """
    stamp = (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return stamp + " " + json.dumps({"event": "epoch", "epoch": epoch, "val_loss": val_loss,
                                     "train_loss": train_loss, "seconds": round(seconds, 3)}, allow_nan=False)


class PlainTrainProgress(TrainProgress):
    """Log lines: two per epoch (one for people, one JSON progress line), and a step line every `every`
    seconds for long epochs."""

    def __init__(self, stream: TextIO | None = None, every: float = 10.0) -> None:
        self.stream = stream
        self.every = every
        self._last = 0.0
        self._steps = 0
        self._epochs = 0

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self._steps, self._epochs, self._last = steps, epochs, time.monotonic()

    def step(self, epoch: int, step: int, loss: float) -> None:
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            log(f"epoch {epoch}/{self._epochs} step {step}/{self._steps} loss {loss:.4f}", self.stream)

    def epoch_end(self, epoch: int, train_loss: float, val_loss: float, seconds: float) -> None:
        log(f"epoch {epoch}/{self._epochs} train_loss {train_loss:.4f} val_loss {val_loss:.4f} ({seconds:.1f}s)",
            self.stream)
        log(epoch_line(epoch, train_loss, val_loss, seconds), self.stream)

    def message(self, text: str) -> None:
        log(text, self.stream)


class RichTrainProgress(TrainProgress):
    """A progress bar per epoch (rich), with the epoch's losses printed above it when it ends."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console = Console()
        self.bar = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self._task: Any = None
        self._epochs = 0

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self._epochs = epochs
        if self._task is None:
            self.bar.start()
        else:
            self.bar.remove_task(self._task)
        self._task = self.bar.add_task("train", total=steps, epoch=f"{epoch}/{epochs}", loss="-")

    def step(self, epoch: int, step: int, loss: float) -> None:
        self.bar.update(self._task, advance=1, loss=f"{loss:.4f}")

    def epoch_end(self, epoch: int, train_loss: float, val_loss: float, seconds: float) -> None:
        self.bar.console.print(
            f"epoch {epoch}/{self._epochs}  train_loss {train_loss:.4f}  val_loss {val_loss:.4f}  ({seconds:.1f}s)"
        )

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def close(self) -> None:
        if self._task is not None:
            self.bar.stop()


def train_progress() -> TrainProgress:
    return RichTrainProgress() if is_terminal() else PlainTrainProgress()
