"""--track mlflow for real: a search with pruning, a 2-worker training run and a scale test log to a real
`mlflow server`, and MlflowClient reads them back (parent and child runs, params, metric histories,
artifacts). A server stopped in the middle of a search costs one warning, and the search completes.

CI starts the server (.ci/run exports STOCKSCALE_TEST_MLFLOW_URI and STOCKSCALE_REQUIRE_MLFLOW=1); elsewhere
these tests start their own when mlflow is installed, and skip, saying why, when it is not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from stockscale.cli import main
from tests.mlflow_server import MlflowServer, wait_ready

pytestmark = [pytest.mark.mlflow, pytest.mark.slow]

REQUIRED = os.environ.get("STOCKSCALE_REQUIRE_MLFLOW") == "1"
TINY = ["--hidden-size", "8", "--num-layers", "1", "--threads", "1"]


def _mlflow_or_skip() -> None:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        if REQUIRED:
            pytest.fail("STOCKSCALE_REQUIRE_MLFLOW=1 but mlflow is not installed")
        pytest.skip("mlflow is not installed (pip install -e '.[test]' or '.[mlflow]')")


@pytest.fixture(scope="module")
def stoppable(tmp_path_factory):
    """A server of this module's own, started first so that it gets ready while the other tests run."""
    _mlflow_or_skip()
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-stoppable"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server_uri(tmp_path_factory, stoppable):
    """CI's server (STOCKSCALE_TEST_MLFLOW_URI), or one started here."""
    given = os.environ.get("STOCKSCALE_TEST_MLFLOW_URI")
    if given:
        yield wait_ready(given)
        return
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture
def client(server_uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=server_uri)


def runs_named(client, name: str) -> list:
    experiment = client.get_experiment_by_name("stockscale")
    return client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{name}'")


def children(client, parent) -> list:
    return client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                              order_by=["attributes.start_time ASC"])


def test_a_pruned_search_is_a_parent_run_with_one_child_per_trial(client, server_uri, tmp_path) -> None:
    out = tmp_path / "results" / f"hp_search_{uuid.uuid4().hex[:8]}"
    space = tmp_path / "space.yaml"
    space.write_text("lr: {type: double, min: 0.0001, max: 0.01, log: true}\n")
    assert main(["search", "--strategy", "random", "--trials", "5", "--pruner", "asha", "--epochs", "3",
                 "--space", str(space), *TINY, "--out", str(out), "--track", f"mlflow:{server_uri}"]) == 0
    summary = json.loads((out / "summary.json").read_text())

    (parent,) = runs_named(client, out.name)
    assert parent.info.status == "FINISHED" and parent.data.tags["stockscale.kind"] == "search"
    assert parent.data.params["pruner"] == "asha" and parent.data.params["strategy"] == "random"
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == ["summary.json"]
    trials = children(client, parent)
    assert sorted(run.info.run_name for run in trials) == sorted(entry["name"] for entry in summary["results"])
    by_name = {run.info.run_name: run for run in trials}
    pruned = [entry for entry in summary["results"] if entry["status"] == "pruned"]
    finished = [entry for entry in summary["results"] if entry["status"] == "success"]
    assert pruned and finished, summary["results"]  # ASHA stopped some of the five after epoch 1
    for entry in pruned:
        run = by_name[entry["name"]]
        assert run.data.tags["pruned"] == "true" and run.info.status == "KILLED"
        history = client.get_metric_history(run.info.run_id, "val_loss")
        assert [m.step for m in history] == list(range(1, entry["epochs_done"] + 1))
        assert history[-1].value == pytest.approx(entry["val_loss"])
    for entry in finished:
        run = by_name[entry["name"]]
        assert run.info.status == "FINISHED" and "pruned" not in run.data.tags
        assert float(run.data.params["lr"]) == pytest.approx(entry["config"]["lr"])
        assert run.data.params["hidden_size"] == "8" and run.data.params["loader"] == "lazy"  # the full config
        history = client.get_metric_history(run.info.run_id, "train_loss")
        assert [m.step for m in history] == [1, 2, 3]
        assert run.data.metrics["test_rmse"] == pytest.approx(entry["test_rmse"])
        assert run.data.metrics["peak_rss_bytes/worker_0"] > 0
        assert run.data.tags["stockscale.status"] == "success"
        assert run.data.tags["stockscale.tracking_route"] == "driver"  # a loopback server: pods could not reach it
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["metrics.json"]


