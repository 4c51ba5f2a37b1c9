"""A dataset's manifest is validated whole: shard names, paths inside the folder, contiguous replica ranges
and types; anything else is a DataIntegrityError that names the file (one line, exit 2 at the CLI)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stockscale.config import build_train_config
from stockscale.data.dataset import prepare_from_config
from stockscale.data.replicas import ReplicaSpec
from stockscale.data.shards import read_manifest, source_record, verify_dataset, write_dataset
from stockscale.errors import DataIntegrityError
from tests.conftest import assert_clean_error


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    cfg = build_train_config({"multiplier": 5})
    prepared = prepare_from_config(cfg)
    spec = ReplicaSpec(prepared.train_series, 5, 0.01, 1, replicas_per_shard=2)
    write_dataset(prepared, spec, source_record(cfg, prepared), tmp_path / "ds")
    return tmp_path / "ds"


def edit(directory: Path, change: Callable[[dict[str, Any]], None]) -> None:
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def shard(index: int, **values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda manifest: manifest["shards"][index].update(values)


CASES = {
    "parent path": (shard(1, file="../elsewhere.npy"), "file"),
    "absolute path": (shard(1, file="/etc/passwd"), "file"),
    "other name": (shard(1, file="shard-00002.npy"), "shard-00002.npy"),
    "replicas as text": (shard(0, replicas="one"), "replicas"),
    "missing bytes": (lambda m: m["shards"][0].pop("bytes"), "bytes"),
    "gap in replicas": (shard(1, first_replica=3), "contiguous"),
    "overlap": (shard(2, first_replica=3), "contiguous"),
    "multiplier as text": (lambda m: m.update(multiplier="5"), "multiplier"),
    "no shards": (lambda m: m.update(shards=[]), "shards"),
    "bad hash": (shard(0, sha256="../x"), "sha256"),
}


@pytest.mark.parametrize("case", CASES)
def test_a_manifest_that_does_not_hold_up_is_an_integrity_error_naming_it(dataset: Path, case: str) -> None:
    change, word = CASES[case]
    edit(dataset, change)
    with pytest.raises(DataIntegrityError, match="manifest.json") as caught:
        read_manifest(dataset)
    assert word in str(caught.value)


def test_data_info_reports_a_bad_manifest_in_one_line(cli, dataset: Path) -> None:
    edit(dataset, shard(1, file="../elsewhere.npy"))
    assert_clean_error(cli("data", "info", dataset), "manifest.json", "file")


def test_train_never_reads_a_file_outside_the_dataset(cli, dataset: Path, tmp_path: Path) -> None:
    edit(dataset, shard(0, file="/tmp/../etc/shard-00000.npy"))
    assert_clean_error(cli("train", "--data", dataset, "--epochs", "1", "--max-steps", "1", "--out", tmp_path / "r"),
                       "manifest.json")


def test_a_shard_that_is_a_link_out_of_the_folder_is_refused(dataset: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.npy"
    (dataset / "shard-00001.npy").rename(outside)
    (dataset / "shard-00001.npy").symlink_to(outside)
    with pytest.raises(DataIntegrityError, match="outside the dataset folder"):
        verify_dataset(dataset)


def test_a_valid_manifest_reads_as_written(dataset: Path) -> None:
    manifest = read_manifest(dataset)
    assert [s["first_replica"] for s in manifest["shards"]] == [0, 2, 4]
    assert manifest == json.loads((dataset / "manifest.json").read_text())
