"""A warm worker: one long-lived process that trains trial after trial (`python -m stockscale.launch.warm_worker`).

A fresh `stockscale train` process spends seconds importing torch and preparing the base series before it
trains at all; a search's trials differ only in their settings. So WarmRunner keeps a few of these processes,
each with torch imported and the prepared series kept (data.dataset.keep_prepared_data), and hands them trials.
Each trial is the train command's run: its own seed, a fresh model and optimizer, the same progress lines and
result line on stdout, so its results are those of the same trial run cold. Its config is what the runner
validated once and serialised with `TrainConfig.overrides()`; the worker reads it back once (with the threads
it was given) and no more.

The protocol is JSON lines, no pickle. On stdin, one request per line:

- `{"op": "prepare", "config": {...}}`: prepare (and keep) the base series that config names;
- `{"op": "trial", "config": {...}, "out": DIR, "threads": N, "judge": BOOL}`: train into run directory DIR.
  With `judge`, after each epoch's progress line the worker reads one line, `continue` or `stop`; stop ends
  the trial as pruned, and the worker waits for the next request;
- end of input: the worker leaves.

On stdout, whatever the request prints, then exactly one `{"event": "warm_done", "op": ..., "status": ...,
"detail": ..., "leaving": BOOL}` line. `leaving` says the worker exits now (after a MemoryError or an error it
cannot vouch for the process after): the launcher replaces it. The worker ends with its launcher
(supervision.follow_parent) and on SIGTERM.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stockscale.console import PlainTrainProgress
from stockscale.errors import StockscaleError, TrainingDiverged
from stockscale.progress import TrialPruned
from stockscale.supervision import follow_parent, terminate_as_interrupt
from stockscale.worker import EXIT_FAILURE, result_line

if TYPE_CHECKING:
    from stockscale.config import TrainConfig

DONE_EVENT = "warm_done"


class JudgedProgress(PlainTrainProgress):
    """The train command's plain progress lines; with a judge, each epoch's line waits for its answer."""

    def __init__(self, judged: bool) -> None:
        super().__init__()
        self.judged = judged

    def epoch_end(self, epoch: int, train_loss: float, val_loss: float, seconds: float) -> None:
        super().epoch_end(epoch, train_loss, val_loss, seconds)
        if not self.judged:
            return
        answer = sys.stdin.readline()
        if not answer:
            raise EOFError("the launcher went away")
        if answer.strip() == "stop":
            raise TrialPruned(epoch)  # the launcher answered `stop`


def say(value: dict[str, Any]) -> None:
    print(json.dumps(value), flush=True)


def reset_peak_memory() -> None:
    """Start this process's VmHWM afresh, so a trial's peak is its own (Linux: clear_refs 5)."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def train_config(request: dict[str, Any]) -> TrainConfig:
    """The trial's TrainConfig, read back once from the runner's overrides with the worker's threads (what the
    train command builds from `--config FILE --threads N`)."""
    from stockscale.config import build_train_config

    return build_train_config({**request["config"], "threads": request["threads"]}, "job config")


def prepare(request: dict[str, Any]) -> dict[str, Any]:
    from stockscale.config import build_train_config
    from stockscale.data.dataset import prepare_from_config

    try:
        config = build_train_config(request["config"], "job config")
        if config.data is None:
            prepare_from_config(config)
    except StockscaleError as error:  # the trial will meet it again and report it
        return {"status": "error", "detail": str(error)}
    return {"status": "success", "detail": ""}


def trial(request: dict[str, Any]) -> dict[str, Any]:
    """One trial, as `stockscale train` runs it; what it ended as (its result line is printed before)."""
    from stockscale.distributed import DistEnv
    from stockscale.train import train

    received = time.perf_counter()
    reset_peak_memory()
    try:
        cfg = train_config(request)
        metrics = train(cfg, Path(request["out"]), JudgedProgress(bool(request.get("judge"))),
                        DistEnv.from_environ(), startup=time.perf_counter() - received)
    except TrialPruned as pruned:
        return {"status": "pruned", "detail": str(pruned)}
    except MemoryError:
        say({"status": "oom", "detail": "MemoryError", "rank": 0})
        return {"status": "oom", "detail": "MemoryError (worker 0)", "leaving": True}
    except TrainingDiverged as error:
        say({"status": "error", "detail": str(error), "rank": 0})
        return {"status": "error", "detail": f"{error} (worker 0)"}
    except StockscaleError as error:
        message = f"stockscale: error: {error}"
        print(message, file=sys.stderr, flush=True)
        return {"status": "error", "detail": f"exit code {error.exit_code} (worker 0): {message}"}
    print(result_line(metrics), flush=True)
    return {"status": "success", "detail": ""}


def serve() -> None:
    import stockscale.train  # noqa: F401  (torch and the training code, imported once for every trial)
    from stockscale.data.dataset import keep_prepared_data

    keep_prepared_data()
    while line := sys.stdin.readline():
        if not line.strip():
            continue
        op = "?"
        try:
            request = json.loads(line)
            op = request["op"]
            reply = trial(request) if op == "trial" else prepare(request)
        except (KeyboardInterrupt, EOFError):
            raise
        except Exception as error:  # noqa: BLE001  (told to the launcher; this process is then replaced)
            traceback.print_exc()
            last = f"{type(error).__name__}: {error}"
            reply = {"status": "error", "detail": f"exit code {EXIT_FAILURE} (worker 0): {last}", "leaving": True}
        finally:
            gc.collect()  # the trial's model, optimizer and loader go now, not during the next trial
        say({"event": DONE_EVENT, "op": op, "leaving": False, **reply})
        if reply.get("leaving"):
            return


def main() -> None:
    code = 0
    try:
        with terminate_as_interrupt():
            follow_parent()
            serve()
    except (KeyboardInterrupt, EOFError):
        code = 130
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)  # without the interpreter's finalization, which takes a torch process half a second


if __name__ == "__main__":
    main()