def test_a_two_worker_training_run_logs_every_worker(client, server_uri, tmp_path) -> None:
    out = tmp_path / "runs" / f"train-{uuid.uuid4().hex[:8]}"
    assert main(["train", "--workers", "2", "--epochs", "2", "--max-steps", "4", *TINY, "--out", str(out),
                 "--track", f"mlflow:{server_uri}"]) == 0

    (run,) = runs_named(client, out.name)
    assert run.info.status == "FINISHED" and run.data.tags["stockscale.kind"] == "train"
    assert run.data.params["epochs"] == "2" and run.data.params["seed"] == "42"
    metrics = run.data.metrics
    assert metrics["world_size"] == 2
    assert metrics["peak_rss_bytes/worker_0"] > 0 and metrics["peak_rss_bytes/worker_1"] > 0
    assert metrics["samples_per_second/rank_0"] > 0 and metrics["samples_per_second/rank_1"] > 0
    assert run.data.tags["stockscale.limit_mechanism"] == "none"  # no --memory-limit
    written = json.loads((out / "metrics.json").read_text())
    assert [m.value for m in client.get_metric_history(run.info.run_id, "val_loss")] == \
        pytest.approx([epoch["val_loss"] for epoch in written["history"]])
    assert sorted(a.path for a in client.list_artifacts(run.info.run_id)) == ["config.yaml", "metrics.json"]


def test_a_scale_test_is_a_parent_with_one_child_per_probe(client, server_uri, tmp_path) -> None:
    out = tmp_path / "results" / f"scale_{uuid.uuid4().hex[:8]}"
    assert main(["scale-test", "--mode", "local", "--multipliers", "1,2", "--max-steps", "2", *TINY,
                 "--memory-limit", "2GiB", "--out", str(out), "--track", f"mlflow:{server_uri}"]) == 0
    results = json.loads((out / "results.json").read_text())

    (parent,) = runs_named(client, out.name)
    assert parent.data.tags["stockscale.kind"] == "scale-test" and parent.data.params["memory_limit_bytes"] == \
        str(2**31)
    probes = children(client, parent)
    assert sorted(run.data.tags["multiplier"] for run in probes) == ["1", "2"]
    for run, row in zip(sorted(probes, key=lambda r: r.data.tags["multiplier"]), results["results"], strict=True):
        assert run.data.params["multiplier"] == str(row["multiplier"]) and run.data.params["loader"] == "memory"
        assert run.data.tags["stockscale.limit_mechanism"] == results["settings"]["limit_mechanism"]
        assert run.data.metrics["peak_rss_bytes/worker_0"] == row["peak_rss_bytes"][0]
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == ["results.json"]


