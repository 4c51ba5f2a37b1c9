"""Several tickers on disk: shards that hold whole tickers, a manifest that names them, the three loaders over
them giving the same batches, and each rank holding (and opening) only its own tickers."""

import json
import subprocess
import sys

import numpy as np
import pytest

from stockscale.config import TrainConfig
from stockscale.data.dataset import open_training_data, prepare_from_config, prepare_from_manifest
from stockscale.data.loaders import ReplicaSource, TrainLoader
from stockscale.data.shards import read_manifest
from stockscale.data.sources import PriceSeries
from stockscale.data.synthetic import synthetic_prices, write_synthetic_csv
from stockscale.data.ticker_shards import pooled_specs, rank_tickers, write_pooled_dataset
from stockscale.data.windows import UNIT_STATS, prepare_pooled
from stockscale.errors import DataIntegrityError, InputError


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    """Four tickers of different lengths (so different shard shapes), two replicas a shard, three replicas."""
    dates, _, values = synthetic_prices(4, 500, seed=3)
    panel = [PriceSeries("s", dates[skip:], values[t, skip:], f"T{t}") for t, skip in enumerate((0, 150, 40, 0))]
    pooled = prepare_pooled("s", panel, 0.7, 0.15)
    specs = pooled_specs(pooled, 3, 0.01, 7, replicas_per_shard=2)
    out = tmp_path_factory.mktemp("ds") / "uneven"
    write_pooled_dataset(pooled, specs, {"spec": "s"}, out)
    return pooled, specs, out


def _loader(kind, uneven, rank=0, world=1, on_disk=True, batch_size=48):
    pooled, specs, out = uneven
    source = ReplicaSource.on_disk(out, read_manifest(out)) if on_disk else ReplicaSource.generated_pooled(specs)
    return TrainLoader(kind, source, pooled.stats, rank, world, batch_size, seed=11)


def test_each_shard_holds_one_tickers_replicas_and_the_manifest_names_it(uneven):
    pooled, specs, out = uneven
    manifest = json.loads((out / "manifest.json").read_text())
    assert [t["ticker"] for t in manifest["tickers"]] == ["T0", "T1", "T2", "T3"]
    assert [(t["first_shard"], t["shards"]) for t in manifest["tickers"]] == [(0, 2), (2, 2), (4, 2), (6, 2)]
    assert [s["ticker"] for s in manifest["shards"]] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [s["replicas"] for s in manifest["shards"]] == [2, 1] * 4
    for record, part, spec in zip(manifest["tickers"], pooled.parts, specs, strict=True):
        assert record["stats"] == part.stats.to_dict() and record["train_days"] == part.train_end
        shard = np.load(out / manifest["shards"][record["first_shard"]]["file"], allow_pickle=False)
        assert shard.shape == (2, part.train_end, 5) and np.array_equal(shard[0], spec.base)  # replica 0: original
    assert manifest["train_windows"] == 3 * sum(part.train_windows for part in pooled.parts)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_all_loaders_over_several_tickers_yield_identical_batches_in_the_same_order(uneven, world):
    for rank in range(world):
        reference = list(_loader("memory", uneven, rank, world, on_disk=False).epoch(2))
        for kind, on_disk in (("memory", True), ("lazy", True), ("lazy", False), ("stream", True)):
            got = list(_loader(kind, uneven, rank, world, on_disk=on_disk).epoch(2))
            assert len(got) == len(reference), (kind, on_disk)
            for (x, y), (rx, ry) in zip(got, reference, strict=True):
                assert np.array_equal(x, rx) and np.array_equal(y, ry), (kind, on_disk, rank)


