"""The stats attack: update statistics per layer, logistic regression, fusion by layer size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedaudit.attacks import AttackerKnowledge, ShapeMismatchError, StatsAttack, load_attack
from fedaudit.audit import record_run
from fedaudit.config import FLConfig
from fedaudit.exceptions import InvalidParameterError, OutputExistsError
from fedaudit.record import UpdateStore
from tests.conftest import make_table


@pytest.fixture
def fitted(shadow_stores) -> StatsAttack:
    return StatsAttack(seed=0).fit(AttackerKnowledge(shadows=shadow_stores))


def test_saved_card_and_refusal_to_overwrite(fitted, target_store, tmp_path: Path) -> None:
    updates = {n: target_store.param(n) for n in fitted.required_parameters()}
    card = fitted.save(tmp_path / "stats", card={"note": "test"})
    loaded = load_attack(card)
    np.testing.assert_array_equal(loaded.predict_proba(updates), fitted.predict_proba(updates))
    assert loaded.card_["note"] == "test" and loaded.card_["layers"] == ["fc1", "fc2", "fc3"]
    assert loaded.fit_info_ == fitted.fit_info_
    with pytest.raises(OutputExistsError, match=r"stats\.json already exists\.$"):
        fitted.save(tmp_path / "stats")
    fitted.save(tmp_path / "stats", overwrite=True)


def test_stats_attack_beats_chance_on_first_layer(fitted, target_store) -> None:
    res = fitted.restricted(["fc1"]).score(target_store, seed=0)
    # Measured 1.00 on this fixture (column 1 carries a 3-sigma gender offset); chance is 0.5.
    assert res.asr > 0.8
    assert set(fitted.fusion_weights_) == {"fc1", "fc2", "fc3"}
    assert fitted.fusion_weights_["fc1"] > fitted.fusion_weights_["fc2"] > fitted.fusion_weights_["fc3"]


def test_fusion_is_the_size_weighted_average_of_the_layers(fitted, target_store) -> None:
    updates = {n: target_store.param(n, np.arange(20)) for n in fitted.required_parameters()}
    per_layer = fitted.layer_proba(updates)
    expected = sum(fitted.fusion_weights_[k] * per_layer[k] for k in ("fc1", "fc2", "fc3"))
    np.testing.assert_allclose(fitted.predict_proba(updates), expected, rtol=1e-12)
    first = fitted.restricted([1])
    assert first.layers_ == ["fc1"] and first.fusion_weights_ == {"fc1": 1.0} and first.layers == ["fc1"]
    assert fitted.layers is None and fitted.layers_ == ["fc1", "fc2", "fc3"]  # the original is untouched
    np.testing.assert_array_equal(first.predict_proba(updates), per_layer["fc1"])


def test_fit_on_chosen_layers_only(shadow_stores) -> None:
    attack = StatsAttack(layers=["fc2"], seed=0).fit(AttackerKnowledge(shadows=shadow_stores))
    assert attack.layers_ == ["fc2"] and attack.required_parameters() == ["fc2.weight", "fc2.bias"]
    with pytest.raises(InvalidParameterError, match="Unknown layer 'fc9'"):
        StatsAttack(layers=["fc9"]).fit(AttackerKnowledge(shadows=shadow_stores))


def test_bad_val_fraction_is_named(shadow_stores) -> None:
    with pytest.raises(InvalidParameterError, match="'val_fraction' parameter of StatsAttack"):
        StatsAttack(val_fraction=1.0).fit(AttackerKnowledge(shadows=shadow_stores))


def test_architecture_mismatch_names_both_shapes(fitted, tmp_path: Path) -> None:
    other = tmp_path / "other.h5"
    record_run(FLConfig(rounds=2, hidden=(32, 16)), make_table(n_features=20), other)
    with UpdateStore.open(other) as store:
        with pytest.raises(ShapeMismatchError, match=r"\(32, 20\).*\(32, 16\)"):
            fitted.check_store(store)
        with pytest.raises(ShapeMismatchError, match=r"\(32, 20\).*\(32, 16\)"):
            fitted.predict_proba({n: store.param(n) for n in fitted.required_parameters()})
        with pytest.raises(ShapeMismatchError):
            fitted.score(store)


def test_loading_refuses_non_attack_files(tmp_path: Path) -> None:
    (tmp_path / "m.json").write_text('{"format": "something else"}')
    torch.save({"x": torch.zeros(1)}, tmp_path / "m.pt")
    with pytest.raises(InvalidParameterError, match="not a fedaudit attack model"):
        load_attack(tmp_path / "m.json")
    with pytest.raises(InvalidParameterError, match="No attack model"):
        load_attack(tmp_path / "absent")
