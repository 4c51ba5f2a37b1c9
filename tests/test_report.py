"""`stockscale compare` as a library: loading results files, the printed comparison, report.md with plots.

The results directories here are written by hand in the formats of docs/results.md, with realistic values,
so each test states exactly which measurements exist and checks what the report says about them.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from stockscale.errors import InputError
from stockscale.experiments.projection import ProjectionSettings, build_projection, format_projection
from stockscale.experiments.report import format_comparison, write_report
from stockscale.experiments.results import load_results

MIB = 1024**2
GIB = 1024**3
MACHINE = {"cpus": 2, "memory_bytes": 24 * GIB, "platform": "Linux-6.1-x86_64", "python": "3.11.7",
           "torch": "2.13.0+cpu"}


def scale_row(multiplier: int, status: str, peaks: list[int], wall: float = 5.0, detail: str = "") -> dict:
    ok = status == "success"
    return {"multiplier": multiplier, "status": status, "detail": detail,
            "train_windows": 821 * multiplier, "dataset_bytes": 985200 * multiplier,
            "wall_seconds": wall, "peak_rss_bytes": peaks,
            "samples_per_second": 1800.0 if ok else None, "steps": 50 if ok else None,
            "run_dir": f"results/x/runs/m{multiplier}" if ok else None}


def write_scale(results: Path, folder: str, mode: str, rows: list[dict], workers: int = 1,
                loader: str = "memory", emulated: bool | None = None) -> Path:
    data = {
        "kind": "scale_test", "format_version": 1,
        "started_at": "2026-11-28T17:45:00Z", "finished_at": "2026-11-28T17:49:00Z",
        "settings": {"mode": mode, "backend": "local", "emulated": mode == "cluster" if emulated is None else emulated,
                     "workers": workers, "memory_limit_bytes": 1 * GIB, "limit_mechanism": "cgroup-v1",
                     "timeout_seconds": 300, "loader": loader, "max_steps": 50, "epochs": 1,
                     "threads_per_worker": 1, "machine": MACHINE},
        "results": rows,
    }
    path = results / folder / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path


SPACE = {"lr": [0.0001, 0.0005, 0.001], "hidden_size": [64, 128, 256], "num_layers": [2, 3]}


def write_search(results: Path, folder: str, backend: str, workers: int, trial_seconds: dict[int, float],
                 drop: tuple[int, ...] = (), failed: tuple[int, ...] = ()) -> Path:
    """A search over SPACE; trial i takes trial_seconds[i], placed on `workers` lanes longest first."""
    configs = [dict(zip(SPACE, values, strict=True)) for values in itertools.product(*SPACE.values())]
    lanes = [1_795_000_000.0] * workers
    rows = []
    for i in sorted(range(len(configs)), key=lambda i: -trial_seconds[i]):
        if i in drop:
            continue
        lane = lanes.index(min(lanes))
        start, end = lanes[lane], lanes[lane] + trial_seconds[i]
        lanes[lane] = end
        ok = i not in failed
        c = configs[i]
        val = round(0.5 + abs(c["lr"] - 0.0005) * 300 + c["hidden_size"] / 1000 + c["num_layers"] / 100, 4)
        rows.append({
            "trial": i, "name": f"trial-{i:02d}", "config": c, "status": "success" if ok else "timeout",
            "detail": "" if ok else "trial timeout after 60 s", "start_time": start, "end_time": end,
            "wall_seconds": trial_seconds[i], "val_loss": val if ok else None, "test_rmse": 1.31 if ok else None,
            "test": {"rmse": 1.31, "mae": 0.95, "mape": 1.9, "directional_accuracy": 0.5, "windows": 189},
            "baseline_test": {"rmse": 1.29, "mae": 0.93, "mape": 1.9, "directional_accuracy": None,
                              "windows": 189},
            "peak_rss_bytes": 400 * MIB, "run_dir": f"results/{folder}/trials/trial-{i:02d}"})
    rows.sort(key=lambda r: r["trial"])
    ok_rows = [r for r in rows if r["status"] == "success"]
    best = min(ok_rows, key=lambda r: r["val_loss"])
    data = {
        "kind": "hp_search", "format_version": 1, "started_at": "2026-11-28T18:00:00Z",
        "finished_at": "2026-11-28T18:02:00Z", "complete": True,
        "settings": {"backend": backend, "workers": workers, "threads_per_trial": 2 // workers or 1,
                     "space": SPACE, "train": {"max_steps": 30, "epochs": 1}, "trial_timeout_seconds": None,
                     "emulated": False, "machine": MACHINE},
        "total_wall_seconds": max(lanes) - 1_795_000_000.0,
        "sum_trial_seconds": sum(r["wall_seconds"] for r in rows),
        "successes": len(ok_rows), "failures": len(rows) - len(ok_rows),
        "results": rows,
        "best": {k: best[k] for k in ("trial", "name", "config", "val_loss", "test", "baseline_test", "run_dir")},
    }
    path = results / folder / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path


def write_predictions(results: Path, folder: str) -> Path:
    """predictions.json in the best trial's run directory, where the search would have left it."""
    best = json.loads((results / folder / "summary.json").read_text())["best"]
    run_dir = results.parent / best["run_dir"]
    run_dir.mkdir(parents=True, exist_ok=True)
    actual = [420.0 + i * 0.5 for i in range(30)]
    data = {"split": "test", "dates": [f"2012-{1 + i // 28:02d}-{1 + i % 28:02d}" for i in range(30)],
            "actual": actual, "predicted": [a + 1.0 for a in actual], "baseline": [actual[0]] + actual[:-1]}
    (run_dir / "predictions.json").write_text(json.dumps(data))
    return run_dir


