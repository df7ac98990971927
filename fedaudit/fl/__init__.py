"""Federated learning simulator. Emits hook events (:mod:`fedaudit.hooks`); knows no recorder and no attack."""

from fedaudit.fl.models import MLP, MODELS, build_model, layer_names, parameter_shapes
from fedaudit.fl.simulate import METRIC_NAMES, RoundMetrics, SimulationResult, pseudo_gradient, simulate

__all__ = [
    "METRIC_NAMES",
    "MLP",
    "MODELS",
    "RoundMetrics",
    "SimulationResult",
    "build_model",
    "layer_names",
    "parameter_shapes",
    "pseudo_gradient",
    "simulate",
]
