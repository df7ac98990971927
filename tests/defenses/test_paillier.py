"""Tests of Paillier secure aggregation (packed and one-value-per-ciphertext)."""

from __future__ import annotations

import math
import pickle
import warnings
from dataclasses import replace

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedaudit.defenses import paillier
from fedaudit.defenses.paillier import (
    EncryptedUpdate,
    InsecureKeyWarning,
    PackedEncoder,
    PackingOverflowError,
    PaillierAggregator,
    ciphertext_nbytes,
    generate_keypair,
)
from fedaudit.exceptions import FedAuditError, InvalidParameterError

CLIP = 0.5
MAX_CLIENTS = 6
EMO_BASE_VALUES = 256 * 988 + 256 + 128 * 256 + 128 + 4 * 128 + 4  # 286,596


@pytest.fixture(scope="module")
def keys():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        return generate_keypair(256, insecure_ok=True)


@pytest.fixture(scope="module")
def client(keys) -> PaillierAggregator:
    return PaillierAggregator(*keys, clip=CLIP, max_clients=MAX_CLIENTS)


@pytest.fixture(scope="module")
def server(keys) -> PaillierAggregator:
    return PaillierAggregator(keys[0], clip=CLIP, max_clients=MAX_CLIENTS)


@pytest.fixture(scope="module")
def keys2048():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the warning-free path: any warning fails the test
        return generate_keypair(2048)


values = st.floats(min_value=-2 * CLIP, max_value=2 * CLIP, allow_nan=False, width=32)
shapes = hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=40)


@st.composite
def client_updates(draw: st.DrawFn, max_clients: int = MAX_CLIENTS) -> list[dict[str, np.ndarray]]:
    n_clients = draw(st.integers(1, max_clients))
    w_shape, b_shape = draw(shapes), draw(shapes)
    return [
        {
            "w": draw(hnp.arrays(np.float32, w_shape, elements=values)),
            "b": draw(hnp.arrays(np.float32, b_shape, elements=values)),
        }
        for _ in range(n_clients)
    ]


def _clipped_sum(updates: list[dict[str, np.ndarray]], name: str) -> np.ndarray:
    return sum(np.clip(u[name].astype(np.float64), -CLIP, CLIP) for u in updates)  # type: ignore[return-value]


# --- packed mode: correctness -------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(updates=client_updates())
def test_packed_decrypted_sum_is_within_the_quantisation_bound(
    client: PaillierAggregator, server: PaillierAggregator, updates: list[dict[str, np.ndarray]]
) -> None:
    # Execute
    total = server.aggregate([client.encrypt(u) for u in updates])
    out = client.decrypt(total, n_summed=len(updates))
    # Assert
    assert client.encoder is not None
    bound = client.encoder.error_bound(len(updates))
    assert bound == len(updates) * CLIP / (2 * (2**15 - 1))
    assert total.n_clients == len(updates)
    for name in ("w", "b"):
        assert out[name].shape == updates[0][name].shape
        err = np.abs(out[name] - _clipped_sum(updates, name))
        assert err.max() <= bound * (1 + 1e-9)


@settings(max_examples=100, deadline=None)
@given(
    data=st.data(),
    value_bits=st.integers(2, 24),
    max_clients=st.integers(1, 300),
    key_bits=st.sampled_from([128, 256, 1024, 2048]),
)
def test_encoder_sum_of_plaintexts_decodes_within_bound(
    data: st.DataObject, value_bits: int, max_clients: int, key_bits: int
) -> None:
    # Integer addition of plaintexts is what the homomorphism gives after decryption.
    enc = PackedEncoder(clip=CLIP, value_bits=value_bits, max_clients=max_clients, key_bits=key_bits)
    n = data.draw(st.integers(1, max_clients))
    length = data.draw(st.integers(0, 3 * enc.slots + 1))
    xs = [data.draw(hnp.arrays(np.float64, length, elements=st.floats(-1, 1))) for _ in range(n)]
    plaintexts = [enc.encode(x) for x in xs]
    summed = [sum(col) for col in zip(*plaintexts, strict=True)]
    assert len(summed) == math.ceil(length / enc.slots)
    assert all(0 <= p < 2 ** (key_bits - 1) for p in summed)
    out = enc.decode(summed, n, length)
    expected = sum(np.clip(x, -CLIP, CLIP) for x in xs)
    assert np.all(np.abs(out - expected) <= enc.error_bound(n) * (1 + 1e-9))


