"""One run per output folder: a lock a command holds for its whole life, so two runs never share a folder.

A second `stockscale search --out X` started while the first runs would clear the first one's trials and
journal. So every command that owns an output folder holds `folder_lock(out)`: an exclusive `flock` on
`<out>/.stockscale.lock`, which names its holder (`<pid>@<host>` and the command) for the one line the second
run gets (exit 2). A command whose output is renamed into place at its end (`train --out`, `data scale --out`:
the folder does not exist while it runs) holds `beside_lock(out)` instead: `<parent>/.<name>.lock`.

The kernel releases a flock when its holder exits, however it exits (SIGKILL included), so a lock file left by
a dead run is simply taken over: there is nothing stale to detect, and its old holder line is overwritten.
The holder removes the file when it leaves; a run that opened the file just before it was removed sees that
the locked file is no longer the one at the path and tries again. Readers (`stockscale compare`) take no lock:
every results file is replaced in one step, so a reader sees the old version or the new.

Adopting it in a new command is one `with folder_lock(out, "stockscale evaluate"):` around the work.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from stockscale.errors import InputError
from stockscale.files import owner_tag

LOCK_NAME = ".stockscale.lock"


@contextlib.contextmanager
def folder_lock(out: Path, command: str = "stockscale") -> Iterator[Path]:
    """Hold `<out>/.stockscale.lock` while the block runs (`out` must exist); yields the lock's path."""
    with _held(Path(out) / LOCK_NAME, Path(out), command) as path:
        yield path


@contextlib.contextmanager
def beside_lock(out: Path, command: str = "stockscale") -> Iterator[Path]:
    """Hold `<parent>/.<name>.lock` for an output `out` that is staged beside and renamed into place."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"output directory {out.parent} is not writable ({error.strerror})") from None
    with _held(out.parent / f".{out.name}.lock", out, command) as path:
        yield path


def lock_holder(path: Path) -> str:
    """What a lock file says about its holder (`<pid>@<host> <command>`), or a placeholder."""
    try:
        with open(path, "rb") as handle:
            text = handle.read(200).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "another process"


@contextlib.contextmanager
def _held(path: Path, shown: Path, command: str) -> Iterator[Path]:
    fd = _acquire(path, shown)
    try:
        with contextlib.suppress(OSError):  # a full disk: the lock holds all the same, and the run's own
            os.ftruncate(fd, 0)              # first write says the disk is full, naming its path
            os.pwrite(fd, f"{owner_tag()} {command}\n".encode(), 0)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # still locked by us: a waiter that opened it retries on the new file
        os.close(fd)


def _acquire(path: Path, shown: Path) -> int:
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise InputError(f"{path} is a symlink; stockscale does not write through links") from None
            raise InputError(f"{shown} cannot be locked ({error.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(path)
            os.close(fd)
            raise InputError(f"{shown} is in use by another run ({holder}); wait for it to end or choose another "
                             "folder") from None
        except OSError as error:
            os.close(fd)
            raise InputError(f"{shown} cannot be locked ({error.strerror})") from None
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # its holder removed it as we opened it: lock the one at the path now
    raise InputError(f"{shown} cannot be locked (its lock file keeps changing)")
