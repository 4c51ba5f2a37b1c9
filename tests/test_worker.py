"""The worker contract: one result line written, one parser for every launcher."""

from __future__ import annotations

import json

import pytest

from stockscale.errors import InputError, PortInUse, StockscaleError
from stockscale.worker import EXIT_INPUT, EXIT_PORT_IN_USE, json_object, parse_result_line, result_line


def test_the_result_line_leaves_out_the_history_and_refuses_nan() -> None:
    line = result_line({"status": "success", "val": {"loss": 0.5}, "history": [{"epoch": 1}]})
    assert json.loads(line) == {"status": "success", "val": {"loss": 0.5}}
    with pytest.raises(ValueError):
        result_line({"val": {"loss": float("nan")}})


def test_the_result_is_the_last_json_object_whatever_follows_it() -> None:
    lines = ['{"event": "epoch", "epoch": 1}', '{"status": "success", "rank": 0}', "a warning printed at exit",
             "[1, 2]", "{broken", ""]
    assert parse_result_line(lines) == {"status": "success", "rank": 0}
    assert parse_result_line(["no json here"]) is None
    assert json_object('  {"a": 1}  ') == {"a": 1} and json_object('"text"') is None


def test_the_errors_exit_with_the_contracts_codes() -> None:
    assert InputError.exit_code == EXIT_INPUT == 2
    assert PortInUse.exit_code == EXIT_PORT_IN_USE == 4
    assert StockscaleError.exit_code == 1


def test_a_progress_line_is_never_a_result() -> None:
    epoch = '{"event": "epoch", "epoch": 1, "val_loss": 0.7}'
    assert parse_result_line(["epoch 1/3", epoch]) is None  # killed after an epoch: no result
    assert parse_result_line([epoch, '{"status": "success"}', epoch]) == {"status": "success"}
