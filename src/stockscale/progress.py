"""Progress callbacks: the library reports, the CLI decides how it looks (bar on a TTY, log lines elsewhere)."""

from __future__ import annotations

from pathlib import Path

from stockscale.worker import STOP_ANNOTATION, stop_requested


class TrainProgress:
    """Receives training progress. The base class ignores everything (workers other than rank 0, tests)."""

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        """An epoch of `steps` optimizer steps begins (epochs count from 1)."""

    def step(self, epoch: int, step: int, loss: float) -> None:
        """One optimizer step finished."""

    def epoch_end(self, epoch: int, train_loss: float, val_loss: float, seconds: float) -> None:
        """An epoch (or the partial last one, when max_steps stops it) finished."""

    def message(self, text: str) -> None:
        """A line worth telling the user (data preparation, where artifacts went)."""


class ForwardingProgress(TrainProgress):
    """Every callback passed on to `inner` (the terminal's or the log's progress, or nothing): the base of the
    wrappers that add to some callbacks (tracking, the Trainer's status, a pod's stop file) and override only
    those."""

    def __init__(self, inner: TrainProgress | None) -> None:
        self.inner = inner or TrainProgress()

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.inner.epoch_start(epoch, epochs, steps)

    def step(self, epoch: int, step: int, loss: float) -> None:
        self.inner.step(epoch, step, loss)

    def epoch_end(self, epoch: int, train_loss: float, val_loss: float, seconds: float) -> None:
        self.inner.epoch_end(epoch, train_loss, val_loss, seconds)

    def message(self, text: str) -> None:
        self.inner.message(text)


class TrialPruned(Exception):
    """Raised by a progress callback after an epoch to end the run there, as pruned: the launcher's answer
    (a warm worker's `stop`) or its request (a pod's stop annotation). Training stops; nothing is written."""

    def __init__(self, epoch: int, why: str = "") -> None:
        super().__init__(f"pruned after epoch {epoch}" + (f" ({why})" if why else ""))
        self.epoch = epoch


class StopFileProgress(ForwardingProgress):
    """`inner`'s progress, and after each epoch but the last a look at `path` (a pod's annotations, which the
    kubelet rewrites when they change): when it asks to stop (worker.stop_requested), the run ends there
    as pruned. A request after the last epoch changes nothing: a finished run is a result."""

    def __init__(self, inner: TrainProgress | None, path: Path) -> None:
        super().__init__(inner)
        self.path = path
        self.epochs = 0

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.epochs = epochs
        super().epoch_start(epoch, epochs, steps)

    def epoch_end(self, epoch: int, train_loss: float, val_loss: float, seconds: float) -> None:
        super().epoch_end(epoch, train_loss, val_loss, seconds)
        if epoch < self.epochs and self._asked():
            raise TrialPruned(epoch, f"{STOP_ANNOTATION} on the pod")

    def _asked(self) -> bool:
        try:
            return stop_requested(self.path.read_text(encoding="utf-8", errors="replace"))
        except OSError:  # not written yet (or gone): no request
            return False
