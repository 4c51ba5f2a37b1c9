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


# Go's time.RFC3339Nano layout ("2006-01-02T15:04:05.999999999Z07:00"), which Katib's TEXT metrics parser
# applies to a line's first space-separated field (kubeflow/katib v0.19.0, pkg/metricscollector/v1beta1/
# file-metricscollector/file-metricscollector.go): date, T, time, optional fraction, then Z or +hh:mm.
_RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"


def test_the_epoch_line_starts_with_a_timestamp_katibs_collector_reads() -> None:
    import re
    from datetime import UTC, datetime, timedelta, timezone

    from stockscale.console import epoch_line
    from stockscale.worker import parse_epoch_line

    when = datetime(2026, 12, 4, 18, 30, 1, 250000, tzinfo=timezone(timedelta(hours=2)))
    line = epoch_line(2, 0.5, 0.25, 1.5, now=when)
    stamp, _, rest = line.partition(" ")
    assert re.match(_RFC3339, stamp), stamp
    assert stamp == "2026-12-04T16:30:01.250000Z"  # UTC, whatever the clock's zone
    assert datetime.fromisoformat(stamp) == when.astimezone(UTC)
    assert json.loads(rest)["event"] == "epoch"
    assert parse_epoch_line(line) is not None and parse_epoch_line(line).val_loss == 0.25
    assert parse_epoch_line(rest) == parse_epoch_line(line)  # an older worker's line, without the time
    assert parse_result_line([line]) is None  # a progress line is still never a result
    assert parse_epoch_line("2026-12-04T16:30:01Z epoch 2/3 val_loss 0.25") is None