def trial_times() -> dict[int, float]:
    """Hidden 256 x 3 layers costs about ten times hidden 64 x 2 layers, as in the real grid."""
    configs = list(itertools.product(*SPACE.values()))
    return {i: round(2.0 * (h / 64) * (n / 2) ** 1.5, 2) for i, (_, h, n) in enumerate(configs)}


@pytest.fixture
def full_results(tmp_path: Path) -> Path:
    """Local fails at 200x, the emulated 4-worker cluster at 800x; sequential and parallel searches."""
    results = tmp_path / "results"
    write_scale(results, "scale_test_local", "local", [
        scale_row(1, "success", [420 * MIB], 6.2), scale_row(50, "success", [560 * MIB], 40.1),
        scale_row(100, "success", [700 * MIB], 80.3),
        scale_row(200, "oom", [GIB], 3.1, "cgroup OOM kill (worker 0)")])
    write_scale(results, "scale_test_cluster", "cluster", [
        scale_row(1, "success", [400 * MIB] * 4, 7.0), scale_row(100, "success", [470 * MIB] * 4, 30.0),
        scale_row(200, "success", [540 * MIB] * 4, 55.0), scale_row(400, "success", [680 * MIB] * 4, 110.0),
        scale_row(800, "oom", [GIB, 990 * MIB, 980 * MIB, 985 * MIB], 12.0, "cgroup OOM kill (worker 2)")],
        workers=4)
    times = trial_times()
    write_search(results, "hp_search_local", "sequential", 1, times)
    write_search(results, "hp_search_parallel", "parallel", 2, times)
    return results


def test_comparison_names_statuses_ratio_and_missing_cloud(full_results: Path) -> None:
    text = flat(format_comparison(load_results(full_results)))

    assert "COMPARISON 1: Dataset Scale" in text and "COMPARISON 2: Hyperparameter Search" in text
    assert "OOM" in text and "success" in text
    assert "cgroup OOM kill (worker 2)" in text
    assert "local reached 100x, failed at 200x" in text and "cluster reached 400x, failed at 800x" in text
    assert "the cluster handled 4.0x larger datasets (both boundaries measured)" in text
    assert "EMULATED cluster: 4 worker processes sharing this machine's 2 cores" in text
    assert "limit 1.0 GiB per worker (cgroup-v1)" in text and "max steps 50" in text
    assert "cloud: not run — run `stockscale search --backend kubernetes`" in text
    assert "local: not run" not in text and "cluster: not run" not in text


