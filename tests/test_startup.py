"""A fresh training process starts fast: no torch._dynamo, the same Adam, the base series parsed once."""

import hashlib
import io
import json
import subprocess
import sys

import numpy as np
import torch
from torch import nn

from stockscale.data.series_cache import load_series
from stockscale.data.sources import load_source
from stockscale.model import LSTMRegressor
from stockscale.optim import Adam
from tests.conftest import TINY, write_csv


def train_steps(make_optimizer, steps=5):
    torch.manual_seed(0)
    model = LSTMRegressor(5, 16, 2, 0.2)
    optimizer = make_optimizer(model.parameters())
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(8, 60, 5, generator=generator), torch.randn(8, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    return model, optimizer


def test_our_adam_moves_the_parameters_exactly_as_torch_optim_adam():
    ours, our_optimizer = train_steps(lambda params: Adam(params, lr=1e-2))
    theirs, their_optimizer = train_steps(lambda params: torch.optim.Adam(params, lr=1e-2))
    for (name, mine), other in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        assert torch.equal(mine, other), name
    mine, other = our_optimizer.state_dict(), their_optimizer.state_dict()
    assert set(mine["param_groups"][0]) == set(other["param_groups"][0])
    for index, state in other["state"].items():
        assert all(torch.equal(mine["state"][index][key], state[key]) for key in state)


def test_adam_state_round_trips_through_torch_optim_adam_and_a_weights_only_file(tmp_path):
    model, optimizer = train_steps(lambda params: Adam(params, lr=1e-2), steps=2)
    torch.save(optimizer.state_dict(), tmp_path / "opt.pt")
    loaded = torch.load(tmp_path / "opt.pt", weights_only=True)
    theirs = torch.optim.Adam(model.parameters(), lr=1e-2)
    theirs.load_state_dict(loaded)
    again = Adam(model.parameters())
    again.load_state_dict(theirs.state_dict())
    assert again.lr == 1e-2
    assert all(torch.equal(again.state[0][key], optimizer.state[0][key]) for key in ("step", "exp_avg", "exp_avg_sq"))


def test_a_training_process_never_imports_torch_dynamo(tmp_path):
    script = ("import sys\nfrom stockscale.cli import main\n"
              f"code = main({['train', *TINY, '--out', str(tmp_path / 'run')]!r})\n"
              "print(code, 'torch._dynamo' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "0 False"


def test_the_run_records_its_phases(cli_process, tmp_path):
    ran = cli_process("train", *TINY, "--out", tmp_path / "run")
    assert ran.code == 0, ran.err
    phases = ran.last_json["phase_seconds"]
    assert list(phases) == ["startup", "setup", "data", "model", "train", "evaluate"]
    assert all(value >= 0 for value in phases.values())
    assert 0.1 < phases["startup"] < 60  # a fresh process: at least the interpreter and torch
    assert sum(phases.values()) - phases["startup"] <= ran.last_json["wall_seconds"]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["phase_seconds"] == phases


def entry(cache):
    (meta,) = cache.glob("*.json")
    return meta, meta.with_suffix(".npz")


def test_the_base_series_is_parsed_once_then_read_from_the_cache(tmp_path):
    cache = tmp_path / "series"
    fresh = load_series("bundled:AAPL", None, None, cache)
    meta, npz = entry(cache)
    # A valid entry is what later loads return: prove it by rewriting it (hash updated) with other prices.
    with np.load(npz) as arrays:
        days, values = arrays["dates"], arrays["values"] * 2
    buffer = io.BytesIO()
    np.savez(buffer, dates=days, values=values)
    npz.write_bytes(buffer.getvalue())
    record = json.loads(meta.read_text())
    record["npz_sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    meta.write_text(json.dumps(record))
    cached = load_series("bundled:AAPL", None, None, cache)
    np.testing.assert_array_equal(cached.values, fresh.values * 2)
    np.testing.assert_array_equal(cached.dates, fresh.dates)
    assert cached.name == fresh.name == "bundled:AAPL"


def test_a_damaged_cache_entry_is_ignored_and_rebuilt(tmp_path):
    cache = tmp_path / "series"
    fresh = load_series("bundled:AAPL", None, None, cache)
    _, npz = entry(cache)
    npz.write_bytes(npz.read_bytes()[:-10] + b"0123456789")  # hash no longer matches
    again = load_series("bundled:AAPL", None, None, cache)
    np.testing.assert_array_equal(again.values, fresh.values)
    npz.write_bytes(b"not a zip file")
    np.testing.assert_array_equal(load_series("bundled:AAPL", None, None, cache).values, fresh.values)


def test_an_edited_csv_is_a_new_entry(tmp_path):
    cache = tmp_path / "series"
    path = write_csv(tmp_path / "prices.csv", rows=300)
    first = load_series(f"csv:{path}", None, None, cache)
    write_csv(path, rows=300, start_price=50.0)
    second = load_series(f"csv:{path}", None, None, cache)
    assert len(list(cache.glob("*.npz"))) == 2
    np.testing.assert_array_equal(second.values, load_source(f"csv:{path}").values)
    assert not np.array_equal(first.values, second.values)
