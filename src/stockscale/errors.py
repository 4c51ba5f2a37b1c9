"""Errors the library raises; the CLI turns them into one-line messages.

`InputError` means the user gave something we cannot use (a file, a flag, a config): exit status 2.
Anything else that escapes is a bug or an environment failure and keeps its traceback.
"""

import re
from collections.abc import Callable

from stockscale.worker import EXIT_FAILURE, EXIT_INPUT, EXIT_PORT_IN_USE


class StockscaleError(Exception):
    """Base class for errors stockscale reports to the user as a message."""

    exit_code = EXIT_FAILURE


class InputError(StockscaleError):
    """Bad input from the user: a file, a flag or a config. Exit status 2."""

    exit_code = EXIT_INPUT


class DataIntegrityError(InputError):
    """A dataset on disk does not match its manifest (missing, truncated or altered shard)."""


class WorkerFailure(StockscaleError):
    """A training worker died (out of memory, killed, exception); the whole run stops."""


class TrainingDiverged(StockscaleError):
    """The loss became NaN or infinite: the run failed (status error), its metrics would mean nothing."""


class PortInUse(StockscaleError):
    """Rank 0 could not listen on MASTER_PORT (taken since it was chosen): the launcher retries with another."""

    exit_code = EXIT_PORT_IN_USE


class SettingError(InputError):
    """A setting, or a combination of settings, that the settings object it belongs to refuses (checked there
    once). The message names settings as `{name}` placeholders: the library's text says the setting
    (`mode local runs one process`), and the CLI, which knows each setting's flag, says the flag
    (`naming(flag)`: `--mode local runs one process`)."""

    def __init__(self, template: str) -> None:
        self.template = template
        super().__init__(self.naming(lambda name: name))

    def naming(self, name: Callable[[str], str]) -> str:
        """The message with each `{setting}` written as `name(setting)`."""
        return re.sub(r"\{([a-z_]+)\}", lambda match: name(match.group(1)), self.template)
