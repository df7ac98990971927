"""Benchmark of Paillier secure aggregation on one full Emo-Base MLP update.

Compares, at the same key size in one run, BatchCrypt-style packed encryption
(:class:`fedaudit.defenses.paillier.PaillierAggregator`, mode ``"packed"``) with
one value per ciphertext through ``phe`` (mode ``"single"``, what SEFL
measures), with and without SEFL's 80% magnitude pruning, and prints a
markdown table: encryption and decryption time, ciphertexts, bytes on the wire
against the float32 bytes of the update.

The update is one FedSGD gradient of the Emo-Base MLP (988-256-128-4, 286,340
values) on a batch of 20 z-normalised random feature vectors with random
labels, so its scale is that of a real first-round gradient. (The model has
286,596 parameters: 252,928 + 256 in fc1, 32,768 + 128 in fc2, 512 + 4 in fc3;
float32, 1,146,384 bytes.)

Single mode on all 286,340 values would take many minutes at 2048 bits, so it
is timed on a random subset (``--single-subset`` values) and extrapolated
linearly; rows marked "extrapolated" say so. Its byte counts are exact (fixed
width ciphertexts).

Usage::

    python benchmarks/bench_paillier.py                         # 1024 and 2048 bits, 20 clients
    python benchmarks/bench_paillier.py --key-bits 2048 --single-subset 1000 --jobs 1
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time
import warnings

import numpy as np

from fedaudit.defenses.paillier import (
    InsecureKeyWarning,
    PaillierAggregator,
    ciphertext_nbytes,
    generate_keypair,
)
from fedaudit.defenses.prune import n_pruned, prune_by_magnitude

#: SEFL (Mohammadi et al. 2023) Table 2 (MB per round) and Table 3 (s), key 1024.
SEFL_TABLE2_MB = {"plaintext": 2.18, "PHE 1024": 53.8, "SEFL 80% 1024": 11.3}
SEFL_TABLE3_S = {"PHE": (187.3, 55.2), "SEFL 80%": (140.4, 47.3)}
INDEX_BYTES = 4  # one uint32 flat index per value kept by pruning (fc1 has 252,928 entries)


def emo_base_gradient(seed: int, batch: int = 20) -> dict[str, np.ndarray]:
    """One FedSGD gradient of the Emo-Base MLP, float32, keyed ``fc1.weight`` ... ``fc3.bias``."""
    import torch

    from fedaudit.models import MLP

    torch.manual_seed(seed)
    model = MLP(988, hidden=(256, 128), dropout=(0.2, 0.0), n_classes=4)
    x = torch.randn(batch, 988)
    y = torch.randint(0, 4, (batch,))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return {
        ".".join(name.split(".")[-2:]): p.grad.detach().numpy().astype(np.float32).copy()
        for name, p in model.named_parameters()
    }


def _timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:.2f} MB ({nbytes / 2**20:.2f} MiB)"


def bench_key(bits: int, grads: dict[str, np.ndarray], args: argparse.Namespace, rng: np.random.Generator) -> list[dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        (pk, sk), t_key = _timed(generate_keypair, bits, insecure_ok=args.insecure_key)
    n_values = sum(g.size for g in grads.values())
    float32_bytes = 4 * n_values
    clip = float(max(np.abs(g).max() for g in grads.values()))  # nothing clipped in this benchmark
    rows: list[dict] = []

    # Packed, client side (private key known: CRT), one process and n_jobs processes.
    for jobs in args.jobs:
        agg = PaillierAggregator(pk, sk, clip=clip, value_bits=16, max_clients=args.clients, n_jobs=jobs)
        up = agg.encrypt(grads)
        server = PaillierAggregator(pk, clip=clip, value_bits=16, max_clients=args.clients)
        total = server.aggregate([up] * args.clients)  # same cost as distinct clients: n_clients-1 mulmods
        out, t_dec = _timed(agg.decrypt, total)
        err = max(float(np.abs(out[k] - args.clients * grads[k].astype(np.float64)).max()) for k in grads)
        bound = agg.encoder.error_bound(args.clients)  # type: ignore[union-attr]
        assert err <= bound * (1 + 1e-9), (err, bound)
        rows.append(dict(
            bits=bits, scheme=f"packed, client (CRT), n_jobs={jobs}", values=n_values, cts=up.n_ciphertexts,
            nbytes=up.nbytes, enc=up.seconds, dec=t_dec, agg=total.seconds,
            note=f"{agg.encoder.slots} values/ct; max err of {args.clients}-client sum {err:.2e} <= bound {bound:.2e}",
        ))
    # Packed, public key only (no CRT), as a server or a client without the private key would encrypt.
    pub = PaillierAggregator(pk, clip=clip, value_bits=16, max_clients=args.clients)
    up_pub = pub.encrypt(grads)
    rows.append(dict(bits=bits, scheme="packed, public key only", values=n_values, cts=up_pub.n_ciphertexts,
                     nbytes=up_pub.nbytes, enc=up_pub.seconds, dec=float("nan"), agg=float("nan"), note="no CRT"))

    # Single (phe, one value per ciphertext): a random subset, extrapolated.
    flat = np.concatenate([g.reshape(-1) for g in grads.values()])
    subset = flat[rng.choice(flat.size, size=args.single_subset, replace=False)]
    single = PaillierAggregator(pk, sk, mode="single")
    up_s = single.encrypt({"subset": subset})
    out_s, t_dec_s = _timed(single.decrypt, up_s)
    np.testing.assert_allclose(out_s["subset"], subset.astype(np.float64), rtol=1e-12)
    per_enc, per_dec = up_s.seconds / subset.size, t_dec_s / subset.size
    bytes_per_value = up_s.nbytes / subset.size
    rows.append(dict(
        bits=bits, scheme="single (phe), extrapolated", values=n_values, cts=n_values,
        nbytes=bytes_per_value * n_values, enc=per_enc * n_values, dec=per_dec * n_values, agg=float("nan"),
        note=f"timed on {subset.size} values x {n_values / subset.size:.1f}",
    ))

    # SEFL 80% pruning: send only kept values with their flat indices.
    pruned, t_prune = _timed(prune_by_magnitude, grads, 80)
    kept = {k: v.reshape(-1)[v.reshape(-1) != 0] for k, v in pruned.items()}
    n_kept = sum(g.size - n_pruned(g.size, 80) for g in grads.values())
    assert sum(v.size for v in kept.values()) == n_kept
    rows.append(dict(
        bits=bits, scheme="SEFL 80% + single (phe), extrapolated", values=n_kept, cts=n_kept,
        nbytes=bytes_per_value * n_kept + INDEX_BYTES * n_kept, enc=t_prune + per_enc * n_kept,
        dec=per_dec * n_kept, agg=float("nan"), note=f"{INDEX_BYTES}-byte index per kept value counted",
    ))
    agg1 = PaillierAggregator(pk, sk, clip=clip, value_bits=16, max_clients=args.clients)
    up_pk = agg1.encrypt(kept)
    _, t_dec_pk = _timed(agg1.decrypt, up_pk)
    rows.append(dict(
        bits=bits, scheme="SEFL 80% + packed (CRT)", values=n_kept, cts=up_pk.n_ciphertexts,
        nbytes=up_pk.nbytes + INDEX_BYTES * n_kept, enc=t_prune + up_pk.seconds, dec=t_dec_pk, agg=float("nan"),
        note="indices counted; masks differ per client, so slots do not line up for homomorphic sums",
    ))
    for row in rows:
        row["ratio"] = row["nbytes"] / float32_bytes
    rows[0]["note"] += f"; keygen {t_key:.2f} s; clip {clip:.3g}"
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--key-bits", default="1024,2048", help="Comma-separated key sizes.")
    parser.add_argument("--clients", type=int, default=20, help="Clients per round (max_clients of the packing).")
    parser.add_argument("--single-subset", type=int, default=2000, help="Values timed in single mode.")
    parser.add_argument("--jobs", default="1,2", help="Comma-separated process counts for packed encryption.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--insecure-key", action="store_true",
                        help="Allow keys below 1024 bits, only to reproduce SEFL's 128-512-bit rows.")
    args = parser.parse_args()
    args.jobs = [int(j) for j in args.jobs.split(",")]

    rng = np.random.default_rng(args.seed)
    grads = emo_base_gradient(args.seed)
    n_values = sum(g.size for g in grads.values())
    started = dt.datetime.now().astimezone()
    print(f"# Paillier benchmark, {started:%Y-%m-%d %H:%M %Z}")
    print()
    print(f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at start; "
          f"{n_values:,} values, float32 {4 * n_values:,} bytes; |g| max "
          f"{max(float(np.abs(g).max()) for g in grads.values()):.3g}, median "
          f"{float(np.median(np.abs(np.concatenate([g.ravel() for g in grads.values()])))):.3g}.")
    print()
    print("| key bits | scheme | values sent | ciphertexts | bytes on the wire | x float32 | encrypt s | "
          "decrypt s | server sum s | note |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    summary = []
    for bits in (int(b) for b in args.key_bits.split(",")):
        rows = bench_key(bits, grads, args, rng)
        for r in rows:
            fmt = lambda v: "-" if v != v else f"{v:.2f}"  # noqa: E731
            print(f"| {r['bits']} | {r['scheme']} | {r['values']:,} | {r['cts']:,} | {_mb(r['nbytes'])} | "
                  f"{r['ratio']:.2f} | {fmt(r['enc'])} | {fmt(r['dec'])} | {fmt(r['agg'])} | {r['note']} |")
        packed, single = rows[0], next(r for r in rows if r["scheme"].startswith("single"))
        public = next(r for r in rows if r["scheme"].startswith("packed, public"))
        summary.append(
            f"- {bits} bits: packed encryption {single['enc'] / packed['enc']:.0f}x faster than single "
            f"(public key only, no CRT: {single['enc'] / public['enc']:.0f}x), decryption "
            f"{single['dec'] / packed['dec']:.0f}x faster; packed ciphertexts {packed['ratio']:.2f}x the float32 "
            f"bytes, single {single['ratio']:.1f}x."
        )
    print()
    print("\n".join(summary))
    print()
    print(f"SEFL Table 2 (key 1024, per round): plaintext {SEFL_TABLE2_MB['plaintext']} MB, PHE "
          f"{SEFL_TABLE2_MB['PHE 1024']} MB, SEFL 80% {SEFL_TABLE2_MB['SEFL 80% 1024']} MB. Table 3 (key 1024): "
          f"PHE encryption/decryption {SEFL_TABLE3_S['PHE'][0]} / {SEFL_TABLE3_S['PHE'][1]} s, SEFL 80% "
          f"{SEFL_TABLE3_S['SEFL 80%'][0]} / {SEFL_TABLE3_S['SEFL 80%'][1]} s.")
    print(f"Finished in {(dt.datetime.now().astimezone() - started).total_seconds():.0f} s.")


if __name__ == "__main__":
    main()
