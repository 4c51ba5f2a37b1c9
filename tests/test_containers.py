"""Pods for real on one machine: the image, and the docker backend running replicas and trials as containers.

The translation from pod template to container options is checked without an engine. Everything else runs
real containers of the real image on the real engine. CI (STOCKSCALE_REQUIRE_ENGINE=1, set by .ci/run)
turns a missing engine or image into a failure; on a laptop without them these tests skip and say why.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from stockscale.config import build_train_config
from stockscale.launch.containers import container_options, replica_pods
from stockscale.launch.kubernetes import ClusterSpec
from stockscale.launch.kubernetes import manifests as m
from stockscale.launch.runner import TrainJob
from tests.conftest import assert_clean_error

IMAGE = ClusterSpec().image
REQUIRED = os.environ.get("STOCKSCALE_REQUIRE_ENGINE") == "1"
TINY = {"epochs": 1, "max_steps": 2, "hidden_size": 8, "num_layers": 1, "batch_size": 32}
TINY_FLAGS = ["--epochs", "1", "--max-steps", "3", "--hidden-size", "8", "--num-layers", "1"]
MiB = 2**20


def _engine_or_reason():
    try:
        from stockscale.errors import InputError
        from stockscale.launch.docker import connect_engine

        engine = connect_engine()
    except InputError as error:
        return None, str(error)
    try:
        engine.images.get(IMAGE)
    except Exception:
        return None, f"image {IMAGE} is not built (deploy/build-image.sh --offline)"
    return engine, ""


@pytest.fixture(scope="module")
def engine():
    found, reason = _engine_or_reason()
    if found is None:
        if REQUIRED:
            pytest.fail(f"STOCKSCALE_REQUIRE_ENGINE=1 but {reason}")
        pytest.skip(reason)
    return found


def ours(engine) -> list[str]:
    """Containers and networks of stockscale that exist now (from any run)."""
    containers = engine.containers.list(all=True, filters={"label": f"{m.LABEL_APP}={m.APP}"})
    networks = engine.networks.list(filters={"label": f"{m.LABEL_APP}={m.APP}"})
    return [f"container {c.name}" for c in containers] + [f"network {n.name}" for n in networks]


def _host() -> str:
    from stockscale.files import owner_tag

    return owner_tag().split("@", 1)[1]


def staging_folders() -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob("stockscale-docker-*"))


def run_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stockscale", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


# ------------------------------------------------------------------------------ pod template -> container


def test_a_replica_container_holds_its_pods_limits_security_and_operator_environment(tmp_path: Path) -> None:
    spec = ClusterSpec(cpu_request="500m", cpu_limit="1")
    job = m.pytorchjob_manifest(spec, name="run-a", run_id="run-a", config=TINY, workers=3,
                                memory_limit=512 * MiB, out="/results/run")
    master, worker1, worker2 = replica_pods(job)
    assert [master.name, worker1.name, worker2.name] == ["run-a-master-0", "run-a-worker-0", "run-a-worker-1"]
    options = container_options(worker2, volumes={"results": tmp_path}, network="run-a")
    env = options["environment"]
    assert {key: env[key] for key in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "PET_NODE_RANK",
                                      "PET_NNODES", "PET_MASTER_ADDR", "PET_MASTER_PORT")} == {
        "MASTER_ADDR": "run-a-master-0", "MASTER_PORT": "23456", "WORLD_SIZE": "3", "RANK": "2",
        "PET_NODE_RANK": "2", "PET_NNODES": "3", "PET_MASTER_ADDR": "run-a-master-0", "PET_MASTER_PORT": "23456"}
    assert options["user"] == "1000:1000" and options["group_add"] == ["1000"]
    assert options["read_only"] is True
    assert options["cap_drop"] == ["ALL"] and options["security_opt"] == ["no-new-privileges"]
    assert options["mem_limit"] == options["memswap_limit"] == 512 * MiB  # no swap beyond the limit
    assert options["nano_cpus"] == 10**9 and options["cpu_shares"] == 512
    assert options["hostname"] == "run-a-worker-1" and options["network"] == "run-a"
    assert options["tmpfs"]["/tmp"].startswith("mode=1777,size=")
    # A worker of a ReadWriteOnce PVC gets scratch space at /results; the master gets the host folder.
    assert "/results" in options["tmpfs"]
    (mount,) = container_options(master, volumes={"results": tmp_path})["mounts"]
    assert (mount["Target"], mount["Source"], mount["ReadOnly"]) == ("/results", str(tmp_path), False)
    assert options["entrypoint"] == ["stockscale"] and options["command"][0] == "train"


def test_a_trial_container_has_the_indexed_jobs_index_and_a_read_only_trials_file(tmp_path: Path) -> None:
    job = m.indexed_job_manifest(ClusterSpec(trials_mount_pvc=True), run_id="search-a", completions=4,
                                 parallelism=2, stop_file=False)  # as the docker backend renders it
    pod = replica_pods({"metadata": {"name": "x"}, "spec": {"pytorchReplicaSpecs": {}}})  # none: no replicas
    assert pod == []
    from stockscale.launch.containers import Pod

    trial = Pod(name="search-a-3", template=job["spec"]["template"])
    options = container_options(trial, volumes={"results": tmp_path / "r", "trials": tmp_path / "t"},
                                field_values={f"metadata.annotations['{m.COMPLETION_INDEX}']": "3"})
    assert options["environment"]["JOB_COMPLETION_INDEX"] == "3"
    assert options["command"][-2:] == ["--out", "/results/search-a/trials/3"]  # $(JOB_COMPLETION_INDEX)
    mounts = {mount["Target"]: mount for mount in options["mounts"]}
    assert mounts[m.TRIALS_DIR]["ReadOnly"] is True and mounts["/results"]["ReadOnly"] is False
    assert options["network_mode"] == "none"


# ------------------------------------------------------------------------------------------ the image


@pytest.mark.slow
def test_the_image_runs_as_user_1000_with_a_read_only_root(engine) -> None:
    image = engine.images.get(IMAGE)
    assert image.attrs["Config"]["User"] == "1000:1000"
    out = engine.containers.run(IMAGE, ["--help"], read_only=True, remove=True, network_mode="none",
                                cap_drop=["ALL"], security_opt=["no-new-privileges"], tmpfs={"/tmp": ""})
    assert b"usage: stockscale" in out
    who = engine.containers.run(IMAGE, entrypoint=["id", "-u"], read_only=True, remove=True, network_mode="none")
    assert who.strip() == b"1000"
    assert image.attrs["Size"] <= 1.2e9, f"the image is {image.attrs['Size'] / 1e9:.2f} GB (goal 1.2 GB)"


# ------------------------------------------------------------------------------ the docker backend, end to end


@pytest.mark.slow
def test_ddp_training_in_four_containers(engine, tmp_path: Path) -> None:
    ran = run_cli("train", "--backend", "docker", "--workers", "4", "--memory-limit", "1GiB", *TINY_FLAGS,
                  "--out", tmp_path / "run", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    metrics = json.loads(ran.stdout.strip().splitlines()[-1])
    assert metrics["world_size"] == 4
    assert [worker["rank"] for worker in metrics["workers"]] == [0, 1, 2, 3]
    assert all(64 * MiB < worker["peak_rss_bytes"] < 1024 * MiB for worker in metrics["workers"])
    assert (tmp_path / "run" / "metrics.json").is_file() and metrics["run_dir"] == str(tmp_path / "run")
    assert (tmp_path / "run" / "metrics.json").stat().st_uid == os.geteuid()  # handed back to the caller
    assert ours(engine) == [] and staging_folders() == []


@pytest.mark.slow
def test_a_container_over_its_limit_is_reported_oom_and_named(engine, tmp_path: Path) -> None:
    from stockscale.launch.docker import DockerRunner

    # 3,000 replicas with the memory loader hold about 3.5 GiB: far over 256 MiB.
    job = TrainJob(name="oom", config=build_train_config({**TINY, "multiplier": 3000, "loader": "memory"}),
                   run_dir=tmp_path / "run",
                   workers=1, memory_limit=256 * MiB, timeout=240)
    result = DockerRunner(run_prefix="oom").run(job)
    assert result.status == "oom", result
    assert "OOMKilled (container oom-" in result.detail
    assert result.limit_mechanism == "docker"
    assert ours(engine) == [] and staging_folders() == []


@pytest.mark.slow
def test_a_four_trial_search_runs_as_an_indexed_job_of_containers(engine, tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"lr": [0.001, 0.01], "hidden_size": [8, 16]}))
    ran = run_cli("search", "--backend", "docker", "--workers", "2", "--space", space, "--epochs", "1",
                  "--max-steps", "2", "--num-layers", "1", "--out", tmp_path / "search", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    summary = json.loads((tmp_path / "search" / "summary.json").read_text())
    assert summary["complete"] and summary["successes"] == 4 and summary["settings"]["launcher"] == "docker"
    for entry in summary["results"]:
        assert entry["val_loss"] is not None
        assert (Path(entry["run_dir"]) / "metrics.json").is_file()
    configs = sorted((entry["config"]["lr"], entry["config"]["hidden_size"]) for entry in summary["results"])
    assert configs == [(0.001, 8), (0.001, 16), (0.01, 8), (0.01, 16)]
    assert ours(engine) == [] and staging_folders() == []


@pytest.mark.slow
def test_a_pruned_trial_container_is_stopped_after_the_epoch_its_judge_stops(engine, tmp_path: Path) -> None:
    from stockscale.launch.docker import DockerRunner

    seen = []

    def stop_after_first(report) -> bool:
        seen.append(report.epoch)
        return True

    jobs = [TrainJob(name="trial-00", config=build_train_config({**TINY, "epochs": 50, "max_steps": None}),
                     run_dir=tmp_path / "t0",
                     judge=stop_after_first, timeout=240),
            TrainJob(name="trial-01", config=build_train_config(dict(TINY)), run_dir=tmp_path / "t1", timeout=240)]
    started = time.monotonic()
    pruned, finished = DockerRunner(run_prefix="prune").run_many(jobs, 2)
    assert pruned.status == "pruned" and pruned.detail == "pruned after epoch 1", pruned
    assert seen == [1] and [report.epoch for report in pruned.epochs] == [1] and pruned.epochs[0].val_loss > 0
    assert time.monotonic() - started < 120  # 50 epochs were asked for: the container was stopped after one
    assert finished.status == "success" and [report.epoch for report in finished.epochs] == [1]
    assert ours(engine) == [] and staging_folders() == []


@pytest.mark.slow
def test_a_failed_or_timed_out_run_leaves_nothing_behind(engine, tmp_path: Path) -> None:
    from stockscale.launch.docker import DockerRunner

    launcher = DockerRunner(run_prefix="late")
    job = TrainJob(name="late", config=build_train_config({**TINY, "max_steps": 100000, "epochs": 100}),
                   run_dir=tmp_path / "late",
                   workers=2, timeout=8)
    result = launcher.run(job)
    assert result.status == "timeout"
    assert ours(engine) == [] and staging_folders() == []
    failing = TrainJob(name="bad", config=build_train_config({**TINY, "source": "csv:/nowhere.csv"}),
                       run_dir=tmp_path / "bad")
    result = launcher.run(failing)
    assert result.status == "error" and "exit code 2 (container late-" in result.detail
    assert "nowhere.csv" in result.detail
    assert ours(engine) == [] and staging_folders() == []


@pytest.mark.slow
def test_sigterm_to_the_launcher_removes_every_container_and_network(engine, tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "stockscale", "train", "--backend", "docker", "--workers", "4", "--epochs", "100",
         "--max-steps", "100000", "--hidden-size", "8", "--num-layers", "1", "--out", str(tmp_path / "run")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        # As soon as the first container exists: the launcher is still creating the others, the moment an
        # interrupt could find a container the engine made and the launcher does not hold yet.
        while not [name for name in ours(engine) if name.startswith("container")]:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the containers never started"
            time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0
    assert ours(engine) == [] and staging_folders() == []


@pytest.mark.slow
def test_what_a_killed_launcher_left_is_swept_by_the_next_run(engine, tmp_path: Path) -> None:
    from stockscale.launch.docker import LABEL_OWNER, STAGING_PREFIX, DockerRunner

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    token = f"{os.uname().nodename}:{dead.stdout.strip()}:1.00"
    labels = {m.LABEL_APP: m.APP, m.LABEL_RUN: "orphan", LABEL_OWNER: token}
    network = engine.networks.create("stockscale-orphan", internal=True, labels=labels)
    engine.containers.create(IMAGE, entrypoint=["sleep", "600"], name="stockscale-orphan", labels=labels,
                             network="stockscale-orphan")
    folder = Path(tempfile.gettempdir()) / f"{STAGING_PREFIX}{dead.stdout.strip()}@{_host()}-orphan-x"
    folder.mkdir()
    try:
        swept = DockerRunner().sweep()
        assert "container stockscale-orphan" in swept and "network stockscale-orphan" in swept
        assert not folder.exists()
        assert ours(engine) == []
    finally:
        for leftover in engine.containers.list(all=True, filters={"name": "stockscale-orphan"}):
            leftover.remove(force=True)
        if network.id in {n.id for n in engine.networks.list()}:
            network.remove()


# ------------------------------------------------------------------------------------------- bad input


def test_no_engine_is_one_line_saying_how_to_start_one(cli, monkeypatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert_clean_error(cli("train", "--backend", "docker", *TINY_FLAGS), "no container engine", "dockerd")


@pytest.mark.slow
def test_an_image_that_is_not_built_names_the_build_command(engine, cli, tmp_path: Path) -> None:
    assert_clean_error(cli("train", "--backend", "docker", "--image", "stockscale:not-built", *TINY_FLAGS,
                           "--out", tmp_path / "run"), "stockscale:not-built", "build-image.sh")


def test_a_limit_below_what_a_worker_needs_and_an_unknown_backend_are_refused(cli, tmp_path: Path) -> None:
    assert_clean_error(cli("train", "--backend", "docker", "--memory-limit", "1MiB", *TINY_FLAGS),
                       "memory limit", "minimum")
    assert_clean_error(cli("train", "--backend", "nomad", *TINY_FLAGS), "--backend", "nomad")
    assert_clean_error(cli("scale-test", "--backend", "docker", "--mode", "local"), "--mode cluster")


@pytest.mark.slow
def test_the_scale_tests_cluster_side_runs_as_containers_and_the_report_says_so(engine, tmp_path: Path) -> None:
    ran = run_cli("scale-test", "--mode", "cluster", "--backend", "docker", "--workers", "2", "--multipliers", "1",
                  "--max-steps", "1", "--hidden-size", "8", "--num-layers", "1", "--memory-limit", "700MiB",
                  "--out", tmp_path / "results" / "scale_test_cluster", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr[-2000:]
    doc = json.loads((tmp_path / "results" / "scale_test_cluster" / "results.json").read_text())
    assert doc["settings"]["backend"] == "docker" and doc["settings"]["launcher"] == "docker"
    assert doc["settings"]["limit_mechanism"] == "docker"
    (run,) = doc["results"]
    assert run["status"] == "success" and len(run["peak_rss_bytes"]) == 2
    report = run_cli("compare", "--results", tmp_path / "results", cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-2000:]
    assert "cluster: 2 containers (docker), each limited to 700.0 MiB" in report.stdout
    assert ours(engine) == [] and staging_folders() == []


def test_the_build_script_passes_shellcheck_and_refuses_unknown_options() -> None:
    import shutil

    script = Path(__file__).resolve().parents[1] / "deploy" / "build-image.sh"
    if shutil.which("shellcheck") is None:
        if REQUIRED:
            pytest.fail("shellcheck is not installed (.ci/run installs it)")
        pytest.skip("shellcheck is not installed")
    done = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
    usage = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and "--offline" in usage.stdout
    wrong = subprocess.run(["bash", str(script), "--fast"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "unknown option --fast" in wrong.stderr


@pytest.mark.slow
def test_a_kept_run_can_be_read_and_deleted_through_the_launcher_interface(engine, tmp_path: Path) -> None:
    from stockscale.launch.docker import DockerRunner

    launcher = DockerRunner(run_prefix="kept", keep=True)
    result = launcher.run(TrainJob(name="kept", config=build_train_config(TINY), run_dir=tmp_path / "run"))
    assert result.status == "success", result.detail
    (name,) = [c.name for c in engine.containers.list(all=True, filters={"label": f"{m.LABEL_APP}={m.APP}"})]
    run_id = name.removesuffix("-master-0")
    lines: list[tuple[str, str]] = []
    assert launcher.logs(run_id, lambda source, line: lines.append((source, line))) == [name]
    assert json.loads(lines[-1][1])["status"] == "success" and {source for source, _ in lines} == {name}
    assert launcher.delete(run_id) == [f"container/{name}"]
    assert ours(engine) == []


def test_the_docker_runners_dry_run_is_each_containers_options_and_asks_no_engine(tmp_path: Path) -> None:
    from stockscale.launch.docker import DockerRunner

    class NoEngine:
        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"the dry run asked the engine for {name}")

    runner = DockerRunner(ClusterSpec(), engine=NoEngine(), run_prefix="dry")
    ddp = TrainJob(name="ddp", config=build_train_config({**TINY, "lr": 0.01}), run_dir=tmp_path / "ddp", workers=2,
                   memory_limit=512 * MiB)
    files = runner.render([ddp], 1)
    assert len(files) == 2 and all(name.endswith(".json") for name in files)
    master = json.loads(next(text for name, text in files.items() if "-master-0" in name))
    assert master["mem_limit"] == 512 * MiB and master["network"].startswith("dry-")
    assert "--lr" in master["command"] and master["command"][master["command"].index("--lr") + 1] == "0.01"
    trials = [TrainJob(name=f"t{i}", config=build_train_config({**TINY, "hidden_size": 8 * (i + 1)}),
                       run_dir=tmp_path / f"t{i}") for i in range(3)]
    search = runner.render(trials, 2)
    configmap = [name for name in search if name.startswith("trials-configmap/")]
    assert configmap and len([name for name in search if name.endswith(".json")]) == 3
    assert [entry["hidden_size"] for entry in yaml.safe_load(search[configmap[0]])] == [8, 16, 24]
    written = runner.dry_run(trials, 2, tmp_path / "out")  # (each render names a fresh run)
    assert len(written) == len(search) and all(path.is_file() for path in written)
    one_trial = runner.render(trials[:1], 1)  # run_many of one trial runs an Indexed Job's pod, as it renders
    assert any(name.startswith("trials-configmap/") for name in one_trial)
    one_run = runner.render_run(TrainJob(name="one", config=build_train_config(TINY), run_dir=tmp_path / "one"))
    assert len(one_run) == 1 and "-master-0" in next(iter(one_run))  # run(job): its PyTorchJob's master


# ----------------------------------------------------------------- the runner over a stand-in engine


class _FakeContainer:
    """A container of the stand-in engine: prints `script(options)`'s lines, one per `delay` s, then exits."""

    def __init__(self, engine: _FakeEngine, options: dict, lines: list[str], code: int, delay: float) -> None:
        self.engine, self.name, self.id, self.labels = engine, options["name"], options["name"], options["labels"]
        self.options, self.script, self.code, self.delay = options, lines, code, delay
        self.attrs: dict = {"State": {"Status": "created", "ExitCode": 0}}
        self.started = 0.0
        self.removed = False

    def start(self) -> None:
        self.started = time.monotonic()
        self.attrs["State"]["Status"] = "running"

    def reload(self) -> None:
        if self.removed or time.monotonic() - self.started >= self.delay * (len(self.script) + 1):
            self.attrs["State"] = {"Status": "exited", "ExitCode": 137 if self.removed else self.code}

    def logs(self, stream: bool, follow: bool, stdout: bool, stderr: bool):  # noqa: ARG002
        for index, line in enumerate(self.script):
            while not self.removed and time.monotonic() - self.started < self.delay * (index + 1):
                time.sleep(0.005)
            if self.removed:
                return
            yield (line + "\n").encode()

    def stats(self, stream: bool, decode: bool):  # noqa: ARG002
        return iter(())

    def remove(self, force: bool) -> None:  # noqa: ARG002
        self.removed = True
        self.engine.made.remove(self)


