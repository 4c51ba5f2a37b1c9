"""The fake worker's settings as a TrainConfig: a runner's job carries a TrainConfig (validated where the job is
made), and tests/helpers/fake_worker.py reads keys no real run has (behave, delay, ranks ...)."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict

from stockscale.config import TrainConfig


class FakeConfig(TrainConfig):
    """TrainConfig plus any key the fake worker reads; overrides() carries them as it carries fields."""

    model_config = ConfigDict(extra="allow")


def fake_config(values: dict[str, Any]) -> FakeConfig:
    """`values` as given, unvalidated: the fake worker trains nothing, and a test may hand it a combination no
    real run accepts (data beside start) to see how the runner serialises each kind of value."""
    return FakeConfig.model_construct(_fields_set=set(values), **values)
