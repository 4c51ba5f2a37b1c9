"""Scaled datasets: deterministic, independent per shard, verified, and never half-written."""

import json

import numpy as np
import pytest

from stockscale.config import build_train_config
from stockscale.data.dataset import prepare_from_config
from stockscale.data.replicas import ReplicaSpec
from stockscale.data.shards import read_manifest, verify_dataset, write_dataset
from stockscale.errors import DataIntegrityError, InputError
from tests.conftest import assert_clean_error


@pytest.fixture(scope="module")
def prepared():
    return prepare_from_config(build_train_config({}))


def small_spec(prepared, multiplier=5, per_shard=2, seed=1):
    return ReplicaSpec(prepared.train_series, multiplier, 0.01, seed, replicas_per_shard=per_shard)


def test_manifest_describes_the_dataset(cli, tmp_path):
    ran = cli("data", "scale", "--multiplier", "3", "--out", tmp_path / "ds")
    assert ran.code == 0, ran.err
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["multiplier"] == 3
    assert manifest["source"]["spec"] == "bundled:AAPL" and manifest["source"]["start"].startswith("2008-03")
    assert manifest["seq_len"] == 60 and manifest["features"] == ["open", "high", "low", "close", "volume"]
    assert manifest["train_windows"] == 3 * manifest["windows_per_replica"]
    assert set(manifest["stats"]) == {"price_mean", "price_std", "volume_mean", "volume_std", "return_std"}
    shard = manifest["shards"][0]
    assert set(shard) >= {"file", "replicas", "windows", "sha256", "bytes"}
    assert np.load(tmp_path / "ds" / shard["file"], allow_pickle=False).dtype == np.float32
    info = cli("data", "info", tmp_path / "ds")
    assert info.code == 0
    assert "train windows" in info.out and "materialized" in info.out and "on disk" in info.out


def test_same_command_gives_byte_identical_shards(prepared, tmp_path):
    a = write_dataset(prepared, small_spec(prepared), {"spec": "x"}, tmp_path / "a")
    b = write_dataset(prepared, small_spec(prepared), {"spec": "x"}, tmp_path / "b")
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    other = write_dataset(prepared, small_spec(prepared, seed=2), {"spec": "x"}, tmp_path / "c")
    assert a["shards"][1]["sha256"] != other["shards"][1]["sha256"]


def test_any_shard_can_be_produced_alone(prepared, tmp_path):
    spec = small_spec(prepared)
    write_dataset(prepared, spec, {"spec": "x"}, tmp_path / "ds")
    last = spec.shards()[-1]
    alone = ReplicaSpec(prepared.train_series, 5, 0.01, 1, replicas_per_shard=2).generate(last)
    np.testing.assert_array_equal(alone, np.load(tmp_path / "ds" / last.file))


def test_replica_zero_is_the_original_and_noise_has_the_asked_sigma(prepared):
    spec = ReplicaSpec(prepared.train_series, 40, 0.01, 3, replicas_per_shard=40)
    replicas = spec.generate(spec.shards()[0])
    np.testing.assert_array_equal(replicas[0], prepared.train_series)
    offsets = replicas[1:] - prepared.train_series  # noise in return units: each day's step has the sigma
    assert abs(np.diff(offsets[..., 3], axis=1).std() - 0.01) < 0.0005


def test_an_interrupted_write_leaves_nothing(prepared, tmp_path, monkeypatch):
    spec = small_spec(prepared)

    def interrupt(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_dataset(prepared, spec, {"spec": "x"}, tmp_path / "ds", on_shard=interrupt)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["missing", "truncated", "altered"])
def test_damaged_shards_are_named(prepared, tmp_path, damage):
    write_dataset(prepared, small_spec(prepared), {"spec": "x"}, tmp_path / "ds")
    shard = tmp_path / "ds" / "shard-00001.npy"
    if damage == "missing":
        shard.unlink()
    elif damage == "truncated":
        shard.write_bytes(shard.read_bytes()[:-100])
    else:
        data = bytearray(shard.read_bytes())
        data[-1] ^= 0xFF
        shard.write_bytes(bytes(data))
    with pytest.raises(DataIntegrityError, match="shard-00001.npy"):
        verify_dataset(tmp_path / "ds")


def test_manifest_that_does_not_match_its_shards(prepared, tmp_path):
    write_dataset(prepared, small_spec(prepared), {"spec": "x"}, tmp_path / "ds")
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    manifest["multiplier"] = 7
    (tmp_path / "ds" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataIntegrityError, match="manifest.json"):
        read_manifest(tmp_path / "ds")


def test_checksums_are_verified_once_and_cached(prepared, tmp_path):
    write_dataset(prepared, small_spec(prepared), {"spec": "x"}, tmp_path / "ds")
    verify_dataset(tmp_path / "ds")
    cache = json.loads((tmp_path / "ds" / ".verified.json").read_text())
    assert set(cache) == {"shard-00000.npy", "shard-00001.npy", "shard-00002.npy"}


def test_rewriting_the_same_dataset_is_a_no_op_and_another_is_refused(cli, tmp_path):
    assert cli("data", "scale", "--multiplier", "2", "--out", tmp_path / "ds").code == 0
    assert cli("data", "scale", "--multiplier", "2", "--out", tmp_path / "ds").code == 0
    assert_clean_error(cli("data", "scale", "--multiplier", "3", "--out", tmp_path / "ds"), "not this dataset")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert_clean_error(cli("data", "scale", "--multiplier", "2", "--out", tmp_path / "other"), "not this dataset")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--multiplier", "0"], ["--multiplier", "at least 1"]),
        (["--multiplier", "-4"], ["--multiplier"]),
        (["--multiplier", "2.5"], ["--multiplier", "not an integer"]),
        (["--multiplier", "ten"], ["--multiplier", "not a number"]),
        (["--multiplier", "2", "--noise", "-0.1"], ["--noise", "negative"]),
    ],
)
def test_bad_scale_flags(cli, tmp_path, args, words):
    assert_clean_error(cli("data", "scale", *args, "--out", tmp_path / "ds"), *words)
    assert not (tmp_path / "ds").exists()


def test_unwritable_output_directory(cli, tmp_path):
    (tmp_path / "file").write_text("a file, not a directory")
    ran = cli("data", "scale", "--multiplier", "2", "--out", tmp_path / "file" / "ds")
    assert_clean_error(ran, "not writable")


def test_data_info_on_something_that_is_not_a_dataset(cli, tmp_path):
    assert_clean_error(cli("data", "info", tmp_path), "manifest.json")
    assert_clean_error(cli("data", "info", tmp_path / "nope"), "does not exist")


def test_bad_input_is_input_error_class():
    assert issubclass(DataIntegrityError, InputError)
