"""Paillier secure aggregation of client updates, with BatchCrypt-style packing.

Clients encrypt their update under a shared Paillier public key; the server
multiplies the ciphertexts (which adds the plaintexts) without any private key;
the key holders decrypt only the sum. This is the aggregation step of SEFL
(Mohammadi, Sinaei, Balador and Flammini, 2023; section C of
``docs/reference/PAPERS.md``). Two modes are registered in :data:`MODES`:

``"packed"`` (default)
    BatchCrypt (Zhang et al., USENIX ATC 2020). Values are clipped to
    ``[-clip, clip]``, quantised to signed ``value_bits``-bit integers, shifted
    to be non-negative and packed side by side into one plaintext below ``n``,
    each in a slot with enough headroom bits that the sum of up to
    ``max_clients`` clients never carries into the next slot. A 2048-bit key
    holds 97 values of 16 bits for up to 20 clients, so one encryption does the
    work of 97.
``"single"``
    One value per ciphertext, with ``phe``'s own exact encoding of floats
    (``EncryptedNumber``): the scheme SEFL measures, kept for comparison.

Quantisation error (packed mode). With ``q = 2**(value_bits - 1) - 1`` levels
on each side, a clipped value ``x`` is sent as ``round(x * q / clip)``, so each
client's value is off by at most ``clip / (2 q)`` and the decrypted sum of
``K`` clients differs from the sum of the clipped inputs by at most
``K * clip / (2 q)`` per value (:meth:`PackedEncoder.error_bound`), up to
float64 rounding. Single mode is exact up to float64 rounding of the sum.

Encryption speed. ``E(m) = (1 + m n) r^n mod n^2`` with ``g = n + 1``, so the
only expensive step is the obfuscator ``r^n``, which does not depend on the
message. It is computed with gmpy2, through the Chinese remainder theorem
modulo ``p^2`` and ``q^2`` when the aggregator holds the private key (clients
do in SEFL), and over ``n_jobs`` processes if asked.

This module never writes keys anywhere; it has no key serialisation.
"""

from __future__ import annotations

import math
import numbers
import secrets
import time
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from fedaudit.exceptions import FedAuditError, FedAuditWarning, InvalidParameterError

try:
    import gmpy2
    from phe import paillier as _phe
except ImportError as _err:  # pragma: no cover - exercised only without the [he] extra
    gmpy2 = None
    _phe = None
    _HE_IMPORT_ERROR: ImportError | None = _err
else:
    _HE_IMPORT_ERROR = None

if TYPE_CHECKING:
    from phe.paillier import PaillierPrivateKey, PaillierPublicKey

__all__ = [
    "EncryptedUpdate",
    "InsecureKeyWarning",
    "MIN_KEY_BITS",
    "MODES",
    "PackedEncoder",
    "PackingOverflowError",
    "PaillierAggregator",
    "RECOMMENDED_KEY_BITS",
    "check_key_bits",
    "ciphertext_nbytes",
    "generate_keypair",
]

#: Smallest key size accepted without ``insecure_ok``.
MIN_KEY_BITS = 1024
#: Smallest key size NIST SP 800-57 accepts today; smaller keys warn.
RECOMMENDED_KEY_BITS = 2048
#: Largest slot width: slot sums are decoded exactly through float64.
_MAX_SLOT_BITS = 53


class InsecureKeyWarning(FedAuditWarning):
    """A Paillier key is shorter than the 2048 bits NIST SP 800-57 requires."""


class PackingOverflowError(FedAuditError, OverflowError):
    """Packed sums would overflow (or did overflow) their slots."""

    exit_code = 1


def _require_he() -> None:
    if _HE_IMPORT_ERROR is not None:
        raise ImportError(
            "Paillier encryption needs the optional packages phe and gmpy2, which are not installed. "
            "Install them with: pip install 'fedaudit[he]'"
        ) from _HE_IMPORT_ERROR


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_key_bits(
    bits: object, *, insecure_ok: bool, name: str = "bits", caller: str = "generate_keypair",
    flag: str = "insecure_ok",
) -> int:
    """Check a Paillier key size: an even integer >= 64, and >= 1024 unless ``insecure_ok``.

    ``name``, ``caller`` and ``flag`` say how the error names the size, its owner and the
    setting that allows small keys.

    Raises
    ------
    InvalidParameterError
        If the size is not an even integer >= 64, or is below 1024 without ``insecure_ok``.
    """
    if not _is_int(bits) or bits < 64 or bits % 2:  # type: ignore[operator]
        raise InvalidParameterError(
            f"The {name!r} parameter of {caller} must be an even integer >= 64. Got {bits!r} instead; "
            f"use {name}={RECOMMENDED_KEY_BITS}."
        )
    bits = int(bits)  # type: ignore[call-overload]
    if bits < MIN_KEY_BITS and not insecure_ok:
        raise InvalidParameterError(
            f"A {bits}-bit Paillier key is refused: moduli below {MIN_KEY_BITS} bits can be factored, and the "
            f"128-bit keys of the SEFL publication factor in seconds. Use {name}={RECOMMENDED_KEY_BITS} or more "
            f"(NIST SP 800-57); pass {flag}=True (--insecure-key on the command line) only to reproduce "
            "the publication."
        )
    return bits