def test_rounding_is_to_nearest() -> None:
    enc = PackedEncoder(clip=1.0, value_bits=8, max_clients=1, key_bits=256)
    x = np.array([0.9, 0.4, -0.9, 1.6]) * enc.step  # floor or truncation would be off by up to a full step
    out = enc.decode(enc.encode(x), 1, 4)
    np.testing.assert_allclose(out, np.array([1, 0, -1, 2]) * enc.step, rtol=0, atol=1e-15)


def test_encoder_layout_for_a_2048_bit_key() -> None:
    enc = PackedEncoder(clip=1.0, value_bits=16, max_clients=20, key_bits=2048)
    assert (enc.levels, enc.slot_bits, enc.headroom_bits, enc.slots) == (32767, 21, 5, 97)
    # A full Emo-Base update fits in at most 2x its float32 bytes.
    nbytes = enc.n_plaintexts(EMO_BASE_VALUES) * ciphertext_nbytes(2048)
    assert nbytes <= 2 * 4 * EMO_BASE_VALUES


# --- packed mode: overflow ----------------------------------------------------------------------


@pytest.mark.parametrize("max_clients", [1, 2, 7, 8, 20])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_max_clients_at_the_clip_sum_without_wrapping(keys, max_clients: int, sign: float) -> None:
    # Prepare: every client sends +clip (or -clip) everywhere, beyond the clip too.
    agg = PaillierAggregator(*keys, clip=CLIP, max_clients=max_clients)
    assert agg.encoder is not None
    length = 2 * agg.encoder.slots + 3
    ups = [agg.encrypt({"w": np.full(length, sign * CLIP * (1 + i % 2))}) for i in range(max_clients)]
    # Execute
    out = agg.decrypt(agg.aggregate(ups))["w"]
    # Assert
    np.testing.assert_allclose(out, sign * CLIP * max_clients, rtol=1e-12, atol=0)


def test_exceeding_max_clients_raises_instead_of_wrapping(
    client: PaillierAggregator, server: PaillierAggregator
) -> None:
    ups = [client.encrypt({"w": np.full(5, CLIP)}) for _ in range(MAX_CLIENTS + 1)]
    with pytest.raises(PackingOverflowError, match=rf"Aggregating {MAX_CLIENTS + 1} client updates") as info:
        server.aggregate(ups)
    message = str(info.value)
    assert f"max_clients={MAX_CLIENTS}" in message and "wrap" in message and f">= {MAX_CLIENTS + 1}" in message
    assert isinstance(info.value, FedAuditError) and isinstance(info.value, OverflowError)
    # Aggregates of aggregates count clients too.
    half = server.aggregate(ups[:4])
    with pytest.raises(PackingOverflowError, match="7 client updates"):
        server.aggregate([half, server.aggregate(ups[4:])])


def test_an_aggregate_that_lies_about_its_client_count_is_detected(
    client: PaillierAggregator, server: PaillierAggregator
) -> None:
    # Prepare: a server that multiplies one ciphertext too many but declares max_clients.
    ups = [client.encrypt({"w": np.full(5, CLIP)}) for _ in range(MAX_CLIENTS + 1)]
    honest = server.aggregate(ups[:MAX_CLIENTS])
    n_mpz = client.public_key.n
    forged = {"w": tuple(a * b % (n_mpz * n_mpz) for a, b in zip(honest.ciphertexts["w"], ups[-1].ciphertexts["w"]))}
    lying = replace(honest, ciphertexts=forged)
    # Execute / Assert
    with pytest.raises(PackingOverflowError, match=rf"more than the \d+ that {MAX_CLIENTS} clients can produce"):
        client.decrypt(lying)


def test_decode_refuses_more_clients_than_the_headroom() -> None:
    enc = PackedEncoder(clip=1.0, value_bits=16, max_clients=4, key_bits=256)
    with pytest.raises(PackingOverflowError, match=r"sum of 5 clients.*max_clients=4"):
        enc.decode(enc.encode(np.zeros(3)), 5, 3)


# --- single mode --------------------------------------------------------------------------------


