"""Attacks on recorded client updates. Reads recordings only; never imports the simulator."""

from fedaudit.attacks.base import (
    ATTACKS,
    Attack,
    NotFittedError,
    ShapeMismatchError,
    check_is_fitted,
    load_attack,
    register_attack,
    resolve_layers,
)
from fedaudit.attacks.cnn import CNNFusionAttack
from fedaudit.attacks.fast import InversionAttack, StatsAttack
from fedaudit.attacks.features import inversion_vector, layer_statistics

__all__ = [
    "ATTACKS",
    "Attack",
    "CNNFusionAttack",
    "InversionAttack",
    "NotFittedError",
    "ShapeMismatchError",
    "StatsAttack",
    "check_is_fitted",
    "inversion_vector",
    "layer_statistics",
    "load_attack",
    "register_attack",
    "resolve_layers",
]
