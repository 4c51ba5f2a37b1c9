"""Only regular files are read and every size is bounded (issue 27): a config or space file that is a FIFO or
a device gets one line before a byte is read, a grid past MAX_GRID_POINTS is refused naming its size (and a
sampler over it never lists it), a timeout of 0 is refused by the parser, and compare's cost follows the
trials that ran, not the length of the space's lists."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from stockscale.bounds import MAX_GRID_POINTS
from tests.conftest import TINY, assert_clean_error


@pytest.mark.parametrize("flag", ["--config", "--space"])
def test_a_fifo_or_a_device_as_a_config_or_space_is_one_line_at_once(cli, tmp_path, flag):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opened blocking, this would wait forever for a writer
    command = ["search", "--out", tmp_path / "s"] if flag == "--space" else ["train", "--out", tmp_path / "r"]
    assert_clean_error(cli(*command, flag, fifo), str(fifo), "not a regular file")
    assert_clean_error(cli(*command, flag, "/dev/zero"), "/dev/zero", "not a regular file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]


def test_a_config_file_past_the_size_bound_is_refused_naming_its_size(cli, tmp_path):
    big = tmp_path / "big.yaml"
    with big.open("wb") as handle:
        handle.truncate(5 * 2**20)
    assert_clean_error(cli("train", "--config", big, "--out", tmp_path / "r"), str(big), "5,242,880 bytes")


def test_a_grid_past_the_bound_is_refused_naming_its_size_and_a_sampler_never_lists_it(cli, tmp_path):
    space = tmp_path / "space.yaml"
    values = ", ".join(str(0.0001 * (i + 1)) for i in range(1000))
    space.write_text(f"lr: [{values}]\nhidden_size: [4]\ndropout: [{', '.join(str(i / 1000) for i in range(100))}]"
                     "\nbatch_size: [8, 16]\n")  # 200,000 points
    started = time.monotonic()
    assert_clean_error(cli("search", "--space", space, *TINY, "--out", tmp_path / "s"), "200,000 points",
                       f"{MAX_GRID_POINTS:,}")
    assert time.monotonic() - started < 5
    assert not (tmp_path / "s").exists()
    ran = cli("search", "--space", space, "--strategy", "random", "--trials", "1", *TINY, "--out", tmp_path / "r")
    assert ran.code == 0, ran.err


@pytest.mark.parametrize(("args", "flag"), [
    (["search", "--trial-timeout", "0"], "--trial-timeout"),
    (["scale-test", "--timeout", "0"], "--timeout"),
    (["train", "--timeout", "0"], "--timeout"),
    (["search", "--backend", "kubernetes", "--startup-timeout", "0"], "--startup-timeout"),
])
def test_a_timeout_of_zero_is_refused_by_the_parser_before_anything_is_written(cli, tmp_path, monkeypatch, args,
                                                                              flag):
    monkeypatch.chdir(tmp_path)
    assert_clean_error(cli(*args), flag, "more than 0")
    assert list(tmp_path.iterdir()) in ([], [tmp_path / "cache"])


@pytest.mark.slow
def test_compare_over_a_3_trial_search_of_a_100000_value_list_is_fast(cli, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(f"lr: [{', '.join(str(1e-4 + i * 1e-8) for i in range(100_000))}]\nhidden_size: [4, 8]\n")
    results = tmp_path / "results"
    ran = cli("search", "--space", space, "--strategy", "random", "--trials", "3", *TINY, "--out",
              results / "hp_search_local")
    assert ran.code == 0, ran.err
    assert len(json.loads((results / "hp_search_local" / "summary.json").read_text())["settings"]["space"]["lr"]) \
        == 100_000
    started = time.monotonic()
    ran = cli("compare", "--results", results)
    seconds = time.monotonic() - started
    assert ran.code == 0, ran.err
    assert seconds < 10, seconds
    report = (results / "report" / "report.md").read_text()
    assert "![grid](grid.png)" in report  # drawn from the 3 trials' cells, not the 200,000 of the lists
    assert Path(results / "report" / "grid.png").stat().st_size > 0
