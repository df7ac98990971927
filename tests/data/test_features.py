"""Tests of fedaudit.data.features: shapes, order, cache, bad audio, parallel runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from fedaudit.data import features as F
from fedaudit.data.features import FEATURE_SETS, extract_features, feature_names
from fedaudit.data.table import CORPUS_COLUMNS
from fedaudit.exceptions import FeatureError, InvalidParameterError, SkippedAudioWarning

HAVE_ESPEAK = shutil.which("espeak-ng") is not None


# --------------------------------------------------------------------------- helpers


def _sine(seconds: float, rate: int, freq: float = 220.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _noise(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(int(seconds * rate))
    return (0.1 * noise).astype(np.float32)


def _table(paths: list[Path], corpus: str = "toy") -> pd.DataFrame:
    rows = [
        dict(
            utterance_id=f"u{i}",
            path=str(p),
            speaker_id=f"s{i % 2}",
            gender="FM"[i % 2],
            emotion=("neutral", "happy", "sad", "angry")[i % 4],
            corpus=corpus,
        )
        for i, p in enumerate(paths)
    ]
    return pd.DataFrame(rows, columns=list(CORPUS_COLUMNS))


@pytest.fixture
def good_wavs(tmp_path: Path) -> list[Path]:
    """Four readable files: sines and noise at 16 and 22.05 kHz, one stereo."""
    files = []
    for i, (sig, rate) in enumerate(
        [
            (_sine(0.8, 16_000, 220.0), 16_000),
            (_noise(0.6, 22_050, seed=1), 22_050),
            (_sine(1.0, 22_050, 440.0) + _noise(1.0, 22_050, seed=2), 22_050),
            (np.stack([_sine(0.5, 16_000, 150.0), _noise(0.5, 16_000, seed=3)], axis=1), 16_000),
        ]
    ):
        path = tmp_path / "audio" / f"good{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, sig, rate)
        files.append(path)
    return files


@pytest.fixture
def count_extractions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the path of every file actually extracted in this process (n_jobs=1)."""
    calls: list[str] = []
    original = F._extract_one

    def counting(feature_set: str, path: str) -> tuple[np.ndarray | None, str]:
        calls.append(path)
        return original(feature_set, path)

    monkeypatch.setattr(F, "_extract_one", counting)
    return calls


# --------------------------------------------------------------------------- shapes


def test_registry_dimensions_match_extractors() -> None:
    assert set(FEATURE_SETS) == {"emobase", "egemaps", "compare", "mfcc", "mfcc-frames"}
    for name in ("emobase", "egemaps", "mfcc", "mfcc-frames"):
        assert len(feature_names(name)) == FEATURE_SETS[name].n_features
    assert FEATURE_SETS["emobase"].n_features == 988
    assert FEATURE_SETS["egemaps"].n_features == 88


def test_emobase_shape_dtype_and_row_order(good_wavs: list[Path]) -> None:
    table = _table(good_wavs)[::-1].reset_index(drop=True)  # order must follow the table

    feats = extract_features(table, feature_set="emobase", n_jobs=1)

    assert feats.x.shape == (4, 988)
    assert feats.x.dtype == np.float32
    assert np.isfinite(feats.x).all()
    assert feats.utterance_id.tolist() == table["utterance_id"].tolist()
    assert feats.gender.tolist() == table["gender"].tolist()
    assert feats.feature_set == "emobase"
    assert len(feats.feature_names) == 988


def test_mfcc_shape_and_content(good_wavs: list[Path]) -> None:
    feats = extract_features(_table(good_wavs), feature_set="mfcc", n_jobs=1)

    assert feats.x.shape == (4, 104)
    assert feats.feature_names[:2] == ("mfcc0_mean", "mfcc0_std")
    assert np.isfinite(feats.x).all()
    # A pure sine and white noise have clearly different spectra.
    assert not np.allclose(feats.x[0], feats.x[1], rtol=0.1)
    # Stats are ordered: min <= mean <= max for every coefficient.
    stats = feats.x.reshape(4, 26, 4)
    mean, low, high = stats[..., 0], stats[..., 2], stats[..., 3]
    assert (low <= mean + 1e-5).all() and (mean <= high + 1e-5).all()


