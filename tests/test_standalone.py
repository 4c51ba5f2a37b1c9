"""The repository stands alone: nothing in it reads the `shared/` folder that sits beside our own checkout."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# A path that climbs out of the repository into a sibling `shared` folder, in any spelling we would write.
OUTSIDE = re.compile(r"""\.\./shared|parent\s*/\s*["']shared["']|parents\[\d\]\s*/\s*["']shared["']""")


def test_no_file_reads_the_shared_folder_beside_the_repository():
    offenders = []
    for folder in ("src", "tests", "deploy", "benchmarks", ".ci", "docs"):
        for path in (REPO / folder).rglob("*"):
            if path.is_file() and path.suffix in {".py", ".sh", ".md", ".toml", ".yaml", ".yml", ""} \
                    and path.resolve() != Path(__file__).resolve():
                text = path.read_text(encoding="utf-8", errors="replace")
                offenders += [f"{path.relative_to(REPO)}" for _ in OUTSIDE.finditer(text)]
    assert offenders == []


def test_every_vendored_schema_names_its_source():
    readme = (REPO / "tests" / "crds" / "README.md").read_text()
    for crd in (REPO / "tests" / "crds").glob("*.yaml"):
        assert f"`{crd.name}`" in readme
    assert "Apache License 2.0" in readme
