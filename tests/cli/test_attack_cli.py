from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedaudit.cli.main import app
from fedaudit.record import UpdateStore

runner = CliRunner()


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli_attack")
    target = root / "target.h5"
    res = runner.invoke(app, ["record", "--rounds", "6", "--client-fraction", "0.2", "--seed", "0", "--out", str(target)])
    assert res.exit_code == 0, res.output
    shadow_dir = root / "shadow"
    res = runner.invoke(app, ["shadow", "--like", str(target), "--corpus", "demo-shadow", "--runs", "2",
                              "--out-dir", str(shadow_dir)])
    assert res.exit_code == 0, res.output
    return {"target": target, "shadow_dir": shadow_dir, "root": root}


def test_shadow_mirrors_the_target_configuration(demo_runs) -> None:
    files = sorted(demo_runs["shadow_dir"].glob("*.h5"))
    assert len(files) == 2
    with UpdateStore.open(demo_runs["target"]) as t, UpdateStore.open(files[1]) as s:
        for key in ("algorithm", "rounds", "lr", "batch_size", "hidden", "dropout", "normalization", "client_fraction"):
            assert s.config[key] == t.config[key], key
        assert s.config["data"]["corpora"] == ["demo-shadow"]
        assert s.config["fold"] == 1 and s.config["seed"] == 1001  # target seed + 1000 + run
        assert s.complete


def test_attack_stats_prints_asr_and_writes_json(demo_runs) -> None:
    out = demo_runs["root"] / "res.json"
    res = runner.invoke(app, ["attack", str(demo_runs["target"]), "--shadow", str(demo_runs["shadow_dir"]),
                              "--n-updates", "1,all", "--json", str(out), "--clients"])
    assert res.exit_code == 0, res.output
    assert "ASR" in res.output and "per client" in res.output
    data = json.loads(out.read_text())
    assert set(data["results"]) == {"1", "all"}
    asr = data["results"]["1"]["asr"]
    assert 0.0 <= asr <= 1.0 and data["results"]["1"]["n_clients"] > 0


