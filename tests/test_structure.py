"""The package's shape: no module imports, directly or through others, a module that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

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
DATA_PIPELINE = ["sources", "series_cache", "windows", "replicas", "shards", "loaders", "dataset"]


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
