"""Defenses: update transforms (pruning, clipping, noise) and secure aggregation.

Transforms are pure callables ``(update, rng) -> update`` applied on the
client before the update leaves it; Paillier encryption changes the update's
type, so it is an aggregator, not a transform.
"""

from fedaudit.defenses.build import DEFENSES, Defenses, DefenseSpec, build_defenses
from fedaudit.defenses.dp import (
    ClipNorm,
    DPSGDConfig,
    DPSGDTrainer,
    GaussianNoise,
    LocalDP,
    UserLevelDP,
    calibrate_noise,
    epsilon,
    per_client_epsilon,
)
from fedaudit.defenses.paillier import (
    EncryptedUpdate,
    InsecureKeyWarning,
    PackedEncoder,
    PackingOverflowError,
    PaillierAggregator,
    generate_keypair,
)
from fedaudit.defenses.prune import MagnitudePrune, prune_by_magnitude
from fedaudit.defenses.secure import SecureAggregation, SecureAggregationConfig

__all__ = [
    "ClipNorm",
    "DEFENSES",
    "DPSGDConfig",
    "DPSGDTrainer",
    "DefenseSpec",
    "Defenses",
    "EncryptedUpdate",
    "GaussianNoise",
    "InsecureKeyWarning",
    "LocalDP",
    "MagnitudePrune",
    "PackedEncoder",
    "PackingOverflowError",
    "PaillierAggregator",
    "SecureAggregation",
    "SecureAggregationConfig",
    "UserLevelDP",
    "build_defenses",
    "calibrate_noise",
    "epsilon",
    "generate_keypair",
    "per_client_epsilon",
    "prune_by_magnitude",
]
