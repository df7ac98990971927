"""Fit (or load) an attack and score it on a target recording: what `fedaudit attack` does."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


from fedaudit.attacks.base import ATTACKS, Attack, load_attack, resolve_layers, shadow_hash
from fedaudit.exceptions import InvalidParameterError
from fedaudit.metrics.asr import AttackResult, ClientPrediction, attack_success, predict_clients, row_probabilities
from fedaudit.record.store import UpdateStore

__all__ = ["AttackReport", "fit_attack", "layer_leakage", "score_attack"]


@dataclass(frozen=True, kw_only=True)
class AttackReport:
    """Everything one attack run measured on one target."""

    attack: str
    target: str
    layers: list[str]
    fit_seconds: float
    score_seconds: float
    updates_scored: int
    results: dict[str, AttackResult] = field(default_factory=dict)  # key: n_updates ("1", "5", "all")
    predictions: list[ClientPrediction] = field(default_factory=list)  # when the target has no ground truth
    card: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def fit_attack(
    name: str,
    *,
    shadows: Sequence[str | os.PathLike[str]] = (),
    public: Any = None,
    normalization: str | None = None,
    layers: Sequence[str] | Sequence[int] | None = None,
    seed: int = 0,
    options: dict[str, Any] | None = None,
) -> tuple[Attack, dict[str, Any]]:
    """Fit a registered attack; returns the attack and its card (``card["fit_seconds"]`` is the fit time).

    Shadow-trained attacks (``stats``, ``cnn``) need ``shadows`` (recordings);
    ``inversion`` needs ``public`` features and the target's ``normalization``.
    """
    if name not in ATTACKS:
        raise InvalidParameterError(f"Unknown attack {name!r}; choose one of {sorted(ATTACKS)}.")
    cls = ATTACKS[name]
    options = dict(options or {})
    t0 = time.perf_counter()
    normalization = normalization or "global"
    if name == "inversion":
        if public is None:
            raise InvalidParameterError(
                "The inversion attack needs public features: give --public-corpus (e.g. demo-shadow)."
            )
        attack = cls(seed=seed, **options).fit(public, normalization=normalization)
        card = {"public_corpora": sorted(set(public.corpus.tolist())), "normalization": normalization}
    else:
        if not shadows:
            raise InvalidParameterError(
                f"The {name} attack is fitted on shadow recordings: give --shadow FILE (see `fedaudit shadow`)."
            )
        stores = [UpdateStore.open(p, warn_incomplete=False) for p in shadows]
        try:
            layer_names = resolve_layers(layers, stores[0].layers) if layers is not None else None
            attack = cls(layers=layer_names, seed=seed, **options).fit(stores)
        finally:
            for s in stores:
                s.close()
        card = {"shadow_recordings": [str(p) for p in shadows], "shadow_sha256": shadow_hash(shadows)}
    card["fit_seconds"] = time.perf_counter() - t0
    card["fit_info"] = getattr(attack, "fit_info_", {})
    card["seed"] = seed
    return attack, card


def score_attack(
    attack: Attack | str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    layers: Sequence[str] | Sequence[int] | None = None,
    n_updates: Sequence[int | str] = (1,),
    repeats: int = 10,
    seed: int = 0,
    card: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> AttackReport:
    """Score a fitted attack (or a saved attack model) on a target recording.

    With ground truth in the target, reports the ASR for each ``n_updates``;
    without it (a real audit), per-client predictions only.
    """
    if not isinstance(attack, Attack):
        attack = load_attack(attack)
        card = {**attack.card_, **(card or {})}
    with UpdateStore.open(target, warn_incomplete=False) as store:
        if layers is not None:
            chosen = resolve_layers(layers, store.layers)
            if not hasattr(attack, "restricted"):
                if chosen != [store.layers[0]]:
                    raise InvalidParameterError(
                        f"The {attack.name} attack reads the input layer only; got layers {chosen}."
                    )
            else:
                attack = attack.restricted(chosen)
        attack.check_store(store)
        params = attack.required_parameters()
        t0 = time.perf_counter()
        proba = row_probabilities(attack.predict_proba, store, params)
        per_row = time.perf_counter() - t0
        gt = store.ground_truth()
        results: dict[str, AttackResult] = {}
        predictions: list[ClientPrediction] = []
        if "gender" in gt and len(gt["gender"]):
            for k, n in enumerate(n_updates):
                results[str(n)] = attack_success(
                    attack.predict_proba, store, params, repeats=repeats, n_updates=n, seed=seed,
                    row_proba=proba if n == 1 else None,
                )
                if progress:
                    progress(k + 1, len(n_updates))
        else:
            predictions = predict_clients(attack.predict_proba, store, params, row_proba=proba)
        used = getattr(attack, "layers_", None) or [p.rsplit(".", 1)[0] for p in params]
        return AttackReport(
            attack=attack.name, target=str(target), layers=list(dict.fromkeys(used)), fit_seconds=float(
                (card or {}).get("fit_seconds", float("nan"))),
            score_seconds=per_row, updates_scored=store.n_updates, results=results, predictions=predictions,
            card=dict(card or {}),
        )


def layer_leakage(
    attack: Attack, target: str | os.PathLike[str], *, repeats: int = 10, seed: int = 0
) -> dict[str, AttackResult]:
    """ASR of each layer alone and of the fused attack (key ``"fused"``), from one fitted attack."""
    out: dict[str, AttackResult] = {}
    with UpdateStore.open(target, warn_incomplete=False) as store:
        layers = list(getattr(attack, "layers_", None) or [store.layers[0]])
        for layer in layers:
            sub = attack.restricted([layer]) if hasattr(attack, "restricted") else attack
            sub.check_store(store)
            out[layer] = attack_success(sub.predict_proba, store, sub.required_parameters(), repeats=repeats, seed=seed)
        if len(layers) > 1:
            attack.check_store(store)
            out["fused"] = attack_success(attack.predict_proba, store, attack.required_parameters(), repeats=repeats,
                                          seed=seed)
    return out
