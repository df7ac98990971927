"""SEFL: gradient pruning plus Paillier secure aggregation, as a simulator aggregator.

Implementation based on Mohammadi et al., "Secure and Efficient Federated
Learning by Combining Homomorphic Encryption and Gradient Pruning in Speech
Emotion Recognition" (2023), with BatchCrypt packing (Zhang et al., USENIX ATC
2020) as the default encoding.

Who sees what:

* the server sees ciphertexts only: their sizes and timings are recorded, and
  an attribute attack on them is not applicable;
* whoever holds the private key (the clients, or a party colluding with one)
  can decrypt any ciphertext it gets hold of: the recorded per-client update is
  what decrypting that client's ciphertext gives (pruned and quantised), so the
  attacks measure the threat of a key-holding party;
* the clients decrypt the aggregate, which updates the model.

Encrypting a full update costs seconds (packed) to many minutes (one value per
ciphertext). The first ``encrypted_rounds`` rounds run the real cryptography
end to end and check that the decrypted sum equals the plaintext emulation of
the same integer arithmetic; later rounds use that emulation, which is exact
(packed sums of quantised integers never overflow a slot), so the model
trajectory is the one real encryption would give. Bytes on the wire are exact
for every round; timings are measured in the encrypted rounds only.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

import numpy as np

from fedaudit.defenses.paillier import (
    InsecureKeyWarning,
    PackedEncoder,
    PaillierAggregator,
    ciphertext_nbytes,
    generate_keypair,
)
from fedaudit.defenses.prune import prune_by_magnitude
from fedaudit.exceptions import FedAuditError, InvalidParameterError
from fedaudit.types import Aggregate, ClientUpdate

__all__ = ["SecureAggregation", "SecureAggregationConfig"]

_INDEX_BYTES = 4  # a pruned value's position, single mode


@dataclass(frozen=True, kw_only=True)
class SecureAggregationConfig:
    """Settings of SEFL secure aggregation.

    Parameters
    ----------
    key_bits
        Paillier modulus size. Below 2048 bits a warning is raised; below 1024
        the key is refused unless ``insecure_key`` is set.
    mode
        ``"packed"`` (many quantised values per ciphertext) or ``"single"``
        (one value per ciphertext, as in the publication).
    prune_percent
        Share of the smallest-magnitude values of each layer zeroed before
        encryption (Algorithm 2 of SEFL). Single mode sends only the rest.
    clip
        Packed mode: values of the model delta (``lr * U * update``) are
        clipped to ``[-clip, clip]`` before quantisation.
    value_bits
        Packed mode: bits per quantised value.
    encrypted_rounds
        Rounds run with real encryption (``None``: all).
    insecure_key
        Allow keys below 1024 bits (only to reproduce the publication).
    """

    key_bits: int = 2048
    mode: str = "packed"
    prune_percent: float = 0.0
    clip: float = 0.5
    value_bits: int = 16
    encrypted_rounds: int | None = 1
    insecure_key: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("packed", "single"):
            raise InvalidParameterError(
                f"The 'mode' parameter of SecureAggregationConfig must be 'packed' or 'single'. Got {self.mode!r}."
            )
        if not 0.0 <= self.prune_percent < 100.0:
            raise InvalidParameterError(
                f"The 'prune_percent' parameter of SecureAggregationConfig must be in [0, 100). "
                f"Got {self.prune_percent!r} instead."
            )
        if self.encrypted_rounds is not None and self.encrypted_rounds < 0:
            raise InvalidParameterError(
                f"The 'encrypted_rounds' parameter must be >= 0 or None. Got {self.encrypted_rounds!r}."
            )


class SecureAggregation:
    """Prune, encrypt, add ciphertexts, decrypt: the aggregation step of one run.

    The simulator calls :meth:`client_send` for each selected client (after
    the other defenses) and :meth:`server_aggregate` once per round.
    """

    #: How errors name this aggregator.
    title: ClassVar[str] = "SEFL secure aggregation"

    def __init__(self, config: SecureAggregationConfig, *, max_clients: int) -> None:
        self.config = config
        self.max_clients = max_clients
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", InsecureKeyWarning)
            public, private = generate_keypair(config.key_bits, insecure_ok=config.insecure_key)
        self.warnings = [str(w.message) for w in caught]
        for w in caught:  # re-emit for the caller, once
            warnings.warn(w.message, InsecureKeyWarning, stacklevel=2)
        # Keys live in memory only; nothing here writes them anywhere.
        kwargs: dict[str, Any] = {"mode": config.mode}
        if config.mode == "packed":
            kwargs.update(clip=config.clip, value_bits=config.value_bits, max_clients=max_clients)
        self._client = PaillierAggregator(public, private, **kwargs)
        self._server = PaillierAggregator(public, **kwargs)
        self.encoder: PackedEncoder | None = self._client.encoder
        self._ct_bytes = ciphertext_nbytes(self._client.key_bits)
        self._round: list[tuple[dict[str, np.ndarray], Any]] = []  # (key-holder view, ciphertexts)
        self.clipped_values = 0
        self.total_values = 0

    def describe(self) -> dict[str, Any]:
        return {"name": "sefl", **asdict(self.config), "key_bits_actual": self._client.key_bits,
                "max_clients": self.max_clients, "server_sees": "ciphertexts only",
                "recorded_updates": "as decrypted by a key holder (pruned, quantised)"}

    def _encrypted(self, server_round: int) -> bool:
        n = self.config.encrypted_rounds
        return n is None or server_round < n

    def client_send(self, update: ClientUpdate) -> ClientUpdate:
        """Prune and encrypt one client's update; return it as a key holder would decrypt it."""
        scale = update.lr * update.local_steps
        delta = {n: np.asarray(a, dtype=np.float64) * scale for n, a in update.arrays.items()}
        if self.config.prune_percent > 0:
            delta = prune_by_magnitude(delta, self.config.prune_percent)
        if self.encoder is not None:
            seen = {}
            for n, a in delta.items():
                self.clipped_values += int(np.sum(np.abs(a) > self.config.clip))
                self.total_values += a.size
                u = self.encoder.quantize(a).astype(np.int64) - self.encoder.levels
                seen[n] = (u * self.encoder.step).reshape(a.shape)
            nbytes = sum(self.encoder.n_plaintexts(a.size) for a in delta.values()) * self._ct_bytes
        else:
            seen = delta
            exp_bytes = getattr(type(self._client._codec), "exponent_nbytes", 0)
            if self.config.prune_percent > 0:
                nnz = sum(int(np.count_nonzero(a)) for a in delta.values())
                nbytes = nnz * (self._ct_bytes + exp_bytes + _INDEX_BYTES)
            else:
                nbytes = sum(a.size for a in delta.values()) * (self._ct_bytes + exp_bytes)
        payload = None
        encrypt_seconds = None
        if self._encrypted(update.server_round):
            t0 = time.perf_counter()
            payload = self._client.encrypt(delta)
            encrypt_seconds = time.perf_counter() - t0
        shown = {n: (seen[n] / scale).astype(np.float32) for n in seen}
        sent = replace(update, arrays=shown, bytes_sent=int(nbytes), encrypt_seconds=encrypt_seconds)
        self._round.append((seen, payload))
        return sent

    def server_aggregate(self) -> Aggregate:
        """The mean of this round's model deltas, from the sum the clients decrypt.

        ``decrypt_seconds`` is the clients' time to decrypt the aggregate in an
        encrypted round, ``None`` in an emulated one.
        """
        entries, self._round = self._round, []
        n_clients = len(entries)
        emulated = {n: np.sum([seen[n] for seen, _ in entries], axis=0) for n in entries[0][0]}
        payloads = [p for _, p in entries if p is not None]
        if not payloads:
            return Aggregate(mean_delta={n: v / n_clients for n, v in emulated.items()})
        total = self._server.aggregate(payloads)
        t0 = time.perf_counter()
        decrypted = self._client.decrypt(total)
        seconds = time.perf_counter() - t0
        for n, value in decrypted.items():
            tol = 1e-9 if self.encoder is not None else 1e-6 * max(1.0, float(np.abs(emulated[n]).max()))
            if not np.allclose(value.reshape(emulated[n].shape), emulated[n], rtol=0, atol=tol):
                raise FedAuditError(
                    f"The decrypted aggregate of {n} differs from its plaintext emulation by "
                    f"{float(np.abs(value.reshape(emulated[n].shape) - emulated[n]).max()):.3g}; "
                    "the secure aggregation is inconsistent."
                )
        sums = {n: v.reshape(emulated[n].shape) for n, v in decrypted.items()}
        return Aggregate(mean_delta={n: v / n_clients for n, v in sums.items()}, decrypt_seconds=seconds)

    def report(self) -> dict[str, Any]:
        """Share of packed values clipped so far, and the key-size warnings of the run."""
        return {"clipped_share": self.clipped_values / self.total_values if self.total_values else 0.0,
                "key_warnings": self.warnings}
