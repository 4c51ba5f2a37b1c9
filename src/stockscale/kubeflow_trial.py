"""A training process as a trial of Kubeflow Trainer: its parameters from the environment, its progress and
objective reported to the controller's status endpoint.

What the controller does (read, not guessed):
- **Parameters.** An OptimizationJob's controller injects each trial's parameters into the trainer's
  environment as `KUBEFLOW_TRAINER_OPT_<NAME>`, the name upper-cased (kubeflow/trainer v2.3.0,
  proposals/2605-optimization-job-crd/README.md: "prefixed environment variables (e.g.
  `KUBEFLOW_TRAINER_OPT_LR`)", the example reading `KUBEFLOW_TRAINER_OPT_LEARNING_RATE`). `stockscale
  train` reads every such variable as the TrainConfig field of that name, lower-cased; one that names no
  field is refused in one line (a parameter the trial would silently ignore).
- **Status.** With the `TrainJobStatus` feature gate on (Trainer >= v2.2.0), the controller sets
  `KUBEFLOW_TRAINER_SERVER_URL` (an HTTPS endpoint), `KUBEFLOW_TRAINER_SERVER_CA_CERT` (the CA file) and
  `KUBEFLOW_TRAINER_SERVER_TOKEN` (a projected, rotating token file). A trainer POSTs
  `{"trainerStatus": {"progressPercentage", "estimatedRemainingSeconds", "metrics": [{"name", "value"}],
  "lastUpdatedTime"}}` with the bearer token, verifying TLS with that CA, at most once every 5 seconds, and
  never lets a failure there stop training (kubeflow/trainer v2.3.0 docs/user-guides/trainjob-progress.md;
  the Kubeflow SDK 0.5.0's `update_trainjob_status`, kubeflow/trainer/backends/kubernetes/utils.py, which
  sends exactly that body with a 5 s timeout and re-reads the token file). The OptimizationJob takes a
  trial's objective from that status (KEP-2779 `trainerStatus`); a trial that reports nothing ends
  `Failed/MetricsUnavailable`.

The SDK drops a call that comes within 5 s of the last one. A trial's last report carries its objective, so
`TrainerStatusReporter` keeps the newest report that was throttled and sends it when the window opens, and
`close()` sends the final one whatever the window (waiting out the rest of it): nothing more than one post
every 5 s, and the objective is never the report that was dropped. The SDK itself is not a dependency: it
brings Katib's and the Trainer's API packages, for one POST that the standard library makes.
"""

from __future__ import annotations

import json
import ssl
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from stockscale.config import TrainConfig, TrainOverrides, canonical_name
from stockscale.errors import InputError
from stockscale.progress import ForwardingProgress, TrainProgress

OPT_PREFIX = "KUBEFLOW_TRAINER_OPT_"
ENV_URL = "KUBEFLOW_TRAINER_SERVER_URL"
ENV_CA = "KUBEFLOW_TRAINER_SERVER_CA_CERT"
ENV_TOKEN = "KUBEFLOW_TRAINER_SERVER_TOKEN"
MIN_INTERVAL = 5.0  # seconds between posts (the SDK's _MIN_UPDATE_INTERVAL_SECONDS)
TIMEOUT = 5.0  # seconds per post (the SDK's)
OBJECTIVE = "val_loss"  # what a search minimises: the last epoch's validation loss


def trial_parameters(environ: Mapping[str, str]) -> TrainOverrides:
    """The parameters an OptimizationJob's controller gave this trial, by TrainConfig field name."""
    params: TrainOverrides = {}
    for key, value in sorted(environ.items()):
        if not key.startswith(OPT_PREFIX):
            continue
        name = canonical_name(key.removeprefix(OPT_PREFIX).lower())  # lr's alias too, as a parameter may say it
        if name not in TrainConfig.model_fields:
            raise InputError(f"{key} names no training setting ({name}): an OptimizationJob parameter must be "
                             "one (lr, hidden_size, num_layers, ...)")
        params[name] = value
    return params


Post = Callable[[str, bytes, Mapping[str, str], ssl.SSLContext], int]


def _post(url: str, body: bytes, headers: Mapping[str, str], context: ssl.SSLContext) -> int:
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as response:  # noqa: S310 - https
        return int(response.status)


