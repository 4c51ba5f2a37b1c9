"""The package's shape: no module imports, directly or through others, a module that imports it back."""

from __future__ import annotations

import ast
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """stockscale modules `path` imports anywhere: at the top, inside functions, for type checking only."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {name for name in found if name in modules}


def test_no_import_circle() -> None:
    files = {_module_name(path): path for path in SRC.rglob("*.py")}
    modules = set(files)
    graph = {name: _imports(path, modules) - {name} for name, path in files.items()}
    # A package's __init__ re-exporting its own modules is not a circle of the code's layers.
    for name in graph:
        graph[name] = {dep for dep in graph[name] if not (files[name].name == "__init__.py"
                                                          and dep.startswith(name + "."))}
    circles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, trail = stack.pop()
            for dep in graph[node]:
                if dep == start:
                    circles.append(" -> ".join([*trail, dep]))
                elif dep not in seen:
                    seen.add(dep)
                    stack.append((dep, [*trail, dep]))
    assert circles == []


def test_training_measures_its_peak_memory_without_the_limit_code() -> None:
    """A worker imports stockscale.memory for its VmHWM; the cgroup and watchdog code stays in the launcher."""
    import subprocess
    import sys

    code = ("import sys, stockscale.train; "
            "print(sorted(m for m in sys.modules if m.startswith('stockscale.limits')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# The data path in the order the data flows; each file may import only the files before it, never one after.
DATA_PIPELINE = ["csv_prices", "sources", "synthetic", "series_cache", "windows", "replicas", "manifest", "shards",
                 "ticker_shards", "loaders", "dataset"]


def test_the_data_path_only_imports_its_earlier_steps() -> None:
    folder = SRC / "stockscale" / "data"
    steps = [f"stockscale.data.{name}" for name in DATA_PIPELINE]
    on_disk = {f"stockscale.data.{path.stem}" for path in folder.glob("*.py") if path.stem != "__init__"}
    assert on_disk == set(steps), "a data module is missing from DATA_PIPELINE: give it its place in the order"
    backwards = []
    for index, step in enumerate(steps):
        later = set(steps[index + 1:])
        path = folder / f"{step.rsplit('.', 1)[1]}.py"
        backwards += [f"{step} imports {dep}" for dep in sorted(_imports(path, later))]
    assert backwards == []


# ------------------------------------------------------------------------------ typed contracts between layers

# The experiments' modules whose functions the CLI calls: every name a cli/ module imports from them is checked.
BOUNDARY_MODULES = ("stockscale.experiments.search", "stockscale.experiments.scale_test",
                    "stockscale.experiments.demo")


def _any_in(hint: object, seen: set[int] | None = None) -> bool:
    """Whether a type hint is Any or holds it anywhere: in its arguments, a Callable's parameters, or the
    fields of a TypedDict it names (a dict's shape is part of the contract)."""
    seen = set() if seen is None else seen
    if hint is typing.Any:
        return True
    if id(hint) in seen:
        return False
    seen.add(id(hint))
    if typing.is_typeddict(hint):
        return any(_any_in(field, seen) for field in typing.get_type_hints(hint).values())
    # A Callable's parameters come as one list argument.
    args = [item for arg in typing.get_args(hint) for item in (arg if isinstance(arg, list) else [arg])]
    return any(_any_in(arg, seen) for arg in args)


def _signature_hints(thing: object) -> dict[str, object]:
    """The annotated parameters and return of a function, or the fields of a class (a dataclass, a Protocol),
    resolved; names the CLI imports only for type checking are looked up in the launch layer."""
    import stockscale.launch.runner
    import stockscale.search.searcher
    import stockscale.space
    import stockscale.worker

    names = {**vars(stockscale.worker), **vars(stockscale.space), **vars(stockscale.launch.runner),
             **vars(stockscale.search.searcher)}
    return typing.get_type_hints(thing, localns=names)


def _cli_imports_from(module: str) -> set[str]:
    names: set[str] = set()
    for path in (SRC / "stockscale" / "cli").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == module:
                names.update(alias.name for alias in node.names)
    return names


def _boundary() -> dict[str, object]:
    """What the CLI, the experiments and the launchers hand each other, by name."""
    import importlib
    import inspect

    from stockscale.cli.launchers import choose_runner
    from stockscale.launch.runner import JobResult, Runner, TrainJob
    from stockscale.search.searcher import Searcher, TrialResult, TrialTemplate

    things: dict[str, object] = {"choose_runner": choose_runner, "TrainJob": TrainJob, "JobResult": JobResult,
                                 "Runner": Runner, "Searcher": Searcher, "TrialTemplate": TrialTemplate,
                                 "TrialResult": TrialResult}
    things.update({f"Runner.{name}": getattr(Runner, name)
                   for name in ("run", "run_many", "render", "dry_run", "logs", "delete", "left_behind")})
    things.update({f"Searcher.{name}": getattr(Searcher, name) for name in ("check", "search", "render")})
    for module_name in BOUNDARY_MODULES:
        module = importlib.import_module(module_name)
        for name in _cli_imports_from(module_name):
            value = getattr(module, name)
            if inspect.isfunction(value) or isinstance(value, type):
                things[f"{module_name}.{name}"] = value
    return things


def test_the_boundary_covers_what_the_cli_calls() -> None:
    names = set(_boundary())
    assert {"stockscale.experiments.search.run_search", "stockscale.experiments.scale_test.run_scale_test",
            "stockscale.experiments.demo.run_demo", "TrainJob", "JobResult", "Runner.run_many",
            "Searcher.search"} <= names


def test_no_any_in_the_signatures_between_the_cli_the_experiments_and_the_launchers() -> None:
    untyped = [f"{name}: {key}" for name, thing in _boundary().items()
               for key, hint in _signature_hints(thing).items() if _any_in(hint)]
    assert untyped == []


class _Shape(TypedDict, total=False):
    inner: list[dict[str, Any]]


def test_the_detector_finds_any_wherever_it_hides() -> None:
    """The check above can fail: Any in a Callable's parameters, a union, or a TypedDict's field is found."""
    assert _any_in(Callable[[dict[str, Any]], None]) and _any_in(int | Any) and _any_in(_Shape)
    assert not _any_in(Callable[[dict[str, int]], None]) and not _any_in(list[int] | None)


def test_a_job_carries_a_validated_config_whose_overrides_round_trip() -> None:
    """TrainJob.config is a TrainConfig (validated once, where the job is made), and its one serialisation,
    overrides(), names each field it was given by its field name: read back, it is the same config. (This
    replaces the check that a TypedDict of overrides kept in step with TrainConfig: there is no second copy of
    the fields left to drift.)"""
    from stockscale.config import TrainConfig, build_train_config
    from stockscale.launch.runner import TrainJob

    assert typing.get_type_hints(TrainJob)["config"] is TrainConfig
    given = {"learning_rate": 0.01, "hidden_size": "32", "start": "2010-01-04", "max_steps": 3, "data": None}
    config = build_train_config(given)
    assert set(config.overrides()) == {"lr", "hidden_size", "start", "max_steps", "data"}
    assert build_train_config(config.overrides()) == config
    assert config.updated({"lr": 0.5}).lr == 0.5 and config.updated({"learning_rate": 0.5}).lr == 0.5


# ------------------------------------------------------------------------- the Runner and Searcher interfaces

_LAYERS = ("launch", "search", "experiments", "cli")


def _layer_files() -> list[Path]:
    return [path for layer in _LAYERS for path in (SRC / "stockscale" / layer).rglob("*.py")]


def _interface_names() -> set[str]:
    from stockscale.launch.runner import Runner
    from stockscale.search.searcher import Searcher

    return {name for cls in (Runner, Searcher) for name in dir(cls) if not name.startswith("__")} | {
        # abilities callers once discovered by getattr; none may come back that way
        "searches_itself", "streams_jobs", "left_on_cluster", "delete_run", "run_id", "write_run_manifests",
        "write_search_manifests"}


def test_no_caller_discovers_a_runners_ability_by_getattr() -> None:
    """Every ability a caller uses is declared on Runner or Searcher, so nothing asks `getattr(runner, ...)`
    or `hasattr(...)` for one: neither by an interface member's name nor on a value named like a runner."""
    interface = _interface_names()
    found = []
    for path in _layer_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2):
                continue
            target, name = node.args[0], node.args[1]
            named = isinstance(name, ast.Constant) and name.value in interface
            subject = ast.unparse(target).lower()
            if named or any(word in subject for word in ("runner", "launcher", "searcher", "backend")):
                found.append(f"{path.relative_to(SRC)}:{node.lineno}: {ast.unparse(node)}")
    assert found == []


