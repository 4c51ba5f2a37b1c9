"""Transitional: the names that moved to launch/runner.py (issue 21). Removed once every caller imports
launch.runner."""

from stockscale.launch.runner import (  # noqa: F401
    EpochJudge,
    JobResult,
    Runner,
    Runner as Launcher,
    Status,
    TrainJob,
    run_many_interruptible,
    run_many_with_threads,
)