class _FakeEngine:
    """Just enough of the Docker SDK for DockerRunner: containers and networks found by label."""

    def __init__(self, script) -> None:
        self.script, self.made, self.networks_made = script, [], []
        engine = self

        class Images:
            def get(self, image: str) -> None:
                return None

        class Containers:
            def create(self, **options) -> _FakeContainer:
                container = _FakeContainer(engine, options, *script(options))
                engine.made.append(container)
                return container

            def list(self, all: bool, filters: dict) -> list:  # noqa: A002, ARG002
                return [c for c in engine.made if _labelled(c.labels, filters["label"])]

        class Network:
            def __init__(self, name: str, labels: dict) -> None:
                self.name, self.attrs = name, {"Labels": labels}

            def remove(self) -> None:
                engine.networks_made.remove(self)

        class Networks:
            def create(self, name: str, driver: str, internal: bool, labels: dict) -> Network:  # noqa: ARG002
                network = Network(name, labels)
                engine.networks_made.append(network)
                return network

            def list(self, filters: dict) -> list:
                return [n for n in engine.networks_made if _labelled(n.attrs["Labels"], filters["label"])]

        self.images, self.containers, self.networks = Images(), Containers(), Networks()


def _labelled(labels: dict, wanted: str | list[str]) -> bool:
    for item in [wanted] if isinstance(wanted, str) else wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def _epoch(epoch: int) -> str:
    return json.dumps({"event": "epoch", "epoch": epoch, "train_loss": 1.0, "val_loss": 1.0 / epoch, "seconds": 1})


