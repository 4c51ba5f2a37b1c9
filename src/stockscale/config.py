"""Typed, validated configuration.

One flat `TrainConfig` describes a training run: where the data comes from, how it is scaled and held,
the model and the optimizer. It is flat on purpose: a YAML config file, a command-line flag and a
hyperparameter-search parameter all name the same field (`lr`, `hidden_size`, ...), so any training flag
can be a search parameter.

Validation errors become `InputError` with one line that names the field.
"""

from __future__ import annotations

import os
import re
import stat
from datetime import date
from pathlib import Path
from typing import Any, Final, Literal, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stockscale.bounds import MAX_COUNT, MAX_MULTIPLIER, MAX_SEED, MAX_YAML_BYTES
from stockscale.errors import InputError
from stockscale.worker import JsonValue

SEQ_LEN: Final = 60  # Final: usable where the manifest's Literal[60] is expected
FEATURES = ("open", "high", "low", "close", "volume")
# Replica noise, a daily log return: about a tenth of AAPL's training daily std (2.44 %), so a replica's daily
# moves have sqrt(1 + 0.1**2) = 1.005x the original's std, less than that std's own sampling error over the
# 881 training days (about 2.4 %): a replica is another path of the same kind of days, not a noisier stock.
NOISE = 0.0025


class TrainConfig(BaseModel):
    """Everything one training run needs. Field names double as YAML keys and search parameters."""

    # Every float finite, every number bounded by what the code can honour (numpy/torch seeds < 2**32, an
    # LSTM that fits in memory): anything else is one line naming the field, never a traceback or NaN.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True,
                              allow_inf_nan=False)

    # data
    source: str = Field("bundled:AAPL", description="bundled:TICKER, csv:PATH or yahoo:TICKER (optional extra); "
                        "several tickers, one pooled model: bundled:A,B, bundled:all, a long-format csv:PATH "
                        "(a Name, Symbol or Ticker column), csv-dir:DIR (one CSV per ticker)")
    tickers: str | None = Field(None, pattern=r"^\s*[A-Za-z0-9.^=_-]+(\s*,\s*[A-Za-z0-9.^=_-]+)*\s*$",
                                max_length=100_000,
                                description="comma-separated tickers to pick from the source (default: all)")
    start: date | None = Field(None, description="first date, YYYY-MM-DD (default: five years before the bundled "
                                                 "series ends)")
    end: date | None = Field(None, description="last date, YYYY-MM-DD (default: the series' last day)")
    train_frac: float = Field(0.70, gt=0, lt=1, description="training share of the days")
    val_frac: float = Field(0.15, gt=0, lt=1, description="validation share of the days")
    multiplier: int = Field(1, ge=1, le=MAX_MULTIPLIER, description="grow the training data to N noisy replicas")
    noise: float = Field(NOISE, ge=0, le=100, description="replica noise: sigma of the N(0, sigma) added to each "
                                                       "training day's log return, then cumulated (0.0025 = "
                                                       "0.25 percent a day, ~0.1x AAPL's daily std)")
    data: Path | None = Field(None, description="train on a dataset directory written by `stockscale data scale` "
                                                "(default: none, the bundled series and --multiplier)")
    loader: Literal["memory", "lazy", "stream"] = Field("lazy", description="memory | lazy | stream: how "
                                                                          "training data is held")

    # model and optimizer
    hidden_size: int = Field(64, gt=0, le=4096, description="LSTM hidden size")
    num_layers: int = Field(2, gt=0, le=64, description="LSTM layers")
    dropout: float = Field(0.2, ge=0, lt=1, description="dropout between LSTM layers")
    lr: float = Field(1e-3, gt=0, le=10, description="Adam learning rate (a config file may say learning_rate: "
                                                      "config._canonical reads that spelling)")
    batch_size: int = Field(64, gt=0, le=1_000_000, description="batch size per worker (see batch_scope)")
    batch_scope: Literal["per_worker", "global"] = Field(
        "per_worker", description="per_worker: batch_size is each worker's (N workers step on N x batch_size "
                                  "windows); global: batch_size is split over the workers, the same optimisation "
                                  "as one process")
    epochs: int = Field(10, gt=0, le=1_000_000, description="epochs")
    max_steps: int | None = Field(None, gt=0, le=MAX_COUNT, description="stop after this many optimizer steps "
                                                                       "(default: no limit, run every epoch)")
    seed: int = Field(42, ge=0, lt=MAX_SEED, description="random seed")

    # evaluation
    baselines: Literal["all", "cheap"] = Field(
        "all", description="all: persistence, drift, ridge and the direction baselines beside the model; cheap: "
                           "all but ridge, whose library (scikit-learn) costs rank 0 about a second and 110 MiB "
                           "(runs that measure memory or speed, not accuracy)")

    # execution
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto | cpu | cuda (auto: CUDA when "
                                                                      "present)")
    threads: int | None = Field(None, gt=0, le=4096, description="torch threads per process (default: torch's "
                                                                 "choice; experiments split the cores)")
    checkpoint_dir: Path | None = Field(None, description="save model, optimizer, RNG and loader position here "
                                        "after every epoch; running the same command again resumes from the "
                                        "last complete epoch")

    @model_validator(mode="after")
    def _check_split(self) -> TrainConfig:
        if self.train_frac + self.val_frac >= 1:
            raise ValueError("train_frac + val_frac must leave room for a test split (sum < 1)")
        if self.start and self.end and self.start >= self.end:
            raise ValueError(f"start {self.start} is not before end {self.end}")
        if self.data is not None:
            # A dataset's manifest fixes these; a different value beside it would be silently ignored.
            fixed = {"source": "bundled:AAPL", "tickers": None, "start": None, "end": None, "multiplier": 1,
                     "noise": NOISE}
            clash = [name for name, default in fixed.items() if getattr(self, name) != default]
            if clash:
                raise ValueError(f"data {self.data} fixes {', '.join(clash)} (its manifest says); do not set both")
        return self

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: str) -> str:
        kind, sep, rest = value.partition(":")
        if not sep or kind not in ("bundled", "csv", "csv-dir", "yahoo") or not rest:
            raise ValueError(f"source {value!r} is not bundled:TICKER, csv:PATH, csv-dir:DIR or yahoo:TICKER")
        return value

    def to_dict(self) -> TrainOverrides:
        """Plain, YAML/JSON-friendly dict (dates as ISO strings, paths as strings): every field set."""
        return cast(TrainOverrides, self.model_dump(mode="json"))

    def overrides(self) -> TrainOverrides:
        """The one serialisation of a run's settings for another process: the fields this config was given
        (not its defaults), by field name (`lr`, never its alias), as JSON values. A job's YAML, a pod's or a
        container's flags and a warm worker's message are all written from this, and read back by
        TrainConfig, so the alias and every format are handled here and nowhere else."""
        return cast(TrainOverrides, self.model_dump(mode="json", include=self.model_fields_set))

    def updated(self, values: TrainOverrides, what: str = "config") -> TrainConfig:
        """This config with `values` set on top (a search's point, a probe's multiplier), validated once:
        one line naming `what` and the field when a value does not fit. The result remembers every field
        either side set, so its overrides() carry both."""
        return build_train_config({**self.overrides(), **_canonical(values)}, what)


