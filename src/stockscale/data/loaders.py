"""Step 5 of the data path, the loader: three ways to hold a rank's share of the training windows,
yielding identical batches.

- `memory`: every window materialized as float32 [N, 60, 5] — what the original demonstration did, and the
  one that runs out of memory first (1,200 bytes a window);
- `lazy`: the replica series in RAM, windows taken as zero-copy views and copied only into a batch
  (about 60x less memory: 20 bytes a window);
- `stream`: shards memory-mapped, batches read on demand and the pages given back after each batch, so
  resident memory does not grow with the dataset.

All three take (rank, world) and touch only the replicas that rank owns, shuffle with the same generator
(seed, epoch, rank), and build features with the same function, so for the same seed they yield the same
batches in the same order.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stockscale.config import FEATURES, SEQ_LEN
from stockscale.data.replicas import ReplicaSpec, owned_replicas
from stockscale.data.shards import iter_owned_shards, map_shard, shard_array, verify_shard
from stockscale.data.windows import NormStats, make_features
from stockscale.errors import InputError

LoaderKind = Literal["memory", "lazy", "stream"]


@dataclass
class ReplicaBlock:
    """Consecutive replicas [first_replica, first_replica + len(array)) held in RAM or mapped from a file."""

    first_replica: int
    array: np.ndarray  # [R, T, 5] float32
    mapping: mmap.mmap | None = None
    # The global index of the block's first window (its first replica's window 0); -1: first_replica x the
    # source's windows per replica. Pooled tickers have blocks of different lengths, so each says its own.
    first_window: int = -1

    @property
    def windows_per_replica(self) -> int:
        return self.array.shape[1] - SEQ_LEN

    def release_pages(self) -> None:
        """Tell the kernel the mapped pages are not needed now (they are re-read from the file on demand)."""
        if self.mapping is not None and hasattr(self.mapping, "madvise"):
            self.mapping.madvise(mmap.MADV_DONTNEED)


@dataclass
class ReplicaSource:
    """Where replicas come from: generated in memory from a ReplicaSpec, or a dataset directory on disk."""

    windows_per_replica: int
    total_windows: int
    train_days: int
    spec: ReplicaSpec | None = None
    directory: Path | None = None
    manifest: dict[str, Any] | None = None
    pooled: list[ReplicaSpec] | None = None  # several tickers: one spec per ticker, windows ticker after ticker

    @classmethod
    def generated(cls, spec: ReplicaSpec) -> ReplicaSource:
        return cls(spec.windows_per_replica, spec.total_windows, len(spec.base), spec=spec)

    @classmethod
    def generated_pooled(cls, specs: list[ReplicaSpec]) -> ReplicaSource:
        """Several tickers' replicas in RAM: ticker 0's M replicas' windows, then ticker 1's, and so on."""
        return cls(0, sum(spec.total_windows for spec in specs), 0, pooled=specs)

    def ticker_span(self, g0: int, g1: int) -> tuple[int, int] | None:
        """Pooled tickers: the first and last ticker index whose windows overlap [g0, g1); else None."""
        if self.pooled is None:
            return None
        ends = np.cumsum([spec.total_windows for spec in self.pooled])
        return int(np.searchsorted(ends, g0, side="right")), int(np.searchsorted(ends, g1 - 1, side="right"))

    def window_blocks(self, g0: int, g1: int, mapped: bool) -> list[ReplicaBlock]:
        """Blocks covering global windows [g0, g1), each knowing its first window's global index."""
        if self.pooled is None:
            per = self.windows_per_replica
            blocks = self.blocks(g0 // per, (g1 - 1) // per, mapped)
            for block in blocks:
                block.first_window = block.first_replica * per
            return blocks
        if mapped:
            raise InputError("the stream loader is not built for several tickers yet: use --loader memory or lazy")
        blocks, start = [], 0
        for spec in self.pooled:  # only the tickers whose windows overlap [g0, g1) are generated
            per, end = spec.windows_per_replica, start + spec.total_windows
            if start < g1 and end > g0:
                first, last = (max(g0, start) - start) // per, (min(g1, end) - 1 - start) // per
                for block in ReplicaSource.generated(spec).blocks(first, last, mapped=False):
                    block.first_window = start + block.first_replica * per
                    blocks.append(block)
            start = end
        return blocks

    @classmethod
    def on_disk(cls, directory: Path, manifest: dict[str, Any]) -> ReplicaSource:
        return cls(manifest["windows_per_replica"], manifest["train_windows"], manifest["train_days"],
                   directory=directory, manifest=manifest)

    def blocks(self, first: int, last: int, mapped: bool) -> list[ReplicaBlock]:
        """Blocks covering replicas [first, last], trimmed to them; only the shards that hold them are opened."""
        shape = (self.train_days, len(FEATURES))
        blocks = []
        if self.spec is not None:
            if mapped:
                raise ValueError("the stream loader needs a dataset on disk")
            for plan in self.spec.shards():
                lo, hi = max(first, plan.first_replica), min(last + 1, plan.first_replica + plan.replicas)
                if lo < hi:
                    replicas = self.spec.generate(plan)
                    start = lo - plan.first_replica
                    blocks.append(ReplicaBlock(lo, np.ascontiguousarray(replicas[start : start + hi - lo])))
            return blocks
        assert self.directory is not None and self.manifest is not None
        for shard in iter_owned_shards(self.manifest, first, last):
            path = verify_shard(self.directory, shard)
            lo = max(first, shard["first_replica"])
            hi = min(last + 1, shard["first_replica"] + shard["replicas"])
            start = lo - shard["first_replica"]
            if mapped:
                array, mapping = map_shard(path, (shard["replicas"], *shape))
                blocks.append(ReplicaBlock(lo, array[start : start + hi - lo], mapping))
            else:
                array = shard_array(path, (shard["replicas"], *shape), mmap=False)
                blocks.append(ReplicaBlock(lo, np.ascontiguousarray(array[start : start + hi - lo])))
                del array
        return blocks


class TrainLoader:
    """Batches of (features [B, 60, 5], targets [B]) over one rank's share, reshuffled each epoch."""

    def __init__(self, kind: LoaderKind, source: ReplicaSource, stats: NormStats, rank: int, world: int,
                 batch_size: int, seed: int) -> None:
        self.kind = kind
        self.stats = stats
        self.rank = rank
        self.world = world
        self.batch_size = batch_size
        self.seed = seed
        self.g0, self.g1, _ = owned_replicas(source.total_windows, max(1, source.windows_per_replica), rank, world)
        self.windows = self.g1 - self.g0
        self.ticker_span = source.ticker_span(self.g0, self.g1)  # the pooled tickers this rank holds
        self._blocks = source.window_blocks(self.g0, self.g1, mapped=kind == "stream")
        self._block_starts = np.array([block.first_window for block in self._blocks])
        self._block_per = np.array([block.windows_per_replica for block in self._blocks])
        self._views = [_window_view(block.array) for block in self._blocks]
        if kind == "memory":
            self._x, self._next = self._materialize()
            self._blocks, self._views = [], []  # the series are not needed once windows exist
            self.data_resident_bytes = self._x.nbytes + self._next.nbytes
        elif kind == "lazy":
            self.data_resident_bytes = sum(block.array.nbytes for block in self._blocks)
        else:  # stream: only one batch of windows is resident at a time
            self.data_resident_bytes = batch_size * SEQ_LEN * len(FEATURES) * 4

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.windows // self.batch_size)

    def _locate(self, local: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rank-local window indices -> (block index, replica within block, window within replica)."""
        global_index = local + self.g0
        block = np.searchsorted(self._block_starts, global_index, side="right") - 1
        replica, window = np.divmod(global_index - self._block_starts[block], self._block_per[block])
        return block, replica, window

    def _gather(self, local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Copy the windows (and next-day closes) at rank-local indices out of the replica views."""
        block, replica, window = self._locate(local)
        windows = np.empty((len(local), SEQ_LEN, len(FEATURES)), dtype=np.float32)
        next_close = np.empty(len(local), dtype=np.float32)
        for b in np.unique(block):
            rows = block == b
            windows[rows] = self._views[b][replica[rows], window[rows]].transpose(0, 2, 1)
            next_close[rows] = self._blocks[b].array[replica[rows], window[rows] + SEQ_LEN, 3]
        return windows, next_close

    def _materialize(self) -> tuple[np.ndarray, np.ndarray]:
        windows = np.empty((self.windows, SEQ_LEN, len(FEATURES)), dtype=np.float32)
        next_close = np.empty(self.windows, dtype=np.float32)
        chunk = 8192  # a small scratch buffer: the materialized windows are the memory being measured
        for lo in range(0, self.windows, chunk):
            hi = min(self.windows, lo + chunk)
            windows[lo:hi], next_close[lo:hi] = self._gather(np.arange(lo, hi))
        return windows, next_close

    def order(self, epoch: int) -> np.ndarray:
        """The epoch's shuffle: the same for every loader kind, different per (seed, epoch, rank)."""
        return np.random.default_rng([self.seed, epoch, self.rank]).permutation(self.windows)

    def epoch(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = self.order(epoch)
        for lo in range(0, self.windows, self.batch_size):
            batch = order[lo : lo + self.batch_size]
            if self.kind == "memory":
                windows, next_close = self._x[batch], self._next[batch]
            else:
                windows, next_close = self._gather(batch)
                if self.kind == "stream":
                    for block in self._blocks:
                        block.release_pages()
            yield make_features(windows, next_close, self.stats)


def _window_view(series: np.ndarray) -> np.ndarray:
    """[R, T, 5] -> zero-copy [R, T - 60, 5, 60]: window w of replica r is view[r, w] (transposed)."""
    return np.lib.stride_tricks.sliding_window_view(series[:, :-1], SEQ_LEN, axis=1)

