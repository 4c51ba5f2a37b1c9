"""Scaled datasets: the training series replicated N times with Gaussian noise, cheap at any N.

A dataset holds replica *series* (float32 [R, T_train, 5] per shard), not materialized windows: a replica is
17 KB where its 821 windows would be 1 MB. Replica 0 is the original series, so 1x is the base dataset.
Each shard's noise comes from its own generator seeded by (seed, shard index), so

- the same command gives byte-identical shards (checksums in the manifest prove it), and
- any worker can produce exactly the shards it owns without the others (Kubernetes pods do this; no shared
  volume is needed).

Writing is streamed one shard at a time into a temporary directory renamed at the end: peak memory is one
shard, and an interrupted run leaves nothing that looks like a dataset. This module needs numpy, not torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stockscale.bounds import MAX_MULTIPLIER, MAX_SEED
from stockscale.config import FEATURES, SEQ_LEN, one_line
from stockscale.data.windows import NormStats, PreparedData, window_count
from stockscale.errors import DataIntegrityError, InputError
from stockscale.files import staged_dir, utc_timestamp, write_text_atomic

FORMAT = "stockscale-scaled-dataset"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
VERIFIED_CACHE = ".verified.json"
REPLICAS_PER_SHARD = 256


@dataclass(frozen=True)
class ShardPlan:
    """Shard `index` holds replicas [first_replica, first_replica + replicas)."""

    index: int
    first_replica: int
    replicas: int

    @property
    def file(self) -> str:
        return f"shard-{self.index:05d}.npy"


@dataclass(frozen=True)
class ReplicaSpec:
    """Everything that determines a scaled dataset's contents: base series, multiplier, noise, seed."""

    base: np.ndarray  # normalized training series, float32 [T, 5]
    multiplier: int
    noise: float
    seed: int
    replicas_per_shard: int = REPLICAS_PER_SHARD

    @property
    def windows_per_replica(self) -> int:
        return window_count(len(self.base))

    @property
    def total_windows(self) -> int:
        return self.multiplier * self.windows_per_replica

    def shards(self) -> list[ShardPlan]:
        per = self.replicas_per_shard
        return [
            ShardPlan(index, first, min(per, self.multiplier - first))
            for index, first in enumerate(range(0, self.multiplier, per))
        ]

    def generate(self, shard: ShardPlan) -> np.ndarray:
        """The replicas of one shard, float32 [R, T, 5]: base + noise from generator (seed, shard index)."""
        rng = np.random.default_rng([self.seed, shard.index])
        out = rng.standard_normal((shard.replicas, *self.base.shape), dtype=np.float32)
        out *= np.float32(self.noise)
        out += self.base
        if shard.first_replica == 0:
            out[0] = self.base  # replica 0 is the original series
        return out


def materialized_bytes(windows: int) -> int:
    """Bytes the windows take as float32 [N, 60, 5] (the memory loader's footprint)."""
    return windows * SEQ_LEN * len(FEATURES) * 4


