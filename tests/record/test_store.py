from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from fedaudit.config import FLConfig
from fedaudit.audit import record_run
from fedaudit.exceptions import FormatVersionError, IncompleteRecordingWarning, OutputExistsError, RecordingError
from fedaudit.fl import simulate
from fedaudit.hooks import BaseHook, ClientInfo
from fedaudit.record import Recorder, UpdateStore
from tests.conftest import make_table

REPO = Path(__file__).resolve().parents[2]


class Collect(BaseHook):
    def __init__(self) -> None:
        self.updates = []
        self.globals = []

    def on_round_start(self, event):
        self.globals.append(event.global_weights)

    def on_client_update(self, update):
        self.updates.append(update)


@pytest.mark.parametrize("algorithm", ["fedsgd", "fedavg"])
def test_round_trip_every_update_config_and_ground_truth(tmp_path: Path, algorithm: str) -> None:
    table = make_table()
    config = FLConfig(algorithm=algorithm, rounds=4, client_fraction=0.3, seed=2)
    seen = Collect()
    path = tmp_path / "run.h5"
    result = record_run(config, table, path, store_globals=True, hooks=[seen], extra_config={"defense": None})
    with UpdateStore.open(path) as store:
        assert store.complete
        assert store.rounds_completed == 4
        assert store.n_updates == len(seen.updates) == 4 * 2
        assert store.layers == ["fc1", "fc2", "fc3"]
        assert store.shape("fc1.weight") == (256, 12)
        assert store.config["algorithm"] == algorithm
        assert store.config["seed"] == 2 and store.config["lr"] == config.client_lr
        assert store.config["data"]["feature_set"] == "synthetic"
        assert store.config["defense"] is None
        assert "torch" in store.versions and "h5py" in store.versions
        kind = 0 if algorithm == "fedsgd" else 1
        assert set(store.index["kind"].tolist()) == {kind}
        for row, update in enumerate(seen.updates):
            assert store.index["server_round"][row] == update.server_round
            assert store.index["client_id"][row] == update.client_id
            assert store.index["num_samples"][row] == update.num_samples
            assert store.index["local_steps"][row] == update.local_steps
        w = store.param("fc1.weight")
        np.testing.assert_array_equal(w, np.stack([u.arrays["fc1.weight"] for u in seen.updates]))
        layer = store.layer("fc2")
        np.testing.assert_array_equal(layer["bias"], np.stack([u.arrays["fc2.bias"] for u in seen.updates]))
        cid = seen.updates[0].client_id
        mine = [u for u in seen.updates if u.client_id == cid]
        np.testing.assert_array_equal(store.client(cid)["fc3.weight"], np.stack([u.arrays["fc3.weight"] for u in mine]))
        np.testing.assert_array_equal(store.round(2)["fc1.bias"], np.stack(
            [u.arrays["fc1.bias"] for u in seen.updates if u.server_round == 2]))
        np.testing.assert_array_equal(store.global_weights(1)["fc1.weight"], seen.globals[1]["fc1.weight"])
        gt = store.ground_truth()
        assert store._f["ground_truth"].attrs["evaluation_only"]
        assert "gender" not in store.clients and set(gt["gender"]) == {"F", "M"}
        assert len(gt["speaker_id"]) == len(store.client_ids) == len(result.split.clients)
        np.testing.assert_allclose(store.metrics()["val_uar"], [m.val_uar for m in result.history])
        assert store.result["best_round"] == result.best_round


def test_float16_storage_halves_size_and_keeps_values(tmp_path: Path) -> None:
    table = make_table(n_features=200)
    seen = Collect()
    record_run(FLConfig(rounds=3, seed=0), table, tmp_path / "a.h5", dtype="float16", hooks=[seen])
    record_run(FLConfig(rounds=3, seed=0), table, tmp_path / "b.h5")
    with UpdateStore.open(tmp_path / "a.h5") as a, UpdateStore.open(tmp_path / "b.h5") as b:
        assert a.param("fc1.weight").dtype == np.float16
        np.testing.assert_allclose(a.param("fc1.weight"), b.param("fc1.weight"), rtol=2e-3, atol=1e-6)
    with h5py.File(tmp_path / "a.h5", "r") as a, h5py.File(tmp_path / "b.h5", "r") as b:
        half = a["updates/fc1/weight"].id.get_storage_size()
        full = b["updates/fc1/weight"].id.get_storage_size()
    assert half == full // 2 > 0


def test_existing_file_is_never_overwritten_without_force(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    path.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="already exists"):
        record_run(FLConfig(rounds=1), make_table(), path)
    assert path.read_bytes() == b"precious"
    record_run(FLConfig(rounds=1), make_table(), path, overwrite=True)
    with UpdateStore.open(path) as store:
        assert store.complete


