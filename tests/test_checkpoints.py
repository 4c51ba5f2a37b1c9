"""`train --checkpoint-dir`: a run killed after an epoch resumes where it stopped and ends exactly where an
uninterrupted run ends (CPU, same seed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, assert_clean_error

RUN = ["--epochs", "3", "--multiplier", "6", "--hidden-size", "16", "--num-layers", "2", "--threads", "1",
       "--seed", "7", "--device", "cpu", "--loader", "memory"]


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "stockscale", "train", *RUN, *args]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "model.pt", weights_only=True)


@pytest.mark.slow
def test_a_run_killed_after_an_epoch_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    # This tree's code in the subprocesses, not whichever copy is installed.
    path = os.pathsep.join([str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "STOCKSCALE_CACHE": str(tmp_path / "cache"), "PYTHONPATH": path}
    checkpoints = tmp_path / "ck"
    first = subprocess.Popen(command("--checkpoint-dir", str(checkpoints), "--out", str(tmp_path / "resumed")),
                             env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (checkpoints / "checkpoint.pt").exists():
        assert first.poll() is None and time.monotonic() < deadline, "no checkpoint after epoch 1"
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = torch.load(checkpoints / "checkpoint.pt", weights_only=True)["epoch"]
    assert 1 <= killed_at < 3, "the run must be killed before its last epoch"
    assert not (tmp_path / "resumed").exists()

    again = subprocess.run(command("--checkpoint-dir", str(checkpoints), "--out", str(tmp_path / "resumed")),
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stdout + again.stderr
    whole = subprocess.run(command("--out", str(tmp_path / "whole")), env=env, cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr

    resumed, reference = weights(tmp_path / "resumed"), weights(tmp_path / "whole")
    assert resumed.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(resumed[name], reference[name], atol=1e-6, rtol=0)
    a = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    b = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert a["steps"] == b["steps"] and a["epochs_completed"] == b["epochs_completed"] == 3
    for split in ("val", "test"):
        for key in ("loss", "rmse", "mae", "mape"):
            assert a[split][key] == pytest.approx(b[split][key], abs=1e-6), (split, key)
    for x, y in zip(a["history"], b["history"], strict=True):
        assert x["train_loss"] == pytest.approx(y["train_loss"], abs=1e-6)
        assert x["val_loss"] == pytest.approx(y["val_loss"], abs=1e-6)


def test_a_checkpoint_of_other_settings_is_refused(cli, tmp_path: Path) -> None:
    tiny = ["--epochs", "1", "--max-steps", "2", "--hidden-size", "8", "--num-layers", "1", "--threads", "1"]
    assert cli("train", *tiny, "--checkpoint-dir", tmp_path / "ck", "--out", tmp_path / "a").code == 0
    assert (tmp_path / "ck" / "checkpoint.pt").is_file()
    ran = cli("train", *tiny[:-4], "--hidden-size", "4", "--num-layers", "1", "--threads", "1",
              "--checkpoint-dir", tmp_path / "ck", "--out", tmp_path / "b")
    assert_clean_error(ran, "checkpoint", "other settings")
    assert not (tmp_path / "b").exists()


def test_a_checkpoint_dir_that_is_a_file_is_refused(cli, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    ran = cli("train", "--epochs", "1", "--checkpoint-dir", tmp_path / "f", "--out", tmp_path / "r")
    assert_clean_error(ran, "--checkpoint-dir", "is a file")


def test_checkpoint_dir_is_a_config_key_too(cli, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"checkpoint_dir: {tmp_path / 'ck'}\nepochs: 1\nmax_steps: 2\nhidden_size: 8\nnum_layers: 1\n")
    assert cli("train", "--config", config, "--threads", "1", "--out", tmp_path / "r").code == 0
    assert torch.load(tmp_path / "ck" / "checkpoint.pt", weights_only=True)["epoch"] == 1
