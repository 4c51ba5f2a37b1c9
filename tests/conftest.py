"""Shared fixtures: run the real command line, in-process (fast) or as a subprocess (end to end)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from stockscale.cli import main

REPO = Path(__file__).resolve().parents[1]

# The smallest training that still exercises everything: a few steps of a tiny LSTM.
TINY = ["--epochs", "1", "--max-steps", "3", "--hidden-size", "8", "--num-layers", "1", "--threads", "1"]


@dataclass
class Ran:
    code: int
    out: str
    err: str

    @property
    def last_json(self) -> dict:
        return json.loads(self.out.strip().splitlines()[-1])


@pytest.fixture
def cli(capsys):
    """Run `stockscale ARGS` in this process; returns exit code, stdout and stderr."""

    def run(*args: str) -> Ran:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return run


@pytest.fixture
def cli_process(tmp_path):
    """Run `python -m stockscale ARGS` as a real process (what users and pods run)."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Ran:
        full_env = {**os.environ, "STOCKSCALE_CACHE": str(tmp_path / "cache"), **(env or {})}
        done = subprocess.run([sys.executable, "-m", "stockscale", *map(str, args)], capture_output=True,
                              text=True, env=full_env, timeout=timeout, cwd=tmp_path)
        return Ran(done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Datasets that `--multiplier` caches go to the test's own folder."""
    monkeypatch.setenv("STOCKSCALE_CACHE", str(tmp_path / "cache"))


def assert_clean_error(ran: Ran, *words: str) -> None:
    """Exit 2, one line on stderr that names the problem, no traceback."""
    assert ran.code == 2, (ran.code, ran.err)
    lines = ran.err.strip().splitlines()
    assert len(lines) == 1, ran.err
    assert "Traceback" not in ran.err
    assert lines[0].startswith("stockscale: error: ")
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])


def write_csv(path: Path, rows: int = 200, header: str = "Date,Open,High,Low,Close,Volume",
              start_price: float = 100.0) -> Path:
    """A plausible daily price CSV (business days, a gentle random walk) for tests."""
    import numpy as np

    rng = np.random.default_rng(0)
    dates = np.busday_offset("2010-01-04", np.arange(rows), roll="forward")
    close = start_price * np.exp(np.cumsum(rng.normal(0, 0.01, rows)))
    columns = [c.strip().lower() for c in header.split(",")]
    lines = [header]
    for i in range(rows):
        values = {"date": str(dates[i]), "open": close[i] * 0.99, "high": close[i] * 1.01, "low": close[i] * 0.98,
                  "close": close[i], "volume": 1e6 + i, "adj close": close[i], "ticker": "TEST"}
        lines.append(",".join(str(values[c]) if c != "date" else values[c] for c in columns))
    path.write_text("\n".join(lines) + "\n")
    return path


def our_cgroups(pid: int | None = None) -> list[Path]:
    """stockscale cgroups the launcher with `pid` (default: this test process) created and did not remove."""
    from stockscale.limits import CGROUP_PREFIX, own_cgroup_dir

    found: list[Path] = []
    for version in (1, 2):
        directory = own_cgroup_dir(version)
        if directory is not None:
            found += directory.glob(f"{CGROUP_PREFIX}{pid or os.getpid()}-*")
    return found
