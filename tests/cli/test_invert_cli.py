"""`fedaudit invert` on a tiny demo recording made here: the file, the table, and one sentence for each bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from fedaudit.attacks.reconstruct import RECONSTRUCTIONS, Reconstruction, ReconstructionMethod
from fedaudit.audit.invert import read_inversion
from fedaudit.cli.main import app
from fedaudit.record import UpdateStore

runner = CliRunner()


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two FedSGD rounds of the demo corpus, 4 clients a round."""
    path = tmp_path_factory.mktemp("cli_invert") / "run.h5"
    res = runner.invoke(app, ["record", "--rounds", "2", "--client-fraction", "0.125", "--seed", "0", "--out", str(path)])
    assert res.exit_code == 0, res.output
    return path


def _error(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


def test_labels_writes_the_file_and_prints_the_table(recording: Path, tmp_path: Path) -> None:
    out, js = tmp_path / "labels.h5", tmp_path / "labels.json"
    res = runner.invoke(app, ["invert", str(recording), "--method", "labels", "--updates-per-client", "1",
                              "--out", str(out), "--json", str(js)])
    assert res.exit_code == 0, res.output
    assert "labels reconstruction of" in res.output and "95% CI" in res.output and "chance" in res.output
    assert "caveat:" in res.output and "FedSGD records the gradient of one mini-batch" in " ".join(res.output.split())
    data = read_inversion(out)
    result = json.loads(js.read_text())
    assert result["schema"] == "fedaudit.inversion" and result["method"] == "labels"
    with UpdateStore.open(recording) as store:
        senders = len(np.unique(store.index["client_id"]))
    assert len(data["index"]["row"]) == result["n_updates"] == result["n_clients"] == senders  # one update each
    assert data["label_counts"].shape == (senders, 4)
    assert data["label_counts"].sum(axis=1).tolist() == [20.0] * senders  # the batch size
    assert data["config"]["seed"] == 0 and data["config"]["versions"]["fedaudit"]
    assert data["scores"]["metrics"] == result["metrics"]


def test_analytic_prints_scores_and_features_and_saves_the_plot(recording: Path, tmp_path: Path) -> None:
    plot = tmp_path / "features.png"
    res = runner.invoke(app, ["invert", str(recording), "--method", "analytic", "--clients", "1,2",
                              "--updates-per-client", "1", "--out", str(tmp_path / "a.h5"), "--plot", str(plot)])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    for phrase in ("cosine similarity", "nearest of 40", "gender of", "F0_sma_amean", "Hz", "95% CI", "chance",
                   "Reconstructions live in the model's input space"):
        assert phrase in text, phrase
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 20_000
    again = runner.invoke(app, ["invert", str(recording), "--method", "analytic", "--clients", "1,2",
                                "--out", str(tmp_path / "b.h5"), "--plot", str(plot)])
    assert again.exit_code == 2 and "already exists" in _error(again.output)


def test_the_default_output_sits_beside_the_recording_and_is_not_overwritten(recording: Path) -> None:
    default = recording.with_name(f"{recording.stem}.invert-labels.h5")
    try:
        res = runner.invoke(app, ["invert", str(recording), "--method", "labels", "--clients", "1,2"])
        assert res.exit_code == 0, res.output
        assert default.is_file()
        before = default.stat().st_mtime_ns
        again = runner.invoke(app, ["invert", str(recording), "--method", "labels", "--clients", "1,2"])
        assert again.exit_code == 2
        line = _error(again.output)
        assert "already exists" in line and "--force" in line
        assert default.stat().st_mtime_ns == before
        forced = runner.invoke(app, ["invert", str(recording), "--method", "labels", "--clients", "1,2", "--force"])
        assert forced.exit_code == 0, forced.output
    finally:
        default.unlink(missing_ok=True)


class _NeedsGlobals(ReconstructionMethod):
    name: ClassVar[str] = "test-needs-globals"
    produces: ClassVar[frozenset[str]] = frozenset({"features"})
    needs_globals: ClassVar[bool] = True

    def reconstruct(self, update):  # pragma: no cover - never reached: the recording has no globals
        return Reconstruction(method=self.name, row=update.row, client_id=update.client_id,
                              server_round=update.server_round)


@pytest.fixture
def needs_globals() -> Iterator[str]:
    RECONSTRUCTIONS[_NeedsGlobals.name] = _NeedsGlobals
    try:
        yield _NeedsGlobals.name
    finally:
        RECONSTRUCTIONS.pop(_NeedsGlobals.name, None)


def test_a_method_needing_globals_on_a_recording_without_them(recording: Path, needs_globals: str,
                                                             tmp_path: Path) -> None:
    res = runner.invoke(app, ["invert", str(recording), "--method", needs_globals, "--out", str(tmp_path / "x.h5")])
    assert res.exit_code == 2
    line = _error(res.output)
    assert "recorded without them" in line and "--store-globals" in line and "labels" in line
    assert not (tmp_path / "x.h5").exists()


def test_an_unknown_method_names_the_known_ones(recording: Path) -> None:
    res = runner.invoke(app, ["invert", str(recording), "--method", "telepathy"])
    assert res.exit_code == 2
    line = _error(res.output)
    assert "'telepathy'" in line and "labels" in line


@pytest.mark.parametrize(("args", "expected"), [
    (["--clients", "0,x"], "--clients takes client ids"),
    (["--clients", "999"], "sent no update"),
    (["--option", "estimator"], "--option takes KEY=VALUE"),
    (["--option", "nonsense=1"], "takes the options"),
    (["--plot", "p.gif"], "--plot writes .png, .svg or .pdf"),
])
def test_bad_options_are_one_sentence(recording: Path, tmp_path: Path, args: list[str], expected: str) -> None:
    res = runner.invoke(app, ["invert", str(recording), "--method", "labels", "--out", str(tmp_path / "o.h5"), *args])
    assert res.exit_code == 2, res.output
    assert expected in _error(res.output)
    assert not (tmp_path / "o.h5").exists()


def test_a_missing_file_and_a_damaged_file(recording: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["invert", str(tmp_path / "nowhere.h5")])
    assert res.exit_code == 2 and "does not exist" in _error(res.output)
    damaged = tmp_path / "damaged.h5"
    data = bytearray(recording.read_bytes())
    damaged.write_bytes(bytes(data[: len(data) // 3]))  # a copy cut short
    res = runner.invoke(app, ["invert", str(damaged), "--method", "labels"])
    assert res.exit_code != 0
    assert str(damaged) in _error(res.output)
    not_h5 = tmp_path / "notes.h5"
    not_h5.write_text("not a recording")
    res = runner.invoke(app, ["invert", str(not_h5), "--method", "labels"])
    assert res.exit_code != 0 and str(not_h5) in _error(res.output)
    assert not list(tmp_path.glob("*.invert-*.h5"))


def test_a_damaged_update_row_is_left_out_with_a_warning(recording: Path, tmp_path: Path) -> None:
    copy = tmp_path / "rowdamaged.h5"
    copy.write_bytes(recording.read_bytes())
    with h5py.File(copy, "r+") as f:
        ds = f["updates/fc3/bias"]
        row = ds[0]
        ds[0] = row + 1.0  # the chunk no longer matches its checksum
    res = runner.invoke(app, ["invert", str(copy), "--method", "labels", "--out", str(tmp_path / "r.h5")])
    assert res.exit_code == 0, res.output
    assert "damaged" in res.output
    assert read_inversion(tmp_path / "r.h5")["index"]["row"].size == 7


def test_the_command_module_imports_nothing_heavy() -> None:
    """`fedaudit --help` stays fast: the inversion's libraries load only when the command runs."""
    code = ("import sys, fedaudit.cli.invert; heavy = {'matplotlib', 'torch', 'h5py', 'fedaudit.audit', "
            "'fedaudit.attacks', 'scipy'} & set(sys.modules); print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
