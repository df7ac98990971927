"""Federated learning simulator. Knows nothing about attacks."""

from fedaudit.fl.hooks import BaseHook, ClientInfo, Hook, RoundMetrics, RunInfo
from fedaudit.fl.models import MLP, MODELS, build_model, layer_names, parameter_shapes
from fedaudit.fl.simulate import (
    ClientTrainer,
    SecureAggregator,
    SimulationResult,
    Transform,
    pseudo_gradient,
    simulate,
)

__all__ = [
    "BaseHook",
    "ClientInfo",
    "ClientTrainer",
    "Hook",
    "MLP",
    "MODELS",
    "RoundMetrics",
    "RunInfo",
    "SecureAggregator",
    "SimulationResult",
    "Transform",
    "build_model",
    "layer_names",
    "parameter_shapes",
    "pseudo_gradient",
    "simulate",
]
