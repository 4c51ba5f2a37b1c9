"""A multi-worker run resumes where only rank 0 can read the checkpoint folder (issue 22, item 3).

A PyTorchJob's master mounts the ReadWriteOnce volume that holds the checkpoints; its workers get an
emptyDir at the same path. So after a preemption rank 0 alone reads the checkpoint and every other rank gets
the model, the optimizer, its own RNG states and the loader position from rank 0 (checkpoint.resume). Here
that is a real 2-worker local run through the CLI, killed after epoch 1 and started again.

How "only rank 0 can read it" is made real: the ranks are processes on this machine of one user (root in
CI, where file permissions would not stop anything), so the resumed run's PYTHONPATH starts with a folder
holding a `sitecustomize.py` (written by the test, imported by every Python process at start-up). In a
process whose RANK is set and is not 0 (the environment the launcher gives each worker, a PyTorchJob
replica's), it installs an audit hook (`sys.addaudithook`) that refuses with PermissionError every open,
listing, creation, rename or removal of anything inside the checkpoint folder, and notes each attempt in a
file. The launcher (no RANK) and rank 0 are untouched. The code under test is not changed or mocked; a rank
other than 0 simply cannot read the folder, as a worker pod cannot see the master's volume. The old code,
where every rank loaded its own checkpoint, fails here: rank 1's torch.load is refused and the job ends in an
error (without the hook it would resume rank 1 at epoch 1 and hang in a collective).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from stockscale import checkpoint, wire
from stockscale.model import LSTMRegressor
from stockscale.optim import Adam
from tests.conftest import REPO

RUN = ["--workers", "2", "--epochs", "3", "--multiplier", "10", "--hidden-size", "8", "--num-layers", "1",
       "--threads", "1", "--seed", "11", "--device", "cpu", "--loader", "memory"]

RANK_VIEW = '''
"""Only in a rank other than 0: the checkpoint folder cannot be read, listed or written (test_multi_rank_resume)."""
import os
import sys

_hidden = os.environ.get("STOCKSCALE_TEST_HIDDEN_DIR")
if _hidden and os.environ.get("RANK", "0") != "0":
    _root = os.path.realpath(_hidden)
    _log = os.environ["STOCKSCALE_TEST_HIDDEN_LOG"]
    _events = {"open", "os.listdir", "os.scandir", "os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir",
               "os.chmod", "os.utime", "os.truncate", "os.chdir", "os.link", "os.symlink", "shutil.rmtree"}

    def _inside(path):
        if path is None or isinstance(path, int):
            return False
        try:
            full = os.path.realpath(os.fsdecode(os.fspath(path)))
        except (TypeError, ValueError):
            return False
        return full == _root or full.startswith(_root + os.sep)

    def _refuse(event, args):
        if event in _events and args and _inside(args[0]):
            with open(_log, "a") as log:
                log.write(f"rank {os.environ['RANK']}: {event} {args[0]}\\n")
            raise PermissionError(13, "Permission denied (only rank 0 sees the checkpoint folder)", str(args[0]))

    sys.addaudithook(_refuse)
'''


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This tree's code (not an installed copy) in every process, the test's own cache, no inherited rank."""
    env = {key: value for key, value in os.environ.items() if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    path = [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**env, "PYTHONPATH": os.pathsep.join(path), "STOCKSCALE_CACHE": str(tmp_path / "cache"),
            "STOCKSCALE_DIST_TIMEOUT": "60", **extra}


def command(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "stockscale", "train", *RUN, *map(str, args)]


def kill_after_epoch_one(tmp_path: Path, checkpoints: Path, out: Path) -> int:
    """Start the 2-worker run, and once the checkpoint of epoch 1 is there kill the launcher's process group
    and every worker (SIGKILL: a preemption, nothing runs to the end); the epoch the checkpoint holds."""
    first = subprocess.Popen(command("--checkpoint-dir", checkpoints, "--out", out), env=environment(tmp_path),
                             cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    workers: set[psutil.Process] = set()
    deadline = time.monotonic() + 180
    try:
        while not (checkpoints / checkpoint.FILE).exists():
            assert first.poll() is None and time.monotonic() < deadline, "no checkpoint after epoch 1"
            workers.update(psutil.Process(first.pid).children(recursive=True))
            time.sleep(0.005)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        for worker in workers:  # each worker is in its own session
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()
        first.wait()
        psutil.wait_procs(list(workers), timeout=30)
    assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    return int(torch.load(checkpoints / checkpoint.FILE, weights_only=True)["epoch"])


@pytest.mark.slow
def test_a_two_worker_run_resumes_where_only_rank_0_sees_the_checkpoints(tmp_path: Path) -> None:
    checkpoints, resumed_dir, whole_dir = tmp_path / "ck", tmp_path / "resumed", tmp_path / "whole"
    killed_at = kill_after_epoch_one(tmp_path, checkpoints, resumed_dir)
    assert 1 <= killed_at < 3, "the run must be killed before its last epoch"
    assert not resumed_dir.exists()
    saved = torch.load(checkpoints / checkpoint.FILE, weights_only=True)
    assert len(saved["workers"]) == 1  # rank 1's own RNG states and counters, handed to rank 0

    view, denied = tmp_path / "rank-view", tmp_path / "denied.log"
    view.mkdir()
    (view / "sitecustomize.py").write_text(RANK_VIEW)
    env = environment(tmp_path, STOCKSCALE_TEST_HIDDEN_DIR=str(checkpoints), STOCKSCALE_TEST_HIDDEN_LOG=str(denied))
    env["PYTHONPATH"] = os.pathsep.join([str(view), env["PYTHONPATH"]])
    again = subprocess.run(command("--checkpoint-dir", checkpoints, "--out", resumed_dir), env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from {checkpoints}: {killed_at} epoch(s)" in again.stdout + again.stderr
    assert not denied.exists(), denied.read_text()  # rank 1 never even tried the folder

    whole = subprocess.run(command("--out", whole_dir), env=environment(tmp_path), cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr[-3000:]

    resumed, reference = (torch.load(d / "model.pt", weights_only=True) for d in (resumed_dir, whole_dir))
    assert resumed.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(resumed[name], reference[name], atol=1e-6, rtol=0)
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (resumed_dir, whole_dir))
    assert a["world_size"] == b["world_size"] == 2
    assert a["steps"] == b["steps"] and a["epochs_completed"] == b["epochs_completed"] == 3
    for split in ("val", "test"):
        for key in ("loss", "rmse", "mae", "mape"):
            assert a[split][key] == pytest.approx(b[split][key], abs=1e-6), (split, key)
    for x, y in zip(a["history"], b["history"], strict=True):
        assert x["train_loss"] == pytest.approx(y["train_loss"], abs=1e-6)
        assert x["val_loss"] == pytest.approx(y["val_loss"], abs=1e-6)


@pytest.mark.slow
def test_a_checkpoint_rank_0_refuses_ends_every_rank_with_its_message(tmp_path: Path) -> None:
    """Another run's checkpoint is refused by rank 0, and rank 1, which never reads it, ends too instead of
    waiting for a broadcast that never comes."""
    checkpoints = tmp_path / "ck"
    checkpoints.mkdir()
    torch.save({"format_version": checkpoint.FORMAT_VERSION, "identity": "another run"}, checkpoints / checkpoint.FILE)
    started = time.monotonic()
    pair = subprocess.run(command("--checkpoint-dir", checkpoints, "--out", tmp_path / "pair"),
                          env=environment(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert pair.returncode != 0
    assert "other settings or workers" in pair.stderr, pair.stderr[-3000:]
    assert time.monotonic() - started < 50  # well before the 60 s collective timeout
    assert not (tmp_path / "pair").exists()


# ------------------------------------------------------------------ what goes over the wire, without a run


def test_a_model_and_optimizer_state_cross_the_wire_bit_for_bit() -> None:
    torch.manual_seed(0)
    model = LSTMRegressor(5, 8, 1, 0.2)
    optimizer = Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 60, 5)).sum().backward()
    optimizer.step()
    value = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": checkpoint.rng_state(),
             "history": [{"epoch": 1, "val_loss": float("inf"), "note": None}], "flags": (True, 3, "x"),
             7: [torch.zeros(0, 3), torch.tensor(True), torch.arange(5, dtype=torch.int16)[::2]]}
    back = wire.unpack(wire.pack(value))
    assert back.keys() == value.keys()
    assert back["history"] == value["history"] and back["flags"] == value["flags"]
    assert back["optimizer"]["param_groups"] == value["optimizer"]["param_groups"]  # betas stay a tuple
    for name, tensor in value["model"].items():
        assert torch.equal(back["model"][name], tensor) and back["model"][name].dtype == tensor.dtype
    for index, entry in value["optimizer"]["state"].items():
        for key, tensor in entry.items():
            assert torch.equal(back["optimizer"]["state"][index][key], tensor)
    assert [t.tolist() for t in back[7]] == [[], True, [0, 2, 4]]
    assert back[7][0].shape == (0, 3) and back[7][2].dtype == torch.int16


def test_the_wire_refuses_what_only_pickle_could_carry() -> None:
    for value in (object(), {(1, 2): 3}, np.float32(1.0), {1.5: "x"}):
        with pytest.raises(TypeError, match="cannot pack"):
            wire.pack(value)
    blob = wire.pack({"a": torch.ones(3)})
    with pytest.raises(ValueError, match="cut short"):
        wire.unpack(blob[:-1])
    with pytest.raises(ValueError, match="left over"):
        wire.unpack(torch.cat([blob, torch.zeros(1, dtype=torch.uint8)]))


def test_every_random_stream_comes_back() -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    saved = wire.unpack(wire.pack(checkpoint.rng_state()))  # what a rank receives
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9)
    np.random.seed(9)
    random.seed(9)
    checkpoint.set_rng_state(saved)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def test_a_rank_takes_its_own_states_from_the_file_and_an_old_file_leaves_them() -> None:
    torch.manual_seed(0)
    model = LSTMRegressor(5, 8, 1, 0.2)
    optimizer = Adam(model.parameters(), lr=1e-3)
    torch.manual_seed(5)
    rank1 = {"rng": checkpoint.rng_state(), "samples": 11, "train_seconds": 2.5}
    expected = torch.rand(2)  # what rank 1 draws next after its saved state
    torch.manual_seed(6)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "loader": {"next_epoch": 2},
             "steps": 4, "samples": 10, "epochs_completed": 1, "train_seconds": 1.5, "history": [],
             "rng": checkpoint.rng_state(), "workers": [rank1]}
    torch.manual_seed(7)
    done = checkpoint.restore(state, model, optimizer, rank=1)
    assert (done.epoch, done.steps, done.samples, done.train_seconds) == (1, 4, 11, 2.5)
    assert torch.equal(torch.rand(2), expected)
    del state["workers"]
    torch.manual_seed(7)
    mine = torch.rand(2)
    torch.manual_seed(7)
    done = checkpoint.restore(state, model, optimizer, rank=1)
    assert (done.samples, done.train_seconds) == (10, 1.5)  # rank 0's counters
    assert torch.equal(torch.rand(2), mine)  # and its own RNG left as it was