def test_reader_checks_format_version_and_type(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    record_run(FLConfig(rounds=1), make_table(), path)
    with h5py.File(path, "r+") as f:
        f.attrs["encoding-version"] = "2.0.0"
    with pytest.raises(FormatVersionError, match="2.0.0"):
        UpdateStore.open(path)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(FormatVersionError, match="not a fedaudit recording"):
        UpdateStore.open(other)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(RecordingError, match="not a readable HDF5"):
        UpdateStore.open(junk)
    with pytest.raises(RecordingError, match="No recording"):
        UpdateStore.open(tmp_path / "missing.h5")


def test_non_contiguous_row_reads_match_full_read(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    record_run(FLConfig(rounds=5, client_fraction=0.4, seed=1), make_table(), path)
    with UpdateStore.open(path) as store:
        full = store.param("fc1.weight")
        rows = np.array([7, 0, 1, 2, 9, 4])
        np.testing.assert_array_equal(store.param("fc1.weight", rows), full[rows])
        np.testing.assert_array_equal(store.param("fc1.weight", slice(1, 8, 3)), full[1:8:3])
        blocks = np.concatenate([b for _, b in store.iter_rows("fc1.weight", batch=3)])
        np.testing.assert_array_equal(blocks, full)


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from fedaudit.config import FLConfig
    from fedaudit.hooks import BaseHook
    from fedaudit.audit import record_run
    from tests.conftest import make_table

    class Slow(BaseHook):
        def on_round_end(self, event):
            print(event.server_round, flush=True)
            time.sleep(0.02)

    record_run(FLConfig(rounds=100000, client_fraction=0.5, seed=0), make_table(n_features=300), sys.argv[1],
               hooks=[Slow()])
    """
)


@pytest.mark.parametrize("delay", [0.3, 1.0])
def test_sigkill_mid_run_leaves_readable_file_with_completed_rounds(tmp_path: Path, delay: float) -> None:
    path = tmp_path / "killed.h5"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_SCRIPT, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    # Wait until a few rounds have completed, then kill without warning.
    seen = 0
    deadline = time.monotonic() + 60
    while seen < 3 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += 1
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert seen >= 3, "the recording subprocess never completed three rounds"
    with pytest.warns(IncompleteRecordingWarning, match="incomplete"):
        store = UpdateStore.open(path)
    with store:
        assert not store.complete
        assert store.rounds_completed >= 3
        rounds = store.index["server_round"]
        assert set(rounds.tolist()) == set(range(store.rounds_completed))
        w = store.param("fc1.weight")
        assert w.shape[0] == store.n_updates == len(rounds)
        assert np.isfinite(w).all() and np.abs(w).sum(axis=(1, 2)).min() > 0
        assert len(store.metrics()["val_uar"]) == store.rounds_completed


def test_incomplete_warning_absent_on_complete_file(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    record_run(FLConfig(rounds=1), make_table(), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        UpdateStore.open(path).close()


def test_recorder_refuses_existing_path_at_construction(tmp_path: Path) -> None:
    path = tmp_path / "x.h5"
    path.touch()
    with pytest.raises(OutputExistsError, match="already exists"):
        Recorder(path)


def test_background_and_inline_writers_record_the_same_run(tmp_path: Path) -> None:
    table = make_table()
    for background in (True, False):
        with Recorder(tmp_path / f"{background}.h5", background=background, store_globals=True) as rec:
            simulate(FLConfig(rounds=5, client_fraction=0.3, seed=4), table, hooks=[rec])
    with UpdateStore.open(tmp_path / "True.h5") as a, UpdateStore.open(tmp_path / "False.h5") as b:
        assert a.complete and b.complete and a.n_updates == b.n_updates
        for name in a.parameter_names:
            np.testing.assert_array_equal(a.param(name), b.param(name))
            np.testing.assert_array_equal(a.global_weights(3)[name], b.global_weights(3)[name])
        for col in a.index:
            np.testing.assert_array_equal(a.index[col], b.index[col])


def test_errors_in_the_writer_process_reach_the_caller(tmp_path: Path) -> None:
    from fedaudit.record._process import ProcessWriter
    from fedaudit.types import ClientUpdate

    shapes = {"fc1.weight": (2, 3), "fc1.bias": (2,)}
    path = tmp_path / "broken.h5"
    writer = ProcessWriter(path, {"config": {}, "parameter_shapes": shapes,
                                  "clients": [ClientInfo(client_id=0, corpus="c", n_train=1, n_val=0)]})
    good = ClientUpdate(server_round=0, client_id=0, kind="gradient", num_samples=1, local_steps=1, lr=0.1,
                        arrays={"fc1.weight": np.ones((2, 3), np.float32), "fc1.bias": np.ones(2, np.float32)})
    bad = ClientUpdate(server_round=1, client_id=0, kind="gradient", num_samples=1, local_steps=1, lr=0.1,
                       arrays={"fc1.weight": np.ones((3, 3), np.float32), "fc1.bias": np.ones(2, np.float32)})
    writer.commit_round([good], None, {"server_round": 0}, shapes, "<f4")
    writer.commit_round([bad], None, {"server_round": 1}, shapes, "<f4")
    with pytest.raises(RecordingError, match=r"shape \(3, 3\)"):
        writer.finish({})
    with pytest.warns(IncompleteRecordingWarning):
        store = UpdateStore.open(path)
    with store:
        assert store.rounds_completed == 1 and store.n_updates == 1


def test_existing_file_error_comes_from_the_writer_process(tmp_path: Path) -> None:
    from fedaudit.record._process import ProcessWriter

    path = tmp_path / "x.h5"
    path.write_bytes(b"keep")
    with pytest.raises(OutputExistsError, match="already exists"):
        ProcessWriter(path, {"config": {}, "parameter_shapes": {"a.w": (1,)},
                             "clients": [ClientInfo(client_id=0, corpus="c", n_train=1, n_val=0)]})
    assert path.read_bytes() == b"keep"