def test_a_server_stopped_during_a_search_gives_one_warning_and_the_search_completes(stoppable, tmp_path) -> None:
    uri = stoppable.wait_ready()
    out = tmp_path / "results" / "hp_search_local"
    space = tmp_path / "space.yaml"
    space.write_text("lr: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05]\n")
    search = subprocess.Popen([sys.executable, "-m", "stockscale", "search", "--space", str(space), "--epochs", "3",
                               *TINY, "--out", str(out), "--track", f"mlflow:{uri}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and search.poll() is None:
            try:
                done = len(json.loads((out / "summary.json").read_text())["results"])
            except (OSError, ValueError, KeyError):
                done = 0
            if done >= 1:
                break
            time.sleep(0.1)
        stoppable.stop(graceful=False)
        stopped_after = len(json.loads((out / "summary.json").read_text())["results"])
        stdout, stderr = search.communicate(timeout=300)
    finally:
        if search.poll() is None:
            search.kill()
            search.communicate()
    summary = json.loads((out / "summary.json").read_text())

    assert search.returncode == 0, stderr[-2000:]
    assert 1 <= stopped_after < 8, "the search ended before the server could be stopped in its middle"
    assert summary["complete"] and len(summary["results"]) == 8 and summary["successes"] == 8
    warnings = [line for line in (stdout + stderr).splitlines() if "warning" in line.lower()]
    assert len(warnings) == 1 and "MLflow tracking at" in warnings[0] and "results files" in warnings[0], warnings
    assert "Traceback" not in stderr


# ------------------------------------------------------------------ trials that log themselves (route `pod`)

def _pod_tracking_vars(pod_env: dict[str, str]) -> dict[str, str]:
    """The tracking variables of the pod the kubernetes backend renders: the ClusterSpec the CLI builds from
    args.pod_env (cli/k8s.py), through the pod template every stockscale pod is made from."""
    from argparse import Namespace

    from stockscale.cli.k8s import cluster_spec
    from stockscale.launch.pods import pod_template

    spec = cluster_spec(Namespace(image=None, namespace=None, pod_env=pod_env, k8s_config=None))
    template = pod_template(spec, {}, ["train"], threads=1, memory_limit=None, results={"name": "results"},
                            port=False)
    return {entry["name"]: entry["value"] for entry in template["spec"]["containers"][0]["env"]
            if entry["name"].startswith(("MLFLOW_", "STOCKSCALE_MLFLOW_"))}


def _without_tracking(environ) -> dict[str, str]:
    return {key: value for key, value in environ.items() if not key.startswith(("MLFLOW_", "STOCKSCALE_MLFLOW_"))}


def test_a_pod_logs_its_own_child_run_and_the_driver_logs_no_duplicate(client, server_uri, tmp_path) -> None:
    """The server by this machine's host name (not loopback, so pods could reach it), a driver that searches
    on Kubernetes, and a `stockscale train` run with exactly the tracking env its pod template carries."""
    import socket

    from stockscale.launch.runner import JobResult
    from stockscale.tracking import EXPERIMENT_VARIABLE, PARENT_VARIABLE, URI_VARIABLE, reachable_from_pods
    from stockscale.tracking.mlflow_tracker import MlflowTracker

    uri = server_uri.replace("127.0.0.1", socket.gethostname())
    if not reachable_from_pods(uri):
        pytest.skip(f"this machine's host name is a loopback name ({uri})")
    warnings: list[str] = []
    driver = MlflowTracker(uri, tmp_path, warnings.append)
    assert driver.pod_env("docker") == {}  # containers have no network: the driver logs
    pod_vars = _pod_tracking_vars(driver.pod_env("kubernetes"))
    assert set(pod_vars) == {URI_VARIABLE, EXPERIMENT_VARIABLE, PARENT_VARIABLE}, warnings
    name = f"k8s-search-{uuid.uuid4().hex[:8]}"
    driver.on_start("search", name, {"trials": 1})

    run_dir = tmp_path / f"trial-{uuid.uuid4().hex[:8]}"
    ran = subprocess.run([sys.executable, "-m", "stockscale", "train", *TINY, "--epochs", "2", "--out", str(run_dir)],
                         env={**_without_tracking(os.environ), **pod_vars}, capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert ran.returncode == 0, ran.stderr
    assert "warning" not in ran.stderr, ran.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    driver.on_result(JobResult(name=run_dir.name, status="success", metrics=metrics, run_dir=str(run_dir)), {},
                     {"stockscale.kind": "trial"})
    driver.on_end(True, [])
    assert warnings == []

    [parent] = runs_named(client, name)
    assert parent.info.run_id == pod_vars[PARENT_VARIABLE]
    assert parent.data.tags["stockscale.tracking_route"] == "pod"
    [child] = children(client, parent)  # the pod's own run; no second one from the driver
    assert child.info.run_name == run_dir.name
    assert child.info.status == "FINISHED"
    assert child.data.tags["stockscale.tracking_route"] == "pod"
    assert child.data.params["hidden_size"] == "8" and child.data.params["loader"] == "lazy"  # the full config
    assert [point.step for point in client.get_metric_history(child.info.run_id, "train_loss")] == [1, 2]
    assert len(client.get_metric_history(child.info.run_id, "val_loss")) == 2
    assert "peak_rss_bytes/worker_0" in child.data.metrics and "test_rmse" in child.data.metrics
    assert "samples_per_second/rank_0" in child.data.metrics
    assert "metrics.json" in {item.path for item in client.list_artifacts(child.info.run_id)}


def test_a_pod_whose_server_is_down_trains_with_one_warning(tmp_path) -> None:
    from stockscale.tracking import PodTracking
    from tests.mlflow_server import free_port

    _mlflow_or_skip()
    down = PodTracking(f"http://127.0.0.1:{free_port()}", "1", "0" * 32).env()
    ran = subprocess.run([sys.executable, "-m", "stockscale", "train", *TINY, "--epochs", "2",
                          "--out", str(tmp_path / "run")], env={**_without_tracking(os.environ), **down},
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert ran.returncode == 0, ran.stderr
    warnings = [line for line in ran.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: MLflow tracking at"), ran.stderr
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]["rmse"] > 0
