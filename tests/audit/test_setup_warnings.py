"""The attack step says when its figures are weak: few clients, shadow runs that do not mirror the
target (another defense, other settings), and the key holder's view under secure aggregation."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedaudit.audit import record_run
from fedaudit.audit.attack import setup_warnings
from fedaudit.cli.main import app
from fedaudit.config import FLConfig
from fedaudit.defenses import defenses_from_options
from tests.conftest import make_table

runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("setup")
    small = make_table(n_speakers=8, per_speaker=16, n_features=8, seed=3)
    large = make_table(n_speakers=16, per_speaker=16, n_features=8, seed=4)
    cfg = FLConfig(rounds=3, client_fraction=0.5, hidden=(8, 4), seed=0, n_folds=4)
    paths = {name: root / f"{name}.h5" for name in ("udp_small", "plain_large", "shadow_plain", "shadow_fedavg",
                                                     "sefl")}
    record_run(cfg, small, paths["udp_small"],
               defenses=defenses_from_options(["udp"], {"noise_multiplier": 1.0, "clip": 1.0}))
    record_run(cfg, large, paths["plain_large"])
    record_run(FLConfig(rounds=3, client_fraction=0.5, hidden=(8, 4), seed=5, n_folds=4), large,
               paths["shadow_plain"])
    record_run(FLConfig(algorithm="fedavg", rounds=3, client_fraction=0.5, hidden=(8, 4), seed=6, n_folds=4), large,
               paths["shadow_fedavg"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        record_run(cfg, large, paths["sefl"], defenses=defenses_from_options(
            ["sefl"], {"key_bits": 512, "insecure_key": True}))
    return paths


def test_few_clients_and_another_defense_are_named(runs) -> None:
    notes = setup_warnings(runs["udp_small"], [runs["shadow_plain"]])
    assert any(n.startswith("Only ") and "clients sent updates" in n for n in notes)
    assert any("defenses (none) differ from the target's (udp)" in n for n in notes)


def test_a_mirrored_setup_of_enough_clients_gets_no_warning(runs) -> None:
    assert setup_warnings(runs["plain_large"], [runs["shadow_plain"]]) == []


def test_other_fl_settings_and_the_key_holder_view_are_named(runs) -> None:
    notes = setup_warnings(runs["plain_large"], [runs["shadow_fedavg"]])
    assert any("differs from the target in algorithm" in n for n in notes)
    assert any("holder of the private key" in n for n in setup_warnings(runs["sefl"]))


def test_attack_command_prints_the_warnings_and_refuses_to_overwrite_json(runs, tmp_path: Path) -> None:
    res = runner.invoke(app, ["attack", str(runs["udp_small"]), "--shadow", str(runs["shadow_plain"])],
                        terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "warning:" in res.output and "differ from the target's (udp)" in res.output
    out = tmp_path / "r.json"
    out.write_text("keep")
    res = runner.invoke(app, ["attack", str(runs["plain_large"]), "--shadow", str(runs["shadow_plain"]),
                              "--json", str(out)])
    assert res.exit_code == 2 and "already exists" in res.output and "--force" in res.output
    assert out.read_text() == "keep"
    res = runner.invoke(app, ["leakage", str(runs["plain_large"]), "--shadow", str(runs["shadow_plain"]),
                              "--json", str(out)])
    assert res.exit_code == 2 and out.read_text() == "keep"
