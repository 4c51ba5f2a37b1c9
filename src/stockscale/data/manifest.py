"""Step 4a of the data path, the manifest.json of a scaled dataset, as one pydantic model checked whole.

Why its own module: the model is the dataset's public contract (docs/results.md), and its checks (contiguous
replica ranges, the counts that follow from them, whole tickers per shard) are read by every reader before a
byte of a shard is trusted. This module needs pydantic, not numpy.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from stockscale.bounds import MAX_MULTIPLIER, MAX_SEED
from stockscale.config import FEATURES, SEQ_LEN
from stockscale.data.replicas import REPLICAS_PER_SHARD
from stockscale.data.windows import window_count

FORMAT: Final = "stockscale-scaled-dataset"
FORMAT_VERSION: Final = 1


class ShardEntry(BaseModel):
    """One shard as the manifest lists it; its file name is the only form a shard's name can take."""

    model_config = ConfigDict(extra="forbid", strict=True)

    file: str = Field(pattern=r"^shard-[0-9]{5}\.npy$")
    first_replica: int = Field(ge=0)
    replicas: int = Field(ge=1, le=REPLICAS_PER_SHARD)
    windows: int = Field(ge=1)
    bytes: int = Field(ge=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    # Several tickers: the index (into the manifest's `tickers`) of the one ticker whose replicas it holds.
    ticker: int | None = Field(None, ge=0)


class TickerRecord(BaseModel):
    """One ticker of a dataset over several: its training days, its own statistics and its shards
    [first_shard, first_shard + shards), which hold its replicas 0..multiplier-1 and nothing else."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    ticker: str = Field(min_length=1)
    train_days: int = Field(gt=SEQ_LEN)
    windows_per_replica: int = Field(ge=1)
    stats: dict[str, float]
    first_shard: int = Field(ge=0)
    shards: int = Field(ge=1)


class SourceRecord(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)

    spec: str
    # Needed to rebuild the base series (prepare_from_manifest says so when one is missing); `data info` and
    # the shard checks do without them.
    start: str | None = None
    end: str | None = None
    train_frac: float | None = Field(None, gt=0, lt=1)
    val_frac: float | None = Field(None, gt=0, lt=1)
    tickers: str | None = None  # several tickers: the --tickers pick they were chosen by (None: every one)


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
    created_at: str | None = None
    # Several tickers (one pooled model): one record each, in the order of their windows and shards; then
    # train_days and windows_per_replica are the sums over them, and `stats` are the unit statistics.
    tickers: list[TickerRecord] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DatasetManifest:
        if self.tickers is not None:
            return _consistent_tickers(self)
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


def _consistent_tickers(manifest: DatasetManifest) -> DatasetManifest:
    """A dataset over several tickers: each ticker's shards follow the previous ticker's, hold only it, and
    hold its replicas 0..multiplier-1 contiguously; the totals are the sums over tickers."""
    tickers = manifest.tickers or []
    if not tickers:
        raise ValueError("tickers is empty")
    if manifest.train_days != sum(t.train_days for t in tickers):
        raise ValueError("train_days is not the sum of the tickers' training days")
    if manifest.windows_per_replica != sum(t.windows_per_replica for t in tickers):
        raise ValueError("windows_per_replica is not the sum of the tickers' windows per replica")
    if manifest.train_windows != manifest.multiplier * manifest.windows_per_replica:
        raise ValueError("train_windows does not match multiplier x windows_per_replica")
    next_shard = 0
    for index, record in enumerate(tickers):
        if record.windows_per_replica != window_count(record.train_days):
            raise ValueError(f"ticker {record.ticker}: windows_per_replica does not follow from its training days")
        if record.first_shard != next_shard:
            raise ValueError(f"ticker {record.ticker} starts at shard {record.first_shard}, not {next_shard}")
        expected_first = 0
        for number in range(record.first_shard, record.first_shard + record.shards):
            if number >= len(manifest.shards):
                raise ValueError(f"ticker {record.ticker} names shard {number}, which the manifest lacks")
            shard = manifest.shards[number]
            if shard.file != f"shard-{number:05d}.npy":
                raise ValueError(f"shard {number} is named {shard.file!r}, not shard-{number:05d}.npy")
            if shard.ticker != index:
                raise ValueError(f"{shard.file} is listed under ticker {record.ticker} but says ticker {shard.ticker}")
            if shard.first_replica != expected_first:
                raise ValueError(f"{shard.file} starts at replica {shard.first_replica}, not {expected_first}")
            if shard.windows != shard.replicas * record.windows_per_replica:
                raise ValueError(f"{shard.file}: windows does not match replicas x its ticker's windows_per_replica")
            expected_first += shard.replicas
        if expected_first != manifest.multiplier:
            raise ValueError(f"ticker {record.ticker}'s shards hold {expected_first} replicas, not the multiplier "
                             f"{manifest.multiplier}")
        next_shard += record.shards
    if next_shard != len(manifest.shards):
        raise ValueError(f"the tickers hold {next_shard} shards but the manifest lists {len(manifest.shards)}")
    return manifest
