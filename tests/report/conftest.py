"""A realistic ``results.json`` as ``fedaudit audit`` writes it: six settings of a demo grid."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest


def r(asr: float, lo: float, hi: float, *, n_clients: int = 32, n: int | str = 1, auc: float | None = 0.9,
      chance: float = 0.5) -> dict[str, Any]:
    """One attack result."""
    return {"asr": asr, "ci_low": lo, "ci_high": hi, "uar": asr, "auc": auc, "chance": chance,
            "n_clients": n_clients, "repeats": 10, "n_updates": n}


def _udp(eps: float) -> dict[str, Any]:
    return {"mechanism": "udp", "level": "user", "delta": 1e-5, "accountant": "rdp", "noise_multiplier": 1.1,
            "epsilon_per_client": {str(i): eps * (0.98 + 0.001 * i) for i in range(32)},
            "epsilon_aggregate": eps / 4, "rounds_joined": {str(i): 20 for i in range(32)}}


def _cost(wall: float, *, bytes_per_round: float = 3_440_000, enc: float | None = None) -> dict[str, Any]:
    return {"bytes_per_round": bytes_per_round, "plain_bytes_per_round": 3_440_000, "encrypt_seconds": enc,
            "decrypt_seconds": None if enc is None else enc / 2, "wall_seconds": wall}


def _cell(id: str, label: str, *, algorithm: str = "fedsgd", defenses: tuple[str, ...] = (), view: str = "server",
          n_clients: int = 32, uar: float = 0.82, privacy: list[dict[str, Any]] | None = None,
          cost: dict[str, Any] | None = None, attacks: list[dict[str, Any]], warnings: list[str] | None = None
          ) -> dict[str, Any]:
    return {
        "id": id, "label": label, "algorithm": algorithm, "defenses": list(defenses),
        "defense_settings": {"names": list(defenses)}, "view": view, "n_clients": n_clients, "rounds": 200,
        "utility": {"test_uar": uar, "test_acc": uar + 0.01, "val_uar": uar + 0.02, "best_round": 180},
        "privacy": privacy or [], "cost": cost or _cost(41.2),
        "recording": f"cache/recordings/{id}.h5", "attacks": attacks, "warnings": warnings or [],
    }


def _stats(layers: dict[str, dict[str, Any]], curve: dict[str, dict[str, Any]] | None = None, *,
           attacker: str = "defense-aware", shadow_defenses: tuple[str, ...] = (), warnings: list[str] | None = None
           ) -> dict[str, Any]:
    return {"attack": "stats", "attacker": attacker, "shadow_defenses": list(shadow_defenses), "layers": layers,
            "n_updates": curve or {}, "fit_seconds": 3.1, "score_seconds": 0.2, "warnings": warnings or []}


def make_results() -> dict[str, Any]:
    """Six settings: undefended FedSGD and FedAvg, UDP at two epsilons (one with an undefended
    attacker scoring below chance), SEFL in the key holder's view, and FedSGD with 6 clients."""
    cells = [
        _cell("fedsgd", "FedSGD, no defense", attacks=[
            _stats({"fc1": r(0.95, 0.88, 1.0, auc=0.99), "fc2": r(0.81, 0.70, 0.91), "fc3": r(0.70, 0.58, 0.81),
                    "fused": r(0.94, 0.86, 1.0)},
                   {"1": r(0.94, 0.86, 1.0), "5": r(0.96, 0.90, 1.0, n=5), "all": r(0.97, 0.91, 1.0, n="all")}),
            {"attack": "inversion", "attacker": "public data", "shadow_defenses": [],
             "layers": {"fc1": r(0.75, 0.62, 0.86, auc=None)}, "n_updates": {}, "fit_seconds": None,
             "warnings": []},
        ]),
        _cell("fedavg", "FedAvg, no defense", algorithm="fedavg", uar=0.84, attacks=[
            _stats({"fc1": r(0.78, 0.66, 0.88), "fc2": r(0.69, 0.56, 0.80), "fc3": r(0.60, 0.48, 0.72),
                    "fused": r(0.77, 0.65, 0.88)},
                   {"1": r(0.77, 0.65, 0.88), "5": r(0.80, 0.68, 0.90, n=5), "all": r(0.84, 0.73, 0.93, n="all")}),
        ]),
        _cell("fedsgd-udp-eps10", "FedSGD, UDP (eps 10)", defenses=("udp",), uar=0.61, privacy=[_udp(10.0)],
              cost=_cost(44.0), attacks=[
            _stats({"fc1": r(0.56, 0.44, 0.68), "fc2": r(0.52, 0.40, 0.64), "fc3": r(0.50, 0.38, 0.62),
                    "fused": r(0.55, 0.43, 0.67)},
                   {"1": r(0.55, 0.43, 0.67), "5": r(0.57, 0.45, 0.69, n=5), "all": r(0.59, 0.47, 0.71, n="all")},
                   shadow_defenses=("udp",)),
            _stats({"fc1": r(0.38, 0.25, 0.52), "fc2": r(0.36, 0.22, 0.50), "fc3": r(0.35, 0.22, 0.49),
                    "fused": r(0.379, 0.24, 0.52)}, attacker="undefended",
                   warnings=["Shadow runs without the target's defense (udp): the attacker learned from undefended "
                             "updates, so this figure may understate the leakage."]),
        ]),
        _cell("fedsgd-udp-eps1000", "FedSGD, UDP (eps 1000)", defenses=("udp",), uar=0.79, privacy=[_udp(1000.0)],
              cost=_cost(43.0), attacks=[
            _stats({"fc1": r(0.66, 0.55, 0.77), "fc2": r(0.58, 0.46, 0.70), "fc3": r(0.52, 0.40, 0.64),
                    "fused": r(0.64, 0.52, 0.75)},
                   {"1": r(0.64, 0.52, 0.75), "5": r(0.68, 0.56, 0.79, n=5)}, shadow_defenses=("udp",)),
        ]),
        _cell("fedsgd-sefl", "FedSGD, SEFL", defenses=("sefl",), view="key holder", uar=0.81,
              cost=_cost(310.0, bytes_per_round=55_000_000, enc=0.82), attacks=[
            _stats({"fc1": r(0.97, 0.91, 1.0, auc=1.0), "fc2": r(0.84, 0.73, 0.94), "fused": r(0.96, 0.90, 1.0)},
                   {"1": r(0.96, 0.90, 1.0), "all": r(0.98, 0.93, 1.0, n="all")}, shadow_defenses=("sefl",)),
        ], warnings=["Secure aggregation: the server sees ciphertexts only; these figures are what a holder of the "
                     "private key (any client) sees after decryption."]),
        _cell("fedsgd-6clients", "FedSGD, 6 clients", n_clients=6, uar=0.70, attacks=[
            _stats({"fc1": r(0.83, 0.50, 1.0, n_clients=6), "fused": r(0.80, 0.45, 1.0, n_clients=6)},
                   {"1": r(0.80, 0.45, 1.0, n_clients=6), "5": r(0.83, 0.50, 1.0, n_clients=6, n=5)}),
        ], warnings=["Only 6 clients: each client moves the ASR by 17 points and the interval is wide."]),
    ]
    return {
        "schema": "fedaudit.audit_results", "schema_version": "1.0.0", "created": "2026-12-02T03:20:00+00:00",
        "config": {"rounds": 200, "seed": 0, "settings": [{"id": c["id"]} for c in cells]},
        "config_hash": "9f2c" + "0" * 60,
        "versions": {"fedaudit": "0.1.0", "torch": "2.13.0", "python": "3.11.7"},
        "setup": {"private_corpora": ["demo-private"], "shadow_corpora": ["demo-shadow"],
                  "public_corpora": ["demo-shadow"], "synthetic": True, "feature_set": "emobase",
                  "n_features": 988, "rounds": 200, "shadow_runs": 3, "seed": 0, "normalization": "global"},
        "commands": ["fedaudit audit --config audit.toml --out results", "fedaudit report results --out report"],
        "wall_seconds": 812.5,
        "cells": cells,
    }


def write_results(folder: Path, results: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results, indent=1))
    return folder


@pytest.fixture
def results() -> dict[str, Any]:
    return copy.deepcopy(_RESULTS)


@pytest.fixture
def results_dir(tmp_path: Path, results: dict[str, Any]) -> Path:
    return write_results(tmp_path / "results", results)


_RESULTS = make_results()
