"""Shared small fixtures: a synthetic feature table and a tiny recording."""

from __future__ import annotations

import numpy as np
import pytest

from fedaudit.data.table import EMOTIONS, FeatureTable


def make_table(n_speakers: int = 10, per_speaker: int = 16, n_features: int = 12, seed: int = 0) -> FeatureTable:
    """Features whose first columns carry emotion and gender signal."""
    rng = np.random.default_rng(seed)
    speakers = np.repeat([f"spk{i:02d}" for i in range(n_speakers)], per_speaker)
    gender = np.repeat(["F" if i % 2 else "M" for i in range(n_speakers)], per_speaker)
    emotion = np.tile(np.repeat(EMOTIONS, per_speaker // 4), n_speakers)
    x = rng.normal(size=(len(speakers), n_features)).astype(np.float32)
    x[:, 0] += 2.0 * np.array([EMOTIONS.index(e) for e in emotion])
    x[:, 1] += 3.0 * (gender == "F")
    return FeatureTable(
        x=x,
        utterance_id=np.array([f"u{i:04d}" for i in range(len(speakers))]),
        speaker_id=speakers,
        gender=gender,
        emotion=emotion,
        corpus=np.array(["synthetic"] * len(speakers)),
        feature_set="synthetic",
    )


@pytest.fixture
def small_table() -> FeatureTable:
    return make_table()