def test_ranks_hold_whole_tickers_disjoint_and_covering_with_the_same_steps(uneven):
    pooled, _, out = uneven
    manifest = read_manifest(out)
    loaders = [_loader("stream", uneven, rank, 3) for rank in range(3)]
    spans = [loader.ticker_span for loader in loaders]
    held = [set(range(lo, hi + 1)) for lo, hi in spans]
    assert set().union(*held) == set(range(4)) and sum(map(len, held)) == 4  # disjoint, covering
    assert len({loader.steps_per_epoch for loader in loaders}) == 1
    smallest = min(loader.windows for loader in loaders)
    assert loaders[0].steps_per_epoch == -(-smallest // 48)
    for loader, tickers in zip(loaders, held, strict=True):
        own = {s["file"] for s in manifest["shards"] if s["ticker"] in tickers}
        assert set(loader.shards_opened) == own  # only its own tickers' shards were verified and mapped
        seen = np.concatenate([y for _, y in loader.epoch(0)])
        assert len(seen) == min(loader.windows, loader.steps_per_epoch * 48)


def test_the_rank_rule_cuts_at_the_ticker_boundary_nearest_an_even_share():
    assert rank_tickers([10, 10, 10, 10], 2) == [(0, 2), (2, 4)]
    assert rank_tickers([100, 1, 1, 1], 2) == [(0, 1), (1, 4)]
    assert rank_tickers([1, 1, 1, 100], 3) == [(0, 2), (2, 3), (3, 4)]  # every rank at least one ticker
    assert rank_tickers([5, 9, 2, 7, 7], 1) == [(0, 5)]
    with pytest.raises(InputError, match="3 ticker\\(s\\) cannot be shared by 4 workers"):
        rank_tickers([1, 1, 1], 4)


@pytest.mark.parametrize("damage, words", [("truncated", "shard-00007.npy is truncated"),
                                           ("altered", "shard-00007.npy is altered"),
                                           ("missing", "shard-00007.npy is missing")])
def test_a_damaged_tickers_shard_is_named_and_only_the_rank_holding_it_fails(uneven, tmp_path, damage, words):
    _, _, out = uneven
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in out.iterdir():
        if path.name != ".verified.json":
            (copy / path.name).write_bytes(path.read_bytes())
    shard = copy / "shard-00007.npy"  # the last ticker's second shard
    data = shard.read_bytes()
    if damage == "truncated":
        shard.write_bytes(data[:-100])
    elif damage == "altered":
        shard.write_bytes(data[:-100] + bytes(100))
    else:
        shard.unlink()
    source = ReplicaSource.on_disk(copy, read_manifest(copy))
    with pytest.raises(DataIntegrityError, match=words):
        TrainLoader("stream", source, UNIT_STATS, 1, 2, 32, 0)
    assert TrainLoader("stream", source, UNIT_STATS, 0, 2, 32, 0).windows > 0  # rank 0 never opens it


def test_data_scale_writes_a_pooled_dataset_that_trains_from_its_manifest_alone(cli, tmp_path):
    csv = write_synthetic_csv(tmp_path / "syn.csv", tickers=3, days=420)
    out = tmp_path / "ds"
    ran = cli("data", "scale", "--source", f"csv:{csv}", "--tickers", "SYN0003,SYN0001", "--multiplier", "2",
              "--out", out)
    assert ran.code == 0, ran.err
    assert "tickers        2 SYNTHETIC, each shard one ticker's replicas: SYN0003 (shard 0" in ran.err + ran.out
    manifest = read_manifest(out)
    assert [t["ticker"] for t in manifest["tickers"]] == ["SYN0003", "SYN0001"]
    assert manifest["source"]["tickers"] == "SYN0003,SYN0001"
    rebuilt = prepare_from_manifest(manifest, out)
    direct = prepare_from_config(TrainConfig(source=f"csv:{csv}", tickers="SYN0003,SYN0001"))
    assert rebuilt.tickers == direct.tickers and rebuilt.synthetic
    from_disk = open_training_data(TrainConfig(data=out, loader="lazy", batch_size=32))
    in_ram = open_training_data(TrainConfig(source=f"csv:{csv}", tickers="SYN0003,SYN0001", multiplier=2,
                                            loader="lazy", batch_size=32))
    for (x, y), (rx, ry) in zip(from_disk.loader.epoch(0), in_ram.loader.epoch(0), strict=True):
        assert np.array_equal(x, rx) and np.array_equal(y, ry)
    again = cli("data", "scale", "--source", f"csv:{csv}", "--tickers", "SYN0003,SYN0001", "--multiplier", "2",
                "--out", out)
    assert again.code == 0  # the same dataset: nothing written
    other = cli("data", "scale", "--source", f"csv:{csv}", "--multiplier", "2", "--out", out)
    assert other.code == 2 and "not this dataset" in other.err


def test_a_pooled_manifest_whose_ticker_stats_were_altered_is_refused(cli, tmp_path):
    csv = write_synthetic_csv(tmp_path / "syn.csv", tickers=2, days=420)
    out = tmp_path / "ds"
    assert cli("data", "scale", "--source", f"csv:{csv}", "--multiplier", "1", "--out", out).code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["tickers"][1]["stats"]["price_mean"] += 0.5
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataIntegrityError, match="ticker SYN0002's training days or normalization statistics"):
        open_training_data(TrainConfig(data=out))
    manifest["tickers"][1]["first_shard"] = 0
    (out / "manifest.json").write_text(json.dumps(manifest))
    ran = cli("data", "info", out)
    assert ran.code == 2 and "starts at shard 0, not 1" in ran.err and "\n" not in ran.err.strip()


def test_one_ticker_datasets_keep_their_manifest_without_tickers(cli, tmp_path):
    assert cli("data", "scale", "--multiplier", "2", "--out", tmp_path / "one").code == 0
    manifest = json.loads((tmp_path / "one" / "manifest.json").read_text())
    assert "tickers" not in manifest and "tickers" not in manifest["source"]
    assert all(set(shard) == {"file", "first_replica", "replicas", "windows", "bytes", "sha256"}
               for shard in manifest["shards"])


@pytest.mark.slow
def test_two_ddp_workers_hold_disjoint_tickers_and_open_only_their_own_shards(cli, tmp_path):
    csv = write_synthetic_csv(tmp_path / "syn.csv", tickers=5, days=420)
    out = tmp_path / "ds"
    assert cli("data", "scale", "--source", f"csv:{csv}", "--multiplier", "2", "--out", out).code == 0
    done = subprocess.run([sys.executable, "-m", "stockscale", "train", "--data", str(out), "--workers", "2",
                           "--loader", "stream", "--epochs", "1", "--max-steps", "3", "--hidden-size", "4",
                           "--num-layers", "1", "--batch-size", "16", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    manifest = read_manifest(out)
    workers = sorted(metrics["workers"], key=lambda w: w["rank"])
    held = [set(range(w["tickers"][0], w["tickers"][1] + 1)) for w in workers]
    assert held[0].isdisjoint(held[1]) and held[0] | held[1] == set(range(5))
    for worker, tickers in zip(workers, held, strict=True):
        own = sorted(int(s["file"][6:11]) for s in manifest["shards"] if s["ticker"] in tickers)
        assert worker["shards"] == [own[0], own[-1], len(own)]  # first, last and how many it opened
        assert worker["windows"] == 2 * sum(manifest["tickers"][t]["windows_per_replica"] for t in tickers)
    assert metrics["train_samples"] == manifest["train_windows"] and metrics["data"]["synthetic"] is True