# The settings a run sets, by TrainConfig field name, as JSON values: what `TrainConfig.overrides()` gives and
# what a config file, a job's YAML, a pod's flags and a warm worker's message carry. Only TrainConfig reads
# them (validated there, once per process), so this is a plain mapping, not a second copy of every field.
TrainOverrides = dict[str, JsonValue]


TRAIN_FIELDS = frozenset(TrainConfig.model_fields)  # by field name (canonical_name maps lr's alias)


def worker_batch_size(cfg: TrainConfig, world: int) -> int:
    """Each worker's batch: batch_size itself, or with batch_scope global its share of batch_size, so that N DDP
    workers (gradients averaged) take the steps one process takes. A share must be whole: an uneven split would
    be a different global batch than the one asked for."""
    if cfg.batch_scope == "per_worker" or world == 1:
        return cfg.batch_size
    if cfg.batch_size % world:
        raise InputError(f"batch_size {cfg.batch_size} cannot be split evenly over {world} workers "
                         "(batch_scope global): use a multiple of the workers")
    return cfg.batch_size // world


def field_help(name: str) -> str:
    """A field's help for its flag: the description, and the default when it is a value (a field whose
    default is None says in its description what that means)."""
    info = TrainConfig.model_fields[name]
    if info.default is None:
        return str(info.description)
    return f"{info.description} (default {info.default})"


def one_line(error: ValidationError, what: str) -> str:
    """Turn a pydantic error into one line naming the field and the problem."""
    first = error.errors()[0]
    loc = ".".join(str(part) for part in first["loc"]) or what
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    extra = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{what}: {loc}: {msg}{extra}"


def canonical_name(name: str) -> str:
    """A setting's field name: lr for its alias `learning_rate` (a config file's, an old summary's, a
    controller's parameter), every other name as it is. The one place the alias is spelled."""
    return "lr" if name == "learning_rate" else name


