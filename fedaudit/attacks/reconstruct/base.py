"""The contract every reconstruction method keeps, its registry, and the updates it reads.

A reconstruction method recovers what a client's data looked like from what the
attacker observes: the client's recorded update (and, when the recording holds
them, the round's global weights). Methods differ in what they recover
(``produces``: acoustic features, label counts, or both) and in what they need
(``needs_model``: a forward pass through the recorded architecture;
``needs_globals``: the round's global weights).

Adding a method is one module: subclass :class:`ReconstructionMethod`, set the
class attributes, implement :meth:`~ReconstructionMethod.reconstruct`, and
decorate the class with :func:`register_reconstruction`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from fedaudit.exceptions import InvalidParameterError
from fedaudit.record.format import KINDS

if TYPE_CHECKING:
    from fedaudit.record.reader import UpdateStore

__all__ = [
    "ObservedUpdate",
    "RECONSTRUCTIONS",
    "Reconstruction",
    "ReconstructionContext",
    "ReconstructionMethod",
    "observed_updates",
    "register_reconstruction",
]


@dataclass(frozen=True, kw_only=True, eq=False)
class ObservedUpdate:
    """One recorded client update and what the attacker sees beside it.

    Parameters
    ----------
    row
        Row of the update in the recording.
    client_id, server_round
        Whose update, and when.
    kind
        ``"gradient"`` (FedSGD: the gradient of one mini-batch) or
        ``"pseudo_gradient"`` (FedAvg: ``(theta_global - theta_local) / (lr * U)``).
    arrays
        Parameter name (``"fc1.weight"``) -> update array, in architecture order.
    num_samples, local_steps, lr
        As recorded: samples behind the update, local optimiser steps ``U``, client learning rate.
    global_weights
        The global model the client started from, when the recording holds it.
    """

    row: int
    client_id: int
    server_round: int
    kind: str
    arrays: Mapping[str, np.ndarray]
    num_samples: int
    local_steps: int
    lr: float
    global_weights: Mapping[str, np.ndarray] | None = None


@dataclass(frozen=True, kw_only=True)
class ReconstructionContext:
    """What a method may know besides the update: the run's public configuration.

    Parameters
    ----------
    config
        The recording's ``/run/config`` (architecture, algorithm, batch size, learning rate, ...).
    parameter_shapes
        Parameter name -> shape, in architecture order (the input layer first).
    data
        The recording's data description (corpus, feature set, feature names).
    n_classes
        Number of emotion classes of the model's output layer.
    """

    config: Mapping[str, Any]
    parameter_shapes: Mapping[str, tuple[int, ...]]
    data: Mapping[str, Any] = field(default_factory=dict)
    n_classes: int = 4

    @classmethod
    def from_store(cls, store: UpdateStore) -> ReconstructionContext:
        """The context of a recording."""
        shapes = {name: store.shape(name) for name in store.parameter_names}
        config = dict(store.config)
        return cls(
            config=config, parameter_shapes=shapes, data=dict(config.get("data") or {}),
            n_classes=int(config.get("n_classes", 4)),
        )


@dataclass(frozen=True, kw_only=True, eq=False)
class Reconstruction:
    """What a method recovered from one update.

    Parameters
    ----------
    method
        Registry name of the method.
    row, client_id, server_round
        The update it came from.
    features
        Recovered input vectors, shape ``(k, n_inputs)`` in the model's input space
        (the normalised features the client trained on); ``None`` when the method
        recovers no features.
    feature_weights
        Estimated share of the update each recovered vector stands for, shape ``(k,)``.
    label_counts
        Estimated number of samples of each class behind the update, shape ``(n_classes,)``.
    info
        Method-specific figures (iterations, final loss, number of vectors separated, ...).
    """

    method: str
    row: int
    client_id: int
    server_round: int
    features: np.ndarray | None = None
    feature_weights: np.ndarray | None = None
    label_counts: np.ndarray | None = None
    info: Mapping[str, float] = field(default_factory=dict)


class ReconstructionMethod:
    """Base class of the reconstruction methods.

    Class attributes
    ----------------
    name
        Registry key (``fedaudit invert --method NAME``).
    produces
        What it recovers: a subset of ``{"features", "labels"}``.
    needs_model
        Whether it rebuilds the recorded architecture for a forward pass.
    needs_globals
        Whether it needs the round's global weights (the recording must hold them).
    """

    name: ClassVar[str] = ""
    produces: ClassVar[frozenset[str]] = frozenset()
    needs_model: ClassVar[bool] = False
    needs_globals: ClassVar[bool] = False

    def prepare(self, context: ReconstructionContext) -> ReconstructionMethod:
        """Check the method applies to a recording and set it up; returns ``self``."""
        self.context_ = context
        return self

    def reconstruct(self, update: ObservedUpdate) -> Reconstruction:
        """Recover what one update reveals."""
        raise NotImplementedError

    def reconstruct_many(self, updates: Iterable[ObservedUpdate]) -> Iterator[Reconstruction]:
        """Recover many updates (methods that batch the work override this)."""
        for update in updates:
            yield self.reconstruct(update)


#: Reconstruction methods by name.
RECONSTRUCTIONS: dict[str, type[ReconstructionMethod]] = {}


def register_reconstruction(cls: type[ReconstructionMethod]) -> type[ReconstructionMethod]:
    """Class decorator: add a method to :data:`RECONSTRUCTIONS` under ``cls.name``."""
    if not cls.name:
        raise InvalidParameterError(f"Reconstruction method {cls.__name__} has no name.")
    if cls.name in RECONSTRUCTIONS and RECONSTRUCTIONS[cls.name] is not cls:
        raise InvalidParameterError(f"A reconstruction method named {cls.name!r} is already registered.")
    if not cls.produces or not cls.produces <= {"features", "labels"}:
        raise InvalidParameterError(
            f"Reconstruction method {cls.name!r} must produce 'features' and/or 'labels'; got {sorted(cls.produces)}."
        )
    RECONSTRUCTIONS[cls.name] = cls
    return cls


def observed_updates(
    store: UpdateStore, rows: Sequence[int] | np.ndarray, *, with_globals: bool = False, batch: int = 256
) -> Iterator[ObservedUpdate]:
    """The updates of ``rows`` of a recording, read in batches of contiguous rows."""
    rows = np.asarray(rows, dtype=np.int64)
    names = store.parameter_names
    index = store.index
    globals_cache: dict[int, dict[str, np.ndarray]] = {}
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        arrays = {name: store.param(name, chunk) for name in names}
        for j, row in enumerate(chunk.tolist()):
            server_round = int(index["server_round"][row])
            weights = None
            if with_globals:
                if server_round not in globals_cache:
                    globals_cache.clear()  # rows come round by round: keep one round's weights
                    globals_cache[server_round] = store.global_weights(server_round)
                weights = globals_cache[server_round]
            yield ObservedUpdate(
                row=row, client_id=int(index["client_id"][row]), server_round=server_round,
                kind=KINDS[int(index["kind"][row])],
                arrays={name: arrays[name][j] for name in names},
                num_samples=int(index["num_samples"][row]), local_steps=int(index["local_steps"][row]),
                lr=float(index["lr"][row]), global_weights=weights,
            )
