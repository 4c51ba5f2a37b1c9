"""The end of the data path: what a training process needs from a TrainConfig, the prepared series and its
rank's loader (the steps: data/replicas.py's docstring).

Three ways in, one result:
- `--data DIR`: a dataset written by `stockscale data scale`; its manifest names the source and dates, and
  only the shards this rank owns are opened (and verified once);
- `--multiplier N` with the memory or lazy loader: the rank generates the replicas it owns in RAM (seeded
  per shard, so exactly what `data scale` would write), unless a verified cached copy exists;
- `--multiplier N` with the stream loader: a verified on-disk cache is written (once) and memory-mapped.
The same holds for several tickers pooled (data/ticker_shards.py): their shards hold whole tickers.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from stockscale.config import TrainConfig, worker_batch_size
from stockscale.data.loaders import ReplicaSource, TrainLoader
from stockscale.data.replicas import ReplicaSpec, materialized_bytes
from stockscale.data.series_cache import load_series
from stockscale.data.shards import read_manifest, source_record, verify_dataset, write_dataset
from stockscale.data.sources import is_pooled, is_synthetic, load_panel, parse_tickers
from stockscale.data.ticker_shards import pooled_source_record, pooled_specs, write_pooled_dataset
from stockscale.data.windows import NormStats, PooledData, PreparedData, prepare, prepare_pooled
from stockscale.errors import DataIntegrityError, InputError


@dataclass
class TrainingData:
    prepared: PreparedData | PooledData
    loader: TrainLoader
    total_windows: int
    multiplier: int
    noise: float
    dataset: str | None  # the dataset directory used, if any

    def summary(self) -> dict[str, Any]:
        return {**self.prepared.summary(), "multiplier": self.multiplier, "noise": self.noise,
                "dataset": self.dataset}


# Prepared base series this process keeps for later runs (a warm worker serves many trials); None: keep none.
_kept: collections.OrderedDict[tuple[Any, ...], PreparedData] | None = None
KEPT_SERIES = 4


def keep_prepared_data() -> None:
    """From now on, keep the last few prepared base series in this process and hand them to the runs that ask
    for the same one again. They are read-only, so no run can change what the next one gets."""
    global _kept
    if _kept is None:
        _kept = collections.OrderedDict()


def _prepared_key(cfg: TrainConfig) -> tuple[Any, ...] | None:
    """Everything that decides the prepared series, or None when it may change under the same settings
    (yahoo data, a CSV file that cannot be looked at): a CSV file's size, mtime and inode are part of it."""
    kind, _, rest = cfg.source.partition(":")
    if kind == "bundled":
        stamp: tuple[int, ...] = ()
    elif kind == "csv":
        try:
            info = os.stat(rest)
        except OSError:
            return None
        stamp = (info.st_size, info.st_mtime_ns, info.st_ino, info.st_dev)
    else:
        return None
    return (cfg.source, cfg.start, cfg.end, cfg.train_frac, cfg.val_frac, stamp)


def prepare_from_config(cfg: TrainConfig) -> PreparedData | PooledData:
    """The prepared series of `cfg.source`: one ticker (PreparedData), or several pooled (PooledData)."""
    tickers = parse_tickers(cfg.tickers)
    if is_pooled(cfg.source, tickers):
        panel = load_panel(cfg.source, tickers, cfg.start, cfg.end)
        return prepare_pooled(cfg.source, panel, cfg.train_frac, cfg.val_frac, is_synthetic(cfg.source))
    key = _prepared_key(cfg) if _kept is not None else None
    if _kept is not None and key is not None and key in _kept:
        _kept.move_to_end(key)
        return _kept[key]
    series = load_series(cfg.source, cfg.start, cfg.end, series_cache_dir())
    prepared = prepare(series, cfg.train_frac, cfg.val_frac)
    if _kept is not None and key is not None:
        for array in (series.dates, series.values, prepared.normalized):
            array.setflags(write=False)
        _kept[key] = prepared
        while len(_kept) > KEPT_SERIES:
            _kept.popitem(last=False)
    return prepared


def prepare_from_manifest(manifest: dict[str, Any], where: Path) -> PreparedData | PooledData:
    """The prepared series a dataset's manifest names, fitted again from its source and checked against the
    manifest's statistics and training days (per ticker, over several)."""
    source = manifest["source"]
    if manifest.get("tickers") is not None:
        return _pooled_from_manifest(manifest, where)
    try:
        series = load_series(source["spec"], date.fromisoformat(source["start"]), date.fromisoformat(source["end"]),
                             series_cache_dir())
        prepared = prepare(series, float(source["train_frac"]), float(source["val_frac"]))
    except (KeyError, TypeError, ValueError):
        raise DataIntegrityError(f"{where}/manifest.json: its source record is incomplete") from None
    stored = NormStats.from_dict(manifest["stats"])
    if not stored.matches(prepared.stats):
        raise DataIntegrityError(
            f"{where}/manifest.json does not match its source {source['spec']}: normalization statistics differ"
        )
    if prepared.train_end != manifest["train_days"]:
        raise DataIntegrityError(f"{where}/manifest.json: {manifest['train_days']} training days, source has "
                                 f"{prepared.train_end}")
    return prepared


