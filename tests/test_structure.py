"""The package's shape: no module imports, directly or through others, a module that imports it back."""

from __future__ import annotations

import ast
import types
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
    import stockscale.launch.base
    import stockscale.space

    return typing.get_type_hints(thing, localns={**vars(stockscale.space), **vars(stockscale.launch.base)})


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

    from stockscale.cli.launchers import choose_launcher
    from stockscale.launch.base import JobResult, Launcher, TrainJob

    things: dict[str, object] = {"choose_launcher": choose_launcher, "TrainJob": TrainJob, "JobResult": JobResult,
                                 "Launcher": Launcher}
    things.update({f"Launcher.{name}": getattr(Launcher, name) for name in ("run", "run_many", "logs", "delete")})
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
            "stockscale.experiments.demo.run_demo", "TrainJob", "JobResult", "Launcher.run_many"} <= names


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


def test_train_overrides_name_every_trainconfig_field_with_its_type() -> None:
    """TrainJob.config's type (TrainOverrides) cannot drift from TrainConfig: the same keys (and aliases), and
    each field's type among the values it allows."""
    from stockscale.config import TrainConfig, TrainOverrides

    def members(hint: object) -> set[object]:
        return set(typing.get_args(hint)) if typing.get_origin(hint) in (typing.Union, types.UnionType) else {hint}

    hints = typing.get_type_hints(TrainOverrides)
    aliases = {info.alias for info in TrainConfig.model_fields.values() if info.alias}
    assert set(hints) == set(TrainConfig.model_fields) | aliases
    for name, info in TrainConfig.model_fields.items():
        assert members(info.annotation) <= members(hints[name]), f"{name}: {info.annotation} not allowed"
        if info.alias:
            assert hints[info.alias] == hints[name]
