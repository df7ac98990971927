"""How the simulator tells observers (recorders, progress displays) what happens."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fedaudit.types import ClientUpdate

__all__ = ["BaseHook", "ClientInfo", "Hook", "RoundMetrics", "RunInfo"]


@dataclass(frozen=True, kw_only=True)
class ClientInfo:
    """Public facts about a client, plus ground truth kept for evaluation only."""

    client_id: int
    corpus: str
    n_train: int
    n_val: int
    speaker_id: str  # ground truth: evaluation only
    gender: str  # ground truth: evaluation only


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    """What a hook learns when the run starts."""

    config: Mapping[str, Any]
    parameter_shapes: Mapping[str, tuple[int, ...]]
    clients: list[ClientInfo]
    initial_weights: Mapping[str, np.ndarray]
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class RoundMetrics:
    """Utility of the global model after one round."""

    server_round: int
    val_uar: float
    val_acc: float
    test_uar: float
    test_acc: float
    train_loss: float
    n_clients: int


@runtime_checkable
class Hook(Protocol):
    """Observer of a simulated run. Every method is optional in practice (see :class:`BaseHook`)."""

    def on_run_start(self, info: RunInfo) -> None: ...

    def on_round_start(self, server_round: int, client_ids: list[int], global_weights: Mapping[str, np.ndarray]) -> None: ...

    def on_client_update(self, update: ClientUpdate) -> None: ...

    def on_round_end(self, metrics: RoundMetrics) -> None: ...

    def on_run_end(self, result: Mapping[str, Any]) -> None: ...


class BaseHook:
    """A hook that ignores everything; subclass and override what you need."""

    def on_run_start(self, info: RunInfo) -> None:
        return None

    def on_round_start(self, server_round: int, client_ids: list[int], global_weights: Mapping[str, np.ndarray]) -> None:
        return None

    def on_client_update(self, update: ClientUpdate) -> None:
        return None

    def on_round_end(self, metrics: RoundMetrics) -> None:
        return None

    def on_run_end(self, result: Mapping[str, Any]) -> None:
        return None
