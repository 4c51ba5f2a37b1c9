"""The search space: what each searched training setting may be, in Katib's terms.

A space file is a YAML mapping from a training setting (any `TrainConfig` field the search does not control
itself) to either

- a list of values: the grid's form, and for random and TPE a categorical choice among them; or
- a mapping in Katib's terms: `type: double | int | categorical`, with `min` and `max` (and optionally
  `log: true` for a log-uniform scale, `step` for a quantised one) for numbers, or `choices` for categorical.

One `Parameter` per setting serves every place a space goes: the grid's product, Optuna's `suggest_*` calls
(experiments/search), and Katib's `feasibleSpace` (launch/kubernetes/katib). Every bound and choice is checked
against TrainConfig when the file is read, so a trial never fails on a value the space allowed.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from stockscale.bounds import MAX_GRID_POINTS
from stockscale.config import TRAIN_FIELDS, build_train_config, canonical_name, one_line, read_yaml_mapping
from stockscale.errors import InputError

# Settings the search itself controls: a search over them would not be a hyperparameter search.
NOT_SEARCHABLE = frozenset({"data", "threads", "device", "checkpoint_dir"})
Value = bool | int | float | str


class Parameter(BaseModel):
    """One searched setting: a numeric range (`double`, `int`) or a list of `choices` (`categorical`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    type: Literal["double", "int", "categorical"]
    min: float | None = None
    max: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Value] | None = None

    @model_validator(mode="after")
    def _check(self) -> Parameter:
        if self.type == "categorical":
            if self.min is not None or self.max is not None or self.log or self.step is not None:
                raise ValueError("categorical takes `choices`, not min/max/log/step")
            if self.choices is None:
                raise ValueError("categorical needs `choices`")
            if not self.choices:
                raise ValueError("choices is empty")
            if len(set(map(repr, self.choices))) != len(self.choices):
                raise ValueError("choices repeat a value")
            return self
        if self.choices is not None:
            raise ValueError(f"{self.type} takes min and max, not choices")
        if self.min is None or self.max is None:
            raise ValueError(f"{self.type} needs both min and max")
        if self.min > self.max:
            raise ValueError(f"min {_text(self.min)} is greater than max {_text(self.max)}")
        if self.log and self.min <= 0:
            raise ValueError(f"log scale needs min > 0, not {_text(self.min)}")
        if self.log and self.step is not None:
            raise ValueError("log scale and step cannot be combined")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be positive, not {_text(self.step)}")
        if self.type == "int":
            for name in ("min", "max", "step"):
                value = getattr(self, name)
                if value is not None and value != int(value):
                    raise ValueError(f"int {name} must be a whole number, not {_text(value)}")
        return self

    @property
    def is_list(self) -> bool:
        """A finite list of values: the only kind a grid can walk."""
        return self.type == "categorical"

    def bounds(self) -> list[Value]:
        """The values that decide whether every value of this parameter is a valid setting."""
        if self.choices is not None:
            return list(self.choices)
        assert self.min is not None and self.max is not None
        cast = int if self.type == "int" else float
        return [cast(self.min), cast(self.max)]

    def describe(self) -> str:
        if self.choices is not None:
            return "[" + ", ".join(_text(value) for value in self.choices) + "]"
        scale = ", log" if self.log else f", step {_text(self.step)}" if self.step is not None else ""
        return f"{self.type} {_text(self.min)}..{_text(self.max)}{scale}"

    def record(self) -> list[Value] | dict[str, Any]:
        """How summary.json records it: a list stays a list (today's grid format), a range its Katib terms."""
        if self.choices is not None:
            return list(self.choices)
        return self.model_dump(exclude_none=True, exclude_defaults=True) | {"type": self.type}


Space = dict[str, Parameter]


def parse_space(raw: dict[Any, Any], where: str) -> Space:
    """A space from its YAML form (see the module docstring), each bound and choice checked against
    TrainConfig; `where` names the source in messages."""
    space: Space = {}
    for name, value in raw.items():
        key = canonical_name(str(name))
        if key not in TRAIN_FIELDS or key in NOT_SEARCHABLE:
            raise InputError(f"{where}: {name!r} is not a training parameter that can be searched")
        if isinstance(value, list):
            if not value:
                raise InputError(f"{where}: {name} has an empty list")
            for item in value:
                if isinstance(item, list | dict):
                    raise InputError(f"{where}: {name} value {item!r} is not a single value")
            value = {"type": "categorical", "choices": value}
        elif not isinstance(value, dict):
            raise InputError(f"{where}: {name} must be a list of values or a mapping with type and min/max or "
                             f"choices, not {type(value).__name__}")
        try:
            parameter = Parameter.model_validate(value)
        except ValidationError as error:
            raise InputError(one_line(error, f"{where}: {name}")) from None
        for item in parameter.bounds():
            build_train_config({key: item}, f"{where}: {name}={item!r}")
        space[key] = parameter
    if not space:
        raise InputError(f"{where} names no parameters")
    return space


def load_space(path: Path) -> Space:
    """Read and check a space file (YAML, see the module docstring)."""
    return parse_space(read_yaml_mapping(path, "space file"), f"space file {path}")


def space_record(space: Space) -> dict[str, Any]:
    """The space as summary.json records it (lists for lists, Katib terms for ranges)."""
    return {name: parameter.record() for name, parameter in space.items()}


def grid(space: Space) -> list[dict[str, Any]]:
    """Every combination of the lists, in file order (the last parameter varies fastest)."""
    ranges = [name for name, parameter in space.items() if not parameter.is_list]
    if ranges:
        raise InputError(f"--strategy grid needs a list of values for every parameter; {', '.join(ranges)} "
                         f"{'is a range' if len(ranges) == 1 else 'are ranges'} (use --strategy random or tpe)")
    size = grid_size(space) or 0
    if size > MAX_GRID_POINTS:
        raise InputError(f"the grid has {size:,} points, more than the {MAX_GRID_POINTS:,} a grid search runs; "
                         "use --strategy random or tpe with --trials N (they never list the grid)")
    names = list(space)
    choices = [space[name].choices or [] for name in names]
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*choices)]


def grid_size(space: Space) -> int | None:
    """How many points the grid has, or None when a parameter is a range."""
    if not all(parameter.is_list for parameter in space.values()):
        return None
    return math.prod(len(parameter.choices or []) for parameter in space.values())


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)
