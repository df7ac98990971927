"""The ``"udp"`` defense: user-level DP on each client update (Feng, Peri and Narayanan 2022)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fedaudit.defenses._validation import param_choice, param_exactly_one, param_float
from fedaudit.defenses.accounting import (
    ACCOUNTANTS,
    calibrate_noise,
    rounds_joined,
    udp_epsilon,
    udp_per_client_epsilon,
)
from fedaudit.defenses.registry import Defense, DefenseContext, register_defense
from fedaudit.defenses.transforms import UserLevelDP
from fedaudit.types import DefensePieces, Participation, PrivacySpent

__all__ = ["UserLevelDPDefense"]


@register_defense
@dataclass(frozen=True, kw_only=True)
class UserLevelDPDefense(Defense):
    """User-level DP: clip the whole client update to ``clip``, add N(0, (z clip)^2) to every value.

    Implementation based on Feng, Peri and Narayanan, "User-level differential
    privacy against attribute inference attack of speech emotion recognition in
    federated learning" (2022); the transform is :class:`~fedaudit.defenses.transforms.UserLevelDP`.
    With ``target_epsilon`` the noise multiplier z is calibrated so that the
    amplified (aggregate-view) epsilon over ``config.rounds`` rounds at sample rate
    ``config.client_fraction`` is the target. The privacy report gives each client's
    epsilon against a server that sees its individual updates (no amplification,
    composed over the rounds it joined) and the amplified figure.

    Parameters
    ----------
    clip
        L2 bound of the whole update (gradient units), > 0.
    noise_multiplier
        z, >= 0. Give this or ``target_epsilon``.
    target_epsilon
        Amplified epsilon to reach at the end of the run, at ``delta``, > 0.
    delta
        DP delta, in (0, 1).
    accountant
        ``"rdp"`` or ``"prv"`` (Opacus accountants).

    Examples
    --------
    >>> UserLevelDPDefense(clip=0.25, noise_multiplier=1.0).name
    'udp'
    """

    name: ClassVar[str] = "udp"
    description: ClassVar[str] = (
        "user-level DP: clip the client update to C, add Gaussian noise (Feng, Peri, Narayanan 2022)"
    )

    clip: float = 1.0
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    accountant: str = "rdp"

    def __post_init__(self) -> None:
        param_float(self, "clip", low=0.0, low_open=True)
        param_float(self, "noise_multiplier", low=0.0, optional=True)
        param_float(self, "target_epsilon", low=0.0, low_open=True, optional=True)
        param_float(self, "delta", low=0.0, high=1.0, low_open=True, high_open=True)
        param_choice(self, "accountant", ACCOUNTANTS)
        param_exactly_one(self, "noise_multiplier", "target_epsilon")

    def build(self, context: DefenseContext) -> DefensePieces:
        config = context.config
        z = self.noise_multiplier
        if z is None:
            z = calibrate_noise(self.target_epsilon, delta=self.delta,  # type: ignore[arg-type]
                                sample_rate=config.client_fraction, steps=config.rounds,
                                accountant=self.accountant)
        transform = UserLevelDP(clip=self.clip, noise_multiplier=z)
        amplified = udp_epsilon(z, client_fraction=config.client_fraction, rounds=config.rounds,
                                delta=self.delta, accountant=self.accountant)
        z, delta, accountant = float(z), self.delta, self.accountant

        def account(participation: Participation) -> PrivacySpent:
            per_client = udp_per_client_epsilon(participation.client_id, noise_multiplier=z, delta=delta,
                                                accountant=accountant)
            return PrivacySpent(mechanism="udp", level="user", delta=delta, epsilon_per_client=per_client,
                                accountant=accountant, noise_multiplier=z, epsilon_aggregate=amplified,
                                rounds_joined=rounds_joined(participation))

        settings = {**transform.describe(), "target_epsilon": self.target_epsilon, "delta": self.delta,
                    "epsilon_amplified": amplified}
        return DefensePieces(transforms=(transform,), accountants=(account,), settings={self.name: settings})