def owned_replicas(total_windows: int, windows_per_replica: int, rank: int, world: int) -> tuple[int, int, int]:
    """Rank's contiguous block of global windows [g0, g1) and the replica range it touches.

    Every rank gets exactly total // world windows (the few left over are dropped), so every rank runs the
    same number of steps per epoch. Returns (g0, g1, first_replica) with replicas up to (g1 - 1) // W.
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in a world of {world}")
    share = total_windows // world
    if share < 1:
        raise InputError(f"{total_windows} training windows cannot be shared by {world} workers")
    g0, g1 = rank * share, (rank + 1) * share
    return g0, g1, g0 // windows_per_replica


# ---------------------------------------------------------------------------------------------- writing


def write_shard(path: Path, replicas: np.ndarray) -> tuple[int, str]:
    """Write one .npy shard (header, then the raw float32 data) and return its size and sha256.

    The hash is taken from the bytes in memory as they are written, so a shard is never read back.
    """
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(replicas))
    data = memoryview(np.ascontiguousarray(replicas)).cast("B")
    sha = hashlib.sha256(header.getvalue())
    sha.update(data)
    with open(path, "wb") as handle:
        handle.write(header.getvalue())
        handle.write(data)
    return len(header.getvalue()) + len(data), sha.hexdigest()


def manifest_for(prepared: PreparedData, spec: ReplicaSpec, source: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "source": source,
        "multiplier": spec.multiplier,
        "noise": spec.noise,
        "seed": spec.seed,
        "seq_len": SEQ_LEN,
        "features": list(FEATURES),
        "train_days": len(spec.base),
        "windows_per_replica": spec.windows_per_replica,
        "train_windows": spec.total_windows,
        "materialized_bytes": materialized_bytes(spec.total_windows),
        "replicas_per_shard": spec.replicas_per_shard,
        "stats": prepared.stats.to_dict(),
        "shards": [],
    }


def write_dataset(
    prepared: PreparedData,
    spec: ReplicaSpec,
    source: dict[str, Any],
    out: Path,
    on_shard: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write a scaled dataset to `out` (temporary directory, renamed when complete). Returns the manifest.

    `out` may already hold this very dataset (same parameters, shards verify): then nothing is written.
    Anything else already there is refused.
    """
    manifest = manifest_for(prepared, spec, source)
    if out.exists():
        existing = _existing_manifest(out)
        if _same_dataset(existing, manifest):
            verify_dataset(out, existing)
            return existing
        raise InputError(f"output directory {out} already holds something that is not this dataset")
    # Hashing and writing one shard overlaps generating the next (numpy, hashlib and file writes release the
    # GIL), so at most two shards are in memory at once.
    with staged_dir(out) as tmp, ThreadPoolExecutor(max_workers=1) as writer:
        plans = spec.shards()
        pending: Future[tuple[int, str]] | None = None
        for number, plan in enumerate([*plans, None]):
            replicas = spec.generate(plan) if plan is not None else None
            if pending is not None:
                size, sha256 = pending.result()
                done = plans[number - 1]
                manifest["shards"].append({
                    "file": done.file,
                    "first_replica": done.first_replica,
                    "replicas": done.replicas,
                    "windows": done.replicas * spec.windows_per_replica,
                    "bytes": size,
                    "sha256": sha256,
                })
                if on_shard is not None:
                    on_shard(number, len(plans))
            if plan is not None:
                pending = writer.submit(write_shard, tmp / plan.file, replicas)
        manifest["created_at"] = utc_timestamp()
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _existing_manifest(out: Path) -> dict[str, Any] | None:
    if not out.is_dir():
        return None
    try:
        return read_manifest(out)
    except InputError:
        return None


_IDENTITY_KEYS = ("format", "format_version", "source", "multiplier", "noise", "seed", "seq_len", "train_days",
                  "replicas_per_shard")


def _same_dataset(existing: dict[str, Any] | None, wanted: dict[str, Any]) -> bool:
    if existing is None:
        return False
    if any(existing.get(key) != wanted[key] for key in _IDENTITY_KEYS):
        return False
    try:
        stored = NormStats.from_dict(existing.get("stats", {}))
    except (KeyError, TypeError, ValueError):
        return False
    return stored.matches(NormStats.from_dict(wanted["stats"]))


# ---------------------------------------------------------------------------------------------- reading


