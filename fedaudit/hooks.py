"""The observer protocol any federated learning loop can feed.

A run tells its observers five things, each a plain value: the run starts
(:class:`RunStart`), a round starts (:class:`RoundStart`), a client update
reaches the server (:class:`~fedaudit.types.ClientUpdate`), a round ends
(:class:`RoundEnd`) and the run ends (:class:`RunEnd`). These are facts any
FL loop knows (layer names and shapes, client ids, rounds, sample counts), so
fedaudit's simulator, a plain PyTorch loop or a Flower strategy can emit them,
and the recorder consumes them without knowing which one did.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fedaudit.types import ClientUpdate, PrivacySpent

__all__ = ["BaseHook", "ClientInfo", "Hook", "RoundEnd", "RoundStart", "RunEnd", "RunStart"]


@dataclass(frozen=True, kw_only=True)
class ClientInfo:
    """Public facts about a client, plus private attributes kept for evaluation only.

    Parameters
    ----------
    client_id
        The client's id, as in its updates.
    corpus
        Where its data come from (free text; ``""`` if unknown).
    n_train, n_val
        Training and validation samples it holds (0 if unknown).
    attributes
        Private ground truth (``{"gender": "F", "speaker_id": "spk03"}``): an
        attack never reads it to fit or predict on a target, only to score.
    """

    client_id: int
    corpus: str = ""
    n_train: int = 0
    n_val: int = 0
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class RunStart:
    """What observers learn when a run starts.

    Parameters
    ----------
    config
        The run's full configuration, JSON-ready (hyper-parameters, defenses, seed).
    parameter_shapes
        Parameter name (``"fc1.weight"``) to shape, in model order (input layer first).
    clients
        Every client that may take part.
    initial_weights
        The global model before round 0, when known.
    data
        Description of the data (corpora, feature set), JSON-ready.
    metric_names
        Names of the per-round metrics :class:`RoundEnd` will carry (``"val_uar"``, ...).
    """

    config: Mapping[str, Any]
    parameter_shapes: Mapping[str, tuple[int, ...]]
    clients: Sequence[ClientInfo]
    initial_weights: Mapping[str, np.ndarray] | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    metric_names: Sequence[str] = ()


@dataclass(frozen=True, kw_only=True)
class RoundStart:
    """A round starts: who was selected and the global weights sent to them."""

    server_round: int
    client_ids: Sequence[int]
    global_weights: Mapping[str, np.ndarray] | None = None


@dataclass(frozen=True, kw_only=True)
class RoundEnd:
    """A round ends; ``metrics`` holds whatever the loop measured (utility of the global model)."""

    server_round: int
    n_clients: int
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class RunEnd:
    """The run ends: its result (JSON-ready) and the privacy each DP mechanism claims."""

    result: Mapping[str, Any] = field(default_factory=dict)
    privacy: Sequence[PrivacySpent] = ()


@runtime_checkable
class Hook(Protocol):
    """Observer of a federated run. Every method is optional in practice (see :class:`BaseHook`)."""

    def on_run_start(self, event: RunStart) -> None: ...

    def on_round_start(self, event: RoundStart) -> None: ...

    def on_client_update(self, update: ClientUpdate) -> None: ...

    def on_round_end(self, event: RoundEnd) -> None: ...

    def on_run_end(self, event: RunEnd) -> None: ...


class BaseHook:
    """A hook that ignores everything; subclass and override what you need."""

    def on_run_start(self, event: RunStart) -> None:
        return None

    def on_round_start(self, event: RoundStart) -> None:
        return None

    def on_client_update(self, update: ClientUpdate) -> None:
        return None

    def on_round_end(self, event: RoundEnd) -> None:
        return None

    def on_run_end(self, event: RunEnd) -> None:
        return None
