"""Federated learning simulator. Emits hook events (:mod:`fedaudit.hooks`); knows no recorder and no attack.

The models it trains live in :mod:`fedaudit.models`.
"""

from fedaudit.fl.simulate import METRIC_NAMES, RoundMetrics, SimulationResult, pseudo_gradient, simulate

__all__ = [
    "METRIC_NAMES",
    "RoundMetrics",
    "SimulationResult",
    "pseudo_gradient",
    "simulate",
]
