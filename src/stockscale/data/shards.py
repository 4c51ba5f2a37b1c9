"""Step 4 of the data path, the shards: a replica spec written as .npy shard files, listed in manifest.json.

Writing is streamed one shard at a time into a temporary directory renamed at the end: peak memory is one
shard, and an interrupted run leaves nothing that looks like a dataset. The manifest has one model,
DatasetManifest (data/manifest.py): it is built through it when written and checked whole through it when read,
before anything of the dataset is trusted; the functions here hand it on as that model's dict. Reading checks
each shard's size and sha256 once, and never unpickles. This module needs numpy, not torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import mmap
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from stockscale.config import FEATURES, SEQ_LEN, TrainConfig, one_line
from stockscale.data.manifest import FORMAT, FORMAT_VERSION, DatasetManifest, ShardEntry, SourceRecord
from stockscale.data.replicas import ReplicaSpec, ShardPlan, materialized_bytes
from stockscale.data.windows import NormStats, PreparedData
from stockscale.errors import DataIntegrityError, InputError
from stockscale.files import staged_dir, utc_timestamp, write_text_atomic

MANIFEST = "manifest.json"
VERIFIED_CACHE = ".verified.json"


# --------------------------------------------------------------------------------------------- manifest


def source_record(cfg: TrainConfig, prepared: PreparedData) -> dict[str, Any]:
    """How to rebuild the base series: stored in a manifest so `--data DIR` needs no other flags."""
    return SourceRecord(spec=cfg.source, start=str(prepared.series.dates[0]), end=str(prepared.series.dates[-1]),
                        train_frac=cfg.train_frac, val_frac=cfg.val_frac).model_dump(exclude_none=True)


def planned_manifest(prepared: PreparedData, spec: ReplicaSpec, source: dict[str, Any]) -> DatasetManifest:
    """The manifest of the dataset `spec` describes, before its shards exist: not validated until they do."""
    return DatasetManifest.model_construct(
        format=FORMAT, format_version=FORMAT_VERSION, source=SourceRecord.model_validate(source),
        multiplier=spec.multiplier, noise=spec.noise, seed=spec.seed, seq_len=SEQ_LEN, features=list(FEATURES),
        train_days=len(spec.base), windows_per_replica=spec.windows_per_replica, train_windows=spec.total_windows,
        materialized_bytes=materialized_bytes(spec.total_windows), replicas_per_shard=spec.replicas_per_shard,
        stats=prepared.stats.to_dict(), shards=[])


def _validated(manifest: dict[str, Any], path: Path) -> DatasetManifest:
    try:
        return DatasetManifest.model_validate(manifest)
    except ValidationError as error:
        raise DataIntegrityError(one_line(error, str(path))) from None


# ---------------------------------------------------------------------------------------------- writing


def write_shard(path: Path, replicas: np.ndarray) -> tuple[int, str]:
    """Write one .npy shard (header, then the raw float32 data) and return its size and sha256.

    The hash is taken from the bytes in memory as they are written, so a shard is never read back.
    """
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(replicas))
    data = np.ascontiguousarray(replicas).data.cast("B")
    sha = hashlib.sha256(header.getvalue())
    sha.update(data)
    with open(path, "wb") as handle:
        handle.write(header.getvalue())
        handle.write(data)
    return len(header.getvalue()) + len(data), sha.hexdigest()



@dataclass(frozen=True)
class ShardJob:
    """One shard to write: its plan (the file is named by `file`), how to generate its replicas, its windows
    per replica, and, over several tickers, the ticker index it holds."""

    file: str
    plan: ShardPlan
    spec: ReplicaSpec
    ticker: int | None = None


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
    jobs = [ShardJob(plan.file, plan, spec) for plan in spec.shards()]
    return write_planned(planned_manifest(prepared, spec, source), jobs, out, on_shard)


def write_planned(planned: DatasetManifest, jobs: list[ShardJob], out: Path,
                  on_shard: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Write the shards `jobs` lists, then the manifest `planned` with their sizes and hashes (write_dataset;
    data.ticker_shards for several tickers)."""
    if out.exists():
        existing = _existing_manifest(out)
        if existing is not None and _same_dataset(existing, planned):
            return verify_dataset(out, _as_read(existing))
        raise InputError(f"output directory {out} already holds something that is not this dataset")
    # Hashing and writing one shard overlaps generating the next (numpy, hashlib and file writes release the
    # GIL), so at most two shards are in memory at once.
    shards: list[dict[str, Any]] = []
    with staged_dir(out) as tmp, ThreadPoolExecutor(max_workers=1) as writer:
        pending: Future[tuple[int, str]] | None = None
        for number, job in enumerate([*jobs, None]):
            replicas = job.spec.generate(job.plan) if job is not None else None
            if pending is not None:
                size, sha256 = pending.result()
                done = jobs[number - 1]
                shards.append(ShardEntry(file=done.file, first_replica=done.plan.first_replica,
                                         replicas=done.plan.replicas,
                                         windows=done.plan.replicas * done.spec.windows_per_replica, bytes=size,
                                         sha256=sha256, ticker=done.ticker).model_dump(exclude_none=True))
                if on_shard is not None:
                    on_shard(number, len(jobs))
            if job is not None and replicas is not None:  # (replicas is None only after the last job)
                pending = writer.submit(write_shard, tmp / job.file, replicas)
        written = {**planned.model_dump(exclude_unset=True), "shards": shards, "created_at": utc_timestamp()}
        manifest = _validated(written, tmp / MANIFEST).model_dump(exclude_unset=True)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _existing_manifest(out: Path) -> DatasetManifest | None:
    if not out.is_dir():
        return None
    try:
        return load_manifest(out)
    except InputError:
        return None


