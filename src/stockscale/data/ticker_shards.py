"""Step 4b of the data path, several tickers on disk: shards that hold whole tickers, and which rank holds which.

Why whole tickers: a DDP worker then opens only the shards of its own tickers (a pod mounts, maps and verifies
nothing else), and the manifest can say, per shard, whose replicas it holds. Each ticker's replicas are its own
ReplicaSpec (noise stream key (i + 1,), its own training days, so its own array shape), written into shards
of up to `replicas_per_shard` of its replicas, numbered on after the previous ticker's: ticker i's shard j
holds exactly what the in-memory pooled source generates for it, so the three loaders read the same windows
whether the replicas come from RAM or from disk.

The rank rule (`rank_tickers`): tickers are cut into `world` contiguous blocks of whole tickers, each cut at
the ticker boundary nearest an equal share of the windows; every rank then runs ceil(smallest share / batch)
steps per epoch (data.loaders).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from stockscale.config import FEATURES, SEQ_LEN, TrainConfig
from stockscale.data.manifest import FORMAT, FORMAT_VERSION, DatasetManifest, SourceRecord, TickerRecord
from stockscale.data.replicas import REPLICAS_PER_SHARD, ReplicaSpec, materialized_bytes
from stockscale.data.shards import ShardJob, write_planned
from stockscale.data.windows import PooledData
from stockscale.errors import InputError


def pooled_specs(pooled: PooledData, multiplier: int, noise: float, seed: int,
                 replicas_per_shard: int = REPLICAS_PER_SHARD) -> list[ReplicaSpec]:
    """One replica spec per ticker, in the pooled data's order: what is generated in RAM or written to disk."""
    return [ReplicaSpec(base, multiplier, noise, seed, replicas_per_shard, key=(index + 1,),
                        price_std=part.stats.price_std * part.stats.return_std)  # train_bases' price units
            for index, (base, part) in enumerate(zip(pooled.train_bases(), pooled.parts, strict=True))]


def pooled_source_record(cfg: TrainConfig, pooled: PooledData) -> dict[str, Any]:
    """How to rebuild the pooled series: the source, the --tickers pick, the dates they span and the splits."""
    first = min(part.series.dates[0] for part in pooled.parts)
    last = max(part.series.dates[-1] for part in pooled.parts)
    return SourceRecord(spec=cfg.source, tickers=cfg.tickers, start=str(first), end=str(last),
                        train_frac=cfg.train_frac, val_frac=cfg.val_frac).model_dump(exclude_none=True)


def _ticker_jobs(specs: list[ReplicaSpec]) -> tuple[list[ShardJob], list[tuple[int, int]]]:
    """Every ticker's shards, numbered on across tickers; and each ticker's (first shard, shard count)."""
    jobs: list[ShardJob] = []
    spans = []
    for ticker, spec in enumerate(specs):
        plans = spec.shards()
        spans.append((len(jobs), len(plans)))
        for plan in plans:  # the plan keeps the ticker's own shard index: it seeds that shard's noise
            jobs.append(ShardJob(f"shard-{len(jobs):05d}.npy", plan, spec, ticker))
    return jobs, spans


def planned_pooled_manifest(pooled: PooledData, specs: list[ReplicaSpec], source: dict[str, Any],
                            spans: list[tuple[int, int]]) -> DatasetManifest:
    """The manifest of a dataset over several tickers, before its shards exist."""
    first = specs[0]
    records = [TickerRecord(ticker=part.series.ticker, train_days=len(spec.base),
                            windows_per_replica=spec.windows_per_replica, stats=part.stats.to_dict(),
                            first_shard=span[0], shards=span[1])
               for part, spec, span in zip(pooled.parts, specs, spans, strict=True)]
    total = sum(spec.total_windows for spec in specs)
    return DatasetManifest.model_construct(
        format=FORMAT, format_version=FORMAT_VERSION, source=SourceRecord.model_validate(source),
        multiplier=first.multiplier, noise=first.noise, seed=first.seed, seq_len=SEQ_LEN, features=list(FEATURES),
        train_days=sum(record.train_days for record in records),
        windows_per_replica=sum(record.windows_per_replica for record in records), train_windows=total,
        materialized_bytes=materialized_bytes(total), replicas_per_shard=first.replicas_per_shard,
        stats=pooled.stats.to_dict(), shards=[], tickers=records)


def write_pooled_dataset(pooled: PooledData, specs: list[ReplicaSpec], source: dict[str, Any], out: Path,
                         on_shard: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Write a dataset over several tickers, each shard one ticker's replicas (shards.write_planned does the
    staging, hashing and the check that an existing `out` is this very dataset)."""
    jobs, spans = _ticker_jobs(specs)
    return write_planned(planned_pooled_manifest(pooled, specs, source, spans), jobs, out, on_shard)


def rank_tickers(windows: list[int], world: int) -> list[tuple[int, int]]:
    """Each rank's tickers [lo, hi): contiguous blocks of whole tickers, every rank at least one, each cut at
    the ticker boundary nearest rank x total / world windows (so the shares are as even as whole tickers allow).
    """
    count = len(windows)
    if count < world:
        raise InputError(f"{count} ticker(s) cannot be shared by {world} workers: each worker holds whole "
                         f"tickers (use at most {count} workers, or more tickers)")
    ends = [0]
    for value in windows:
        ends.append(ends[-1] + value)
    total = ends[-1]
    cuts = [0]
    for rank in range(1, world):
        target = rank * total / world
        lowest, highest = cuts[-1] + 1, count - (world - rank)
        cuts.append(min(range(lowest, highest + 1), key=lambda cut: (abs(ends[cut] - target), cut)))
    cuts.append(count)
    return [(cuts[rank], cuts[rank + 1]) for rank in range(world)]