def test_single_mode_sum_is_exact_up_to_float_rounding(keys) -> None:
    rng = np.random.default_rng(3)
    agg = PaillierAggregator(*keys, mode="single")
    xs = [
        {"w": (rng.normal(size=(4, 3)) * 10.0 ** rng.integers(-6, 2)).astype(np.float32), "b": np.float32([0, -3.5])}
        for _ in range(3)
    ]
    total = agg.aggregate([agg.encrypt(x) for x in xs])
    out = agg.decrypt(total, n_summed=3)
    for name in ("w", "b"):
        expected = sum(x[name].astype(np.float64) for x in xs)  # no clipping in single mode
        np.testing.assert_allclose(out[name], expected, rtol=1e-12, atol=1e-300)
    assert total.n_ciphertexts == 14
    assert total.nbytes == 14 * (ciphertext_nbytes(256) + 1)


# --- protocol and key handling ------------------------------------------------------------------


def test_server_aggregates_with_the_public_key_only(keys, client, server) -> None:
    # Server-side encryption (no CRT) must decrypt too.
    ups = [server.encrypt({"w": np.array([0.25, -0.125])}), client.encrypt({"w": np.array([0.25, 0.5])})]
    total = server.aggregate(ups)
    np.testing.assert_allclose(client.decrypt(total)["w"], [0.5, 0.375], atol=client.encoder.error_bound(2))
    with pytest.raises(InvalidParameterError, match="without a private key"):
        server.decrypt(total)


@pytest.mark.parametrize("side", ["client", "server"])
def test_encryption_is_randomised_and_carries_no_private_key(keys, client, server, side: str) -> None:
    pk, sk = keys
    agg = {"client": client, "server": server}[side]  # with and without the CRT speed-up
    a, b = agg.encrypt({"w": np.zeros(3)}), agg.encrypt({"w": np.zeros(3)})
    assert a.ciphertexts["w"] != b.ciphertexts["w"]
    nsquare = pk.n * pk.n
    plain = agg.encoder.encode(np.zeros(3))[0]
    assert all(1 < c < nsquare and c != (1 + plain * pk.n) % nsquare for c in a.ciphertexts["w"])
    blob = pickle.dumps(a) + repr(client).encode()
    for secret in (sk.p, sk.q):
        assert secret.to_bytes((secret.bit_length() + 8) // 8, "little", signed=True) not in blob
        assert str(secret).encode() not in blob


def test_encrypt_reports_sizes_and_timing(client) -> None:
    up = client.encrypt({"w": np.zeros((7, 9)), "b": np.zeros(2)})
    slots = client.encoder.slots
    assert up.n_ciphertexts == math.ceil(63 / slots) + math.ceil(2 / slots)
    assert up.nbytes == up.n_ciphertexts * ciphertext_nbytes(256)
    assert up.n_values == 65 and dict(up.shapes) == {"w": (7, 9), "b": (2,)}
    assert up.seconds > 0 and up.n_clients == 1


def test_process_pool_gives_the_same_sums(keys) -> None:
    agg = PaillierAggregator(*keys, clip=CLIP, max_clients=3, n_jobs=2)
    x = np.linspace(-CLIP, CLIP, 200)
    out = agg.decrypt(agg.aggregate([agg.encrypt({"w": x}) for _ in range(3)]))["w"]
    assert np.abs(out - 3 * x).max() <= agg.encoder.error_bound(3) * (1 + 1e-9)


def test_incompatible_updates_are_refused(keys, client, server) -> None:
    up = client.encrypt({"w": np.zeros(3)})
    other_clip = PaillierAggregator(*keys, clip=2 * CLIP, max_clients=MAX_CLIENTS)
    with pytest.raises(InvalidParameterError, match=r"encoded with .*clients and server must agree"):
        other_clip.aggregate([up])
    with pytest.raises(InvalidParameterError, match="parameter shapes"):
        server.aggregate([up, client.encrypt({"w": np.zeros(4)})])
    with pytest.raises(InvalidParameterError, match="another public key"):
        server.aggregate([replace(up, public_n=up.public_n + 2)])
    with pytest.raises(InvalidParameterError, match=r"must equal the update's client count 1\. Got 2"):
        client.decrypt(up, n_summed=2)
    with pytest.raises(InvalidParameterError, match="no updates"):
        server.aggregate([])


@pytest.mark.parametrize("mode", ["packed", "single"])
def test_non_finite_values_are_refused(keys, mode: str) -> None:
    agg = PaillierAggregator(*keys, mode=mode, clip=CLIP, max_clients=2)
    with pytest.raises(InvalidParameterError, match="non-finite"):
        agg.encrypt({"w": np.array([0.0, np.nan])})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "paired"}, r"'mode' parameter .* one of \['packed', 'single'\]\. Got 'paired'"),
        ({"clip": None}, r"Packed mode needs 'clip' and 'max_clients'"),
        ({"max_clients": None}, r"Packed mode needs 'clip' and 'max_clients'"),
        ({"clip": 0.0}, r"'clip' parameter of PackedEncoder must be a finite float > 0\. Got 0\.0"),
        ({"clip": float("nan")}, r"'clip' parameter"),
        ({"value_bits": 1}, r"'value_bits' parameter .* \[2, 32\]\. Got 1"),
        ({"value_bits": 33}, r"'value_bits' parameter"),
        ({"max_clients": 0}, r"'max_clients' parameter .* >= 1\. Got 0"),
        ({"n_jobs": 0}, r"'n_jobs' parameter .* >= 1\. Got 0"),
        ({"value_bits": 32, "max_clients": 2**22}, r"exceed the 53 bits"),
    ],
)
def test_invalid_aggregator_parameters(keys, kwargs: dict, match: str) -> None:
    params = {"clip": CLIP, "max_clients": 4, **kwargs}
    with pytest.raises(InvalidParameterError, match=match):
        PaillierAggregator(*keys, **params)


