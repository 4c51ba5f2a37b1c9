"""The flags' grammar: a parser that turns every bad flag into one line and exit 2, the value parsers that
check a flag's text (integers, sizes, seconds, multipliers), the training flags generated from TrainConfig,
and the old spellings of flags that keep working with a one-line deprecation notice (`Deprecated`).

Every command group's module builds its flags from these, so a rule about a flag's text lives here once.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from stockscale.bounds import MAX_COUNT, MAX_MULTIPLIER, MAX_SECONDS, MAX_SIZE
from stockscale.errors import InputError

if TYPE_CHECKING:
    from stockscale.config import TrainConfig


class UsageError(InputError):
    """A flag argparse refused."""


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that shows each flag's default, unless the text already says it or there is none to show
    (argparse's ArgumentDefaultsHelpFormatter also prints "(default: None)" and "(default: False)")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if ("default" in text or not action.option_strings or default in (None, False, argparse.SUPPRESS)
                or isinstance(action, argparse._VersionAction)):
            return text
        shown = ",".join(map(str, default)) if isinstance(default, list | tuple) else str(default)
        return f"{text} (default {shown.replace('%', '%%')})"


class Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so every bad flag is one line, exit 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


# ------------------------------------------------------------------------------------------ old spellings

# Every command says `--backend local|docker|kubernetes` (launch/registry.py's names), trials at once
# `--parallel N` and DDP ranks `--workers N`. An old spelling keeps working: `modernise` rewrites the parsed flags
# into the new vocabulary and prints one line on stderr, `warning: OLD is deprecated; use NEW`.


@dataclass(frozen=True)
class Deprecated:
    """One old spelling: when `applies(args)`, `rewrite(args)` says the same in the new vocabulary, and the
    notice names `old` and what to say `instead`."""

    old: str
    instead: str
    applies: Callable[[argparse.Namespace], bool]
    rewrite: Callable[[argparse.Namespace], None]


def deprecation_notice(old: str, instead: str) -> None:
    print(f"warning: {old} is deprecated; use {instead}", file=sys.stderr, flush=True)


def modernise(args: argparse.Namespace, spellings: Iterable[Deprecated],
              notice: Callable[[str, str], None] = deprecation_notice) -> argparse.Namespace:
    """`args` with every old spelling that applies rewritten (in order), one notice each."""
    for spelling in spellings:
        if spelling.applies(args):
            notice(spelling.old, spelling.instead)
            spelling.rewrite(args)
    return args


def value_renamed(dest: str, old: str, new: str, also: Mapping[str, object] | None = None,
                  why: str = "") -> Deprecated:
    """`--<dest> OLD` now spelled `--<dest> NEW`; `also` sets other flags the old value implied (each only
    where it was not given: an attribute still None), e.g. search's `--backend sequential` as `--backend local
    --parallel 1`."""
    name = flag(dest)
    implied = dict(also or {})

    def rewrite(args: argparse.Namespace) -> None:
        setattr(args, dest, new)
        for key, value in implied.items():
            if getattr(args, key, None) is None:
                setattr(args, key, value)

    more = "".join(f" {flag(key)} {value}" for key, value in implied.items())
    return Deprecated(old=f"{name} {old}", instead=f"{name} {new}{more}" + (f" ({why})" if why else ""),
                      applies=lambda args: getattr(args, dest, None) == old, rewrite=rewrite)


def flag_renamed(old_dest: str, new_dest: str, why: str = "", old_flag: str | None = None) -> Deprecated:
    """`--<old_dest> N` now spelled `--<new_dest> N` (e.g. search's `--workers N` as `--parallel N`). Given
    both, the old one is refused: one line naming both, not a silent choice."""
    old_name, new_name = old_flag or flag(old_dest), flag(new_dest)

    def rewrite(args: argparse.Namespace) -> None:
        value = getattr(args, old_dest)
        if getattr(args, new_dest, None) not in (None, value):
            raise UsageError(f"{old_name} {value} and {new_name} {getattr(args, new_dest)} both say it: "
                             f"{new_name} alone")
        setattr(args, new_dest, value)
        setattr(args, old_dest, None)

    return Deprecated(old=f"{old_name} N", instead=f"{new_name} N" + (f" ({why})" if why else ""),
                      applies=lambda args: getattr(args, old_dest, None) is not None, rewrite=rewrite)


# --------------------------------------------------------------------------------------- training flags

# TrainConfig fields and their flags: every field has one, named after it (a YAML key = a flag = a search
# parameter). Values stay strings here; the config model validates them and names the flag on error.


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def train_fields() -> list[str]:
    """TrainConfig's fields, in order: each has a flag named after it (a YAML key = a flag = a search parameter)."""
    from stockscale.config import TrainConfig

    return list(TrainConfig.model_fields)


def add_train_flags(parser: argparse.ArgumentParser, skip: Sequence[str] = ()) -> None:
    """One flag per TrainConfig field, its help and default taken from the field, so flags cannot drift from the
    config. Values stay strings here; the config model validates them (bounds included) and names the flag."""
    from stockscale.config import field_help

    group = parser.add_argument_group("training")
    group.add_argument("--config", type=Path, help="YAML file of training settings (flags override it)")
    for field in train_fields():
        if field not in skip:
            group.add_argument(flag(field), dest=field, metavar=field.upper(), help=field_help(field))


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {field: getattr(args, field) for field in train_fields() if getattr(args, field, None) is not None}


def load_config(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> TrainConfig:
    from stockscale.config import load_train_config

    overrides = {**train_overrides(args), **(extra or {})}
    return load_train_config(args.config, overrides, flags={key: flag(key) for key in overrides})


# ------------------------------------------------------------------------------------------ flag values


def _named(what: str) -> str:
    """The value's name for a parser's message: empty for a flag, which argparse already names
    ("argument --workers: must be at least 1, not 0"), so no message says the flag twice."""
    return "" if not what or what.startswith("-") else f"{what} "


def int_at_least(what: str, minimum: int, maximum: int = MAX_COUNT) -> Callable[[str], int]:
    """An argparse type: an integer in [minimum, maximum], with a message that says which rule the text broke."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            kind = "not an integer" if _is_float(text) else "not a number"
            raise argparse.ArgumentTypeError(f"{_named(what)}{text!r} is {kind}") from None
        if value < minimum:
            rule = f"must be at least {minimum}" if minimum else "must not be negative"
            raise argparse.ArgumentTypeError(f"{_named(what)}{rule}, not {value}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"{_named(what)}must be at most {maximum}, not {text}")
        return value

    return parse


def positive_int(what: str, maximum: int = MAX_COUNT) -> Callable[[str], int]:
    return int_at_least(what, 1, maximum)


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def positive_float(what: str, maximum: float = MAX_SECONDS) -> Callable[[str], float]:
    """An argparse type: a finite number in (0, maximum]: a timeout of 0 seconds could never be met, so it is
    refused before anything is written rather than failing the first job."""
    at_least_zero = non_negative_float(what, maximum)

    def parse(text: str) -> float:
        value = at_least_zero(text)
        if value == 0:
            raise argparse.ArgumentTypeError(f"{_named(what)}must be more than 0, not {text}")
        return value

    return parse


def non_negative_float(what: str, maximum: float = MAX_SECONDS) -> Callable[[str], float]:
    """An argparse type: a finite number in [0, maximum] (inf and nan are refused)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{_named(what)}{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{_named(what)}must be a finite number, not {text}")
        if value < 0:
            raise argparse.ArgumentTypeError(f"{_named(what)}must not be negative, not {text}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"{_named(what)}must be at most {maximum:g}, not {text}")
        return value

    return parse


def size(text: str) -> int:
    from stockscale.config import parse_size

    try:
        value = parse_size(text)
    except (ValueError, OverflowError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if value > MAX_SIZE:
        raise argparse.ArgumentTypeError(f"size {text!r} is more than the maximum of 1 PiB")
    return value


def size_text(value: int) -> str:
    """A size as one would type it: '1GiB', '512MiB', in the largest binary unit that divides it exactly."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value and value % scale == 0:
            return f"{value // scale}{unit}"
    return str(value)


def multipliers(text: str) -> list[int]:
    parse = positive_int("value", MAX_MULTIPLIER)
    values = [parse(part.strip()) for part in text.split(",") if part.strip()]
    if not values:
        raise argparse.ArgumentTypeError("needs at least one value, e.g. 1,10,50")
    return sorted(set(values))


def boundary_range(text: str) -> tuple[int, int]:
    """--search START:CEILING, two positive integers, START <= CEILING."""
    start_text, sep, ceiling_text = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"--search {text!r} is not START:CEILING, e.g. 100:5000")
    parse = positive_int("--search value")
    start, ceiling = parse(start_text.strip()), parse(ceiling_text.strip())
    if start > ceiling:
        raise argparse.ArgumentTypeError(f"--search start {start} is above the ceiling {ceiling}")
    return start, ceiling


def resolution(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--resolution {text!r} is not a number") from None
    if not 1 < value < math.inf:
        raise argparse.ArgumentTypeError(f"--resolution must be a finite number above 1, not {text}")
    return value
