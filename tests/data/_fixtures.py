"""Builders of tiny speech emotion corpora in their published layouts.

Each ``make_*`` function writes a few real 0.5 s WAV files (a 16 kHz sine) under
``root``, in the layout the matching loader of :mod:`fedaudit.data.loaders` expects,
plus distractor files the loader must ignore. The docstrings list what a loader
should return; the tests assert it row by row.
"""

from __future__ import annotations

import functools
import io
import wave
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000


@functools.cache
def _sine_wav_bytes(seconds: float = 0.5, freq: float = 220.0) -> bytes:
    """The bytes of a mono 16-bit WAV holding a sine tone."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    samples = (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(samples.tobytes())
    return buffer.getvalue()


def write_wav(path: Path) -> Path:
    """Write 0.5 s of a 16 kHz sine to ``path``, creating its folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_sine_wav_bytes())
    return path


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path``, creating its folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- CREMA-D

CREMA_D_FILES = (
    "1001_DFA_ANG_XX",
    "1001_DFA_NEU_XX",
    "1001_IEO_HAP_LO",
    "1001_IEO_DIS_MD",
    "1002_DFA_SAD_XX",
    "1002_IEO_FEA_HI",
    "1002_TIE_NEU_XX",
    "1003_DFA_HAP_XX",
    "1099_DFA_ANG_XX",  # actor missing from VideoDemographics.csv
)

CREMA_D_VOTES = {
    "1001_DFA_ANG_XX": "A",
    "1001_DFA_NEU_XX": "A:N",  # ambiguous: dropped
    "1001_IEO_HAP_LO": "N",  # perceived as neutral
    "1001_IEO_DIS_MD": "D",
    "1002_DFA_SAD_XX": "S",
    "1002_IEO_FEA_HI": "H",  # perceived as happy
    "1002_TIE_NEU_XX": "N",
    # 1003_DFA_HAP_XX has no row
    "1099_DFA_ANG_XX": "A",
}


def make_crema_d(root: Path) -> Path:
    """CREMA-D with actors 1001 (Male), 1002 and 1003 (Female); 1099 has no demographics.

    From file names: 6 four-class rows (3 of 1001, 2 of 1002, 1 of 1003), plus
    ``1001_IEO_DIS_MD`` (disgust) and ``1002_IEO_FEA_HI`` (fear) with all emotions.
    """
    write_text(
        root / "VideoDemographics.csv",
        "ActorID,Age,Sex,Race,Ethnicity\n"
        "1001,51,Male,Caucasian,Not Hispanic\n"
        "1002,21,Female,Caucasian,Not Hispanic\n"
        "1003,21,Female,Caucasian,Not Hispanic\n",
    )
    for stem in CREMA_D_FILES:
        write_wav(root / "AudioWAV" / f"{stem}.wav")
    # Distractors: a hidden macOS resource file, a text file and a video folder.
    write_wav(root / "AudioWAV" / "._1001_DFA_ANG_XX.wav")
    write_text(root / "AudioWAV" / "README.txt", "not audio\n")
    write_wav(root / "VideoFlash" / "1001_DFA_SAD_XX.wav")
    rows = "".join(
        f'"{i}","{stem}","X","XX","X","XX","{vote}","XX"\n'
        for i, (stem, vote) in enumerate(CREMA_D_VOTES.items(), start=1)
    )
    write_text(
        root / "processedResults" / "summaryTable.csv",
        '"","FileName","VoiceVote","VoiceLevel","FaceVote","FaceLevel",'
        '"MultiModalVote","MultiModalLevel"\n' + rows,
    )
    return root


# --------------------------------------------------------------------------- IEMOCAP

