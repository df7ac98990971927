from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedaudit.cli.main import app
from fedaudit.record import UpdateStore

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_record_demo_then_inspect(tmp_path: Path) -> None:
    out = tmp_path / "demo.h5"
    res = _run("record", "--corpus", "demo-private", "--rounds", "3", "--seed", "1", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "demo-private: 1920 utterances, 40 speakers" in res.output
    assert "test UAR" in res.output
    with UpdateStore.open(out) as store:
        assert store.complete and store.rounds_completed == 3
        assert store.config["seed"] == 1 and store.config["data"]["corpora"] == ["demo-private"]
    res = _run("inspect", str(out))
    assert res.exit_code == 0 and "complete" in res.output and "256 x 988" in res.output
    res = _run("inspect", str(out), "--json")
    summary = json.loads(res.output)
    assert summary["rounds_completed"] == 3 and summary["parameters"]["fc1.weight"] == [256, 988]


def test_record_fedavg_with_options(tmp_path: Path) -> None:
    out = tmp_path / "avg.h5"
    res = _run("record", "--algorithm", "fedavg", "--rounds", "2", "--dropout", "0.4", "--normalization", "speaker",
               "--dtype", "float16", "--store-globals", "--out", str(out))
    assert res.exit_code == 0, res.output
    with UpdateStore.open(out) as store:
        assert store.config["dropout"] == [0.4, 0.0] and store.config["normalization"] == "speaker"
        assert store.config["lr"] == 0.0005 and store.has_globals
        assert set(store.index["kind"].tolist()) == {1}


def test_existing_output_is_refused_without_force(tmp_path: Path) -> None:
    out = tmp_path / "x.h5"
    out.write_bytes(b"keep me")
    res = runner.invoke(app, ["record", "--rounds", "1", "--out", str(out)])
    assert res.exit_code == 2
    assert "already exists" in res.output and "--force" in res.output
    assert out.read_bytes() == b"keep me"
    res = runner.invoke(app, ["record", "--rounds", "1", "--out", str(out), "--force"])
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--corpus", "nosuch"], "Unknown corpus 'nosuch'"),
        (["--algorithm", "fedprox"], "--algorithm must be one of ['fedsgd', 'fedavg']; got 'fedprox'"),
        (["--normalization", "zscore"], "got 'zscore'"),
        (["--client-fraction", "1.5"], "'client_fraction'"),
        (["--dropout", "abc"], "--dropout takes a rate"),
        (["--corpus", "crema-d"], "Give one --data-root per non-demo corpus"),
        (["--corpus", "crema-d", "--data-root", "/does/not/exist"], "/does/not/exist"),
        (["--feature-set", "mfcc"], "ships the feature sets"),
    ],
)
def test_bad_input_is_one_clear_sentence_and_nonzero_exit(tmp_path: Path, args: list[str], needle: str) -> None:
    out = tmp_path / "bad.h5"
    res = runner.invoke(app, ["record", "--rounds", "1", "--out", str(out), *args])
    assert res.exit_code != 0
    assert needle in res.output
    assert "Traceback" not in res.output
    assert not out.exists()


def test_missing_output_folder_is_reported(tmp_path: Path) -> None:
    res = runner.invoke(app, ["record", "--rounds", "1", "--out", str(tmp_path / "nope" / "x.h5")])
    assert res.exit_code != 0 and "does not exist" in res.output


def test_inspect_errors(tmp_path: Path) -> None:
    res = runner.invoke(app, ["inspect", str(tmp_path / "missing.h5")])
    assert res.exit_code != 0 and "No recording at" in res.output
    junk = tmp_path / "junk.h5"
    junk.write_text("hello")
    res = runner.invoke(app, ["inspect", str(junk)])
    assert res.exit_code != 0 and "not a readable HDF5" in res.output and "Traceback" not in res.output


def test_version_and_help() -> None:
    assert "fedaudit" in _run("--version").output
    res = _run("--help")
    assert "record" in res.output and "inspect" in res.output
