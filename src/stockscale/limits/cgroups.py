"""Memory cgroups: finding our own (v2 or v1), making one per child, reading its counters, sweeping leftovers.

A memory cgroup behaves like a Kubernetes container limit: the kernel OOM-kills a process that goes over it.
`detect_mechanism` says what can hold a limit here: a cgroup v2 when our own cgroup can delegate the memory
controller, else v1, else the RSS watchdog of limiter.py.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import time
import uuid
from pathlib import Path

from stockscale.errors import InputError
from stockscale.files import process_alive

MECHANISM_ENV = "STOCKSCALE_LIMIT_MECHANISM"
MECHANISMS = ("cgroup-v2", "cgroup-v1", "watchdog")
CGROUP_PREFIX = "stockscale-"
POLL_INTERVAL = 0.1
_PROC_CGROUP = Path("/proc/self/cgroup")
_PROC_MOUNTINFO = Path("/proc/self/mountinfo")


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


def usable_root(version: int) -> Path | None:
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
    if usable_root(2) is not None:
        return "cgroup-v2"
    if usable_root(1) is not None:
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
        directory = usable_root(2 if mechanism == "cgroup-v2" else 1)
        if directory is not None:
            text += f", under {directory}"
    return text


# --- one cgroup ---------------------------------------------------------------------------------------


class CgroupUnusable(Exception):
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


class Cgroup:
    """A fresh memory cgroup with a byte limit, for one child and its descendants."""

    def __init__(self, version: int, path: Path) -> None:
        self.version = version
        self.path = path

    @classmethod
    def create(cls, version: int, parent: Path, limit: int) -> Cgroup:
        path = parent / f"{CGROUP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
        try:
            path.mkdir(mode=0o755)
        except OSError as error:
            raise CgroupUnusable(f"cannot create {path}: {error.strerror or error}") from None
        group = cls(version, path)
        try:
            group._configure(limit)
        except (OSError, CgroupUnusable) as error:
            group._remove_dir()
            detail = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            raise CgroupUnusable(f"cannot limit {path}: {detail}") from None
        return group

    def _configure(self, limit: int) -> None:
        if self.version == 2:
            limit_file = self.path / "memory.max"
            if not limit_file.exists():
                raise CgroupUnusable("no memory controller in this cgroup")
            limit_file.write_text(str(limit))
            self._write_optional("memory.swap.max", "0")
            self._write_optional("memory.oom.group", "1")  # an OOM kills the worker's whole tree
        else:
            limit_file = self.path / "memory.limit_in_bytes"
            if not limit_file.exists():
                raise CgroupUnusable("not a memory cgroup")
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
                raise CgroupUnusable(f"cannot move pid {pid} into {self.path}: {error.strerror}") from None

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
                if Cgroup(version, path).remove(timeout=2.0) is None:
                    removed.append(path)
    return removed
