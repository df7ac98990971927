"""Frozen, keyword-only configuration of a federated run."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from fedaudit.exceptions import InvalidParameterError

__all__ = [
    "ALGORITHMS",
    "DEFAULT_ARCHITECTURES",
    "FLConfig",
    "NORMALIZATIONS",
    "OPTIMIZERS",
    "clients_per_round",
    "default_architecture",
]

ALGORITHMS: tuple[str, ...] = ("fedsgd", "fedavg")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
NORMALIZATIONS: tuple[str, ...] = ("none", "global", "speaker")

#: Learning rates of the publication (Feng et al. 2022) per algorithm.
DEFAULT_LR: dict[str, float] = {"fedsgd": 0.1, "fedavg": 0.0005}


#: Default ``(hidden, dropout)`` of each model of :data:`fedaudit.models.MODELS`: small enough for
#: a federated demo on two CPU cores. What ``hidden`` means depends on the model (fedaudit.models):
#: mlp and dnn, dense widths; cnn, conv channels then the dense head's width; lstm, the state size
#: then the dense head's widths.
DEFAULT_ARCHITECTURES: dict[str, tuple[tuple[int, ...], tuple[float, ...]]] = {
    "mlp": ((256, 128), (0.2, 0.0)),
    "dnn": ((128, 64), (0.2, 0.0)),
    "cnn": ((32, 32, 32), (0.1, 0.1, 0.2)),
    "lstm": ((64, 32), (0.2, 0.0)),
}


def default_architecture(
    model: str, hidden: tuple[int, ...] | list[int] | None = None
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """``(hidden, dropout)`` of ``model``: its defaults, or ``hidden`` with default dropout rates.

    Given ``hidden`` of another length than the default, the rates are the
    default first rate for the first layer and 0 for the others.
    """
    if model not in DEFAULT_ARCHITECTURES:
        if hidden is None:
            raise InvalidParameterError(
                f"Model {model!r} has no default architecture; give 'hidden' and 'dropout', or choose one of "
                f"{sorted(DEFAULT_ARCHITECTURES)}."
            )
        return tuple(hidden), (0.0,) * len(hidden)
    default_hidden, default_dropout = DEFAULT_ARCHITECTURES[model]
    if hidden is None:
        return default_hidden, default_dropout
    hidden = tuple(int(h) for h in hidden)
    if len(hidden) == len(default_hidden):
        return hidden, default_dropout
    return hidden, (default_dropout[0], *([0.0] * (len(hidden) - 1)))[: len(hidden)]


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
        Model registry key: ``"mlp"`` (utterance-level features), ``"dnn"``,
        ``"cnn"`` or ``"lstm"`` (frame-level features, ``mfcc-frames``).
    hidden
        The model's widths, ``None`` for its default
        (:data:`DEFAULT_ARCHITECTURES`): for ``mlp`` and ``dnn`` the dense
        hidden layers; for ``cnn`` the channels of each convolution, then the
        width of the dense head's hidden layer; for ``lstm`` the LSTM state
        size, then the widths of the dense head's hidden layers.
    dropout
        Dropout rate after each entry of ``hidden`` (one per entry); ``None``
        for the model's default.
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
    hidden: tuple[int, ...] | None = None
    dropout: tuple[float, ...] | None = None
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
        if not isinstance(self.model, str) or not self.model:
            raise InvalidParameterError(f"The 'model' parameter of FLConfig must be a model name. Got {self.model!r}.")
        if self.hidden is not None and (isinstance(self.hidden, int) or not all(
                isinstance(h, int) and not isinstance(h, bool) for h in self.hidden)):
            raise InvalidParameterError(f"The 'hidden' parameter of FLConfig must list integer widths. Got {self.hidden!r}.")
        hidden, dropout = default_architecture(self.model, self.hidden)
        object.__setattr__(self, "hidden", hidden)
        object.__setattr__(self, "dropout", dropout if self.dropout is None else tuple(self.dropout))
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
