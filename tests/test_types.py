"""The type check's configuration: what CI runs (mypy, before pytest) and what it holds strict.

mypy itself runs in the test command, not here (it takes a minute on two cores); these tests keep its
settings from drifting: a boundary module renamed or deleted would otherwise stop being checked strictly
without a word (mypy warns only when a whole override section matches nothing), and `strict = true` in an
override would quietly make every module strict (python/mypy#11401).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The interfaces other modules are written against (issue 21): strict, every signature typed.
BOUNDARY = {
    "stockscale.launch.runner",
    "stockscale.search.searcher",
    "stockscale.search.registry",
    "stockscale.config",
    "stockscale.experiments.results",
    "stockscale.worker",
}
# --strict's per-module flags (mypy --help); its global ones are checked on [tool.mypy] below.
STRICT_FLAGS = {
    "disallow_any_generics", "disallow_subclassing_any", "disallow_untyped_calls", "disallow_untyped_defs",
    "disallow_incomplete_defs", "disallow_untyped_decorators", "warn_return_any", "no_implicit_reexport",
    "strict_equality", "extra_checks",
}


def _mypy() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mypy"]


def _module_file(module: str) -> Path:
    parts = module.split(".")
    path = REPO / "src" / Path(*parts)
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"


def test_the_whole_package_and_the_benchmarks_are_checked_with_pydantics_plugin():
    mypy = _mypy()
    assert mypy["files"] == ["src/stockscale", "benchmarks"]  # no test runs the benchmarks: mypy reads them
    assert "pydantic.mypy" in mypy["plugins"]
    assert "strict" not in mypy, "strict is set per module (BOUNDARY), not for the whole package"
    assert mypy["warn_unused_ignores"] is True and mypy["warn_redundant_casts"] is True


def test_the_boundary_modules_exist_and_are_strict():
    overrides = _mypy()["overrides"]
    strict = [entry for entry in overrides if set(entry["module"]) & BOUNDARY]
    assert len(strict) == 1 and set(strict[0]["module"]) == BOUNDARY
    for module in BOUNDARY:
        assert _module_file(module).is_file(), f"{module} is listed as strict but has no file"
    assert {flag for flag, value in strict[0].items() if value is True} == STRICT_FLAGS
    for entry in overrides:
        assert "strict" not in entry, "strict = true in an override turns strict on for every module (mypy#11401)"


def test_only_untyped_libraries_have_their_imports_ignored():
    ignored = [entry for entry in _mypy()["overrides"] if entry.get("ignore_missing_imports")]
    assert ignored, "the untyped libraries' override is missing"
    for entry in ignored:
        assert set(entry) == {"module", "ignore_missing_imports"}
        for module in entry["module"]:
            assert not module.startswith("stockscale"), f"{module}: our own modules are always type-checked"


def test_ci_runs_the_readmes_test_command_with_mypy_before_pytest():
    readme = (REPO / "README.md").read_text()
    assert "-e '.[test]' && mypy && python -m pytest\n" in readme
    assert "\nmypy && python -m pytest -m \"not slow\"\n" in readme
    ci = (REPO / ".ci" / "run").read_text()
    assert "\nmypy && python -m pytest\n" in ci
    test_extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    assert any(requirement.startswith("mypy") for requirement in test_extra)
