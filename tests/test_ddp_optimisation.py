"""DDP's optimisation stated: the global batch recorded, a setting that keeps it equal to one process's, and
each rank's own dropout stream over a model that starts identical on every rank."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stockscale.config import build_train_config, worker_batch_size
from stockscale.errors import InputError
from stockscale.train import dropout_seed, train
from tests.test_distributed import HELPERS, free_port

TINY = {"epochs": 1, "max_steps": 3, "hidden_size": 8, "num_layers": 1, "threads": 1}


def test_global_scope_splits_the_batch_over_the_workers():
    per_worker = build_train_config({"batch_size": 64})
    shared = build_train_config({"batch_size": 64, "batch_scope": "global"})
    assert [worker_batch_size(per_worker, n) for n in (1, 2, 4)] == [64, 64, 64]
    assert [worker_batch_size(shared, n) for n in (1, 2, 4)] == [64, 32, 16]
    with pytest.raises(InputError, match="cannot be split evenly over 3 workers"):
        worker_batch_size(shared, 3)


def test_each_rank_and_epoch_has_its_own_dropout_seed():
    seeds = {dropout_seed(42, rank, epoch) for rank in range(4) for epoch in range(1, 4)}
    assert len(seeds) == 12
    assert dropout_seed(42, 1, 1) != dropout_seed(43, 0, 1)  # not seed + rank: those collide


def test_a_single_process_records_its_batch_as_the_global_one(tmp_path):
    metrics = train(build_train_config({**TINY, "batch_size": 32}), tmp_path / "run")
    assert (metrics["batch_per_worker"], metrics["global_batch"], metrics["batch_scope"]) == (32, 32, "per_worker")


def _run_two_ranks(script: Path, *args: str, cwd: Path) -> None:
    port = free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
               "RANK": str(rank), "PYTHONPATH": str(Path(__file__).parents[1]),
               "STOCKSCALE_CACHE": str(cwd / "cache")}
        procs.append(subprocess.Popen([sys.executable, str(script), *args], env=env, cwd=cwd,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err


@pytest.mark.slow
def test_two_real_ranks_draw_different_dropout_masks_from_identical_models(tmp_path):
    _run_two_ranks(HELPERS / "ddp_dropout.py", str(tmp_path), cwd=tmp_path)
    masks, params = np.load(tmp_path / "masks.npy"), np.load(tmp_path / "params.npy")
    np.testing.assert_array_equal(params[0], params[1])  # the same init on both ranks, before any broadcast
    assert 0.3 < (masks[0] == 0).mean() < 0.7 and 0.3 < (masks[1] == 0).mean() < 0.7
    assert (masks[0] != masks[1]).mean() > 0.3  # independent masks disagree on about half the units


@pytest.mark.slow
def test_global_scope_keeps_the_single_process_batch_and_steps(cli_process, tmp_path):
    flags = ["--epochs", "1", "--hidden-size", "8", "--num-layers", "1", "--batch-size", "64"]
    single = cli_process("train", *flags, "--out", tmp_path / "one")
    assert single.code == 0, single.err
    ran = cli_process("train", "--workers", "2", "--batch-scope", "global", *flags, "--out", tmp_path / "two")
    assert ran.code == 0, ran.err
    one, two = single.last_json, ran.last_json
    assert (two["world_size"], two["batch_per_worker"], two["global_batch"]) == (2, 32, 64)
    assert two["global_batch"] == one["global_batch"] == 64
    assert two["steps"] == one["steps"]  # one epoch: the same number of optimizer steps as one process
    default = cli_process("train", "--workers", "2", *flags, "--max-steps", "2", "--out", tmp_path / "grown")
    assert default.code == 0, default.err
    assert default.last_json["global_batch"] == 128  # per_worker: the global batch grows with the workers