def test_search_table_speedup_and_best_config_come_from_the_files(full_results: Path) -> None:
    results = load_results(full_results)
    seq, par = results.search("sequential").data, results.search("parallel").data
    text = format_comparison(results)

    speedup = seq.total_wall_seconds / par.total_wall_seconds
    assert f"{speedup:.2f}x" in text
    row = next(line.split() for line in text.splitlines() if line.startswith("  parallel  "))
    assert row[:3] == ["parallel", "18", "18/0"]
    assert row[3:5] == [f"{par.total_wall_seconds:.1f}", "s"] and f"{speedup:.2f}x" in row
    assert "trial-06: lr=0.0005, hidden_size=64, num_layers=2" in text
    assert "test RMSE $1.31 vs persistence $1.29: the LSTM is worse than persistence by $0.02" in flat(text)


def test_missing_sides_are_named_never_invented(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_scale(results, "scale_test_local", "local", [scale_row(1, "success", [420 * MIB])])
    text = flat(format_comparison(load_results(results)))

    assert "cluster: not run — run `stockscale scale-test --mode cluster --workers 2`" in text
    assert "Largest multiplier" not in text  # no ratio without the other side
    assert "sequential: not run — run `stockscale search --backend sequential`" in text
    assert "parallel: not run — run `stockscale search --backend parallel --workers 2`" in text


def test_no_failure_means_the_boundary_was_not_reached(tmp_path: Path) -> None:
    results = tmp_path / "results"
    rows = [scale_row(m, "success", [(400 + m) * MIB]) for m in (1, 10, 50)]
    write_scale(results, "scale_test_local", "local", rows)
    write_scale(results, "scale_test_cluster", "cluster", rows, workers=2)
    text = flat(format_comparison(load_results(results)))

    assert "ratio unknown: neither side failed, the boundary was not reached" in text
    assert "larger datasets" not in text


def test_only_local_failing_gives_a_lower_bound(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_scale(results, "scale_test_local", "local",
                [scale_row(1, "success", [420 * MIB]), scale_row(10, "oom", [GIB], detail="watchdog")])
    write_scale(results, "scale_test_cluster", "cluster",
                [scale_row(1, "success", [400 * MIB]), scale_row(10, "success", [700 * MIB])], workers=2)
    text = flat(format_comparison(load_results(results)))

    assert "the cluster handled >= 10.0x larger datasets: a lower bound" in text


def test_lazy_loader_runs_get_their_own_table_labelled_by_settings(full_results: Path) -> None:
    write_scale(full_results, "scale_test_local_lazy", "local", [scale_row(200, "success", [300 * MIB])],
                loader="lazy")
    text = flat(format_comparison(load_results(full_results)))

    assert "[memory loader]" in text and "[lazy loader]" in text
    lazy = text.split("[lazy loader]")[1].split("COMPARISON 2")[0]
    assert "lazy loader" in lazy and "200x" in lazy
    assert "cluster: not run — run `stockscale scale-test --mode cluster --workers 2 --loader lazy" in lazy


@pytest.mark.parametrize("content, reason", [
    ("{not json", "is not valid JSON"),
    ('{"kind": "hp_search", "format_version": 1}', "has kind 'hp_search', expected 'scale_test'"),
    ("[1, 2]", "holds a JSON list"),
    ('{"kind": "scale_test", "format_version": 1, "settings": {}}', "settings.mode: Field required"),
])
def test_a_corrupt_file_is_a_warning_naming_it_and_the_rest_still_reports(
        full_results: Path, content: str, reason: str) -> None:
    corrupt = full_results / "scale_test_cluster" / "results.json"
    corrupt.write_text(content)
    results = load_results(full_results)
    text = flat(format_comparison(results))

    assert len(results.warnings) == 1
    assert str(corrupt) in results.warnings[0] and reason in results.warnings[0]
    assert "WARNINGS" in text and str(corrupt) in text
    assert "cluster: not run" in text              # the corrupt side is missing, not invented
    assert "100x" in text and "COMPARISON 2" in text  # local and the searches still report
    assert "parallel" in text.split("COMPARISON 2")[1]


def test_wrong_types_are_refused_not_coerced(full_results: Path) -> None:
    path = full_results / "hp_search_parallel" / "summary.json"
    data = json.loads(path.read_text())
    data["total_wall_seconds"] = "61.0"
    path.write_text(json.dumps(data))
    results = load_results(full_results)

    assert results.search("parallel") is None
    assert "total_wall_seconds" in results.warnings[0] and str(path) in results.warnings[0]


def test_extra_keys_are_allowed(full_results: Path) -> None:
    path = full_results / "scale_test_local" / "results.json"
    data = json.loads(path.read_text())
    data["settings"]["gpu"] = None
    data["results"][0]["note"] = "from a newer writer"
    path.write_text(json.dumps(data))

    assert load_results(full_results).warnings == []


def test_missing_results_dir_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="results directory .*nope does not exist"):
        load_results(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is not a directory"):
        load_results(tmp_path / "file")


def flat(text: str) -> str:
    """The report with its line wrapping undone, so a phrase can be looked up whole."""
    return " ".join(text.split())


def _is_png(path: Path) -> bool:
    import matplotlib.image

    header_ok = path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    return header_ok and image.shape[0] > 100 and image.shape[1] > 100


def test_report_md_with_all_four_plots(full_results: Path, tmp_path: Path) -> None:
    write_predictions(full_results, "hp_search_local")
    report = write_report(load_results(full_results), tmp_path / "report")

    text = report.read_text()
    for name in ("memory.png", "timeline.png", "grid.png", "predictions.png"):
        assert f"]({name})" in text
        assert _is_png(report.parent / name), name
    assert "COMPARISON 1: Dataset Scale" in text and "```text" in text
    assert "projection, not a measurement" in text
    assert "Plot skipped" not in text
    assert not [p for p in report.parent.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_plots_without_data_are_skipped_with_a_note(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_scale(results, "scale_test_local", "local", [scale_row(1, "success", [420 * MIB])])
    out = tmp_path / "report"
    out.mkdir()
    (out / "stockscale-report.json").write_text('{"kind": "report"}')  # an earlier report's folder (issue 27)
    (out / "timeline.png").write_bytes(b"stale")
    report = write_report(load_results(results), out)

    text = report.read_text()
    assert _is_png(out / "memory.png")
    assert "_Plot skipped: no search with trial start and end times" in text
    assert "_Plot skipped: no successful search trial to take predictions from" in text
    assert not (out / "timeline.png").exists() and not (out / "grid.png").exists()


def test_predictions_missing_from_the_best_run_dir_is_a_note(full_results: Path, tmp_path: Path) -> None:
    report = write_report(load_results(full_results), tmp_path / "report")
    text = report.read_text()

    assert "_Plot skipped: predictions.json not found in the best trial's run directory" in text
    assert _is_png(tmp_path / "report" / "grid.png")


def test_grid_handles_missing_cells(tmp_path: Path) -> None:
    results = tmp_path / "results"
    write_search(results, "hp_search_parallel", "parallel", 2, trial_times(), drop=(17,), failed=(3,))
    report = write_report(load_results(results), tmp_path / "report")

    assert _is_png(tmp_path / "report" / "grid.png")
    assert "from the parallel search" in report.read_text()
    text = flat(format_comparison(load_results(results)))
    assert "failed: parallel trial-03 timeout: trial timeout after 60 s" in text


def test_projection_rests_on_the_measured_trials_and_peaks(full_results: Path) -> None:
    results = load_results(full_results)
    settings = ProjectionSettings(nodes=[1, 18], pod_startup_seconds=20)
    projection = build_projection(results, settings)

    times = trial_times()
    search = projection.search
    assert search.trials == 18 and "sequential" in search.source
    assert search.rows[0].makespan_seconds == pytest.approx(sum(times.values()) + 18 * 20)
    assert search.rows[1].makespan_seconds == pytest.approx(max(times.values()) + 20)
    assert search.measured_sequential_seconds == results.search("sequential").data.total_wall_seconds
    memory = projection.scale[0]
    assert memory.loader == "memory" and memory.fit.points == 7  # 3 local + 4 cluster successes, no OOM runs
    assert memory.fit.x_min == pytest.approx(0.25) and memory.fit.x_max == pytest.approx(100)


def test_a_kubernetes_cluster_is_not_called_emulated(tmp_path: Path) -> None:
    results = tmp_path / "results"
    path = write_scale(results, "scale_test_cluster", "cluster", [scale_row(1, "success", [400 * MIB] * 4)],
                       workers=4, emulated=False)
    data = json.loads(path.read_text())
    data["settings"].update(backend="kubernetes", limit_mechanism="kubernetes")
    path.write_text(json.dumps(data))
    text = flat(format_comparison(load_results(results)))

    assert "kubernetes cluster: 4 workers" in text and "EMULATED" not in text


def test_speedup_against_a_different_grid_is_flagged(full_results: Path) -> None:
    write_search(full_results, "hp_search_parallel", "parallel", 2, trial_times(), drop=(0, 1))
    text = flat(format_comparison(load_results(full_results)))

    assert "16/18" in text
    assert "parallel did not run the same complete work as sequential" in text


def test_an_empty_results_dir_reports_every_side_as_not_run(tmp_path: Path) -> None:
    (tmp_path / "results" / "hp_search_local").mkdir(parents=True)  # a search that never wrote its summary
    results = load_results(tmp_path / "results")
    text = flat(format_comparison(results))

    for side in ("local", "cluster", "sequential", "parallel", "cloud"):
        assert f"{side}: not run — run `stockscale" in text
    assert results.warnings == [f"skipped {tmp_path / 'results' / 'hp_search_local'}: no summary.json "
                                "(an interrupted run?)"]
    report = write_report(results, tmp_path / "report").read_text()
    assert report.count("_Plot skipped") == 5 and "not projected: no search results" in report
    assert not list((tmp_path / "report").glob("*.png"))


def test_a_trial_far_off_its_peers_is_flagged_and_the_medians_do_not_move(tmp_path: Path) -> None:
    results = tmp_path / "results"
    times = trial_times()
    slow = {**times, 5: times[5] * 5}  # one sequential trial delayed by something else on the machine
    write_search(results, "hp_search_local", "sequential", 1, slow)
    write_search(results, "hp_search_parallel", "parallel", 2, times)
    loaded = load_results(results)
    text = flat(format_comparison(loaded))

    assert f"Outlier: sequential trial-05 took {slow[5]:.1f} s, 5.0x the {times[5]:.1f} s" in text
    assert "parallel trial-05" not in text  # the fast side of the pair is not an outlier
    seq, par = loaded.search("sequential").data, loaded.search("parallel").data
    row = next(line.split() for line in format_comparison(loaded).splitlines() if line.startswith("  parallel  "))
    plain = f"{seq.total_wall_seconds / par.total_wall_seconds:.2f}x"
    assert plain in row and plain != "2.00x"
    assert row[row.index(plain) + 1] == "2.00x"  # every config as fast in both, two at once

    projection = build_projection(loaded, ProjectionSettings(nodes=[1, 18], pod_startup_seconds=0))
    search = projection.search
    assert search.longest_seconds == pytest.approx(times[5])  # not the delayed 5x
    assert search.replaced == [("trial-05", pytest.approx(slow[5]), pytest.approx(times[5]))]
    assert search.measured_sequential_seconds == pytest.approx(seq.total_wall_seconds - (slow[5] - times[5]))
    assert "trial-05 took" in format_projection(projection)


def test_no_outlier_when_trials_are_within_a_factor_of_their_peers(full_results: Path) -> None:
    write_search(full_results, "hp_search_parallel", "parallel", 2, {i: 2.5 * t for i, t in trial_times().items()})
    text = flat(format_comparison(load_results(full_results)))

    assert "Outlier" not in text
    assert "0.80x" in text  # 2 at once, each 2.5x slower than alone


def figure_texts(fig) -> str:
    """Every title, label, legend entry and free text of a figure, flattened."""
    texts = [fig._suptitle.get_text() if fig._suptitle else ""] + [t.get_text() for t in fig.texts]
    for legend in fig.legends:
        texts += [t.get_text() for t in legend.get_texts()]
    for ax in fig.axes:
        texts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        if ax.get_legend() is not None:
            texts += [t.get_text() for t in ax.get_legend().get_texts()]
    return flat(" ".join(texts))


def test_the_figures_state_their_headlines(full_results: Path, tmp_path: Path) -> None:
    from stockscale.experiments import plots
    from stockscale.experiments.report import (
        load_predictions,
        scale_headlines,
        search_headline,
    )

    write_predictions(full_results, "hp_search_local")
    results = load_results(full_results)
    headlines = scale_headlines(results)
    assert headlines == ["memory loader: the cluster handled 4.0x larger datasets (both boundaries measured)"]
    memory = figure_texts(plots.plot_memory(results.scale_tests, tmp_path / "m.png", headlines))
    assert headlines[0] in memory
    assert "memory limit: 1.0 GiB" in memory
    assert "out-of-memory mark" not in memory  # both OOM peaks sit at the limit: nothing to explain
    write_scale(full_results, "scale_test_local", "local", [
        scale_row(1, "success", [420 * MIB]), scale_row(200, "oom", [GIB + 60 * MIB], detail="watchdog")])
    above = load_results(full_results).scale_tests
    assert "An out-of-memory mark above the limit is the last peak RSS seen before the kill" in \
        figure_texts(plots.plot_memory(above, tmp_path / "m.png"))
    assert "No line joins multipliers more than 4x apart" in figure_texts(plots.plot_memory(above, tmp_path / "n.png"))

    headline = search_headline(results)
    seq, par = results.search("sequential").data, results.search("parallel").data
    plain = seq.total_wall_seconds / par.total_wall_seconds
    assert headline == f"parallel {plain:.2f}x faster than sequential (2.00x from per-config medians)"
    timeline = figure_texts(plots.plot_timeline(results.searches, tmp_path / "t.png", headline))
    assert headline in timeline
    assert "hidden size 64" in timeline and "hidden size 256" in timeline  # a key, not a lone "success"

    predictions, title, _ = load_predictions(results)
    shown = figure_texts(plots.plot_predictions(predictions, title, "", tmp_path / "p.png"))
    # every prediction is $1 above the close; persistence is off by the day's move, $0.50 (exact on day one)
    base = (29 * 0.5**2 / 30) ** 0.5
    assert f"RMSE LSTM \\$1.00 vs persistence \\${base:.2f}" in shown
    assert f"the LSTM is {(1 - base) / base * 100:.1f}% worse than persistence" in shown
    assert "persistence (tomorrow = today)" in shown and "LSTM closer than persistence" in shown


def test_the_grid_states_the_span_of_its_colours(tmp_path: Path) -> None:
    from stockscale.experiments import plots
    from stockscale.experiments.report import grid_search

    results = tmp_path / "results"
    write_search(results, "hp_search_local", "sequential", 1, trial_times())
    loaded = load_results(results)
    text = figure_texts(plots.plot_grid(grid_search(loaded), tmp_path / "g.png"))
    assert "The colours span 0.584 to 0.936: the best and worst cell differ by 60.3%" in text


def test_far_apart_multipliers_are_not_joined_by_a_line() -> None:
    from stockscale.experiments.plots import _segments

    points = [(1, 360.0), (136, 420.0), (193, 450.0), (272, 490.0), (2000, 900.0)]
    assert _segments(points) == [[(1, 360.0)], [(136, 420.0), (193, 450.0), (272, 490.0)], [(2000, 900.0)]]
