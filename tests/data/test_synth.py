"""Tests of the espeak-ng demo corpora (data.synth) and the shipped demo features (data.demo)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from threadpoolctl import threadpool_limits

from fedaudit.data import synth as S
from fedaudit.data.demo import DEMO_CORPORA, demo_path, load_demo
from fedaudit.data.features import extract_features
from fedaudit.data.synth import (
    CORPUS_SPECS,
    EMOTION_PRESETS,
    read_manifest,
    speakers_of,
    synthesize_corpus,
)
from fedaudit.data.table import CORPUS_COLUMNS, EMOTIONS
from fedaudit.exceptions import CorpusError, FeatureError, InvalidParameterError

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"
)


# --------------------------------------------------------------------------- design (no espeak-ng)


def test_demo_corpora_are_disjoint() -> None:
    private, shadow = (CORPUS_SPECS[n] for n in ("demo-private", "demo-shadow"))

    assert not set(private.voices) & set(shadow.voices)
    private_variants = set(private.female_variants + private.male_variants)
    assert not private_variants & set(shadow.female_variants + shadow.male_variants)
    assert not set(private.sentences) & set(shadow.sentences)
    ids = [{s.speaker_id for s in speakers_of(name)} for name in ("demo-private", "demo-shadow")]
    assert not ids[0] & ids[1]


@pytest.mark.parametrize("name", ["demo-private", "demo-shadow"])
def test_default_speakers_are_balanced_and_distinct(name: str) -> None:
    speakers = speakers_of(name)
    spec = CORPUS_SPECS[name]

    assert len(speakers) == 40
    assert sum(s.gender == "F" for s in speakers) == 20
    assert len(spec.sentences) == 12
    # Every speaker is a distinct (voice, variant, pitch, speed) combination.
    assert len({(s.voice, s.variant, s.pitch, s.speed) for s in speakers}) == 40
    for s in speakers:
        variants = spec.female_variants if s.gender == "F" else spec.male_variants
        assert s.variant in variants and s.voice in spec.voices
    # A small corpus still uses every voice of the corpus when it can.
    assert {s.voice for s in speakers_of(name, n_speakers=4)} == set(spec.voices[:2])


def test_speakers_depend_on_the_seed() -> None:
    assert speakers_of("demo-private", seed=0) == speakers_of("demo-private", seed=0)
    assert speakers_of("demo-private", seed=0) != speakers_of("demo-private", seed=1)


def test_emotion_presets_cover_the_emotions() -> None:
    assert tuple(EMOTION_PRESETS) == EMOTIONS
    rate = {emotion: preset.rate_pct for emotion, preset in EMOTION_PRESETS.items()}
    assert rate["sad"] < rate["neutral"] < rate["angry"]


@pytest.mark.parametrize("n", [0, 3, -2, 2.0, True])
def test_bad_speaker_count(n: object) -> None:
    expected = "'n_speakers' parameter of synthesize_corpus must be an even int"
    with pytest.raises(InvalidParameterError, match=expected):
        speakers_of("demo-private", n_speakers=n)  # type: ignore[arg-type]


def test_bad_seed() -> None:
    with pytest.raises(InvalidParameterError, match="'seed' parameter of synthesize_corpus"):
        speakers_of("demo-private", seed=-1)


def test_unknown_corpus_lists_the_choices(tmp_path: Path) -> None:
    expected = r"Unknown demo corpus 'demo'. Choose one of \['demo-private', 'demo-shadow'\]"
    with pytest.raises(CorpusError, match=expected):
        synthesize_corpus("demo", tmp_path)


def test_missing_espeak_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(S.shutil, "which", lambda _: None)

    with pytest.raises(FeatureError, match=r"apt-get install espeak-ng.*shipped demo features"):
        synthesize_corpus("demo-shadow", tmp_path, n_speakers=2)
    assert not (tmp_path / "manifest.csv").exists()


def test_read_manifest_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="No corpus manifest"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.csv").write_text("utterance_id,path\nu1,a.wav\n")
    with pytest.raises(CorpusError, match="lacks the columns"):
        read_manifest(tmp_path)


# --------------------------------------------------------------------------- synthesis


@pytest.fixture(scope="module")
def small_private(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    out = tmp_path_factory.mktemp("demo-private")
    return out, synthesize_corpus("demo-private", out, seed=0, n_speakers=4)


@needs_espeak
def test_small_corpus_manifest_and_files(small_private: tuple[Path, pd.DataFrame]) -> None:
    out, table = small_private

    assert list(table.columns) == list(CORPUS_COLUMNS)
    assert len(table) == 4 * 12 * 4
    assert table["utterance_id"].is_unique
    assert (table["corpus"] == "demo-private").all()
    genders = table.groupby("speaker_id")["gender"].first()
    assert genders.value_counts().to_dict() == {"F": 2, "M": 2}
    assert table["emotion"].value_counts().to_dict() == {e: 48 for e in EMOTIONS}
    # manifest.csv holds the same table with relative paths; read_manifest resolves them.
    manifest = pd.read_csv(out / "manifest.csv", dtype=str)
    assert not any(Path(p).is_absolute() for p in manifest["path"])
    pd.testing.assert_frame_equal(read_manifest(out), table)
    for path in table["path"].iloc[::37]:
        info = sf.info(path)
        assert info.channels == 1 and info.samplerate == 22_050 and info.duration > 1.0


@needs_espeak
def test_emotion_presets_change_the_speech(small_private: tuple[Path, pd.DataFrame]) -> None:
    _, table = small_private
    seconds = pd.Series([sf.info(p).duration for p in table["path"]])
    duration = seconds.groupby(table["emotion"]).mean()

    assert duration["sad"] > duration["neutral"] > duration["angry"]


@needs_espeak
def test_synthesis_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    def digest(table: pd.DataFrame) -> list[str]:
        return [hashlib.sha1(Path(p).read_bytes()).hexdigest() for p in table["path"]]

    a = synthesize_corpus("demo-shadow", tmp_path / "a", seed=3, n_speakers=2)
    b = synthesize_corpus("demo-shadow", tmp_path / "b", seed=3, n_speakers=2)
    c = synthesize_corpus("demo-shadow", tmp_path / "c", seed=4, n_speakers=2)

    assert digest(a) == digest(b)
    assert sum(x != y for x, y in zip(digest(a), digest(c), strict=True)) > len(a) // 2


@needs_espeak
def test_variant_genders_match_their_pitch(tmp_path: Path) -> None:
    """Every variant labelled female speaks with a higher mean F0 than every male one."""
    exe = shutil.which("espeak-ng") or "espeak-ng"
    rows = []
    for name, spec in CORPUS_SPECS.items():
        # Every variant with the first voice, and the first variant of each gender with every
        # voice (some voice names, such as "en-gb", silently ignore the variant).
        by_gender = (("F", spec.female_variants), ("M", spec.male_variants))
        pairs = [(g, v, spec.voices[0]) for g, vs in by_gender for v in vs]
        pairs += [(g, vs[0], voice) for voice in spec.voices[1:] for g, vs in by_gender]
        for gender, variant, voice in pairs:
            path = tmp_path / f"{name}-{voice}-{variant}.wav"
            speaker = S.SpeakerSpec(
                speaker_id=variant, gender=gender, voice=voice, variant=variant, pitch=50, speed=175
            )
            S._run_espeak(exe, speaker, spec.sentences[0], path)
            rows.append(
                dict(
                    utterance_id=path.stem,
                    path=str(path),
                    speaker_id=variant,
                    gender=gender,
                    emotion="neutral",
                    corpus=name,
                )
            )

    feats = extract_features(pd.DataFrame(rows), feature_set="egemaps", n_jobs=2)
    semitones = feats.x[:, list(feats.feature_names).index("F0semitoneFrom27.5Hz_sma3nz_amean")]
    f0 = 27.5 * 2 ** (semitones / 12)

    assert len(feats) == len(rows)
    assert f0[feats.gender == "F"].min() > 150 > 140 > f0[feats.gender == "M"].max()


# --------------------------------------------------------------------------- shipped demo features


@pytest.fixture(scope="module")
def demo() -> dict[str, object]:
    return {name: load_demo(name) for name in DEMO_CORPORA}


@pytest.mark.parametrize("name", ["demo-private", "demo-shadow"])
def test_shipped_demo_features(demo: dict, name: str) -> None:
    table = demo[name]

    assert table.feature_set == "emobase"
    assert table.x.shape == (1920, 988)
    assert np.isfinite(table.x).all()
    assert (table.corpus == name).all()
    genders = pd.Series(table.gender).groupby(table.speaker_id).first().value_counts().to_dict()
    assert genders == {"F": 20, "M": 20}
    assert pd.Series(table.emotion).value_counts().to_dict() == {e: 480 for e in EMOTIONS}
    assert demo_path(name).stat().st_size < 6_000_000


def test_shipped_corpora_share_no_speaker(demo: dict) -> None:
    assert not set(demo["demo-private"].speaker_id) & set(demo["demo-shadow"].speaker_id)


def test_load_demo_unknown_name() -> None:
    expected = "Unknown demo corpus 'iemocap'. Available demo corpora: demo-private, demo-shadow"
    with pytest.raises(CorpusError, match=expected):
        load_demo("iemocap")


def _speaker_split_scores(table: object, seed: int = 0) -> tuple[float, float]:
    """Gender and emotion accuracy of a logistic regression on held-out speakers.

    Global standardisation: one mean and std over the whole table.
    """
    from sklearn.linear_model import LogisticRegression

    x = (table.x - table.x.mean(0)) / (table.x.std(0) + 1e-8)
    speakers = pd.Series(table.gender).groupby(table.speaker_id).first()
    rng = np.random.default_rng(seed)
    test_speakers = set()
    for gender in ("F", "M"):
        ids = speakers.index[speakers == gender].to_numpy()
        test_speakers |= set(rng.choice(ids, size=len(ids) // 2, replace=False))
    test = np.isin(table.speaker_id, list(test_speakers))
    scores = []
    # One BLAS thread: on a busy 2-core machine, more make lbfgs ten times slower.
    with threadpool_limits(limits=1):
        for y in (table.gender, table.emotion):
            clf = LogisticRegression(C=0.01, max_iter=500).fit(x[~test], y[~test])
            scores.append(float((clf.predict(x[test]) == y[test]).mean()))
    return scores[0], scores[1]


@pytest.mark.parametrize("name", ["demo-private", "demo-shadow"])
def test_demo_features_carry_gender_and_emotion(demo: dict, name: str) -> None:
    gender_acc, emotion_acc = _speaker_split_scores(demo[name])

    # Measured with seed 0: gender 1.00 on both corpora (0.83-1.00 over seeds 0-4),
    # emotion 0.82 (private) and 0.79 (shadow); chance is 0.5 and 0.25.
    assert gender_acc > 0.9
    assert emotion_acc > 0.6


def test_shadow_trained_classifier_transfers_to_private(demo: dict) -> None:
    """What a shadow-training attacker relies on: a model fit on shadow data works on private."""
    from sklearn.linear_model import LogisticRegression

    shadow, private = demo["demo-shadow"], demo["demo-private"]
    both = np.concatenate([shadow.x, private.x])
    mean, std = both.mean(0), both.std(0) + 1e-8
    scores = {}
    with threadpool_limits(limits=1):
        for label in ("gender", "emotion"):
            clf = LogisticRegression(C=0.01, max_iter=500)
            clf.fit((shadow.x - mean) / std, getattr(shadow, label))
            predicted = clf.predict((private.x - mean) / std)
            scores[label] = float((predicted == getattr(private, label)).mean())

    assert scores["gender"] > 0.9  # measured 0.96
    assert scores["emotion"] > 0.5  # measured 0.69


# --------------------------------------------------------------------------- command line


@needs_espeak
def test_cli_synth_then_extract(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fedaudit.cli.corpus import app
    from fedaudit.data.table import FeatureTable

    runner = CliRunner()
    args = ["synth", "demo-shadow", "--out", str(tmp_path / "c"), "--speakers", "2", "--seed", "1"]
    synth = runner.invoke(app, args)
    assert synth.exit_code == 0, synth.output
    assert "Wrote 96 files of 2 speakers" in synth.output

    out = tmp_path / "f.npz"
    args = ["extract", "--corpus-dir", str(tmp_path / "c"), "--feature-set", "mfcc"]
    args += ["--out", str(out), "--jobs", "1"]
    extract = runner.invoke(app, args)
    assert extract.exit_code == 0, extract.output
    table = FeatureTable.load(str(out))
    assert table.x.shape == (96, 104) and set(table.gender) == {"F", "M"}

    args = ["synth", "demo-shadow", "--out", str(tmp_path / "d"), "--speakers", "3"]
    bad = runner.invoke(app, args)
    assert bad.exit_code == 2
    assert "must be an even int" in bad.output