def test_a_key_too_small_for_one_slot_is_refused() -> None:
    with pytest.raises(InvalidParameterError, match=r"A 16-bit key cannot hold one 16-bit slot"):
        PackedEncoder(clip=1.0, value_bits=16, max_clients=1, key_bits=16)


def test_mismatched_private_key_is_refused(keys) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        _, other_sk = generate_keypair(128, insecure_ok=True)
    with pytest.raises(InvalidParameterError, match="does not match"):
        PaillierAggregator(keys[0], other_sk, clip=CLIP, max_clients=2)


# --- key sizes ----------------------------------------------------------------------------------


def test_1024_bit_keys_warn() -> None:
    with pytest.warns(InsecureKeyWarning, match=r"1024-bit .* 2048 bits NIST SP 800-57") as record:
        pk, _ = generate_keypair(1024)
    assert pk.n.bit_length() == 1024
    assert len(record) == 1 and record[0].filename == __file__


@pytest.mark.parametrize("bits", [128, 512, 1022])
def test_keys_below_1024_bits_are_refused_without_insecure_ok(bits: int) -> None:
    with pytest.raises(InvalidParameterError) as info:
        generate_keypair(bits)
    message = str(info.value)
    assert f"A {bits}-bit Paillier key is refused" in message
    assert "--insecure-key" in message and "insecure_ok=True" in message
    assert "reproduce the publication" in message and "factor in seconds" in message


def test_insecure_ok_allows_small_keys_with_a_warning() -> None:
    with pytest.warns(InsecureKeyWarning, match="512-bit"):
        pk, sk = generate_keypair(512, insecure_ok=True)
    assert pk.n.bit_length() == 512 and sk.public_key == pk


@pytest.mark.parametrize("bits", [2047, 32, True, "2048", 2048.0])
def test_bad_key_sizes_are_refused(bits: object) -> None:
    with pytest.raises(InvalidParameterError, match=r"'bits' parameter of generate_keypair must be an even integer"):
        generate_keypair(bits)  # type: ignore[arg-type]


def test_2048_bit_path_has_no_warning_and_round_trips(keys2048) -> None:
    pk, sk = keys2048
    assert pk.n.bit_length() == 2048
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        agg = PaillierAggregator(pk, sk, clip=1.0, max_clients=20)
        x = np.random.default_rng(0).uniform(-1, 1, 200)
        up = agg.encrypt({"w": x})
        out = agg.decrypt(agg.aggregate([up, up]))["w"]
    assert agg.encoder.slots == 97 and up.n_ciphertexts == 3 and up.nbytes == 3 * 512
    assert np.abs(out - 2 * x).max() <= agg.encoder.error_bound(2) * (1 + 1e-9)


def test_missing_optional_dependency_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paillier, "_HE_IMPORT_ERROR", ImportError("No module named 'phe'"))
    with pytest.raises(ImportError, match=r"pip install 'fedaudit\[he\]'"):
        generate_keypair(2048)


def test_encrypted_update_is_frozen(client) -> None:
    up = client.encrypt({"w": np.zeros(2)})
    assert isinstance(up, EncryptedUpdate)
    with pytest.raises(AttributeError):
        up.n_clients = 2  # type: ignore[misc]
