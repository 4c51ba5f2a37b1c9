"""A dry run is a result too: `search --backend kubernetes --dry-run` leaves a marker that `compare` reports
as "dry run: manifests in DIR, nothing ran", not as an interrupted run."""

import json

from tests.conftest import assert_clean_error


def flat(text: str) -> str:
    return " ".join(text.split())


def test_compare_reports_a_search_dry_run_as_a_dry_run(cli, tmp_path):
    cloud = tmp_path / "results" / "hp_search_cloud"
    ran = cli("search", "--backend", "kubernetes", "--max-steps", "3", "--dry-run", "--out", cloud)
    assert ran.code == 0, ran.err

    marker = json.loads((cloud / "dry_run.json").read_text())
    assert marker["kind"] == "dry_run" and marker["format_version"] == 1 and marker["command"] == "search"
    assert marker["backend"] == "kubernetes" and marker["manifest_dir"] == str(cloud)
    assert "kustomization.yaml" in marker["files"] and all((cloud / name).is_file() for name in marker["files"])

    report = cli("compare", "--results", tmp_path / "results", "--out", tmp_path / "report")
    assert report.code == 0, report.err
    text = flat(report.out)
    assert f"cloud: dry run: manifests in {cloud}, nothing ran" in text
    assert "interrupted" not in text and "WARNINGS" not in text
    assert "cloud: not run" not in text


def test_a_corrupt_marker_is_a_warning_naming_it(cli, tmp_path):
    cloud = tmp_path / "results" / "hp_search_cloud"
    cloud.mkdir(parents=True)
    (cloud / "dry_run.json").write_text('{"kind": "dry_run", "format_version": 1}')
    report = cli("compare", "--results", tmp_path / "results", "--out", tmp_path / "report")
    assert report.code == 0, report.err
    text = flat(report.out)
    assert f"skipped {cloud / 'dry_run.json'}" in text and "cloud: not run" in text


def test_a_marker_is_not_written_over_a_file(cli, tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    ran = cli("search", "--backend", "kubernetes", "--max-steps", "3", "--dry-run", "--out", tmp_path / "taken")
    assert_clean_error(ran, "taken")
