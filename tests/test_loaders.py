"""The three loaders: the same batches in the same order, each rank its own share, memory as promised."""

import numpy as np
import pytest

from stockscale.config import build_train_config
from stockscale.data.dataset import open_training_data, prepare_from_config
from stockscale.data.loaders import ReplicaSource, TrainLoader
from stockscale.data.replicas import ReplicaSpec
from stockscale.data.shards import read_manifest, source_record, write_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    cfg = build_train_config({"multiplier": 7})
    prepared = prepare_from_config(cfg)
    spec = ReplicaSpec(prepared.train_series, 7, 0.01, 42, replicas_per_shard=3)
    out = tmp_path_factory.mktemp("ds") / "x7"
    write_dataset(prepared, spec, source_record(cfg, prepared), out)
    return prepared, spec, out


def loader(kind, dataset, rank=0, world=1, batch_size=32, on_disk=True):
    prepared, spec, out = dataset
    source = ReplicaSource.on_disk(out, read_manifest(out)) if on_disk else ReplicaSource.generated(spec)
    return TrainLoader(kind, source, prepared.stats, rank, world, batch_size, seed=5)


def batches(share, epoch=1):
    return list(share.epoch(epoch))


@pytest.mark.parametrize("world", [1, 3])
def test_all_loaders_yield_identical_batches_in_the_same_order(dataset, world):
    for rank in range(world):
        reference = batches(loader("memory", dataset, rank, world))
        for kind in ("lazy", "stream"):
            got = batches(loader(kind, dataset, rank, world))
            assert len(got) == len(reference)
            for (x, y), (rx, ry) in zip(got, reference, strict=True):
                np.testing.assert_array_equal(x, rx)
                np.testing.assert_array_equal(y, ry)


def test_generated_in_memory_equals_read_from_disk(dataset):
    for (x, y), (dx, dy) in zip(batches(loader("lazy", dataset, on_disk=False)), batches(loader("lazy", dataset)),
                                strict=True):
        np.testing.assert_array_equal(x, dx)
        np.testing.assert_array_equal(y, dy)


def test_epochs_reshuffle_and_every_window_is_seen_once(dataset):
    share = loader("lazy", dataset, batch_size=64)
    first, second = share.order(1), share.order(2)
    assert sorted(first) == list(range(share.windows))
    assert not np.array_equal(first, second)
    assert sum(len(y) for _, y in share.epoch(1)) == share.windows


def test_ranks_split_the_windows_evenly_and_touch_only_their_replicas(dataset):
    prepared, spec, _ = dataset
    world = 4
    shares = [loader("lazy", dataset, rank, world) for rank in range(world)]
    assert len({s.windows for s in shares}) == 1  # same steps per epoch on every rank
    assert shares[0].windows == spec.total_windows // world
    assert all(a.g1 == b.g0 for a, b in zip(shares, shares[1:], strict=False))
    full = loader("lazy", dataset).data_resident_bytes
    for share in shares:
        assert share.data_resident_bytes < full / 2  # 2 of 7 replicas at most


def test_memory_per_window_by_loader(dataset):
    memory, lazy = loader("memory", dataset), loader("lazy", dataset)
    per_window_memory = memory.data_resident_bytes / memory.windows
    per_window_lazy = lazy.data_resident_bytes / lazy.windows
    assert per_window_memory >= 60 * 5 * 4  # materialized float32 windows
    assert per_window_memory / per_window_lazy > 40  # about 60x less for lazy
    stream = loader("stream", dataset)
    assert stream.data_resident_bytes < lazy.data_resident_bytes


def test_training_data_from_a_dataset_directory_uses_its_manifest(dataset):
    _, spec, out = dataset
    cfg = build_train_config({"data": str(out), "loader": "stream"})
    data = open_training_data(cfg)
    assert data.total_windows == spec.total_windows and data.multiplier == 7
    assert data.dataset == str(out)


def test_multiplier_shortcut_with_stream_caches_a_verified_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("STOCKSCALE_CACHE", str(tmp_path / "cache"))
    cfg = build_train_config({"multiplier": 2, "loader": "stream"})
    first = open_training_data(cfg)
    assert first.dataset is not None and (tmp_path / "cache") in __import__("pathlib").Path(first.dataset).parents
    again = open_training_data(cfg)
    assert again.dataset == first.dataset