def test_mfcc_resamples_to_16k(tmp_path: Path) -> None:
    """The same tone at 16 and 48 kHz gives nearly the same MFCC means."""
    from scipy.signal import resample_poly

    at_16k = _sine(1.0, 16_000, 300.0) + 0.05 * _noise(1.0, 16_000)
    at_48k = resample_poly(at_16k, 3, 1).astype(np.float32)  # same content, band-limited to 8 kHz
    paths = [tmp_path / "tone16k.wav", tmp_path / "tone48k.wav"]
    sf.write(paths[0], at_16k, 16_000)
    sf.write(paths[1], at_48k, 48_000)

    x = extract_features(_table(paths), feature_set="mfcc", n_jobs=1).x

    means = x[:, 0:52:4]  # mean of each MFCC
    np.testing.assert_allclose(means[0], means[1], atol=0.2)
    assert np.abs(means[0]).max() > 1.0  # not trivially all zero


@pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng is not installed")
def test_emobase_on_espeak_speech(tmp_path: Path) -> None:
    path = tmp_path / "speech.wav"
    cmd = ["espeak-ng", "-v", "en-us+f2", "-w", str(path), "The quick brown fox."]
    subprocess.run(cmd, check=True)

    feats = extract_features(_table([path]), feature_set="emobase", n_jobs=1)

    assert feats.x.shape == (1, 988)
    names = list(feats.feature_names)
    f0_mean = feats.x[0, names.index("F0_sma_amean")]
    assert 120 < f0_mean < 350  # espeak's f2 variant speaks around 190 Hz


def test_parallel_equals_serial(good_wavs: list[Path], tmp_path: Path) -> None:
    paths = good_wavs * 3
    table = _table(paths)
    table["utterance_id"] = [f"u{i}" for i in range(len(table))]

    serial = extract_features(table, feature_set="mfcc", n_jobs=1)
    parallel = extract_features(table, feature_set="mfcc", n_jobs=2)

    np.testing.assert_allclose(serial.x, parallel.x, rtol=1e-6)
    assert serial.utterance_id.tolist() == parallel.utterance_id.tolist()


def test_progress_reaches_total(good_wavs: list[Path]) -> None:
    seen: list[tuple[int, int]] = []

    extract_features(
        _table(good_wavs), feature_set="mfcc", n_jobs=1, progress=lambda d, n: seen.append((d, n))
    )

    assert seen[-1] == (4, 4)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


# --------------------------------------------------------------------------- cache


def test_second_run_extracts_nothing_and_changed_file_is_redone(
    good_wavs: list[Path], tmp_path: Path, count_extractions: list[str]
) -> None:
    cache = tmp_path / "cache"
    table = _table(good_wavs)

    first = extract_features(table, feature_set="mfcc", cache_dir=cache, n_jobs=1)
    assert len(count_extractions) == 4
    cached_files = sorted((cache / "mfcc" / "toy").glob("*.npy"))
    assert len(cached_files) == 4

    count_extractions.clear()
    second = extract_features(table, feature_set="mfcc", cache_dir=cache, n_jobs=1)
    assert count_extractions == []
    np.testing.assert_array_equal(first.x, second.x)

    # Rewrite one file with other audio and a later mtime: only it is extracted again.
    changed = good_wavs[2]
    sf.write(changed, _sine(1.2, 22_050, 660.0), 22_050)
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = extract_features(table, feature_set="mfcc", cache_dir=cache, n_jobs=1)
    assert count_extractions == [str(changed)]
    assert not np.allclose(third.x[2], first.x[2])
    np.testing.assert_array_equal(third.x[[0, 1, 3]], first.x[[0, 1, 3]])


def test_cache_is_keyed_by_feature_set_and_corpus(
    good_wavs: list[Path], tmp_path: Path, count_extractions: list[str]
) -> None:
    cache = tmp_path / "cache"
    for corpus, feature_set in (("a", "mfcc"), ("b", "mfcc"), ("a", "egemaps")):
        table = _table(good_wavs[:2], corpus=corpus)
        extract_features(table, feature_set=feature_set, cache_dir=cache, n_jobs=1)

    assert len(count_extractions) == 6
    folders = {p.relative_to(cache).parts[:2] for p in cache.rglob("*.npy")}
    assert folders == {("mfcc", "a"), ("mfcc", "b"), ("egemaps", "a")}


