"""Federated learning simulator. Knows nothing about attacks."""

from fedaudit.fl.hooks import BaseHook, ClientInfo, Hook, RoundMetrics, RunInfo
from fedaudit.fl.models import MLP, MODELS, build_model, layer_names, parameter_shapes
from fedaudit.fl.simulate import SimulationResult, Transform, pseudo_gradient, simulate

__all__ = [
    "MLP",
    "MODELS",
    "BaseHook",
    "ClientInfo",
    "Hook",
    "RoundMetrics",
    "RunInfo",
    "SimulationResult",
    "Transform",
    "build_model",
    "layer_names",
    "parameter_shapes",
    "pseudo_gradient",
    "simulate",
]
