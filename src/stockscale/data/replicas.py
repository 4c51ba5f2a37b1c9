"""Step 3 of the data path, the replica spec: the training series replicated N times with Gaussian noise.

The noise is in return units: each replica adds iid N(0, noise) to the *daily log returns* of the series and
cumulates it, so a replica is another plausible path of the same days (its close-to-close moves have the
original's autocorrelation, only slightly diluted), not the original with each day jittered on its own. Noise
on the levels would plant a mean reversion: the target holds -e_t while the window's last close holds +e_t.
The open, high and low move with the close (one offset per day shifts the day's four prices), so a day's
range stays its own; volume is left as it was. `noise` is a log return (0.002 = 0.2 % a day), converted to
the normalized series' units by the training log-price std (`price_std`).

A scaled dataset holds replica *series* (float32 [R, T_train, 5] per shard), not materialized windows: a
replica is 17 KB where its 821 windows would be 1 MB. Replica 0 is the original series, so 1x is the base
dataset. Each shard's noise comes from its own generator seeded by (seed, shard index), so

- the same spec gives byte-identical replicas (the checksums in a written dataset's manifest prove it), and
- any worker can produce exactly the shards it owns without the others (Kubernetes pods do this; no shared
  volume is needed).

The data path, each step in one file that imports only earlier ones: sources.py (and series_cache.py) ->
windows.py (prepared series) -> replicas.py (replica spec) -> shards.py (shard files and their manifest) ->
loaders.py (a rank's batches) -> dataset.py (what a training process opens). This module needs numpy, not torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stockscale.config import FEATURES, SEQ_LEN
from stockscale.data.windows import window_count
from stockscale.errors import InputError

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
    noise: float  # sigma of the noise added to each day's log return (not normalized)
    seed: int
    replicas_per_shard: int = REPLICAS_PER_SHARD
    # Several tickers pooled: ticker i's spec has key (i + 1,), so each ticker's noise is its own stream.
    key: tuple[int, ...] = ()
    # The normalization's log-price std (NormStats.price_std): a log return divided by it is in the base
    # series' units. 1.0 reads `noise` in those units already.
    price_std: float = 1.0

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
        """The replicas of one shard, float32 [R, T, 5]: base + cumulated return noise from generator
        (seed, shard index). Day 0 of every replica is the original's; the offsets then random-walk."""
        rng = np.random.default_rng([self.seed, *self.key, shard.index])
        days = len(self.base)
        offsets = np.zeros((shard.replicas, days), dtype=np.float32)
        if days > 1:
            steps = rng.standard_normal((shard.replicas, days - 1), dtype=np.float32)
            steps *= np.float32(self.noise / self.price_std)
            np.cumsum(steps, axis=1, out=offsets[:, 1:])
        out = np.empty((shard.replicas, *self.base.shape), dtype=np.float32)
        out[:] = self.base
        out[..., :4] += offsets[..., None]
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
