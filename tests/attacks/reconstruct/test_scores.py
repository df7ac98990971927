"""Reconstruction scores on hand-made cases whose answers are known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedaudit.attacks.reconstruct.scores import (
    UNITS,
    count_score,
    denormalize,
    feature_errors,
    feature_unit,
    fit_gender_classifier,
    gender_score,
    identification_score,
    match_score,
    match_vectors,
    normalization_stats,
    speaker_centroids,
    speaker_spread,
    wilson_interval,
)
from fedaudit.exceptions import InvalidParameterError


def test_hungarian_matching_beats_greedy_nearest():
    # greedy (each recovered vector to its nearest true one, in order) would give r0 -> t0 and r1 -> t1 poorly;
    # the optimal one-to-one matching is r0 -> t1, r1 -> t0
    true = np.array([[1.0, 0.0], [0.0, 1.0]])
    recovered = np.array([[0.8, 0.6], [1.0, -0.05]])
    m = match_vectors(recovered, true)
    assert m.rows.tolist() == [0, 1] and m.cols.tolist() == [1, 0]
    np.testing.assert_allclose(m.cosine, [0.6, 1.0 / np.hypot(1.0, 0.05)])
    np.testing.assert_allclose(m.nmse, [0.8**2 + 0.4**2, 0.05**2])


def test_matching_more_recovered_than_true_keeps_the_best_pairs():
    true = np.array([[1.0, 0.0, 0.0]])
    recovered = np.array([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]])
    m = match_vectors(recovered, true)
    assert m.rows.tolist() == [1] and m.cosine[0] == pytest.approx(1.0)


def test_match_score_against_chance_and_the_corpus_mean():
    rng = np.random.default_rng(0)
    true = [rng.normal(size=(4, 20)) for _ in range(30)]
    recovered = [t + 0.1 * rng.normal(size=t.shape) for t in true]
    others = [rng.normal(size=(50, 20)) for _ in range(30)]
    score = match_score(recovered, true, others=others, corpus_mean=np.full(20, 1e-3), seed=1)
    assert score.n_updates == 30 and score.n_pairs == 120
    assert score.mean_cosine > 0.99 and score.cosine_ci[0] > 0.98
    assert score.chance_cosine is not None and score.chance_cosine < 0.5
    assert score.share_above > 0.5 and score.chance_share_above == 0.0
    assert score.corpus_mean_nmse == pytest.approx(1.0, abs=0.01)
    json.dumps(score.to_dict())  # JSON form


def test_match_score_refuses_mismatched_lists():
    with pytest.raises(InvalidParameterError, match="one true set per recovered set"):
        match_score([np.zeros((1, 2))], [])


def _raw_table():
    """Two speakers, F0 mean in Hz and loudness; speaker A around 120 Hz, B around 220 Hz."""
    names = ["F0_sma_amean", "pcm_loudness_sma_amean", "F0_sma_maxPos"]
    x = np.array(
        [[110.0, 0.8, 10], [130.0, 1.0, 30], [210.0, 1.2, 20], [230.0, 1.4, 40]],
    )
    speakers = np.array(["A", "A", "B", "B"])
    return names, x, speakers


def test_errors_come_back_in_hertz_under_global_normalisation():
    names, x, speakers = _raw_table()
    mean, std = normalization_stats(x, speakers, method="global", train_mask=np.ones(4, bool))
    z = (x - mean) / std
    np.testing.assert_allclose(denormalize(z, mean=mean, std=std), x)
    recovered = z.copy()
    recovered[:, 0] += 0.1  # 0.1 standard deviations of F0 mean: 0.1 * std(F0) Hz
    errs = feature_errors(recovered, z, names=names, std=std, spread=speaker_spread(x, speakers))
    f0 = errs.by_name("F0_sma_amean")
    assert f0.unit == "Hz"
    assert f0.median == pytest.approx(0.1 * x[:, 0].std())
    assert f0.p90 == pytest.approx(0.1 * x[:, 0].std())
    assert f0.spread == pytest.approx(np.std([120.0, 220.0], ddof=1))
    assert errs.by_name("pcm_loudness_sma_amean").median == pytest.approx(0.0, abs=1e-12)
    # exactly recovered features rank first, F0 last
    assert errs.features[-1].name == "F0_sma_amean"
    json.dumps(errs.to_dict())


def test_errors_under_per_speaker_normalisation_use_each_speakers_scale():
    names, x, speakers = _raw_table()
    mean, std = normalization_stats(x, speakers, method="speaker")
    z = (x - mean) / std
    np.testing.assert_allclose(z[:, 0], [-1, 1, -1, 1])  # each speaker's F0 std is 10 Hz
    recovered = z + np.array([0.5, 0.0, 0.0])
    errs = feature_errors(
        recovered, z, names=names, std=std, spread=speaker_spread(x, speakers), normalization="speaker"
    )
    assert errs.by_name("F0_sma_amean").median == pytest.approx(5.0)  # 0.5 * 10 Hz
    assert errs.normalization == "speaker"


def test_units_follow_the_functional():
    assert feature_unit("F0_sma_amean") == "Hz"
    assert feature_unit("F0env_sma_quartile1") == "Hz"
    assert feature_unit("F0_sma_linregc1") == "Hz/frame"
    assert feature_unit("F0_sma_linregerrQ") == "(Hz)^2"
    assert feature_unit("F0_sma_de_amean") == "Hz/frame"
    assert feature_unit("F0_sma_maxPos") == "frame"
    assert feature_unit("mfcc_sma[3]_skewness") == "1"
    assert feature_unit("pcm_loudness_sma_amean") == "1"  # (I / I0)^0.3: not dB
    assert feature_unit("pcm_intensity_sma_max") == "FS^2"  # mean squared sample: not dB
    assert feature_unit("lspFreq_sma[2]_max") == "rad/sample"
    assert feature_unit("pcm_zcr_sma_de_linregc1") == "1/sample/frame^2"
    assert not any("dB" in unit for _, unit, _ in UNITS)
    with pytest.raises(InvalidParameterError, match="No unit is known"):
        feature_unit("jitterLocal_sma_amean")


def test_every_emobase_feature_has_a_unit():
    from fedaudit.data.features import feature_names

    assert all(feature_unit(n) for n in feature_names("emobase"))


def test_identification_rate_with_chance_and_interval():
    centroids = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    speakers = np.array(["s0", "s1", "s2", "s3"])
    recovered = np.array([[1.0, 1.0], [9.0, 1.0], [1.0, 9.0], [9.0, 9.0], [6.0, 1.0]])
    truth = np.array(["s0", "s1", "s2", "s3", "s0"])  # the last one lands nearer s1
    score = identification_score(recovered, truth, speakers=speakers, centroids=centroids)
    assert (score.successes, score.n) == (4, 5)
    assert score.rate == pytest.approx(0.8) and score.chance == pytest.approx(0.25)
    assert score.ci == pytest.approx(wilson_interval(4, 5))
    assert 0 < score.p_value < 0.05
    ids, cents = speaker_centroids(np.array([[0.0], [2.0], [10.0]]), ["b", "b", "a"])
    assert ids.tolist() == ["a", "b"] and cents[:, 0].tolist() == [10.0, 1.0]


def test_wilson_interval_known_values():
    assert wilson_interval(0, 10)[0] == 0.0
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)


def test_gender_rate_under_a_public_classifier_per_reconstruction_and_per_client():
    rng = np.random.default_rng(0)
    public = rng.normal(size=(200, 5))
    gender = np.where(public[:, 0] > 0, "F", "M")
    clf = fit_gender_classifier(public, gender)
    recovered = np.array([[2.0, 0, 0, 0, 0], [-2.0, 0, 0, 0, 0], [2.0, 0, 0, 0, 0], [-2.0, 0, 0, 0, 0]])
    truth = np.array(["F", "M", "M", "M"])
    flat = gender_score(recovered, truth, classifier=clf)
    assert (flat.successes, flat.n, flat.chance) == (3, 4, 0.5)
    per_client = gender_score(recovered, truth, classifier=clf, client_id=[0, 0, 1, 1])
    assert per_client.unit == "client" and per_client.n == 2 and per_client.rate == pytest.approx(0.75)
    with pytest.raises(InvalidParameterError, match="both genders"):
        fit_gender_classifier(public, np.full(200, "F"))


def test_label_count_recovery():
    true = np.array([[5, 5, 5, 5], [20, 0, 0, 0], [1, 2, 3, 4]])
    est = np.array([[5, 5, 5, 5], [18, 2, 0, 0], [1, 2, 3, 4]])
    score = count_score(est, true)
    assert score.exact_rate == pytest.approx(2 / 3)
    assert score.mae == pytest.approx((0 + 1.0 + 0) / 3)
    assert score.baseline_exact_rate == pytest.approx(1 / 3)  # the even split is right for the first only
    even = np.array([[5, 5, 5, 5], [5, 5, 5, 5], [3, 3, 2, 2]])
    assert score.baseline_mae == pytest.approx(np.abs(even - true).mean())
    with pytest.raises(InvalidParameterError, match="one shape"):
        count_score(est[:, :3], true)
