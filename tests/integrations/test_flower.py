"""A real Flower simulation (the example app: 10 clients, 20 rounds) recorded by the strategy wrapper and by
the client mod; both recordings read and attack exactly like a simulator recording."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from fedaudit.cli.main import app
from fedaudit.record.reader import UpdateStore
from tests.integrations.conftest import shared


@pytest.fixture(scope="module")
def shadows(flower_run: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """One shadow run of the unchanged `fedaudit shadow` step, mirroring the Flower recording's configuration."""

    def make(folder: Path) -> dict[str, Any]:
        from fedaudit.audit import run_shadow
        from fedaudit.data import load_demo

        return {"paths": [str(p) for p in run_shadow(flower_run["server"], load_demo("demo-shadow"),
                                                      out_dir=folder / "shadow", runs=1)]}

    return [Path(p) for p in shared(tmp_path_factory, "flower-shadow", make)["paths"]]


@pytest.fixture(scope="module")
def attacks(flower_run: dict[str, Any], shadows: list[Path]) -> dict[str, Any]:
    """The stats attack fitted on the shadow run, the inversion attack on public features (the demo shadow corpus)."""
    from fedaudit.audit.attack import fit_attack, load_public_features

    target = flower_run["server"]
    stats, _ = fit_attack("stats", shadows=shadows, target=target, layers=[1], seed=0)
    inversion, _ = fit_attack("inversion", public=load_public_features(target=target), target=target, seed=0)
    return {"stats": stats, "inversion": inversion}


@pytest.mark.parametrize("view", ["server", "clients"])
def test_flower_recordings_pass_inspect(flower_run: dict[str, Any], view: str) -> None:
    result = CliRunner().invoke(app, ["inspect", flower_run[view]])
    assert result.exit_code == 0, result.output
    assert "complete" in result.output and "200" in result.output
    with UpdateStore.open(flower_run[view]) as store:
        assert store.complete and store.rounds_completed == 20 and store.n_updates == 200
        assert store.layers == ["fc1", "fc2", "fc3"]
        assert sorted(set(store.index["client_id"].tolist())) == list(range(10))
        assert set(store.ground_truth()["gender"]) == {"F", "M"}
        assert store.config["not_recorded"] == []
        assert (store.index["kind"] == 1).all()  # pseudo-gradients


def test_the_server_sees_what_the_clients_sent(flower_run: dict[str, Any]) -> None:
    """Without a defense in between, the wrapper's and the mod's recordings hold the same updates."""
    with UpdateStore.open(flower_run["server"]) as server, UpdateStore.open(flower_run["clients"]) as clients:
        for col in ("server_round", "client_id", "local_steps", "num_samples"):
            np.testing.assert_array_equal(server.index[col], clients.index[col])
        for name in server.parameter_names:
            np.testing.assert_array_equal(server.param(name), clients.param(name))
        assert server.config["flower"]["strategy_chain"] == ["RecordingStrategy", "FedAvg"]
        assert server.config["sources"]["lr"] == "run config" and server.config["sources"]["hidden"] == "given"


def test_the_shadow_step_mirrors_the_flower_run(flower_run: dict[str, Any], shadows: list[Path]) -> None:
    with UpdateStore.open(flower_run["server"]) as target, UpdateStore.open(shadows[0]) as shadow:
        for key in ("algorithm", "rounds", "lr", "local_epochs", "batch_size", "hidden", "optimizer", "normalization"):
            assert shadow.config[key] == target.config[key], key
        assert shadow.parameter_names == target.parameter_names


@pytest.mark.parametrize("view", ["server", "clients"])
def test_stats_and_inversion_attacks_score_flower_recordings(
    flower_run: dict[str, Any], attacks: dict[str, Any], view: str
) -> None:
    from fedaudit.audit.attack import score_attack

    for attack in attacks.values():
        result = score_attack(attack, flower_run[view], seed=0).results["1"]
        assert result.n_clients == 10
        assert 0.0 <= result.asr <= 1.0
    # The inversion of the first layer reads gender off these FedAvg updates far better than chance.
    assert score_attack(attacks["inversion"], flower_run[view], seed=0).results["1"].asr >= 0.7


def test_the_attack_command_audits_a_flower_recording(flower_run: dict[str, Any], shadows: list[Path]) -> None:
    result = CliRunner().invoke(app, ["attack", flower_run["server"], "--attack", "stats", "--shadow",
                                      str(shadows[0].parent), "--layer", "1"])
    assert result.exit_code == 0, result.output
    assert "ASR" in result.output or "asr" in result.output.lower()
