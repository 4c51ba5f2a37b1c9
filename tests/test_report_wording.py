"""Figures that read as what they are: the search table's ideal column, the boundary ratio's bracket and the
memory each side had."""

from pathlib import Path

from stockscale.experiments.report import format_comparison
from stockscale.experiments.results import load_results
from tests.test_report import flat, full_results  # noqa: F401 (a fixture)


def test_the_boundary_ratio_prints_its_bracket_and_the_memory_on_each_side(full_results: Path) -> None:  # noqa: F811
    text = flat(format_comparison(load_results(full_results)))
    # local: 100x ok, 200x OOM; cluster of 4: 400x ok, 800x OOM; 1 GiB per worker
    assert "the cluster handled 4.0x larger datasets (both boundaries measured)" in text
    assert "so the ratio lies between 2.00x and 8.00x" in text
    assert "one process with 1 x 1.0 GiB; the cluster with 4 x 1.0 GiB = 4.0 GiB (4x as much)" in text


def test_the_search_tables_computed_column_says_ideal(full_results: Path) -> None:  # noqa: F811
    text = format_comparison(load_results(full_results))
    header = next(line for line in text.splitlines() if "total time" in line and "speedup" in line)
    assert "ideal" in header and "(medians)" not in header
    assert "an ideal computed from the trials, not a measured speed-up" in flat(text)
