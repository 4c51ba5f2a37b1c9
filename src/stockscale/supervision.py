"""Signals and parent death: every command cleans up on SIGTERM and SIGHUP as on Ctrl-C, and a worker never
outlives the launcher that started it.

`kill`, `timeout`, systemd and Kubernetes send SIGTERM; a closed terminal sends SIGHUP. Both become
`Terminated`, a KeyboardInterrupt, so every `finally` and `except KeyboardInterrupt` that cleans up after
Ctrl-C (worker groups, cgroups, staged folders, partial summaries) runs for them too.

A worker started by the local launcher finds the launcher's pid in STOCKSCALE_PARENT_PID. It asks the kernel
for SIGTERM when its parent dies (prctl PR_SET_PDEATHSIG, set by the worker itself, so the launcher needs no
preexec_fn), leaves at once if the launcher is already gone, and a watcher thread checks the parent too: when
the launcher was SIGKILLed and cleaned nothing up, the worker moves out of its own memory cgroup, removes it,
and exits, by SIGKILL after a short grace if its cleanup hangs.

A worker can also die abruptly when its launcher dies (a DDP peer that vanished can abort it), with no
chance to remove its cgroup. So a launcher that puts workers in cgroups also starts one small reaper
(`python -m stockscale.supervision <launcher pid>`, in its own session): it waits for the launcher to exit,
gives the workers a short grace, then kills what is left in the launcher's stockscale-<pid>-* cgroups and
removes them. The next start of any launcher sweeps the same way (limits.sweep_stale_cgroups).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

# What signal.signal() takes and returns: a function, SIG_DFL/SIG_IGN, or None (a handler not set from Python).
Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

PARENT_ENV = "STOCKSCALE_PARENT_PID"
SIGNALS = (signal.SIGTERM, signal.SIGHUP)
PARENT_POLL_SECONDS = 0.5
ORPHAN_GRACE_SECONDS = 3.0
_PR_SET_PDEATHSIG = 1


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: cleaned up like Ctrl-C, reported with exit status 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


CLEANUP_SECONDS = 30.0  # later signals are ignored this long after the one that started the cleanup
_stopping: list[float] = []  # when the signal that started the cleanup arrived (empty: none yet)


def _first_signal() -> bool:
    """Whether a signal arriving now should start the cleanup. Later ones are ignored while it runs, so it
    finishes; after CLEANUP_SECONDS one counts again: a cleanup that hangs, or a first KeyboardInterrupt that
    third-party code swallowed (one raised inside an import is), must not leave the user unable to stop."""
    now = time.monotonic()
    if _stopping and now - _stopping[0] < CLEANUP_SECONDS:
        return False
    _stopping[:] = [now]
    return True


def _raise_terminated(signum: int, _frame: object) -> None:
    # Later SIGTERMs/SIGHUPs (and Ctrl-Cs) must not interrupt the cleanup this one starts; the launcher's
    # SIGKILL after its grace period still ends a cleanup that hangs. (No signal.signal() call in here: it
    # runs pending handlers itself, so a second signal would re-enter this one.)
    if _first_signal():
        raise Terminated(signum)


def _raise_interrupt(_signum: int, _frame: object) -> None:
    # The first Ctrl-C starts the cleanup (every `finally` and `except KeyboardInterrupt` on the way out);
    # a second one pressed while it runs would cut it short and leave staging and scratch folders behind.
    if _first_signal():
        raise KeyboardInterrupt


@contextlib.contextmanager
def terminate_as_interrupt(leaving: bool = False) -> Iterator[None]:
    """SIGTERM and SIGHUP raise Terminated, and SIGINT KeyboardInterrupt, in the main thread while the block
    runs (then restored); once one has arrived, later ones are ignored, so the cleanup it starts finishes.
    `leaving`: the process ends after the block, so after a signal they stay ignored to its last line."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _stopping.clear()
    previous: dict[signal.Signals, Handler] = {sig: signal.signal(sig, _raise_terminated) for sig in SIGNALS}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where SIGINT is ignored already
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, _raise_interrupt)
    stopped = False
    try:
        yield
    except KeyboardInterrupt:  # Terminated too
        stopped = True
        raise
    finally:
        # Leaving after a signal: ignored for good (the interpreter's finalization would put back the default
        # action, and a late second Ctrl-C would kill the process by SIGINT after its cleanup). Otherwise, on
        # any way out (an error too), the caller's handlers come back: main() called in-process leaves none.
        _restore({sig: signal.SIG_IGN for sig in previous} if leaving and stopped else previous)


