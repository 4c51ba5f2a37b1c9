"""launch/replicas.py: the one supervision policy local processes, containers and warm trials share, on
stand-in replicas (the runners' own tests cover it with real processes and containers)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from stockscale.launch.replicas import EpochWatch, supervise
from stockscale.launch.runner import Status
from stockscale.worker import EpochReport


@dataclass
class Stand:
    rank: int
    code: int | None = None
    oom: bool = False
    outcome: tuple[Status, str] = ("success", "")
    drained: bool = False

    def poll(self) -> int | None:
        return self.code

    def memory_failure(self) -> bool:
        return self.oom

    def failure(self) -> tuple[Status, str]:
        if self.oom:
            return "oom", f"limit (worker {self.rank})"
        return "error", f"exit {self.code} (worker {self.rank})"

    def drain(self) -> None:
        self.drained = True

    def finished(self) -> tuple[Status, str]:
        return self.outcome


def follow(replicas: list[Stand], watch: EpochWatch | None = None, timeout: float | None = None,
           abort: threading.Event | None = None) -> tuple[Status, str]:
    return supervise(replicas, watch or EpochWatch(), start=time.time(), timeout=timeout,
                     abort=abort or threading.Event(), tick=0.001)


def test_of_several_found_dead_the_one_the_memory_limit_killed_is_the_cause() -> None:
    assert follow([Stand(0, code=1), Stand(1, code=137, oom=True), Stand(2)]) == ("oom", "limit (worker 1)")
    assert follow([Stand(0), Stand(1, code=1), Stand(2, code=2)]) == ("error", "exit 1 (worker 1)")


def test_all_done_is_rank0s_outcome_once_its_output_was_read() -> None:
    replicas = [Stand(0, code=0, outcome=("error", "no result line")), Stand(1, code=0)]
    assert follow(replicas) == ("error", "no result line") and replicas[0].drained


def test_the_judges_stop_wins_and_a_failed_callback_ends_the_job() -> None:
    watch = EpochWatch(judge=lambda report: report.epoch >= 2)
    for epoch in (1, 2, 3):
        watch.see(0, f'{{"event": "epoch", "epoch": {epoch}, "train_loss": 1.0, "val_loss": 0.5, "seconds": 1}}')
    assert [report.epoch for report in watch.epochs] == [1, 2]  # a pruned job's epochs end where it stopped
    assert follow([Stand(0, code=0)], watch) == ("pruned", "pruned after epoch 2")

    def broken(rank: int, line: str) -> None:
        raise ValueError("on_line broke")

    failing = EpochWatch(on_line=broken)
    failing.see(1, "a line")
    assert follow([Stand(0)], failing) == ("error", "a callback failed: on_line broke")
    with pytest.raises(ValueError, match="on_line broke"):
        failing.reraise()


def test_with_an_answer_every_verdict_goes_to_it_and_nothing_is_pruned_here() -> None:
    verdicts: list[bool] = []
    watch = EpochWatch(judge=lambda report: report.epoch == 2, answer=verdicts.append)
    for epoch in (1, 2):
        watch.see(0, f'{{"event": "epoch", "epoch": {epoch}, "train_loss": 1.0, "val_loss": 0.5, "seconds": 1}}')
    assert verdicts == [False, True] and watch.pruned_after is None
    assert isinstance(watch.epochs[0], EpochReport)


def test_the_timeout_and_an_abort() -> None:
    started = time.monotonic()
    assert follow([Stand(0)], timeout=0.05) == ("timeout", "timed out after 0.05 s")
    assert time.monotonic() - started < 2
    abort = threading.Event()
    abort.set()
    with pytest.raises(KeyboardInterrupt):
        follow([Stand(0)], abort=abort)
