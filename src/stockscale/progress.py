"""Progress callbacks: the library reports, the CLI decides how it looks (bar on a TTY, log lines elsewhere)."""

from __future__ import annotations


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
