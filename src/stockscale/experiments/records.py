"""What the results entries copy from a run's metrics: a metrics.json's baselines narrowed to one split.

The entries themselves are the results files' pydantic models (experiments/results.py), one per file, which
the writers build and the readers validate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def split_baselines(baselines: Mapping[str, Any] | None, split: str = "test") -> dict[str, dict[str, Any]]:
    """metrics.json's `baselines` narrowed to one split: name -> score (drift's with its daily_log_return)."""
    out: dict[str, dict[str, Any]] = {}
    for name, entry in (baselines or {}).items():
        if isinstance(entry, Mapping) and isinstance(entry.get(split), Mapping):
            out[name] = dict(entry[split])
            if "daily_log_return" in entry:
                out[name]["daily_log_return"] = entry["daily_log_return"]
    return out
