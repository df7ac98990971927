from __future__ import annotations

import json
from pathlib import Path

import numpy as np
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


@pytest.mark.parametrize(("model", "first"), [("cnn", "conv1.weight"), ("lstm", "lstm1.weight_ih_l0"),
                                              ("dnn", "fc1.weight")])
def test_record_frame_models_on_the_demo_frames(tmp_path: Path, model: str, first: str) -> None:
    out = tmp_path / f"{model}.h5"
    res = _run("record", "--corpus", "demo-private", "--feature-set", "mfcc-frames", "--frames", "60",
               "--model", model, "--algorithm", "fedavg", "--rounds", "2", "--client-fraction", "0.05",
               "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "60 frames x 13 mfcc-frames features" in res.output and "test macro precision / recall / F1" in res.output
    with UpdateStore.open(out) as store:
        assert store.complete and store.rounds_completed == 2
        assert store.config["model"] == model and store.config["data"]["frame_shape"] == [60, 13]
        assert store.config["data"]["feature_set"] == "mfcc-frames" and store.config["data"]["n_features"] == 780
        assert store.parameter_names[0] == first
        assert np.isfinite(store.metrics()["test_f1"]).all()
        assert set(store.result["test_per_class"]) == {"neutral", "happy", "sad", "angry"}
    res = _run("inspect", str(out))
    assert res.exit_code == 0 and "per emotion" in res.output and "60 frames x 13" in res.output


def test_record_mlp_width_from_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "mlp.h5"
    res = _run("record", "--hidden", "32,16,8", "--rounds", "1", "--out", str(out))
    assert res.exit_code == 0, res.output
    with UpdateStore.open(out) as store:
        assert store.config["hidden"] == [32, 16, 8] and store.config["dropout"] == [0.2, 0.0, 0.0]
        assert [a["shape"] for a in store.architecture][0] == [32, 988]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "lstm"], "'lstm' model takes frame sequences, but the 'emobase' features"),
        (["--feature-set", "mfcc-frames"], "'mlp' model takes one feature vector per utterance"),
        (["--model", "gru"], "--model must be one of ['mlp', 'dnn', 'cnn', 'lstm']"),
        (["--hidden", "32,x"], "--hidden takes comma-separated widths"),
        (["--model", "cnn", "--feature-set", "mfcc-frames", "--hidden", "32"], "CNN needs at least 2 widths"),
    ],
)
def test_model_mismatches_are_one_sentence(tmp_path: Path, args: list[str], needle: str) -> None:
    out = tmp_path / "bad.h5"
    res = runner.invoke(app, ["record", "--rounds", "1", "--out", str(out), *args], terminal_width=300)
    assert res.exit_code != 0
    assert needle in " ".join(res.output.split())
    assert "Traceback" not in res.output and not out.exists()


def test_help_names_the_model_registry() -> None:
    res = runner.invoke(app, ["record", "--help"], terminal_width=300)
    assert res.exit_code == 0
    text = " ".join(res.output.replace("│", " ").split())
    for name in ("mlp", "dnn", "cnn", "lstm"):
        assert f"{name} (default --hidden" in text
