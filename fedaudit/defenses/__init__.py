"""Defenses: update transforms (pruning, clipping, noise) and secure aggregation.

Transforms are pure callables ``(update, rng) -> update`` applied on the
client before the update leaves it; Paillier encryption changes the update's
type, so it is an aggregator, not a transform.
"""

from fedaudit.defenses.paillier import (
    EncryptedUpdate,
    InsecureKeyWarning,
    PackedEncoder,
    PackingOverflowError,
    PaillierAggregator,
    generate_keypair,
)
from fedaudit.defenses.prune import MagnitudePrune, prune_by_magnitude

__all__ = [
    "EncryptedUpdate",
    "InsecureKeyWarning",
    "MagnitudePrune",
    "PackedEncoder",
    "PackingOverflowError",
    "PaillierAggregator",
    "generate_keypair",
    "prune_by_magnitude",
]
