"""Checksums of format 1.1.0: written with the data, checked on open, damaged rows never served."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from fedaudit.audit import record_run
from fedaudit.config import FLConfig
from fedaudit.exceptions import DamagedRecordingError, DamagedRowsWarning, InvalidParameterError, RecordingError
from fedaudit.hooks import ClientInfo
from fedaudit.record import UpdateStore, UpdateWriter
from fedaudit.record._h5 import digest
from fedaudit.record.reader import verify_recording
from tests.conftest import make_table

ARCHIVE = Path(__file__).resolve().parents[1] / "data" / "archive"


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("integrity") / "run.h5"
    record_run(FLConfig(rounds=4, client_fraction=0.3, seed=1), make_table(), path, store_globals=True)
    return path


@pytest.fixture
def copy(recording: Path, tmp_path: Path) -> Path:
    path = tmp_path / "copy.h5"
    shutil.copy(recording, path)
    return path


def _flip(path: Path, dataset: str, row: int = 0, *, element: int = 0) -> None:
    with h5py.File(path, "r", locking=False) as f:
        ds = f[dataset]
        if ds.chunks and ds.chunks[0] == 1:
            offset = ds.id.get_chunk_info_by_coord((row, *(0,) * (ds.ndim - 1))).byte_offset
        else:
            offset = ds.id.get_chunk_info(0).byte_offset if ds.chunks else ds.id.get_offset()
            element = row
        offset += element * ds.dtype.itemsize
    with open(path, "r+b") as fh:
        fh.seek(offset + ds.dtype.itemsize - 1)
        b = fh.read(1)
        fh.seek(offset + ds.dtype.itemsize - 1)
        fh.write(bytes([b[0] ^ 0x40]))


def test_every_chunk_table_and_round_carries_a_matching_checksum(recording: Path) -> None:
    with h5py.File(recording, "r") as f:
        sums = f["updates/index/checksum"][()]
        assert sums.shape == (f["run/updates_committed"][()], 6) and f["updates/index/checksum"].attrs["algorithm"]
        assert digest(np.ascontiguousarray(f["updates/fc2/weight"][3])) == sums[3, 2]
        assert len(f["rounds/end"]) == len(f["rounds/checksum"]) == f["run/rounds_completed"][()] == 4
        assert f["rounds/end"][-1] == len(sums)
        for name in ("run/config", "run/versions", "run/architecture", "run/result", "clients/client_id",
                     "ground_truth/gender", "initial_weights/fc1/weight"):
            assert "checksum" in f[name].attrs, name
    found = verify_recording(recording)
    assert found.ok and found.checksums and found.rows == 8 and "every checksum matches" in found.summary()


def test_a_flipped_data_byte_excludes_its_row_with_a_counted_warning(recording: Path, copy: Path) -> None:
    with UpdateStore.open(recording) as clean:
        full = clean.param("fc1.weight")
        index = {k: v.copy() for k, v in clean.index.items()}
    _flip(copy, "updates/fc1/weight", row=5, element=17)
    with pytest.warns(DamagedRowsWarning, match=r"1 damaged update rows of 8 \(rows 5; rounds 2\)"):
        store = UpdateStore.open(copy)
    with store:
        assert store.damaged_rows.tolist() == [5] and store.damaged_rounds == [2] and store.n_updates == 7
        np.testing.assert_array_equal(store.param("fc1.weight"), np.delete(full, 5, axis=0))
        np.testing.assert_array_equal(store.index["client_id"], np.delete(index["client_id"], 5))
        served = np.delete(np.arange(8), 5)  # file rows of the served rows
        cid = int(index["client_id"][5])
        mine = served[store.index["client_id"] == cid]
        np.testing.assert_array_equal(store.client(cid)["fc1.weight"], full[mine])
    with pytest.raises(DamagedRecordingError, match=r"rows 5; rounds 2.*fedaudit verify"):
        UpdateStore.open(copy, on_damage="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with UpdateStore.open(copy, verify=False) as unchecked:  # what --no-verify does: no checksums read
            assert unchecked.n_updates == 8
    found = verify_recording(copy)
    assert not found.ok and found.damaged_rows == (5,) and "rows 5; rounds 2" in found.summary()


def test_a_damaged_round_of_the_index_excludes_the_round_and_its_metrics(copy: Path) -> None:
    _flip(copy, "metrics/val_uar", row=1)
    with pytest.warns(DamagedRowsWarning, match="rounds 1"):
        store = UpdateStore.open(copy)
    with store:
        assert set(store.index["server_round"].tolist()) == {0, 2, 3}
        assert np.isnan(store.metrics()["val_uar"][1]) and np.isfinite(store.metrics()["val_uar"][[0, 2, 3]]).all()
        assert store.damaged_rounds == [1]


@pytest.mark.parametrize(("dataset", "error", "says"), [
    ("run/config", DamagedRecordingError, "fails its checksum"),
    ("clients/n_train", DamagedRecordingError, "fails its checksum"),
    ("ground_truth/gender", RecordingError, "cannot be read"),  # a string's heap address: HDF5 notices first
])
def test_a_damaged_table_refuses_the_file_in_one_sentence(copy: Path, dataset: str, error: type, says: str) -> None:
    _flip(copy, dataset, row=0)
    with pytest.raises(error, match=f"/{dataset} {says}"):
        UpdateStore.open(copy)


def test_damaged_result_globals_and_initial_weights_are_refused_when_read(copy: Path) -> None:
    _flip(copy, "run/result", row=3)
    _flip(copy, "globals/fc1/weight", row=2, element=5)
    _flip(copy, "initial_weights/fc2/bias", row=1)
    with UpdateStore.open(copy) as store:
        assert store.n_updates == 8
        with pytest.raises(DamagedRecordingError, match="/run/result fails its checksum"):
            store.result
        with pytest.raises(DamagedRecordingError, match="global weights of round 2"):
            store.global_weights(2)
        store.global_weights(1)
        with pytest.raises(DamagedRecordingError, match="/initial_weights/fc2/bias"):
            store.initial_weights()
    found = verify_recording(copy)
    assert found.damaged_globals == (2,) and set(found.damaged_parts) == {"/run/result", "/initial_weights"}


def test_format_1_0_has_no_checksums_and_still_verifies() -> None:
    found = verify_recording(ARCHIVE / "v1.0.0" / "updates.h5")
    assert found.ok and not found.checksums and "no checksums in format 1.0.0" in found.summary()


def test_counters_beyond_the_data_are_one_sentence(copy: Path) -> None:
    with h5py.File(copy, "r+") as f:
        f["run/updates_committed"][()] = 4_000_000_000
    with pytest.raises(RecordingError, match="updates_committed says 4000000000 update rows .* hold 8"):
        UpdateStore.open(copy)


def test_on_damage_takes_exclude_or_raise(recording: Path) -> None:
    with pytest.raises(InvalidParameterError, match="on_damage"):
        UpdateStore.open(recording, on_damage="ignore")  # type: ignore[arg-type]


def test_a_second_writer_of_one_path_is_refused_and_the_lock_goes_with_the_first(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    kwargs = {"config": {}, "parameter_shapes": {"a.w": (2,)}, "clients": [ClientInfo(client_id=0)]}
    first = UpdateWriter(path, **kwargs)
    with pytest.raises(RecordingError, match="Another run is writing"):
        UpdateWriter(path, overwrite=True, **kwargs)
    assert (tmp_path / ".x.h5.lock").exists()
    first.finish({})
    assert not (tmp_path / ".x.h5.lock").exists()
    UpdateWriter(path, overwrite=True, **kwargs).finish({})
    with UpdateStore.open(path) as store:
        assert store.complete


def test_a_file_left_open_by_a_killed_writer_opens_in_swmr_mode_and_refreshes(tmp_path: Path) -> None:
    import subprocess
    import sys
    import textwrap

    path = tmp_path / "open.h5"
    script = textwrap.dedent(f"""
        import os
        import numpy as np
        from fedaudit.hooks import ClientInfo
        from fedaudit.record import UpdateWriter
        from fedaudit.types import ClientUpdate
        w = UpdateWriter({str(path)!r}, config={{}}, parameter_shapes={{"a.w": (3,)}}, clients=[ClientInfo(client_id=0)])
        for r in range(3):
            w.add(ClientUpdate(server_round=r, client_id=0, kind="gradient", num_samples=1, local_steps=1, lr=0.1,
                               arrays={{"a.w": np.full(3, r, np.float32)}}))
            w.commit_round()
        os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).resolve().parents[2], timeout=60)
    with pytest.warns(UserWarning, match="incomplete"):
        store = UpdateStore.open(path)
    with store:
        assert store.swmr and store.rounds_completed == 3 and len(store.damaged_rows) == 0
        store.refresh()
        assert store.n_updates == 3 and store.param("a.w")[:, 0].tolist() == [0, 1, 2]
    assert verify_recording(path).ok
