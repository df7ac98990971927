from __future__ import annotations

import numpy as np
import pytest

from fedaudit.data.clients import speaker_folds, split_clients
from fedaudit.data.normalize import normalize_features, speaker_znorm
from fedaudit.exceptions import CorpusError, InvalidParameterError
from tests.conftest import make_table


def test_speaker_znorm_gives_each_speaker_zero_mean_unit_std() -> None:
    table = make_table()
    x = table.x * 5 + 3
    z = speaker_znorm(x, table.speaker_id)
    for spk in table.speakers:
        rows = table.speaker_id == spk
        np.testing.assert_allclose(z[rows].mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(z[rows].std(axis=0), 1, atol=1e-4)


def test_speaker_znorm_removes_a_per_speaker_offset() -> None:
    # A gender offset constant within each speaker is exactly what per-speaker z-norm erases.
    table = make_table()
    z = normalize_features(table, method="speaker").x
    female = table.gender == "F"
    assert abs(z[female, 1].mean() - z[~female, 1].mean()) < 1e-5
    assert abs(table.x[female, 1].mean() - table.x[~female, 1].mean()) > 2.0


def test_global_standardisation_uses_training_rows_only() -> None:
    table = make_table()
    train = np.zeros(len(table), bool)
    train[:80] = True
    out = normalize_features(table, method="global", train_mask=train).x
    np.testing.assert_allclose(out[train].mean(axis=0), 0, atol=1e-5)
    assert np.abs(out[~train].mean(axis=0)).max() > 1e-3  # held-out rows are not re-centred on themselves


def test_constant_features_do_not_produce_nan() -> None:
    table = make_table()
    x = table.x.copy()
    x[:, 3] = 7.0
    for method in ("global", "speaker"):
        out = normalize_features(table.with_x(x), method=method, train_mask=np.ones(len(table), bool)).x
        assert np.isfinite(out).all() and np.all(out[:, 3] == 0)


def test_unknown_normalisation_is_rejected() -> None:
    with pytest.raises(InvalidParameterError, match="'zscore'"):
        normalize_features(make_table(), method="zscore")


def test_folds_are_speaker_disjoint_and_gender_balanced() -> None:
    table = make_table(n_speakers=20)
    folds = speaker_folds(table, n_folds=5, seed=0)
    flat = [s for f in folds for s in f]
    assert sorted(flat) == sorted(table.speakers)
    gender = dict(zip(table.speaker_id, table.gender))
    for fold in folds:
        assert {gender[s] for s in fold} == {"F", "M"}
    assert folds == speaker_folds(table, n_folds=5, seed=0)
    assert folds != speaker_folds(table, n_folds=5, seed=1)


def test_split_clients_partitions_training_speakers() -> None:
    table = make_table(n_speakers=10, per_speaker=40)
    split = split_clients(table, n_folds=5, fold=1, clients_per_speaker=4, val_fraction=0.2, seed=0)
    assert len(split.clients) == 8 * 4
    rows = np.concatenate([np.r_[c.train_rows, c.val_rows] for c in split.clients])
    assert len(rows) == len(np.unique(rows)) == 8 * 40
    assert not set(rows) & set(split.test_rows.tolist())
    assert set(table.speaker_id[split.test_rows]) == set(split.test_speakers)
    for c in split.clients:
        assert len(c.val_rows) == 2 and len(c.train_rows) == 8
        assert set(table.speaker_id[c.train_rows]) == {c.speaker_id}


def test_too_many_clients_per_speaker_is_a_clear_error() -> None:
    with pytest.raises(CorpusError, match="clients_per_speaker"):
        split_clients(make_table(per_speaker=8), clients_per_speaker=5)


def test_too_few_speakers_for_folds_is_a_clear_error() -> None:
    with pytest.raises(CorpusError, match="too few for 5"):
        speaker_folds(make_table(n_speakers=3), n_folds=5, seed=0)
