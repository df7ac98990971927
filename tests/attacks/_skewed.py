"""Corpora whose emotion mix differs by gender (or does not), with no gender signal in the features.

On such a corpus an attack can tell women from men only through the labels they
trained on: the fixture of the label-only baseline.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedaudit.audit import record_run
from fedaudit.config import FLConfig
from fedaudit.data.table import EMOTIONS, FeatureTable

#: Emotion mix (neutral, happy, sad, angry) of each gender in the skewed corpus:
#: women mostly happy and sad, men mostly angry and neutral.
SKEWED_MIX: dict[str, tuple[float, ...]] = {"F": (0.1, 0.4, 0.4, 0.1), "M": (0.4, 0.1, 0.1, 0.4)}
BALANCED_MIX: dict[str, tuple[float, ...]] = {"F": (0.25,) * 4, "M": (0.25,) * 4}


def mixed_table(
    mix: dict[str, tuple[float, ...]], *, n_speakers: int = 20, per_speaker: int = 24, n_features: int = 16,
    seed: int = 0,
) -> FeatureTable:
    """Features that carry emotion but no gender; each speaker's emotions follow its gender's ``mix``.

    Every speaker's label counts are the mix times ``per_speaker`` (largest remainder), so a
    balanced mix gives every speaker the same counts.
    """
    rng = np.random.default_rng(seed)
    speakers, genders, emotions = [], [], []
    for i in range(n_speakers):
        gender = "F" if i % 2 else "M"
        share = np.asarray(mix[gender]) * per_speaker
        counts = np.floor(share).astype(int)
        counts[np.argsort(-(share - counts), kind="stable")[: per_speaker - counts.sum()]] += 1
        speakers += [f"spk{i:02d}"] * per_speaker
        genders += [gender] * per_speaker
        emotions += [e for e, k in zip(EMOTIONS, counts, strict=True) for _ in range(k)]
    emotion = np.array(emotions)
    x = rng.normal(size=(len(emotion), n_features)).astype(np.float32)
    x[:, 0] += 2.0 * np.array([EMOTIONS.index(e) for e in emotion])
    return FeatureTable(
        x=x, utterance_id=np.array([f"u{i:04d}" for i in range(len(emotion))]), speaker_id=np.array(speakers),
        gender=np.array(genders), emotion=emotion, corpus=np.array(["synthetic"] * len(emotion)),
        feature_set="synthetic",
    )


def record_mixed(
    root: Path, mix: dict[str, tuple[float, ...]], *, n_shadows: int = 3, algorithm: str = "fedsgd", rounds: int = 15
) -> dict[str, list[Path]]:
    """Shadow runs and a target run (other speakers, other seeds) of a corpus with emotion ``mix``."""
    root.mkdir(parents=True, exist_ok=True)

    def run(path: Path, *, seed: int, table_seed: int, fold: int) -> Path:
        cfg = FLConfig(algorithm=algorithm, rounds=rounds, client_fraction=0.25, hidden=(32, 16), seed=seed, fold=fold)
        record_run(cfg, mixed_table(mix, seed=table_seed), path)
        return path

    shadows = [run(root / f"shadow{k}.h5", seed=10 + k, table_seed=1, fold=k) for k in range(n_shadows)]
    return {"shadows": shadows, "target": [run(root / "target.h5", seed=0, table_seed=2, fold=0)]}
