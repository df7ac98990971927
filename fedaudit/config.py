"""Frozen, keyword-only configuration of a federated run."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from fedaudit.exceptions import InvalidParameterError

__all__ = ["ALGORITHMS", "FLConfig", "NORMALIZATIONS", "OPTIMIZERS", "clients_per_round"]

ALGORITHMS: tuple[str, ...] = ("fedsgd", "fedavg")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
NORMALIZATIONS: tuple[str, ...] = ("none", "global", "speaker")

#: Learning rates of the publication (Feng et al. 2022) per algorithm.
DEFAULT_LR: dict[str, float] = {"fedsgd": 0.1, "fedavg": 0.0005}


def clients_per_round(client_fraction: float, n_clients: int) -> int:
    """Clients selected each round: the nearest integer to ``client_fraction * n_clients``, at least 1."""
    return max(1, int(math.floor(client_fraction * n_clients + 0.5)))


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidParameterError(
            f"The {name!r} parameter of FLConfig must be one of {list(choices)}. Got {value!r} instead."
        )


def _check_range(name: str, value: float, lo: float, hi: float, *, lo_open: bool = False) -> None:
    ok = (lo < value if lo_open else lo <= value) and value <= hi
    if not ok or (isinstance(value, float) and math.isnan(value)):
        bracket = "(" if lo_open else "["
        raise InvalidParameterError(
            f"The {name!r} parameter of FLConfig must be in {bracket}{lo}, {hi}]. Got {value!r} instead."
        )


@dataclass(frozen=True, kw_only=True)
class FLConfig:
    """Everything that defines a simulated federated run.

    Defaults follow Feng et al., "Attribute inference attack of speech emotion
    recognition in federated learning settings" (Interspeech 2022): an MLP
    256-128 with dropout 0.2 after the first hidden layer, 10% of clients per
    round, local batch 20, FedSGD lr 0.1, FedAvg lr 0.0005 with one local epoch.

    Parameters
    ----------
    algorithm
        ``"fedsgd"`` (one mini-batch gradient per client per round) or
        ``"fedavg"`` (local epochs, pseudo-gradients).
    rounds
        Number of global rounds.
    client_fraction
        Fraction of clients selected each round (at least one client).
    batch_size
        Local mini-batch size.
    lr
        Client learning rate; ``None`` takes the publication's value for the algorithm.
    local_epochs
        FedAvg local epochs.
    optimizer
        FedAvg local optimiser, ``"sgd"`` or ``"adam"`` (the reference code used Adam).
    model
        Model registry key (``"mlp"``).
    hidden
        Hidden layer widths of the MLP.
    dropout
        Dropout rate after each hidden layer (one per hidden layer).
    n_classes
        Number of emotion classes.
    normalization
        Feature normalisation: ``"none"``, ``"global"`` (statistics of the
        training clients) or ``"speaker"`` (per-speaker z-normalisation).
    clients_per_speaker
        Split each training speaker into this many clients.
    n_folds, fold
        Speaker-disjoint folds; speakers of fold ``fold`` are held out as test.
    val_fraction
        Share of each client's utterances kept for validation.
    seed
        Seed of every random choice of the run.
    """

    algorithm: Literal["fedsgd", "fedavg"] = "fedsgd"
    rounds: int = 200
    client_fraction: float = 0.1
    batch_size: int = 20
    lr: float | None = None
    local_epochs: int = 1
    optimizer: Literal["sgd", "adam"] = "adam"
    model: str = "mlp"
    hidden: tuple[int, ...] = (256, 128)
    dropout: tuple[float, ...] = (0.2, 0.0)
    n_classes: int = 4
    normalization: Literal["none", "global", "speaker"] = "global"
    clients_per_speaker: int = 1
    n_folds: int = 5
    fold: int = 0
    val_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        _check_choice("algorithm", self.algorithm, ALGORITHMS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("normalization", self.normalization, NORMALIZATIONS)
        for name in ("rounds", "batch_size", "local_epochs", "n_classes", "clients_per_speaker", "n_folds"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidParameterError(
                    f"The {name!r} parameter of FLConfig must be an integer >= 1. Got {value!r} instead."
                )
        if self.n_folds < 2:
            raise InvalidParameterError(
                f"The 'n_folds' parameter of FLConfig must be >= 2 (one fold is held out). Got {self.n_folds!r}."
            )
        if not 0 <= self.fold < self.n_folds:
            raise InvalidParameterError(
                f"The 'fold' parameter of FLConfig must be in [0, {self.n_folds - 1}]. Got {self.fold!r} instead."
            )
        _check_range("client_fraction", self.client_fraction, 0.0, 1.0, lo_open=True)
        _check_range("val_fraction", self.val_fraction, 0.0, 0.9)
        if self.lr is not None:
            _check_range("lr", self.lr, 0.0, 1e3, lo_open=True)
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise InvalidParameterError(f"The 'hidden' parameter of FLConfig must list widths >= 1. Got {self.hidden!r}.")
        if len(self.dropout) != len(self.hidden):
            raise InvalidParameterError(
                f"The 'dropout' parameter of FLConfig needs one rate per hidden layer ({len(self.hidden)}). "
                f"Got {self.dropout!r}."
            )
        for rate in self.dropout:
            _check_range("dropout", rate, 0.0, 0.95)
        if not isinstance(self.seed, int) or self.seed < 0:
            raise InvalidParameterError(f"The 'seed' parameter of FLConfig must be an integer >= 0. Got {self.seed!r}.")

    @property
    def client_lr(self) -> float:
        """The learning rate in force (explicit, or the publication's default)."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.algorithm]

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready dictionary (tuples become lists)."""
        out = asdict(self)
        out["lr"] = self.client_lr
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FLConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidParameterError(f"Unknown FLConfig fields {unknown}; known fields are {sorted(known)}.")
        kwargs = dict(data)
        for name in ("hidden", "dropout"):
            if name in kwargs:
                kwargs[name] = tuple(kwargs[name])
        return cls(**kwargs)
