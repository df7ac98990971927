"""Where the recorders sit decides what they see: around Flower's server-side DP wrapper and around LocalDpMod,
in one real simulation; and the wrapper refuses SecAgg+ aggregates in another."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedaudit.record.reader import UpdateStore
from tests.integrations.conftest import DELTA, EPSILON, LOCAL_CLIP, SERVER_CLIP, secagg_run, shared, stacked_run


@pytest.fixture(scope="module")
def stacked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return shared(tmp_path_factory, "flower-stacked", stacked_run)


def _deltas(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Per update, the model delta ``global - local = lr * U * pseudo-gradient``, flattened; and the index."""
    with UpdateStore.open(path) as store:
        scale = (store.index["lr"] * store.index["local_steps"])[:, None]
        flat = np.concatenate([store.param(n).reshape(store.n_updates, -1) for n in store.parameter_names], axis=1)
        return flat.astype(np.float64) * scale, np.stack([store.index["server_round"], store.index["client_id"]], 1)


def test_every_recorder_recorded_every_update(stacked: dict[str, Any]) -> None:
    index = None
    for path in stacked.values():
        with UpdateStore.open(path) as store:
            assert store.complete and store.n_updates == 12 and store.rounds_completed == 3
        _, idx = _deltas(path)
        index = idx if index is None else index
        np.testing.assert_array_equal(idx, index)
    with UpdateStore.open(stacked["server_outside"]) as outside, UpdateStore.open(stacked["server_inside"]) as inside:
        assert outside.config["flower"]["strategy_chain"] == [
            "RecordingStrategy", "DifferentialPrivacyServerSideFixedClipping", "RecordingStrategy", "FedAvg"]
        assert inside.config["flower"]["strategy_chain"] == ["RecordingStrategy", "FedAvg"]


def test_mod_after_local_dp_sees_raw_updates_and_before_it_sees_what_leaves(stacked: dict[str, Any]) -> None:
    raw, _ = _deltas(stacked["mod_inner"])  # mods=[outer, LocalDpMod, inner]: inner wraps the training only
    sent, _ = _deltas(stacked["mod_outer"])
    server, _ = _deltas(stacked["server_outside"])
    np.testing.assert_allclose(server, sent, rtol=1e-5, atol=1e-7)  # the server receives what left the client
    clipped = raw * np.minimum(1.0, LOCAL_CLIP / np.linalg.norm(raw, axis=1, keepdims=True))
    noise = sent - clipped
    expected_std = LOCAL_CLIP * np.sqrt(2 * np.log(1.25 / DELTA)) / EPSILON
    assert np.std(noise) == pytest.approx(expected_std, rel=0.1)  # LocalDpMod's Gaussian noise, nothing else
    assert (np.linalg.norm(raw, axis=1) > LOCAL_CLIP).any()  # clipping did something to the raw updates


def test_wrapper_outside_server_dp_sees_raw_replies_inside_sees_clipped(stacked: dict[str, Any]) -> None:
    outside, _ = _deltas(stacked["server_outside"])
    inside, _ = _deltas(stacked["server_inside"])
    norms = np.linalg.norm(outside, axis=1)
    assert (norms > SERVER_CLIP).all()  # the replies (locally noised) exceed the server's bound
    np.testing.assert_allclose(np.linalg.norm(inside, axis=1), SERVER_CLIP, rtol=1e-4)
    expected = outside * (SERVER_CLIP / norms)[:, None]  # same direction, clipped to the bound
    np.testing.assert_allclose(inside, expected, rtol=1e-3, atol=1e-6)


def test_the_wrapper_refuses_secagg_aggregates(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A real SecAgg+ workflow (legacy FedAvg, 3 clients): every reply carries the aggregate."""
    run = shared(tmp_path_factory, "flower-secagg", secagg_run)
    assert run["errors"], "the SecAgg+ run should have stopped at the recorder"
    name, message = run["errors"][0]
    assert name == "SecureAggregationError"
    assert "All 3 replies of Flower round 1 carry identical arrays" in message
    assert "RecordingMod" in message and "Nothing of this round was written" in message
    with pytest.warns(UserWarning), UpdateStore.open(run["path"]) as store:
        assert store.n_updates == 0 and not store.complete
