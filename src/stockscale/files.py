"""Write files so that a reader never sees half of one: temporary path first, rename at the end."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stockscale.errors import InputError


def temp_dir_beside(out: Path) -> Path:
    """A temporary directory next to `out` (same filesystem, so the final rename is atomic)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as error:
        raise InputError(f"output directory {out.parent} is not writable ({error.strerror})") from None


@contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """Yield a temporary directory that becomes `out` when the block ends without error, else vanishes."""
    tmp = temp_dir_beside(out)
    try:
        yield tmp
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` in one step (a temporary file in the same folder, then os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """A results file, indented, replaced in one step: a reader sees the old version or the new, never half."""
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def utc_timestamp() -> str:
    """When a results file was started or finished: ISO 8601, UTC, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")
