"""A full disk is one line naming the path and "no space left on device", exit 2, and nothing half-written
(issue 27), on a real small tmpfs: mounted inside a user and mount namespace (`unshare -rm`), so no root is
needed and nothing outlives the test. Where namespaces are not allowed the tests skip and say why."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY

pytestmark = pytest.mark.slow  # each starts a namespace and a stockscale process (several seconds)

# Run inside the namespace: fill the tmpfs to `free` bytes left, run the command, report what is left there.
_RUNNER = r"""
import json, os, subprocess, sys
disk, free, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
with open(os.path.join(disk, "filler"), "wb", buffering=0) as filler:
    try:
        while True:
            filler.write(b"\0" * 4096)
    except OSError:
        pass
    os.ftruncate(filler.fileno(), max(0, filler.tell() - free))
done = subprocess.run([sys.executable, "-m", "stockscale", *args], capture_output=True, text=True)
left = sorted(os.path.relpath(os.path.join(root, name), disk) for root, dirs, files in os.walk(disk)
              for name in files)  # files: an empty folder made on the way holds nothing half-written
print(json.dumps({"code": done.returncode, "err": done.stderr, "left": left}))
"""


def _namespaces_work(tmp_path: Path) -> str | None:
    if shutil.which("unshare") is None:
        return "no unshare(1) here"
    probe = tmp_path / "probe"
    probe.mkdir()
    done = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {probe}"],
                          capture_output=True, text=True)
    probe.rmdir()
    return None if done.returncode == 0 else f"unshare -rm with a tmpfs mount fails here: {done.stderr.strip()}"


def _on_full_disk(tmp_path: Path, free: int, *args: object) -> dict:
    reason = _namespaces_work(tmp_path)
    if reason is not None:
        print(f"SKIPPED disk-full test: {reason}")
        pytest.skip(reason)
    disk = tmp_path / "disk"
    disk.mkdir()
    script = tmp_path / "runner.py"
    script.write_text(_RUNNER)
    command = 'mount -t tmpfs -o size=4m tmpfs "$1" && shift && exec "$@"'
    done = subprocess.run(["unshare", "-rm", "sh", "-c", command, "sh", str(disk), sys.executable, str(script),
                           str(disk), str(free), *map(str, args)], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _assert_disk_full(outcome: dict, path: str) -> None:
    lines = outcome["err"].strip().splitlines()
    assert outcome["code"] == 2, outcome
    assert len(lines) == 1 and "Traceback" not in outcome["err"], outcome["err"]
    assert "no space left on device" in lines[0] and path in lines[0], lines[0]
    assert outcome["left"] == ["filler"], outcome["left"]  # nothing half-written


def test_train_on_a_full_disk_is_one_line(tmp_path):
    outcome = _on_full_disk(tmp_path, 0, "train", *TINY, "--out", tmp_path / "disk" / "run")
    _assert_disk_full(outcome, str(tmp_path / "disk" / "run"))


def test_train_whose_model_does_not_fit_is_one_line_not_torchs_enforce_fail(tmp_path):
    # Room for the small files of a run directory, not for a 256-wide model: torch.save is what fails.
    outcome = _on_full_disk(tmp_path, 200_000, "train", "--epochs", "1", "--max-steps", "1", "--hidden-size",
                            "256", "--num-layers", "1", "--threads", "1", "--out", tmp_path / "disk" / "run")
    assert "inline_container" not in outcome["err"]
    _assert_disk_full(outcome, str(tmp_path / "disk" / "run"))


def test_a_checkpoint_on_a_full_disk_is_one_line(tmp_path):
    outcome = _on_full_disk(tmp_path, 0, "train", *TINY, "--checkpoint-dir", tmp_path / "disk" / "ck",
                            "--out", tmp_path / "run")
    _assert_disk_full(outcome, str(tmp_path / "disk" / "ck"))


def test_data_scale_on_a_full_disk_is_one_line(tmp_path):
    outcome = _on_full_disk(tmp_path, 100_000, "data", "scale", "--multiplier", "50", "--out",
                            tmp_path / "disk" / "d")
    _assert_disk_full(outcome, str(tmp_path / "disk" / "d"))


def test_search_on_a_full_disk_is_one_line(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("hidden_size: [4]\n")
    outcome = _on_full_disk(tmp_path, 0, "search", "--space", space, *TINY, "--out", tmp_path / "disk" / "s")
    assert outcome["code"] == 2 and "no space left on device" in outcome["err"], outcome
    assert "Traceback" not in outcome["err"] and len(outcome["err"].strip().splitlines()) == 1


def test_the_report_on_a_full_disk_is_one_line(tmp_path):
    (tmp_path / "results").mkdir()
    outcome = _on_full_disk(tmp_path, 0, "compare", "--results", tmp_path / "results", "--out",
                            tmp_path / "disk" / "report")
    assert outcome["code"] == 2 and "no space left on device" in outcome["err"], outcome
    assert "Traceback" not in outcome["err"] and len(outcome["err"].strip().splitlines()) == 1