def _restore(previous: dict[signal.Signals, Handler]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    _stopping.clear()


def follow_parent() -> None:
    """In a worker the launcher started: end with the launcher (see the module docstring). A no-op elsewhere."""
    text = os.environ.pop(PARENT_ENV, None)
    if not text or not text.isdigit():
        return
    parent = int(text)
    _set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent:  # the launcher died before the signal was armed
        leave_own_cgroup(parent)
        os._exit(128 + signal.SIGTERM)
    atexit.register(_leave_if_orphaned, parent)
    threading.Thread(target=_watch_parent, args=(parent,), name="stockscale-parent", daemon=True).start()


def _leave_if_orphaned(parent: int) -> None:
    if os.getppid() != parent:
        leave_own_cgroup(parent)


def _set_parent_death_signal(sig: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    leave_own_cgroup(parent)
    with contextlib.suppress(OSError):
        os.kill(os.getpid(), signal.SIGTERM)  # already sent by the kernel where PDEATHSIG is supported
    time.sleep(ORPHAN_GRACE_SECONDS)
    os.kill(os.getpid(), signal.SIGKILL)


def leave_own_cgroup(parent: int) -> None:
    """Move out of the memory cgroup the dead launcher `parent` made for us, and remove it.

    Only a cgroup named stockscale-<parent>-* is touched; nothing else of the hierarchy.
    """
    from stockscale.limits import CGROUP_PREFIX, own_cgroup_dir

    pattern = re.compile(rf"{re.escape(CGROUP_PREFIX)}{parent}-[0-9a-f]+$")
    for version in (2, 1):
        own = own_cgroup_dir(version)
        if own is None or not pattern.match(own.name):
            continue
        with contextlib.suppress(OSError):
            (own.parent / "cgroup.procs").write_text(str(os.getpid()))
            _rmdir_when_empty(own)


def _rmdir_when_empty(path: Path, timeout: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


_reaper: subprocess.Popen[bytes] | None = None
_reaper_lock = threading.Lock()


def ensure_cgroup_reaper() -> None:
    """Start (once per process) the reaper that removes this launcher's cgroups after it dies."""
    global _reaper
    with _reaper_lock:
        if _reaper is not None and _reaper.poll() is None:
            return
        with contextlib.suppress(OSError):
            _reaper = subprocess.Popen([sys.executable, "-m", "stockscale.supervision", str(os.getpid())],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True)


def reap_after(launcher: int) -> None:
    """Wait for `launcher` to exit, give its workers a grace to leave, then remove its leftover cgroups."""
    from stockscale.limits import CGROUP_PREFIX, own_cgroup_dir, sweep_stale_cgroups

    while os.getppid() == launcher:
        time.sleep(PARENT_POLL_SECONDS / 5)

    def occupied() -> bool:
        for version in (2, 1):
            directory = own_cgroup_dir(version)
            for path in directory.glob(f"{CGROUP_PREFIX}{launcher}-*") if directory is not None else ():
                with contextlib.suppress(OSError):
                    if (path / "cgroup.procs").read_text().strip():
                        return True
        return False

    deadline = time.monotonic() + ORPHAN_GRACE_SECONDS
    while occupied() and time.monotonic() < deadline:
        time.sleep(0.1)
    sweep_stale_cgroups()


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1].isdigit():
        reap_after(int(sys.argv[1]))