def _pooled_from_manifest(manifest: dict[str, Any], where: Path) -> PooledData:
    source = manifest["source"]
    try:
        spec = source["spec"]
        panel = load_panel(spec, parse_tickers(source.get("tickers")), date.fromisoformat(source["start"]),
                           date.fromisoformat(source["end"]))
        pooled = prepare_pooled(spec, panel, float(source["train_frac"]), float(source["val_frac"]),
                                is_synthetic(spec))
    except (KeyError, TypeError, ValueError):
        raise DataIntegrityError(f"{where}/manifest.json: its source record is incomplete") from None
    records = manifest["tickers"]
    if list(pooled.tickers) != [record["ticker"] for record in records]:
        raise DataIntegrityError(f"{where}/manifest.json does not match its source {spec}: the tickers differ")
    for part, record in zip(pooled.parts, records, strict=True):
        if not NormStats.from_dict(record["stats"]).matches(part.stats) or part.train_end != record["train_days"]:
            raise DataIntegrityError(f"{where}/manifest.json does not match its source {spec}: ticker "
                                     f"{record['ticker']}'s training days or normalization statistics differ")
    return pooled


def cache_root() -> Path:
    """Where `--multiplier N` keeps datasets it wrote: $STOCKSCALE_CACHE, else ~/.cache/stockscale."""
    configured = os.environ.get("STOCKSCALE_CACHE")
    if configured:
        return Path(configured)
    home = Path.home()
    if os.access(home, os.W_OK):
        return home / ".cache" / "stockscale"
    return Path(tempfile.gettempdir()) / "stockscale-cache"


def series_cache_dir() -> Path:
    """Where loaded base series are cached (see data.series_cache), beside the cached datasets."""
    return cache_root() / "series"


def cache_dir_for(cfg: TrainConfig, prepared: PreparedData | PooledData) -> Path:
    record = pooled_source_record(cfg, prepared) if isinstance(prepared, PooledData) else \
        source_record(cfg, prepared)
    key = json.dumps({**record, "multiplier": cfg.multiplier, "noise": cfg.noise,
                      "noise_units": "daily_log_return", "seed": cfg.seed}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_root() / "datasets" / f"x{cfg.multiplier}-{digest}"


def ensure_cached_dataset(cfg: TrainConfig, prepared: PreparedData | PooledData) -> tuple[Path, dict[str, Any]]:
    """Write the dataset to the cache unless a copy whose checksums verify is there already.

    Several ranks on one machine may race here: each writes its own temporary directory and the first
    rename wins; the others find the finished dataset and use it.
    """
    target = cache_dir_for(cfg, prepared)
    try:
        if isinstance(prepared, PooledData):
            specs = pooled_specs(prepared, cfg.multiplier, cfg.noise, cfg.seed)
            return target, write_pooled_dataset(prepared, specs, pooled_source_record(cfg, prepared), target)
        spec = ReplicaSpec(prepared.train_series, cfg.multiplier, cfg.noise, cfg.seed,
                           price_std=prepared.stats.price_std)
        return target, write_dataset(prepared, spec, source_record(cfg, prepared), target)
    except OSError:
        if (target / "manifest.json").is_file():
            return target, verify_dataset(target)
        raise


def open_training_data(cfg: TrainConfig, rank: int = 0, world: int = 1) -> TrainingData:
    """The prepared series (validation and test always from the original data) and this rank's loader."""
    dataset: Path | None = None
    multiplier, noise = cfg.multiplier, cfg.noise
    if cfg.data is not None:
        dataset = cfg.data
        manifest = read_manifest(dataset)
        prepared = prepare_from_manifest(manifest, dataset)
        source = ReplicaSource.on_disk(dataset, manifest)
        multiplier, noise = int(manifest["multiplier"]), float(manifest["noise"])
    else:
        prepared = prepare_from_config(cfg)
        cached = cache_dir_for(cfg, prepared)
        if cfg.loader == "stream" or (cfg.multiplier > 1 and (cached / "manifest.json").is_file()):
            dataset, manifest = ensure_cached_dataset(cfg, prepared)
            source = ReplicaSource.on_disk(dataset, manifest)
        else:
            source = ReplicaSource.generated_pooled(pooled_specs(prepared, cfg.multiplier, cfg.noise, cfg.seed)) \
                if isinstance(prepared, PooledData) else \
                ReplicaSource.generated(ReplicaSpec(prepared.train_series, cfg.multiplier, cfg.noise, cfg.seed,
                                                    price_std=prepared.stats.price_std))
    if source.total_windows < world:
        raise InputError(f"{source.total_windows} training windows cannot be shared by {world} workers")
    loader = TrainLoader(cfg.loader, source, prepared.stats, rank, world, worker_batch_size(cfg, world), cfg.seed)
    return TrainingData(prepared, loader, source.total_windows, multiplier, noise,
                        str(dataset) if dataset else None)


@dataclass(frozen=True)
class DatasetSize:
    """The natural size of a source's training data at multiplier 1: tickers x their training days' windows."""

    tickers: int
    windows: int
    materialized_bytes: int  # the memory loader's footprint (1,200 bytes a window)
    train_days: int  # training days summed over the tickers: what the lazy loader's replica series hold


def dataset_size(cfg: TrainConfig, tickers: int | None = None) -> DatasetSize:
    """The training data `cfg` describes at multiplier 1, or with its source's first `tickers` tickers: what a
    planner multiplies by --multiplier (`scale-test --source csv:FILE --tickers 500` trains on exactly this)."""
    if tickers is not None:
        cfg = cfg.model_copy(update={"tickers": str(tickers)})
    prepared = prepare_from_config(cfg)
    if isinstance(prepared, PooledData):
        count, days = len(prepared.tickers), sum(part.train_end for part in prepared.parts)
    else:
        count, days = 1, prepared.train_end
    return DatasetSize(count, prepared.train_windows, materialized_bytes(prepared.train_windows), days)
