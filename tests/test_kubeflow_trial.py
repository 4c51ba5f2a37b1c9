"""A trial of Kubeflow Trainer: parameters from KUBEFLOW_TRAINER_OPT_*, progress and the objective POSTed
over TLS to the status endpoint (served here on loopback with a CA made for the test), throttled, and
never failing training."""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from stockscale.errors import InputError
from stockscale.kubeflow_trial import (
    ENV_CA,
    ENV_TOKEN,
    ENV_URL,
    TrainerStatusProgress,
    TrainerStatusReporter,
    trial_parameters,
)


def test_the_controllers_parameters_become_the_trials_settings() -> None:
    env = {"KUBEFLOW_TRAINER_OPT_LR": "0.01", "KUBEFLOW_TRAINER_OPT_HIDDEN_SIZE": "32", "PATH": "/bin"}
    assert trial_parameters(env) == {"lr": "0.01", "hidden_size": "32"}
    assert trial_parameters({"KUBEFLOW_TRAINER_OPT_LEARNING_RATE": "0.1"}) == {"lr": "0.1"}
    with pytest.raises(InputError, match="KUBEFLOW_TRAINER_OPT_WIDTH names no training setting"):
        trial_parameters({"KUBEFLOW_TRAINER_OPT_WIDTH": "3"})


def test_no_reporter_without_the_feature_gates_variables(tmp_path: Path) -> None:
    assert TrainerStatusReporter.from_environ({ENV_URL: "https://x"}) is None
    full = {ENV_URL: "https://x", ENV_CA: str(tmp_path / "ca"), ENV_TOKEN: str(tmp_path / "t")}
    assert TrainerStatusReporter.from_environ(full) is not None


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture
def status_server(tmp_path: Path) -> Iterator[tuple[str, Path, Path, list[dict[str, object]]]]:
    """An HTTPS endpoint on 127.0.0.1 with a certificate signed by a CA made here; it records each body it
    accepts with the right bearer token and answers 401 to any other."""
    ca_key, ca, key, csr, cert = (tmp_path / name for name in ("ca.key", "ca.crt", "s.key", "s.csr", "s.crt"))
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
             "-days", "1", "-subj", "/CN=test-ca")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj",
             "/CN=127.0.0.1")
    ext = tmp_path / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(cert), "-days", "1", "-extfile", str(ext))
    token = tmp_path / "token"
    token.write_text("first-token\n")
    received: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers["Authorization"] != f"Bearer {token.read_text().strip()}":
                self.send_response(401)
            else:
                received.append({"path": self.path, **json.loads(body)})
                self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}/apis/trainer.kubeflow.org/v1alpha1/namespaces/ns/" \
          "trainjobs/trial-1/status"
    yield url, ca, token, received
    server.shutdown()


def test_progress_and_the_objective_reach_the_endpoint_over_tls(status_server) -> None:
    url, ca, token, received = status_server
    reporter = TrainerStatusReporter.from_environ({ENV_URL: url, ENV_CA: str(ca), ENV_TOKEN: str(token)})
    assert reporter is not None
    progress = TrainerStatusProgress(None, reporter)
    progress.epoch_start(1, 2, 10)
    progress.epoch_end(1, 0.9, 0.8, 1.0)
    token.write_text("rotated-token\n")  # the projected token rotates: the next post reads the new one
    progress.epoch_start(2, 2, 10)
    progress.epoch_end(2, 0.7, 0.6, 1.0)  # within 5 s of the last post: kept, not dropped
    started = time.monotonic()
    progress.finish(0.55, {"test_rmse": 1.25})
    assert time.monotonic() - started >= 3.5  # it waited for the window rather than posting too soon
    statuses = [body["trainerStatus"] for body in received]
    assert [status["progressPercentage"] for status in statuses] == [0, 100]
    last = statuses[-1]
    assert {"name": "val_loss", "value": "0.55"} in last["metrics"]
    assert {"name": "test_rmse", "value": "1.25"} in last["metrics"]
    assert last["estimatedRemainingSeconds"] == 0 and "lastUpdatedTime" in last
    assert received[-1]["path"].endswith("/trainjobs/trial-1/status")


def test_a_report_within_the_window_is_sent_by_the_next_one_after_it(status_server) -> None:
    url, ca, token, received = status_server
    now = [0.0]
    reporter = TrainerStatusReporter(url, ca, token, clock=lambda: now[0])
    reporter.report(10, 90, {"val_loss": 0.9})
    reporter.report(20, 80, {"val_loss": 0.8})  # too soon: kept
    now[0] = 6.0
    reporter.report(30, 70, {"val_loss": 0.7})  # the window opened: the newest goes
    reporter.close()
    assert [body["trainerStatus"]["progressPercentage"] for body in received] == [10, 30]


def test_an_endpoint_that_fails_never_stops_training(tmp_path: Path, capsys) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    reporter = TrainerStatusReporter("https://127.0.0.1:9/status", tmp_path / "missing-ca.crt", token,
                                     interval=0.0)
    reporter.report(50, 1, {"val_loss": 0.5})
    reporter.report(100, 0, {"val_loss": 0.4}, final=True)
    assert reporter.sent == 0
    assert capsys.readouterr().err.count("cannot report to the Trainer's status endpoint") == 1


def test_a_trial_pod_trains_the_controllers_point_and_reports_its_objective(cli_process, status_server,
                                                                           tmp_path: Path) -> None:
    """`stockscale train` as an OptimizationJob's trial runs it: the parameters from KUBEFLOW_TRAINER_OPT_*,
    the objective (the run's final validation loss) POSTed to the status endpoint over TLS."""
    url, ca, token, received = status_server
    env = {"KUBEFLOW_TRAINER_OPT_LR": "0.005", "KUBEFLOW_TRAINER_OPT_HIDDEN_SIZE": "12",
           ENV_URL: url, ENV_CA: str(ca), ENV_TOKEN: str(token)}
    ran = cli_process("train", "--epochs", "2", "--max-steps", "4", "--num-layers", "1", "--threads", "1",
                      "--baselines", "cheap", "--out", tmp_path / "run", env=env)
    assert ran.code == 0, ran.err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["config"]["lr"] == 0.005 and metrics["config"]["hidden_size"] == 12
    last = received[-1]["trainerStatus"]
    assert last["progressPercentage"] == 100
    objective = next(float(item["value"]) for item in last["metrics"] if item["name"] == "val_loss")
    assert objective == pytest.approx(metrics["val"]["loss"])
    refused = cli_process("train", "--epochs", "1", "--out", tmp_path / "bad",
                          env={"KUBEFLOW_TRAINER_OPT_WIDTH": "3"})
    assert refused.code == 2 and "KUBEFLOW_TRAINER_OPT_WIDTH names no training setting" in refused.err
