"""Bad input gets one line naming the problem, exit status 2, no traceback and no run directory."""

import subprocess
import sys
import time

import pytest

from tests.conftest import assert_clean_error, write_csv


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--epochs", "0"], ["--epochs"]),
        (["--epochs", "many"], ["--epochs", "integer"]),
        (["--lr", "-1"], ["--lr"]),
        (["--hidden-size", "0"], ["--hidden-size"]),
        (["--device", "tpu"], ["--device"]),
        (["--loader", "disk"], ["--loader"]),
        (["--source", "ftp:x"], ["source"]),
        (["--source", "bundled:NOPE"], ["NOPE"]),
        (["--workers", "0"], ["--workers"]),
        (["--memory-limit", "lots"], ["size"]),
        (["--start", "2013-01-01", "--end", "2012-01-01"], ["start"]),
        (["--bogus"], ["--bogus"]),
        (["--dry-run"], ["--backend kubernetes"]),
        (["--data", "somewhere", "--multiplier", "5"], ["multiplier", "do not set both"]),
    ],
)
def test_bad_flags(cli, tmp_path, args, words):
    ran = cli("train", *args, "--out", tmp_path / "run")
    assert_clean_error(ran, *words)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("epochs: [1, 2\n", ["not valid YAML"]),
        ("epochs: 1\ncolour: red\n", ["colour", "unknown key"]),
        ("epochs: five\n", ["epochs", "integer"]),
        ("- 1\n- 2\n", ["mapping"]),
        ("", ["empty"]),
    ],
)
def test_bad_config_files(cli, tmp_path, content, words):
    config = tmp_path / "c.yaml"
    config.write_text(content)
    ran = cli("train", "--config", config, "--out", tmp_path / "run")
    assert_clean_error(ran, str(config), *words)
    assert not (tmp_path / "run").exists()


def test_missing_and_binary_config(cli, tmp_path):
    assert_clean_error(cli("train", "--config", tmp_path / "nope.yaml"), "does not exist")
    (tmp_path / "b.yaml").write_bytes(b"\x00\xff\x00binary")
    assert_clean_error(cli("train", "--config", tmp_path / "b.yaml"), "b.yaml")


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: p.write_text("Date,Open,High,Low,Close\n2010-01-04,1,1,1,1\n"), ["Volume"]),
        (lambda p: write_csv(p, rows=30), ["need at least"]),
        (lambda p: p.write_bytes(b""), ["empty"]),
        (lambda p: p.write_bytes(b"\x89PNG\x00\x00\x00"), ["binary"]),
        (lambda p: None, ["does not exist"]),
    ],
)
def test_bad_csv_sources(cli, tmp_path, make, words):
    path = tmp_path / "prices.csv"
    make(path)
    ran = cli("train", "--source", f"csv:{path}", "--out", tmp_path / "run")
    assert_clean_error(ran, *words)
    assert not (tmp_path / "run").exists()


def test_existing_run_directory_is_not_overwritten(cli, tmp_path):
    (tmp_path / "run").mkdir()
    assert_clean_error(cli("train", "--epochs", "1", "--out", tmp_path / "run"), "already exists")


def test_help_is_fast_and_does_not_import_torch():
    code = "import sys, time; t=time.perf_counter(); from stockscale.cli import main; " \
           "import contextlib, io\nwith contextlib.redirect_stdout(io.StringIO()):\n" \
           "    main(['--help']) if False else None\nprint('torch' in sys.modules, 'pandas' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False False"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "stockscale", "--help"], capture_output=True, check=True)
    assert time.perf_counter() - start < 1.0


def test_bad_trials_files(cli, tmp_path, monkeypatch):
    trials = tmp_path / "trials.yaml"
    trials.write_text("- {hidden_size: 8}\n")
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    assert_clean_error(cli("train", "--trials", trials), "JOB_COMPLETION_INDEX")
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "3")
    assert_clean_error(cli("train", "--trials", trials), "outside")
    trials.write_text("hidden_size: 8\n")
    assert_clean_error(cli("train", "--trials", trials), "list of mappings")