def _canonical(values: TrainOverrides) -> TrainOverrides:
    """`values` with lr's alias (`learning_rate`, as a config file may spell it) under its field name: the one
    place the alias is read, so a later `lr` replaces an earlier `learning_rate` and never clashes with it."""
    return {canonical_name(key): value for key, value in values.items()}


def build_train_config(values: dict[str, Any], what: str = "config") -> TrainConfig:
    """Validate a dict into a TrainConfig, or raise InputError with one line."""
    try:
        return TrainConfig.model_validate(_canonical(values))
    except ValidationError as error:
        raise InputError(one_line(error, what)) from None


def read_regular_file(path: Path, what: str, limit: int) -> bytes:
    """The bytes of `path`, which must be a regular file of at most `limit` bytes: a FIFO, a device
    (/dev/zero) or a folder is refused before any byte is read (opened non-blocking, checked with fstat),
    and so is a file larger than the bound."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist or is not a file") from None
    except OSError as error:
        raise InputError(f"{what} {path} cannot be read ({error.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{what} {path} is not a regular file")
        if info.st_size > limit:
            raise InputError(f"{what} {path} is {info.st_size:,} bytes; at most {limit:,} are read")
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as error:
        raise InputError(f"{what} {path} cannot be read ({error.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise InputError(f"{what} {path} grew past {limit:,} bytes while read")
    return data


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; every failure is an InputError naming the file."""
    try:
        text = read_regular_file(path, what, MAX_YAML_BYTES).decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"{what} {path} cannot be read as UTF-8 text ({error.__class__.__name__})") from None
    if "\x00" in text:
        raise InputError(f"{what} {path} is a binary file, not YAML")
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"{what} {path} is not valid YAML{where}") from None
    if loaded is None:
        raise InputError(f"{what} {path} is empty")
    if not isinstance(loaded, dict):
        raise InputError(f"{what} {path} must hold a mapping of keys to values, not {type(loaded).__name__}")
    return loaded


def read_trial(path: Path, index_text: str | None) -> dict[str, Any]:
    """Entry number $JOB_COMPLETION_INDEX of a YAML list of config overrides (one pod of an Indexed Job)."""
    if index_text is None:
        raise InputError(f"--trials {path} needs JOB_COMPLETION_INDEX in the environment (an Indexed Job sets it)")
    try:
        index = int(index_text)
    except ValueError:
        raise InputError(f"JOB_COMPLETION_INDEX={index_text!r} is not an integer") from None
    if not path.is_file():
        raise InputError(f"trials file {path} does not exist or is not a file")
    try:
        entries = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        raise InputError(f"trials file {path} is not valid YAML") from None
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise InputError(f"trials file {path} must hold a list of mappings")
    if not 0 <= index < len(entries):
        raise InputError(f"JOB_COMPLETION_INDEX {index} is outside the {len(entries)} trials of {path}")
    entry: dict[str, Any] = entries[index]  # a mapping, checked above
    return entry


def load_train_config(path: Path | None, overrides: dict[str, Any], flags: dict[str, str] | None = None) -> TrainConfig:
    """A config file (optional) with command-line overrides on top; overrides that are None are unset.

    `flags` maps override keys to the flag that set them, so an error names `--epochs`, not a field.
    """
    values: dict[str, Any] = read_yaml_mapping(path, "config file") if path is not None else {}
    what = f"config file {path}" if path is not None else "config"
    # Validate the file alone first so an unknown key or a bad value is blamed on the file, not on a flag.
    if path is not None:
        build_train_config(values, what)
    values = _canonical(values)
    values.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return TrainConfig.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        if flags and field in flags:
            raise InputError(one_line(error, flags[field]).replace(f"{flags[field]}: {field}: ", f"{flags[field]}: ")
                             ) from None
        raise InputError(one_line(error, what)) from None


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
          "KI": 1024, "MI": 1024**2, "GI": 1024**3, "TI": 1024**4}


def parse_size(text: str | int) -> int:
    """Bytes from '512MiB', '2GiB', '4Gi', '1.5G', '1000000' (Kubernetes and IEC forms). Raises ValueError."""
    if isinstance(text, int):
        if text <= 0:
            raise ValueError(f"size {text} must be positive")
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a size (examples: 512MiB, 2GiB, 4Gi)")
    number, unit = match.groups()
    unit = (unit or "").upper().removesuffix("B") if (unit or "").upper() != "B" else ""
    size = int(float(number) * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"size {text!r} must be positive")
    return size


def format_size(size: float) -> str:
    """Human-readable bytes in binary units: 1.5 GiB, 300 MiB."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(size) >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} B"
