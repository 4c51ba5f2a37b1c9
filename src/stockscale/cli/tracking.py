"""`--track mlflow[:URI]` on train, search, scale-test and demo: the flag, and the tracker it opens.

Without a URI the runs go to a local store in the results folder (`<results>/mlflow.db`, artifacts in
`<results>/mlartifacts`); `mlflow ui --backend-store-uri sqlite:///<results>/mlflow.db` shows them. A
tracker that fails warns once through the CLI's warning line and the command goes on (stockscale.tracking).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stockscale.tracking import Tracker


def _track_spec(text: str) -> object:
    from stockscale.tracking import parse_track

    try:
        return parse_track(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix(f"--track {text!r}: ")) from None


def add_track_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--track", type=_track_spec, metavar="mlflow[:URI]",
                        help="log the runs to MLflow (pip install 'stockscale[mlflow]'): a parent run with a child "
                             "per trial or probe; URI default: a local store in the results folder "
                             "(<results>/mlflow.db)")


def open_track(args: argparse.Namespace, results_dir: Path) -> Tracker | None:
    """The tracker --track asks for (None without the flag); exit 2 naming the extra when MLflow is missing."""
    from stockscale.console import log
    from stockscale.tracking import open_tracker

    spec = getattr(args, "track", None)
    if spec is None:
        return None
    tracker = open_tracker(spec, results_dir, lambda text: log(f"warning: {text}"))
    log(f"tracking in MLflow at {tracker.uri}" + ("" if spec.uri else
        f" (see it: mlflow ui --backend-store-uri {tracker.uri})"))
    return tracker


def pods_tracking_env(tracker: Tracker, backend: str) -> dict[str, str]:
    """The tracking env of `backend`'s pods (tracker.pod_env), and, off this machine, a line saying who logs."""
    from stockscale.console import log

    env = tracker.pod_env(backend)
    if env:
        log("tracking route: pod (each trial's pod logs its own run under this command's run)")
    elif backend in ("docker", "kubernetes"):
        log(f"tracking route: driver (the {backend} trials cannot reach {tracker.uri}: this process logs them)")
    return env
