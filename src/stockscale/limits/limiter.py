"""A memory limit for one child process and its descendants, and its peak memory, measured.

Where a cgroup can be made (cgroups.py) it holds the limit; where none is writable (an unprivileged container,
a read-only /sys/fs/cgroup) an RSS watchdog thread stands in: it polls the child's process tree with psutil
and SIGKILLs the tree when it is over the limit. The watchdog is best effort (a child can overshoot between
two polls), which is why the mechanism that actually held the limit is always recorded next to the result.
Every child, limited or not, has its peak memory recorded by polling (VmHWM where Linux has it, RSS
otherwise), so every run reports a per-worker peak.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from stockscale.config import format_size, parse_size
from stockscale.errors import InputError
from stockscale.limits.cgroups import MECHANISMS, POLL_INTERVAL, Cgroup, CgroupUnusable, detect_mechanism, usable_root
from stockscale.memory import vm_hwm

MiB = 1024**2

# A bare CPython interpreter needs ~10 MiB and a worker that has imported torch ~250-300 MiB. A limit under
# 64 MiB cannot even start the interpreter with its standard library, so it is refused up front as bad
# input (most likely a missing unit: "512K", "1000"). Limits between the floor and what training needs are
# legitimate experiments: the worker starts and is OOM-killed, which is a measured result, not an error.
MIN_WORKER_MEMORY = 64 * MiB

# `sh -c SCRIPT PROCS_FILE PROGRAM ARGS...`: join the cgroup (quietly; attach() retries from outside), exec.
_SHELL = "/bin/sh"
_JOIN_THEN_EXEC = '{ echo $$ > "$0"; } 2>/dev/null; exec "$@"'


def check_limit(limit: int | None) -> int | None:
    """A per-worker limit in bytes, unchanged; InputError when no worker could even start under it."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise InputError(f"memory limit {limit!r} is not a number of bytes")
    if limit < MIN_WORKER_MEMORY:
        raise InputError(
            f"memory limit {format_size(limit)} ({limit} bytes) is below the minimum of "
            f"{format_size(MIN_WORKER_MEMORY)} a worker needs to start"
        )
    return limit


def parse_memory_limit(text: str | int | None) -> int | None:
    """'1GiB', '512Mi', '2G' or bytes -> bytes, checked against MIN_WORKER_MEMORY; None means no limit."""
    if text is None:
        return None
    try:
        size = parse_size(text)
    except ValueError as error:
        raise InputError(f"memory limit: {error}") from None
    return check_limit(size)


# --- the limiter ----------------------------------------------------------------------------------------


@dataclass
class LimitReport:
    """What happened to one child under its limit."""

    mechanism: str | None                 # what held the limit: cgroup-v2 | cgroup-v1 | watchdog | None
    limit_bytes: int | None
    oom_killed: bool = False              # the cgroup's OOM killer fired
    watchdog_killed: bool = False         # the watchdog SIGKILLed the tree
    watchdog_rss_bytes: int | None = None  # the RSS the watchdog saw when it killed
    cgroup_peak_bytes: int | None = None  # memory.peak / memory.max_usage_in_bytes (includes page cache)
    polled_peak_rss_bytes: int = 0        # the tree's peak resident memory, polled
    cgroup_path: str | None = None
    fallback_reason: str | None = None    # why a cgroup could not hold the limit, when it could not
    cleanup_error: str | None = None

    @property
    def limit_hit(self) -> bool:
        return self.oom_killed or self.watchdog_killed

    @property
    def peak_bytes(self) -> int:
        """The cgroup's peak where there was one (what the limit saw), else the polled peak RSS.

        The larger of the two is taken: memory the child touched between fork and joining the cgroup stays
        charged outside it, so for a child that lived a few milliseconds its own peak RSS is the better one.
        """
        if self.cgroup_peak_bytes is None:
            return self.polled_peak_rss_bytes
        return max(self.cgroup_peak_bytes, self.polled_peak_rss_bytes)

    def describe(self) -> str:
        """'cgroup OOM kill' or 'watchdog: RSS 1.2 GiB over limit 1.0 GiB'; '' when the limit was not hit."""
        if self.oom_killed:
            return "cgroup OOM kill"
        if self.watchdog_killed:
            rss = format_size(self.watchdog_rss_bytes or 0)
            return f"watchdog: RSS {rss} over limit {format_size(self.limit_bytes or 0)}"
        return ""


