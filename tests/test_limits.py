"""Memory limits on real child processes: the kernel's OOM kill through a cgroup, the RSS watchdog, peaks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stockscale.errors import InputError
from stockscale.limits import (
    MECHANISM_ENV,
    MIN_WORKER_MEMORY,
    MemoryLimiter,
    check_limit,
    describe_mechanism,
    detect_mechanism,
    parse_memory_limit,
)
from tests.conftest import our_cgroups

MiB = 1024**2

# Allocates (and writes) 8 MiB at a time up to `cap` MiB, then holds it: only a limit ends it early.
ALLOCATE = """
import sys, time
held = []
for _ in range(int(sys.argv[1]) // 8):
    held.append(b"x" * (8 * 1024 * 1024))
    time.sleep(0.002)
time.sleep(float(sys.argv[2]))
"""


def allocate(limiter: MemoryLimiter, cap_mib: int, hold_seconds: float = 30.0) -> subprocess.Popen[bytes]:
    """Start the allocating child the way the launcher does: through the limiter's command, then attach."""
    argv = limiter.command([sys.executable, "-c", ALLOCATE, str(cap_mib), str(hold_seconds)])
    child = subprocess.Popen(argv, start_new_session=True)
    limiter.attach(child.pid)
    return child



@pytest.fixture
def cgroup_mechanism(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv(MECHANISM_ENV, raising=False)
    mechanism = detect_mechanism()
    if not mechanism.startswith("cgroup"):
        pytest.skip("no writable memory cgroup on this machine")
    return mechanism


def test_limits_are_parsed_and_a_limit_no_worker_could_start_under_is_refused() -> None:
    assert parse_memory_limit("1GiB") == 1024**3
    assert parse_memory_limit("512Mi") == 512 * MiB
    assert parse_memory_limit(None) is None
    assert check_limit(MIN_WORKER_MEMORY) == MIN_WORKER_MEMORY
    with pytest.raises(InputError, match=r"below the minimum of 64\.0 MiB"):
        parse_memory_limit("10MiB")
    with pytest.raises(InputError, match=r"below the minimum of 64\.0 MiB"):
        check_limit(MIN_WORKER_MEMORY - 1)
    with pytest.raises(InputError, match="memory limit"):
        parse_memory_limit("lots")
    with pytest.raises(InputError, match="below the minimum"):
        MemoryLimiter(512 * 1024)


def test_the_mechanism_can_be_forced_and_a_bad_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MECHANISM_ENV, "watchdog")
    assert detect_mechanism() == "watchdog"
    assert describe_mechanism().startswith("watchdog: RSS watchdog")
    monkeypatch.setenv(MECHANISM_ENV, "ulimit")
    with pytest.raises(InputError, match=MECHANISM_ENV):
        detect_mechanism()


def test_a_cgroup_oom_kills_the_child_at_its_limit_and_is_removed_afterwards(cgroup_mechanism: str) -> None:
    limiter = MemoryLimiter(128 * MiB)
    child = allocate(limiter, 1024)
    returncode = child.wait(timeout=20)
    report = limiter.finish(returncode)

    assert returncode == -9
    assert report.mechanism == cgroup_mechanism
    assert report.oom_killed and report.limit_hit and not report.watchdog_killed
    assert report.describe() == "cgroup OOM kill"
    assert report.cgroup_peak_bytes is not None and 96 * MiB <= report.cgroup_peak_bytes <= 128 * MiB
    assert report.cgroup_path is not None and not Path(report.cgroup_path).exists()
    assert report.cleanup_error is None
    assert our_cgroups() == []


def test_a_child_under_its_cgroup_limit_is_left_alone(cgroup_mechanism: str) -> None:
    limiter = MemoryLimiter(256 * MiB)
    child = allocate(limiter, 64, hold_seconds=0.3)
    returncode = child.wait(timeout=20)
    report = limiter.finish(returncode)
    assert returncode == 0
    assert not report.limit_hit
    assert report.cgroup_peak_bytes is not None and 64 * MiB <= report.cgroup_peak_bytes < 256 * MiB
    assert our_cgroups() == []


def test_a_parent_that_is_not_a_cgroup_falls_back_to_the_watchdog(tmp_path: Path) -> None:
    limiter = MemoryLimiter(128 * MiB, mechanism="cgroup-v1", parent=tmp_path)
    limiter.prepare()
    assert limiter.mechanism == "watchdog"
    assert "not a memory cgroup" in (limiter.fallback_reason or "")
    assert list(tmp_path.iterdir()) == []  # the directory it tried was removed again

    child = allocate(limiter, 1024)
    returncode = child.wait(timeout=20)
    report = limiter.finish(returncode)
    assert returncode == -9
    assert report.mechanism == "watchdog" and report.watchdog_killed and not report.oom_killed
    assert report.watchdog_rss_bytes is not None and report.watchdog_rss_bytes > 128 * MiB
    assert report.describe().startswith("watchdog: RSS ")
    assert report.describe().endswith(" over limit 128.0 MiB")


def test_a_parent_that_cannot_be_written_falls_back_to_the_watchdog(tmp_path: Path) -> None:
    limiter = MemoryLimiter(128 * MiB, mechanism="cgroup-v2", parent=tmp_path / "missing")
    limiter.prepare()
    assert limiter.mechanism == "watchdog"
    assert "cannot create" in (limiter.fallback_reason or "")


def test_without_a_limit_the_peak_is_still_measured_by_polling() -> None:
    limiter = MemoryLimiter(None)
    child = allocate(limiter, 96, hold_seconds=0.4)
    returncode = child.wait(timeout=20)
    report = limiter.finish(returncode)
    assert returncode == 0
    assert report.mechanism is None and not report.limit_hit
    assert 96 * MiB <= report.polled_peak_rss_bytes < 512 * MiB
    assert report.peak_bytes == report.polled_peak_rss_bytes
