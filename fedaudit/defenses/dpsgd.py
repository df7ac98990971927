"""The ``"dp-sgd"`` defense: sample-level DP-SGD in local training (Opacus ghost clipping)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import numpy as np

from fedaudit.defenses._validation import param_choice, param_exactly_one, param_float
from fedaudit.defenses.accounting import ACCOUNTANTS, per_client_epsilon, rounds_joined
from fedaudit.defenses.dpsgd_trainer import DPSGDConfig, DPSGDTrainer
from fedaudit.defenses.registry import Defense, DefenseContext, register_defense
from fedaudit.types import DefensePieces, Participation, PrivacySpent

__all__ = ["DPSGDDefense"]


@register_defense
@dataclass(frozen=True, kw_only=True)
class DPSGDDefense(Defense):
    """DP-SGD in every client's local training: per-sample clipping and Gaussian noise.

    Implementation based on Abadi et al., "Deep learning with differential
    privacy" (CCS 2016), with the ghost clipping of Opacus
    (:class:`~fedaudit.defenses.dpsgd_trainer.DPSGDTrainer`). With
    ``target_epsilon`` the noise multiplier is calibrated for a typical client:
    sample rate ``batch_size / n_train_typical`` and, over the run, one step per
    round joined (FedSGD) or ``ceil(1 / sample_rate) * local_epochs`` steps
    (FedAvg), times the expected ``rounds * client_fraction`` rounds joined. The
    privacy report gives each client's epsilon composed over the steps it ran,
    at its own sample rate.

    Parameters
    ----------
    noise_multiplier
        Noise std over ``max_grad_norm``, >= 0. Give this or ``target_epsilon``.
    target_epsilon
        Epsilon of a typical client at the end of the run, > 0.
    max_grad_norm
        Per-sample gradient clipping bound, > 0.
    delta
        DP delta, in (0, 1).
    accountant
        ``"rdp"`` or ``"prv"`` (Opacus accountants).

    Examples
    --------
    >>> DPSGDDefense(noise_multiplier=1.0).max_grad_norm
    1.0
    """

    name: ClassVar[str] = "dp-sgd"
    description: ClassVar[str] = "sample-level DP-SGD in local training (Opacus, ghost clipping)"

    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    accountant: str = "rdp"

    def __post_init__(self) -> None:
        param_float(self, "noise_multiplier", low=0.0, optional=True)
        param_float(self, "target_epsilon", low=0.0, low_open=True, optional=True)
        param_float(self, "max_grad_norm", low=0.0, low_open=True)
        param_float(self, "delta", low=0.0, high=1.0, low_open=True, high_open=True)
        param_choice(self, "accountant", ACCOUNTANTS)
        param_exactly_one(self, "noise_multiplier", "target_epsilon")

    def build(self, context: DefenseContext) -> DefensePieces:
        config = context.config
        dp_config = DPSGDConfig(noise_multiplier=self.noise_multiplier, target_epsilon=self.target_epsilon,
                                max_grad_norm=self.max_grad_norm, delta=self.delta, accountant=self.accountant)
        sample_rate = min(1.0, config.batch_size / max(1, context.n_train_typical))
        steps_per_round = 1 if config.algorithm == "fedsgd" else math.ceil(1 / sample_rate) * config.local_epochs
        steps = max(1, round(config.rounds * config.client_fraction * steps_per_round))
        resolved = dp_config.resolve(sample_rate=sample_rate, steps=steps) if self.noise_multiplier is None else dp_config
        z, delta, accountant = float(resolved.noise_multiplier), self.delta, self.accountant  # type: ignore[arg-type]

        def account(participation: Participation) -> PrivacySpent:
            n_train = np.asarray(participation.n_train)[participation.client_id]
            rate = np.minimum(1.0, participation.batch_size / np.maximum(n_train, 1))
            per_client = per_client_epsilon(participation.client_id, steps_per_row=participation.local_steps,
                                            sample_rate_per_row=rate, noise_multiplier=z, delta=delta,
                                            accountant=accountant)
            return PrivacySpent(mechanism="dp-sgd", level="sample", delta=delta, epsilon_per_client=per_client,
                                accountant=accountant, noise_multiplier=z, rounds_joined=rounds_joined(participation))

        settings = {**resolved.describe(), "target_epsilon": self.target_epsilon,
                    "calibration": {"sample_rate": sample_rate, "steps": steps}}
        return DefensePieces(client_trainer=partial(DPSGDTrainer, config=resolved), accountants=(account,),
                             settings={self.name: settings})
