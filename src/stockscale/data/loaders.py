"""Step 5 of the data path, the loader: three ways to hold a rank's share of the training windows,
yielding identical batches.

- `memory`: every window materialized as float32 [N, 60, 5] — what the original demonstration did, and the
  one that runs out of memory first (1,200 bytes a window);
- `lazy`: the replica series in RAM, windows taken as zero-copy views and copied only into a batch
  (about 60x less memory: 20 bytes a window);
- `stream`: shards memory-mapped, batches read on demand and the pages given back after each batch, so
  resident memory does not grow with the dataset.

All three take (rank, world) and touch only the replicas that rank owns (over several tickers: whole tickers,
data/ticker_shards.py), shuffle with the same generator
(seed, epoch, rank), and build features with the same function, so for the same seed they yield the same
batches in the same order.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stockscale.config import FEATURES, SEQ_LEN
from stockscale.data.replicas import ReplicaSpec, owned_replicas
from stockscale.data.shards import iter_owned_shards, map_shard, shard_array, verify_shard
from stockscale.data.ticker_shards import rank_tickers
from stockscale.data.windows import NormStats, make_features

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
    """Where replicas come from: generated in memory from a ReplicaSpec, or a dataset directory on disk; one
    ticker, or several pooled (their windows ticker after ticker, each ticker's M replicas in a row)."""

    windows_per_replica: int
    total_windows: int
    train_days: int
    spec: ReplicaSpec | None = None
    directory: Path | None = None
    manifest: dict[str, Any] | None = None
    pooled: list[ReplicaSpec] | None = None  # several tickers in RAM: one spec per ticker
    opened: list[str] = field(default_factory=list)  # the shard files read or mapped, in the order opened

    @classmethod
    def generated(cls, spec: ReplicaSpec) -> ReplicaSource:
        return cls(spec.windows_per_replica, spec.total_windows, len(spec.base), spec=spec)

    @classmethod
    def generated_pooled(cls, specs: list[ReplicaSpec]) -> ReplicaSource:
        """Several tickers' replicas in RAM: ticker 0's M replicas' windows, then ticker 1's, and so on."""
        return cls(0, sum(spec.total_windows for spec in specs), 0, pooled=specs)

    @classmethod
    def on_disk(cls, directory: Path, manifest: dict[str, Any]) -> ReplicaSource:
        return cls(manifest["windows_per_replica"], manifest["train_windows"], manifest["train_days"],
                   directory=directory, manifest=manifest)

    @property
    def tickers_on_disk(self) -> list[dict[str, Any]] | None:
        return self.manifest.get("tickers") if self.manifest is not None else None

    def ticker_windows(self) -> list[int] | None:
        """Several tickers: each ticker's windows (all its replicas), in order; one ticker: None."""
        if self.pooled is not None:
            return [spec.total_windows for spec in self.pooled]
        if self.tickers_on_disk is not None:
            assert self.manifest is not None
            return [self.manifest["multiplier"] * t["windows_per_replica"] for t in self.tickers_on_disk]
        return None

    def rank_share(self, rank: int, world: int) -> tuple[int, int, int, tuple[int, int] | None]:
        """Rank's global windows [g0, g1), the smallest rank's window count (which sets every rank's steps per
        epoch) and, over several tickers, the first and last ticker it holds: whole tickers only
        (data.ticker_shards.rank_tickers); one ticker's windows are split evenly (replicas.owned_replicas)."""
        per_ticker = self.ticker_windows()
        if per_ticker is None:
            g0, g1, _ = owned_replicas(self.total_windows, max(1, self.windows_per_replica), rank, world)
            return g0, g1, g1 - g0, None
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} is not in a world of {world}")
        cuts = rank_tickers(per_ticker, world)
        ends = np.concatenate([[0], np.cumsum(per_ticker)]).astype(int)
        lo, hi = cuts[rank]
        smallest = min(int(ends[b] - ends[a]) for a, b in cuts)
        return int(ends[lo]), int(ends[hi]), smallest, (lo, hi - 1)

    def window_blocks(self, g0: int, g1: int, mapped: bool) -> list[ReplicaBlock]:
        """Blocks covering global windows [g0, g1), each knowing its first window's global index; only the
        tickers (and their shards) whose windows overlap [g0, g1) are generated or opened."""
        if self.pooled is None and self.tickers_on_disk is None:
            per = self.windows_per_replica
            blocks = self.blocks(g0 // per, (g1 - 1) // per, mapped)
            for block in blocks:
                block.first_window = block.first_replica * per
            return blocks
        if self.pooled is not None and mapped:
            raise ValueError("the stream loader needs a dataset on disk")
        blocks, start = [], 0
        for ticker, windows in enumerate(self.ticker_windows() or []):
            end = start + windows
            if start < g1 and end > g0:
                found = self._ticker_blocks(ticker, max(g0, start) - start, min(g1, end) - start, mapped)
                for block in found:
                    block.first_window = start + block.first_replica * block.windows_per_replica
                    blocks.append(block)
            start = end
        return blocks

    def _ticker_blocks(self, ticker: int, w0: int, w1: int, mapped: bool) -> list[ReplicaBlock]:
        """Blocks of one pooled ticker covering its windows [w0, w1): generated, or from its own shards."""
        if self.pooled is not None:
            spec = self.pooled[ticker]
            per = spec.windows_per_replica
            return ReplicaSource.generated(spec).blocks(w0 // per, (w1 - 1) // per, mapped=False)
        assert self.manifest is not None and self.tickers_on_disk is not None
        record = self.tickers_on_disk[ticker]
        per, first_shard = record["windows_per_replica"], record["first_shard"]
        shards = self.manifest["shards"][first_shard : first_shard + record["shards"]]
        return self._disk_blocks(shards, w0 // per, (w1 - 1) // per, record["train_days"], mapped)

    def blocks(self, first: int, last: int, mapped: bool) -> list[ReplicaBlock]:
        """Blocks covering replicas [first, last], trimmed to them; only the shards that hold them are opened."""
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
        assert self.manifest is not None
        return self._disk_blocks(self.manifest["shards"], first, last, self.train_days, mapped)

    def _disk_blocks(self, shards: list[dict[str, Any]], first: int, last: int, train_days: int,
                     mapped: bool) -> list[ReplicaBlock]:
        """Of `shards` (one ticker's), those holding replicas [first, last]: verified, then mapped or read."""
        assert self.directory is not None
        shape = (train_days, len(FEATURES))
        blocks = []
        for shard in iter_owned_shards({"shards": shards}, first, last):
            path = verify_shard(self.directory, shard)
            self.opened.append(shard["file"])
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
        # ticker_span: the first and last pooled ticker this rank holds (whole tickers), None for one ticker.
        self.g0, self.g1, self._epoch_windows, self.ticker_span = source.rank_share(rank, world)
        self.windows = self.g1 - self.g0
        opened_before = len(source.opened)
        self._blocks = source.window_blocks(self.g0, self.g1, mapped=kind == "stream")
        self.shards_opened = source.opened[opened_before:]  # the shard files this rank read or mapped
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
        """The same on every rank: ceil(smallest rank's windows / batch). One ticker's ranks hold equal shares;
        over several tickers a rank holding more windows leaves the rest of its reshuffled windows out of the
        epoch (a different rest each epoch)."""
        return -(-self._epoch_windows // self.batch_size)

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
        for step in range(self.steps_per_epoch):
            batch = order[step * self.batch_size : (step + 1) * self.batch_size]
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

