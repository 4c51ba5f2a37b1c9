"""Help that answers: every flag of every command explains itself, and the parsers' messages name a flag once."""

from __future__ import annotations

import argparse

import pytest

from stockscale.cli import build_parser
from tests.conftest import assert_clean_error


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) for the top-level parser and every subcommand under it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))


COMMANDS = [path for path, _ in walk(build_parser())]


def test_the_walk_reaches_every_command():
    assert {"train", "data scale", "data info", "scale-test", "search", "compare", "demo", "k8s render",
            "k8s status", "k8s logs", "k8s delete"} <= {" ".join(path) for path in COMMANDS}


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "stockscale")
def test_every_flag_and_argument_has_help(path):
    parser = dict(walk(build_parser()))[path]
    missing = [action.option_strings or [action.dest] for action in parser._actions
               if not (action.help or "").strip()]
    assert missing == []


@pytest.mark.parametrize(("path", "flag", "shown"), [
    (("search",), "--backend", "(default sequential)"),
    (("scale-test",), "--epochs", "(default 1)"),
    (("scale-test",), "--mode", "(default local)"),
    (("compare",), "--results", "(default results/)"),
])
def test_defaults_are_shown(path, flag, shown):
    parser = dict(walk(build_parser()))[path]
    action = next(action for action in parser._actions if flag in action.option_strings)
    assert shown in parser._get_formatter()._expand_help(action)
    assert shown in " ".join(parser.format_help().split())


def test_render_is_offline_and_does_not_offer_cluster_connection_flags():
    text = dict(walk(build_parser()))[("k8s", "render")].format_help()
    assert "--kubeconfig" not in text and "--context" not in text
    assert "(--backend kubernetes)" not in text


@pytest.mark.parametrize(("args", "message"), [
    (["train", "--workers", "0"], "argument --workers: must be at least 1, not 0"),
    (["train", "--workers", "1.5"], "argument --workers: '1.5' is not an integer"),
    (["train", "--workers", "two"], "argument --workers: 'two' is not a number"),
    (["train", "--timeout", "-1"], "argument --timeout: must not be negative, not -1"),
    (["train", "--timeout", "soon"], "argument --timeout: 'soon' is not a number"),
    (["train", "--memory-limit", "lots"], "argument --memory-limit: 'lots' is not a size"),
    (["k8s", "logs", "r", "--trial", "-1"], "argument --trial: must not be negative, not -1"),
    (["scale-test", "--multipliers", "1,x"], "argument --multipliers: value 'x' is not a number"),
    (["scale-test", "--multipliers", ","], "argument --multipliers: needs at least one value"),
])
def test_parser_messages_name_the_flag_once(cli, args, message):
    ran = cli(*args)
    assert_clean_error(ran, message)
    flag = message.split()[1].rstrip(":")
    assert ran.err.count(flag) == 1, ran.err


def test_a_date_outside_the_data_names_the_data_range(cli, tmp_path):
    ran = cli("train", "--start", "2020-01-01", "--out", tmp_path / "run")
    assert_clean_error(ran, "0 trading days", "bundled series runs from 2000-03-01 to 2013-03-01")
    assert not (tmp_path / "run").exists()


def test_training_flags_are_generated_from_the_config_fields() -> None:
    """One flag per TrainConfig field, its help and default the field's own: they cannot drift apart."""
    from stockscale.cli import build_parser
    from stockscale.config import TrainConfig

    train = next(action for action in build_parser()._actions if getattr(action, "choices", None)
                 and "train" in action.choices).choices["train"]
    flags = {action.dest: action for action in train._actions}
    for name, info in TrainConfig.model_fields.items():
        assert name in flags, name
        assert info.description and info.description in flags[name].help
        if info.default is not None:
            assert f"(default {info.default})" in flags[name].help
