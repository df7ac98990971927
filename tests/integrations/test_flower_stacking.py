"""Where the recorders sit decides what they see: around Flower's server-side DP wrapper and around LocalDpMod,
in one real simulation; and the wrapper refuses SecAgg+ aggregates in another."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedaudit.record.reader import UpdateStore
from tests.integrations.conftest import example_app, shared

SERVER_CLIP = 0.05  # bound on the norm of a client's model delta (global - local), server side
LOCAL_CLIP, EPSILON, DELTA = 0.08, 10.0, 1e-5  # LocalDpMod: clip the delta, then add Gaussian noise


def _stacked_run(folder: Path) -> dict[str, Any]:
    from flwr.clientapp.mod import LocalDpMod
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

    from fedaudit.integrations.flower import RecordingMod, RecordingStrategy, merge_client_recordings

    example = example_app()
    setup = example.Setup(clients=4, rounds=3, hidden=(16,), dropout=(0.0,))
    options = example.recording_options(setup)
    paths = {k: folder / f"{k}.h5" for k in ("server_inside", "server_outside", "mod_inner", "mod_outer")}

    def wrap(inner: Any) -> Any:  # RecordingStrategy(DP(RecordingStrategy(FedAvg)))
        dp = DifferentialPrivacyServerSideFixedClipping(inner, noise_multiplier=0.5, clipping_norm=SERVER_CLIP,
                                                        num_sampled_clients=setup.clients)
        return RecordingStrategy(dp, paths["server_outside"], run_config=setup.flower_run_config(),
                                 client_id_key="partition-id", **options)

    spools = {"mod_outer": folder / "spool_outer", "mod_inner": folder / "spool_inner"}
    mods = [RecordingMod(spools["mod_outer"]), LocalDpMod(LOCAL_CLIP, LOCAL_CLIP, EPSILON, DELTA),
            RecordingMod(spools["mod_inner"])]
    example.simulate(example.server_app(setup, out=paths["server_inside"], wrap=wrap),
                     example.client_app(setup, mods=mods), setup.clients)
    for key, spool in spools.items():
        merge_client_recordings(spool, paths[key], config=options["config"], clients=options["clients"])
    return {k: str(v) for k, v in paths.items()}


def _secagg_run(folder: Path) -> dict[str, Any]:
    from flwr.simulation import run_simulation

    from tests.integrations._apps import secagg_apps

    errors: list[BaseException] = []
    server, client = secagg_apps(folder / "secagg.h5", n_clients=3, errors=errors)
    try:
        run_simulation(server_app=server, client_app=client, num_supernodes=3,
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    except Exception:  # noqa: BLE001, S110 - the server's error is read from `errors`
        pass
    return {"path": str(folder / "secagg.h5"), "errors": [(type(e).__name__, str(e)) for e in errors]}


@pytest.fixture(scope="module")
def stacked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return shared(tmp_path_factory, "flower-stacked", _stacked_run)


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
    run = shared(tmp_path_factory, "flower-secagg", _secagg_run)
    assert run["errors"], "the SecAgg+ run should have stopped at the recorder"
    name, message = run["errors"][0]
    assert name == "SecureAggregationError"
    assert "All 3 replies of Flower round 1 carry identical arrays" in message
    assert "RecordingMod" in message and "Nothing of this round was written" in message
    with pytest.warns(UserWarning), UpdateStore.open(run["path"]) as store:
        assert store.n_updates == 0 and not store.complete
