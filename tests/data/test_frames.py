"""Frame-level features (mfcc-frames): frame counts, padding, cache, table invariants, normalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from fedaudit.data.demo import load_demo
from fedaudit.data.features import DEFAULT_FRAMES, FEATURE_SETS, extract_features, pad_frames
from fedaudit.data.normalize import normalize_features
from fedaudit.data.table import CORPUS_COLUMNS, EMOTIONS, FeatureTable
from fedaudit.exceptions import CorpusError, InvalidParameterError


def _tone(seconds: float, rate: int, freq: float = 220.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    rng = np.random.default_rng(int(freq))
    return (amp * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def _corpus(tmp_path: Path, signals: list[tuple[np.ndarray, int]]) -> pd.DataFrame:
    rows = []
    for i, (sig, rate) in enumerate(signals):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, sig, rate, subtype="FLOAT")
        rows.append(dict(utterance_id=f"u{i}", path=str(path), speaker_id=f"s{i % 2}", gender="FM"[i % 2],
                         emotion=EMOTIONS[i % 4], corpus="toy"))
    return pd.DataFrame(rows, columns=list(CORPUS_COLUMNS))


def _frame_table(lengths: list[int], *, n_frames: int = 6, dim: int = 3, seed: int = 0) -> FeatureTable:
    rng = np.random.default_rng(seed)
    frames = [rng.normal(3.0, 2.0, size=(n, dim)) for n in lengths]
    x, lens = pad_frames(frames, n_frames)
    n = len(lengths)
    return FeatureTable(
        x=x, utterance_id=np.array([f"u{i}" for i in range(n)]), speaker_id=np.array([f"s{i % 2}" for i in range(n)]),
        gender=np.array(["FM"[i % 2] for i in range(n)]), emotion=np.array([EMOTIONS[i % 4] for i in range(n)]),
        corpus=np.array(["toy"] * n), feature_set="mfcc-frames", frame_shape=(n_frames, dim), lengths=lens,
    )


def test_frame_count_of_a_known_duration_at_any_rate(tmp_path: Path) -> None:
    """20 ms frames with a 20 ms step: 1 s gives 50 frames, 0.5 s gives 25, also at 22.05 kHz."""
    corpus = _corpus(tmp_path, [(_tone(1.0, 16_000), 16_000), (_tone(0.5, 16_000, 330.0), 16_000),
                                (_tone(1.0, 22_050, 440.0), 22_050)])

    table = extract_features(corpus, feature_set="mfcc-frames", n_jobs=1, n_frames=80)

    assert table.frame_shape == (80, 13)
    assert table.x.shape == (3, 80 * 13)
    assert table.lengths.tolist() == [50, 25, 50]
    assert table.feature_names[:2] == ("t000_mfcc0", "t000_mfcc1")
    assert len(table.feature_names) == 80 * 13
    frames = table.frames()
    assert np.all(frames[0, 50:] == 0) and np.all(np.abs(frames[0, :50]).sum(axis=1) > 0)


def test_padding_and_truncation_follow_n_frames(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path, [(_tone(1.0, 16_000), 16_000), (_tone(0.4, 16_000, 300.0), 16_000)])

    long = extract_features(corpus, feature_set="mfcc-frames", n_jobs=1, n_frames=60)
    short = extract_features(corpus, feature_set="mfcc-frames", n_jobs=1, n_frames=30)

    assert long.lengths.tolist() == [50, 20]
    assert short.lengths.tolist() == [30, 20]
    np.testing.assert_array_equal(short.frames()[0], long.frames()[0, :30])  # truncation keeps the first frames
    assert np.all(long.frames()[1, 20:] == 0)
    # Re-padding a table gives what extraction at that length gives.
    np.testing.assert_array_equal(long.with_frames(30).x, short.x)
    assert long.with_frames(30).feature_names == short.feature_names


def test_level_normalisation_removes_the_recording_gain(tmp_path: Path) -> None:
    sig = _tone(0.6, 16_000)
    corpus = _corpus(tmp_path, [(sig, 16_000), (sig * 0.05, 16_000)])

    table = extract_features(corpus, feature_set="mfcc-frames", n_jobs=1, n_frames=40)

    np.testing.assert_allclose(table.frames()[0], table.frames()[1], atol=1e-3)


def test_leading_and_trailing_digital_silence_is_trimmed(tmp_path: Path) -> None:
    sig = np.concatenate([np.zeros(3200, np.float32), _tone(0.5, 16_000), np.zeros(6400, np.float32)])
    corpus = _corpus(tmp_path, [(sig, 16_000)])

    table = extract_features(corpus, feature_set="mfcc-frames", n_jobs=1, n_frames=60)

    assert 25 <= table.lengths[0] <= 27  # 0.5 s of tone, plus at most the frames it straddles


def test_the_cache_keeps_every_frame_and_serves_another_length(tmp_path: Path, monkeypatch) -> None:
    corpus = _corpus(tmp_path, [(_tone(1.0, 16_000), 16_000), (_tone(0.3, 16_000, 500.0), 16_000)])
    cache = tmp_path / "cache"
    first = extract_features(corpus, feature_set="mfcc-frames", n_jobs=1, cache_dir=cache, n_frames=20)
    cached = sorted((cache / "mfcc-frames").rglob("*.npy"))
    assert [np.load(f).shape for f in cached] and {np.load(f).shape for f in cached} == {(50, 13), (15, 13)}

    from fedaudit.data import features as F

    def boom(*args, **kwargs):
        raise AssertionError("extracted although cached")

    monkeypatch.setattr(F, "_run_parallel", lambda fs, todo, n: boom() if todo else iter(()))
    second = extract_features(corpus, feature_set="mfcc-frames", n_jobs=1, cache_dir=cache, n_frames=50)

    assert second.lengths.tolist() == [50, 15]
    np.testing.assert_array_equal(second.with_frames(20).x, first.x)


def test_n_frames_is_refused_for_utterance_level_sets(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path, [(_tone(0.5, 16_000), 16_000)])
    with pytest.raises(InvalidParameterError, match="applies to frame-level feature sets"):
        extract_features(corpus, feature_set="mfcc", n_jobs=1, n_frames=10)
    with pytest.raises(InvalidParameterError, match="'n_frames'"):
        extract_features(corpus, feature_set="mfcc-frames", n_jobs=1, n_frames=0)


def test_registry_marks_frame_level_sets() -> None:
    assert FEATURE_SETS["mfcc-frames"].frame_level and FEATURE_SETS["mfcc-frames"].n_features == 13
    assert not FEATURE_SETS["mfcc"].frame_level


# --------------------------------------------------------------------------- FeatureTable


def test_table_checks_frame_shape_lengths_and_zero_padding() -> None:
    table = _frame_table([2, 6, 4])
    with pytest.raises(CorpusError, match="needs 18"):
        FeatureTable(**{**_fields(table), "frame_shape": (6, 3), "x": table.x[:, :-1]})
    with pytest.raises(CorpusError, match="one length per row"):
        FeatureTable(**{**_fields(table), "lengths": None})
    with pytest.raises(CorpusError, match=r"in \[1, 6\]"):
        FeatureTable(**{**_fields(table), "lengths": np.array([2, 7, 4])})
    with pytest.raises(CorpusError, match="must be all zero"):
        FeatureTable(**{**_fields(table), "lengths": np.array([1, 6, 4])})
    with pytest.raises(CorpusError, match="no frame_shape"):
        FeatureTable(**{**_fields(table), "frame_shape": None, "lengths": np.array([2, 6, 4])})


def _fields(table: FeatureTable) -> dict:
    return {name: getattr(table, name) for name in table.__dataclass_fields__}


def test_subset_concat_with_x_keep_frames() -> None:
    table = _frame_table([2, 6, 4, 5])

    sub = table.subset(np.array([2, 0]))
    both = FeatureTable.concat([sub, table.subset(np.array([1]))])
    same = table.with_x(table.x * 2)

    assert sub.frame_shape == (6, 3) and sub.lengths.tolist() == [4, 2]
    assert both.lengths.tolist() == [4, 2, 6]
    assert same.frame_shape == (6, 3) and same.lengths.tolist() == [2, 6, 4, 5]
    with pytest.raises(CorpusError, match="different frame shapes"):
        FeatureTable.concat([table, table.with_frames(7)])


@pytest.mark.parametrize("compress", [True, False])
def test_save_load_round_trip_keeps_frames_and_zero_padding(tmp_path: Path, compress: bool) -> None:
    table = _frame_table([2, 6, 4, 1])
    path = str(tmp_path / "frames.npz")

    table.save(path, compress_x=compress)
    back = FeatureTable.load(path)

    assert back.frame_shape == (6, 3)
    assert back.lengths.tolist() == [2, 6, 4, 1]
    assert np.all(back.frames()[~back.frame_mask()] == 0)
    np.testing.assert_allclose(back.x, table.x, atol=0 if not compress else 5e-3)


# --------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize("method", ["global", "speaker"])
def test_normalisation_is_per_coefficient_over_valid_frames_and_keeps_zeros(method: str) -> None:
    table = _frame_table([2, 6, 4, 5, 3, 6], seed=1)
    train = np.array([True, True, True, True, False, False])

    out = normalize_features(table, method=method, train_mask=train)

    frames, valid = out.frames(), out.frame_mask()
    assert np.all(frames[~valid] == 0)
    groups = [train] if method == "global" else [table.speaker_id == s for s in ("s0", "s1")]
    for rows in groups:
        v = frames[rows][valid[rows]].astype(np.float64)
        np.testing.assert_allclose(v.mean(axis=0), 0.0, atol=1e-5)
        np.testing.assert_allclose(v.std(axis=0), 1.0, atol=1e-5)
    # Statistics over valid frames only: the zeros of padding did not pull the mean down.
    raw = table.frames()[train][table.frame_mask()[train]]
    expected = (table.frames()[4, :3] - raw.mean(axis=0)) / raw.std(axis=0)
    if method == "global":
        np.testing.assert_allclose(frames[4, :3], expected, atol=1e-5)


def test_shipped_demo_frames_align_with_the_emobase_rows() -> None:
    frames = load_demo("demo-private", feature_set="mfcc-frames")
    emobase = load_demo("demo-private")

    assert frames.frame_shape == (DEFAULT_FRAMES, 13)
    assert frames.utterance_id.tolist() == emobase.utterance_id.tolist()
    assert frames.lengths.min() >= 50  # every demo utterance lasts more than a second of speech
    assert load_demo("demo-shadow", feature_set="mfcc-frames", n_frames=100).frame_shape == (100, 13)
