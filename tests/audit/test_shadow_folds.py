"""Shadow runs choose their speaker folds from the shadow corpus, and mirror the target's frames and model."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedaudit.audit.record import record_run
from fedaudit.audit.shadow import run_shadow, shadow_folds
from fedaudit.cli.main import app
from fedaudit.config import FLConfig
from fedaudit.exceptions import InvalidParameterError
from fedaudit.record import UpdateStore
from tests.conftest import make_table
from tests.models.frames import frame_table


@pytest.mark.parametrize(("target", "speakers", "given", "want"), [
    (5, 40, None, 5), (5, 4, None, 4), (5, 2, None, 2), (3, 40, None, 3), (5, 4, 2, 2), (5, 40, 8, 8),
])
def test_shadow_folds_rule(target: int, speakers: int, given: int | None, want: int) -> None:
    assert shadow_folds(target, speakers, n_folds=given) == want


@pytest.mark.parametrize(("speakers", "given", "needle"), [
    (1, None, "at least 2"), (4, 5, "take 2 to 4 speaker folds. Got n_folds=5"), (4, 1, "Got n_folds=1"),
])
def test_impossible_fold_choices_are_one_sentence(speakers: int, given: int | None, needle: str) -> None:
    with pytest.raises(InvalidParameterError, match=needle):
        shadow_folds(5, speakers, n_folds=given)


@pytest.fixture
def target(tmp_path: Path) -> Path:
    path = tmp_path / "target.h5"
    config = FLConfig(algorithm="fedavg", rounds=1, client_fraction=0.5, hidden=(8,), dropout=(0.0,), n_folds=5)
    record_run(config, make_table(n_speakers=10, per_speaker=8, n_features=12), path)
    return path


def test_a_four_speaker_shadow_corpus_against_five_target_folds(tmp_path: Path, target: Path) -> None:
    shadow = make_table(n_speakers=4, per_speaker=8, n_features=12, seed=1)

    paths = run_shadow(target, shadow, out_dir=tmp_path / "shadow", runs=4)

    folds = []
    for path in paths:
        with UpdateStore.open(path) as store:
            assert store.config["n_folds"] == 4
            assert store.config["shadow_folds"] == {
                "n_folds": 4, "target_n_folds": 5, "shadow_speakers": 4,
                "chosen": "largest the shadow speakers allow, up to the target's"}
            assert len(store.client_ids) == 3  # one speaker held out of four
            folds.append(store.config["fold"])
    assert folds == [0, 1, 2, 3]


def test_shadow_folds_can_be_given(tmp_path: Path, target: Path) -> None:
    shadow = make_table(n_speakers=6, per_speaker=8, n_features=12, seed=1)

    paths = run_shadow(target, shadow, out_dir=tmp_path / "shadow", runs=2, n_folds=2)

    with UpdateStore.open(paths[1]) as store:
        assert store.config["n_folds"] == 2 and store.config["fold"] == 1
        assert store.config["shadow_folds"]["chosen"] == "given"


def test_shadow_runs_mirror_the_targets_model_and_frames(tmp_path: Path) -> None:
    target = tmp_path / "frames.h5"
    config = FLConfig(algorithm="fedavg", rounds=1, client_fraction=0.5, model="cnn", hidden=(4, 4),
                      dropout=(0.0, 0.0), n_folds=3)
    record_run(config, frame_table(n_speakers=6, per_speaker=8, n_frames=10), target)
    shadow = frame_table(n_speakers=4, per_speaker=8, n_frames=14, seed=2)

    (path,) = run_shadow(target, shadow, out_dir=tmp_path / "shadow", runs=1)

    with UpdateStore.open(target) as t, UpdateStore.open(path) as s:
        assert s.config["data"]["frame_shape"] == t.config["data"]["frame_shape"] == [10, 5]
        assert (s.config["model"], s.config["hidden"]) == ("cnn", [4, 4])
        assert [a["shape"] for a in s.architecture] == [a["shape"] for a in t.architecture]
        assert s.config["n_folds"] == 3


def test_shadow_cli_says_which_folds_it_chose(tmp_path: Path) -> None:
    target = tmp_path / "demo.h5"
    runner = CliRunner()
    res = runner.invoke(app, ["record", "--rounds", "1", "--hidden", "8", "--client-fraction", "0.05",
                              "--out", str(target)])
    assert res.exit_code == 0, res.output

    res = runner.invoke(app, ["shadow", "--like", str(target), "--runs", "1", "--n-folds", "3",
                              "--out-dir", str(tmp_path / "shadow")], terminal_width=200)

    assert res.exit_code == 0, res.output
    assert "shadow runs use 3 speaker folds (as given; the shadow corpora have 40 speakers)" in res.output
    with UpdateStore.open(tmp_path / "shadow" / "shadow_demo_run0.h5") as store:
        assert store.config["n_folds"] == 3 and store.config["shadow_folds"]["target_n_folds"] == 5