_IEMOCAP_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def _iemocap_dialog(root: Path, session: int, dialog: str, labels: dict[str, str],
                    *, missing_audio: tuple[str, ...] = ()) -> None:
    """Write one dialog's EmoEvaluation file and its sentence wavs."""
    blocks = []
    for i, (turn, code) in enumerate(labels.items()):
        utterance = f"{dialog}_{turn}"
        blocks.append(
            f"[{i * 3 + 0.5:.4f} - {i * 3 + 2.5:.4f}]\t{utterance}\t{code}\t"
            "[2.5000, 3.0000, 3.0000]\n"
            f"C-E1:\tNeutral state;\t()\n"
            f"A-E1:\tval 3; act 3; dom  3;\t()\n\n"
        )
        if utterance not in missing_audio:
            wav_folder = root / f"Session{session}" / "sentences" / "wav" / dialog
            write_wav(wav_folder / f"{utterance}.wav")
    write_text(
        root / f"Session{session}" / "dialog" / "EmoEvaluation" / f"{dialog}.txt",
        _IEMOCAP_HEADER + "".join(blocks),
    )


def make_iemocap(root: Path) -> Path:
    """IEMOCAP with two improvised dialogs and one scripted dialog.

    Four-class rows: ``Ses01F_impro01_F000`` neutral, ``_F001`` happy (exc),
    ``_M000`` angry; ``Ses02M_impro02_F000`` sad, ``_M000`` happy. With all emotions
    also ``Ses01F_impro01_M002`` frustrated and ``Ses02M_impro02_M001`` surprise.
    ``xxx``, ``oth``, the scripted dialog and the label without audio never appear.
    """
    _iemocap_dialog(
        root, 1, "Ses01F_impro01",
        {"F000": "neu", "F001": "exc", "F002": "oth", "M000": "ang", "M001": "xxx", "M002": "fru"},
    )
    _iemocap_dialog(root, 1, "Ses01F_script01_1", {"F000": "ang", "M000": "sad"})
    _iemocap_dialog(
        root, 2, "Ses02M_impro02",
        {"F000": "sad", "F001": "neu", "M000": "hap", "M001": "sur"},
        missing_audio=("Ses02M_impro02_F001",),
    )
    # Distractors: per-evaluator files in a subfolder, a dialog-level wav, a hidden file.
    write_text(
        root / "Session1/dialog/EmoEvaluation/Categorical/Ses01F_impro01_e1_cat.txt",
        "[1.0 - 2.0]\tSes01F_impro01_F002\tang\t[1, 1, 1]\n",
    )
    write_wav(root / "Session1" / "dialog" / "wav" / "Ses01F_impro01.wav")
    write_text(root / "Session1" / "dialog" / "EmoEvaluation" / "._Ses01F_impro01.txt", "\x00\x05")
    return root


# --------------------------------------------------------------------------- MSP-IMPROV

MSP_IMPROV_LABELS = {
    "S01A-F01-S-FM01": "A",
    "S01A-M01-S-FM01": "N",
    "S02H-F01-P-FM01": "H",
    "S02H-M01-P-FM01": "O",  # other: dropped
    "S03S-F02-R-MF02": "S",
    "S03S-M02-R-MF02": "X",  # no agreement: dropped
}


def make_msp_improv(root: Path) -> Path:
    """MSP-IMPROV with sessions 1 (F01, M01) and 2 (F02, M02).

    Rows: ``...S01A-F01-S-FM01`` angry, ``...S01A-M01-S-FM01`` neutral,
    ``...S02H-F01-P-FM01`` happy, ``...S03S-F02-R-MF02`` sad. ``O``, ``X`` and the
    unlabelled ``...S03S-M02-T-MF02`` never appear.
    """
    blocks = "".join(
        f"UTD-IMPROV-{key}.avi; {letter}; A:3.000000; V:2.500000; D:3.000000 ; N:5.000000;\n"
        f"Evaluator1; Angry; Frustrated; A:3.000000; V:2.000000; D:3.000000; N:5.000000;\n"
        "\n"
        for key, letter in MSP_IMPROV_LABELS.items()
    )
    write_text(root / "Evalution.txt", blocks)
    for key in (*MSP_IMPROV_LABELS, "S03S-M02-T-MF02"):
        sentence, speaker, condition, _ = key.split("-")
        session = int(speaker[1:])
        folder = root / "Audio" / f"session{session}" / sentence / condition
        write_wav(folder / f"MSP-IMPROV-{key}.wav")
    return root


