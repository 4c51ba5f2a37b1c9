"""The projection's arithmetic, checked against values worked out by hand."""

from __future__ import annotations

import pytest

from stockscale.errors import InputError
from stockscale.experiments.projection import (
    GIB,
    Projection,
    ProjectionSettings,
    build_projection_settings,
    fit_line,
    format_projection,
    lpt_makespan,
    max_multiplier,
    project_scale,
    project_search,
)

MIB = 1024**2


def test_makespan_longest_first_on_the_least_loaded_node() -> None:
    trials = [5.0, 10.0, 3.0, 8.0, 6.0]
    # 2 nodes, longest first: A=10, B=8, B=8+6=14, A=10+5=15, B=14+3=17
    assert lpt_makespan(trials, 2) == pytest.approx(17.0)
    # with 2 s start-up per trial: A=12, B=10, B=18, A=19, B=23
    assert lpt_makespan(trials, 2, overhead=2.0) == pytest.approx(23.0)
    assert lpt_makespan(trials, 1, overhead=2.0) == pytest.approx(32.0 + 5 * 2.0)
    assert lpt_makespan(trials, 5, overhead=2.0) == pytest.approx(12.0)
    assert lpt_makespan(trials, 50, overhead=2.0) == pytest.approx(12.0)  # more nodes than trials


def test_cost_bills_every_node_for_the_whole_makespan() -> None:
    settings = ProjectionSettings(nodes=[1, 2, 3], pod_startup_seconds=0, node_cpus=2, node_memory_bytes=4 * GIB,
                                  price_vcpu_hour=0.04, price_gib_hour=0.005)
    assert settings.node_price_per_hour() == pytest.approx(2 * 0.04 + 4 * 0.005)  # $0.10
    search = project_search([1800.0, 1800.0], settings, "test", measured_sequential_seconds=3600.0)

    one, two, three = search.rows
    assert (one.makespan_seconds, one.node_hours, one.cost_dollars) == pytest.approx((3600, 1.0, 0.10))
    assert (two.makespan_seconds, two.node_hours, two.cost_dollars) == pytest.approx((1800, 1.0, 0.10))
    assert (three.makespan_seconds, three.node_hours) == pytest.approx((1800, 1.5))  # the third node idles
    assert three.cost_dollars == pytest.approx(0.15)
    assert two.speedup == pytest.approx(2.0)


def test_no_trials_no_search_projection() -> None:
    assert project_search([], ProjectionSettings(), "test") is None


def test_largest_multiplier_from_a_straight_line_fit() -> None:
    # per-worker peak = 100 MiB + 2 MiB x (multiplier / workers), measured exactly at three shares
    points = [(1, 102 * MIB), (10, 120 * MIB), (50, 200 * MIB)]
    fit = fit_line(points)
    assert fit.intercept == pytest.approx(100 * MIB) and fit.slope == pytest.approx(2 * MIB)
    assert fit.max_residual == pytest.approx(0, abs=1)

    # 1 GiB per worker leaves 924 MiB for data: 462 multiples per worker
    assert max_multiplier(fit, workers=1, memory_bytes=GIB) == 462
    assert max_multiplier(fit, workers=4, memory_bytes=GIB) == 4 * 462
    assert max_multiplier(fit, workers=4, memory_bytes=100 * MIB) is None  # the fixed part alone fills it

    projection = project_scale("memory", points, ProjectionSettings(nodes=[1, 4], node_memory_bytes=GIB))
    assert [(row.workers, row.max_multiplier) for row in projection.rows] == [(1, 462), (4, 1848)]


def test_no_fit_without_two_distinct_shares_or_with_a_flat_line() -> None:
    settings = ProjectionSettings()
    assert project_scale("lazy", [(10, 300 * MIB), (10, 310 * MIB)], settings).fit is None
    flat = project_scale("stream", [(1, 300 * MIB), (100, 290 * MIB)], settings)
    assert flat.rows == [] and "did not grow" in flat.note


def test_settings_from_cli_values() -> None:
    settings = build_projection_settings({"nodes": [8, 1, 8], "node_memory_bytes": "2Gi", "price_vcpu_hour": None})
    assert settings.nodes == [1, 8] and settings.node_memory_bytes == 2 * GIB and settings.price_vcpu_hour == 0.04


@pytest.mark.parametrize("values, field", [
    ({"nodes": [0, 2]}, "nodes"),
    ({"price_gib_hour": -1}, "price_gib_hour"),
    ({"node_memory_bytes": "lots"}, "node_memory"),
    ({"pod_startup_seconds": -5}, "pod_startup_seconds"),
    ({"gpus": 1}, "gpus"),
])
def test_bad_settings_are_one_line_input_errors(values: dict, field: str) -> None:
    with pytest.raises(InputError, match=field) as caught:
        build_projection_settings(values)
    assert "\n" not in str(caught.value)


def test_the_text_says_it_is_a_projection_and_prints_its_assumptions() -> None:
    settings = ProjectionSettings(nodes=[2], pod_startup_seconds=30)
    search = project_search([60.0, 60.0], settings, "the sequential search", 120.0)
    text = format_projection(Projection(settings, search, "", [], "no scale test results"))

    assert "projection, not a measurement" in text
    assert "pod start-up 30 s per trial" in text and "$0.04/vCPU-hour" in text
    assert "90.0 s" in text  # 2 nodes: 60 s + 30 s start-up each, side by side
    assert "not projected: no scale test results" in text
