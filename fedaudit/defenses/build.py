"""Turn defense settings into the pieces the simulator runs, and account for them.

Defenses combine: client-side transforms (magnitude pruning, user-level DP,
local DP) run in that order, DP-SGD replaces local training, and SEFL (Paillier
secure aggregation) or the LDP client selection strategy replace the server's
aggregation. Every setting, and at the end the privacy each client spent, is
written into the recording's configuration and result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fedaudit.exceptions import InvalidParameterError
from fedaudit.types import ClientUpdate

__all__ = [
    "DEFENSES",
    "DefenseSpec",
    "Defenses",
    "SelectiveAggregation",
    "build_defenses",
    "build_for_table",
]

#: Defense names accepted by ``fedaudit record --defense``.
DEFENSES: dict[str, str] = {
    "prune": "magnitude pruning of each layer (SEFL Algorithm 2) without encryption",
    "udp": "user-level DP: clip the client update to C, add Gaussian noise (Feng, Peri, Narayanan 2022)",
    "ldp": "local DP: clip, Gaussian noise calibrated to (epsilon, delta) per round (LDP-FL)",
    "dp-sgd": "sample-level DP-SGD in local training (Opacus, ghost clipping)",
    "sefl": "gradient pruning + Paillier secure aggregation (Mohammadi et al. 2023)",
}

@dataclass(frozen=True, kw_only=True)
class DefenseSpec:
    """Settings of the defenses of one run (only those named in ``names`` are used).

    Parameters
    ----------
    names
        Defenses to apply, from :data:`DEFENSES`.
    clip
        UDP / LDP: L2 bound of the whole client update (gradient units).
    noise_multiplier
        UDP / DP-SGD: noise std divided by the clipping bound. Give this or ``target_epsilon``.
    target_epsilon
        UDP / DP-SGD: epsilon to reach at the end of the run, at ``delta``.
    delta
        DP delta.
    accountant
        ``"rdp"`` or ``"prv"`` (Opacus accountants).
    max_grad_norm
        DP-SGD per-sample clipping bound.
    ldp_epsilon
        LDP: epsilon of one update release.
    css_keep
        LDP client selection strategy: share of each round's updates the server
        aggregates, keeping those least dominated by noise (1.0 = off).
    prune_percent
        ``prune`` and ``sefl``: share of the smallest |values| of each layer zeroed.
    key_bits, he_mode, he_clip, value_bits, encrypted_rounds, insecure_key
        SEFL settings (see :class:`~fedaudit.defenses.secure.SecureAggregationConfig`).
    """

    names: tuple[str, ...] = ()
    clip: float = 1.0
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    accountant: str = "rdp"
    max_grad_norm: float = 1.0
    ldp_epsilon: float = 10.0
    css_keep: float = 1.0
    prune_percent: float = 80.0
    key_bits: int = 2048
    he_mode: str = "packed"
    he_clip: float = 0.5
    value_bits: int = 16
    encrypted_rounds: int | None = 1
    insecure_key: bool = False

    def __post_init__(self) -> None:
        unknown = [n for n in self.names if n not in DEFENSES]
        if unknown:
            raise InvalidParameterError(
                f"Unknown defense {unknown[0]!r}; choose from {sorted(DEFENSES)} (or none)."
            )
        if len(set(self.names)) != len(self.names):
            raise InvalidParameterError(f"A defense is named twice in {list(self.names)}.")
        needs_noise = {"udp", "dp-sgd"} & set(self.names)
        if needs_noise and (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise InvalidParameterError(
                f"{sorted(needs_noise)} need exactly one of --noise-multiplier or --target-epsilon; got "
                f"noise_multiplier={self.noise_multiplier!r}, target_epsilon={self.target_epsilon!r}."
            )
        if "sefl" in self.names and ("prune" in self.names):
            raise InvalidParameterError("sefl already prunes (--prune-percent); do not also name 'prune'.")
        if not 0.0 < self.css_keep <= 1.0:
            raise InvalidParameterError(f"css_keep must be in (0, 1]. Got {self.css_keep!r}.")
        if self.css_keep < 1.0 and "ldp" not in self.names:
            raise InvalidParameterError("The client selection strategy (--css-keep) applies to the 'ldp' defense only.")

    def describe(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(kw_only=True)
class Defenses:
    """What the simulator runs for a :class:`DefenseSpec`."""

    transforms: list[Callable[[ClientUpdate, np.random.Generator], ClientUpdate]] = field(default_factory=list)
    aggregator: Any = None
    client_trainer: Any = None
    reporters: list[Callable[[Mapping[str, Any]], Mapping[str, Any]]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)


class SelectiveAggregation:
    """LDP client selection strategy: aggregate the updates least dominated by noise.

    With noise of known std ``sigma`` per value on ``d`` values, ``|u|^2 - d sigma^2``
    estimates the energy of the signal in a received update ``u``; the server
    keeps the ``keep`` share of the round's updates with the highest estimate
    and averages their model deltas. The clients still send (and the recording
    holds) every update.
    """

    def __init__(self, *, keep: float, noise_std: float) -> None:
        self.keep = keep
        self.noise_std = noise_std
        self._round: list[ClientUpdate] = []
        self.kept = 0
        self.received = 0

    def client_send(self, update: ClientUpdate) -> ClientUpdate:
        self._round.append(update)
        return update

    def server_aggregate(self) -> dict[str, np.ndarray]:
        updates, self._round = self._round, []
        d = sum(np.asarray(a).size for a in updates[0].arrays.values())
        signal = [sum(float(np.sum(np.square(a, dtype=np.float64))) for a in u.arrays.values()) - d * self.noise_std**2
                  for u in updates]
        k = max(1, math.ceil(self.keep * len(updates)))
        chosen = np.argsort(signal)[::-1][:k]
        self.kept += k
        self.received += len(updates)
        total = sum(float(updates[i].num_samples) for i in chosen)
        return {
            name: sum(updates[i].num_samples / total * updates[i].lr * updates[i].local_steps
                      * np.asarray(updates[i].arrays[name], np.float64) for i in chosen)
            for name in updates[0].arrays
        }

    def describe(self) -> dict[str, Any]:
        return {"name": "css", "keep": self.keep}


def build_for_table(spec: DefenseSpec, *, config: Any, table: Any) -> Defenses:
    """:func:`build_defenses` for a run of ``config`` on ``table`` (client count and sizes from its split)."""
    from fedaudit.data.clients import split_clients

    split = split_clients(table, n_folds=config.n_folds, fold=config.fold,
                          clients_per_speaker=config.clients_per_speaker, val_fraction=config.val_fraction,
                          seed=config.seed)
    return build_defenses(spec, config=config, n_clients=len(split.clients),
                          n_train_typical=int(np.median([len(c.train_rows) for c in split.clients])))


def build_defenses(spec: DefenseSpec, *, config: Any, n_clients: int, n_train_typical: int) -> Defenses:
    """Build transforms, trainer and aggregator for ``spec`` in a run of ``config``.

    ``n_clients`` sets how many updates SEFL sums per round; ``n_train_typical`` (the median training set of a client) sets the DP-SGD
    sample rate used to calibrate a target epsilon; the epsilon actually spent
    is accounted per client from the rounds each one joined.
    """
    from fedaudit.defenses import dp

    out = Defenses(settings={"names": list(spec.names)})
    names = set(spec.names)
    if "prune" in names:
        from fedaudit.defenses.prune import MagnitudePrune

        out.transforms.append(MagnitudePrune(percent=spec.prune_percent))
        out.settings["prune"] = {"percent": spec.prune_percent}
    if "udp" in names:
        z = spec.noise_multiplier
        if z is None:
            z = dp.calibrate_noise(spec.target_epsilon, delta=spec.delta, sample_rate=config.client_fraction,
                                   steps=config.rounds, accountant=spec.accountant)
        udp = dp.UserLevelDP(clip=spec.clip, noise_multiplier=z)
        out.transforms.append(udp)
        out.settings["udp"] = {**udp.describe(), "target_epsilon": spec.target_epsilon, "delta": spec.delta,
                               "epsilon_amplified": dp.udp_epsilon(z, client_fraction=config.client_fraction,
                                                                   rounds=config.rounds, delta=spec.delta,
                                                                   accountant=spec.accountant)}

        def udp_report(log: Mapping[str, Any], z: float = z) -> dict[str, Any]:
            per_client = dp.udp_per_client_epsilon(log["client_id"], noise_multiplier=z, delta=spec.delta,
                                                   accountant=spec.accountant)
            return {"privacy_udp": {"noise_multiplier": z, "delta": spec.delta,
                                    "epsilon_amplified": out.settings["udp"]["epsilon_amplified"],
                                    "epsilon_per_client": {str(k): v for k, v in per_client.items()}}}

        out.reporters.append(udp_report)
    if "ldp" in names:
        ldp = dp.LocalDP(clip=spec.clip, epsilon=spec.ldp_epsilon, delta=spec.delta)
        out.transforms.append(ldp)
        out.settings["ldp"] = ldp.describe()
        if spec.css_keep < 1.0:
            out.aggregator = SelectiveAggregation(keep=spec.css_keep, noise_std=ldp.noise_std)
            out.settings["css"] = {"keep": spec.css_keep}

        def ldp_report(log: Mapping[str, Any]) -> dict[str, Any]:
            ids, counts = np.unique(log["client_id"], return_counts=True)
            return {"privacy_ldp": {"epsilon_per_round": spec.ldp_epsilon, "delta": spec.delta,
                                    "rounds_joined": {str(int(i)): int(c) for i, c in zip(ids, counts, strict=True)}}}

        out.reporters.append(ldp_report)
    if "dp-sgd" in names:
        cfg = dp.DPSGDConfig(noise_multiplier=spec.noise_multiplier, target_epsilon=spec.target_epsilon,
                             max_grad_norm=spec.max_grad_norm, delta=spec.delta, accountant=spec.accountant)
        sample_rate = min(1.0, config.batch_size / max(1, n_train_typical))
        steps_per_round = 1 if config.algorithm == "fedsgd" else math.ceil(1 / sample_rate) * config.local_epochs
        steps = max(1, round(config.rounds * config.client_fraction * steps_per_round))
        resolved = cfg.resolve(sample_rate=sample_rate, steps=steps) if cfg.noise_multiplier is None else cfg
        out.client_trainer = lambda model, resolved=resolved: dp.DPSGDTrainer(model, resolved)
        out.settings["dp-sgd"] = {**resolved.describe(), "target_epsilon": spec.target_epsilon,
                                  "calibration": {"sample_rate": sample_rate, "steps": steps}}

        def dpsgd_report(log: Mapping[str, Any], z: float = float(resolved.noise_multiplier)) -> dict[str, Any]:
            n_train = log["n_train"][log["client_id"]]
            rate = np.minimum(1.0, log["batch_size"] / np.maximum(n_train, 1))
            per_client = dp.per_client_epsilon(log["client_id"], steps_per_row=log["local_steps"],
                                               sample_rate_per_row=rate, noise_multiplier=z, delta=spec.delta,
                                               accountant=spec.accountant)
            return {"privacy_dp_sgd": {"noise_multiplier": z, "max_grad_norm": spec.max_grad_norm,
                                       "delta": spec.delta,
                                       "epsilon_per_client": {str(k): v for k, v in per_client.items()}}}

        out.reporters.append(dpsgd_report)
    if "sefl" in names:
        from fedaudit.defenses.secure import SecureAggregation, SecureAggregationConfig

        if out.aggregator is not None:
            raise InvalidParameterError("sefl cannot be combined with the LDP client selection strategy.")
        he = SecureAggregationConfig(key_bits=spec.key_bits, mode=spec.he_mode, prune_percent=spec.prune_percent,
                                     clip=spec.he_clip, value_bits=spec.value_bits,
                                     encrypted_rounds=spec.encrypted_rounds, insecure_key=spec.insecure_key)
        from fedaudit.fl.simulate import clients_per_round

        out.aggregator = SecureAggregation(he, max_clients=clients_per_round(config.client_fraction, n_clients))
        out.settings["sefl"] = out.aggregator.describe()
        out.reporters.append(lambda log: {"sefl": out.aggregator.report()})
    return out
