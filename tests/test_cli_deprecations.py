"""Old spellings of flags keep working, each with one line on stderr (cli/parser.py's `modernise`)."""

from __future__ import annotations

import argparse

import pytest

from stockscale.cli.parser import UsageError, flag_renamed, modernise, value_renamed

SEARCH_SPELLINGS = (
    value_renamed("backend", "sequential", "local", also={"parallel": 1}, why="one trial at a time"),
    value_renamed("backend", "parallel", "local"),
    flag_renamed("workers", "parallel", why="trials at once; --workers is DDP ranks"),
)


def test_an_old_value_is_rewritten_with_one_notice_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    args = modernise(argparse.Namespace(backend="sequential", workers=None, parallel=None), SEARCH_SPELLINGS)
    assert (args.backend, args.parallel) == ("local", 1)
    err = capsys.readouterr().err.splitlines()
    assert err == ["warning: --backend sequential is deprecated; use --backend local --parallel 1 "
                   "(one trial at a time)"]


def test_an_old_flag_moves_to_the_new_one_and_a_clash_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    args = modernise(argparse.Namespace(backend="parallel", workers=3, parallel=None), SEARCH_SPELLINGS)
    assert (args.backend, args.parallel, args.workers) == ("local", 3, None)
    assert len(capsys.readouterr().err.splitlines()) == 2
    with pytest.raises(UsageError, match="--workers 3 and --parallel 2 both say it: --parallel alone"):
        modernise(argparse.Namespace(backend="local", workers=3, parallel=2), SEARCH_SPELLINGS)


def test_the_new_vocabulary_says_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    args = modernise(argparse.Namespace(backend="local", workers=None, parallel=4), SEARCH_SPELLINGS)
    assert (args.backend, args.parallel) == ("local", 4)
    assert capsys.readouterr().err == ""
