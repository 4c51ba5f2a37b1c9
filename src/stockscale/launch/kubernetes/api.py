"""The official Kubernetes client behind one call: configuration, retries with backoff, one-line errors.

Every request stockscale makes goes through `KubeApi.call` (or `watch`, `open_log`), which
- retries what is transient (HTTP 429 and 5xx, timeouts, a dropped connection) with exponential backoff,
  for at least `attempts` tries and for as long as `retry_for` seconds (default 5 minutes) since the call
  first failed, so a short API-server outage does not end an hours-long run;
- turns what the user must fix into an `InputError` with one line: the cluster cannot be reached (no
  kubeconfig, connection refused), credentials refused (401), not allowed (403), the PyTorchJob CRD missing
  (404 on kubeflow.org/v1 pytorchjobs), the namespace missing, a name already taken (409), an object the API
  server rejects (400, 422).

Responses are read as plain JSON dicts (`_preload_content=False`), the same shape as the manifests we send,
so nothing depends on the client's generated model classes. The client is an optional extra
(`stockscale[k8s]`) and is imported only when a cluster is actually needed.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from stockscale.errors import InputError, StockscaleError

TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
CONNECT_TIMEOUT = 10.0


CRD_MISSING = {
    "PyTorchJob": "the PyTorchJob resource (kubeflow.org/v1 pytorchjobs) is not installed in the cluster: install "
                  "the Kubeflow Training Operator (deploy/deploy.sh --install-operator)",
    "TrainJob": "the TrainJob resource (trainer.kubeflow.org/v1alpha1 trainjobs) is not installed in the cluster: "
                "install Kubeflow Trainer v2 (deploy/deploy.sh --install-operator --trainer v2)",
    "OptimizationJob": "the OptimizationJob resource (trainer.kubeflow.org/v1alpha1 optimizationjobs) is not "
                       "installed in the cluster: install Kubeflow Trainer v2 (deploy/deploy.sh --install-operator "
                       "--trainer v2)",
}


class KubernetesApiError(StockscaleError):
    """The API server kept failing (5xx, timeouts) after every retry: not the user's input, exit 1."""


class NameTakenError(InputError):
    """409 Conflict on create: an object with that name exists already."""


def import_kubernetes() -> ModuleType:
    """The official client, or an InputError that says how to install it."""
    try:
        import kubernetes
        import kubernetes.client
        import kubernetes.config
        import kubernetes.watch
    except ImportError:
        raise InputError("the Kubernetes backend needs the official client: pip install 'stockscale[k8s]'") from None
    return kubernetes


def load_configuration(kubeconfig: Path | None = None, context: str | None = None) -> Any:
    """A client Configuration from a kubeconfig (`kubeconfig`, $KUBECONFIG, ~/.kube/config) or, inside a
    pod, the service account; `context` picks a kubeconfig context."""
    kubernetes = import_kubernetes()
    configuration = kubernetes.client.Configuration()
    default = Path.home() / ".kube" / "config"
    if kubeconfig is not None and not kubeconfig.is_file():
        raise InputError(f"kubeconfig {kubeconfig} does not exist or is not a file")
    use_kubeconfig = kubeconfig is not None or context is not None or bool(os.environ.get("KUBECONFIG")) \
        or default.is_file()
    try:
        if use_kubeconfig:
            kubernetes.config.load_kube_config(config_file=str(kubeconfig) if kubeconfig else None,
                                               context=context, client_configuration=configuration)
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        else:
            raise InputError("no Kubernetes configuration: no kubeconfig (--kubeconfig, $KUBECONFIG or "
                             "~/.kube/config) and not running inside a pod")
    except kubernetes.config.ConfigException as error:
        raise InputError(f"cannot load the Kubernetes configuration: {_one_line(str(error))}") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        where = kubeconfig or os.environ.get("KUBECONFIG") or default
        raise InputError(f"cannot load the Kubernetes configuration from {where}: "
                         f"{_one_line(str(error)) or type(error).__name__}") from None
    return configuration


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


@dataclass
class _Tries:
    """The tries of one request so far, and when the first of them failed (what `retry_for` counts from)."""

    count: int = 0
    first_failure: float | None = None