def test_the_detector_finds_getattr_discovery(tmp_path: Path) -> None:
    """The check above can fail: the call it was written against is found."""
    tree = ast.parse('getattr(launcher, "searches_itself", False)')
    call = tree.body[0].value  # type: ignore[attr-defined]
    assert call.func.id == "getattr" and call.args[1].value in _interface_names()


def test_every_backend_is_a_runner_from_the_registry() -> None:
    from stockscale.launch.registry import BACKENDS
    from stockscale.launch.runner import Runner

    assert {"local", "docker", "kubernetes"} <= set(BACKENDS)
    runners = [cls for path in (SRC / "stockscale" / "launch").rglob("*.py")
               for cls in _classes_deriving(path, "Runner")]
    assert runners, "no Runner subclass found"
    assert issubclass(Runner, __import__("abc").ABC)


def _classes_deriving(path: Path, base: str) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
            and any(ast.unparse(parent).split(".")[-1] == base for parent in node.bases)]


def _names_in(node: ast.AST) -> set[str]:
    return {item.value for item in ast.walk(node) if isinstance(item, ast.Constant) and isinstance(item.value, str)}


def test_the_registry_is_the_one_source_of_strategy_and_pruner_names() -> None:
    """No list, tuple, set or Literal outside search/registry.py spells two or more strategy (or pruner)
    names: the CLI's choices, Katib's algorithm names and the results reader derive from the registry."""
    from stockscale.search.registry import PRUNERS, STRATEGIES

    found = []
    for path in SRC.rglob("*.py"):
        if path.name == "registry.py" and path.parent.name == "search":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            literal = isinstance(node, ast.Tuple | ast.List | ast.Set) or (
                isinstance(node, ast.Subscript) and ast.unparse(node.value).endswith("Literal"))
            if not literal:
                continue
            names = _names_in(node)
            for table in (STRATEGIES, PRUNERS):
                if len(names & set(table)) >= 2:
                    found.append(f"{path.relative_to(SRC)}:{node.lineno}: {ast.unparse(node)[:80]}")
    assert found == []


