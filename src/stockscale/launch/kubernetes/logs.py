"""Pod logs: read one whole, or follow one live in a background thread while the launcher waits.

The follower waits until its pod runs, follows the log until the container ends, and reconnects when the
stream drops (skipping the lines it already passed on), so the master's progress reaches the terminal while
the launcher watches the job. The final JSON line is taken from what it collected, or from one last read of
the log when following was cut short.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

from stockscale.errors import StockscaleError
from stockscale.launch.kubernetes.api import KubeApi
from stockscale.launch.pods import CONTAINER

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