def test_the_docker_runner_follows_replicas_by_the_one_policy_and_leaves_nothing(tmp_path: Path) -> None:
    from stockscale.launch.docker import DockerRunner

    def ddp(options: dict) -> tuple[list[str], int, float]:
        rank = int(options["environment"]["RANK"])
        if rank == 1:  # a worker that runs out of memory after a while
            return ["loading"], 3, 0.05
        return [_epoch(1), _epoch(2), json.dumps({"status": "success", "rank": 0})], 0, 0.05

    engine = _FakeEngine(ddp)
    lines: list[tuple[int, str]] = []
    runner = DockerRunner(ClusterSpec(), engine=engine, run_prefix="fake",
                          on_line=lambda rank, line: lines.append((rank, line)))
    job = TrainJob(name="ddp", config=build_train_config(TINY), run_dir=tmp_path / "ddp", workers=2)
    result = runner.run(job)
    assert (result.status, result.detail.split(" (")[0]) == ("oom", "MemoryError")
    assert engine.made == [] and engine.networks_made == []
    assert (1, "loading") in lines

    def trials(options: dict) -> tuple[list[str], int, float]:
        return [_epoch(1), _epoch(2), _epoch(3), json.dumps({"status": "success", "rank": 0})], 0, 0.05

    engine = _FakeEngine(trials)
    runner = DockerRunner(ClusterSpec(), engine=engine, run_prefix="fake")
    jobs = [TrainJob(name=f"t{i}", config=build_train_config(TINY), run_dir=tmp_path / f"t{i}", timeout=60,
                     judge=(lambda report: report.epoch >= 1) if i == 0 else None) for i in range(2)]
    pruned, finished = runner.run_many(jobs, 2)
    assert (pruned.status, pruned.detail) == ("pruned", "pruned after epoch 1")
    assert [report.epoch for report in pruned.epochs] == [1]
    assert finished.status == "success" and [report.epoch for report in finished.epochs] == [1, 2, 3]
    assert finished.metrics == {"status": "success", "rank": 0}
    assert engine.made == []
