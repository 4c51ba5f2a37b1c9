"""Write files so that a reader never sees half of one, and nothing half-written outlives its writer.

Every atomic write goes through here: a temporary path beside the target, its data and folder fsynced, one
rename at the end, the folder fsynced again so the rename itself survives a crash. Results are created
readable by group and others (0644 files, 0755 folders) unless the user's umask says otherwise: a shared
volume's other users can read them. Temporary names carry their owner (`<pid>@<host>`), so the next start
removes what a killed process left behind (`sweep_stale`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import psutil

from stockscale.errors import InputError

_HOST = re.sub(r"[^A-Za-z0-9.]", "", socket.gethostname())[:40]


def owner_tag() -> str:
    """`<pid>@<host>`: who owns a temporary file or folder, so a later start can tell whether it is stale."""
    return f"{os.getpid()}@{_HOST}"


def owner_alive(name: str, prefix: str) -> bool:
    """Whether the process named in `name` (prefix + owner tag + '-...') still runs here.

    True when the name carries no tag, names another host (a shared volume: that host's own starts sweep
    it) or names a live process: only what certainly belongs to a dead process of this host counts as stale.
    """
    match = re.match(re.escape(prefix) + r"(\d+)@([A-Za-z0-9.]*)-", name)
    if match is None or match.group(2) != _HOST:
        return True
    return process_alive(int(match.group(1)))


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this host still runs (a zombie does not; one we may not inspect does)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True


def sweep_stale(folder: Path, prefix: str) -> list[Path]:
    """Remove the entries of `folder` named `<prefix><pid>@<host>-...` whose owner is dead; return them."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            if entry.name.startswith(prefix):
                removed += sweep_one(entry, prefix)
    return removed


_STAGED = re.compile(r"\.(?P<name>.+)\.tmp-\d+@[A-Za-z0-9.]*-")


def sweep_stale_staging(folder: Path) -> list[Path]:
    """Remove every staged entry (`.<name>.tmp-<pid>@<host>-...`) in `folder` whose owner is dead, whatever
    output it was staging: a killed `data scale --out a` leaves its staging folder beside `a`, and the next
    command that stages anything in the same folder removes it."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            match = _STAGED.match(entry.name)
            if match is not None:
                removed += sweep_one(entry, f".{match.group('name')}.tmp-")
    return removed


def sweep_one(entry: Path, prefix: str) -> list[Path]:
    """Remove `entry` (named `<prefix><pid>@<host>-...`) if its owner is dead; return it if removed."""
    if owner_alive(entry.name, prefix):
        return []
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)
    return [entry]


def umask() -> int:
    """The process umask, read without changing it where Linux reports it (else set and restored)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's data and metadata to the disk."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under `root` (deepest first) and `root` itself."""
    for folder, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            fsync_path(Path(folder) / name)
        fsync_path(Path(folder))


def temp_dir_beside(out: Path) -> Path:
    """A temporary directory next to `out` (same filesystem, so the final rename is atomic).

    Stale ones of earlier, killed writers of `out` are removed first."""
    prefix = f".{out.name}.tmp-"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_staging(out.parent)
        return Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}-", dir=out.parent))
    except OSError as error:
        raise InputError(f"output directory {out.parent} is not writable ({error.strerror})") from None


def _open_modes(tree: Path) -> None:
    """mkdtemp/mkstemp create 0700/0600; give folders 0777 and files 0666, less the umask."""
    mask = umask()
    for folder, dirs, files in os.walk(tree):
        for name in dirs:
            os.chmod(Path(folder) / name, 0o777 & ~mask)
        for name in files:
            with contextlib.suppress(OSError):
                os.chmod(Path(folder) / name, 0o666 & ~mask)
    os.chmod(tree, (0o777 if tree.is_dir() else 0o666) & ~mask)


@contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """Yield a temporary directory that becomes `out` when the block ends without error, else vanishes."""
    tmp = temp_dir_beside(out)
    try:
        yield tmp
        _open_modes(tmp)
        fsync_tree(tmp)
        os.rename(tmp, out)
        fsync_path(out.parent)
    except BaseException as error:
        full = disk_full(error, tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise InputError(f"cannot write {out}: no space left on device") from None
        raise


DISK_FULL_MARGIN = 1 << 20  # an error while writing with less than this left is taken for a full disk


def disk_full(error: BaseException, where: Path) -> bool:
    """Whether `error`, raised while writing under `where`, means the disk is full: ENOSPC (or EDQUOT), or a
    writer that hides the errno (torch.save's `enforce fail at inline_container.cc`, a RuntimeError) failing
    while the filesystem has less than DISK_FULL_MARGIN left. Checked before the partial file is removed."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if not isinstance(error, OSError | RuntimeError):
        return False
    try:
        stats = os.statvfs(where)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < DISK_FULL_MARGIN


def replace_with(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Replace `path` in one step with what `write(handle)` writes to a binary handle (torch.save, bytes).

    A full disk is one InputError naming `path`, and the partial temporary file is removed."""
    created = not path.parent.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        if disk_full(error, path.parent.parent):
            raise InputError(f"cannot write {path}: no space left on device") from None
        raise
    prefix = f".{path.name}.tmp-"
    sweep_stale(path.parent, prefix)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{owner_tag()}-", dir=path.parent)
    except OSError as error:
        if disk_full(error, path.parent):
            if created:
                with contextlib.suppress(OSError):
                    path.parent.rmdir()
            raise InputError(f"cannot write {path}: no space left on device") from None
        raise
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fchmod(handle.fileno(), 0o666 & ~umask())
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException as error:
        full = disk_full(error, path.parent)
        Path(tmp).unlink(missing_ok=True)
        if full:
            if created:
                with contextlib.suppress(OSError):
                    path.parent.rmdir()  # the folder made for it, empty again
            raise InputError(f"cannot write {path}: no space left on device") from None
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` in one step (a temporary file in the same folder, then os.replace)."""
    replace_with(path, lambda handle: handle.write(text.encode("utf-8")))


def to_json(data: Any, indent: int | None = 2) -> str:
    """Strict JSON: NaN and infinities are refused (ValueError), as strict parsers would refuse them."""
    return json.dumps(data, indent=indent, allow_nan=False)


def write_json_atomic(path: Path, data: Any) -> None:
    """A results file, indented, replaced in one step: a reader sees the old version or the new, never half."""
    write_text_atomic(path, to_json(data) + "\n")


def utc_timestamp() -> str:
    """When a results file was started or finished: ISO 8601, UTC, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def prepare_results_dir(out: Path, marker: str, kind: str, owned: tuple[str, ...], clear: bool) -> None:
    """Make `out` a writable results folder; with `clear`, remove the `owned` entries of an earlier run.

    A folder that holds any of `owned` must have a `marker` (a JSON file with a "kind" field) saying it holds
    `kind` results, cleared or not (a resumed search also deletes unfinished trials): `--out .` beside
    someone's own `trials/` is refused, never emptied.
    """
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".probe.tmp-{owner_tag()}-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise InputError(f"--out {out} cannot be written ({error.strerror or error})") from None
    present = [name for name in owned if (out / name).exists() or (out / name).is_symlink()]
    if not present:
        return
    try:
        found = json.loads((out / marker).read_text(encoding="utf-8")).get("kind")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        found = None
    if found != kind:
        raise InputError(f"--out {out} holds {', '.join(present)} but no stockscale {kind} {marker}; "
                         "choose an empty or new folder")
    if not clear:
        linked = [name for name in present if (out / name).is_symlink()]
        if linked:
            raise InputError(f"--out {out}: {', '.join(linked)} is a symlink; stockscale does not write through "
                             "links out of the folder it owns (remove it, or run without --resume)")
        return
    for name in present:
        remove_entry(out / name)


def remove_entry(path: Path) -> None:
    """Remove a file, a folder tree or a symlink (the link itself, never what it points to); absent is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def open_beneath(root: Path, relative: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_TRUNC) -> int:
    """Open `root/relative` for writing without following any symlink below `root`; return the descriptor.

    Every folder of `relative` is created if missing and opened relative to its parent with O_NOFOLLOW, and
    so is the file: a symlink planted at any level (a `logs/<trial>` folder pointing elsewhere, a log file
    pointing at someone's file) is refused with an InputError instead of being written through. `root` itself
    is the user's choice and may be a link; it is created when missing (a run's first log may come before its
    first result). This is the one way a run writes a file it does not rename into place (the launchers' logs)."""
    parts = Path(relative).parts
    if not parts or any(part in ("", ".", "..") for part in parts) or Path(relative).is_absolute():
        raise InputError(f"{relative} is not a path inside {root}")
    root.mkdir(parents=True, exist_ok=True)
    folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for index, part in enumerate(parts[:-1]):
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o777, dir_fd=folder)
            inner = _open_at(folder, part, os.O_RDONLY | os.O_DIRECTORY, root.joinpath(*parts[:index + 1]))
            os.close(folder)
            folder = inner
        return _open_at(folder, parts[-1], flags, root.joinpath(*parts))
    finally:
        os.close(folder)


def _open_at(folder: int, name: str, flags: int, shown: Path) -> int:
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=folder)
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.EISDIR):
            raise InputError(f"{shown} is a symlink or not a {'folder' if flags & os.O_DIRECTORY else 'file'}: "
                             "stockscale does not write through links out of the folder it owns") from None
        raise


def open_log(log_dir: Path, job: str, name: str) -> IO[str]:
    """`<log_dir>/<job>/<name>` opened for writing as text, with no symlink followed from `log_dir`'s parent
    (the run's folder) down: what every launcher's kept log goes through."""
    if not job or "/" in job or job in (".", ".."):
        raise InputError(f"{job!r} is not a job name")
    fd = open_beneath(log_dir.parent, Path(log_dir.name) / job / name)
    return os.fdopen(fd, "w", encoding="utf-8")
