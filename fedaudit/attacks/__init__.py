"""Attacks on recorded client updates. Reads recordings and public features only; never the simulator.

Every attack is registered in :data:`ATTACKS`, fits on one
:class:`AttackerKnowledge` and declares its needs as class attributes
(``docs/adding-an-attack.md``).
"""

from fedaudit.attacks._data import ShadowRows, check_same_architecture, shadow_rows
from fedaudit.attacks.base import (
    ATTACKS,
    Attack,
    AttackerKnowledge,
    NotFittedError,
    ShapeMismatchError,
    check_is_fitted,
    fusion_weights,
    gender_labels,
    layer_of,
    layer_parameters,
    load_attack,
    register_attack,
    resolve_layers,
)
from fedaudit.attacks.cnn import CNNFusionAttack
from fedaudit.attacks.inversion import InversionAttack
from fedaudit.attacks.label_only import LabelOnlyAttack
from fedaudit.attacks.stats import StatsAttack
from fedaudit.attacks.update_statistics import (
    input_mixture,
    inversion_vector,
    layer_kind,
    layer_statistics,
    update_statistics,
)

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackerKnowledge",
    "CNNFusionAttack",
    "InversionAttack",
    "LabelOnlyAttack",
    "NotFittedError",
    "ShadowRows",
    "ShapeMismatchError",
    "StatsAttack",
    "check_is_fitted",
    "check_same_architecture",
    "fusion_weights",
    "gender_labels",
    "input_mixture",
    "inversion_vector",
    "layer_kind",
    "layer_of",
    "layer_parameters",
    "layer_statistics",
    "load_attack",
    "register_attack",
    "resolve_layers",
    "shadow_rows",
    "update_statistics",
]
