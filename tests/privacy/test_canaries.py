"""Canary clients in a simulated run: kept apart from the real run, and catching a broken defense."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from fedaudit.config import FLConfig
from fedaudit.defenses import DefenseContext, LocalDPDefense, UserLevelDPDefense, build_defenses
from fedaudit.defenses.transforms import LocalDP, UserLevelDP
from fedaudit.exceptions import InvalidParameterError
from fedaudit.fl import simulate
from fedaudit.hooks import BaseHook
from fedaudit.privacy import CanaryClients, canary_clients
from fedaudit.types import DefensePieces
from tests.conftest import make_table

CONFIG = FLConfig(algorithm="fedsgd", rounds=50, client_fraction=0.1, seed=0)


@pytest.fixture(autouse=True)
def _one_blas_thread():
    # The defenses' norms use BLAS; on a loaded 2-core machine threaded BLAS stalls for milliseconds a call.
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def table():
    return make_table()


class Collect(BaseHook):
    def __init__(self) -> None:
        self.updates = []
        self.result = None

    def on_client_update(self, update):
        self.updates.append(update)

    def on_run_end(self, event):
        self.result = event.result


def _udp(table, z: float, *, broken: bool = False) -> DefensePieces:
    pieces = build_defenses([UserLevelDPDefense(clip=1.0, noise_multiplier=z)], DefenseContext.for_table(CONFIG, table))
    if broken:  # noise std computed in parameter units (lr z C) but added to an update in gradient units
        pieces = replace(pieces, transforms=(UserLevelDP(clip=1.0, noise_multiplier=z * CONFIG.client_lr),))
    return pieces


def _audit(table, pieces: DefensePieces, n: int = 500, seed: int = 1) -> dict:
    canaries = canary_clients(pieces.settings, n_canaries=n, rounds=CONFIG.rounds, seed=seed)
    return simulate(CONFIG, table, defenses=pieces, canaries=canaries).defense_report["privacy_audit"]


def test_schedule_is_seeded_and_spreads_canaries_over_the_rounds() -> None:
    a = CanaryClients(n_canaries=1000, rounds=200, clip=0.5, seed=3, rounds_per_canary=2)
    b = CanaryClients(n_canaries=1000, rounds=200, clip=0.5, seed=3, rounds_per_canary=2)
    assert np.array_equal(a.inserted, b.inserted) and np.array_equal(a.joined, b.joined)
    assert 440 < a.inserted.sum() < 560
    assert a.canaries_per_round == 10.0
    assert sum(len(s) for s in a.schedule) == 2000  # each canary in 2 distinct rounds
    assert all(len(set(row)) == 2 for row in a.joined.tolist())
    u = a.direction(7, 300)
    assert np.linalg.norm(u) == pytest.approx(1.0) and np.array_equal(u, b.direction(7, 300))


def test_canaries_take_the_defense_clip_and_view() -> None:
    udp = canary_clients({"names": ["udp"], "udp": {"clip": 0.25}}, n_canaries=10, rounds=5)
    ldp = canary_clients({"names": ["ldp"], "ldp": {"clip": 2.0}}, n_canaries=10, rounds=5)
    assert (udp.view, udp.clip, ldp.view, ldp.clip) == ("aggregate", 0.25, "release", 2.0)
    with pytest.raises(InvalidParameterError, match="n_canaries"):
        CanaryClients(n_canaries=2, rounds=5, clip=1.0)
    with pytest.raises(InvalidParameterError, match="rounds_per_canary"):
        CanaryClients(n_canaries=10, rounds=5, clip=1.0, rounds_per_canary=6)


def test_canaries_never_reach_the_model_the_hooks_or_the_real_accounting(table) -> None:
    pieces = _udp(table, 1.0)
    plain, with_canaries = Collect(), Collect()
    a = simulate(CONFIG, table, defenses=pieces, hooks=[plain])
    canaries = canary_clients(pieces.settings, n_canaries=200, rounds=CONFIG.rounds, seed=0)
    b = simulate(CONFIG, table, defenses=pieces, hooks=[with_canaries], canaries=canaries)
    for name in a.final_weights:
        assert np.array_equal(a.final_weights[name], b.final_weights[name])
    assert [u.client_id for u in plain.updates] == [u.client_id for u in with_canaries.updates]
    assert all(u.client_id >= 0 for u in with_canaries.updates)
    for u, v in zip(plain.updates, with_canaries.updates, strict=True):
        assert all(np.array_equal(u.arrays[n], v.arrays[n]) for n in u.arrays)
    assert a.privacy == b.privacy
    assert [h.as_mapping() for h in a.history] == [h.as_mapping() for h in b.history]
    assert "privacy_audit" not in a.defense_report
    assert with_canaries.result["privacy_audit"]["n_canaries"] == 200  # in the run result the recorder stores


def test_a_correct_udp_run_stays_below_its_claim(table) -> None:
    audit = _audit(table, _udp(table, 2.0))
    assert audit["claimed"][0]["mechanism"] == "udp"
    assert audit["epsilon_claimed"] > 1.5
    assert audit["epsilon_lower_bound"] < audit["epsilon_claimed"]
    assert audit["exceeds_claim"] is False
    assert audit["confidence"] == 0.95 and audit["bounds"]["one_run"]["confidence"] == 0.975


def test_udp_with_noise_in_the_wrong_units_is_caught(table) -> None:
    audit = _audit(table, _udp(table, 2.0, broken=True))
    assert audit["epsilon_lower_bound"] > audit["epsilon_claimed"]
    assert audit["exceeds_claim"] is True
    assert audit["gdp"]["epsilon"] > audit["epsilon_claimed"]


def test_ldp_canaries_are_scored_on_their_own_release(table) -> None:
    pieces = build_defenses([LocalDPDefense(clip=1.0, epsilon=2.0)], DefenseContext.for_table(CONFIG, table))
    correct = _audit(table, pieces, n=400)
    assert correct["view"] == "release" and correct["epsilon_claimed"] == 2.0
    assert correct["epsilon_lower_bound"] < 2.0
    broken = replace(pieces, transforms=(LocalDP(clip=1.0, epsilon=200.0),))  # claims 2, noises for 200
    assert _audit(table, broken, n=400)["epsilon_lower_bound"] > 2.0


def test_an_undefended_run_is_limited_only_by_the_canary_count(table) -> None:
    audit = _audit(table, DefensePieces(settings={"names": []}), n=200)
    assert audit["epsilon_claimed"] is None and audit["exceeds_claim"] is None
    assert audit["epsilon_lower_bound"] > 2.5  # perfect separation of 200 canaries
