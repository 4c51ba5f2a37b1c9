"""A memory limit for one child process and its descendants, and its peak memory, measured.

The dataset-scale comparison needs a hard per-worker memory ceiling that behaves like a Kubernetes
container limit: the kernel OOM-kills a worker that goes over it. A memory cgroup does exactly that, so a
fresh cgroup (v2 when our own cgroup can delegate the memory controller, else v1) is created per child under
our own cgroup. Where no cgroup is writable (an unprivileged container, a read-only /sys/fs/cgroup) an RSS
watchdog thread stands in: it polls the child's process tree with psutil and SIGKILLs the tree when it is
over the limit. The watchdog is best effort (a child can overshoot between two polls), which is why the
mechanism that actually held the limit is always recorded next to the result.

Every child, limited or not, has its peak memory recorded by polling (VmHWM where Linux has it, RSS
otherwise), so every run reports a per-worker peak.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

from stockscale.config import format_size, parse_size
from stockscale.errors import InputError
from stockscale.files import process_alive

MiB = 1024**2

# A bare CPython interpreter needs ~10 MiB and a worker that has imported torch ~250-300 MiB. A limit under
# 64 MiB cannot even start the interpreter with its standard library, so it is refused up front as bad
# input (most likely a missing unit: "512K", "1000"). Limits between the floor and what training needs are
# legitimate experiments: the worker starts and is OOM-killed, which is a measured result, not an error.
MIN_WORKER_MEMORY = 64 * MiB

MECHANISM_ENV = "STOCKSCALE_LIMIT_MECHANISM"
MECHANISMS = ("cgroup-v2", "cgroup-v1", "watchdog")
POLL_INTERVAL = 0.1
CGROUP_PREFIX = "stockscale-"

# `sh -c SCRIPT PROCS_FILE PROGRAM ARGS...`: join the cgroup (quietly; attach() retries from outside), exec.
_SHELL = "/bin/sh"
_JOIN_THEN_EXEC = '{ echo $$ > "$0"; } 2>/dev/null; exec "$@"'
_PROC_CGROUP = Path("/proc/self/cgroup")
_PROC_MOUNTINFO = Path("/proc/self/mountinfo")


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


# --- finding our own cgroup ---------------------------------------------------------------------------


def _unescape_mount_path(text: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040 ...)."""
    out, i = [], 0
    while i < len(text):
        code = text[i + 1 : i + 4]
        if text[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(root, mount point, fs type, super options) of every mount, from /proc/self/mountinfo."""
    mounts = []
    try:
        lines = _PROC_MOUNTINFO.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        mounts.append((_unescape_mount_path(fields[3]), _unescape_mount_path(fields[4]), tail[0],
                       set(tail[2].split(","))))
    return mounts


def _own_cgroup_paths() -> dict[str, str]:
    """Our cgroup path per hierarchy: {"memory": "/a/b", "": "/c"} ('' is the v2 unified hierarchy)."""
    paths: dict[str, str] = {}
    try:
        lines = _PROC_CGROUP.read_text().splitlines()
    except OSError:
        return paths
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            paths[""] = path
        for controller in controllers.split(","):
            if controller:
                paths[controller] = path
    return paths


def _join_mount(mount_root: str, mount_point: str, cgroup_path: str) -> Path | None:
    """Where cgroup `cgroup_path` appears under a mount of its hierarchy rooted at `mount_root`."""
    relative = os.path.relpath(cgroup_path, mount_root)
    if relative.startswith(".."):
        return None
    return Path(os.path.normpath(os.path.join(mount_point, relative)))


def own_cgroup_dir(version: int) -> Path | None:
    """The directory of our own memory cgroup (v1) or unified cgroup (v2), or None when not mounted."""
    paths = _own_cgroup_paths()
    for root, point, fstype, options in _mounts():
        if version == 2 and fstype == "cgroup2" and "" in paths:
            found = _join_mount(root, point, paths[""])
        elif version == 1 and fstype == "cgroup" and "memory" in options and "memory" in paths:
            found = _join_mount(root, point, paths["memory"])
        else:
            continue
        if found is not None and found.is_dir():
            return found
    return None


def _usable(version: int) -> Path | None:
    """Our cgroup directory when we can create limited child cgroups in it, else None."""
    directory = own_cgroup_dir(version)
    if directory is None or not os.access(directory, os.W_OK | os.X_OK):
        return None
    if version == 2:
        try:
            delegated = (directory / "cgroup.subtree_control").read_text().split()
        except OSError:
            return None
        return directory if "memory" in delegated else None
    return directory if (directory / "memory.limit_in_bytes").exists() else None


def detect_mechanism() -> str:
    """'cgroup-v2', 'cgroup-v1' or 'watchdog': what would hold a limit now (forced by $MECHANISM_ENV)."""
    forced = os.environ.get(MECHANISM_ENV, "").strip()
    if forced:
        if forced not in MECHANISMS:
            raise InputError(f"{MECHANISM_ENV}={forced!r} is not one of {', '.join(MECHANISMS)}")
        return forced
    if _usable(2) is not None:
        return "cgroup-v2"
    if _usable(1) is not None:
        return "cgroup-v1"
    return "watchdog"


_DESCRIPTIONS = {
    "cgroup-v2": "cgroup v2 memory.max per worker (kernel OOM kill at the limit, no swap)",
    "cgroup-v1": "cgroup v1 memory.limit_in_bytes per worker (kernel OOM kill at the limit, no swap)",
    "watchdog": f"RSS watchdog per worker (psutil poll every {POLL_INTERVAL:g} s, SIGKILL over the limit; "
    "best effort, a fast allocation can overshoot between polls)",
}


def describe_mechanism(mechanism: str | None = None) -> str:
    """One line for the CLI: which mechanism holds memory limits (the detected one when not given)."""
    mechanism = mechanism or detect_mechanism()
    text = f"{mechanism}: {_DESCRIPTIONS.get(mechanism, 'unknown mechanism')}"
    if mechanism.startswith("cgroup-"):
        directory = _usable(2 if mechanism == "cgroup-v2" else 1)
        if directory is not None:
            text += f", under {directory}"
    return text


# --- one cgroup ---------------------------------------------------------------------------------------


class _Unusable(Exception):
    """This cgroup cannot hold the limit; the limiter falls back to the watchdog."""


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _read_keyed(path: Path, key: str) -> int | None:
    """A value from a flat 'key value' file such as memory.events or memory.oom_control."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        return None
    return None


class _Cgroup:
    """A fresh memory cgroup with a byte limit, for one child and its descendants."""

    def __init__(self, version: int, path: Path) -> None:
        self.version = version
        self.path = path

    @classmethod
    def create(cls, version: int, parent: Path, limit: int) -> _Cgroup:
        path = parent / f"{CGROUP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
        try:
            path.mkdir(mode=0o755)
        except OSError as error:
            raise _Unusable(f"cannot create {path}: {error.strerror or error}") from None
        group = cls(version, path)
        try:
            group._configure(limit)
        except (OSError, _Unusable) as error:
            group._remove_dir()
            detail = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            raise _Unusable(f"cannot limit {path}: {detail}") from None
        return group

    def _configure(self, limit: int) -> None:
        if self.version == 2:
            limit_file = self.path / "memory.max"
            if not limit_file.exists():
                raise _Unusable("no memory controller in this cgroup")
            limit_file.write_text(str(limit))
            self._write_optional("memory.swap.max", "0")
            self._write_optional("memory.oom.group", "1")  # an OOM kills the worker's whole tree
        else:
            limit_file = self.path / "memory.limit_in_bytes"
            if not limit_file.exists():
                raise _Unusable("not a memory cgroup")
            limit_file.write_text(str(limit))
            self._write_optional("memory.memsw.limit_in_bytes", str(limit))  # no escape into swap
            self._write_optional("memory.swappiness", "0")

    def _write_optional(self, name: str, value: str) -> None:
        target = self.path / name
        if target.exists():
            with contextlib.suppress(OSError):
                target.write_text(value)

    def add(self, pid: int) -> None:
        try:
            (self.path / "cgroup.procs").write_text(str(pid))
        except ProcessLookupError:
            pass  # the child already exited: nothing left to limit
        except OSError as error:
            if error.errno != errno.ESRCH:
                raise _Unusable(f"cannot move pid {pid} into {self.path}: {error.strerror}") from None

    def procs(self) -> list[int]:
        try:
            return [int(line) for line in (self.path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def oom_kills(self) -> int | None:
        """OOM kills inside the cgroup, or None where the kernel does not count them."""
        if self.version == 2:
            return _read_keyed(self.path / "memory.events", "oom_kill")
        return _read_keyed(self.path / "memory.oom_control", "oom_kill")

    def failcnt(self) -> int:
        if self.version != 1:
            return 0
        return _read_int(self.path / "memory.failcnt") or 0

    def peak(self) -> int | None:
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        return _read_int(self.path / name)

    def kill_all(self) -> None:
        """SIGKILL whatever is still inside (descendants that outlived the child)."""
        if self.version == 2 and (self.path / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (self.path / "cgroup.kill").write_text("1")
                return
        for pid in self.procs():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def remove(self, timeout: float) -> str | None:
        """Kill what is left, wait until empty, rmdir. Returns an error text when it could not."""
        deadline = time.monotonic() + timeout
        while True:
            if self.procs():
                self.kill_all()
            error = self._remove_dir()
            if error is None:
                return None
            if time.monotonic() > deadline:
                return f"could not remove {self.path}: {error}"
            time.sleep(0.02)

    def _remove_dir(self) -> str | None:
        try:
            self.path.rmdir()
        except FileNotFoundError:
            return None
        except OSError as error:
            return error.strerror or str(error)
        return None


def sweep_stale_cgroups() -> list[Path]:
    """Remove the stockscale-<pid>-* cgroups under our own whose creator <pid> is dead (a killed launcher's).

    Whatever still runs inside such a cgroup is an orphaned worker of that launcher and is killed first.
    """
    removed = []
    for version in (2, 1):
        directory = own_cgroup_dir(version)
        if directory is None:
            continue
        with contextlib.suppress(OSError):
            for path in directory.glob(f"{CGROUP_PREFIX}*"):
                match = re.fullmatch(rf"{re.escape(CGROUP_PREFIX)}(\d+)-[0-9a-f]+", path.name)
                if match is None or not path.is_dir() or process_alive(int(match.group(1))):
                    continue
                if _Cgroup(version, path).remove(timeout=2.0) is None:
                    removed.append(path)
    return removed


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


def vm_hwm(pid: int | str = "self") -> int | None:
    """Peak resident memory of a process from Linux's VmHWM (reset at exec), or None where it is not there.

    Not getrusage's ru_maxrss: Linux starts a forked child's maxrss at its parent's RSS, so a worker started
    by a large process would report the parent's size.
    """
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


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
        self._cgroup: _Cgroup | None = None
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
        parent = self._parent or _usable(version)
        if parent is None:
            self._fall_back(f"no writable {self.mechanism} memory hierarchy")
            return
        try:
            self._cgroup = _Cgroup.create(version, parent, self.limit or 0)
        except _Unusable as error:
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
            except _Unusable as error:
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
        while not self._stop.wait(self._interval):
            process = self._process
            if process is None:
                return
            try:
                if process.status() == psutil.STATUS_ZOMBIE:
                    return
            except psutil.Error:
                return
            self._sample()
