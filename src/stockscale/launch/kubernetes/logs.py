"""Pod logs: read one whole, or follow one live in a background thread while the launcher waits.

The follower waits until its pod runs, follows the log until the container ends, and reconnects when the
stream drops (skipping the lines it already passed on), so the master's progress reaches the terminal while
the launcher watches the job. The final JSON line is taken from what it collected, or from one last read of
the log when following was cut short. A search trial with a judge (its pruner) is followed the same way
(JudgedLog), so the judge sees each epoch as the trial reports it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from stockscale.errors import StockscaleError
from stockscale.launch.kubernetes.api import KubeApi
from stockscale.launch.pods import CONTAINER
from stockscale.launch.replicas import EpochWatch
from stockscale.launch.runner import EpochJudge
from stockscale.worker import EpochReport, parse_epoch_line

FOLLOW_READ_TIMEOUT = 300.0
TAIL_LINES = 2000


def iter_lines(response: Any) -> Iterator[str]:
    """Decoded lines of a streaming HTTP response, as they arrive."""
    buffer = b""
    try:
        for chunk in response.stream(amt=None, decode_content=False):
            buffer += chunk if isinstance(chunk, bytes) else str(chunk).encode()
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                yield line.decode("utf-8", errors="replace").rstrip("\r")
        if buffer:
            yield buffer.decode("utf-8", errors="replace").rstrip("\r")
    finally:
        response.close()
        response.release_conn()


def read_log(api: KubeApi, namespace: str, pod: str, tail_lines: int | None = TAIL_LINES,
             container: str = CONTAINER) -> list[str]:
    """The log of a pod's training container (its last `tail_lines` lines), [] when there is none yet."""
    response = api.open_log(pod, namespace, container=container, follow=False, read_timeout=api.timeout,
                            tail_lines=tail_lines)
    return [] if response is None else list(iter_lines(response))


class LogFollower(threading.Thread):
    """Follows one pod's log into `lines` and `on_line` until the pod has finished or `stop` is set."""

    def __init__(self, api: KubeApi, namespace: str, pod: str, on_line: Callable[[str], None] | None,
                 stop: threading.Event, poll: float = 2.0, container: str = CONTAINER) -> None:
        super().__init__(name=f"log-{pod}", daemon=True)
        self.api = api
        self.namespace = namespace
        self.pod = pod
        self.on_line = on_line
        self.stop = stop
        self.poll = poll
        self.container = container
        self.lines: list[str] = []
        self.error: BaseException | None = None
        self.complete = False  # followed to the end of a finished container

    def run(self) -> None:
        try:
            self._follow()
        except StockscaleError as error:  # the launcher reads the log once more; it reports API failures
            self.error = error
        except Exception as error:  # a failing on_line callback must not go unnoticed
            self.error = error

    def _phase(self) -> str | None:
        pod = self.api.call(self.api.core.read_namespaced_pod, self.pod, self.namespace,
                            what=f"read pod {self.pod}", kind="Pod", namespace=self.namespace, missing_ok=True)
        return None if pod is None else pod.get("status", {}).get("phase")

    def _follow(self) -> None:
        while not self.stop.is_set():
            phase = self._phase()
            if phase not in ("Running", "Succeeded", "Failed"):
                self.stop.wait(self.poll)
                continue
            response = self.api.open_log(self.pod, self.namespace, container=self.container, follow=True,
                                         read_timeout=FOLLOW_READ_TIMEOUT)
            if response is None:
                self.stop.wait(self.poll)
                continue
            seen = 0
            try:
                for line in iter_lines(response):
                    seen += 1
                    if seen <= len(self.lines):
                        continue  # a reconnect starts from the beginning of the log
                    self.lines.append(line)
                    if self.on_line is not None:
                        self.on_line(line)
                    if self.stop.is_set():
                        return
            except Exception as error:
                if not self.api.is_network_error(error):
                    raise
                continue  # dropped or idle too long: reconnect
            if phase in ("Succeeded", "Failed"):
                self.complete = True
                return


class JudgedLog:
    """One search trial's rank 0 log, followed (a LogFollower) so that its judge sees every epoch as it comes,
    by the rule of every runner (launch/replicas.EpochWatch); the first time the judge says stop,
    `ask_stop(pod)` is called, from the follower's thread (the kind stops the trial its own way).

    A pod that replaces the trial's first one (the cluster disrupted it) is followed afresh, and asked to stop
    at once if the trial was pruned already. `end(lines)` shows the judge the epochs of the finished pod's
    log that following missed (a trial too quick for it), so the study hears every epoch of every trial."""

    def __init__(self, api: KubeApi, namespace: str, judge: EpochJudge | None, ask_stop: Callable[[str], None],
                 poll: float = 2.0) -> None:
        self.api, self.namespace, self.poll = api, namespace, poll
        self.watch = EpochWatch(judge=judge)
        self.ask_stop = ask_stop
        self.asked = False  # the judge said stop, and the trial was asked to
        self.ended = False
        self.follower: LogFollower | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    @property
    def pruned_after(self) -> int | None:
        return self.watch.pruned_after

    @property
    def error(self) -> BaseException | None:
        """Why following (or asking to stop) failed, if it did."""
        return None if self.follower is None else self.follower.error

    def follow(self, pod: str) -> None:
        """Follow `pod`'s log from now on (nothing new when it is the pod followed already)."""
        with self._lock:
            if self.ended or (self.follower is not None and self.follower.pod == pod):
                return
            self._stop.set()  # the pod followed so far was replaced
            self._stop = threading.Event()
            if not self.asked:
                self.watch.epochs.clear()  # the new pod trains the trial from its start
            self.follower = LogFollower(self.api, self.namespace, pod, self._see, self._stop, self.poll)
            follower, asked = self.follower, self.asked
        if asked:
            self.ask_stop(pod)
        follower.start()

    def _see(self, line: str) -> None:
        with self._lock:
            follower = self.follower
            if self.ended or follower is None or threading.current_thread() is not follower:
                return  # a replaced pod's follower, or the trial has its result
            self.watch.see(0, line)
            stop = self.watch.pruned_after is not None and not self.asked
            self.asked = self.asked or stop
        if stop:
            self.ask_stop(follower.pod)

    def stop(self) -> None:
        """Follow no more, and ask nothing more: the trial has its result (or the search ended)."""
        with self._lock:
            self.ended = True
            self._stop.set()

    def end(self, lines: list[str]) -> list[EpochReport]:
        """Stop following; the epochs of `lines` not seen yet go to the judge (it can stop nothing now).
        Returns the trial's epochs (a pruned trial's end at the one the judge stopped it after); re-raises
        an error of the judge."""
        self.stop()
        last = self.watch.epochs[-1].epoch if self.watch.epochs else 0
        for line in lines:
            report = parse_epoch_line(line)
            if report is not None and report.epoch > last:
                self.watch.see(0, line)
                last = report.epoch
        self.watch.reraise()
        return list(self.watch.epochs)