def generate_keypair(
    bits: int = RECOMMENDED_KEY_BITS, *, insecure_ok: bool = False
) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """Generate a Paillier key pair with ``phe`` (``g = n + 1``).

    Parameters
    ----------
    bits
        Length of the modulus ``n`` in bits: an even integer >= 64.
    insecure_ok
        Accept keys below 1024 bits. Only to reproduce SEFL, whose 128 to
        1024-bit keys are all breakable (the 128-bit ones in seconds).

    Returns
    -------
    tuple[PaillierPublicKey, PaillierPrivateKey]
        The public key (give it to the server) and the private key (keep it
        with the clients; it never leaves memory through this module).

    Raises
    ------
    InvalidParameterError
        If ``bits`` is not an even integer >= 64, or is below 1024 without
        ``insecure_ok``.
    ImportError
        If phe or gmpy2 is missing.

    Warns
    -----
    InsecureKeyWarning
        If ``bits`` is below 2048 (NIST SP 800-57).

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", InsecureKeyWarning)
    ...     public_key, private_key = generate_keypair(256, insecure_ok=True)
    >>> public_key.n.bit_length()
    256
    """
    _require_he()
    bits = check_key_bits(bits, insecure_ok=insecure_ok)
    if bits < RECOMMENDED_KEY_BITS:
        warnings.warn(
            f"A {bits}-bit Paillier key is below the {RECOMMENDED_KEY_BITS} bits NIST SP 800-57 requires, so the "
            f"server may be able to factor n and read every update. Use bits={RECOMMENDED_KEY_BITS} or more "
            "except to reproduce the publication.",
            InsecureKeyWarning,
            stacklevel=2,
        )
    return _phe.generate_paillier_keypair(n_length=bits)


def ciphertext_nbytes(key_bits: int) -> int:
    """Bytes of one ciphertext on the wire at fixed width: ``ceil(2 * key_bits / 8)``.

    Examples
    --------
    >>> ciphertext_nbytes(2048)
    512
    """
    return (2 * int(key_bits) + 7) // 8


