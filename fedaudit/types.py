"""Value types and plug-in protocols shared by every layer (the ground floor).

Nothing here imports another fedaudit module but :mod:`fedaudit.exceptions`:
the simulator (``fl/``), the recorder (``record/``), the defenses and the
attacks all meet through these types, so none of them needs the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from fedaudit.exceptions import InvalidParameterError

if TYPE_CHECKING:  # torch is heavy; only type checkers need it here
    import torch
    from torch import nn

__all__ = [
    "Accountant",
    "Aggregate",
    "Aggregator",
    "ArrayDict",
    "CanarySource",
    "ClientTrainer",
    "ClientUpdate",
    "DefensePieces",
    "EMOTIONS",
    "GENDERS",
    "Participation",
    "PrivacySpent",
    "TrainerFactory",
    "Transform",
    "UpdateKind",
]

#: Parameter name (``"fc1.weight"``) to array, in model order.
ArrayDict = Mapping[str, np.ndarray]

UpdateKind = Literal["gradient", "pseudo_gradient"]

#: The four harmonised emotion classes, in label order.
EMOTIONS: tuple[str, ...] = ("neutral", "happy", "sad", "angry")

#: Gender codes used everywhere: ``"F"`` and ``"M"`` (the column order of every gender probability).
GENDERS: tuple[str, ...] = ("F", "M")


@dataclass(frozen=True, kw_only=True)
class ClientUpdate:
    """What one client sends the server in one round, after any defense ran.

    Parameters
    ----------
    server_round
        Round number, from 0.
    client_id
        Index of the client in the run's client table.
    kind
        ``"gradient"`` (FedSGD: one mini-batch gradient) or ``"pseudo_gradient"``
        (FedAvg: ``(theta_global - theta_local) / (lr * local_steps)``).
    arrays
        One array per model parameter, keyed by parameter name, float32.
    num_samples
        Number of training samples the client used this round.
    local_steps
        Number of optimiser steps taken locally (``U`` of the pseudo-gradient).
    lr
        Client learning rate.
    global_weights, local_weights
        For FedAvg, the weights before and after local training (what crosses
        the wire); ``None`` for FedSGD.
    bytes_sent
        Bytes the client put on the wire for this update (ciphertexts under
        secure aggregation); ``None`` means the float32 plaintext size.
    encrypt_seconds, decrypt_seconds
        Client time spent encrypting this update and decrypting the round's
        aggregate; ``None`` when not measured.
    """

    server_round: int
    client_id: int
    kind: UpdateKind
    arrays: ArrayDict
    num_samples: int
    local_steps: int
    lr: float
    global_weights: ArrayDict | None = None
    local_weights: ArrayDict | None = None
    bytes_sent: int | None = None
    encrypt_seconds: float | None = None
    decrypt_seconds: float | None = None

    @staticmethod
    def pseudo_gradient(
        global_weights: ArrayDict, local_weights: ArrayDict, *, lr: float, local_steps: int
    ) -> dict[str, np.ndarray]:
        """FedAvg pseudo-gradient ``(theta_global - theta_local) / (lr * U)``, float32, in float64 arithmetic.

        ``U`` is the number of local optimiser steps (local epochs x mini-batches
        per epoch). For plain SGD it is the mean of the local mini-batch gradients.
        Parameters are taken in the order of ``global_weights``.

        Raises
        ------
        InvalidParameterError
            If ``lr`` is not a finite float > 0, ``local_steps`` not an integer
            >= 1, or ``local_weights`` lacks a parameter or gives it another shape.
        """
        if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
            raise InvalidParameterError(f"The 'lr' of a pseudo-gradient must be a finite float > 0. Got {lr!r}.")
        if isinstance(local_steps, bool) or not isinstance(local_steps, int | np.integer) or local_steps < 1:
            raise InvalidParameterError(
                f"The 'local_steps' of a pseudo-gradient must be an integer >= 1. Got {local_steps!r}."
            )
        scale = 1.0 / (float(lr) * int(local_steps))
        out: dict[str, np.ndarray] = {}
        for name, g in global_weights.items():
            if name not in local_weights:
                raise InvalidParameterError(f"The local weights lack parameter {name!r} of the global weights.")
            glob, local = np.asarray(g), np.asarray(local_weights[name])
            if glob.shape != local.shape:
                raise InvalidParameterError(
                    f"Parameter {name!r} has shape {local.shape} in the local weights and {glob.shape} in the global ones."
                )
            delta = np.subtract(glob, local, dtype=np.float64)  # no float64 copies of the inputs
            delta *= scale
            out[name] = delta.astype(np.float32)
        return out

    @classmethod
    def from_weights(
        cls, *, server_round: int, client_id: int, global_weights: ArrayDict, local_weights: ArrayDict,
        lr: float, local_steps: int, num_samples: int, **fields: Any,
    ) -> ClientUpdate:
        """The FedAvg update of a client that got ``global_weights`` and sent back ``local_weights``.

        Its arrays are :meth:`pseudo_gradient`; both weight sets are kept on the
        update. ``fields`` sets the wire-cost fields (``bytes_sent``, ...).
        """
        arrays = cls.pseudo_gradient(global_weights, local_weights, lr=lr, local_steps=local_steps)
        return cls(
            server_round=server_round, client_id=client_id, kind="pseudo_gradient", arrays=arrays,
            num_samples=num_samples, local_steps=int(local_steps), lr=float(lr),
            global_weights=global_weights, local_weights=local_weights, **fields,
        )

    def with_arrays(self, arrays: ArrayDict) -> ClientUpdate:
        """Return a copy carrying other arrays (for defenses, which are pure)."""
        return replace(self, arrays=dict(arrays))

    @property
    def plain_bytes(self) -> int:
        """Bytes of the update sent in the clear as float32."""
        return int(sum(np.asarray(a).size for a in self.arrays.values()) * 4)

    @property
    def wire_bytes(self) -> int:
        """Bytes on the wire: ``bytes_sent`` when a defense measured it, else the float32 size."""
        return self.plain_bytes if self.bytes_sent is None else int(self.bytes_sent)


@dataclass(frozen=True, kw_only=True)
class PrivacySpent:
    """The privacy a DP mechanism claims to have given each client in one run.

    Parameters
    ----------
    mechanism
        Registry name of the defense (``"udp"``, ``"ldp"``, ``"dp-sgd"``).
    level
        What one unit of privacy protects: ``"user"`` (a client's whole data,
        across the run), ``"sample"`` (one training example) or ``"release"``
        (one update release, local DP: compose over ``rounds_joined``).
    delta
        The delta of every epsilon below.
    epsilon_per_client
        Client id to epsilon, for every client that joined at least one round.
    accountant
        Accountant that computed the epsilons (``"rdp"``, ``"prv"``, ``"analytic"``).
    noise_multiplier
        Noise std divided by the clipping bound, when the mechanism has one.
    epsilon_aggregate
        Epsilon of the whole run seen through the aggregate only (privacy
        amplification by client sampling), when it applies.
    rounds_joined
        Client id to number of rounds it sent an update in.
    """

    mechanism: str
    level: Literal["user", "sample", "release"]
    delta: float
    epsilon_per_client: Mapping[int, float]
    accountant: str
    noise_multiplier: float | None = None
    epsilon_aggregate: float | None = None
    rounds_joined: Mapping[int, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mechanism": self.mechanism, "level": self.level, "delta": self.delta,
            "epsilon_per_client": {str(k): float(v) for k, v in self.epsilon_per_client.items()},
            "accountant": self.accountant, "noise_multiplier": self.noise_multiplier,
            "epsilon_aggregate": self.epsilon_aggregate,
            "rounds_joined": {str(k): int(v) for k, v in self.rounds_joined.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrivacySpent:
        return cls(
            mechanism=str(data["mechanism"]), level=data["level"], delta=float(data["delta"]),
            epsilon_per_client={int(k): float(v) for k, v in dict(data["epsilon_per_client"]).items()},
            accountant=str(data["accountant"]),
            noise_multiplier=None if data.get("noise_multiplier") is None else float(data["noise_multiplier"]),
            epsilon_aggregate=None if data.get("epsilon_aggregate") is None else float(data["epsilon_aggregate"]),
            rounds_joined={int(k): int(v) for k, v in dict(data.get("rounds_joined") or {}).items()},
        )


@dataclass(frozen=True, kw_only=True)
class Participation:
    """Who sent what in a run: one entry per update row, plus the client table's sizes.

    Defenses account their privacy from it at the end of a run.
    """

    client_id: np.ndarray
    server_round: np.ndarray
    local_steps: np.ndarray
    num_samples: np.ndarray
    n_train: np.ndarray  # per client, indexed by client id
    batch_size: int
    rounds: int
    n_selected: int
    n_clients: int


@dataclass(frozen=True, kw_only=True)
class Aggregate:
    """What a server-side aggregator gives back for one round."""

    mean_delta: ArrayDict  # the model delta (``lr * U * update``, weighted mean) to subtract from the weights
    decrypt_seconds: float | None = None  # each client's time to decrypt the aggregate, when encrypted


#: A defense applied to each client update before it leaves the client: pure, random numbers from ``rng``.
Transform = Callable[[ClientUpdate, np.random.Generator], ClientUpdate]


class ClientTrainer(Protocol):
    """Replaces plain local training (e.g. DP-SGD with per-sample clipping and noise)."""

    last_loss: float

    def gradient(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]: ...

    def train(
        self, model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], *, optimizer: str, lr: float
    ) -> tuple[float, int]: ...


class Aggregator(Protocol):
    """Server aggregation that replaces the plain weighted mean (secure aggregation, client selection)."""

    def client_send(self, update: ClientUpdate) -> ClientUpdate:
        """Called for each client update of the round; returns what crosses the wire (its costs set)."""
        ...

    def server_aggregate(self) -> Aggregate:
        """Aggregate the round's updates."""
        ...


