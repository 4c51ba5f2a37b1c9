"""Bytes a worker holds per training window, from the data layout the loaders use (data/loaders.py).

These are the figures the memory model multiplies by the windows a worker holds; they are not fitted. The
calibration checks them against a run at a second data size and records both (calibration.py); where the
check is off by more than 10% the measured figure is used instead (models.bytes_per_window). On our machine
the memory loader's figure held within 3%; the lazy loader's process held about 29 B a window, a third
more than its replica series (the cause is not established: allocator retention around the generated
shards is the likely one).

- `memory`: the materialized window float32 [60, 5] and its next-day close (float32), plus the replica series
  it was cut from, which are still held while the last windows are copied out (the peak is at the end of
  materialization: loaders.TrainLoader._materialize);
- `lazy`: the replica series only (float32 [T_train, 5] per replica; windows are zero-copy views);
- `stream`: nothing per window: shards are memory-mapped and each batch's pages are given back, so the
  resident data is one batch whatever the dataset's size. Its data needs disk instead (`disk_bytes`).
"""

from __future__ import annotations

from stockscale.config import FEATURES, SEQ_LEN

FLOAT32 = 4
LOADERS = ("memory", "lazy", "stream")


def series_bytes_per_window(train_days: int, windows_per_replica: int) -> float:
    """One replica series (float32 [T_train, 5]) shared by that replica's windows."""
    return train_days * len(FEATURES) * FLOAT32 / windows_per_replica


def window_bytes() -> int:
    """One materialized window float32 [60, 5] and its float32 target."""
    return SEQ_LEN * len(FEATURES) * FLOAT32 + FLOAT32


def bytes_per_window(loader: str, train_days: int, windows_per_replica: int) -> float:
    """Resident bytes per training window a worker holds with `loader` (0 for stream: no dependence on N)."""
    if loader == "memory":
        return window_bytes() + series_bytes_per_window(train_days, windows_per_replica)
    if loader == "lazy":
        return series_bytes_per_window(train_days, windows_per_replica)
    if loader == "stream":
        return 0.0
    raise ValueError(f"unknown loader {loader!r}")


def batch_bytes(batch_size: int) -> int:
    """What the stream loader holds resident at a time: one batch of windows (part of its fixed cost)."""
    return batch_size * window_bytes()


def disk_bytes(multiplier: int, train_days: int) -> int:
    """Disk the stream loader's dataset needs: every replica series as float32 (shards.py writes them)."""
    return multiplier * train_days * len(FEATURES) * FLOAT32


def windows_held(multiplier: int, windows_per_replica: int, world: int) -> int:
    """Training windows one worker of `world` holds: total // world (replicas.owned_replicas)."""
    return multiplier * windows_per_replica // world
