"""The attack pipeline step (fedaudit.audit.attack): inputs, fit by name, score, leakage, saved models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedaudit.attacks import InversionAttack, StatsAttack
from fedaudit.audit.attack import (
    attack_target,
    fit_attack,
    layer_leakage,
    leakage_of_target,
    save_attack_model,
    score_attack,
    shadow_files,
    target_config,
)
from fedaudit.exceptions import InvalidParameterError, OutputExistsError
from fedaudit.hooks import ClientInfo
from fedaudit.record import UpdateStore
from fedaudit.types import ClientUpdate


def test_shadow_files_expand_folders_and_name_what_is_missing(recordings, tmp_path: Path) -> None:
    folder = recordings["shadows"][0].parent
    assert shadow_files([folder]) == sorted(folder.glob("*.h5"))
    assert shadow_files([recordings["shadows"][1]]) == [recordings["shadows"][1]]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidParameterError, match="holds no .h5 recordings"):
        shadow_files([tmp_path / "empty"])
    with pytest.raises(InvalidParameterError, match="nothing.h5 does not exist"):
        shadow_files([tmp_path / "nothing.h5"])


def test_fit_attack_needs_no_branch_on_the_name(recordings, public_table) -> None:
    target = recordings["target"][0]
    stats, card = fit_attack("stats", shadows=recordings["shadows"], layers=[1], seed=3)
    assert isinstance(stats, StatsAttack) and stats.layers_ == ["fc1"] and stats.seed == 3
    assert len(card["shadow_sha256"]) == 64 and card["fit_info"] == stats.fit_info_ and card["fit_seconds"] > 0
    inversion, card = fit_attack("inversion", public=public_table, target=target)
    assert isinstance(inversion, InversionAttack) and inversion.normalization_ == target_config(target)["normalization"]
    assert card["public_corpora"] == ["synthetic"] and card["normalization"] == "global"


@pytest.mark.parametrize(
    ("name", "kwargs", "needle"),
    [
        ("nosuch", {}, "Unknown attack 'nosuch'; choose one of"),
        ("stats", {}, "The stats attack is fitted on shadow recordings: give --shadow FILE (see `fedaudit shadow`)."),
        ("inversion", {}, "The inversion attack needs public features: give --public-corpus (e.g. demo-shadow)."),
        ("stats", {"options": {"epochs": 3}}, "The stats attack takes no option ['epochs']"),
    ],
)
def test_fit_attack_errors_are_one_sentence(name: str, kwargs: dict, needle: str) -> None:
    with pytest.raises(InvalidParameterError) as err:
        fit_attack(name, **kwargs)
    assert needle in str(err.value)


def test_scoring_a_layer_the_attack_cannot_read_alone(recordings, public_table) -> None:
    target = recordings["target"][0]
    inversion, _ = fit_attack("inversion", public=public_table, target=target)
    assert score_attack(inversion, target, layers=[1]).layers == ["fc1"]
    with pytest.raises(InvalidParameterError, match=r"reads the input layer only; got layers \['fc2'\]"):
        score_attack(inversion, target, layers=[2])
    with pytest.raises(InvalidParameterError, match="Layer 9 does not exist"):
        score_attack(inversion, target, layers=[9])
    assert list(layer_leakage(inversion, target)) == ["fc1"]


def test_saved_model_round_trip_through_the_models_folder(recordings, tmp_path: Path) -> None:
    target = recordings["target"][0]
    models = tmp_path / "models"
    report = attack_target(target, shadows=recordings["shadows"], layers=[1], save_as="s",
                           models_dir=models)
    assert report.saved_model == str(models / "s.json") and report.layers == ["fc1"]
    with pytest.raises(OutputExistsError, match=r"s\.json already exists\.$") as err:
        attack_target(target, shadows=recordings["shadows"], save_as="s", models_dir=models)
    assert "--force" not in str(err.value)  # the command line adds how to replace it
    again = attack_target(target, model=models / "s.json", layers=[1])
    assert again.results["1"].asr == report.results["1"].asr and again.saved_model is None
    assert again.card["shadow_sha256"] == report.card["shadow_sha256"]
    attack, _ = fit_attack("stats", shadows=recordings["shadows"])
    assert save_attack_model(attack, "s", models_dir=models, overwrite=True) == models / "s.json"


def test_leakage_needs_a_per_layer_attack(recordings) -> None:
    with pytest.raises(InvalidParameterError, match="needs a per-layer attack: use --attack cnn or stats"):
        leakage_of_target(recordings["target"][0], attack="inversion")
    attack, results, _ = leakage_of_target(recordings["target"][0], shadows=recordings["shadows"])
    assert list(results) == ["fc1", "fc2", "fc3", "fused"] and attack.name == "stats"


def test_recording_without_ground_truth_gets_predictions_only(recordings, target_store, tmp_path: Path) -> None:
    """The real audit case: a recording from elsewhere, with no ground truth, gets per-client predictions."""
    path = tmp_path / "foreign.h5"
    shapes = {n: target_store.shape(n) for n in target_store.parameter_names}
    writer = UpdateStore.create(path, config={"source": "another framework"}, parameter_shapes=shapes,
                                clients=[ClientInfo(client_id=int(c), corpus="x", n_train=10)
                                         for c in target_store.client_ids])
    arrays = {n: target_store.param(n) for n in shapes}
    for r in range(target_store.rounds_completed):
        for row in target_store.round_rows(r):
            writer.add(ClientUpdate(server_round=r, client_id=int(target_store.index["client_id"][row]),
                                    kind="gradient", arrays={n: a[row] for n, a in arrays.items()}, num_samples=20,
                                    local_steps=1, lr=0.1))
        writer.commit_round()
    writer.finish({})
    attack, _ = fit_attack("stats", shadows=recordings["shadows"])
    report = score_attack(attack, path)
    assert report.results == {}
    assert {p.client_id for p in report.predictions} == set(target_store.index["client_id"].tolist())
    assert all(p.truth is None and 0.0 <= p.p_female <= 1.0 for p in report.predictions)
    truth = dict(zip(target_store.client_ids.tolist(), target_store.ground_truth()["gender"], strict=True))
    correct = np.mean([p.predicted == truth[p.client_id] for p in report.predictions])
    assert correct > 0.7  # measured 1.00 on this fixture
    with UpdateStore.open(path) as store, pytest.raises(InvalidParameterError, match="holds no ground truth"):
        attack.score(store)


def test_averaged_updates_are_scored_at_a_threshold_set_on_averaged_shadow_updates(recordings) -> None:
    from fedaudit.audit.attack import averaged_threshold, fit_attack, score_attack
    from fedaudit.metrics import attack_success
    from fedaudit.record import UpdateStore

    attack, card = fit_attack("stats", shadows=recordings["shadows"], seed=0)
    report = score_attack(attack, recordings["target"][0], n_updates=(1, "all"), card=card)
    expected = averaged_threshold(attack, recordings["shadows"], "all", repeats=10, seed=0)
    assert report.results["1"].threshold == 0.5
    assert report.results["all"].threshold == expected
    with UpdateStore.open(recordings["target"][0]) as store:
        direct = attack_success(attack.predict_proba, store, attack.required_parameters(), n_updates="all",
                                seed=0, threshold=expected)
    assert report.results["all"].asr == direct.asr
    # Without shadow runs (a public-data attack) nothing can be calibrated.
    assert averaged_threshold(attack, [], 5) == 0.5


def test_fit_progress_reaches_an_attack_that_reports_it(recordings) -> None:
    events: list[dict] = []
    report = attack_target(recordings["target"][0], attack="cnn", shadows=recordings["shadows"], layers=[2, 3],
                           options={"epochs": 1, "max_train_updates": 40}, progress=events.append)
    assert report.layers == ["fc2", "fc3"]
    assert [(e["layer"], e["layer_index"], e["epoch"]) for e in events] == [("fc2", 0, 0), ("fc3", 1, 0)]
    assert all(0 < e["work_done"] <= e["work_total"] for e in events) and events[-1]["done"]
    assert events[-1]["work_done"] == pytest.approx(events[-1]["work_total"])  # the bar ends full
    assert {e["n_layers"] for e in events} == {2} and {e["epochs"] for e in events} == {1}
    # an attack without a progress parameter is fitted as before
    assert attack_target(recordings["target"][0], shadows=recordings["shadows"], progress=events.append).results


def test_leakage_of_an_lstm_recording_has_a_row_per_layer(tmp_path: Path) -> None:
    from tests.attacks.frame_models import record_runs

    runs = record_runs(tmp_path, "lstm")
    fitted, rows, notes = leakage_of_target(runs["target"][0], shadows=runs["shadows"], seed=0)
    assert list(rows) == ["lstm1", "fc1", "fused"]
    assert fitted.required_parameters()[:4] == ["lstm1.weight_ih_l0", "lstm1.weight_hh_l0", "lstm1.bias_ih_l0",
                                                "lstm1.bias_hh_l0"]
    assert all(r.chance == pytest.approx(0.5) and r.ci_low <= r.asr <= r.ci_high for r in rows.values())
    assert rows["lstm1"].asr > 0.75  # measured 1.00 (seed 0): the frame mixture in weight_ih carries the offset
