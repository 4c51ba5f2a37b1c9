"""The command line's entry: build the parser from each command group's flags, run the chosen command, and turn
the library's errors, signals and closed pipes into one-line messages and exit statuses.

Heavy imports (torch, numpy, matplotlib, the kubernetes client) happen inside the commands that need them,
so `stockscale --help` answers at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from stockscale.cli.data import add_parsers as add_data_commands
from stockscale.cli.evaluate import add_parsers as add_evaluate_command
from stockscale.cli.experiments import add_parsers as add_experiment_commands
from stockscale.cli.k8s import add_parsers as add_k8s_commands
from stockscale.cli.parser import Parser
from stockscale.cli.plan import add_parsers as add_plan_commands
from stockscale.cli.train import add_parsers as add_train_command
from stockscale.errors import StockscaleError
from stockscale.worker import EXIT_INPUT, EXIT_INTERRUPTED


def build_parser() -> Parser:
    """`stockscale` and every command under it; each command group's module adds its own."""
    parser = Parser(prog="stockscale", description="What a cluster gives over one machine when training an "
                    "LSTM stock model: dataset scale and hyperparameter search, measured.")
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser,
                                     help="`stockscale COMMAND --help` lists its flags")
    for add_commands in (add_train_command, add_data_commands, add_experiment_commands, add_evaluate_command,
                         add_k8s_commands, add_plan_commands):
        add_commands(commands)
    return parser


def _version() -> str:
    from stockscale import __version__

    return f"stockscale {__version__}"


def leave_now(code: int) -> NoReturn:
    """End a finished `stockscale train` process without interpreter finalization.

    Tearing down an interpreter that has imported torch takes about half a second, and every scale-test probe
    and search trial is such a process. By now the run directory is written and closed, and the result line
    printed: flush the streams and leave. Only for a process started as `stockscale train` (main() without
    argv); a caller that passes argv, such as the tests, gets the exit code back.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more can reach the reader
            stream.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    from stockscale.supervision import Terminated, follow_parent, terminate_as_interrupt

    parser = build_parser()
    try:
        with terminate_as_interrupt(leaving=argv is None):
            follow_parent()
            args = parser.parse_args(argv)
            if getattr(args, "handler", None) is None:
                parser.print_help()
                return EXIT_INPUT
            code = args.handler(args)
        if argv is None and args.command == "train":
            leave_now(code)
        return code
    except StockscaleError as error:
        print(f"stockscale: error: {error}", file=sys.stderr, flush=True)
        return error.exit_code
    except Terminated as stop:
        print(f"stockscale: terminated by {signal.Signals(stop.signum).name}", file=sys.stderr, flush=True)
        return 128 + stop.signum
    except KeyboardInterrupt:
        print("stockscale: interrupted", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
