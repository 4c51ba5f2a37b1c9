"""The scale test's boundary search: bracket by doubling, bisect to sqrt 2, with fewer probes than a grid."""

import json
import math

import pytest

from stockscale.experiments.scale_test import BoundarySearch, find_boundary
from tests.conftest import assert_clean_error

TINY_TRAIN = ["--hidden-size", "8", "--num-layers", "1"]
SQRT2 = math.sqrt(2)


def probes_for(boundary, start, ceiling, resolution=SQRT2):
    """The multipliers the search tries when every size up to `boundary` fits and every larger one fails."""
    tried = []

    def probe(multiplier):
        tried.append(multiplier)
        return "success" if multiplier <= boundary else "oom"

    find_boundary(BoundarySearch(start, ceiling, resolution), probe)
    return tried


@pytest.mark.parametrize("boundary", [1, 7, 100, 545, 771, 1000, 2180, 3083, 4000])
def test_the_bracket_ends_as_fine_as_a_sqrt2_grid_and_holds_the_boundary(boundary):
    tried = probes_for(boundary, start=385, ceiling=4360)
    successes = [m for m in tried if m <= boundary]
    failures = [m for m in tried if m > boundary]
    assert len(set(tried)) == len(tried)  # no size is run twice
    low, high = max(successes, default=None), min(failures)
    if low is not None:
        assert high <= math.ceil(low * math.sqrt(2))
    # the sqrt-2 grid from 0.5x to 8x of 545 that the demo ran before: 9 sizes plus 1x
    grid_runs = 1 + sum(1 for k in range(9) if round(545 * 0.5 * math.sqrt(2) ** k) <= boundary) + 1
    if 272 <= boundary <= 4360:
        assert len(tried) <= grid_runs


def test_a_good_first_guess_needs_three_probes():
    assert probes_for(545, start=385, ceiling=4360) == [385, 770, 544]
    assert probes_for(2180, start=1542, ceiling=4360) == [1542, 3084, 2181]


def test_no_failure_up_to_the_ceiling_ends_there():
    assert probes_for(10**9, start=385, ceiling=4360) == [385, 770, 1540, 3080, 4360]


def test_a_failure_at_the_first_guess_halves_down_to_one():
    assert probes_for(0, start=20, ceiling=100) == [20, 10, 5, 2, 1]


def test_a_finer_resolution_costs_more_probes():
    coarse = probes_for(600, start=385, ceiling=4360)
    fine = probes_for(600, start=385, ceiling=4360, resolution=1.1)
    assert len(fine) > len(coarse)
    low, high = max(m for m in fine if m <= 600), min(m for m in fine if m > 600)
    assert high <= math.ceil(low * 1.1)


def test_an_error_ends_the_search():
    tried = []

    def probe(multiplier):
        tried.append(multiplier)
        return "error" if multiplier > 500 else "success"

    find_boundary(BoundarySearch(385, 4360), probe)
    assert tried == [385, 770]


def test_scale_test_search_writes_the_documented_additions(cli, tmp_path):
    ran = cli("scale-test", "--search", "2:4", "--max-steps", "1", *TINY_TRAIN, "--out", tmp_path / "st")
    assert ran.code == 0, ran.err
    doc = json.loads((tmp_path / "st" / "results.json").read_text())
    assert doc["complete"] and doc["kind"] == "scale_test" and doc["format_version"] == 1
    assert doc["settings"]["search"] == {"method": "bracket-bisect", "start": 2, "ceiling": 4,
                                         "resolution": math.sqrt(2)}
    assert [run["multiplier"] for run in doc["results"]] == [2, 4] == doc["settings"]["multipliers"]
    assert [run["probe"] for run in doc["results"]] == [1, 2]
    assert all(run["status"] == "success" for run in doc["results"])
    assert doc["boundary"] == {"largest_success": 4, "smallest_failure": None, "ratio": None}
    assert "boundary search from 2x up to 4x" in ran.out


def test_a_grid_run_says_it_was_a_grid(cli, tmp_path):
    ran = cli("scale-test", "--multipliers", "1", "--max-steps", "1", *TINY_TRAIN, "--out", tmp_path / "st")
    assert ran.code == 0, ran.err
    doc = json.loads((tmp_path / "st" / "results.json").read_text())
    assert doc["settings"]["search"] == {"method": "grid"} and doc["settings"]["multipliers"] == [1]
    assert doc["boundary"]["largest_success"] == 1


def test_bad_search_flags(cli):
    assert_clean_error(cli("scale-test", "--search", "100"), "START:CEILING")
    assert_clean_error(cli("scale-test", "--search", "500:100"), "ceiling")
    assert_clean_error(cli("scale-test", "--search", "0:100"), "--search")
    assert_clean_error(cli("scale-test", "--search", "1:100", "--multipliers", "1,2"), "--multipliers")
    assert_clean_error(cli("scale-test", "--search", "1:100", "--resolution", "1"), "--resolution")
    assert_clean_error(cli("scale-test", "--search", "1:100", "--resolution", "nan"), "--resolution")


@pytest.mark.slow
def test_the_search_finds_a_real_memory_boundary(cli, tmp_path):
    # The memory loader needs ~1 MB a replica: under 700 MiB one process runs out a few hundred replicas up.
    ran = cli("scale-test", "--search", "250:2000", "--max-steps", "1", "--memory-limit", "700MiB", *TINY_TRAIN,
              "--out", tmp_path / "st")
    assert ran.code == 0, ran.err
    doc = json.loads((tmp_path / "st" / "results.json").read_text())
    statuses = {run["multiplier"]: run["status"] for run in doc["results"]}
    low, high = doc["boundary"]["largest_success"], doc["boundary"]["smallest_failure"]
    assert low is not None and high is not None and high <= math.ceil(low * math.sqrt(2))
    assert all(status == "success" for m, status in statuses.items() if m <= low)
    assert all(status == "oom" for m, status in statuses.items() if m >= high)
    assert len(statuses) <= 5
