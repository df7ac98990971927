"""A small synthetic frame table (zero-padded sequences) for model and simulator tests."""

from __future__ import annotations

import numpy as np

from fedaudit.data.features import pad_frames
from fedaudit.data.table import EMOTIONS, FeatureTable


def frame_table(n_speakers: int = 8, per_speaker: int = 12, *, n_frames: int = 10, n_coefs: int = 5,
                seed: int = 0) -> FeatureTable:
    """Sequences of 4..n_frames frames whose coefficient 0 carries emotion and coefficient 1 gender."""
    rng = np.random.default_rng(seed)
    n = n_speakers * per_speaker
    speakers = np.repeat([f"spk{i:02d}" for i in range(n_speakers)], per_speaker)
    gender = np.repeat(["F" if i % 2 else "M" for i in range(n_speakers)], per_speaker)
    emotion = np.tile(np.resize(EMOTIONS, per_speaker), n_speakers)
    frames = []
    for i in range(n):
        f = rng.normal(size=(int(rng.integers(4, n_frames + 1)), n_coefs))
        f[:, 0] += 1.5 * EMOTIONS.index(emotion[i])
        f[:, 1] += 2.0 * (gender[i] == "F")
        frames.append(f)
    x, lengths = pad_frames(frames, n_frames)
    return FeatureTable(
        x=x, utterance_id=np.array([f"u{i:04d}" for i in range(n)]), speaker_id=speakers, gender=gender,
        emotion=emotion, corpus=np.array(["synthetic-frames"] * n), feature_set="synthetic-frames",
        frame_shape=(n_frames, n_coefs), lengths=lengths,
    )
