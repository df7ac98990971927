"""Reconstruction: recover what clients' data looked like (acoustic features, emotion labels) from their updates.

Every method is registered in :data:`RECONSTRUCTIONS` (``fedaudit invert --method NAME``)
and keeps the contract of :class:`ReconstructionMethod`.
"""

from fedaudit.attacks.reconstruct.base import (
    RECONSTRUCTIONS,
    ObservedUpdate,
    Reconstruction,
    ReconstructionContext,
    ReconstructionMethod,
    observed_updates,
    register_reconstruction,
)
from fedaudit.attacks.reconstruct.labels import LabelCounts, label_counts  # noqa: F401 - registers "labels"
from fedaudit.attacks.reconstruct.analytic import AnalyticInputs, separate_inputs  # noqa: F401 - registers "analytic"
from fedaudit.attacks.reconstruct.optimize import GradientMatching  # noqa: F401 - registers "optimize"
from fedaudit.attacks.reconstruct.model_inversion import ModelInversion, invert_model  # noqa: F401 - registers "model"

__all__ = [
    "ObservedUpdate",
    "RECONSTRUCTIONS",
    "Reconstruction",
    "ReconstructionContext",
    "ReconstructionMethod",
    "observed_updates",
    "register_reconstruction",
]
