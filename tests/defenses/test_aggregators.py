"""The server aggregators: SEFL secure aggregation and the LDP client selection strategy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fedaudit.defenses.paillier import InsecureKeyWarning
from fedaudit.defenses.secure import SecureAggregation, SecureAggregationConfig
from fedaudit.defenses.selection import SelectiveAggregation
from fedaudit.types import Aggregate, ClientUpdate


def _update(cid: int, arr: np.ndarray, *, server_round: int = 0, lr: float = 1.0, steps: int = 1,
            num_samples: int = 10) -> ClientUpdate:
    return ClientUpdate(server_round=server_round, client_id=cid, kind="gradient", arrays={"w": arr},
                        num_samples=num_samples, local_steps=steps, lr=lr)


def test_selective_aggregation_keeps_least_noisy_updates() -> None:
    agg = SelectiveAggregation(keep=0.5, noise_std=1.0)
    rng = np.random.default_rng(0)
    ups = [_update(cid, rng.normal(size=1000) + signal) for cid, signal in enumerate([0.0, 3.0, 0.0, 3.0])]
    for u in ups:
        assert agg.client_send(u) is u
    out = agg.server_aggregate()
    assert isinstance(out, Aggregate) and out.decrypt_seconds is None
    np.testing.assert_allclose(out.mean_delta["w"], (ups[1].arrays["w"] + ups[3].arrays["w"]) / 2)
    assert agg.kept == 2 and agg.received == 4


def test_selective_aggregation_weights_by_samples_and_scales_to_model_deltas() -> None:
    agg = SelectiveAggregation(keep=1.0, noise_std=0.0)
    a, b = np.ones(4), np.full(4, 2.0)
    agg.client_send(_update(0, a, lr=0.5, steps=2, num_samples=30))
    agg.client_send(_update(1, b, lr=0.5, steps=1, num_samples=10))
    out = agg.server_aggregate().mean_delta["w"]
    np.testing.assert_allclose(out, 0.75 * (0.5 * 2 * a) + 0.25 * (0.5 * 1 * b))


@pytest.fixture(scope="module")
def secure() -> SecureAggregation:
    config = SecureAggregationConfig(key_bits=512, insecure_key=True, prune_percent=50.0, clip=0.5,
                                     encrypted_rounds=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        return SecureAggregation(config, max_clients=3)


@pytest.mark.parametrize("server_round", [0, 1])
def test_secure_aggregation_sets_typed_wire_costs_and_returns_an_aggregate(
    secure: SecureAggregation, server_round: int
) -> None:
    # Prepare
    rng = np.random.default_rng(server_round)
    updates = [_update(cid, rng.normal(scale=0.1, size=(6, 5)).astype(np.float32), server_round=server_round,
                       lr=0.5) for cid in range(3)]

    # Execute
    sent = [secure.client_send(u) for u in updates]
    aggregate = secure.server_aggregate()

    # Assert: costs on each update; real encryption (and timings) in the first round only
    encrypted = server_round == 0
    n_plaintexts = secure.encoder.n_plaintexts(30)
    for s in sent:
        assert isinstance(s.bytes_sent, int) and s.bytes_sent == n_plaintexts * 128  # 512-bit key: 128-byte ciphertexts
        assert (s.encrypt_seconds is not None and s.encrypt_seconds > 0) if encrypted else s.encrypt_seconds is None
        assert (s.arrays["w"] == 0).mean() >= 0.5  # half of the layer pruned
    assert isinstance(aggregate, Aggregate)
    assert (aggregate.decrypt_seconds is not None and aggregate.decrypt_seconds > 0) if encrypted else (
        aggregate.decrypt_seconds is None)
    # The mean model delta is the mean of what a key holder sees, times lr * U.
    expected = np.mean([0.5 * s.arrays["w"].astype(np.float64) for s in sent], axis=0)
    np.testing.assert_allclose(aggregate.mean_delta["w"], expected, atol=1e-6)
    assert not hasattr(secure, "last_decrypt_seconds")
    report = secure.report()
    assert set(report) == {"clipped_share", "key_warnings"} and 0.0 <= report["clipped_share"] <= 1.0
