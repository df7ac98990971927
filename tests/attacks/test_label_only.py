"""The label-only baseline: high ASR where the emotion mix gives gender away, chance where it does not."""

from __future__ import annotations

import numpy as np
import pytest

from fedaudit.attacks import ATTACKS, AttackerKnowledge, LabelOnlyAttack
from fedaudit.exceptions import InvalidParameterError
from fedaudit.record import UpdateStore
from tests.attacks._skewed import BALANCED_MIX, SKEWED_MIX, mixed_table, record_mixed


@pytest.fixture(scope="module")
def skewed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list]:
    paths = record_mixed(tmp_path_factory.mktemp("skewed"), SKEWED_MIX)
    stores = {k: [UpdateStore.open(p) for p in v] for k, v in paths.items()}
    yield stores
    for s in (*stores["shadows"], *stores["target"]):
        s.close()


@pytest.fixture(scope="module")
def balanced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list]:
    paths = record_mixed(tmp_path_factory.mktemp("balanced"), BALANCED_MIX)
    stores = {k: [UpdateStore.open(p) for p in v] for k, v in paths.items()}
    yield stores
    for s in (*stores["shadows"], *stores["target"]):
        s.close()


def _score(cls, stores, **kwargs):
    target = stores["target"][0]
    attack = cls(seed=0, **kwargs).fit(AttackerKnowledge(shadows=stores["shadows"], target_config=target.config))
    return attack, attack.score(target, repeats=10, seed=0)


def test_the_fixtures_differ_in_the_emotion_mix_only() -> None:
    for mix, expect in ((SKEWED_MIX, True), (BALANCED_MIX, False)):
        table = mixed_table(mix, seed=1)
        happy_sad = np.isin(table.emotion, ["happy", "sad"])
        share_f, share_m = happy_sad[table.gender == "F"].mean(), happy_sad[table.gender == "M"].mean()
        assert bool(share_f - share_m > 0.5) is expect
        # no gender in the features: a linear probe on utterances is at chance
        corr = np.abs([np.corrcoef(table.x[:, j], table.gender == "F")[0, 1] for j in range(table.n_features)])
        assert corr.max() < 0.15


def test_the_label_only_baseline_reads_a_gender_skewed_emotion_mix(skewed) -> None:
    attack, result = _score(LabelOnlyAttack, skewed)
    assert result.asr >= 0.85 and result.ci_low > result.chance
    hist = attack.fit_info_["mean_histogram_by_gender"]  # the attacker's view of the shadow updates
    assert hist["F"][1] + hist["F"][2] > hist["M"][1] + hist["M"][2]  # happy + sad: more for women


def test_the_label_only_baseline_is_at_chance_on_a_balanced_mix(balanced) -> None:
    _, result = _score(LabelOnlyAttack, balanced)
    assert result.ci_low <= 0.5 <= result.ci_high
    assert result.asr < 0.75


def test_the_present_share_estimator_reads_the_skew_too(skewed) -> None:
    _, result = _score(LabelOnlyAttack, skewed, estimator="present-share")
    assert result.ci_low > result.chance


def test_bad_parameters_are_one_sentence(skewed) -> None:
    knowledge = AttackerKnowledge(shadows=skewed["shadows"])
    with pytest.raises(InvalidParameterError, match="'estimator' parameter of LabelOnlyAttack"):
        LabelOnlyAttack(estimator="oracle").fit(knowledge)
    with pytest.raises(InvalidParameterError, match="'val_fraction' parameter of LabelOnlyAttack"):
        LabelOnlyAttack(val_fraction=1.5).fit(knowledge)
    assert ATTACKS["label-only"] is LabelOnlyAttack


def test_the_histograms_follow_the_batches_emotions(skewed) -> None:
    """Per update, the inferred share of happy + sad is higher for women's updates than for men's."""
    attack, _ = _score(LabelOnlyAttack, skewed)
    target = skewed["target"][0]
    hist = attack.features({p: target.param(p, np.arange(target.n_updates)) for p in attack.required_parameters()})
    gender = target.ground_truth()["gender"]
    position = {int(c): i for i, c in enumerate(target.client_ids.tolist())}
    is_f = np.array([gender[position[int(c)]] == "F" for c in target.index["client_id"]])
    happy_sad = hist[:, 1] + hist[:, 2]
    assert np.allclose(hist.sum(axis=1), 1.0)
    assert happy_sad[is_f].mean() - happy_sad[~is_f].mean() > 0.3
