"""The loaded base series, cached on disk, so that a fresh process does not parse its source again.

Every scale-test probe and search trial is a fresh process that would otherwise read and parse the same
gzipped CSV (all tickers, 60 ms or more). The series after `load_source` (narrowed to its dates, validated)
is stored once per source content and date range as two safe files, no pickle:

- `<key>.npz`: `dates` (int64 days since 1970-01-01) and `values` (float64 [T, 5]), read with
  allow_pickle=False;
- `<key>.json`: what the entry is (source spec, range, the source file's sha256) and the npz file's sha256.

The key hashes the source file's bytes, so an edited CSV or another version of the sample data is a new
entry. A cached entry is used only when its record matches and its bytes hash to the recorded value and its
arrays have the right shapes, dtypes and values (finite, positive prices, strictly increasing dates);
anything else is ignored and rebuilt. Writing is best effort (write-then-rename); a cache that cannot be
written is simply not used. Yahoo data is not cached: it changes and comes from the network.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from stockscale.data.csv_prices import read_regular_file
from stockscale.data.sources import PriceSeries, load_source
from stockscale.files import replace_with

FORMAT_VERSION = 1


def source_bytes(spec: str) -> bytes | None:
    """The bytes a bundled or CSV source is parsed from; None when there are none to key on (yahoo, missing)."""
    kind, _, rest = spec.partition(":")
    try:
        if kind == "bundled":
            return resources.files("bokeh_sampledata").joinpath("_data", "stocks.csv.gz").read_bytes()
        if kind == "csv":
            return read_regular_file(Path(rest))  # a device or FIFO is refused here, before a byte is read
    except (OSError, ModuleNotFoundError):
        return None
    return None


def _record(spec: str, start: date | None, end: date | None, content: bytes) -> dict[str, Any]:
    return {"format_version": FORMAT_VERSION, "spec": spec, "start": str(start) if start else None,
            "end": str(end) if end else None, "source_sha256": hashlib.sha256(content).hexdigest()}


def _read(folder: Path, key: str, record: dict[str, Any]) -> PriceSeries | None:
    """The cached series when every check passes, else None."""
    try:
        meta = json.loads((folder / f"{key}.json").read_text())
        blob = (folder / f"{key}.npz").read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("record") != record or not isinstance(meta.get("name"), str):
        return None
    if hashlib.sha256(blob).hexdigest() != meta.get("npz_sha256"):
        return None
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as arrays:
            days, values = arrays["dates"], arrays["values"]
    except (OSError, ValueError, KeyError):
        return None
    if days.dtype != np.int64 or days.ndim != 1 or values.dtype != np.float64 or values.shape != (len(days), 5):
        return None
    if len(days) < 2 or not (np.diff(days) > 0).all() or not np.isfinite(values).all() or (values[:, :4] <= 0).any():
        return None
    return PriceSeries(meta["name"], days.astype("datetime64[D]"), values)


def _write(folder: Path, key: str, record: dict[str, Any], series: PriceSeries) -> None:
    """Write the entry (npz first, then the record that vouches for it), each by write-then-rename."""
    buffer = io.BytesIO()
    np.savez(buffer, dates=series.dates.astype("datetime64[D]").astype(np.int64), values=series.values)
    blob = buffer.getvalue()
    meta = {"record": record, "name": series.name, "npz_sha256": hashlib.sha256(blob).hexdigest()}
    vouch = json.dumps(meta, indent=1).encode()
    folder.mkdir(parents=True, exist_ok=True)
    replace_with(folder / f"{key}.npz", lambda handle: handle.write(blob))
    replace_with(folder / f"{key}.json", lambda handle: handle.write(vouch))


def load_series(spec: str, start: date | None, end: date | None, cache: Path | None) -> PriceSeries:
    """`load_source(spec, start, end)`, from `cache` (a folder) when a valid entry is there, else stored there."""
    content = source_bytes(spec) if cache is not None else None
    if cache is None or content is None:
        return load_source(spec, start, end)
    record = _record(spec, start, end, content)
    key = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:24]
    cached = _read(cache, key, record)
    if cached is not None:
        return cached
    series = load_source(spec, start, end)
    if source_bytes(spec) != content:
        return series  # the file changed while it was parsed: store nothing under the old content's key
    with contextlib.suppress(OSError):  # a read-only or full cache folder costs only the time saved
        _write(cache, key, record, series)
    return series
