"""The LDP client selection strategy: a server aggregator that keeps the updates least dominated by noise."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from fedaudit.types import Aggregate, ClientUpdate

__all__ = ["SelectiveAggregation"]


class SelectiveAggregation:
    """LDP client selection strategy: aggregate the updates least dominated by noise.

    With noise of known std ``sigma`` per value on ``d`` values, ``|u|^2 - d sigma^2``
    estimates the energy of the signal in a received update ``u``; the server
    keeps the ``keep`` share of the round's updates with the highest estimate
    and averages their model deltas. The clients still send (and the recording
    holds) every update.

    Following the client selection of Mohammadi et al., "Differentially private
    federated learning for speech emotion recognition with client selection"
    (FedCSIS 2023).

    Parameters
    ----------
    keep
        Share of each round's updates aggregated, in (0, 1].
    noise_std
        Standard deviation of the noise on each value of an update.
    """

    #: How errors name this aggregator.
    title: ClassVar[str] = "the LDP client selection strategy"

    def __init__(self, *, keep: float, noise_std: float) -> None:
        self.keep = keep
        self.noise_std = noise_std
        self._round: list[ClientUpdate] = []
        self.kept = 0
        self.received = 0

    def client_send(self, update: ClientUpdate) -> ClientUpdate:
        self._round.append(update)
        return update

    def server_aggregate(self) -> Aggregate:
        """The ``num_samples``-weighted mean model delta (``lr * U * update``) of the kept updates."""
        updates, self._round = self._round, []
        d = sum(np.asarray(a).size for a in updates[0].arrays.values())
        signal = [sum(float(np.sum(np.square(a, dtype=np.float64))) for a in u.arrays.values()) - d * self.noise_std**2
                  for u in updates]
        k = max(1, math.ceil(self.keep * len(updates)))
        chosen = np.argsort(signal)[::-1][:k]
        self.kept += k
        self.received += len(updates)
        total = sum(float(updates[i].num_samples) for i in chosen)
        mean = {
            name: sum(updates[i].num_samples / total * updates[i].lr * updates[i].local_steps
                      * np.asarray(updates[i].arrays[name], np.float64) for i in chosen)
            for name in updates[0].arrays
        }
        return Aggregate(mean_delta=mean)

    def describe(self) -> dict[str, Any]:
        return {"name": "css", "keep": self.keep}
