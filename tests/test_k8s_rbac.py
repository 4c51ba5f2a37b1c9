"""The Role `stockscale k8s render` ships is exactly what stockscale needs: every request the launcher and the
`k8s` commands make in the emulator (a training run of each kind, each kind of search, status, logs, delete)
is allowed by one of its rules, and every verb it grants is used by one of those requests (a pruned trial's pod
is patched with its stop annotation: a search with ASHA over real trials).

Requests are told apart from the fake cluster side's by a header the test sets on the launcher's client; each
is mapped to its RBAC verb and resource the way the API server's authorizer does (GET of a collection is
list, or watch with ?watch=true; GET of a named object is get; POST create; DELETE of a named object delete).
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from k8s_cluster import Cluster, Emulator, job_controller, succeed, trainjob_succeeds
from k8s_job_fake import IndexedJobController
from test_k8s_katib import katib_controller
from test_k8s_pruning import REAL, asha_search
from test_k8s_trainer import optimization_controller

from stockscale.config import TrainConfig
from stockscale.launch.kubernetes import ClusterSpec, KubernetesRunner
from stockscale.launch.kubernetes import manifests as m
from stockscale.launch.runner import TrainJob
from stockscale.search.controller import ControllerSearcher
from stockscale.search.katib import KatibSearcher
from stockscale.search.optimization_job import OptimizationJobSearcher
from stockscale.search.registry import pruner, strategy
from stockscale.search.searcher import TrialTemplate
from stockscale.space import parse_space

WHO = "X-Stockscale-Test"
PATH = re.compile(r"^/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)/namespaces/[^/]+/(?P<resource>[^/]+)"
                  r"(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?$")


def rbac_request(method: str, path: str, query: dict[str, str]) -> tuple[str, str, str]:
    """(verb, apiGroup, resource[/subresource]) as the API server's authorizer sees a request."""
    match = PATH.match(path)
    assert match, f"stockscale called an API path outside its namespace: {method} {path}"
    group, resource, name, sub = match["group"] or "", match["resource"], match["name"], match["sub"]
    if sub:
        resource = f"{resource}/{sub}"
    verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method)
    if method == "GET":
        verb = "get" if name else ("watch" if query.get("watch") in ("true", "1", "True") else "list")
    if method == "DELETE":
        verb = "delete" if name else "deletecollection"
    return verb, group, resource


def launcher(k8s: Emulator, kind: str, run_id: str) -> KubernetesRunner:
    api = k8s.api()
    api.client.set_default_header(WHO, "stockscale")
    return KubernetesRunner(ClusterSpec(image="stockscale:test"), api=api, run_id=run_id, kind=kind, poll=0.02,
                              watch_window=0.5)


def job_that_fails_early(cluster: Cluster, job: dict) -> None:
    cluster.set_status("jobs", job["metadata"]["name"], {"conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]})


def experiment_that_fails_early(cluster: Cluster, experiment: dict) -> None:
    cluster.set_status("experiments", experiment["metadata"]["name"], {"conditions": [
        {"type": "Failed", "status": "True", "reason": "ExperimentFailed"}]})


def controller_search(searcher: ControllerSearcher) -> None:
    """The search of the trials below (a 2 x 2 grid) by a cluster's controller."""
    space = parse_space({"lr": [0.1, 0.2], "hidden_size": [8, 16]}, "space")
    template = TrialTemplate(config=TrainConfig(max_steps=2), trials_dir=Path("t"), threads=1, timeout=20)
    searcher.search(space, strategy("grid"), pruner("none"), template, 2, trials=4, on_trial=lambda trial: None)


def everything_stockscale_does(k8s: Emulator, scratch: Path) -> None:
    train = TrainJob(name="train", config={"max_steps": 2}, run_dir=Path("r"), workers=2, timeout=20)
    trials = [TrainJob(name=f"trial-{i}", config={"max_steps": 2, "lr": lr, "hidden_size": h}, run_dir=Path("t"),
                       threads=1, timeout=20) for i, (lr, h) in enumerate(itertools.product((0.1, 0.2), (8, 16)))]
    with Cluster(k8s, on_pytorchjob=succeed, on_job=job_controller(), on_trainjob=trainjob_succeeds,
                 on_optimizationjob=optimization_controller()):
        launcher(k8s, "pytorchjob", "rbac-train-1").run(train)
        launcher(k8s, "trainjob", "rbac-train-2").run(train)
        launcher(k8s, "job", "rbac-search-1").run_many(trials, parallel=2)
    with Cluster(k8s, on_job=job_that_fails_early):  # the launcher reads a Job that ended with trials missing
        launcher(k8s, "job", "rbac-search-4").run_many(trials[:2], parallel=2)
    with Cluster(k8s, on_pytorchjob=succeed, on_trainjob=trainjob_succeeds,
                 on_optimizationjob=optimization_controller()):
        launcher(k8s, "pytorchjob", "rbac-search-2").run_many(trials[:2], parallel=2)
        controller_search(OptimizationJobSearcher(launcher(k8s, "optimizationjob", "rbac-search-3")))
        kept = launcher(k8s, "pytorchjob", "rbac-keep-1")
        kept.keep = True
        kept.run(train)
    with Cluster(k8s, on_job=IndexedJobController(scratch).handle):  # a pruned trial's pod is annotated
        asha_search(launcher(k8s, "job", "rbac-search-7"), [0.001, 3.0], REAL, scratch / "t")
    with Cluster(k8s, on_experiment=katib_controller()):
        controller_search(KatibSearcher(launcher(k8s, "katib", "rbac-search-5")))
    with Cluster(k8s, on_experiment=experiment_that_fails_early):  # the launcher lists what Trials there are
        controller_search(KatibSearcher(launcher(k8s, "katib", "rbac-search-6")))
    kept.session.list_runs()
    kept.session.status("rbac-keep-1")
    kept.logs("rbac-keep-1", lambda pod, line: None)
    kept.delete("rbac-keep-1")


@pytest.mark.slow
def test_the_role_allows_every_request_and_grants_nothing_unused(tmp_path):
    k8s = Emulator()
    try:
        everything_stockscale_does(k8s, tmp_path)
        requests = k8s.do(lambda k: [(str(r.method.value), r.url.path, dict(r.params)) for r in list(k)
                                     if r.headers.get(WHO) == "stockscale"])
    finally:
        k8s.stop()
    used = {rbac_request(*request) for request in requests}
    granted = {(verb, group, resource) for group, resource, verbs in m.RBAC_RULES for verb in verbs}
    assert used - granted == set(), "requests the Role does not allow"
    assert granted - used == set(), "verbs the Role grants that stockscale never uses"
    role = m.rbac_manifests(ClusterSpec())["role.yaml"]
    assert {(verb, rule["apiGroups"][0], rule["resources"][0]) for rule in role["rules"]
            for verb in rule["verbs"]} == granted