def test_attack_layer_and_saved_model_round_trip(demo_runs) -> None:
    name = "cli_test_stats"
    res = runner.invoke(app, ["attack", str(demo_runs["target"]), "--shadow", str(demo_runs["shadow_dir"]),
                              "--save-model", name, "--force", "--layer", "1", "--json",
                              str(demo_runs["root"] / "a.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((demo_runs["root"] / "a.json").read_text())["layers"] == ["fc1"]
    card = Path("attack_models") / f"{name}.json"
    try:
        meta = json.loads(card.read_text())
        assert len(meta["shadow_sha256"]) == 64 and meta["attack"] == "stats"
        res2 = runner.invoke(app, ["attack", str(demo_runs["target"]), "--model", str(card), "--layer", "1",
                                   "--json", str(demo_runs["root"] / "b.json")])
        assert res2.exit_code == 0, res2.output
        a = json.loads((demo_runs["root"] / "a.json").read_text())["results"]["1"]["asr"]
        b = json.loads((demo_runs["root"] / "b.json").read_text())["results"]["1"]["asr"]
        assert a == b
    finally:
        card.unlink(missing_ok=True)
        card.with_suffix(".pt").unlink(missing_ok=True)


def test_inversion_attack_needs_only_public_features(demo_runs) -> None:
    res = runner.invoke(app, ["attack", str(demo_runs["target"]), "--attack", "inversion",
                              "--public-corpus", "demo-shadow"])
    assert res.exit_code == 0, res.output
    assert "inversion attack" in res.output and "ASR" in res.output


def test_leakage_table_has_every_layer_and_fused(demo_runs) -> None:
    res = runner.invoke(app, ["leakage", str(demo_runs["target"]), "--shadow", str(demo_runs["shadow_dir"])])
    assert res.exit_code == 0, res.output
    for label in ("1 (fc1)", "2 (fc2)", "3 (fc3)", "fused"):
        assert label in res.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--attack", "nosuch", "--shadow", "SHADOW"], "Unknown attack 'nosuch'"),
        (["--shadow", "/no/such/shadow.h5"], "/no/such/shadow.h5 does not exist"),
        ([], "give --shadow FILE"),
        (["--layer", "9", "--shadow", "SHADOW"], "Layer 9 does not exist"),
        (["--n-updates", "0", "--shadow", "SHADOW"], "got '0'"),
        (["--model", "/no/model.json"], "No attack model at /no/model"),
    ],
)
def test_attack_errors_are_one_sentence(demo_runs, args: list[str], needle: str) -> None:
    args = [str(demo_runs["shadow_dir"]) if a == "SHADOW" else a for a in args]
    res = runner.invoke(app, ["attack", str(demo_runs["target"]), *args])
    assert res.exit_code != 0
    assert needle in res.output, res.output
    assert "Traceback" not in res.output


def test_attack_on_missing_target(tmp_path: Path) -> None:
    res = runner.invoke(app, ["attack", str(tmp_path / "none.h5")])
    assert res.exit_code != 0 and "does not exist" in res.output


def test_shadow_refuses_to_overwrite(demo_runs) -> None:
    res = runner.invoke(app, ["shadow", "--like", str(demo_runs["target"]), "--runs", "1",
                              "--out-dir", str(demo_runs["shadow_dir"])])
    assert res.exit_code != 0 and "already exists" in res.output


def test_cnn_attack_through_the_cli(demo_runs) -> None:
    res = runner.invoke(app, ["attack", str(demo_runs["target"]), "--attack", "cnn", "--shadow",
                              str(demo_runs["shadow_dir"]), "--layer", "3", "--epochs", "1",
                              "--max-train-updates", "20", "--json", str(demo_runs["root"] / "cnn.json")])
    assert res.exit_code == 0, res.output
    data = json.loads((demo_runs["root"] / "cnn.json").read_text())
    assert data["attack"] == "cnn" and data["layers"] == ["fc3"]


def test_cnn_options_are_refused_for_other_attacks(demo_runs) -> None:
    res = runner.invoke(app, ["attack", str(demo_runs["target"]), "--shadow", str(demo_runs["shadow_dir"]),
                              "--epochs", "3"])
    assert res.exit_code != 0 and "apply to the cnn attack only" in res.output


def test_shadow_can_start_from_the_target_initial_model(demo_runs) -> None:
    out = demo_runs["root"] / "shadow_init"
    res = runner.invoke(app, ["shadow", "--like", str(demo_runs["target"]), "--runs", "1", "--out-dir", str(out),
                              "--init-from-target"])
    assert res.exit_code == 0, res.output
    (path,) = sorted(out.glob("*.h5"))
    with UpdateStore.open(demo_runs["target"]) as t, UpdateStore.open(path) as s:
        for name in t.parameter_names:
            assert (t.initial_weights()[name] == s.initial_weights()[name]).all()
        assert s.config["init_from_target"] is True
    other = sorted(demo_runs["shadow_dir"].glob("*.h5"))[0]
    with UpdateStore.open(demo_runs["target"]) as t, UpdateStore.open(other) as s:
        assert not (t.initial_weights()["fc1.weight"] == s.initial_weights()["fc1.weight"]).all()


def test_leakage_of_a_conv_model_names_its_layers_and_their_type(tmp_path: Path) -> None:
    from tests.attacks.frame_models import record_runs

    runs = record_runs(tmp_path, "cnn")
    out = tmp_path / "leakage.json"
    res = runner.invoke(app, ["leakage", str(runs["target"][0]), *(a for p in runs["shadows"] for a in ("--shadow", str(p))),
                              "--json", str(out)])
    assert res.exit_code == 0, res.output
    for label in ("1 (conv1)", "2 (conv2)", "3 (fc1)", "fused"):
        assert label in res.output
    assert "conv" in res.output and "linear" in res.output and "chance" in res.output
    body = json.loads(out.read_text())
    assert list(body) == ["conv1", "conv2", "fc1", "fused"]
    assert all(0.0 <= body[k]["ci_low"] <= body[k]["asr"] <= body[k]["ci_high"] <= 1.0 for k in body)
    assert not list(tmp_path.glob("*.tmp"))  # written to a temporary file, then renamed


def test_fit_progress_shows_layer_epoch_and_eta_on_a_terminal_only() -> None:
    import io

    from rich.console import Console

    from fedaudit.cli.attack import fit_progress

    screen = Console(file=io.StringIO(), force_terminal=True, width=120)
    with fit_progress("cnn", out=screen) as progress:
        assert progress is not None
        progress({"layer": "conv1", "layer_index": 0, "n_layers": 3, "epoch": 1, "epochs": 8, "val_uar": 0.75,
                  "work_done": 2.0, "work_total": 24.0})
        screen.file.flush()
    shown = screen.file.getvalue()
    assert "conv1 (1/3)" in shown and "epoch 2/8" in shown and "0.750" in shown
    with fit_progress("cnn", out=screen, quiet=True) as progress:
        assert progress is None
    with fit_progress("cnn", out=Console(file=io.StringIO())) as progress:  # not a terminal
        assert progress is None
    with fit_progress("stats", out=screen) as progress:  # an attack that reports nothing
        assert progress is None