class TrainerStatusReporter:
    """Posts progress and metrics to the Trainer's status endpoint; see the module docstring.

    Thread-safe; a report never raises (a failure is one line on stderr, once, and reporting goes on)."""

    def __init__(self, url: str, ca_file: Path, token_file: Path, *, post: Post = _post,
                 clock: Callable[[], float] = time.monotonic, interval: float = MIN_INTERVAL) -> None:
        self.url, self.ca_file, self.token_file = url, ca_file, token_file
        self._post, self._clock, self._interval = post, clock, interval
        self._lock = threading.Lock()
        self._last: float | None = None
        self._pending: dict[str, object] | None = None
        self._warned = False
        self.sent = 0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> TrainerStatusReporter | None:
        """A reporter when the controller set all three variables (the feature gate is on), else None."""
        url, ca, token = environ.get(ENV_URL), environ.get(ENV_CA), environ.get(ENV_TOKEN)
        if not (url and ca and token):
            return None
        return cls(url, Path(ca), Path(token))

    def report(self, progress: int, remaining: float | None, metrics: Mapping[str, float | int],
               *, final: bool = False) -> None:
        status: dict[str, object] = {"progressPercentage": max(0, min(100, int(progress)))}
        if remaining is not None:
            status["estimatedRemainingSeconds"] = max(0, int(round(remaining)))
        status["metrics"] = [{"name": name, "value": repr(float(value)) if isinstance(value, float) else str(value)}
                             for name, value in metrics.items()]
        with self._lock:
            self._pending = status
            wait = 0.0 if self._last is None else self._last + self._interval - self._clock()
            if wait > 0 and not final:
                return  # kept: sent by the next report after the window, or by close()
            if wait > 0:
                time.sleep(wait)
            self._send_pending()

    def close(self) -> None:
        """Send a report that was throttled (the objective, when the last epoch came too soon)."""
        with self._lock:
            if self._pending is None:
                return
            wait = 0.0 if self._last is None else self._last + self._interval - self._clock()
            if wait > 0:
                time.sleep(wait)
            self._send_pending()

    def _send_pending(self) -> None:
        status, self._pending = self._pending, None
        if status is None:
            return
        status["lastUpdatedTime"] = datetime.now(UTC).isoformat()
        self._last = self._clock()
        try:
            token = self.token_file.read_text().strip()  # re-read every time: the projected token rotates
            context = ssl.create_default_context(cafile=str(self.ca_file))
            code = self._post(self.url, json.dumps({"trainerStatus": status}).encode(),
                              {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}, context)
            if code != 200:
                raise OSError(f"HTTP {code}")
            self.sent += 1
        except Exception as error:  # noqa: BLE001 - reporting must never stop training
            if not self._warned:
                self._warned = True
                print(f"warning: cannot report to the Trainer's status endpoint {self.url}: {error} "
                      "(training goes on)", file=sys.stderr, flush=True)


class TrainerStatusProgress(ForwardingProgress):
    """Training progress, passed on to `inner` (the terminal's or the log's) and reported to the Trainer:
    percent done, the time left at the epochs' mean pace, and each epoch's losses; `finish` reports the
    objective with 100 %."""

    def __init__(self, inner: TrainProgress | None, reporter: TrainerStatusReporter) -> None:
        super().__init__(inner)
        self.reporter = reporter
        self._epochs = 1
        self._seconds: list[float] = []

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self._epochs = max(1, epochs)
        if epoch == 1 or not self._seconds:
            self.reporter.report(int(100 * (epoch - 1) / self._epochs), None, {})
        super().epoch_start(epoch, epochs, steps)

    def epoch_end(self, epoch: int, train_loss: float, val_loss: float, seconds: float) -> None:
        self._seconds.append(seconds)
        remaining = (self._epochs - epoch) * sum(self._seconds) / len(self._seconds)
        self.reporter.report(int(100 * epoch / self._epochs), remaining,
                             {"epoch": epoch, "train_loss": train_loss, OBJECTIVE: val_loss})
        super().epoch_end(epoch, train_loss, val_loss, seconds)

    def finish(self, val_loss: float | None, extra: Mapping[str, float | int] | None = None) -> None:
        """The run's end: its objective (the final validation loss) at 100 %, sent whatever the window."""
        metrics: dict[str, float | int] = dict(extra or {})
        if val_loss is not None:
            metrics[OBJECTIVE] = val_loss
        self.reporter.report(100, 0, metrics, final=True)
        self.reporter.close()
