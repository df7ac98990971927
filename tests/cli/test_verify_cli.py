"""`fedaudit verify`: which rows and rounds are damaged, in one sentence and an exit code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import pytest
from typer.testing import CliRunner

from fedaudit.audit import record_run
from fedaudit.cli.main import app
from fedaudit.config import FLConfig
from tests.conftest import make_table

runner = CliRunner()
ARCHIVE = Path(__file__).resolve().parents[1] / "data" / "archive"


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("verify") / "run.h5"
    record_run(FLConfig(rounds=3, client_fraction=0.3, seed=0), make_table(), path)
    return path


def test_a_sound_recording_verifies(recording: Path) -> None:
    res = runner.invoke(app, ["verify", str(recording)])
    text = " ".join(res.output.split())
    assert res.exit_code == 0 and "ok:" in text and "6 update rows in 3 rounds; every checksum matches" in text


def test_damaged_rows_and_rounds_are_named_with_exit_code_4(recording: Path, tmp_path: Path) -> None:
    path = tmp_path / "damaged.h5"
    shutil.copy(recording, path)
    with h5py.File(path, "r") as f:
        offset = f["updates/fc2/weight"].id.get_chunk_info_by_coord((4, 0, 0)).byte_offset
    with open(path, "r+b") as fh:
        fh.seek(offset + 11)
        fh.write(b"\xff")
    res = runner.invoke(app, ["verify", str(path)])
    text = " ".join(res.output.split())
    assert res.exit_code == 4
    assert "damaged:" in text and "1 of 6 update rows are damaged (rows 4; rounds 2)" in text
    res = runner.invoke(app, ["verify", str(path), "--json"])
    found = json.loads(res.stdout)
    assert res.exit_code == 4 and found["damaged_rows"] == [4] and found["damaged_rounds"] == [2] and not found["ok"]


def test_format_1_0_passes_without_checksums() -> None:
    res = runner.invoke(app, ["verify", str(ARCHIVE / "v1.0.0" / "updates.h5")])
    assert res.exit_code == 0 and "no checksums in format 1.0.0" in " ".join(res.output.split())


@pytest.mark.parametrize(("content", "needle"), [(b"not hdf5", "not a readable HDF5"), (None, "No recording")])
def test_unreadable_files_are_one_sentence(tmp_path: Path, content: bytes | None, needle: str) -> None:
    path = tmp_path / "x.h5"
    if content is not None:
        path.write_bytes(content)
    res = runner.invoke(app, ["verify", str(path)])
    assert res.exit_code == 1 and needle in " ".join(res.output.split()) and "Traceback" not in res.output


def test_no_verify_reaches_every_recording_a_command_opens(tmp_path: Path) -> None:
    from fedaudit.record import UpdateStore
    from fedaudit.record.reader import verification

    archive = Path(__file__).resolve().parents[1] / "data" / "archive" / "v1.0.0" / "updates.h5"
    with UpdateStore.open(archive) as store:
        assert store.verify is True
    with verification(False), UpdateStore.open(archive) as store:
        assert store.verify is False
    with verification(False), UpdateStore.open(archive, verify=True) as store:
        assert store.verify is True  # an explicit choice wins
    for command in ("attack", "leakage", "inspect"):
        res = runner.invoke(app, [command, "--help"], terminal_width=200)
        assert "--no-verify" in res.output, command
