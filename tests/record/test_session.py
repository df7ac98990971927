"""RecordingSession: any loop records itself; bad input is a clear error or a counted warning, never a bad file."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from fedaudit.exceptions import IncompleteRecordingWarning, InvalidParameterError, RecordingError
from fedaudit.fl.simulate import pseudo_gradient
from fedaudit.record.reader import UpdateStore
from fedaudit.record.session import RecordingSession, SkippedUpdateWarning, parameter_shapes_of
from fedaudit.types import ClientUpdate

DOCS = Path(__file__).resolve().parents[2] / "docs"
SHAPES = {"fc1.weight": (4, 3), "fc1.bias": (4,), "fc2.weight": (2, 4), "fc2.bias": (2,)}


def arrays(value: float = 0.1) -> dict[str, np.ndarray]:
    return {n: np.full(s, value, np.float32) for n, s in SHAPES.items()}


def session(path: Path, **kwargs) -> RecordingSession:
    kwargs = {"config": {"algorithm": "fedsgd", "lr": 0.1}, "clients": 3, "background": False, **kwargs}
    return RecordingSession(path, SHAPES, **kwargs)


def test_weights_are_recorded_as_the_one_pseudo_gradient(tmp_path: Path) -> None:
    glob, local = arrays(1.0), arrays(0.5)
    with session(tmp_path / "r.h5", attributes={0: {"gender": "F"}, 1: {"gender": "M"}, 2: {"gender": "F"}}) as s:
        s.record_weights(1, 0, glob, local, lr=0.25, local_steps=4, num_samples=9)
        s.end_round(0)
    expected = pseudo_gradient(glob, local, lr=0.25, local_steps=4)
    with UpdateStore.open(tmp_path / "r.h5") as store:
        assert store.complete and store.n_updates == 1
        for n in SHAPES:
            np.testing.assert_array_equal(store.param(n)[0], expected[n])
            np.testing.assert_allclose(store.param(n)[0], 0.5)
        assert int(store.index["local_steps"][0]) == 4 and store.index["lr"][0] == 0.25
        assert list(store.ground_truth()["gender"]) == ["F", "M", "F"]
        assert "hidden" in store.config["not_recorded"] and "lr" not in store.config["not_recorded"]


def test_from_weights_is_the_simulator_kernel() -> None:
    rng = np.random.default_rng(0)
    glob = {n: rng.normal(size=s).astype(np.float32) for n, s in SHAPES.items()}
    local = {n: rng.normal(size=s).astype(np.float32) for n, s in SHAPES.items()}
    update = ClientUpdate.from_weights(server_round=0, client_id=0, global_weights=glob, local_weights=local,
                                       lr=0.01, local_steps=3, num_samples=5)
    for n, a in pseudo_gradient(glob, local, lr=0.01, local_steps=3).items():
        np.testing.assert_array_equal(update.arrays[n], a)
    assert update.kind == "pseudo_gradient" and update.local_weights is local
    with pytest.raises(InvalidParameterError, match="'lr'"):
        ClientUpdate.pseudo_gradient(glob, local, lr=0.0, local_steps=1)
    with pytest.raises(InvalidParameterError, match="'local_steps'"):
        ClientUpdate.pseudo_gradient(glob, local, lr=0.1, local_steps=0)


def test_a_torch_model_gives_names_shapes_and_initial_weights(tmp_path: Path) -> None:
    model = nn.Sequential()
    model.layers = nn.ModuleDict({"fc1": nn.Linear(3, 4), "fc2": nn.Linear(4, 2)})
    assert parameter_shapes_of(model) == SHAPES
    grads = {n: torch.ones(s) for n, s in (("layers." + k, v) for k, v in SHAPES.items())}  # the model's own names
    with RecordingSession(tmp_path / "t.h5", model, config={"lr": 0.1}, clients=[7], background=False) as s:
        s.record_gradient(7, 0, grads, 8)
        s.end_round(0)
        s.record_gradient(7, 1, [torch.zeros(v) for v in SHAPES.values()], 8)  # a list in model order
        s.end_round(1)
    with UpdateStore.open(tmp_path / "t.h5") as store:
        assert store.parameter_names == list(SHAPES) and store.n_updates == 2
        np.testing.assert_array_equal(store.initial_weights()["fc1.weight"], model.layers.fc1.weight.detach().numpy())
        assert list(store.index["server_round"]) == [0, 1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("fc2.bias"), r"client 1 in round 0 lacks parameter 'fc2.bias'"),
        (lambda a: a.__setitem__("fc1.weight", np.zeros((3, 4))), r"client 1 in round 0 gives parameter 'fc1.weight' the shape \(3, 4\)"),
        (lambda a: a.__setitem__("fc3.weight", np.zeros(2)), r"client 1 in round 0 holds parameter 'fc3.weight'"),
        (lambda a: a["fc2.weight"].__setitem__((0, 0), np.nan), r"client 1 in round 0 holds 1 NaN or infinite values in parameter 'fc2.weight'"),
        (lambda a: a["fc1.bias"].__setitem__(0, np.inf), r"client 1 in round 0 holds 1 NaN or infinite values in parameter 'fc1.bias'"),
    ],
)
def test_a_bad_update_is_one_sentence_and_the_file_keeps_only_good_rounds(tmp_path: Path, change, message) -> None:
    path = tmp_path / "bad.h5"
    with session(path) as s:
        s.record_gradient(0, 0, arrays(), 4)
        bad = arrays()
        change(bad)
        with pytest.raises(RecordingError, match=message):
            s.record_gradient(1, 0, bad, 4)
        s.record_gradient(2, 0, arrays(0.2), 4)
        s.end_round(0)
    with UpdateStore.open(path) as store:
        assert store.complete and list(store.index["client_id"]) == [0, 2]
        assert np.isfinite(store.param("fc2.weight")).all()


def test_repeated_client_raises_or_is_counted(tmp_path: Path) -> None:
    with session(tmp_path / "a.h5") as s:
        s.record_gradient(0, 0, arrays(), 4)
        with pytest.raises(RecordingError, match="Client 0 already sent an update in round 0"):
            s.record_gradient(0, 0, arrays(), 4)
        s.end_round(0)
    with session(tmp_path / "b.h5", on_invalid="warn") as s:
        s.record_gradient(0, 0, arrays(), 4)
        with pytest.warns(SkippedUpdateWarning, match=r"already sent .* left out .* \(1 so far\)"):
            assert s.record_gradient(0, 0, arrays(), 4) is None
        bad = arrays()
        bad["fc1.bias"][:] = np.nan
        with pytest.warns(SkippedUpdateWarning, match=r"4 NaN or infinite values in parameter 'fc1.bias'.*\(2 so far\)"):
            s.record_gradient(1, 0, bad, 4)
        s.end_round(0)
        assert s.skipped == {"repeated": 1, "non_finite": 1}
    with UpdateStore.open(tmp_path / "b.h5") as store:
        assert store.n_updates == 1
        assert store.result["skipped_updates"] == {"repeated": 1, "non_finite": 1}


def test_a_client_that_drops_out_mid_round_is_counted(tmp_path: Path) -> None:
    with session(tmp_path / "d.h5") as s:
        s.start_round(0, client_ids=[0, 1, 2])
        s.record_gradient(0, 0, arrays(), 4)
        s.record_gradient(2, 0, arrays(), 4)
        with pytest.warns(SkippedUpdateWarning, match=r"Clients \[1\] were selected for round 0 but sent no update"):
            s.end_round(0)
        assert s.dropped == {1: 1}
    with UpdateStore.open(tmp_path / "d.h5") as store:
        assert store.n_updates == 2 and store.result["dropped_out"] == {"1": 1}


def test_rounds_clients_and_order_are_checked(tmp_path: Path) -> None:
    with session(tmp_path / "o.h5") as s:
        with pytest.raises(RecordingError, match="client 5 in round 0 comes from a client that is not in the client table"):
            s.record_gradient(5, 0, arrays(), 4)
        s.record_gradient(0, 1, arrays(), 4)
        with pytest.raises(RecordingError, match="arrived while round 1 is open"):
            s.record_gradient(1, 2, arrays(), 4)
        s.end_round(1)
        with pytest.raises(RecordingError, match="Round 1 comes after round 1 was recorded"):
            s.record_gradient(1, 1, arrays(), 4)
        with pytest.raises(RecordingError, match="learning rate"):
            s.record_gradient(1, 2, arrays(), 4, lr=float("nan"))
    with pytest.raises(InvalidParameterError, match="clients"):
        session(tmp_path / "c.h5", clients=None)
    assert not (tmp_path / "c.h5").exists()


def test_a_loop_that_crashes_leaves_its_ended_rounds(tmp_path: Path) -> None:
    path = tmp_path / "crash.h5"
    with pytest.raises(ZeroDivisionError), session(path, background=True) as s:
        s.record_gradient(0, 0, arrays(), 4)
        s.end_round(0)
        s.record_gradient(0, 1, arrays(), 4)  # round 1 never ends
        1 / 0  # noqa: B018
    with pytest.warns(IncompleteRecordingWarning), UpdateStore.open(path) as store:
        assert not store.complete and store.rounds_completed == 1 and store.n_updates == 1


def test_an_open_round_at_the_end_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match=r"Round 0 is still open \(1 updates\)"), session(tmp_path / "e.h5") as s:
        s.record_gradient(0, 0, arrays(), 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IncompleteRecordingWarning)
        with UpdateStore.open(tmp_path / "e.h5") as store:
            assert not store.complete and store.n_updates == 0


def test_the_recording_doc_example_runs_and_attacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/recording.md: the plain FedAvg loop, then `fedaudit inspect` and `fedaudit attack --attack inversion`."""
    from typer.testing import CliRunner

    from fedaudit.cli.main import app

    code = re.findall(r"```python\n(.*?)```", (DOCS / "recording.md").read_text(), flags=re.S)[0]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/recording.md", "exec"), {"__name__": "recording_doc"})  # noqa: S102
    with UpdateStore.open("fedavg_plain.h5") as store:
        assert store.complete and store.n_updates == 100 and store.layers == ["fc1", "fc2"]
    runner = CliRunner()
    assert runner.invoke(app, ["inspect", "fedavg_plain.h5"]).exit_code == 0
    result = runner.invoke(app, ["attack", "fedavg_plain.h5", "--attack", "inversion", "--public-corpus", "demo-shadow",
                                 "--json", "attack.json"])
    assert result.exit_code == 0, result.output
    import json

    report = json.loads(Path("attack.json").read_text())
    assert 0.0 <= report["results"]["1"]["asr"] <= 1.0
    assert os.path.exists("fedavg_plain.h5")
