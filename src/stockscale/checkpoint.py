"""Training checkpoints: a preempted pod or a killed process resumes from its last complete epoch.

After every epoch rank 0 replaces `<checkpoint_dir>/checkpoint.pt` in one step (files.replace_with: fsynced,
then renamed): the model, the optimizer, the RNG states (torch's, CUDA's when in use, numpy's and Python's),
the loader position (the next epoch: an epoch's shuffle is a pure function of seed, epoch and rank) and the
counters and history the final metrics are made of. In a DDP run every other rank first hands rank 0 its own
RNG states and counters (`distributed.gather_to_main`), kept under `workers`.

Running the same command again resumes. One process reads the file itself. In a DDP run rank 0 alone reads
it and broadcasts it (`distributed.broadcast_from_main`); each rank takes the model, the optimizer, the
counters and its own RNG states from it. A rank other than 0 never touches the folder, which it may not see
at all: a PyTorchJob's workers get an emptyDir where the master mounts a ReadWriteOnce volume. So a resumed
CPU run, with any number of workers, ends with the weights and metrics of an uninterrupted one. (Dropout in a
DDP run is reseeded every epoch from (seed, rank, epoch), train.seed_dropout, so each rank keeps its own
stream across a resume too.)

The file holds tensors, numbers and strings only and is read with `torch.load(weights_only=True)`: nothing is
unpickled; what the ranks send each other is packed by `stockscale.wire`, not pickled either.

A checkpoint records which run wrote it (the training config without the checkpoint folder, and the world
size); a different run pointed at the same folder is refused rather than silently continued. A file written
before the per-rank states were kept still resumes: the other ranks then keep their own RNG states and take
rank 0's counters.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from stockscale.config import TrainConfig, one_line
from stockscale.distributed import DistEnv, broadcast_from_main, gather_to_main
from stockscale.errors import DataIntegrityError, InputError, WorkerFailure
from stockscale.files import replace_with
from stockscale.optim import Adam

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
         optimizer: Adam, workers: list[dict[str, Any]] | None = None) -> Path:
    """Write rank 0's checkpoint; `workers` are the other ranks' `rank_state()`s, in rank order (DDP only)."""
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
        "rng": rng_state(),
    }
    if workers:
        state["workers"] = workers
    path = directory / FILE
    replace_with(path, lambda handle: torch.save(state, handle))
    return path


def save_from_every_rank(directory: Path, identity: str, progress: Progress, model: torch.nn.Module,
                         optimizer: Adam, env: DistEnv) -> None:
    """After an epoch, on every rank of the run: the others hand rank 0 their RNG states and counters (a
    collective, so every rank calls this), and rank 0 alone writes."""
    workers = gather_to_main(rank_state(progress)) if env.is_distributed else None
    if env.is_main:
        save(directory, identity, progress, model, optimizer, workers[1:] if workers else None)


def rank_state(progress: Progress) -> dict[str, Any]:
    """What differs between ranks and a resumed rank needs back: its RNG states and its own counters."""
    return {"rng": rng_state(every_gpu=False), "samples": progress.samples, "train_seconds": progress.train_seconds}


def rng_state(every_gpu: bool = True) -> dict[str, Any]:
    """Every random stream this process may draw from, as tensors and numbers (safe for weights_only).

    CUDA's: of every GPU (one process, as always), or of this rank's own only (`every_gpu=False`: a rank of
    a local multi-GPU run would otherwise touch every GPU of the machine)."""
    keys_name, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(keys_name), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "python": {"version": int(version), "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        if every_gpu:
            state["cuda"] = torch.cuda.get_rng_state_all()
        else:
            state["cuda_current"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Put back what rng_state() took; a stream the state does not hold (an older file) is left as it is."""
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        saved = state["numpy"]
        np.random.set_state((saved["name"], saved["keys"].numpy().astype(np.uint32), saved["pos"],
                             saved["has_gauss"], saved["cached_gaussian"]))
    if "python" in state:
        saved = state["python"]
        random.setstate((saved["version"], tuple(int(n) for n in saved["internal"].tolist()), saved["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "cuda_current" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda_current"])


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
    workers: list[_RankState] | None = None


class _LoaderPosition(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    next_epoch: int


class _RankState(BaseModel):
    """One rank's own part of a DDP checkpoint (rank_state)."""

    model_config = ConfigDict(strict=True, extra="allow", arbitrary_types_allowed=True)

    rng: dict[str, Any]
    samples: int
    train_seconds: float


def resume(directory: Path | None, identity: str, model: torch.nn.Module, optimizer: Adam,
           env: DistEnv) -> Progress | None:
    """Restore the run's last checkpoint into `model`, `optimizer` and this rank's RNG streams and return
    where training stands, or None when there is nothing to resume (no folder, or no checkpoint in it yet).

    In a DDP run every rank calls this (the run's config, and so `directory`, is the same on every rank), but
    only rank 0 reads `directory`; a rank's own `directory` may not exist. A checkpoint rank 0 cannot use
    (damaged, another run's) ends every rank with rank 0's message, instead of leaving them waiting."""
    if directory is None:
        return None
    if not env.is_distributed:
        state = load(directory, identity)
        return restore(state, model, optimizer) if state is not None else None
    if env.is_main:
        try:
            state = load(directory, identity)
        except Exception as error:
            broadcast_from_main({"error": str(error), "kind": type(error).__name__})
            raise
        broadcast_from_main({"state": state})
    else:
        shared = broadcast_from_main(None)
        if "error" in shared:
            kind = {"InputError": InputError, "DataIntegrityError": DataIntegrityError}.get(shared["kind"],
                                                                                             WorkerFailure)
            raise kind(f"rank 0 cannot resume from its checkpoint: {shared['error']}")
        state = shared["state"]
    return restore(state, model, optimizer, env.rank) if state is not None else None


def restore(state: dict[str, Any], model: torch.nn.Module, optimizer: Adam,
            rank: int = 0) -> Progress:
    """Load a checkpoint's weights, optimizer and rank `rank`'s RNG states; return where training stands.

    Rank 0's counters and RNG states are the file's own; another rank's are its entry in `workers` (when the
    file has them: else it keeps its RNG streams and takes rank 0's counters)."""
    workers = state.get("workers") or []
    own = state if rank == 0 else (workers[rank - 1] if rank <= len(workers) else None)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if own is not None:
            set_rng_state(own["rng"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as error:  # another model's shapes, keys
        raise DataIntegrityError(f"checkpoint's model, optimizer or RNG state does not fit this run "
                                 f"({error.__class__.__name__})") from None
    own = own if own is not None else state
    return Progress(epoch=int(state["loader"]["next_epoch"]) - 1, steps=int(state["steps"]),
                    samples=int(own["samples"]), epochs_completed=int(state["epochs_completed"]),
                    train_seconds=float(own["train_seconds"]), history=list(state["history"]))
