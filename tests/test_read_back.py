"""What a run reads back is validated and damage is one line (issue 27): a study journal cut mid-line is
recovered as Optuna reads it, a garbage line is refused naming the file, summaries with wrong types or nested
configs never crash `--resume` or `compare`; and a resumed random or TPE search never repeats its trials."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TINY, assert_clean_error


def _space(tmp_path: Path, text: str = "lr: {type: double, min: 0.0001, max: 0.01, log: true}\n") -> Path:
    space = tmp_path / "space.yaml"
    space.write_text(text)
    return space


def _search(tmp_path: Path, *extra: object) -> list[object]:
    return ["search", "--space", _space(tmp_path), "--strategy", "random", *TINY, "--out", tmp_path / "s", *extra]


def test_a_journal_cut_mid_line_is_recovered_on_every_resume(cli, tmp_path):
    assert cli(*_search(tmp_path, "--trials", "1")).code == 0
    journal = tmp_path / "s" / "study.journal"
    data = journal.read_bytes()
    journal.write_bytes(data + data.splitlines(keepends=True)[-1][:25])  # a crash while appending
    assert cli(*_search(tmp_path, "--trials", "2", "--resume")).code == 0
    assert cli(*_search(tmp_path, "--trials", "3", "--resume")).code == 0  # this one used to crash
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert [entry["status"] for entry in summary["results"]] == ["success"] * 3
    assert journal.read_bytes().endswith(b"\n")


def test_a_journal_with_a_garbage_line_is_one_line_naming_it(cli, tmp_path):
    assert cli(*_search(tmp_path, "--trials", "1")).code == 0
    journal = tmp_path / "s" / "study.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join([lines[0], b"this is not json\n", *lines[1:]]))
    assert_clean_error(cli(*_search(tmp_path, "--trials", "2", "--resume")), str(journal), "line 2")


def test_a_journal_operation_optuna_cannot_replay_is_one_line(cli, tmp_path):
    assert cli(*_search(tmp_path, "--trials", "1")).code == 0
    journal = tmp_path / "s" / "study.journal"
    with journal.open("ab") as handle:
        handle.write(b'{"op_code": 1, "worker_id": "x"}\n')  # a delete-study operation without its study
    assert_clean_error(cli(*_search(tmp_path, "--trials", "2", "--resume")), str(journal), "damaged")


def _damage_summary(tmp_path: Path, change) -> Path:
    path = tmp_path / "s" / "summary.json"
    summary = json.loads(path.read_text())
    change(summary)
    path.write_text(json.dumps(summary))
    return path


def test_resume_refuses_a_summary_with_wrong_types_in_one_line(cli, tmp_path):
    assert cli(*_search(tmp_path, "--trials", "1")).code == 0
    path = _damage_summary(tmp_path, lambda summary: summary["results"][0].update(trial="zero"))
    assert_clean_error(cli(*_search(tmp_path, "--trials", "2", "--resume")), str(path), "results.0.trial")


def test_a_nested_config_is_refused_on_read_and_compare_still_reports(cli, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("hidden_size: [4]\n")
    results = tmp_path / "results"
    out = results / "hp_search_local"
    assert cli("search", "--space", grid, *TINY, "--out", out).code == 0
    path = out / "summary.json"
    summary = json.loads(path.read_text())
    summary["results"][0]["config"] = {"hidden_size": {"nested": [1, 2]}}
    summary["best"]["config"] = {"hidden_size": {"nested": [1, 2]}}
    path.write_text(json.dumps(summary))
    ran = cli("compare", "--results", results)
    assert ran.code == 0, ran.err
    assert "Traceback" not in ran.err
    assert str(path) in ran.out + ran.err and "config" in ran.out + ran.err
    assert_clean_error(cli("search", "--space", grid, *TINY, "--out", out, "--resume"), str(path), "config")


# ------------------------------------------------------------------------------ resumed samplers


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["random", "tpe"])
def test_a_resumed_sampled_search_never_repeats_a_completed_config(cli, tmp_path, strategy):
    space = _space(tmp_path, "hidden_size: [4]\nlr: [0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.007, 0.008]\n")
    args = ["search", "--space", space, "--strategy", strategy, *TINY, "--out", tmp_path / "s"]
    assert cli(*args, "--trials", "3").code == 0
    assert cli(*args, "--trials", "6", "--resume").code == 0
    results = json.loads((tmp_path / "s" / "summary.json").read_text())["results"]
    assert [entry["status"] for entry in results] == ["success"] * 6
    first, resumed = [entry["config"]["lr"] for entry in results[:3]], [entry["config"]["lr"] for entry in results[3:]]
    assert not set(first) & set(resumed), (first, resumed)
    assert len(set(first + resumed)) == 6


@pytest.mark.parametrize(("field", "value"), [("steps", "three"), ("loader", {"next_epoch": [1]}),
                                              ("history", [{"epoch": {"nested": 1}}])])
def test_a_checkpoint_with_a_mistyped_field_is_one_line(cli, tmp_path, field, value):
    import torch

    args = ["train", *TINY, "--checkpoint-dir", tmp_path / "ck"]
    assert cli(*args, "--out", tmp_path / "r1").code == 0
    path = tmp_path / "ck" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    state[field] = value
    torch.save(state, path)
    assert_clean_error(cli(*args, "--out", tmp_path / "r2"), str(path), field)
    assert not (tmp_path / "r2").exists()


# ------------------------------------------------------------------------------ one schema, old files


BEFORE = Path(__file__).parent / "data" / "results_before_issue21"  # written by the writers of 6e00eeb


def test_results_written_before_the_one_schema_still_load_and_read_back_unchanged():
    from stockscale.experiments.results import ScaleTest, SearchSummary, load_results, read_search_summary

    loaded = load_results(BEFORE)
    assert loaded.warnings == []
    assert sorted(run.role for run in loaded.searches) == ["hp_search_tpe_asha", "sequential"]
    tpe = loaded.search("hp_search_tpe_asha").data
    assert (tpe.settings.strategy, tpe.settings.pruner, tpe.pruned) == ("tpe", "asha", 1)
    assert [trial.study_trial for trial in tpe.results] == [0, 1, 2]
    (scale,) = loaded.scale_tests
    assert [row.status for row in scale.data.results] == ["success", "oom"]
    assert scale.data.boundary.largest_success == 1 and scale.data.boundary.smallest_failure == 2
    # The model the writers build holds every key of the old files: read and written back, nothing changes.
    for path, model in ((BEFORE / "hp_search_local" / "summary.json", SearchSummary),
                        (BEFORE / "hp_search_tpe_asha" / "summary.json", SearchSummary),
                        (BEFORE / "scale_test_local" / "results.json", ScaleTest)):
        old = json.loads(path.read_text())
        assert model.model_validate(old).document() == old, path
    assert read_search_summary(BEFORE / "hp_search_local" / "summary.json").results[0].settings_hash


def test_a_summary_naming_an_unregistered_strategy_is_refused_naming_it(tmp_path):
    from stockscale.experiments.results import load_results

    folder = tmp_path / "hp_search_local"
    folder.mkdir()
    summary = json.loads((BEFORE / "hp_search_local" / "summary.json").read_text())
    summary["settings"]["strategy"] = "annealing"
    (folder / "summary.json").write_text(json.dumps(summary))
    (warning,) = load_results(tmp_path).warnings
    assert "settings.strategy" in warning and "annealing" in warning
