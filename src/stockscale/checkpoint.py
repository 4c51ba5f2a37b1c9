"""Training checkpoints: a preempted pod or a killed process resumes from its last complete epoch.

After every epoch rank 0 replaces `<checkpoint_dir>/checkpoint.pt` in one step (files.replace_with: fsynced,
then renamed): the model, the optimizer, the RNG states, the loader position (the next epoch: an epoch's
shuffle is a pure function of seed, epoch and rank) and the counters and history the final metrics are made
of. Running the same command again loads it on every rank and carries on, so a resumed CPU run ends with the
weights and metrics of an uninterrupted one. The file holds tensors, numbers and strings only and is read
with `torch.load(weights_only=True)`: nothing is unpickled.

A checkpoint records which run wrote it (the training config without the checkpoint folder, and the world
size); a different run pointed at the same folder is refused rather than silently continued.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from stockscale.config import TrainConfig, one_line
from stockscale.errors import DataIntegrityError, InputError
from stockscale.files import replace_with

FILE = "checkpoint.pt"
FORMAT_VERSION = 1


def run_identity(cfg: TrainConfig, world_size: int) -> str:
    """What a checkpoint may be resumed by: the same settings (wherever it is kept) and world size."""
    settings = cfg.to_dict()
    settings.pop("checkpoint_dir", None)
    text = json.dumps({"config": settings, "world_size": world_size}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Progress:
    """Where training stands after `epoch` complete epochs: what the loop needs to carry on."""

    epoch: int = 0
    steps: int = 0
    samples: int = 0
    epochs_completed: int = 0
    train_seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


def check_writable(directory: Path) -> None:
    """Fail before training, not after the first epoch, when checkpoints cannot be written."""
    if directory.exists() and not directory.is_dir():
        raise InputError(f"--checkpoint-dir {directory} is a file, not a folder")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"--checkpoint-dir {directory} cannot be created ({error.strerror or error})") from None


def save(directory: Path, identity: str, progress: Progress, model: torch.nn.Module,
         optimizer: torch.optim.Optimizer) -> Path:
    state: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "identity": identity,
        "epoch": progress.epoch,
        "loader": {"next_epoch": progress.epoch + 1},
        "steps": progress.steps,
        "samples": progress.samples,
        "epochs_completed": progress.epochs_completed,
        "train_seconds": progress.train_seconds,
        "history": progress.history,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": {"torch": torch.get_rng_state()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
    path = directory / FILE
    replace_with(path, lambda handle: torch.save(state, handle))
    return path


def load(directory: Path, identity: str) -> dict[str, Any] | None:
    """The last checkpoint in `directory` written by this run, or None when there is none yet."""
    path = directory / FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # noqa: BLE001 - torch raises many kinds for a damaged file
        raise DataIntegrityError(f"checkpoint {path} cannot be read ({error.__class__.__name__})") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise DataIntegrityError(f"checkpoint {path} is not a stockscale checkpoint")
    if state.get("identity") != identity:
        raise InputError(f"checkpoint {path} was written by a run with other settings or workers; "
                         "use another --checkpoint-dir or remove it")
    try:
        CheckpointState.model_validate(state)
    except ValidationError as error:
        raise DataIntegrityError(one_line(error, f"checkpoint {path}")) from None
    return state


class CheckpointState(BaseModel):
    """The checkpoint's layout, checked on load: numbers where numbers go, mappings of tensors where the
    model and the optimizer go. A file of the right version with a damaged field is one line, not a crash
    (KeyError, TypeError) halfway through restoring it."""

    model_config = ConfigDict(strict=True, extra="allow", arbitrary_types_allowed=True)

    format_version: int
    identity: str
    epoch: int
    loader: _LoaderPosition
    steps: int
    samples: int
    epochs_completed: int
    train_seconds: float
    history: list[dict[str, int | float | None]]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, Any]


class _LoaderPosition(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    next_epoch: int


def restore(state: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Progress:
    """Load a checkpoint's weights, optimizer and RNG states; return where training stands."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:  # shapes, keys or types of another model
        raise DataIntegrityError(f"checkpoint's model, optimizer or RNG state does not fit this run "
                                 f"({error.__class__.__name__})") from None
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return Progress(epoch=int(state["loader"]["next_epoch"]) - 1, steps=int(state["steps"]),
                    samples=int(state["samples"]), epochs_completed=int(state["epochs_completed"]),
                    train_seconds=float(state["train_seconds"]), history=list(state["history"]))
