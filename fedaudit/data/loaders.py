"""Loaders for speech emotion corpora in their own published layouts.

Every loader returns a corpus table: a :class:`pandas.DataFrame` with exactly the
columns :data:`~fedaudit.data.table.CORPUS_COLUMNS`, one row per utterance, sorted
by ``utterance_id``. Paths are absolute strings, genders are ``"F"`` or ``"M"`` and,
by default, emotions are harmonised to :data:`~fedaudit.data.table.EMOTIONS`
(neutral, happy, sad, angry); utterances of other classes are dropped. With
``keep_all_emotions=True`` every class the corpus labels is kept under a lowercase
full name (``"disgust"``, ``"fear"``, ``"surprise"``, ``"calm"``, ``"boredom"``,
``"frustrated"``). No corpus is distributed with fedaudit: point a loader at your
own licensed copy.

Files whose speaker has no known gender, or whose labels point at missing audio,
are skipped and counted in one :class:`~fedaudit.exceptions.SkippedAudioWarning`
per reason. Files that do not follow the corpus's naming scheme are ignored.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from fedaudit.data.table import CORPUS_COLUMNS, EMOTIONS, check_corpus_table
from fedaudit.exceptions import CorpusError, InvalidParameterError, SkippedAudioWarning

__all__ = [
    "LAYOUTS",
    "LOADERS",
    "load_corpus",
    "load_crema_d",
    "load_emodb",
    "load_iemocap",
    "load_manifest",
    "load_msp_improv",
    "load_ravdess",
]

#: The layout each loader expects under ``root``, used in error messages and docs.
LAYOUTS: dict[str, str] = {
    "crema-d": (
        "root/AudioWAV/<ActorID>_<Sentence>_<EMO>_<Level>.wav (e.g. 1001_DFA_ANG_XX.wav) "
        "and root/VideoDemographics.csv (columns ActorID, Sex); with label_source='summary' "
        "also root/processedResults/summaryTable.csv (columns FileName, MultiModalVote)"
    ),
    "iemocap": (
        "root/Session{1..5}/sentences/wav/<dialog>/<utterance>.wav and "
        "root/Session{1..5}/dialog/EmoEvaluation/<dialog>.txt "
        "(e.g. Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav)"
    ),
    "msp-improv": (
        "root/Evalution.txt (or Evaluation.txt) and root/Audio/session{1..6}/**/<file>.wav "
        "(e.g. Audio/session1/S01A/S/MSP-IMPROV-S01A-F01-S-FM01.wav)"
    ),
    "emodb": "root/wav/<speaker><text><emotion><version>.wav (e.g. root/wav/03a01Fa.wav)",
    "ravdess": (
        "root/Actor_<XX>/<modality>-<vocal>-<emotion>-<intensity>-<statement>-<repetition>-"
        "<actor>.wav (e.g. Actor_12/03-01-05-01-02-01-12.wav)"
    ),
    "manifest": (
        "a CSV file, or a folder holding manifest.csv, with the columns path, speaker_id, "
        "gender, emotion and optionally utterance_id; paths are relative to the CSV's folder "
        "or absolute"
    ),
}

# Gender words accepted in demographics files and manifests (compared in lowercase).
_GENDER_WORDS: dict[str, str] = {"f": "F", "female": "F", "m": "M", "male": "M"}

# Emotion names and abbreviations accepted in manifests (compared in lowercase).
_COMMON_EMOTIONS: dict[str, str] = {
    "neutral": "neutral",
    "neu": "neutral",
    "happy": "happy",
    "hap": "happy",
    "happiness": "happy",
    "sad": "sad",
    "sadness": "sad",
    "angry": "angry",
    "ang": "angry",
    "anger": "angry",
    "dis": "disgust",
    "disgust": "disgust",
    "fea": "fear",
    "fear": "fear",
    "fearful": "fear",
    "sur": "surprise",
    "surprise": "surprise",
    "surprised": "surprise",
    "fru": "frustrated",
    "frustrated": "frustrated",
}


class _Utterance(NamedTuple):
    """One row of a corpus table before the ``corpus`` column is added."""

    utterance_id: str
    path: str
    speaker_id: str
    gender: str
    emotion: str


# --------------------------------------------------------------------------- helpers


def _corpus_root(name: str, root: str | os.PathLike[str]) -> Path:
    """Return ``root`` as an absolute path, or raise if it is not a directory."""
    path = Path(root).expanduser().absolute()
    if not path.is_dir():
        raise CorpusError(
            f"The root folder of corpus {name!r} does not exist or is not a directory: "
            f"{str(path)!r}. Pass the folder that holds the corpus in its published layout: "
            f"{LAYOUTS[name]}."
        )
    return path


def _required_file(name: str, path: Path, what: str) -> Path:
    """Return ``path`` if it is a file, or raise a :class:`CorpusError` saying what it holds."""
    if not path.is_file():
        raise CorpusError(
            f"Corpus {name!r} needs {what} at {str(path)!r}, but no such file exists. "
            f"Expected the layout: {LAYOUTS[name]}."
        )
    return path


def _wav_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Yield the regular ``.wav`` files of ``paths``, skipping hidden ones such as ``._x.wav``."""
    for path in paths:
        if path.suffix.lower() == ".wav" and not path.name.startswith(".") and path.is_file():
            yield path