class ShardEntry(BaseModel):
    """One shard as the manifest lists it; its file name is the only form a shard's name can take."""

    model_config = ConfigDict(extra="forbid", strict=True)

    file: str = Field(pattern=r"^shard-[0-9]{5}\.npy$")
    first_replica: int = Field(ge=0)
    replicas: int = Field(ge=1, le=REPLICAS_PER_SHARD)
    windows: int = Field(ge=1)
    bytes: int = Field(ge=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class SourceRecord(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    spec: str
    # Needed to rebuild the base series (prepare_from_manifest says so when one is missing); `data info` and
    # the shard checks do without them.
    start: str | None = None
    end: str | None = None
    train_frac: float | None = Field(None, gt=0, lt=1)
    val_frac: float | None = Field(None, gt=0, lt=1)


class DatasetManifest(BaseModel):
    """A dataset's manifest.json, checked whole before anything of the dataset is trusted: types, ranges,
    shard names, contiguous replica ranges and the counts that follow from them."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    format: Literal["stockscale-scaled-dataset"]
    format_version: Literal[1]
    source: SourceRecord
    multiplier: int = Field(ge=1, le=MAX_MULTIPLIER)
    noise: float = Field(ge=0)
    seed: int = Field(ge=0, lt=MAX_SEED)
    seq_len: Literal[60] = SEQ_LEN
    features: list[str] = Field(default_factory=lambda: list(FEATURES))
    train_days: int = Field(ge=1)
    windows_per_replica: int = Field(ge=1)
    train_windows: int = Field(ge=1)
    materialized_bytes: int = Field(0, ge=0)
    replicas_per_shard: int = Field(REPLICAS_PER_SHARD, ge=1)
    stats: dict[str, float]
    shards: list[ShardEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> DatasetManifest:
        if self.windows_per_replica != window_count(self.train_days):
            raise ValueError(f"windows_per_replica {self.windows_per_replica} does not follow from "
                             f"{self.train_days} training days")
        if self.train_windows != self.multiplier * self.windows_per_replica:
            raise ValueError("train_windows does not match multiplier x windows_per_replica")
        expected_first = 0
        for index, shard in enumerate(self.shards):
            if shard.file != f"shard-{index:05d}.npy":
                raise ValueError(f"shard {index} is named {shard.file!r}, not shard-{index:05d}.npy")
            if shard.first_replica != expected_first:
                raise ValueError(f"{shard.file} starts at replica {shard.first_replica}, not {expected_first}: "
                                 "replica ranges must be contiguous")
            if shard.windows != shard.replicas * self.windows_per_replica:
                raise ValueError(f"{shard.file}: windows does not match replicas x windows_per_replica")
            expected_first += shard.replicas
        if expected_first != self.multiplier:
            raise ValueError(f"shards hold {expected_first} replicas but the multiplier is {self.multiplier}")
        return self


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of a dataset directory, validated whole (DatasetManifest); DataIntegrityError otherwise."""
    path = directory / MANIFEST
    if not directory.is_dir():
        raise InputError(f"dataset directory {directory} does not exist")
    if not path.is_file():
        raise InputError(f"{directory} is not a stockscale dataset: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise DataIntegrityError(f"{path} is not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataIntegrityError(f"{path} is not a stockscale dataset manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataIntegrityError(f"{path}: format version {manifest.get('format_version')} is not supported")
    try:
        return DatasetManifest.model_validate(manifest).model_dump()
    except ValidationError as error:
        raise DataIntegrityError(one_line(error, str(path))) from None


_verified: set[tuple[str, int, int, str]] = set()


def _file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def verify_shard(directory: Path, shard: dict[str, Any]) -> Path:
    """Check one shard's size and sha256 against the manifest, once: results are cached in memory and in a
    `.verified.json` beside the shards (keyed by size and modification time), so later runs skip the hash."""
    path = directory / shard["file"]
    if not path.resolve().is_relative_to(directory.resolve()):
        raise DataIntegrityError(f"shard {path} resolves outside the dataset folder {directory}")
    if not path.is_file():
        raise DataIntegrityError(f"shard {path} is missing")
    stat = path.stat()
    if stat.st_size != shard["bytes"]:
        raise DataIntegrityError(f"shard {path} is truncated or altered: {stat.st_size} bytes, manifest says "
                                 f"{shard['bytes']}")
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, shard["sha256"])
    if key in _verified:
        return path
    cache = _read_verified_cache(directory)
    cached = cache.get(shard["file"])
    if cached == [stat.st_size, stat.st_mtime_ns, shard["sha256"]]:
        _verified.add(key)
        return path
    if _file_sha256(path) != shard["sha256"]:
        raise DataIntegrityError(f"shard {path} is altered: its sha256 does not match the manifest")
    _verified.add(key)
    cache[shard["file"]] = [stat.st_size, stat.st_mtime_ns, shard["sha256"]]
    _write_verified_cache(directory, cache)
    return path


def _read_verified_cache(directory: Path) -> dict[str, list[Any]]:
    try:
        data = json.loads((directory / VERIFIED_CACHE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_verified_cache(directory: Path, cache: dict[str, list[Any]]) -> None:
    """Best effort: a read-only dataset (a mounted volume) is simply verified again next time."""
    with contextlib.suppress(OSError):
        write_text_atomic(directory / VERIFIED_CACHE, json.dumps(cache))


def verify_dataset(directory: Path, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    manifest = manifest or read_manifest(directory)
    for shard in manifest["shards"]:
        verify_shard(directory, shard)
    return manifest


def shard_array(path: Path, expected_shape: tuple[int, ...], mmap: bool) -> np.ndarray:
    """Load a shard fully into RAM, or memory-map it read-only. Never unpickles."""
    array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    if array.dtype != np.float32 or array.shape != expected_shape:
        raise DataIntegrityError(f"shard {path} holds {array.dtype} {array.shape}, manifest says float32 "
                                 f"{expected_shape}")
    return array


def iter_owned_shards(manifest: dict[str, Any], first_replica: int, last_replica: int) -> Iterator[dict[str, Any]]:
    """Shards that hold any replica in [first_replica, last_replica]."""
    for shard in manifest["shards"]:
        lo, count = shard["first_replica"], shard["replicas"]
        if lo <= last_replica and lo + count > first_replica:
            yield shard


def disk_bytes(directory: Path, manifest: dict[str, Any]) -> int:
    return sum(int(shard["bytes"]) for shard in manifest["shards"]) + (directory / MANIFEST).stat().st_size
