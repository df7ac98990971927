"""A corpus folder with many bad audio files: one summary warning, every file in the log, a stated policy."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from fedaudit.data.features import LISTED_SKIPPED, MIN_SAMPLING_RATE, extract_features
from fedaudit.data.table import CORPUS_COLUMNS
from fedaudit.exceptions import AudioFormatWarning, SkippedAudioWarning


def _tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * np.random.default_rng(0).normal(size=t.size)).astype(np.float32)


def _table(paths: list[Path]) -> pd.DataFrame:
    rows = [dict(utterance_id=f"u{i}", path=str(p), speaker_id=f"s{i % 2}", gender="FM"[i % 2],
                 emotion=("neutral", "happy", "sad", "angry")[i % 4], corpus="toy") for i, p in enumerate(paths)]
    return pd.DataFrame(rows, columns=list(CORPUS_COLUMNS))


def test_many_bad_files_give_one_warning_naming_the_first_and_a_count(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    bad = []
    for i in range(LISTED_SKIPPED + 3):
        path = tmp_path / f"bad{i}.wav"
        path.write_bytes(b"RIFF garbage" * i)
        bad.append(path)
    low = tmp_path / "low.wav"
    sf.write(low, _tone(0.5, 4000), 4000)  # below the rate the policy accepts
    stereo = tmp_path / "stereo8k.wav"
    sf.write(stereo, np.stack([_tone(0.5, 8000), _tone(0.5, 8000)], axis=1), 8000)
    mono = [tmp_path / f"mono{i}.wav" for i in range(2)]
    for path in mono:
        sf.write(path, _tone(0.5, 16000), 16000)
    with caplog.at_level(logging.WARNING, logger="fedaudit.data.features"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            feats = extract_features(_table([*bad, low, stereo, *mono]), feature_set="mfcc", n_jobs=1)
    ours = [w for w in caught if issubclass(w.category, SkippedAudioWarning | AudioFormatWarning)]
    assert len(ours) == 1 and issubclass(ours[0].category, SkippedAudioWarning)
    message = str(ours[0].message)
    assert f"Skipped {len(bad) + 1} of {len(bad) + 4} audio files" in message
    assert all(str(p) in message for p in bad[:LISTED_SKIPPED]) and str(bad[-1]) not in message
    assert "and 4 more, all listed in the log" in message
    assert "1 had several channels and were mixed down to mono" in message and "1 at 8000 Hz" in message
    logged = caplog.text
    assert all(str(p) in logged for p in [*bad, low]) and f"below {MIN_SAMPLING_RATE} Hz" in logged
    assert len(feats) == 3


def test_a_converted_file_without_skips_is_said_once(tmp_path: Path) -> None:
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([_tone(0.5, 16000), _tone(0.5, 16000)], axis=1), 16000)
    with pytest.warns(AudioFormatWarning, match="2 audio files read, 2 had several channels and were mixed down"):
        extract_features(_table([stereo, stereo]), feature_set="mfcc", n_jobs=1)
