"""Defenses: one registry, one frozen dataclass per defense, composed into the pieces a run plugs in.

Each registered defense (:data:`DEFENSES`: ``"prune"``, ``"udp"``, ``"ldp"``,
``"dp-sgd"``, ``"sefl"``) is a frozen dataclass of its options whose
``build(context)`` returns :class:`~fedaudit.types.DefensePieces`: update
transforms (pure ``(update, rng) -> update`` callables applied on the client),
a client trainer (DP-SGD), a server aggregator (secure aggregation, client
selection), accountants returning :class:`~fedaudit.types.PrivacySpent`, and
summaries. :func:`build_defenses` composes several; :func:`defenses_from_options`
makes them from the command line's flat options. Adding a defense: one module
and ``@register_defense`` (``docs/adding-a-defense.md``).
"""

# The built-in defenses register in this order, which is the order their client
# transforms apply when they come from defenses_from_options: keep it.
from fedaudit.defenses.registry import DEFENSES, Defense, DefenseContext, register_defense  # isort: skip
from fedaudit.defenses.prune import MagnitudePrune, PruneDefense, prune_by_magnitude  # isort: skip
from fedaudit.defenses.udp import UserLevelDPDefense  # isort: skip
from fedaudit.defenses.ldp import LocalDPDefense  # isort: skip
from fedaudit.defenses.dpsgd import DPSGDDefense  # isort: skip
from fedaudit.defenses.sefl import SEFLDefense  # isort: skip

from fedaudit.defenses.accounting import (
    analytic_gaussian_sigma,
    calibrate_noise,
    epsilon,
    per_client_epsilon,
    udp_epsilon,
    udp_per_client_epsilon,
)
from fedaudit.defenses.build import build_defenses, defenses_from_options, describe_options, option_defaults
from fedaudit.defenses.dpsgd_trainer import DPSGDConfig, DPSGDTrainer
from fedaudit.defenses.paillier import (
    EncryptedUpdate,
    InsecureKeyWarning,
    PackedEncoder,
    PackingOverflowError,
    PaillierAggregator,
    generate_keypair,
)
from fedaudit.defenses.secure import SecureAggregation, SecureAggregationConfig
from fedaudit.defenses.selection import SelectiveAggregation
from fedaudit.defenses.transforms import ClipNorm, GaussianNoise, LocalDP, UserLevelDP, clip_by_global_norm, global_l2_norm

__all__ = [
    "ClipNorm",
    "DEFENSES",
    "DPSGDConfig",
    "DPSGDDefense",
    "DPSGDTrainer",
    "Defense",
    "DefenseContext",
    "EncryptedUpdate",
    "GaussianNoise",
    "InsecureKeyWarning",
    "LocalDP",
    "LocalDPDefense",
    "MagnitudePrune",
    "PackedEncoder",
    "PackingOverflowError",
    "PaillierAggregator",
    "PruneDefense",
    "SEFLDefense",
    "SecureAggregation",
    "SecureAggregationConfig",
    "SelectiveAggregation",
    "UserLevelDP",
    "UserLevelDPDefense",
    "analytic_gaussian_sigma",
    "build_defenses",
    "calibrate_noise",
    "clip_by_global_norm",
    "defenses_from_options",
    "describe_options",
    "epsilon",
    "generate_keypair",
    "global_l2_norm",
    "option_defaults",
    "per_client_epsilon",
    "prune_by_magnitude",
    "register_defense",
    "udp_epsilon",
    "udp_per_client_epsilon",
]