def test_parallel_run_reads_the_cache(good_wavs: list[Path], tmp_path: Path) -> None:
    """Overwrite the cached vectors with a sentinel: a cached run must return it."""
    cache = tmp_path / "cache"
    table = _table(good_wavs)
    extract_features(table, feature_set="mfcc", cache_dir=cache, n_jobs=2)
    files = list(cache.rglob("*.npy"))
    assert len(files) == 4
    for f in files:
        np.save(f, np.full(104, 7.0, dtype=np.float32))

    again = extract_features(table, feature_set="mfcc", cache_dir=cache, n_jobs=2)

    assert (again.x == 7.0).all()
    assert not list(cache.rglob(".tmp-*"))  # no temporary files left behind


def test_corrupt_cache_file_is_extracted_again(
    good_wavs: list[Path], tmp_path: Path, count_extractions: list[str]
) -> None:
    cache = tmp_path / "cache"
    table = _table(good_wavs[:1])
    first = extract_features(table, feature_set="mfcc", cache_dir=cache, n_jobs=1)
    (cached,) = cache.rglob("*.npy")
    cached.write_bytes(b"not a numpy file")
    count_extractions.clear()

    again = extract_features(table, feature_set="mfcc", cache_dir=cache, n_jobs=1)

    assert len(count_extractions) == 1
    np.testing.assert_array_equal(first.x, again.x)


# --------------------------------------------------------------------------- bad audio


def _bad_files(root: Path) -> list[Path]:
    empty = root / "empty.wav"
    empty.write_bytes(b"")
    garbage = root / "garbage.wav"
    garbage.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(20))  # truncated header
    short = root / "short.wav"
    sf.write(short, _sine(0.05, 16_000), 16_000)
    no_frames = root / "noframes.wav"
    sf.write(no_frames, np.zeros(0, dtype=np.float32), 16_000)
    return [empty, garbage, short, no_frames]


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_bad_audio_is_skipped_with_one_warning(
    good_wavs: list[Path], tmp_path: Path, n_jobs: int
) -> None:
    bad = _bad_files(tmp_path)
    missing = tmp_path / "does-not-exist.wav"
    paths = [good_wavs[0], *bad, good_wavs[1], missing]
    table = _table(paths)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        feats = extract_features(
            table, feature_set="mfcc", n_jobs=n_jobs, cache_dir=tmp_path / "cache"
        )

    skipped = [w for w in caught if issubclass(w.category, SkippedAudioWarning)]
    assert len(skipped) == 1
    message = str(skipped[0].message)
    assert "Skipped 5 of 7 audio files" in message
    assert str(bad[0]) in message  # the first skipped file is named
    assert feats.utterance_id.tolist() == ["u0", "u5"]
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 2  # failures are not cached


def test_non_finite_features_drop_the_row(
    good_wavs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    class NanForShortFiles:
        names = ("a", "b")
        version = "test"

        def __call__(self, signal: np.ndarray, sampling_rate: int) -> np.ndarray:
            bad = signal.size / sampling_rate < 0.7
            return np.array([1.0, np.nan if bad else 2.0])

    monkeypatch.setitem(F._EXTRACTORS, "mfcc", NanForShortFiles())

    with pytest.warns(SkippedAudioWarning, match="Skipped 2 of 4") as record:
        feats = extract_features(_table(good_wavs), feature_set="mfcc", n_jobs=1)

    assert len(record) == 1
    assert feats.utterance_id.tolist() == ["u0", "u2"]
    assert "non-finite" in str(record[0].message)


def test_all_files_failing_raises(tmp_path: Path) -> None:
    table = _table(_bad_files(tmp_path))

    with pytest.raises(FeatureError, match=r"No features could be extracted from any of the 4 "):
        extract_features(table, feature_set="mfcc", n_jobs=1)


# --------------------------------------------------------------------------- parameters


def test_unknown_feature_set_lists_the_choices(good_wavs: list[Path]) -> None:
    expected = r"must be one of \['compare', 'egemaps', 'emobase', 'mfcc', 'mfcc-frames'\]. Got 'mfc' instead"
    with pytest.raises(InvalidParameterError, match=expected):
        extract_features(_table(good_wavs), feature_set="mfc")


@pytest.mark.parametrize("n_jobs", [0, -1, 1.5, True])
def test_bad_n_jobs(good_wavs: list[Path], n_jobs: object) -> None:
    with pytest.raises(InvalidParameterError, match="'n_jobs' parameter of extract_features"):
        extract_features(_table(good_wavs), feature_set="mfcc", n_jobs=n_jobs)  # type: ignore


def test_empty_table_raises() -> None:
    with pytest.raises(FeatureError, match="no rows"):
        extract_features(pd.DataFrame(columns=list(CORPUS_COLUMNS)), feature_set="mfcc")
