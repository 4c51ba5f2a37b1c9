"""The scale test's boundary search: bracket by doubling, bisect to sqrt 2, with fewer probes than a grid."""

import json
import math

import pytest

from stockscale.experiments.scale_test import BoundarySearch, find_boundary
from tests.conftest import assert_clean_error

TINY_TRAIN = ["--hidden-size", "8", "--num-layers", "1"]
SQRT2 = math.sqrt(2)


def probes_for(boundary, base, ceiling, start_step=0, resolution=SQRT2):
    """The multipliers the search tries when every size up to `boundary` fits and every larger one fails."""
    tried = []

    def probe(multiplier):
        tried.append(multiplier)
        return "success" if multiplier <= boundary else "oom"

    find_boundary(BoundarySearch(base, ceiling, start_step, resolution), probe)
    return tried


# The sqrt-2 grid the demo walked before (1x, then 545 * sqrt(2)**k from 0.5x to 8x) and the search that
# replaced it: the same lattice, first probe one step under the expected boundary.
GRID = [1] + [max(2, round(545 * SQRT2**k)) for k in range(-2, 7)]


@pytest.mark.parametrize("boundary", [1, 7, 100, 300, 545, 771, 1000, 2180, 3083, 4000, 10**6])
@pytest.mark.parametrize("start_step", [-1, 3])
def test_the_bracket_is_as_fine_as_the_grid_and_never_costs_more_probes(boundary, start_step):
    tried = probes_for(boundary, 545, 4360, start_step)
    assert len(set(tried)) == len(tried)  # no size is run twice
    assert all(max(1, round(545 * SQRT2 ** round(math.log(m / 545, SQRT2)))) == m for m in tried if m > 1)
    low = max((m for m in tried if m <= boundary), default=None)
    high = min((m for m in tried if m > boundary), default=None)
    if low is not None and high is not None:
        assert high <= math.ceil(low * SQRT2) + 1  # neighbours on the lattice
    if high is None:
        assert low == 4360  # no failure up to the ceiling
    if boundary >= 272:  # a boundary inside the grid's span: the grid ran every size up to its first failure
        grid_runs = sum(1 for m in GRID if m <= boundary) + (1 if boundary < GRID[-1] else 0)
        guessed_high = tried[0] > boundary  # a first guess above the boundary costs halvings the grid did not
        assert len(tried) <= grid_runs + (2 if guessed_high else 0)


def test_a_good_first_guess_needs_three_probes():
    assert probes_for(600, 545, 4360, start_step=-1) == [385, 771, 545]
    assert probes_for(2500, 545, 4360, start_step=3) == [1541, 3083, 2180]


def test_no_failure_up_to_the_ceiling_ends_there():
    assert probes_for(10**9, 545, 4360, start_step=-1) == [385, 771, 1541, 3083, 4360]
    assert probes_for(10**9, 100, 5000) == [100, 200, 400, 800, 1600, 3200, 4525]  # the last lattice point below


def test_a_failure_at_the_first_guess_halves_down_to_one():
    assert probes_for(0, 20, 100) == [20, 10, 5, 2, 1]


def test_a_finer_resolution_costs_more_probes():
    coarse = probes_for(600, 385, 4360)
    fine = probes_for(600, 385, 4360, resolution=1.1)
    assert len(fine) > len(coarse)
    low, high = max(m for m in fine if m <= 600), min(m for m in fine if m > 600)
    assert high <= math.ceil(low * 1.1) + 1


def test_an_error_ends_the_search():
    tried = []

    def probe(multiplier):
        tried.append(multiplier)
        return "error" if multiplier > 500 else "success"

    find_boundary(BoundarySearch(385, 4360), probe)
    assert tried == [385, 770]


def test_a_start_outside_the_ceiling_is_refused():
    with pytest.raises(ValueError, match="start"):
        BoundarySearch(500, 100)


def test_scale_test_search_writes_the_documented_additions(cli, tmp_path):
    ran = cli("scale-test", "--search", "2:4", "--max-steps", "1", *TINY_TRAIN, "--out", tmp_path / "st")
    assert ran.code == 0, ran.err
    doc = json.loads((tmp_path / "st" / "results.json").read_text())
    assert doc["complete"] and doc["kind"] == "scale_test" and doc["format_version"] == 1
    assert doc["settings"]["search"] == {"method": "bracket-bisect", "base": 2, "start": 2, "ceiling": 4,
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
    assert_clean_error(cli("scale-test", "--resolution", "1.2"), "--search")


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
