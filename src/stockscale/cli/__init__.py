"""The command line: parse, validate, call the library, turn its errors into one-line messages.

main.py is the entry and the error mapping; parser.py the flags' grammar (value parsers, the training flags
generated from TrainConfig); one module per command group (train, data, experiments, k8s); launchers.py turns
--backend into a Runner (launch/registry.py's table).
"""

from stockscale.cli.launchers import choose_runner
from stockscale.cli.main import build_parser, main
from stockscale.cli.parser import load_config, train_fields

__all__ = ["build_parser", "choose_runner", "load_config", "main", "train_fields"]