def _tree_hwm(process: psutil.Process) -> int:
    """Peak resident memory of one process: VmHWM where Linux reports it, else current RSS."""
    peak = vm_hwm(process.pid)
    if peak is not None:
        return peak
    try:
        return process.memory_info().rss
    except psutil.Error:
        return 0


class MemoryLimiter:
    """Puts one child process (and its descendants) under a byte limit and measures its peak memory.

    Use: `prepare()` before starting the child (creates the cgroup), start it with `command(argv)`,
    `attach(pid)` right after Popen returns, `finish(returncode)` after the child has exited (reads the
    counters, removes the cgroup). `limit=None` only measures. A cgroup that cannot be created or joined
    falls back to the watchdog; `mechanism` then says "watchdog" and `fallback_reason` why.
    """

    def __init__(
        self,
        limit: int | None,
        *,
        mechanism: str | None = None,
        parent: Path | None = None,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self.limit = check_limit(limit)
        self.requested = None if limit is None else (mechanism or detect_mechanism())
        if self.requested is not None and self.requested not in MECHANISMS:
            raise InputError(f"limit mechanism {self.requested!r} is not one of {', '.join(MECHANISMS)}")
        self.mechanism: str | None = self.requested
        self.fallback_reason: str | None = None
        self._parent = parent
        self._interval = poll_interval
        self._cgroup: Cgroup | None = None
        self._process: psutil.Process | None = None
        self._known: dict[int, psutil.Process] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak = 0
        self._watchdog_killed = False
        self._watchdog_rss: int | None = None
        self._report: LimitReport | None = None

    # lifecycle

    def prepare(self) -> None:
        """Create the cgroup (a no-op for the watchdog and for no limit)."""
        if self.mechanism not in ("cgroup-v1", "cgroup-v2") or self._cgroup is not None:
            return
        version = 2 if self.mechanism == "cgroup-v2" else 1
        parent = self._parent or usable_root(version)
        if parent is None:
            self._fall_back(f"no writable {self.mechanism} memory hierarchy")
            return
        try:
            self._cgroup = Cgroup.create(version, parent, self.limit or 0)
        except CgroupUnusable as error:
            self._fall_back(str(error))

    def command(self, argv: list[str]) -> list[str]:
        """The argv to start the child with: one that joins the cgroup before the program itself starts.

        A tiny shell writes its own pid into the cgroup and execs `argv` (same pid), so everything the program
        touches is charged inside, as in a container. Memory touched before joining would stay charged to
        our own cgroup and let the child exceed its limit by that much. Without a cgroup, `argv` unchanged;
        `attach` after the start still joins (or falls back) if the shell could not.
        """
        self.prepare()
        if self._cgroup is None or not os.access(_SHELL, os.X_OK):
            return list(argv)
        return [_SHELL, "-c", _JOIN_THEN_EXEC, str(self._cgroup.path / "cgroup.procs"), *argv]

    def attach(self, pid: int) -> None:
        """Limit and watch the child `pid` (call right after it was started)."""
        self.prepare()
        if self._cgroup is not None:
            try:
                self._cgroup.add(pid)
            except CgroupUnusable as error:
                if pid not in self._cgroup.procs():  # the child did not join through `command` either
                    self._cgroup.remove(timeout=1.0)
                    self._cgroup = None
                    self._fall_back(str(error))
        try:
            self._process = psutil.Process(pid)
        except psutil.NoSuchProcess:
            self._process = None
            return
        self._sample()
        self._thread = threading.Thread(target=self._poll, name=f"stockscale-limit-{pid}", daemon=True)
        self._thread.start()

    def limit_hit(self, returncode: int | None = None) -> bool:
        """Whether the limit killed the child so far (readable while the cgroup still exists)."""
        if self._report is not None:
            return self._report.limit_hit
        with self._lock:
            if self._watchdog_killed:
                return True
        return self._cgroup is not None and self._cgroup_oom(returncode)

    def kill_tree(self, sig: int = signal.SIGKILL) -> None:
        """Signal every process of the child's tree we know of (cgroup members and polled descendants)."""
        if sig == signal.SIGKILL and self._cgroup is not None:
            self._cgroup.kill_all()
        for process in self._tree():
            with contextlib.suppress(psutil.Error):
                process.send_signal(sig)

    def finish(self, returncode: int | None = None, timeout: float = 5.0) -> LimitReport:
        """Stop watching, read what happened, remove the cgroup. Idempotent. Call after the child exited."""
        if self._report is not None:
            return self._report
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        # Descendants that outlived the child are ours to end: leave no process behind.
        for process in list(self._known.values()):
            with contextlib.suppress(psutil.Error):
                if process.is_running():
                    process.kill()
        report = LimitReport(
            mechanism=self.mechanism,
            limit_bytes=self.limit,
            watchdog_killed=self._watchdog_killed,
            watchdog_rss_bytes=self._watchdog_rss,
            polled_peak_rss_bytes=self._peak,
            fallback_reason=self.fallback_reason,
        )
        if self._cgroup is not None:
            report.cgroup_path = str(self._cgroup.path)
            report.oom_killed = self._cgroup_oom(returncode)
            report.cgroup_peak_bytes = self._cgroup.peak()
            report.cleanup_error = self._cgroup.remove(timeout)
        self._report = report
        return report

    # internals

    def _fall_back(self, reason: str) -> None:
        self.fallback_reason = reason
        self.mechanism = "watchdog"

    def _cgroup_oom(self, returncode: int | None) -> bool:
        assert self._cgroup is not None
        kills = self._cgroup.oom_kills()
        if kills is not None:
            return kills > 0
        # An old v1 kernel without the oom_kill counter: the limit was reached and the child died by SIGKILL.
        return self._cgroup.failcnt() > 0 and returncode == -signal.SIGKILL

    def _tree(self) -> list[psutil.Process]:
        if self._process is None:
            return []
        tree = [self._process]
        with contextlib.suppress(psutil.Error):
            tree += self._process.children(recursive=True)
        for process in tree:
            self._known.setdefault(process.pid, process)
        return tree

    def _sample(self) -> None:
        tree = self._tree()
        rss = hwm = 0
        for process in tree:
            with contextlib.suppress(psutil.Error):
                rss += process.memory_info().rss
                hwm += _tree_hwm(process)
        self._peak = max(self._peak, rss, hwm)
        if self.mechanism == "watchdog" and self.limit is not None and rss > self.limit:
            with self._lock:
                if not self._watchdog_killed:
                    self._watchdog_killed = True
                    self._watchdog_rss = rss
            for process in tree:
                with contextlib.suppress(psutil.Error):
                    process.kill()
            self._stop.set()

    def _poll(self) -> None:
        # The first second is sampled every 20 ms (from 5 ms): a child that lives well under one interval, as a
        # fast-failing or tiny run does, would otherwise be sampled only as it execs (a few KiB).
        wait, started = min(self._interval, 0.005), time.monotonic()
        while not self._stop.wait(wait):
            early = time.monotonic() - started < 1.0
            wait = min(self._interval, 0.02, 2 * wait) if early else self._interval
            process = self._process
            if process is None:
                return
            try:
                if process.status() == psutil.STATUS_ZOMBIE:
                    return
            except psutil.Error:
                return
            self._sample()
