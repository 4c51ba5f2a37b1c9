"""A dry run is a result too: `dry_run.json` says that manifests were written and nothing ran.

`search --backend kubernetes --dry-run` writes its manifests into the search's results folder, where a real
run would leave summary.json. Without a marker, `compare` could only guess that the folder was an
interrupted run; with it, the report says "dry run: manifests in DIR, nothing ran".
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from stockscale.files import utc_timestamp, write_json_atomic

MARKER = "dry_run.json"


class DryRun(BaseModel):
    """The marker's contents (docs/results.md)."""

    model_config = ConfigDict(extra="allow", strict=True)

    kind: Literal["dry_run"]
    format_version: Literal[1]
    command: str
    backend: str
    manifest_dir: str
    files: list[str]
    written_at: str | None = None


def write_dry_run_marker(folder: Path, command: str, backend: str, files: list[Path]) -> Path:
    """Write `folder/dry_run.json` naming the manifests written into `folder`; return its path."""
    marker = DryRun(kind="dry_run", format_version=1, command=command, backend=backend,
                    manifest_dir=str(folder), files=sorted(path.name for path in files),
                    written_at=utc_timestamp())
    path = folder / MARKER
    write_json_atomic(path, marker.model_dump())
    return path
