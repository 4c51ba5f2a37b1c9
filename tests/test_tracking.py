"""--track without a server: the flag's grammar, MLflow missing, which URIs pods could reach, and the pods'
environment that carries MLFLOW_TRACKING_URI."""

from __future__ import annotations

import pytest

from stockscale.tracking import PodTracking, TrackSpec, parse_track, reachable_from_pods, tracking_route
from tests.conftest import assert_clean_error


def test_track_takes_mlflow_with_or_without_a_uri() -> None:
    assert parse_track("mlflow") == TrackSpec("mlflow", None)
    assert parse_track("mlflow:http://127.0.0.1:5000") == TrackSpec("mlflow", "http://127.0.0.1:5000")
    assert parse_track("mlflow:sqlite:///x/mlflow.db") == TrackSpec("mlflow", "sqlite:///x/mlflow.db")


@pytest.mark.parametrize(("text", "words"), [("wandb", ("mlflow or mlflow:URI",)), ("mlflow:", ("empty",))])
def test_a_bad_track_is_one_line(cli, tmp_path, text, words) -> None:
    assert_clean_error(cli("search", "--out", tmp_path / "out", "--track", text), "--track", *words)
    assert not (tmp_path / "out").exists()


def test_without_mlflow_track_is_one_line_naming_the_extra(cli_process, tmp_path) -> None:
    """A Python that cannot import mlflow (a path entry that shadows it with a module that fails to import)."""
    shadow = tmp_path / "shadow"
    (shadow / "mlflow").mkdir(parents=True)
    (shadow / "mlflow" / "__init__.py").write_text("raise ImportError('no mlflow here', name='mlflow')\n")
    ran = cli_process("search", "--out", tmp_path / "out", "--track", "mlflow", env={"PYTHONPATH": str(shadow)})
    assert_clean_error(ran, "pip install 'stockscale[mlflow]'")
    assert not (tmp_path / "out" / "summary.json").exists()


@pytest.mark.parametrize(("uri", "reachable"), [
    ("http://mlflow.tracking.svc:5000", True), ("https://mlflow.example.org", True), ("http://10.0.0.5:5000", True),
    ("http://127.0.0.1:5000", False), ("http://localhost:5000", False), ("http://[::1]:5000", False),
    ("sqlite:///results/mlflow.db", False), ("file:///tmp/mlruns", False), ("databricks", False)])
def test_only_a_server_off_the_loopback_goes_into_the_pods_env(uri, reachable) -> None:
    assert reachable_from_pods(uri) is reachable


def test_the_pods_env_carries_the_cluster_specs_extra_variables() -> None:
    from stockscale.launch.kubernetes import ClusterSpec
    from stockscale.launch.pods import pod_template

    spec = ClusterSpec(env={"MLFLOW_TRACKING_URI": "http://mlflow.tracking.svc:5000"})
    template = pod_template(spec, {}, ["train"], threads=1, memory_limit=None, results={"name": "results"},
                            port=False)
    env = template["spec"]["containers"][0]["env"]
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.tracking.svc:5000"} in env


@pytest.mark.parametrize(("uri", "backend", "route"), [
    ("http://mlflow.tracking.svc:5000", "kubernetes", "pod"), ("https://mlflow.example.org", "kubernetes", "pod"),
    ("http://127.0.0.1:5000", "kubernetes", "driver"), ("sqlite:///results/mlflow.db", "kubernetes", "driver"),
    ("http://mlflow.tracking.svc:5000", "docker", "driver"),  # containers run with no network at all
    ("http://mlflow.tracking.svc:5000", "local", "driver"), ("http://mlflow.tracking.svc:5000", "parallel", "driver")])
def test_only_pods_that_reach_the_server_log_their_own_runs(uri, backend, route) -> None:
    assert tracking_route(uri, backend) == route


def test_a_pod_reads_back_the_tracking_the_driver_put_into_its_env() -> None:
    pod = PodTracking("http://mlflow.tracking.svc:5000", "3", "a" * 32)
    assert PodTracking.from_env(pod.env()) == pod
    assert PodTracking.from_env({"MLFLOW_TRACKING_URI": "http://mlflow.tracking.svc:5000"}) is None  # no parent


def test_the_driver_says_it_logs_docker_trials_itself(tmp_path, capsys) -> None:
    pytest.importorskip("mlflow")
    from stockscale.cli.tracking import pods_tracking_env
    from stockscale.tracking.mlflow_tracker import MlflowTracker

    tracker = MlflowTracker("http://mlflow.tracking.svc:5000", tmp_path, print)
    assert pods_tracking_env(tracker, "docker") == {}  # no network in the containers: nothing to contact
    assert "tracking route: driver (the docker trials cannot reach" in capsys.readouterr().out