def _same_dataset(existing: DatasetManifest, wanted: DatasetManifest) -> bool:
    """Whether `existing` holds what `wanted` describes: the same parameters, statistics within STATS_RTOL."""
    keys = ("format", "format_version", "source", "multiplier", "noise", "seed", "seq_len", "train_days",
            "replicas_per_shard")
    if any(getattr(existing, key) != getattr(wanted, key) for key in keys):
        return False
    pairs = [(existing.stats, wanted.stats)]
    if (existing.tickers is None) != (wanted.tickers is None):
        return False
    if existing.tickers is not None and wanted.tickers is not None:
        if [(t.ticker, t.train_days, t.shards) for t in existing.tickers] != \
                [(t.ticker, t.train_days, t.shards) for t in wanted.tickers]:
            return False
        pairs += [(have.stats, want.stats) for have, want in zip(existing.tickers, wanted.tickers, strict=True)]
    try:
        return all(NormStats.from_dict(have).matches(NormStats.from_dict(want)) for have, want in pairs)
    except (KeyError, TypeError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------- reading


def load_manifest(directory: Path) -> DatasetManifest:
    """The manifest of a dataset directory, validated whole; DataIntegrityError otherwise."""
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
    return _validated(manifest, path)


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of a dataset directory as DatasetManifest's dict, as the loaders and the CLI read it."""
    return _as_read(load_manifest(directory))


def _as_read(model: DatasetManifest) -> dict[str, Any]:
    """One ticker's manifest reads as written: the fields only several tickers have are left out, not None."""
    manifest = model.model_dump()
    if manifest["tickers"] is None:
        del manifest["tickers"]
    if manifest["source"]["tickers"] is None:
        del manifest["source"]["tickers"]
    for shard in manifest["shards"]:
        if shard["ticker"] is None:
            del shard["ticker"]
    return manifest


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


def map_shard(path: Path, shape: tuple[int, ...]) -> tuple[np.ndarray, mmap.mmap]:
    """Memory-map a .npy shard read-only, keeping the mmap object so its pages can be released."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        header_shape, fortran, dtype = read_header(handle)
        offset = handle.tell()
        if dtype != np.float32 or tuple(header_shape) != shape or fortran:
            raise DataIntegrityError(f"shard {path} holds {dtype} {header_shape}, manifest says float32 {shape}")
        mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    array = np.frombuffer(mapping, dtype=np.float32, count=int(np.prod(shape)), offset=offset).reshape(shape)
    return array, mapping


def iter_owned_shards(manifest: dict[str, Any], first_replica: int, last_replica: int) -> Iterator[dict[str, Any]]:
    """Shards that hold any replica in [first_replica, last_replica]."""
    for shard in manifest["shards"]:
        lo, count = shard["first_replica"], shard["replicas"]
        if lo <= last_replica and lo + count > first_replica:
            yield shard


def disk_bytes(directory: Path, manifest: dict[str, Any]) -> int:
    return sum(int(shard["bytes"]) for shard in manifest["shards"]) + (directory / MANIFEST).stat().st_size