# --------------------------------------------------------------------------- Emo-DB

EMODB_FILES = (
    "03a01Fa",  # M happy
    "03a01Wa",  # M angry
    "03a02Lb",  # M boredom
    "08a01Ta",  # F sad
    "08b01Na",  # F neutral
    "09a05Ea",  # F disgust
    "13a01Ab",  # F fear
    "16b10Wb",  # F angry
    "99a01Na",  # undocumented speaker: skipped with a warning
)


def make_emodb(root: Path) -> Path:
    """Emo-DB with speakers 03 (M), 08, 09, 13, 16 (F) and an unknown speaker 99.

    Four-class rows: 03a01Fa, 03a01Wa, 08a01Ta, 08b01Na, 16b10Wb; with all emotions
    also 03a02Lb (boredom), 09a05Ea (disgust) and 13a01Ab (fear).
    """
    for stem in EMODB_FILES:
        write_wav(root / "wav" / f"{stem}.wav")
    write_wav(root / "wav" / "notes.wav")
    write_text(root / "wav" / "readme.txt", "not audio\n")
    write_text(root / "lablaut" / "03a01Fa.lablaut", "labels\n")
    return root


# --------------------------------------------------------------------------- RAVDESS

RAVDESS_FILES = (
    "Actor_01/03-01-01-01-01-01-01",  # neutral
    "Actor_01/03-01-05-02-01-01-01",  # angry
    "Actor_01/03-01-02-01-01-01-01",  # calm
    "Actor_01/03-02-03-01-01-01-01",  # song: ignored
    "Actor_02/03-01-03-01-01-01-02",  # happy
    "Actor_02/03-01-04-01-02-02-02",  # sad
    "Actor_02/03-01-08-01-01-01-02",  # surprise
    "Actor_02/03-01-06-01-01-01-02",  # fear
    "Actor_02/03-02-04-01-01-01-02",  # song: ignored
    "Actor_12/03-01-07-01-01-01-12",  # disgust
    "Actor_12/03-01-05-01-02-01-12",  # angry
)


def make_ravdess(root: Path) -> Path:
    """RAVDESS speech of actors 01 (M), 02 and 12 (F), plus two song files.

    Four-class rows: 5; with all emotions 9 (calm, surprise, fear, disgust added).
    """
    for name in RAVDESS_FILES:
        write_wav(root / f"{name}.wav")
    write_text(root / "Actor_01" / "notes.txt", "not audio\n")
    write_wav(root / "Actor_01" / "01-01-01-01-01-01.wav")  # too few fields
    return root


# --------------------------------------------------------------------------- manifest


def make_manifest(root: Path, outside: Path) -> Path:
    """A manifest.csv in ``root`` with relative, absolute and missing paths.

    ``outside`` holds ``c.wav``, listed by absolute path. Four-class rows:
    ``audio/s1/a`` (F neutral), ``b`` (F happy), ``audio/s2/a`` (M angry), ``c``
    (M sad); with all emotions also ``d`` (fear) and ``e`` (bored). Two rows point at
    missing files and one has an unknown gender.
    """
    for rel in ("audio/s1/a.wav", "audio/s1/b.wav", "audio/s2/a.wav", "audio/s2/d.wav",
                "audio/s2/e.wav", "audio/s3/f.wav"):
        write_wav(root / rel)
    absolute = write_wav(outside / "c.wav")
    write_text(
        root / "manifest.csv",
        "path,speaker_id,gender,emotion\n"
        "audio/s1/a.wav,s1,female,neu\n"
        "audio/s1/b.wav,s1,F,Happy\n"
        "audio/s2/a.wav,s2,MALE,ang\n"
        f"{absolute},s2,m,sad\n"
        "audio/s2/d.wav,s2,M,fea\n"
        "audio/s2/e.wav,s2,M,bored\n"
        "audio/missing1.wav,s3,F,neu\n"
        "audio/missing2.wav,s3,F,sad\n"
        "audio/s3/f.wav,s3,x,neu\n",
    )
    return root