@dataclass(frozen=True, kw_only=True)
class PackedEncoder:
    """Clip, quantise, shift and pack float values into Paillier plaintexts.

    BatchCrypt encoding (Zhang et al., "BatchCrypt: Efficient Homomorphic
    Encryption for Cross-Silo Federated Learning", USENIX ATC 2020), with
    non-negative slots so that no sign bits need handling. A value ``x``
    becomes ``u = round(clip(x) * q / clip) + q`` in ``[0, 2 q]`` with
    ``q = 2**(value_bits - 1) - 1``; slot ``i`` of a plaintext holds ``u_i`` at
    bits ``[i w, (i + 1) w)``, where the slot width ``w`` is the bit length of
    ``max_clients * 2 q``, so the sum of ``max_clients`` plaintexts cannot
    carry between slots. Plaintexts stay below ``2**(key_bits - 1) <= n``.

    Parameters
    ----------
    clip
        Values are clipped to ``[-clip, clip]`` before quantisation.
    value_bits
        Bits per quantised value (sign included), 2 to 32.
    max_clients
        Most client updates that may be summed; sets the headroom bits.
    key_bits
        Bit length of the Paillier modulus ``n``.

    Examples
    --------
    >>> enc = PackedEncoder(clip=1.0, value_bits=16, max_clients=20, key_bits=2048)
    >>> enc.slot_bits, enc.headroom_bits, enc.slots
    (21, 5, 97)
    >>> pts = enc.encode(np.array([0.5, -1.0, 2.0]))
    >>> enc.decode(pts, n_summed=1, length=3).round(4).tolist()
    [0.5, -1.0, 1.0]
    """

    clip: float
    value_bits: int = 16
    max_clients: int
    key_bits: int

    def __post_init__(self) -> None:
        if isinstance(self.clip, bool) or not isinstance(self.clip, numbers.Real) or not (
            math.isfinite(float(self.clip)) and self.clip > 0
        ):
            raise InvalidParameterError(
                f"The 'clip' parameter of PackedEncoder must be a finite float > 0. Got {self.clip!r} instead; "
                "choose a bound on the update values, e.g. a high percentile of |g| from earlier rounds."
            )
        if not _is_int(self.value_bits) or not 2 <= self.value_bits <= 32:
            raise InvalidParameterError(
                f"The 'value_bits' parameter of PackedEncoder must be an integer in [2, 32]. "
                f"Got {self.value_bits!r} instead; 16 is the usual choice."
            )
        if not _is_int(self.max_clients) or self.max_clients < 1:
            raise InvalidParameterError(
                f"The 'max_clients' parameter of PackedEncoder must be an integer >= 1. Got {self.max_clients!r} "
                "instead; pass the number of clients whose updates are summed per round."
            )
        if not _is_int(self.key_bits) or self.key_bits < 2:
            raise InvalidParameterError(
                f"The 'key_bits' parameter of PackedEncoder must be an integer >= 2. Got {self.key_bits!r} "
                "instead; pass public_key.n.bit_length()."
            )
        if self.slot_bits > _MAX_SLOT_BITS:
            raise InvalidParameterError(
                f"Slots of {self.slot_bits} bits (value_bits={self.value_bits}, max_clients={self.max_clients}) "
                f"exceed the {_MAX_SLOT_BITS} bits that decode exactly; lower value_bits or max_clients."
            )
        if self.slots < 1:
            raise InvalidParameterError(
                f"A {self.key_bits}-bit key cannot hold one {self.slot_bits}-bit slot "
                f"(value_bits={self.value_bits}, max_clients={self.max_clients}); use a larger key."
            )

    @property
    def levels(self) -> int:
        """``q = 2**(value_bits - 1) - 1``: quantisation levels on each side of zero."""
        return (1 << (self.value_bits - 1)) - 1

    @property
    def step(self) -> float:
        """Quantisation step ``clip / q``."""
        return float(self.clip) / self.levels

    @property
    def slot_bits(self) -> int:
        """Width ``w`` of one slot: bit length of ``max_clients * 2 q``."""
        return (self.max_clients * 2 * self.levels).bit_length()

    @property
    def headroom_bits(self) -> int:
        """Bits of each slot above the ``value_bits`` of one shifted value."""
        return self.slot_bits - self.value_bits

    @property
    def slots(self) -> int:
        """Number of values packed into one plaintext: ``(key_bits - 1) // w``."""
        return (self.key_bits - 1) // self.slot_bits

    def n_plaintexts(self, length: int) -> int:
        """Number of plaintexts (hence ciphertexts) for ``length`` values."""
        return -(-int(length) // self.slots)

    def error_bound(self, n_summed: int) -> float:
        """Largest error per value of a decoded sum of ``n_summed`` clipped inputs.

        ``n_summed * clip / (2 q)``, up to float64 rounding.
        """
        return n_summed * float(self.clip) / (2 * self.levels)

    def quantize(self, values: np.ndarray) -> np.ndarray:
        """Shifted quantised values ``u`` in ``[0, 2 q]`` as uint64 (clipping included)."""
        x = np.asarray(values, dtype=np.float64).reshape(-1)
        if not np.isfinite(x).all():
            raise InvalidParameterError(
                f"Cannot encode {int((~np.isfinite(x)).sum())} non-finite values (NaN or inf); "
                "check the local training for divergence before encrypting."
            )
        q = np.rint(np.clip(x, -self.clip, self.clip) * (self.levels / float(self.clip)))
        q = np.clip(q, -self.levels, self.levels).astype(np.int64) + self.levels
        return q.astype(np.uint64)

    def encode(self, values: np.ndarray) -> list[int]:
        """Clip, quantise, shift and pack a flat float array into plaintext integers.

        Parameters
        ----------
        values
            Values to encode (flattened in C order).

        Returns
        -------
        list[int]
            ``ceil(len(values) / slots)`` non-negative integers below
            ``2**(slots * slot_bits)``; the last one is padded with zeros.

        Raises
        ------
        InvalidParameterError
            If a value is NaN or infinite.
        """
        u = self.quantize(values)
        m = self.n_plaintexts(u.size)
        if m == 0:
            return []
        w, slots = self.slot_bits, self.slots
        padded = np.zeros(m * slots, dtype=np.uint64)
        padded[: u.size] = u
        shifts = np.arange(w, dtype=np.uint64)
        bits = ((padded.reshape(m, slots, 1) >> shifts) & np.uint64(1)).astype(np.uint8)
        rows = np.packbits(bits.reshape(m, slots * w), axis=1, bitorder="little")
        return [int.from_bytes(row.tobytes(), "little") for row in rows]

    def decode(self, plaintexts: Sequence[int], n_summed: int, length: int) -> np.ndarray:
        """Unpack summed plaintexts and undo the shifts: the sum of ``n_summed`` clients.

        Parameters
        ----------
        plaintexts
            Decrypted sums of packed plaintexts.
        n_summed
            Number of client plaintexts added together; ``n_summed * q`` is
            subtracted from each slot.
        length
            Number of values to return (the padding of the last plaintext is
            dropped).

        Returns
        -------
        numpy.ndarray
            float64 array of ``length`` sums, within :meth:`error_bound` of the
            sum of the clipped inputs.

        Raises
        ------
        PackingOverflowError
            If ``n_summed`` exceeds ``max_clients``, or a plaintext or slot holds
            more than ``n_summed`` clients can produce (more updates were added
            than declared, or they came from another key or encoding).
        InvalidParameterError
            If ``n_summed`` < 1 or the number of plaintexts does not match ``length``.
        """
        if not _is_int(n_summed) or n_summed < 1:
            raise InvalidParameterError(
                f"The 'n_summed' parameter of PackedEncoder.decode must be an integer >= 1. Got {n_summed!r} "
                "instead; pass the number of client updates in the aggregate."
            )
        if n_summed > self.max_clients:
            raise PackingOverflowError(
                f"Cannot decode a sum of {n_summed} clients: the slots have headroom for at most "
                f"max_clients={self.max_clients}, so the sums have wrapped. Aggregate at most "
                f"{self.max_clients} updates, or encode with max_clients >= {n_summed}."
            )
        m = self.n_plaintexts(length)
        if len(plaintexts) != m:
            raise InvalidParameterError(
                f"{length} values need {m} plaintexts of {self.slots} slots, but {len(plaintexts)} were given; "
                "pass the length the values were encoded with."
            )
        if m == 0:
            return np.zeros(0, dtype=np.float64)
        w, slots = self.slot_bits, self.slots
        width = slots * w
        nbytes = (width + 7) // 8
        for i, plaintext in enumerate(plaintexts):
            if not 0 <= plaintext < (1 << width):
                raise PackingOverflowError(
                    f"Plaintext {i} has {int(plaintext).bit_length()} bits, more than the {width} bits of "
                    f"{slots} slots: it is not a sum of at most {n_summed} packed updates. Check that every "
                    "update used this key and encoding and that the client count is right."
                )
        buf = b"".join(int(p).to_bytes(nbytes, "little") for p in plaintexts)
        rows = np.frombuffer(buf, dtype=np.uint8).reshape(m, nbytes)
        bits = np.unpackbits(rows, axis=1, bitorder="little")[:, :width].reshape(m, slots, w).astype(np.uint64)
        sums = (bits << np.arange(w, dtype=np.uint64)).sum(axis=2, dtype=np.uint64)
        sums = sums.reshape(-1)[:length]
        limit = n_summed * 2 * self.levels
        if sums.size and int(sums.max()) > limit:
            raise PackingOverflowError(
                f"A slot holds {int(sums.max())}, more than the {limit} that {n_summed} clients can produce: "
                "more updates were added than declared, or they used another key or encoding."
            )
        centred = sums.astype(np.int64) - n_summed * self.levels
        return centred.astype(np.float64) * (float(self.clip) / self.levels)


@dataclass(frozen=True, kw_only=True, eq=False)
class EncryptedUpdate:
    """Encrypted parameters of one client, or the encrypted sum of several.

    Attributes
    ----------
    mode
        Key of :data:`MODES` that produced it.
    ciphertexts
        Parameter name to raw ciphertexts (ints below ``n^2``), in model order.
    exponents
        ``phe`` encoding exponents per value (single mode); empty in packed mode.
    shapes
        Parameter name to array shape.
    n_clients
        Number of client updates summed in it (1 for a fresh encryption).
    public_n
        Modulus ``n`` of the public key used.
    encoding
        Encoding parameters ``(mode, clip, value_bits, max_clients)``; updates
        are combined only when these match.
    nbytes
        Bytes on the wire: every ciphertext at fixed width
        (:func:`ciphertext_nbytes`) plus, in single mode, one byte per value
        for its exponent. Names and shapes are not counted.
    seconds
        Wall time of the :meth:`PaillierAggregator.encrypt` or ``aggregate``
        call that made it.
    """

    mode: str
    ciphertexts: Mapping[str, tuple[int, ...]]
    exponents: Mapping[str, tuple[int, ...]]
    shapes: Mapping[str, tuple[int, ...]]
    n_clients: int
    public_n: int
    encoding: tuple[str, float | None, int, int | None]
    nbytes: int
    seconds: float

    @property
    def n_ciphertexts(self) -> int:
        """Total number of ciphertexts."""
        return sum(len(c) for c in self.ciphertexts.values())

    @property
    def n_values(self) -> int:
        """Total number of encrypted values."""
        return sum(math.prod(s) for s in self.shapes.values())


def _obfuscator_chunk(count: int, n: int, p: int | None, q: int | None) -> list[Any]:
    """``count`` fresh obfuscators ``r^n mod n^2`` for random ``r`` in ``Z*_n``."""
    n_mpz = gmpy2.mpz(n)
    nsquare = n_mpz * n_mpz
    rand = []
    while len(rand) < count:
        r = gmpy2.mpz(secrets.randbelow(n - 1) + 1)
        if gmpy2.gcd(r, n_mpz) == 1:
            rand.append(r)
    if p is None or q is None:
        return [gmpy2.powmod(r, n_mpz, nsquare) for r in rand]
    # CRT: r^n mod p^2 = r^(n mod p(p-1)) mod p^2 (Euler, gcd(r, p) = 1), same for q.
    p_mpz, q_mpz = gmpy2.mpz(p), gmpy2.mpz(q)
    psquare, qsquare = p_mpz * p_mpz, q_mpz * q_mpz
    exp_p, exp_q = n_mpz % (p_mpz * (p_mpz - 1)), n_mpz % (q_mpz * (q_mpz - 1))
    psquare_inv = gmpy2.invert(psquare, qsquare)
    out = []
    for r in rand:
        a_p = gmpy2.powmod(r, exp_p, psquare)
        a_q = gmpy2.powmod(r, exp_q, qsquare)
        out.append(a_p + psquare * (((a_q - a_p) * psquare_inv) % qsquare))
    return out


def _obfuscators(count: int, n: int, p: int | None, q: int | None, n_jobs: int) -> list[Any]:
    if n_jobs == 1 or count < 2 * n_jobs:
        return _obfuscator_chunk(count, n, p, q)
    n_chunks = 4 * n_jobs
    sizes = [count // n_chunks + (i < count % n_chunks) for i in range(n_chunks)]
    with ProcessPoolExecutor(max_workers=n_jobs) as pool:
        chunks = pool.map(_obfuscator_chunk, sizes, repeat(n), repeat(p), repeat(q))
        return [r for chunk in chunks for r in chunk]


#: Ciphertexts and (single mode) exponents, per parameter name.
_CiphertextsAndExponents = tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]


class _Codec:
    """How one mode encrypts, adds and decrypts flat arrays."""

    exponent_nbytes: ClassVar[int] = 0

    def __init__(self, agg: PaillierAggregator) -> None:
        self.agg = agg

    def encrypt(self, flats: Mapping[str, np.ndarray]) -> _CiphertextsAndExponents:
        raise NotImplementedError

    def add(self, updates: Sequence[EncryptedUpdate]) -> _CiphertextsAndExponents:
        raise NotImplementedError

    def decrypt(self, update: EncryptedUpdate, name: str, n_summed: int) -> np.ndarray:
        raise NotImplementedError


class _PackedCodec(_Codec):
    def encrypt(self, flats: Mapping[str, np.ndarray]) -> _CiphertextsAndExponents:
        agg = self.agg
        encoder = agg.encoder
        assert encoder is not None
        plaintexts = {name: encoder.encode(flat) for name, flat in flats.items()}
        total = sum(len(p) for p in plaintexts.values())
        n = agg.public_key.n
        sk = agg.private_key
        p, q = (None, None) if sk is None else (sk.p, sk.q)
        obfs = iter(_obfuscators(total, n, p, q, agg.n_jobs))
        n_mpz = gmpy2.mpz(n)
        nsquare = n_mpz * n_mpz
        cts = {
            name: tuple(int((1 + gmpy2.mpz(m) * n_mpz) * next(obfs) % nsquare) for m in pts)
            for name, pts in plaintexts.items()
        }
        return cts, {}

    def add(self, updates: Sequence[EncryptedUpdate]) -> _CiphertextsAndExponents:
        n_mpz = gmpy2.mpz(self.agg.public_key.n)
        nsquare = n_mpz * n_mpz
        out = {}
        for name in updates[0].ciphertexts:
            acc = [gmpy2.mpz(c) for c in updates[0].ciphertexts[name]]
            for upd in updates[1:]:
                acc = [a * c % nsquare for a, c in zip(acc, upd.ciphertexts[name], strict=True)]
            out[name] = tuple(int(a) for a in acc)
        return out, {}

    def decrypt(self, update: EncryptedUpdate, name: str, n_summed: int) -> np.ndarray:
        sk = self.agg.private_key
        assert sk is not None and self.agg.encoder is not None
        plaintexts = [sk.raw_decrypt(int(c)) for c in update.ciphertexts[name]]
        return self.agg.encoder.decode(plaintexts, n_summed, math.prod(update.shapes[name]))


class _SingleCodec(_Codec):
    exponent_nbytes = 1  # phe's base-16 exponents of float32 values fit in one signed byte

    def encrypt(self, flats: Mapping[str, np.ndarray]) -> _CiphertextsAndExponents:
        pk = self.agg.public_key
        cts, exps = {}, {}
        for name, flat in flats.items():
            if not np.isfinite(flat).all():
                raise InvalidParameterError(
                    f"Cannot encrypt {int((~np.isfinite(flat)).sum())} non-finite values (NaN or inf); "
                    "check the local training for divergence before encrypting."
                )
            numbers_ = [pk.encrypt(float(v)) for v in flat]
            cts[name] = tuple(e.ciphertext() for e in numbers_)
            exps[name] = tuple(e.exponent for e in numbers_)
        return cts, exps

    def add(self, updates: Sequence[EncryptedUpdate]) -> _CiphertextsAndExponents:
        pk = self.agg.public_key
        cts, exps = {}, {}
        for name in updates[0].ciphertexts:
            columns = zip(
                zip(*(u.ciphertexts[name] for u in updates), strict=True),
                zip(*(u.exponents[name] for u in updates), strict=True),
                strict=True,
            )
            sums = []
            for cs, es in columns:
                total = _phe.EncryptedNumber(pk, cs[0], es[0])
                for c, e in zip(cs[1:], es[1:], strict=True):
                    total = total + _phe.EncryptedNumber(pk, c, e)
                sums.append(total)
            cts[name] = tuple(s.ciphertext(be_secure=False) for s in sums)
            exps[name] = tuple(s.exponent for s in sums)
        return cts, exps

    def decrypt(self, update: EncryptedUpdate, name: str, n_summed: int) -> np.ndarray:
        sk, pk = self.agg.private_key, self.agg.public_key
        assert sk is not None
        values = [
            sk.decrypt(_phe.EncryptedNumber(pk, c, e))
            for c, e in zip(update.ciphertexts[name], update.exponents[name], strict=True)
        ]
        return np.asarray(values, dtype=np.float64)


#: Aggregation modes: key -> codec class.
MODES: dict[str, type[_Codec]] = {"packed": _PackedCodec, "single": _SingleCodec}


class PaillierAggregator:
    """Paillier secure aggregation of client updates (SEFL, with BatchCrypt packing).

    Implementation based on Mohammadi et al., "Secure and Efficient Federated
    Learning by Combining Homomorphic Encryption and Gradient Pruning in Speech
    Emotion Recognition" (2023), with the packing of Zhang et al., "BatchCrypt"
    (USENIX ATC 2020). Clients build it with both keys and call
    :meth:`encrypt` and :meth:`decrypt`; the server builds it with the public
    key only and calls :meth:`aggregate`.

    Parameters
    ----------
    public_key
        ``phe`` public key.
    private_key
        Matching ``phe`` private key, or ``None`` on the server (no decryption;
        encryption then skips the CRT speed-up).
    mode
        ``"packed"`` (default) or ``"single"``; see :data:`MODES`.
    clip
        Packed mode: values are clipped to ``[-clip, clip]``. Required for
        ``"packed"``; ignored by ``"single"``, which encrypts values as they are.
    value_bits
        Packed mode: bits per quantised value, 2 to 32.
    max_clients
        Packed mode: most updates that may be summed. Required for ``"packed"``.
        Clients and server must use the same value.
    n_jobs
        Processes computing packed-mode obfuscators; 1 computes them in this
        process. Single mode always runs in this process.

    Raises
    ------
    InvalidParameterError
        If a parameter is out of range, the mode is unknown, or the keys do
        not match.
    ImportError
        If phe or gmpy2 is missing.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", InsecureKeyWarning)
    ...     pk, sk = generate_keypair(256, insecure_ok=True)
    >>> client = PaillierAggregator(pk, sk, clip=1.0, max_clients=4)
    >>> server = PaillierAggregator(pk, clip=1.0, max_clients=4)
    >>> ups = [client.encrypt({"w": np.array([0.25, -0.5])}) for _ in range(3)]
    >>> total = server.aggregate(ups)
    >>> client.decrypt(total)["w"].round(3).tolist()
    [0.75, -1.5]
    """

    def __init__(
        self,
        public_key: PaillierPublicKey,
        private_key: PaillierPrivateKey | None = None,
        *,
        mode: str = "packed",
        clip: float | None = None,
        value_bits: int = 16,
        max_clients: int | None = None,
        n_jobs: int = 1,
    ) -> None:
        _require_he()
        self.public_key = public_key
        self.private_key = private_key
        self.mode = mode
        self.clip = clip
        self.value_bits = value_bits
        self.max_clients = max_clients
        self.n_jobs = n_jobs
        if not isinstance(public_key, _phe.PaillierPublicKey):
            raise InvalidParameterError(
                f"The 'public_key' parameter of PaillierAggregator must be a phe PaillierPublicKey. "
                f"Got {type(public_key).__name__} instead; make one with generate_keypair()."
            )
        if private_key is not None and (
            not isinstance(private_key, _phe.PaillierPrivateKey) or private_key.public_key != public_key
        ):
            raise InvalidParameterError(
                "The 'private_key' parameter of PaillierAggregator must be the phe PaillierPrivateKey of "
                "'public_key' (or None on the server); the one given does not match it."
            )
        if mode not in MODES:
            raise InvalidParameterError(
                f"The 'mode' parameter of PaillierAggregator must be one of {sorted(MODES)}. Got {mode!r} instead."
            )
        if not _is_int(n_jobs) or n_jobs < 1:
            raise InvalidParameterError(
                f"The 'n_jobs' parameter of PaillierAggregator must be an integer >= 1. Got {n_jobs!r} instead."
            )
        self.encoder: PackedEncoder | None = None
        if mode == "packed":
            if clip is None or max_clients is None:
                raise InvalidParameterError(
                    "Packed mode needs 'clip' and 'max_clients' (values are clipped to [-clip, clip] and slots "
                    f"get headroom for max_clients sums). Got clip={clip!r}, max_clients={max_clients!r}; "
                    "pass both, e.g. clip=0.05, max_clients=20."
                )
            self.encoder = PackedEncoder(
                clip=clip, value_bits=value_bits, max_clients=max_clients, key_bits=public_key.n.bit_length()
            )
        self._codec = MODES[mode](self)

    def __repr__(self) -> str:
        return (
            f"PaillierAggregator(key_bits={self.key_bits}, private_key={'yes' if self.private_key else 'no'}, "
            f"mode={self.mode!r}, clip={self.clip!r}, value_bits={self.value_bits}, "
            f"max_clients={self.max_clients!r}, n_jobs={self.n_jobs})"
        )

    @property
    def key_bits(self) -> int:
        """Bit length of the modulus ``n``."""
        return int(self.public_key.n.bit_length())

    @property
    def _encoding(self) -> tuple[str, float | None, int, int | None]:
        if self.mode == "packed":
            return (self.mode, float(self.clip), int(self.value_bits), int(self.max_clients))  # type: ignore[arg-type]
        return (self.mode, None, 0, None)

    def _nbytes(self, cts: Mapping[str, tuple[int, ...]]) -> int:
        # Exponents exist only in single mode, where there is one ciphertext per value.
        n_ct = sum(len(c) for c in cts.values())
        return n_ct * (ciphertext_nbytes(self.key_bits) + self._codec.exponent_nbytes)

    def encrypt(self, arrays: Mapping[str, np.ndarray]) -> EncryptedUpdate:
        """Encrypt one client's parameter arrays.

        Parameters
        ----------
        arrays
            Parameter name to array (e.g. ``ClientUpdate.arrays``).

        Returns
        -------
        EncryptedUpdate
            Ciphertexts per parameter, shapes, bytes on the wire and timing;
            ``n_clients`` is 1.

        Raises
        ------
        InvalidParameterError
            If ``arrays`` is empty or holds NaN or infinite values.
        """
        start = time.perf_counter()
        if not arrays:
            raise InvalidParameterError("PaillierAggregator.encrypt got no arrays; pass the update's arrays.")
        shapes = {name: tuple(np.shape(a)) for name, a in arrays.items()}
        flats = {name: np.asarray(a, dtype=np.float64).reshape(-1) for name, a in arrays.items()}
        cts, exps = self._codec.encrypt(flats)
        return EncryptedUpdate(
            mode=self.mode,
            ciphertexts=cts,
            exponents=exps,
            shapes=shapes,
            n_clients=1,
            public_n=int(self.public_key.n),
            encoding=self._encoding,
            nbytes=self._nbytes(cts),
            seconds=time.perf_counter() - start,
        )

    def _check_compatible(self, update: EncryptedUpdate, what: str) -> None:
        if update.public_n != self.public_key.n:
            raise InvalidParameterError(
                f"{what} was encrypted under another public key (n has {int(update.public_n).bit_length()} bits, "
                f"this aggregator's {self.key_bits}); use the aggregator built with that key."
            )
        if update.encoding != self._encoding:
            raise InvalidParameterError(
                f"{what} was encoded with (mode, clip, value_bits, max_clients) = {update.encoding}, but this "
                f"aggregator uses {self._encoding}; clients and server must agree on all four."
            )

    def aggregate(self, updates: Sequence[EncryptedUpdate]) -> EncryptedUpdate:
        """Add encrypted updates homomorphically (server side: no private key needed).

        Ciphertexts of the same slot are multiplied modulo ``n^2``. Updates may
        themselves be aggregates; their client counts add up.

        Parameters
        ----------
        updates
            Encrypted updates with the same key, encoding and shapes.

        Returns
        -------
        EncryptedUpdate
            The encrypted sum; ``n_clients`` is the total count.

        Raises
        ------
        PackingOverflowError
            In packed mode, if the total count exceeds ``max_clients`` (the
            slots would wrap silently).
        InvalidParameterError
            If ``updates`` is empty or the updates are incompatible.
        """
        start = time.perf_counter()
        updates = list(updates)
        if not updates:
            raise InvalidParameterError("PaillierAggregator.aggregate got no updates; pass at least one.")
        for i, upd in enumerate(updates):
            self._check_compatible(upd, f"Update {i}")
            if dict(upd.shapes) != dict(updates[0].shapes):
                raise InvalidParameterError(
                    f"Update {i} has parameter shapes {dict(upd.shapes)}, but update 0 has "
                    f"{dict(updates[0].shapes)}; only updates of the same model can be added."
                )
        total = sum(u.n_clients for u in updates)
        if self.mode == "packed" and total > self.max_clients:  # type: ignore[operator]
            assert self.encoder is not None
            raise PackingOverflowError(
                f"Aggregating {total} client updates would overflow the packed slots, which have "
                f"{self.encoder.headroom_bits} headroom bits for at most max_clients={self.max_clients}; "
                f"the sums would wrap silently. Aggregate at most {self.max_clients} updates, or have clients "
                f"and server use max_clients >= {total}."
            )
        cts, exps = self._codec.add(updates)
        return EncryptedUpdate(
            mode=self.mode,
            ciphertexts=cts,
            exponents=exps,
            shapes=dict(updates[0].shapes),
            n_clients=total,
            public_n=int(self.public_key.n),
            encoding=self._encoding,
            nbytes=self._nbytes(cts),
            seconds=time.perf_counter() - start,
        )

    def decrypt(self, update: EncryptedUpdate, n_summed: int | None = None) -> dict[str, np.ndarray]:
        """Decrypt an (aggregated) update: the sum of its clients' arrays.

        Parameters
        ----------
        update
            Output of :meth:`encrypt` or :meth:`aggregate`.
        n_summed
            Number of clients the caller expects in the sum; defaults to
            ``update.n_clients`` and must equal it.

        Returns
        -------
        dict[str, numpy.ndarray]
            float64 sums, in the update's shapes. Packed mode: within
            :meth:`PackedEncoder.error_bound` ``(n_summed)`` of the sum of the
            clipped inputs; single mode: the exact sum up to float64 rounding.

        Raises
        ------
        InvalidParameterError
            If there is no private key, ``n_summed`` disagrees with the update,
            or the update is incompatible.
        PackingOverflowError
            If the decrypted slots cannot be a sum of ``n_summed`` packed updates.
        """
        if self.private_key is None:
            raise InvalidParameterError(
                "This PaillierAggregator was built without a private key, so it cannot decrypt; "
                "build it with PaillierAggregator(public_key, private_key, ...) on the key holders' side."
            )
        self._check_compatible(update, "The update")
        if n_summed is None:
            n_summed = update.n_clients
        if not _is_int(n_summed) or n_summed != update.n_clients:
            raise InvalidParameterError(
                f"The 'n_summed' parameter of PaillierAggregator.decrypt must equal the update's client count "
                f"{update.n_clients}. Got {n_summed!r} instead; check how many updates the server added."
            )
        return {
            name: self._codec.decrypt(update, name, int(n_summed)).reshape(shape)
            for name, shape in update.shapes.items()
        }