def test_the_cli_offers_the_registered_strategies_and_pruners() -> None:
    from stockscale.cli.main import build_parser
    from stockscale.search.registry import PRUNERS, STRATEGIES

    search = build_parser()._subparsers._group_actions[0].choices["search"]  # type: ignore[union-attr]
    choices = {action.dest: action.choices for action in search._actions if action.choices}
    assert list(choices["strategy"]) == list(STRATEGIES)
    assert list(choices["pruner"]) == list(PRUNERS)


def test_lrs_alias_is_read_in_one_place() -> None:
    """`learning_rate`, lr's spelling in a config file, is mapped to lr by config._canonical alone."""
    found = [f"{path.relative_to(SRC)}" for path in SRC.rglob("*.py")
             if "learning_rate" in path.read_text(encoding="utf-8") and path.name != "config.py"]
    assert found == []


def test_docker_does_not_import_the_kubernetes_backend() -> None:
    """The pod template both render lives in launch/pods.py and the cluster's settings in
    launch/cluster_spec.py. The container backend renders the same objects a cluster would get (the
    manifests, pure functions, no client) and translates their pods; nothing else of launch/kubernetes/ (its
    runner, kinds, API, session) is the container backend's."""
    modules = {_module_name(path) for path in SRC.rglob("*.py")}
    for name in ("docker", "containers", "docker_replica", "docker_engine"):
        path = SRC / "stockscale" / "launch" / f"{name}.py"
        cluster = {dep for dep in _imports(path, modules) if dep.startswith("stockscale.launch.kubernetes")
                   and not dep.startswith("stockscale.launch.kubernetes.manifests")}
        assert not cluster, (name, cluster)
