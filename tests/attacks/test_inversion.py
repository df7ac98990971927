"""The inversion attack: no shadow FL, public features normalised as the target normalises them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedaudit.attacks import AttackerKnowledge, InversionAttack, ShapeMismatchError
from fedaudit.audit import record_run
from fedaudit.config import FLConfig
from fedaudit.exceptions import InvalidParameterError
from fedaudit.record import UpdateStore
from tests.conftest import make_table


@pytest.fixture
def fitted(public_table, target_store) -> InversionAttack:
    return InversionAttack(seed=0).fit(AttackerKnowledge(public=public_table, target_config=target_store.config))


def test_inversion_attack_needs_no_shadow_fl(fitted, target_store) -> None:
    res = fitted.score(target_store, seed=0)
    assert res.asr > 0.8  # measured 1.00: the recovered mixture carries the feature offset
    assert fitted.fit_info_["normalization"] == "global" and fitted.fit_info_["public_corpora"] == ["synthetic"]


def test_normalization_comes_from_the_target_configuration(public_table, target_store) -> None:
    config = {**target_store.config, "normalization": "speaker"}
    attack = InversionAttack(seed=0).fit(AttackerKnowledge(public=public_table, target_config=config))
    assert attack.normalization_ == "speaker"
    with pytest.raises(InvalidParameterError, match="normalises features with 'global'.*'speaker'"):
        attack.check_store(target_store)
    assert InversionAttack(seed=0).fit(AttackerKnowledge(public=public_table)).normalization_ == "global"


def test_public_features_of_another_feature_set_are_refused(public_table, target_store) -> None:
    config = {**target_store.config, "data": {**target_store.config["data"], "feature_set": "egemaps"}}
    with pytest.raises(InvalidParameterError, match="egemaps features but the public features are synthetic"):
        InversionAttack(seed=0).fit(AttackerKnowledge(public=public_table, target_config=config))


def test_reads_the_input_layer_only(fitted, target_store) -> None:
    assert fitted.layers_ == ["fc1"] and fitted.layers_read == "input" and not fitted.per_layer
    assert fitted.restricted(["fc1"]) is fitted and fitted.restricted([1]) is fitted
    message = r"The inversion attack reads the input layer only; got layers \['fc2'\]"
    with pytest.raises(InvalidParameterError, match=message):
        fitted.restricted(["fc2"])
    updates = {n: target_store.param(n, np.arange(5)) for n in fitted.required_parameters()}
    assert list(fitted.layer_proba(updates)) == ["fc1"]


def test_input_width_mismatch_is_named(fitted, tmp_path: Path) -> None:
    other = tmp_path / "other.h5"
    record_run(FLConfig(rounds=2, hidden=(32, 16)), make_table(n_features=20), other)
    with UpdateStore.open(other) as store:
        with pytest.raises(ShapeMismatchError, match="20"):
            fitted.check_store(store)
        with pytest.raises(ShapeMismatchError, match="20 inputs"):
            fitted.predict_proba({n: store.param(n) for n in fitted.required_parameters()})