class CanarySource(Protocol):
    """Canary clients a simulator adds to a run to audit its privacy (``fedaudit.privacy.CanaryClients``).

    Canary updates go through the run's client transforms (clip, noise) like a real
    client's, with their own random generator; they never reach the model, the hooks
    (the recording), the utility figures or the real clients' accounting.
    """

    def round_canaries(self, server_round: int, template: ClientUpdate) -> list[ClientUpdate]:
        """The canary updates sent in this round, before the client transforms.

        ``template`` is a real update of the round (its kind, sizes, learning rate, shapes).
        """
        ...

    def observe_round(
        self, server_round: int, *, clients: list[ClientUpdate], canaries: list[ClientUpdate]
    ) -> None:
        """What the adversary sees this round: the real updates and the canaries' releases, after the transforms."""
        ...

    def finish(self, accountants: tuple[Accountant, ...]) -> Mapping[str, Any]:
        """At the end of the run: the audit (claimed epsilon of the canaries, lower bounds), JSON-ready."""
        ...


#: Builds a client trainer for the run's model.
TrainerFactory = Callable[["nn.Module"], ClientTrainer]

#: Accounts the privacy a mechanism spent, from who took part in the run.
Accountant = Callable[[Participation], PrivacySpent]


@dataclass(frozen=True, kw_only=True)
class DefensePieces:
    """What a simulator plugs in for a run's defenses (built by ``fedaudit.defenses``).

    Parameters
    ----------
    transforms
        Applied in order to each client update before it leaves the client.
    client_trainer
        Builds the local training that replaces plain SGD/Adam (DP-SGD), given the run's model.
    aggregator
        Replaces the server's weighted mean (secure aggregation, client selection).
    accountants
        Called once at the end of the run; each returns the privacy a mechanism spent.
    summaries
        Called once at the end of the run; each returns JSON-ready entries for the run result.
    settings
        JSON-ready description of every defense and its resolved settings (noise multiplier
        calibrated from a target epsilon, ...), written into the run's configuration.
    """

    transforms: tuple[Transform, ...] = ()
    client_trainer: TrainerFactory | None = None
    aggregator: Aggregator | None = None
    accountants: tuple[Accountant, ...] = ()
    summaries: tuple[Callable[[Participation], Mapping[str, Any]], ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)