class KubeApi:
    """Core, batch, networking and custom-object APIs over one connection pool, with retries and error mapping.

    `configuration` is copied and its urllib3 retries switched off, so this class is the one place that
    decides what to retry. Connection refused is the user's problem on the first request (wrong context,
    cluster down) but transient once the cluster has answered (an API server restarting during a long run).
    """

    def __init__(
        self,
        configuration: Any,
        *,
        attempts: int = 5,
        retry_for: float = 300.0,
        backoff: float = 0.5,
        max_backoff: float = 16.0,
        timeout: float = 30.0,
        watch_grace: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        kubernetes = import_kubernetes()
        self._k = kubernetes
        configuration = copy.deepcopy(configuration)
        configuration.retries = False
        self.host = str(configuration.host)
        self.client = kubernetes.client.ApiClient(configuration)
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.batch = kubernetes.client.BatchV1Api(self.client)
        self.custom = kubernetes.client.CustomObjectsApi(self.client)
        self.networking = kubernetes.client.NetworkingV1Api(self.client)
        self.attempts = max(1, attempts)
        self.retry_for = max(0.0, retry_for)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.watch_grace = watch_grace  # a watch the server does not end on time is ended this much later
        self.sleep = sleep
        self.answered = False  # has the API server answered at least once?

    # ---------------------------------------------------------------------------------------------- calls

    def call(self, fn: Callable[..., Any], *args: Any, what: str, kind: str = "", namespace: str = "",
             missing_ok: bool = False, ok_statuses: tuple[int, ...] = (), **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)` with retries; the JSON body as a dict (None for an empty body).

        `missing_ok`: an object that does not exist (404) gives None instead of an error.
        `ok_statuses`: other statuses that give None (e.g. 400 while a container is still starting).
        """
        response = self._request(fn, args, kwargs, what=what, kind=kind, namespace=namespace,
                                 missing_ok=missing_ok, ok_statuses=ok_statuses, read_timeout=self.timeout,
                                 read_body=True)
        if response is None:
            return None
        return json.loads(response.data) if response.data else None

    def _request(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], *, what: str,
                 kind: str, namespace: str, missing_ok: bool, ok_statuses: tuple[int, ...],
                 read_timeout: float, read_body: bool = False) -> Any:
        """The response of `fn` (its body read when `read_body`, so a read that times out is retried too;
        else left to stream), retrying transient failures with backoff; None for a status in `ok_statuses`
        (or a missing object with `missing_ok`); one-line errors for the rest."""
        tries = _Tries()
        while True:  # until a try answers, or _retry_or_raise raises
            tries.count += 1
            try:
                response = fn(*args, _preload_content=False, _request_timeout=(CONNECT_TIMEOUT, read_timeout),
                              **kwargs)
                if read_body:
                    _ = response.data  # urllib3 reads and keeps the body
                self.answered = True
                return response
            except self._k.client.ApiException as error:
                self.answered = self.answered or bool(error.status)
                if error.status in ok_statuses:
                    return None
                if error.status == 404 and missing_ok and not _namespace_missing(error) \
                        and not _endpoint_missing(error, kind):
                    return None
                self._retry_or_raise(error, tries, what=what, kind=kind, namespace=namespace)
            except Exception as error:  # urllib3's connection and timeout errors
                self._retry_or_raise(error, tries, what=what, kind=kind, namespace=namespace)

    def watch(self, fn: Callable[..., Any], *args: Any, what: str, window: float, kind: str = "",
              namespace: str = "", **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Watch events (`{"type", "object"}` dicts) for at most `window` seconds, then the iterator ends.

        A stream that times out, drops or expires (410) simply ends: callers loop, re-listing as they go,
        so a watch never needs to resume. Failures to start the stream are retried or mapped as in `call`.
        """
        tries = _Tries()
        while True:  # until a try answers, or _retry_or_raise raises
            tries.count += 1
            watcher = self._k.watch.Watch()
            started = False
            try:
                for event in watcher.stream(fn, *args, timeout_seconds=max(1, int(window)), deserialize=False,
                                            _request_timeout=(CONNECT_TIMEOUT, window + self.watch_grace),
                                            **kwargs):
                    started = self.answered = True
                    if isinstance(event, dict) and isinstance(event.get("object"), dict):
                        yield event
                return
            except self._k.client.ApiException as error:
                if error.status == 410 or started:
                    return
                self.answered = self.answered or bool(error.status)
                self._retry_or_raise(error, tries, what=what, kind=kind, namespace=namespace)
            except Exception as error:
                if self.is_network_error(error) and (started or self._timed_out(error)):
                    return  # the window ended without news, or the stream dropped: the caller re-lists
                self._retry_or_raise(error, tries, what=what, kind=kind, namespace=namespace)
            finally:
                watcher.stop()

    def open_log(self, pod: str, namespace: str, *, container: str, follow: bool, read_timeout: float,
                 tail_lines: int | None = None) -> Any | None:
        """A streaming response of a pod's log, or None while the container has not started (400/404)."""
        kwargs: dict[str, Any] = {"container": container, "follow": follow}
        if tail_lines is not None:
            kwargs["tail_lines"] = tail_lines
        return self._request(self.core.read_namespaced_pod_log, (pod, namespace), kwargs,
                             what=f"read the log of pod {pod}", kind="Pod", namespace=namespace, missing_ok=False,
                             ok_statuses=(400, 404), read_timeout=read_timeout)

    def _retry_or_raise(self, error: Exception, tries: _Tries, *, what: str, kind: str, namespace: str) -> None:
        """The one retry rule of every request, after a try failed with `error`: return after a backoff pause
        when the failure is transient (HTTP 429/5xx/408, a timeout or dropped connection, a refused connection
        once the server has answered) and there are tries left (fewer than `attempts`, or still within
        `retry_for` of the first failure); else raise the one-line error the user sees, or `error` itself when
        it is not the API's or the network's."""
        tries.first_failure = tries.first_failure or time.monotonic()
        if isinstance(error, self._k.client.ApiException):
            if error.status in TRANSIENT_STATUSES and self._again(tries):
                self._pause(tries.count)
                return
            raise self.api_error(error, what, kind, namespace, tries.count) from None
        if not self.is_network_error(error):
            raise error
        if self._transient_network(error) and self._again(tries):
            self._pause(tries.count)
            return
        raise self.network_error(error, what, tries.count) from None

    def _again(self, tries: _Tries) -> bool:
        """Retry once more: fewer than `attempts` tries so far, or still within `retry_for` of the first failure."""
        return tries.count < self.attempts or (tries.first_failure is not None
                                               and time.monotonic() - tries.first_failure < self.retry_for)

    def _pause(self, attempt: int) -> None:
        self.sleep(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))

    # ------------------------------------------------------------------------------------------ failures

    def is_network_error(self, error: Exception) -> bool:
        import urllib3.exceptions

        return isinstance(error, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError)

    @staticmethod
    def _cause(error: Exception) -> Exception:
        import urllib3.exceptions

        while isinstance(error, urllib3.exceptions.MaxRetryError) and error.reason is not None:
            error = error.reason
        return error

    def _timed_out(self, error: Exception) -> bool:
        import urllib3.exceptions

        return isinstance(self._cause(error), urllib3.exceptions.ReadTimeoutError | TimeoutError)

    def _refused(self, error: Exception) -> bool:
        import urllib3.exceptions

        cause = self._cause(error)
        return isinstance(cause, urllib3.exceptions.NewConnectionError | ConnectionRefusedError)

    def _transient_network(self, error: Exception) -> bool:
        return not self._refused(error) or self.answered

    def network_error(self, error: Exception, what: str, attempts: int) -> StockscaleError:
        cause = self._cause(error)
        if self._refused(error):
            reason = "connection refused" if "refused" in str(cause).lower() else _one_line(str(cause), 120)
            return InputError(f"cannot reach the Kubernetes API at {self.host} ({reason}): is the cluster "
                              "running, and is the kubeconfig context the right one?")
        return InputError(f"the Kubernetes API at {self.host} did not answer ({type(cause).__name__}) to "
                          f"{what}, after {attempts} attempt{'s' if attempts > 1 else ''}")

    def api_error(self, error: Any, what: str, kind: str, namespace: str, attempts: int) -> StockscaleError:
        status = error.status
        message = _status_message(error)
        if status == 401:
            return InputError(f"the Kubernetes API at {self.host} refused the credentials (401 Unauthorized): "
                              "log in again or refresh the kubeconfig token")
        if status == 403:
            return InputError(f"not allowed to {what} (403 Forbidden): {message}")
        if status == 404 and _namespace_missing(error):
            return InputError(f"namespace {namespace or '?'} does not exist: create it with deploy/deploy.sh "
                              f"or kubectl create namespace {namespace or 'NAME'}")
        if status == 404 and _endpoint_missing(error, kind):
            return InputError(CRD_MISSING[kind])
        if status == 404:
            return InputError(f"cannot {what}: not found ({message})")
        if status == 409:
            return NameTakenError(f"cannot {what}: the name is already taken ({message}); delete the old one "
                              "(stockscale k8s delete RUN) or choose another run id")
        if status in (400, 422):
            return InputError(f"the API server rejected the request to {what} ({status}): {message}")
        if status in TRANSIENT_STATUSES:
            return KubernetesApiError(f"the Kubernetes API kept failing to {what}: {status} {message} "
                                      f"(after {attempts} attempts)")
        return KubernetesApiError(f"cannot {what}: HTTP {status} {message}")


def _status(error: Any) -> dict[str, Any]:
    """The Status object of an API error, or {} when the body is not one (a proxy's HTML, say)."""
    try:
        body = json.loads(error.body or "")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _status_message(error: Any) -> str:
    status = _status(error)
    message = status.get("message") or error.reason or ""
    return _one_line(str(message), 200)


def _namespace_missing(error: Any) -> bool:
    """A create in a namespace that does not exist: 404 with details.kind "namespaces"."""
    status = _status(error)
    details = status.get("details") or {}
    if details.get("kind") == "namespaces":
        return True
    return str(status.get("message", "")).startswith('namespaces "')


def _endpoint_missing(error: Any, kind: str) -> bool:
    """404 from an API path the server does not serve: for PyTorchJobs, the CRD is not installed.

    The API server answers "the server could not find the requested resource" for an unknown resource type
    (and a proxy in front of it may answer with a page that is not a Status at all); a missing object is
    "<kind> \"<name>\" not found".
    """
    if kind not in CRD_MISSING:
        return False
    status = _status(error)
    if not status:
        return True
    return "could not find the requested resource" in str(status.get("message", ""))