def _keep_emotion(emotion: str | None, keep_all_emotions: bool) -> str | None:
    """Return ``emotion`` if it is kept, else ``None``.

    ``None`` stands for a class that is always dropped (such as IEMOCAP's ``xxx``).
    """
    if emotion is None:
        return None
    return emotion if keep_all_emotions or emotion in EMOTIONS else None


def _warn_skipped(name: str, reason: str, skipped: list[str], hint: str) -> None:
    """Emit one :class:`SkippedAudioWarning` counting ``skipped``, if there are any."""
    if skipped:
        warnings.warn(
            f"Skipped {len(skipped)} file(s) of corpus {name!r} {reason} "
            f"(first: {skipped[0]}). {hint}",
            SkippedAudioWarning,
            stacklevel=_caller_stacklevel(),
        )


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside this module.

    Loaders are called directly or through :func:`load_corpus`, so a fixed level would
    point at this module in one of the two cases.
    """
    level = 1  # the frame calling warnings.warn, i.e. the caller of this function
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back
        level += 1
    return level


def _finish(name: str, root: Path, rows: list[_Utterance]) -> pd.DataFrame:
    """Build, check and sort the corpus table of ``rows``."""
    if not rows:
        raise CorpusError(
            f"No usable utterance of corpus {name!r} was found under {str(root)!r}. "
            f"Expected the layout: {LAYOUTS[name]}. Check the root folder, and note that "
            "utterances with a dropped emotion class or without a label do not count."
        )
    table = pd.DataFrame(rows, columns=list(_Utterance._fields))
    table["corpus"] = name
    duplicated = table[table["utterance_id"].duplicated(keep=False)]
    if not duplicated.empty:
        first = duplicated["utterance_id"].iloc[0]
        paths = duplicated.loc[duplicated["utterance_id"] == first, "path"].tolist()
        raise CorpusError(
            f"Corpus {name!r} has {duplicated['utterance_id'].nunique()} utterance id(s) used "
            f"more than once, e.g. {first!r} for {paths}. Utterance ids must be unique within "
            "a corpus: remove or rename the duplicate files."
        )
    table = table.sort_values("utterance_id", kind="stable").reset_index(drop=True)
    return check_corpus_table(table[list(CORPUS_COLUMNS)], name=name)


# --------------------------------------------------------------------------- CREMA-D

_CREMA_D_FILE = re.compile(
    r"^(?P<actor>\d+)_(?P<sentence>[A-Z]+)_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]+)$"
)
_CREMA_D_EMOTIONS: dict[str, str] = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
_CREMA_D_VOTES: dict[str, str] = {
    "A": "angry",
    "D": "disgust",
    "F": "fear",
    "H": "happy",
    "N": "neutral",
    "S": "sad",
}


def _crema_d_filename_labels(root: Path, stems: list[str]) -> dict[str, str | None]:
    """Emotion of each file from its name (``1001_DFA_ANG_XX`` -> ``"angry"``)."""
    labels: dict[str, str | None] = {}
    for stem in stems:
        match = _CREMA_D_FILE.match(stem)
        labels[stem] = _CREMA_D_EMOTIONS.get(match["emotion"]) if match else None
    return labels


def _crema_d_summary_labels(root: Path, stems: list[str]) -> dict[str, str | None]:
    """Emotion of each file from the perceived multimodal vote in ``summaryTable.csv``.

    Ambiguous votes such as ``"A:N"`` map to ``None`` (dropped). Files without a row are
    left out of the result.
    """
    path = _required_file(
        "crema-d",
        root / "processedResults" / "summaryTable.csv",
        "the crowd votes (summaryTable.csv) for label_source='summary'",
    )
    summary = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("FileName", "MultiModalVote") if c not in summary.columns]
    if missing:
        raise CorpusError(
            f"{str(path)!r} lacks the columns {missing}; found {list(summary.columns)}. "
            "Use the summaryTable.csv published with CREMA-D."
        )
    labels: dict[str, str | None] = {}
    for file_name, vote in zip(summary["FileName"], summary["MultiModalVote"], strict=True):
        labels[Path(file_name.strip()).stem] = _CREMA_D_VOTES.get(vote.strip())
    return labels


_CREMA_D_LABEL_SOURCES: dict[str, Callable[[Path, list[str]], dict[str, str | None]]] = {
    "filename": _crema_d_filename_labels,
    "summary": _crema_d_summary_labels,
}


def _crema_d_genders(root: Path) -> dict[str, str]:
    """Gender of each actor id (``"1001"`` -> ``"M"``) from ``VideoDemographics.csv``."""
    path = _required_file(
        "crema-d", root / "VideoDemographics.csv", "the actor demographics (VideoDemographics.csv)"
    )
    demographics = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("ActorID", "Sex") if c not in demographics.columns]
    if missing:
        raise CorpusError(
            f"{str(path)!r} lacks the columns {missing}; found {list(demographics.columns)}. "
            "Use the VideoDemographics.csv published with CREMA-D."
        )
    genders: dict[str, str] = {}
    for actor, sex in zip(demographics["ActorID"], demographics["Sex"], strict=True):
        gender = _GENDER_WORDS.get(sex.strip().lower())
        if gender is not None:
            genders[actor.strip()] = gender
    return genders


def load_crema_d(
    root: str | os.PathLike[str],
    *,
    keep_all_emotions: bool = False,
    label_source: str = "filename",
) -> pd.DataFrame:
    """Load CREMA-D (Cao et al., 2014) from its published layout.

    Parameters
    ----------
    root
        Folder holding ``AudioWAV/`` and ``VideoDemographics.csv`` (and
        ``processedResults/summaryTable.csv`` for ``label_source="summary"``).
    keep_all_emotions
        Keep disgust and fear as ``"disgust"`` and ``"fear"`` instead of dropping them.
    label_source
        ``"filename"`` takes the acted emotion from the file name (``1001_DFA_ANG_XX``);
        ``"summary"`` takes the crowd's multimodal vote from ``summaryTable.csv`` and
        drops utterances whose vote is ambiguous (such as ``"A:N"``).

    Returns
    -------
    pandas.DataFrame
        The corpus table; ``speaker_id`` is ``"crema-d:<ActorID>"``.

    Raises
    ------
    InvalidParameterError
        If ``label_source`` is not one of the sources above.
    CorpusError
        If ``root`` or a needed file is missing, or no utterance is found.

    Examples
    --------
    >>> table = load_crema_d("/data/CREMA-D", label_source="summary")  # doctest: +SKIP
    """
    if label_source not in _CREMA_D_LABEL_SOURCES:
        raise InvalidParameterError(
            f"The 'label_source' parameter of load_crema_d must be one of "
            f"{sorted(_CREMA_D_LABEL_SOURCES)}. Got {label_source!r} instead."
        )
    name = "crema-d"
    root = _corpus_root(name, root)
    genders = _crema_d_genders(root)
    files = {
        path.stem: path
        for path in _wav_files(sorted((root / "AudioWAV").glob("*")))
        if _CREMA_D_FILE.match(path.stem)
    }
    labels = _CREMA_D_LABEL_SOURCES[label_source](root, list(files))
    rows: list[_Utterance] = []
    no_gender: list[str] = []
    no_label: list[str] = []
    for stem, path in files.items():
        if stem not in labels:
            no_label.append(str(path))
            continue
        emotion = _keep_emotion(labels[stem], keep_all_emotions)
        if emotion is None:
            continue
        actor = _CREMA_D_FILE.match(stem)["actor"]  # type: ignore[index]
        if actor not in genders:
            no_gender.append(str(path))
            continue
        rows.append(_Utterance(stem, str(path), f"{name}:{actor}", genders[actor], emotion))
    _warn_skipped(
        name,
        "whose actor has no Sex in VideoDemographics.csv",
        no_gender,
        "Add the actors to VideoDemographics.csv to keep them.",
    )
    _warn_skipped(
        name,
        "without a row in processedResults/summaryTable.csv",
        no_label,
        "Use the summaryTable.csv published with the corpus, or label_source='filename'.",
    )
    return _finish(name, root, rows)


# --------------------------------------------------------------------------- IEMOCAP

_IEMOCAP_LINE = re.compile(r"^\[[^\]]*\]\s+(?P<utterance>\S+)\s+(?P<label>\S+)")
_IEMOCAP_EMOTIONS: dict[str, str | None] = {
    "neu": "neutral",
    "hap": "happy",
    "exc": "happy",  # excited is merged into happy, as is usual for IEMOCAP
    "sad": "sad",
    "ang": "angry",
    "fru": "frustrated",
    "sur": "surprise",
    "fea": "fear",
    "dis": "disgust",
    "oth": None,
    "xxx": None,
}


def _iemocap_labels(session: Path) -> dict[str, str]:
    """Label code of each utterance of one session (``"Ses01F_impro01_F000"`` -> ``"neu"``)."""
    labels: dict[str, str] = {}
    for path in sorted((session / "dialog" / "EmoEvaluation").glob("*.txt")):
        if path.name.startswith("."):
            continue
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                match = _IEMOCAP_LINE.match(line)
                if match:
                    labels[match["utterance"]] = match["label"]
    return labels


def load_iemocap(root: str | os.PathLike[str], *, keep_all_emotions: bool = False) -> pd.DataFrame:
    """Load the improvised dialogs of IEMOCAP (Busso et al., 2008).

    Scripted dialogs are left out. ``exc`` (excited) is merged into ``"happy"``; ``xxx``
    (no agreement) and ``oth`` (other) are always dropped.

    Parameters
    ----------
    root
        Folder holding ``Session1`` to ``Session5``.
    keep_all_emotions
        Keep frustrated, surprise, fear and disgust instead of dropping them.

    Returns
    -------
    pandas.DataFrame
        The corpus table; ``speaker_id`` is ``"iemocap:<session><gender>"``, e.g.
        ``"iemocap:Ses01F"`` for ``Ses01F_impro01_F000`` and ``"iemocap:Ses01M"`` for
        ``Ses01F_impro01_M000``.

    Raises
    ------
    CorpusError
        If ``root`` is missing or no utterance is found.
    """
    name = "iemocap"
    root = _corpus_root(name, root)
    rows: list[_Utterance] = []
    no_gender: list[str] = []
    no_audio: list[str] = []
    for session in sorted(p for p in root.glob("Session*") if p.is_dir()):
        for utterance, code in sorted(_iemocap_labels(session).items()):
            dialog, _, turn = utterance.rpartition("_")
            if "impro" not in dialog:
                continue
            emotion = _keep_emotion(_IEMOCAP_EMOTIONS.get(code), keep_all_emotions)
            if emotion is None:
                continue
            path = session / "sentences" / "wav" / dialog / f"{utterance}.wav"
            if not path.is_file():
                no_audio.append(str(path))
                continue
            gender = turn[:1]
            if gender not in ("F", "M"):
                no_gender.append(str(path))
                continue
            speaker = f"{name}:{utterance[:5]}{gender}"
            rows.append(_Utterance(utterance, str(path), speaker, gender, emotion))
    _warn_skipped(
        name,
        "whose turn name does not start with F or M",
        no_gender,
        "Utterance names should end in _F<nnn> or _M<nnn>.",
    )
    _warn_skipped(
        name,
        "that are labelled in EmoEvaluation/ but have no wav file",
        no_audio,
        "Check that the sentences/wav folders were fully extracted.",
    )
    return _finish(name, root, rows)


# --------------------------------------------------------------------------- MSP-IMPROV

_MSP_IMPROV_LABEL_FILES: tuple[str, ...] = ("Evalution.txt", "Evaluation.txt")
_MSP_IMPROV_EMOTIONS: dict[str, str | None] = {
    "A": "angry",
    "H": "happy",
    "S": "sad",
    "N": "neutral",
    "O": None,
    "X": None,
}


def _msp_improv_labels(root: Path) -> dict[str, str]:
    """Consensus letter of each utterance, keyed by wav stem (``MSP-IMPROV-...``)."""
    candidates = [root / file_name for file_name in _MSP_IMPROV_LABEL_FILES]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise CorpusError(
            f"Corpus 'msp-improv' needs its labels in one of {[str(p) for p in candidates]}, "
            f"but none exists. Expected the layout: {LAYOUTS['msp-improv']}."
        )
    labels: dict[str, str] = {}
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            fields = [field.strip() for field in line.strip().split(";")]
            if len(fields) < 2 or not fields[0].startswith("UTD-IMPROV-"):
                continue
            stem = "MSP-" + Path(fields[0]).stem.removeprefix("UTD-")
            labels[stem] = fields[1]
    return labels


def load_msp_improv(
    root: str | os.PathLike[str], *, keep_all_emotions: bool = False
) -> pd.DataFrame:
    """Load MSP-IMPROV (Busso et al., 2017) with its consensus emotion labels.

    Other (``O``) and no-agreement (``X``) labels are always dropped, so
    ``keep_all_emotions`` changes nothing for this corpus.

    Parameters
    ----------
    root
        Folder holding ``Evalution.txt`` (the corpus's spelling; ``Evaluation.txt`` is
        accepted too) and ``Audio/``, which is searched recursively. If there is no
        ``Audio/`` folder, ``root`` itself is searched.
    keep_all_emotions
        Accepted for a uniform interface; MSP-IMPROV has no further classes to keep.

    Returns
    -------
    pandas.DataFrame
        The corpus table; ``speaker_id`` is ``"msp-improv:<speaker>"`` with the speaker
        from the file name's fourth field, e.g. ``"msp-improv:F01"``.

    Raises
    ------
    CorpusError
        If ``root`` or the label file is missing, or no utterance is found.
    """
    name = "msp-improv"
    root = _corpus_root(name, root)
    labels = _msp_improv_labels(root)
    audio = root / "Audio" if (root / "Audio").is_dir() else root
    rows: list[_Utterance] = []
    no_gender: list[str] = []
    for path in _wav_files(sorted(audio.rglob("*.wav"))):
        letter = labels.get(path.stem, "")
        emotion = _keep_emotion(_MSP_IMPROV_EMOTIONS.get(letter), keep_all_emotions)
        if emotion is None:
            continue
        parts = path.stem.split("-")
        speaker = parts[3] if len(parts) > 3 else ""
        gender = speaker[:1]
        if gender not in ("F", "M"):
            no_gender.append(str(path))
            continue
        rows.append(_Utterance(path.stem, str(path), f"{name}:{speaker}", gender, emotion))
    _warn_skipped(
        name,
        "whose speaker field (the fourth, e.g. F01) does not start with F or M",
        no_gender,
        "File names should look like MSP-IMPROV-S01A-F01-S-FM01.wav.",
    )
    return _finish(name, root, rows)


# --------------------------------------------------------------------------- Emo-DB

_EMODB_FILE = re.compile(
    r"^(?P<speaker>\d{2})(?P<text>[a-z]\d{2})(?P<emotion>[A-Z])(?P<version>[a-z]?)$"
)
_EMODB_EMOTIONS: dict[str, str] = {
    "W": "angry",  # Ärger (Wut)
    "L": "boredom",  # Langeweile
    "E": "disgust",  # Ekel
    "A": "fear",  # Angst
    "F": "happy",  # Freude
    "T": "sad",  # Trauer
    "N": "neutral",
}
#: Speaker genders from the Emo-DB documentation.
_EMODB_GENDERS: dict[str, str] = {
    "03": "M",
    "10": "M",
    "11": "M",
    "12": "M",
    "15": "M",
    "08": "F",
    "09": "F",
    "13": "F",
    "14": "F",
    "16": "F",
}


def load_emodb(root: str | os.PathLike[str], *, keep_all_emotions: bool = False) -> pd.DataFrame:
    """Load the Berlin Database of Emotional Speech (Burkhardt et al., 2005).

    Parameters
    ----------
    root
        Folder holding ``wav/`` with files such as ``03a01Fa.wav``.
    keep_all_emotions
        Keep boredom, disgust and fear instead of dropping them.

    Returns
    -------
    pandas.DataFrame
        The corpus table; ``speaker_id`` is ``"emodb:<two digits>"``, e.g. ``"emodb:03"``.

    Raises
    ------
    CorpusError
        If ``root`` is missing or no utterance is found.
    """
    name = "emodb"
    root = _corpus_root(name, root)
    rows: list[_Utterance] = []
    no_gender: list[str] = []
    for path in _wav_files(sorted((root / "wav").glob("*"))):
        match = _EMODB_FILE.match(path.stem)
        if match is None:
            continue
        emotion = _keep_emotion(_EMODB_EMOTIONS.get(match["emotion"]), keep_all_emotions)
        if emotion is None:
            continue
        speaker = match["speaker"]
        if speaker not in _EMODB_GENDERS:
            no_gender.append(str(path))
            continue
        rows.append(
            _Utterance(path.stem, str(path), f"{name}:{speaker}", _EMODB_GENDERS[speaker], emotion)
        )
    _warn_skipped(
        name,
        f"whose speaker is not one of the documented speakers {sorted(_EMODB_GENDERS)}",
        no_gender,
        "Only the original Emo-DB speakers have a known gender.",
    )
    return _finish(name, root, rows)


# --------------------------------------------------------------------------- RAVDESS

_RAVDESS_FILE = re.compile(
    r"^(?P<modality>\d{2})-(?P<vocal>\d{2})-(?P<emotion>\d{2})-(?P<intensity>\d{2})-"
    r"(?P<statement>\d{2})-(?P<repetition>\d{2})-(?P<actor>\d{2})$"
)
_RAVDESS_SPEECH = "01"  # vocal channel: 01 speech, 02 song
_RAVDESS_EMOTIONS: dict[str, str] = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fear",
    "07": "disgust",
    "08": "surprise",
}
_RAVDESS_GENDER_BY_PARITY: dict[int, str] = {1: "M", 0: "F"}  # odd actors are male


def load_ravdess(root: str | os.PathLike[str], *, keep_all_emotions: bool = False) -> pd.DataFrame:
    """Load the speech part of RAVDESS (Livingstone and Russo, 2018).

    Song files (vocal channel ``02``) are left out.

    Parameters
    ----------
    root
        Folder holding ``Actor_01`` to ``Actor_24``.
    keep_all_emotions
        Keep calm, fear, disgust and surprise instead of dropping them.

    Returns
    -------
    pandas.DataFrame
        The corpus table; ``speaker_id`` is ``"ravdess:<actor>"``, e.g. ``"ravdess:12"``.
        Odd-numbered actors are male, even-numbered female.

    Raises
    ------
    CorpusError
        If ``root`` is missing or no utterance is found.
    """
    name = "ravdess"
    root = _corpus_root(name, root)
    rows: list[_Utterance] = []
    for path in _wav_files(sorted(root.glob("Actor_*/*"))):
        match = _RAVDESS_FILE.match(path.stem)
        if match is None or match["vocal"] != _RAVDESS_SPEECH:
            continue
        emotion = _keep_emotion(_RAVDESS_EMOTIONS.get(match["emotion"]), keep_all_emotions)
        if emotion is None:
            continue
        actor = match["actor"]
        gender = _RAVDESS_GENDER_BY_PARITY[int(actor) % 2]
        rows.append(_Utterance(path.stem, str(path), f"{name}:{actor}", gender, emotion))
    return _finish(name, root, rows)


# --------------------------------------------------------------------------- manifest

_MANIFEST_FILE = "manifest.csv"
_MANIFEST_COLUMNS: tuple[str, ...] = ("path", "speaker_id", "gender", "emotion")


def _manifest_csv(root: str | os.PathLike[str]) -> Path:
    """Return the manifest CSV named by ``root`` (the file, or ``manifest.csv`` in a folder)."""
    path = Path(root).expanduser().absolute()
    if path.is_file():
        return path
    if not path.is_dir():
        raise CorpusError(
            f"The manifest of corpus 'manifest' does not exist: {str(path)!r}. "
            f"Pass {LAYOUTS['manifest']}."
        )
    return _required_file("manifest", path / _MANIFEST_FILE, "a manifest")


def _manifest_ids(ids: list[str], paths: list[Path], base: Path) -> list[str]:
    """Fill empty utterance ids with the file stem, or the relative path if stems collide."""
    counts = Counter(path.stem for path in paths)

    def default_id(path: Path) -> str:
        if counts[path.stem] == 1:
            return path.stem
        return Path(os.path.relpath(path, base)).with_suffix("").as_posix()

    return [given or default_id(path) for given, path in zip(ids, paths, strict=True)]


def load_manifest(root: str | os.PathLike[str], *, keep_all_emotions: bool = False) -> pd.DataFrame:
    """Load any corpus described by a CSV manifest.

    Parameters
    ----------
    root
        A CSV file, or a folder holding ``manifest.csv``. Its columns are ``path``
        (relative to the CSV's folder, or absolute), ``speaker_id``, ``gender`` (F, M,
        female or male, in any case), ``emotion`` (the four names, or neu, hap, sad,
        ang, in any case) and optionally ``utterance_id`` (default: the file stem, or the
        path relative to the CSV's folder if two files share a stem).
    keep_all_emotions
        Keep other emotions (lowercased; fea, dis, sur and fru become fear, disgust,
        surprise and frustrated) instead of dropping them.

    Returns
    -------
    pandas.DataFrame
        The corpus table; ``speaker_id`` is taken unchanged from the manifest.

    Raises
    ------
    CorpusError
        If the manifest is missing, lacks a column, has a row without a speaker id, or
        describes no usable utterance.

    Warns
    -----
    SkippedAudioWarning
        Once for the rows whose file does not exist, and once for the rows whose
        gender is not recognised.
    """
    name = "manifest"
    csv_path = _manifest_csv(root)
    base = csv_path.parent
    manifest = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    manifest.columns = [str(c).strip() for c in manifest.columns]
    missing = [c for c in _MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise CorpusError(
            f"The manifest {str(csv_path)!r} lacks the columns {missing}; found "
            f"{list(manifest.columns)}. Add them: {LAYOUTS[name]}."
        )
    empty_speaker = manifest.index[manifest["speaker_id"].str.strip() == ""]
    if len(empty_speaker):
        raise CorpusError(
            f"The manifest {str(csv_path)!r} has {len(empty_speaker)} row(s) with an empty "
            f"speaker_id, the first on data row {empty_speaker[0] + 1}. Give every row a speaker."
        )
    paths = [Path(os.path.normpath(base / p.strip())) for p in manifest["path"]]
    given_ids = (
        manifest["utterance_id"].str.strip().tolist()
        if "utterance_id" in manifest.columns
        else [""] * len(manifest)
    )
    ids = _manifest_ids(given_ids, paths, base)
    rows: list[_Utterance] = []
    no_file: list[str] = []
    no_gender: list[str] = []
    for utterance, path, speaker, gender_word, label in zip(
        ids, paths, manifest["speaker_id"], manifest["gender"], manifest["emotion"], strict=True
    ):
        if not path.is_file():
            no_file.append(str(path))
            continue
        gender = _GENDER_WORDS.get(gender_word.strip().lower())
        if gender is None:
            no_gender.append(str(path))
            continue
        label = label.strip().lower()
        emotion = _keep_emotion(_COMMON_EMOTIONS.get(label, label) or None, keep_all_emotions)
        if emotion is None:
            continue
        rows.append(_Utterance(utterance, str(path), speaker.strip(), gender, emotion))
    _warn_skipped(
        name,
        f"listed in {str(csv_path)!r} that do not exist",
        no_file,
        "Fix the paths (relative ones are read from the manifest's folder).",
    )
    _warn_skipped(
        name,
        "whose gender is not F, M, female or male",
        no_gender,
        "Fill in the gender column to keep them.",
    )
    return _finish(name, csv_path, rows)


# --------------------------------------------------------------------------- registry

#: Corpus loaders by registry key. Each takes ``(root, *, keep_all_emotions=False)``.
LOADERS: dict[str, Callable[..., pd.DataFrame]] = {
    "crema-d": load_crema_d,
    "iemocap": load_iemocap,
    "msp-improv": load_msp_improv,
    "emodb": load_emodb,
    "ravdess": load_ravdess,
    "manifest": load_manifest,
}


def load_corpus(
    name: str, root: str | os.PathLike[str], *, keep_all_emotions: bool = False
) -> pd.DataFrame:
    """Load a speech emotion corpus from its published layout.

    Parameters
    ----------
    name
        Registry key: one of :data:`LOADERS` (``"crema-d"``, ``"emodb"``,
        ``"iemocap"``, ``"manifest"``, ``"msp-improv"``, ``"ravdess"``).
    root
        Folder holding the corpus (for ``"manifest"``, the CSV or its folder).
    keep_all_emotions
        Keep every emotion class the corpus labels, under a lowercase full name,
        instead of only neutral, happy, sad and angry.

    Returns
    -------
    pandas.DataFrame
        One row per utterance with the columns ``utterance_id``, ``path``,
        ``speaker_id``, ``gender``, ``emotion`` and ``corpus``, sorted by
        ``utterance_id``.

    Raises
    ------
    CorpusError
        If ``name`` is unknown, ``root`` is missing, or no utterance is found.

    Examples
    --------
    >>> table = load_corpus("emodb", "/data/emodb")  # doctest: +SKIP
    >>> table.groupby("gender").size()  # doctest: +SKIP
    """
    loader = LOADERS.get(name)
    if loader is None:
        raise CorpusError(
            f"Unknown corpus name {name!r}. Choose one of {sorted(LOADERS)}, or describe "
            "your own corpus in a CSV and use 'manifest'."
        )
    return loader(root, keep_all_emotions=keep_all_emotions)
