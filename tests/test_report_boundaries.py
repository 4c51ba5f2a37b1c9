"""`compare` claims a boundary only where memory or time ran out, and says when a scale test is partial."""

from __future__ import annotations

import json
from pathlib import Path

from stockscale.experiments.report import format_comparison
from stockscale.experiments.results import load_results
from tests.test_report import GIB, MIB, flat, scale_row, write_scale


def test_an_error_is_not_taken_for_a_memory_boundary(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_scale(results, "scale_test_local", "local",
                [scale_row(1, "success", [420 * MIB]), scale_row(10, "error", [], detail="exit code 1")])
    write_scale(results, "scale_test_cluster", "cluster",
                [scale_row(1, "success", [400 * MIB]), scale_row(10, "success", [700 * MIB])], workers=2)
    text = flat(format_comparison(load_results(results)))

    assert "local reached 1x and never hit a memory or time limit" in text
    assert "error at 10x: not counted as a boundary" in text
    assert "failed at 10x" not in text and ">= 10.0x" not in text


def test_an_oom_still_is_a_boundary(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_scale(results, "scale_test_local", "local",
                [scale_row(1, "success", [420 * MIB]), scale_row(10, "oom", [GIB], detail="cgroup OOM kill")])
    write_scale(results, "scale_test_cluster", "cluster",
                [scale_row(1, "success", [400 * MIB]), scale_row(10, "success", [700 * MIB])], workers=2)
    text = flat(format_comparison(load_results(results)))

    assert "local reached 1x, failed at 10x (OOM)" in text


def test_an_interrupted_scale_test_is_marked_partial(tmp_path: Path) -> None:
    results = tmp_path / "results"
    path = write_scale(results, "scale_test_local", "local", [scale_row(1, "success", [420 * MIB])])
    data = json.loads(path.read_text())
    data.update(complete=False, finished_at=None)
    path.write_text(json.dumps(data))
    write_scale(results, "scale_test_cluster", "cluster", [scale_row(1, "success", [400 * MIB])], workers=2)
    text = flat(format_comparison(load_results(results)))

    assert "PARTIAL (stopped before the end); file" in text
    assert "Note: local is PARTIAL" in text
    assert "cluster is PARTIAL" not in text
