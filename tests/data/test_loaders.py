"""Tests of the corpus loaders against tiny corpora in their published layouts."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pandas as pd
import pytest

from fedaudit.data.loaders import LAYOUTS, LOADERS, load_corpus, load_crema_d, load_manifest
from fedaudit.data.table import CORPUS_COLUMNS
from fedaudit.exceptions import CorpusError, InvalidParameterError, SkippedAudioWarning

from ._fixtures import (
    make_crema_d,
    make_emodb,
    make_iemocap,
    make_manifest,
    make_msp_improv,
    make_ravdess,
    write_text,
    write_wav,
)

pytestmark = pytest.mark.filterwarnings("error::fedaudit.exceptions.SkippedAudioWarning")


def rows(table: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    """(utterance_id, speaker_id, gender, emotion) of every row, in table order."""
    columns = ["utterance_id", "speaker_id", "gender", "emotion"]
    return list(table[columns].itertuples(index=False, name=None))


def check_shape(table: pd.DataFrame, name: str) -> None:
    """Columns, corpus key, sorting and absolute existing paths."""
    assert tuple(table.columns) == CORPUS_COLUMNS
    assert (table["corpus"] == name).all()
    assert table["utterance_id"].tolist() == sorted(table["utterance_id"])
    assert table["utterance_id"].is_unique
    assert list(table.index) == list(range(len(table)))
    for path in table["path"]:
        assert isinstance(path, str)
        assert os.path.isabs(path) and os.path.isfile(path)


# --------------------------------------------------------------------------- registry and errors


def test_registry_keys() -> None:
    assert sorted(LOADERS) == ["crema-d", "emodb", "iemocap", "manifest", "msp-improv", "ravdess"]
    assert set(LAYOUTS) == set(LOADERS)


def test_unknown_corpus_name_lists_the_registry(tmp_path: Path) -> None:
    with pytest.raises(CorpusError) as err:
        load_corpus("timit", tmp_path)
    message = str(err.value)
    assert "'timit'" in message
    for key in LOADERS:
        assert repr(key) in message


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_missing_root_is_named(tmp_path: Path, name: str) -> None:
    root = tmp_path / "no_such_corpus"
    with pytest.raises(CorpusError) as err:
        load_corpus(name, root)
    message = str(err.value)
    assert str(root) in message
    assert "does not exist" in message
    assert LAYOUTS[name] in message


# The files a loader needs before it looks for audio; the audio itself is absent.
EMPTY_CORPORA: dict[str, dict[str, str]] = {
    "crema-d": {"VideoDemographics.csv": "ActorID,Sex\n1001,Male\n"},
    "emodb": {},
    "iemocap": {"Session1/dialog/EmoEvaluation/Ses01F_impro01.txt": ""},
    "manifest": {"manifest.csv": "path,speaker_id,gender,emotion\n"},
    "msp-improv": {"Evalution.txt": ""},
    "ravdess": {},
}


@pytest.mark.parametrize("name", sorted(EMPTY_CORPORA))
def test_empty_root_says_which_layout_was_expected(tmp_path: Path, name: str) -> None:
    for rel, text in EMPTY_CORPORA[name].items():
        write_text(tmp_path / rel, text)
    write_text(tmp_path / "unrelated.txt", "hello\n")
    with pytest.raises(CorpusError) as err:
        load_corpus(name, tmp_path)
    message = str(err.value)
    assert "No usable utterance" in message
    assert str(tmp_path) in message
    assert LAYOUTS[name] in message


def test_root_that_is_a_file_is_rejected(tmp_path: Path) -> None:
    not_a_folder = write_text(tmp_path / "emodb.zip", "zip")
    with pytest.raises(CorpusError, match="is not a directory"):
        load_corpus("emodb", not_a_folder)


def test_relative_root_gives_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_ravdess(tmp_path / "ravdess")
    monkeypatch.chdir(tmp_path)
    table = load_corpus("ravdess", "ravdess")
    assert table["path"][0] == str(tmp_path / "ravdess" / "Actor_01" / "03-01-01-01-01-01-01.wav")


def test_corpus_error_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Unknown corpus name"):
        load_corpus("nope", tmp_path)


# --------------------------------------------------------------------------- CREMA-D

CREMA_D_ROWS = [
    ("1001_DFA_ANG_XX", "crema-d:1001", "M", "angry"),
    ("1001_DFA_NEU_XX", "crema-d:1001", "M", "neutral"),
    ("1001_IEO_HAP_LO", "crema-d:1001", "M", "happy"),
    ("1002_DFA_SAD_XX", "crema-d:1002", "F", "sad"),
    ("1002_TIE_NEU_XX", "crema-d:1002", "F", "neutral"),
    ("1003_DFA_HAP_XX", "crema-d:1003", "F", "happy"),
]


def test_crema_d_labels_from_file_names(tmp_path: Path) -> None:
    make_crema_d(tmp_path)
    with pytest.warns(SkippedAudioWarning, match=r"Skipped 1 file\(s\) of corpus 'crema-d'") as rec:
        table = load_corpus("crema-d", tmp_path)
    assert len(rec) == 1
    assert "1099_DFA_ANG_XX.wav" in str(rec[0].message)
    assert "VideoDemographics.csv" in str(rec[0].message)
    check_shape(table, "crema-d")
    assert rows(table) == CREMA_D_ROWS
    assert table["path"][0] == str(tmp_path / "AudioWAV" / "1001_DFA_ANG_XX.wav")


def test_crema_d_keep_all_emotions(tmp_path: Path) -> None:
    make_crema_d(tmp_path)
    with pytest.warns(SkippedAudioWarning):
        table = load_corpus("crema-d", tmp_path, keep_all_emotions=True)
    expected = sorted(
        CREMA_D_ROWS
        + [
            ("1001_IEO_DIS_MD", "crema-d:1001", "M", "disgust"),
            ("1002_IEO_FEA_HI", "crema-d:1002", "F", "fear"),
        ]
    )
    assert rows(table) == expected


def test_crema_d_labels_from_summary_votes(tmp_path: Path) -> None:
    make_crema_d(tmp_path)
    with pytest.warns(SkippedAudioWarning) as record:
        table = load_crema_d(tmp_path, label_source="summary")
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 2
    assert "1099_DFA_ANG_XX.wav" in messages[0] and "VideoDemographics.csv" in messages[0]
    assert "1003_DFA_HAP_XX.wav" in messages[1] and "summaryTable.csv" in messages[1]
    check_shape(table, "crema-d")
    assert rows(table) == [
        ("1001_DFA_ANG_XX", "crema-d:1001", "M", "angry"),
        ("1001_IEO_HAP_LO", "crema-d:1001", "M", "neutral"),  # the crowd heard neutral
        ("1002_DFA_SAD_XX", "crema-d:1002", "F", "sad"),
        ("1002_IEO_FEA_HI", "crema-d:1002", "F", "happy"),  # the crowd heard happy
        ("1002_TIE_NEU_XX", "crema-d:1002", "F", "neutral"),
    ]


def test_crema_d_rejects_unknown_label_source(tmp_path: Path) -> None:
    make_crema_d(tmp_path)
    with pytest.raises(InvalidParameterError) as err:
        load_crema_d(tmp_path, label_source="votes")
    assert "'votes'" in str(err.value)
    assert "['filename', 'summary']" in str(err.value)


def test_crema_d_needs_demographics(tmp_path: Path) -> None:
    make_crema_d(tmp_path)
    (tmp_path / "VideoDemographics.csv").unlink()
    with pytest.raises(CorpusError) as err:
        load_corpus("crema-d", tmp_path)
    assert str(tmp_path / "VideoDemographics.csv") in str(err.value)


# --------------------------------------------------------------------------- IEMOCAP

IEMOCAP_ROWS = [
    ("Ses01F_impro01_F000", "iemocap:Ses01F", "F", "neutral"),
    ("Ses01F_impro01_F001", "iemocap:Ses01F", "F", "happy"),
    ("Ses01F_impro01_M000", "iemocap:Ses01M", "M", "angry"),
    ("Ses02M_impro02_F000", "iemocap:Ses02F", "F", "sad"),
    ("Ses02M_impro02_M000", "iemocap:Ses02M", "M", "happy"),
]


def test_iemocap_improvised_four_classes(tmp_path: Path) -> None:
    make_iemocap(tmp_path)
    with pytest.warns(SkippedAudioWarning, match=r"Skipped 1 file\(s\) of corpus 'iemocap'") as rec:
        table = load_corpus("iemocap", tmp_path)
    assert len(rec) == 1
    assert "Ses02M_impro02_F001.wav" in str(rec[0].message)
    check_shape(table, "iemocap")
    assert rows(table) == IEMOCAP_ROWS
    assert not table["utterance_id"].str.contains("script").any()
    assert table["path"][0] == str(
        tmp_path / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_F000.wav"
    )


def test_iemocap_keep_all_emotions_still_drops_xxx_and_oth(tmp_path: Path) -> None:
    make_iemocap(tmp_path)
    with pytest.warns(SkippedAudioWarning):
        table = load_corpus("iemocap", tmp_path, keep_all_emotions=True)
    assert rows(table) == sorted(
        IEMOCAP_ROWS
        + [
            ("Ses01F_impro01_M002", "iemocap:Ses01M", "M", "frustrated"),
            ("Ses02M_impro02_M001", "iemocap:Ses02M", "M", "surprise"),
        ]
    )
    assert "Ses01F_impro01_M001" not in set(table["utterance_id"])  # xxx
    assert "Ses01F_impro01_F002" not in set(table["utterance_id"])  # oth


# --------------------------------------------------------------------------- MSP-IMPROV

MSP_IMPROV_ROWS = [
    ("MSP-IMPROV-S01A-F01-S-FM01", "msp-improv:F01", "F", "angry"),
    ("MSP-IMPROV-S01A-M01-S-FM01", "msp-improv:M01", "M", "neutral"),
    ("MSP-IMPROV-S02H-F01-P-FM01", "msp-improv:F01", "F", "happy"),
    ("MSP-IMPROV-S03S-F02-R-MF02", "msp-improv:F02", "F", "sad"),
]


@pytest.mark.parametrize("keep_all_emotions", [False, True])
def test_msp_improv_consensus_labels(tmp_path: Path, keep_all_emotions: bool) -> None:
    make_msp_improv(tmp_path)
    table = load_corpus("msp-improv", tmp_path, keep_all_emotions=keep_all_emotions)
    check_shape(table, "msp-improv")
    assert rows(table) == MSP_IMPROV_ROWS
    assert table["path"][3] == str(
        tmp_path / "Audio" / "session2" / "S03S" / "R" / "MSP-IMPROV-S03S-F02-R-MF02.wav"
    )


def test_msp_improv_accepts_the_corrected_label_file_name(tmp_path: Path) -> None:
    make_msp_improv(tmp_path)
    (tmp_path / "Evalution.txt").rename(tmp_path / "Evaluation.txt")
    assert rows(load_corpus("msp-improv", tmp_path)) == MSP_IMPROV_ROWS


def test_msp_improv_needs_its_label_file(tmp_path: Path) -> None:
    make_msp_improv(tmp_path)
    (tmp_path / "Evalution.txt").unlink()
    with pytest.raises(CorpusError) as err:
        load_corpus("msp-improv", tmp_path)
    assert str(tmp_path / "Evalution.txt") in str(err.value)


def test_msp_improv_duplicate_file_names_are_an_error(tmp_path: Path) -> None:
    make_msp_improv(tmp_path)
    write_wav(tmp_path / "Audio" / "copy" / "MSP-IMPROV-S01A-F01-S-FM01.wav")
    with pytest.raises(CorpusError, match="'MSP-IMPROV-S01A-F01-S-FM01'.*unique"):
        load_corpus("msp-improv", tmp_path)


# --------------------------------------------------------------------------- Emo-DB

EMODB_ROWS = [
    ("03a01Fa", "emodb:03", "M", "happy"),
    ("03a01Wa", "emodb:03", "M", "angry"),
    ("08a01Ta", "emodb:08", "F", "sad"),
    ("08b01Na", "emodb:08", "F", "neutral"),
    ("16b10Wb", "emodb:16", "F", "angry"),
]


def test_emodb_four_classes(tmp_path: Path) -> None:
    make_emodb(tmp_path)
    skipped = r"Skipped 1 file\(s\) of corpus 'emodb'.*99a01Na"
    with pytest.warns(SkippedAudioWarning, match=skipped) as rec:
        table = load_corpus("emodb", tmp_path)
    assert rec[0].filename == __file__  # the warning points at the caller
    check_shape(table, "emodb")
    assert rows(table) == EMODB_ROWS


def test_emodb_keep_all_emotions(tmp_path: Path) -> None:
    make_emodb(tmp_path)
    with pytest.warns(SkippedAudioWarning):
        table = load_corpus("emodb", tmp_path, keep_all_emotions=True)
    assert rows(table) == sorted(
        EMODB_ROWS
        + [
            ("03a02Lb", "emodb:03", "M", "boredom"),
            ("09a05Ea", "emodb:09", "F", "disgust"),
            ("13a01Ab", "emodb:13", "F", "fear"),
        ]
    )


# --------------------------------------------------------------------------- RAVDESS

RAVDESS_ROWS = [
    ("03-01-01-01-01-01-01", "ravdess:01", "M", "neutral"),
    ("03-01-03-01-01-01-02", "ravdess:02", "F", "happy"),
    ("03-01-04-01-02-02-02", "ravdess:02", "F", "sad"),
    ("03-01-05-01-02-01-12", "ravdess:12", "F", "angry"),
    ("03-01-05-02-01-01-01", "ravdess:01", "M", "angry"),
]


def test_ravdess_speech_only(tmp_path: Path) -> None:
    make_ravdess(tmp_path)
    table = load_corpus("ravdess", tmp_path)
    check_shape(table, "ravdess")
    assert rows(table) == RAVDESS_ROWS
    assert not table["utterance_id"].str.startswith("03-02").any()


def test_ravdess_keep_all_emotions(tmp_path: Path) -> None:
    make_ravdess(tmp_path)
    table = load_corpus("ravdess", tmp_path, keep_all_emotions=True)
    assert rows(table) == sorted(
        RAVDESS_ROWS
        + [
            ("03-01-02-01-01-01-01", "ravdess:01", "M", "calm"),
            ("03-01-06-01-01-01-02", "ravdess:02", "F", "fear"),
            ("03-01-07-01-01-01-12", "ravdess:12", "F", "disgust"),
            ("03-01-08-01-01-01-02", "ravdess:02", "F", "surprise"),
        ]
    )


# --------------------------------------------------------------------------- manifest

MANIFEST_ROWS = [
    ("audio/s1/a", "s1", "F", "neutral"),
    ("audio/s2/a", "s2", "M", "angry"),
    ("b", "s1", "F", "happy"),
    ("c", "s2", "M", "sad"),
]


def test_manifest_folder(tmp_path: Path) -> None:
    root = make_manifest(tmp_path / "corpus", tmp_path / "elsewhere")
    with pytest.warns(SkippedAudioWarning) as record:
        table = load_corpus("manifest", root)
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    assert "Skipped 2 file(s)" in messages[0]
    assert str(root / "audio" / "missing1.wav") in messages[0]
    assert "Skipped 1 file(s)" in messages[1] and "f.wav" in messages[1]
    check_shape(table, "manifest")
    assert rows(table) == MANIFEST_ROWS
    path_of = dict(zip(table["utterance_id"], table["path"], strict=True))
    assert path_of["c"] == str(tmp_path / "elsewhere" / "c.wav")
    assert path_of["b"] == str(root / "audio" / "s1" / "b.wav")


def test_manifest_keep_all_emotions(tmp_path: Path) -> None:
    root = make_manifest(tmp_path / "corpus", tmp_path / "elsewhere")
    with pytest.warns(SkippedAudioWarning):
        table = load_manifest(root / "manifest.csv", keep_all_emotions=True)
    extra = [("d", "s2", "M", "fear"), ("e", "s2", "M", "bored")]
    assert rows(table) == sorted(MANIFEST_ROWS + extra)


def test_manifest_csv_file_with_utterance_ids(tmp_path: Path) -> None:
    write_wav(tmp_path / "x" / "one.wav")
    write_wav(tmp_path / "x" / "two.wav")
    csv = write_text(
        tmp_path / "lists" / "my corpus.csv",
        "utterance_id,path,speaker_id,gender,emotion\n"
        "u2,../x/two.wav,spk,Male,SAD\n"
        "u1,../x/one.wav,spk,male,Neutral\n"
        "u3,../x/two.wav,spk2,f,HAP\n",
    )
    table = load_corpus("manifest", csv)
    assert rows(table) == [
        ("u1", "spk", "M", "neutral"),
        ("u2", "spk", "M", "sad"),
        ("u3", "spk2", "F", "happy"),
    ]
    assert table["path"][0] == str(tmp_path / "x" / "one.wav")


def test_manifest_missing_columns_are_listed(tmp_path: Path) -> None:
    csv = write_text(tmp_path / "manifest.csv", "path,speaker\na.wav,s1\n")
    with pytest.raises(CorpusError) as err:
        load_corpus("manifest", tmp_path)
    message = str(err.value)
    assert "['speaker_id', 'gender', 'emotion']" in message
    assert str(csv) in message


def test_manifest_folder_without_manifest_csv(tmp_path: Path) -> None:
    with pytest.raises(CorpusError) as err:
        load_corpus("manifest", tmp_path)
    assert str(tmp_path / "manifest.csv") in str(err.value)


def test_manifest_duplicate_utterance_ids(tmp_path: Path) -> None:
    write_wav(tmp_path / "one.wav")
    write_wav(tmp_path / "two.wav")
    write_text(
        tmp_path / "manifest.csv",
        "utterance_id,path,speaker_id,gender,emotion\nu,one.wav,s,F,sad\nu,two.wav,s,F,sad\n",
    )
    with pytest.raises(CorpusError, match="'u'.*unique"):
        load_corpus("manifest", tmp_path)


def test_manifest_rejects_empty_speaker(tmp_path: Path) -> None:
    write_wav(tmp_path / "one.wav")
    write_text(tmp_path / "manifest.csv", "path,speaker_id,gender,emotion\none.wav,,F,sad\n")
    with pytest.raises(CorpusError, match="empty speaker_id"):
        load_corpus("manifest", tmp_path)


# --------------------------------------------------------------------------- all loaders

BUILDERS = {
    "crema-d": make_crema_d,
    "iemocap": make_iemocap,
    "msp-improv": make_msp_improv,
    "emodb": make_emodb,
    "ravdess": make_ravdess,
    "manifest": lambda root: make_manifest(root, root.parent / "outside"),
}


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_every_loader_is_deterministic_and_harmonised(tmp_path: Path, name: str) -> None:
    root = BUILDERS[name](tmp_path / "root")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedAudioWarning)
        first = load_corpus(name, root)
        second = load_corpus(name, str(root))
    pd.testing.assert_frame_equal(first, second)
    assert set(first["emotion"]) <= {"neutral", "happy", "sad", "angry"}
    assert set(first["gender"]) == {"F", "M"}
