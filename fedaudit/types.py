"""Value types shared by the simulator, the recorder and the attacks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

__all__ = ["ArrayDict", "ClientUpdate", "UpdateKind"]

#: Parameter name (``"fc1.weight"``) to array, in model order.
ArrayDict = Mapping[str, np.ndarray]

UpdateKind = Literal["gradient", "pseudo_gradient"]


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
    extras: Mapping[str, float] = field(default_factory=dict)

    def with_arrays(self, arrays: ArrayDict) -> ClientUpdate:
        """Return a copy carrying other arrays (for defenses, which are pure)."""
        return replace(self, arrays=dict(arrays))
