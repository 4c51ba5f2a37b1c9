"""Fixed-width text shared by the comparison tables: widths, status words, seconds, sizes, wrapping."""

from __future__ import annotations

import re
import textwrap

from stockscale.config import format_size
from stockscale.experiments.results import Machine

WIDTH = 100
STATUS_WORDS = {"success": "success", "oom": "OOM", "timeout": "timeout", "error": "error", "preempted": "preempted",
                "pruned": "pruned"}


def seconds_text(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} s" if value < 100 else f"{value:.0f} s"


def size_text(value: float | None) -> str:
    return "-" if value is None else format_size(value)


def machine_text(machine: Machine | None) -> str:
    if machine is None or machine.cpus is None:
        return "machine not recorded"
    memory = f", {format_size(machine.memory_bytes)}" if machine.memory_bytes else ""
    return f"machine: {machine.cpus} cores{memory}"


_UNIT = re.compile(r"(\d) (s|x|B|KiB|MiB|GiB|TiB)\b")


def wrap(prefix: str, text: str, indent: int | None = None) -> list[str]:
    """Fixed-width lines no wider than WIDTH, broken only at spaces (paths stay whole)."""
    pad = " " * (len(prefix) if indent is None else indent)
    glued = _UNIT.sub("\\1\x00\\2", text)  # keep "300 s", "4.0 GiB" on one line
    lines = textwrap.wrap(glued, WIDTH, initial_indent=prefix, subsequent_indent=pad, break_long_words=False,
                          break_on_hyphens=False)
    return [line.replace("\x00", " ") for line in lines]


