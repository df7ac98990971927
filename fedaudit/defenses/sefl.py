"""The ``"sefl"`` defense: gradient pruning plus Paillier secure aggregation (Mohammadi et al. 2023)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

from fedaudit.config import clients_per_round
from fedaudit.defenses._validation import param_bool, param_choice, param_float, param_int
from fedaudit.defenses.paillier import check_key_bits
from fedaudit.defenses.registry import Defense, DefenseContext, register_defense
from fedaudit.defenses.secure import SecureAggregation, SecureAggregationConfig
from fedaudit.types import DefensePieces, Participation

__all__ = ["SEFLDefense"]


@register_defense
@dataclass(frozen=True, kw_only=True)
class SEFLDefense(Defense):
    """SEFL: each client prunes its update and encrypts it; the server adds ciphertexts only.

    Implementation based on Mohammadi et al., "Secure and Efficient Federated
    Learning by Combining Homomorphic Encryption and Gradient Pruning in Speech
    Emotion Recognition" (2023), with BatchCrypt packing by default; the
    aggregator is :class:`~fedaudit.defenses.secure.SecureAggregation`, sized for
    the clients of one round (``clients_per_round(config.client_fraction, n_clients)``).
    The recorded updates are what a key holder decrypts (pruned, quantised); the
    server sees ciphertexts, whose bytes and timings each update carries. The run
    summary ``{"sefl": {"clipped_share", "key_warnings"}}`` says how many packed
    values were clipped and which key-size warnings were raised.

    Parameters
    ----------
    key_bits
        Paillier modulus size: an even int >= 64; below 2048 a warning is raised when
        the key is generated, below 1024 it is refused unless ``insecure_key``.
    mode
        ``"packed"`` (many quantised values per ciphertext) or ``"single"`` (one value
        per ciphertext, as published) (option ``he_mode``).
    prune_percent
        Share of the smallest |values| of each layer zeroed before encryption, in [0, 100).
    clip
        Packed mode: bound of the model-delta values, > 0 (option ``he_clip``).
    value_bits
        Packed mode: bits per quantised value, in [2, 32].
    encrypted_rounds
        Rounds run with real encryption (``None``: all), >= 0; later rounds use the exact
        plaintext emulation of the same integer arithmetic.
    insecure_key
        Allow keys below 1024 bits (only to reproduce the publication).

    Examples
    --------
    >>> SEFLDefense(key_bits=2048).mode
    'packed'
    """

    name: ClassVar[str] = "sefl"
    description: ClassVar[str] = "gradient pruning + Paillier secure aggregation (Mohammadi et al. 2023)"
    option_keys: ClassVar[Mapping[str, str]] = MappingProxyType({"mode": "he_mode", "clip": "he_clip"})

    key_bits: int = 2048
    mode: str = "packed"
    prune_percent: float = 80.0
    clip: float = 0.5
    value_bits: int = 16
    encrypted_rounds: int | None = 1
    insecure_key: bool = False

    def __post_init__(self) -> None:
        param_bool(self, "insecure_key")
        check_key_bits(self.key_bits, insecure_ok=self.insecure_key, name="key_bits", caller="SEFLDefense",
                       flag="insecure_key")
        param_choice(self, "mode", ("packed", "single"))
        param_float(self, "prune_percent", low=0.0, high=100.0, high_open=True)
        param_float(self, "clip", low=0.0, low_open=True)
        param_int(self, "value_bits", low=2, high=32)
        param_int(self, "encrypted_rounds", low=0, optional=True)

    def build(self, context: DefenseContext) -> DefensePieces:
        config = SecureAggregationConfig(key_bits=self.key_bits, mode=self.mode, prune_percent=self.prune_percent,
                                         clip=self.clip, value_bits=self.value_bits,
                                         encrypted_rounds=self.encrypted_rounds, insecure_key=self.insecure_key)
        aggregator = SecureAggregation(
            config, max_clients=clients_per_round(context.config.client_fraction, context.n_clients)
        )

        def summary(participation: Participation) -> dict[str, Any]:
            return {self.name: aggregator.report()}

        return DefensePieces(aggregator=aggregator, summaries=(summary,),
                             settings={self.name: aggregator.describe()})
