"""The ``"ldp"`` defense: local DP on each client update, with an optional client selection strategy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

from fedaudit.defenses._validation import param_float
from fedaudit.defenses.accounting import rounds_joined
from fedaudit.defenses.registry import Defense, DefenseContext, register_defense
from fedaudit.defenses.selection import SelectiveAggregation
from fedaudit.defenses.transforms import LocalDP
from fedaudit.types import DefensePieces, Participation, PrivacySpent

__all__ = ["LocalDPDefense"]


@register_defense
@dataclass(frozen=True, kw_only=True)
class LocalDPDefense(Defense):
    """Local DP: clip each update, add Gaussian noise so that one update is (epsilon, delta)-DP.

    The LDP-FL setting of Mohammadi et al., "Differentially private federated
    learning for speech emotion recognition with client selection" (FedCSIS
    2023); the transform is :class:`~fedaudit.defenses.transforms.LocalDP`
    (analytic Gaussian mechanism, sensitivity ``2 clip``). With ``css_keep < 1``
    the server aggregates only that share of each round's updates, those least
    dominated by noise (:class:`~fedaudit.defenses.selection.SelectiveAggregation`).
    The privacy report is per release: every client that sent an update spent
    ``epsilon`` per update, ``rounds_joined`` times.

    Parameters
    ----------
    clip
        L2 bound of the whole update (gradient units), > 0.
    epsilon
        Epsilon of one update release, > 0 (option ``ldp_epsilon``).
    delta
        Delta of one release, in (0, 1).
    css_keep
        Client selection strategy: share of each round's updates the server keeps,
        in (0, 1] (1.0 = off).

    Examples
    --------
    >>> LocalDPDefense(epsilon=8.0, css_keep=0.5).name
    'ldp'
    """

    name: ClassVar[str] = "ldp"
    description: ClassVar[str] = "local DP: clip, Gaussian noise calibrated to (epsilon, delta) per round (LDP-FL)"
    option_keys: ClassVar[Mapping[str, str]] = MappingProxyType({"epsilon": "ldp_epsilon"})

    clip: float = 1.0
    epsilon: float = 10.0
    delta: float = 1e-5
    css_keep: float = 1.0

    def __post_init__(self) -> None:
        param_float(self, "clip", low=0.0, low_open=True)
        param_float(self, "epsilon", low=0.0, low_open=True)
        param_float(self, "delta", low=0.0, high=1.0, low_open=True, high_open=True)
        param_float(self, "css_keep", low=0.0, high=1.0, low_open=True)

    def build(self, context: DefenseContext) -> DefensePieces:
        transform = LocalDP(clip=self.clip, epsilon=self.epsilon, delta=self.delta)
        noise_std = transform.noise_std
        epsilon, delta, clip = float(self.epsilon), float(self.delta), float(self.clip)

        def account(participation: Participation) -> PrivacySpent:
            joined = rounds_joined(participation)
            return PrivacySpent(mechanism="ldp", level="release", delta=delta,
                                epsilon_per_client={cid: epsilon for cid in joined}, accountant="analytic",
                                noise_multiplier=noise_std / clip, rounds_joined=joined)

        settings: dict[str, Any] = {self.name: transform.describe()}
        aggregator = None
        if self.css_keep < 1.0:
            aggregator = SelectiveAggregation(keep=self.css_keep, noise_std=noise_std)
            settings["css"] = {"keep": self.css_keep}
        return DefensePieces(transforms=(transform,), aggregator=aggregator, accountants=(account,),
                             settings=settings)
