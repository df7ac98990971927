"""Analytic recovery of a client's inputs from the update of a linear input layer (``"analytic"``).

For a linear input layer ``z = W x + c`` and a mini-batch of ``B`` inputs, the
gradient is ``dW = sum_b delta_b x_b^T`` and ``dc = sum_b delta_b`` with
``delta_b`` the error of sample ``b`` at the layer's outputs. Stacking the bias
beside the weights,

    A = [dW | dc] = Delta S,    Delta = [delta_1 ... delta_B]  (H x B),    S = [x_b, 1]_b  (B x (n_inputs + 1)),

so ``A`` has rank at most ``B`` and:

* one sample: every row of ``dW`` divided by its bias entry is the input itself
  (Phong et al., "Privacy-preserving deep learning via additively homomorphic
  encryption", IEEE TIFS 2018); the bias-weighted mean of the rows is
  :func:`~fedaudit.attacks.update_statistics.inversion_vector`;
* a batch: row ``i`` over its bias entry is an affine mixture of the batch's
  inputs with weights ``delta_bi / sum_b delta_bi``. Behind a ReLU (and
  dropout) many ``delta_bi`` are exactly zero, so the columns of ``Delta`` are
  sparse vectors of the column space of ``A``. Finding them separates the batch
  (the sparse-vector and dictionary-recovery view of Qu, Sun and Wright,
  "Finding a sparse vector in a subspace", NeurIPS 2014, and Spielman, Wang and
  Wright, "Exact recovery of sparsely-used dictionaries", COLT 2012; the
  gradient-inversion use of blind source separation is Kariyappa et al.,
  "Cocktail party attack", ICML 2023, which unmixes by ICA instead).

The separation (:func:`separate_inputs`):

1. the column space of ``A`` (a randomised range finder, one power iteration
   when the update has no clear rank gap, e.g. under DP noise); its dimension
   ``k`` estimates the number of distinct inputs (capped by the recorded sample
   count);
2. rows that are numerically parallel come from units active for one sample
   only: each such *exact-duplicate cluster* is one input, exactly (its ratio
   row);
3. sparse vectors of the ``k``-dimensional space: alternating directions
   (soft-threshold, project) from many starts, then each result is snapped to
   the hyperplane through its ``k - 1`` smallest entries; a hyperplane that
   holds more zero rows than ``k - 1 + margin`` is a column of ``Delta``
   (exactly: a generic hyperplane through ``k - 1`` rows holds no others);
4. with all ``k`` columns found, ``S = Delta^+ A`` and every ``x_b`` is exact
   (divide by the last coordinate); otherwise the missing columns are the
   sparsest remaining candidates and only the cluster inputs are exact.

FedAvg pseudo-gradients of local SGD are sums over the local steps of such
gradients (at moving weights). With one local epoch every sample enters one step,
so ``A`` is still ``Delta S`` with one sparse column per sample and the same
separation applies (the recorded sample count is divided by the local epochs).
More epochs add up each sample's errors over its steps (denser columns); Adam's
element-wise step breaks the product form altogether.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from fedaudit.attacks.reconstruct.base import (
    ObservedUpdate,
    Reconstruction,
    ReconstructionContext,
    ReconstructionMethod,
    register_reconstruction,
)
from fedaudit.attacks.update_statistics import inversion_vector
from fedaudit.exceptions import InvalidParameterError

__all__ = ["AnalyticInputs", "Separation", "input_layer", "separate_inputs"]

#: Rows of ``[dW | db]`` below this share of the largest row norm are dead units (no sample active).
_LIVE_TOL = 1e-6
#: Singular values of the range sketch below this share of the largest one count as zero.
_RANK_TOL = 1e-5
#: Entries of a candidate column below this share of its largest entry count as exact zeros.
_ZERO_TOL = 1e-5
#: Rows whose directions differ by less than this (1 - |cos|) are duplicates.
_DUP_TOL = 1e-9
_OVERSAMPLE = 8
#: Share of the live rows the concentration steps fit (a sample must be inactive in more for its column to be certified).
_TRIM = 0.25


@dataclass(frozen=True, kw_only=True, eq=False)
class Separation:
    """The inputs separated from one input-layer update.

    Parameters
    ----------
    features
        Recovered inputs, shape ``(k, n_inputs)``, in the model's input space.
    weights
        Weight of each input in the update's bias-weighted mixture
        (:func:`~fedaudit.attacks.update_statistics.inversion_vector` equals
        ``weights @ features`` when the separation is exact); they sum to 1.
    exact
        Shape ``(k,)``: whether each input is recovered exactly (all ``k``
        error columns found, or an exact-duplicate cluster).
    rank
        Numerical rank of ``[dW | db]`` (before the cap by the sample count).
    n_clusters, n_cluster_rows
        Exact-duplicate clusters of ratio rows (each one input, exactly) and the rows in them.
    n_hyperplanes
        Error columns of ``Delta`` found exactly (``k`` when the separation is complete).
    noise_floor
        Largest singular value outside the recovered span over the largest one
        (about 1e-7 for an exact float32 update; large under DP noise).
    """

    features: np.ndarray
    weights: np.ndarray
    exact: np.ndarray
    rank: int
    n_clusters: int
    n_cluster_rows: int
    n_hyperplanes: int
    noise_floor: float

    @property
    def n_inputs(self) -> int:
        """Number of inputs separated (the estimated count)."""
        return int(self.features.shape[0])

    @property
    def complete(self) -> bool:
        """Whether every input is recovered exactly."""
        return bool(self.exact.size) and bool(self.exact.all())


def input_layer(parameter_shapes: Mapping[str, tuple[int, ...]]) -> str:
    """The input layer's name, checked to be linear: weight ``(out, in)`` and bias ``(out,)``.

    Raises
    ------
    InvalidParameterError
        If the architecture's first layer is not a linear layer with a bias
        (a convolution or an LSTM input layer mixes frames: analytic recovery reads a linear one).
    """
    names = list(parameter_shapes)
    if not names:
        raise InvalidParameterError("The recording names no parameters; analytic recovery reads its input layer.")
    layer = names[0].rsplit(".", 1)[0]
    weight = parameter_shapes.get(f"{layer}.weight")
    bias = parameter_shapes.get(f"{layer}.bias")
    if weight is None or bias is None or len(weight) != 2 or tuple(bias) != (weight[0],):
        shapes = {n: tuple(s) for n, s in parameter_shapes.items() if n.rsplit(".", 1)[0] == layer}
        raise InvalidParameterError(
            f"The input layer {layer!r} is not a linear layer with a bias (its parameters: {shapes}); "
            "analytic recovery needs a weight (out, in) and a bias (out,), as the mlp and dnn models have."
        )
    return layer


# -- the numerical kernel ------------------------------------------------------------------------------------


def _as_stack(weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, bool]:
    weight = np.asarray(weight)
    bias = np.asarray(bias)
    single = weight.ndim == 2
    if single:
        weight, bias = weight[None], bias[None]
    if weight.ndim != 3 or bias.shape != weight.shape[:2]:
        raise InvalidParameterError(
            f"separate_inputs needs weight updates (n, out, in) and bias updates (n, out); "
            f"got shapes {weight.shape} and {bias.shape}."
        )
    a = np.empty((*weight.shape[:2], weight.shape[2] + 1), dtype=np.float32)
    a[:, :, :-1] = weight
    a[:, :, -1] = bias
    return a, single


def _range(a: np.ndarray, live: np.ndarray, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal bases (n, H, width) of the column spaces of ``a`` and the singular values of the sketches."""
    omega = rng.standard_normal((a.shape[2], width)).astype(np.float32)
    y = np.matmul(a, omega).astype(np.float64)
    y[~live] = 0.0
    u, s, _ = np.linalg.svd(y, full_matrices=False)
    return u, s


def _power(a: np.ndarray, u: np.ndarray, live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One power iteration of the range finder (better top-k subspaces of noisy updates)."""
    z = np.matmul(np.swapaxes(a, 1, 2), u.astype(np.float32))
    y = np.matmul(a, z).astype(np.float64)
    y[~live] = 0.0
    u, s, _ = np.linalg.svd(y, full_matrices=False)
    return u, np.sqrt(s)  # singular values of A^T-sketch squared: back to A's scale


def _null_vectors(rows: np.ndarray) -> np.ndarray:
    """Unit vectors orthogonal to ``rows`` (..., k - 1, k): the last right singular vector."""
    _, _, vt = np.linalg.svd(rows, full_matrices=True)
    return vt[..., -1, :]


def _soft(c: np.ndarray, lam: float) -> np.ndarray:
    return np.sign(c) * np.maximum(np.abs(c) - lam, 0.0)


def _unmix(
    u: np.ndarray, live: np.ndarray, *, starts: int, iterations: int, margin: int, keys: np.ndarray, csteps: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sparse columns of the column spaces of ``u`` (g, H, k), k >= 2.

    Returns the coefficient matrices ``Q`` (g, k, k) (``u @ Q`` are the columns), a flag per
    column (g, k) whether it was found exactly, the cluster representative rows (g, H) and the
    cluster size of each row (g, H; 0 for rows outside clusters).
    """
    g, h, k = u.shape
    norms = np.linalg.norm(u, axis=2)
    unit = np.divide(u, norms[:, :, None], out=np.zeros_like(u), where=norms[:, :, None] > 0)
    # exact-duplicate clusters: numerically parallel rows are one sample's units
    gram = np.abs(np.matmul(unit, np.swapaxes(unit, 1, 2)))
    dup = (gram > 1.0 - _DUP_TOL) & live[:, :, None] & live[:, None, :]
    first = np.argmax(dup | np.eye(h, dtype=bool)[None], axis=2)  # smallest index of each row's cluster
    rep = (first == np.arange(h)[None]) & live
    size = dup.sum(axis=2)  # partners (self included when live)
    cluster = rep & (size >= 2)
    search = rep  # duplicates are left out of the search: zero counts then count distinct directions
    n_search = search.sum(axis=1)

    # starts: cluster representatives first (near the hyperplane normals), then random live rows
    m = int(max(1, min(starts, h)))
    key = keys + 2.0 * cluster + 4.0 * search
    pick = np.argsort(-key, axis=1)[:, :m]
    q = np.take_along_axis(unit, pick[:, :, None], axis=1)  # (g, m, k)
    q = np.swapaxes(q, 1, 2).copy()  # (g, k, m)
    valid_start = np.take_along_axis(search, pick, axis=1)
    lam = 0.1 / np.sqrt(np.maximum(n_search, 1))[:, None, None]
    us = np.where(search[:, :, None], u, 0.0)
    ust = np.swapaxes(us, 1, 2)
    for _ in range(iterations):
        c = np.matmul(us, q)
        q = np.matmul(ust, _soft(c, lam))
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-300)
    c = np.matmul(us, q)  # (g, H, m)
    # concentration steps (as in FAST-LTS): the hyperplane fitting the share of rows nearest to it
    keep = np.maximum(np.ceil(_TRIM * n_search).astype(np.int64), k + margin)  # (g,)
    for _ in range(csteps):
        mag = np.where(search[:, :, None], np.abs(c), np.inf)
        rank_in = np.argsort(np.argsort(mag, axis=1), axis=1)
        w = (rank_in < keep[:, None, None]).astype(np.float64)  # (g, H, m)
        gram_w = np.einsum("ghk,ghm,ghl->gmkl", us, w, us, optimize=True)
        _, vec = np.linalg.eigh(gram_w)
        q = np.swapaxes(vec[..., 0], 1, 2)  # (g, k, m)
        c = np.matmul(us, q)
    # snap each candidate to the hyperplane through its k - 1 smallest rows
    mag = np.where(search[:, :, None], np.abs(c), np.inf)
    small = np.argpartition(mag, k - 2, axis=1)[:, : k - 1, :] if k - 1 < h else np.argsort(mag, axis=1)[:, : k - 1]
    rows = np.take_along_axis(us[:, :, None, :], small[:, :, :, None], axis=1)  # (g, k-1, m, k)
    snapped = _null_vectors(np.swapaxes(rows, 1, 2))  # (g, m, k)
    cs = np.matmul(us, np.swapaxes(snapped, 1, 2))  # (g, H, m)
    peak = np.abs(cs).max(axis=1, keepdims=True)
    zeros = ((np.abs(cs) <= _ZERO_TOL * peak) & search[:, :, None]).sum(axis=1)  # (g, m)
    accepted = (zeros >= np.maximum(k - 1 + margin, keep)[:, None]) & valid_start
    # sparsity score of the unsnapped candidates (for columns not found exactly): l1 over l2, lower is sparser
    score = np.abs(c).sum(axis=1) / np.maximum(np.linalg.norm(c, axis=1), 1e-300)

    out = np.zeros((g, k, k))
    exact = np.zeros((g, k), dtype=bool)
    for j in range(g):
        chosen: list[np.ndarray] = []
        basis = np.zeros((k, 0))
        order = np.flatnonzero(accepted[j])
        order = order[np.argsort(-zeros[j, order], kind="stable")]
        for cand_list, is_exact in ((snapped[j, order], True), (q[j].T[np.argsort(score[j])], False)):
            for vec in cand_list:
                if len(chosen) == k:
                    break
                resid = vec - basis @ (basis.T @ vec)
                if np.linalg.norm(resid) < (0.05 if is_exact else 0.3):
                    continue
                if is_exact:
                    exact[j, len(chosen)] = True
                chosen.append(vec)
                basis = np.concatenate([basis, (resid / np.linalg.norm(resid))[:, None]], axis=1)
        while len(chosen) < k:  # too few distinct candidates: complete with an orthonormal basis
            vec = np.linalg.svd(np.eye(k) - basis @ basis.T)[0][:, 0]
            chosen.append(vec)
            basis = np.concatenate([basis, vec[:, None]], axis=1)
        out[j] = np.stack(chosen, axis=1)
    return out, exact, np.where(cluster, first, -1), np.where(cluster, size, 0)


def separate_inputs(
    weight: np.ndarray,
    bias: np.ndarray,
    *,
    max_inputs: int | Sequence[int] | np.ndarray,
    starts: int = 48,
    iterations: int = 40,
    margin: int = 3,
    seed: int = 0,
    ids: Sequence[int] | np.ndarray | None = None,
) -> list[Separation] | Separation:
    """Separate the inputs behind input-layer updates (module docstring).

    Parameters
    ----------
    weight
        Weight updates, shape ``(n, H, n_inputs)`` (or one update ``(H, n_inputs)``).
    bias
        Bias updates, shape ``(n, H)`` (or ``(H,)``).
    max_inputs
        Upper bound of the number of distinct inputs of each update (its sample
        count), one value or one per update; the estimate is the numerical rank
        of ``[dW | db]`` capped by it.
    starts
        Starting rows of the sparse-column search per update.
    iterations
        Alternating-direction iterations per start.
    margin
        Zero rows beyond ``k - 1`` a hyperplane must hold to count as an exact error column.
    seed
        Seed of the range sketch and of the choice of starts.
    ids
        One integer per update (e.g. its row in the recording) that, with
        ``seed``, draws its starts: an update gets the same result whatever
        else it is separated with. Default ``0 .. n - 1``.

    Returns
    -------
    list of Separation, or Separation
        One per update (a single :class:`Separation` for a single update).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(1, 5)); delta = rng.normal(size=(8, 1))
    >>> sep = separate_inputs(delta @ x, delta[:, 0], max_inputs=1)
    >>> sep.n_inputs, bool(np.allclose(sep.features, x, atol=1e-5))
    (1, True)
    """
    a, single = _as_stack(weight, bias)
    n, h, d1 = a.shape
    caps = np.broadcast_to(np.asarray(max_inputs, dtype=np.int64), (n,)).copy()
    if np.any(caps < 1):
        raise InvalidParameterError(f"The 'max_inputs' of separate_inputs must be >= 1; got {caps.min()}.")
    for name, value, lo in (("starts", starts, 1), ("iterations", iterations, 0), ("margin", margin, 1)):
        if not isinstance(value, (int, np.integer)) or value < lo:
            raise InvalidParameterError(f"The {name!r} parameter of separate_inputs must be an integer >= {lo}. Got {value!r}.")
    ids = np.arange(n) if ids is None else np.asarray(ids, dtype=np.int64)
    if ids.shape != (n,):
        raise InvalidParameterError(f"separate_inputs needs one id per update ({n}); got {ids.shape[0]}.")
    rng = np.random.default_rng([seed, 0])
    row_norm = np.sqrt(np.einsum("nhd,nhd->nh", a, a, dtype=np.float64))
    live = row_norm > _LIVE_TOL * np.maximum(row_norm.max(axis=1, keepdims=True), 1e-300)
    caps = np.minimum(caps, np.minimum(live.sum(axis=1), d1 - 1))
    width = int(min(max(int(caps.max()) + _OVERSAMPLE, 1), h, d1))
    u, s = _range(a, live, width, rng)
    rank = (s > _RANK_TOL * np.maximum(s[:, :1], 1e-300)).sum(axis=1)
    noisy = rank > caps
    if np.any(noisy) and width < min(h, d1):
        un, sn = _power(a[noisy], u[noisy], live[noisy])
        u[noisy], s[noisy] = un, sn
    k_all = np.minimum(rank, caps)
    results: list[Separation | None] = [None] * n
    for k in np.unique(k_all).tolist():
        idx = np.flatnonzero(k_all == k)
        floor = np.where(k < width, s[idx, min(k, width - 1)], 0.0) / np.maximum(s[idx, 0], 1e-300)
        if k == 0:
            for j, i in enumerate(idx):
                results[i] = Separation(
                    features=np.zeros((0, d1 - 1)), weights=np.zeros(0), exact=np.zeros(0, bool), rank=int(rank[i]),
                    n_clusters=0, n_cluster_rows=0, n_hyperplanes=0, noise_floor=float(floor[j]),
                )
            continue
        if k == 1:
            v = inversion_vector(a[idx, :, :-1], a[idx, :, -1])
            for j, i in enumerate(idx):
                results[i] = Separation(
                    features=v[j : j + 1], weights=np.ones(1), exact=np.array([rank[i] == 1]), rank=int(rank[i]),
                    n_clusters=0, n_cluster_rows=0, n_hyperplanes=int(rank[i] == 1), noise_floor=float(floor[j]),
                )
            continue
        ug = u[idx, :, :k]
        exact_rank = ~noisy[idx]
        keys = np.stack([np.random.default_rng([seed, 1, int(ids[i])]).random(h) for i in idx])
        q, found, first, size = _unmix(ug, live[idx], starts=starts, iterations=iterations, margin=margin, keys=keys)
        cols = np.matmul(ug, q)  # (g, H, k) error columns up to scale
        t = np.matmul(np.swapaxes(cols, 1, 2).astype(np.float32), a[idx]).astype(np.float64)  # (g, k, d1)
        gram = np.matmul(np.swapaxes(cols, 1, 2), cols)
        sol = np.linalg.solve(gram, t)  # S up to row scale
        scale = sol[:, :, -1]
        safe = np.where(np.abs(scale) > 1e-300, scale, 1e-300)
        feats = sol[:, :, :-1] / safe[:, :, None]
        deltas = cols * scale[:, None, :]  # true error columns
        db = a[idx, :, -1].astype(np.float64)
        wts = np.einsum("gh,ghk->gk", db, deltas) / np.maximum(np.einsum("gh,gh->g", db, db), 1e-300)[:, None]
        for j, i in enumerate(idx):
            complete = bool(found[j].all()) and bool(exact_rank[j])
            ex = np.full(k, complete)
            f = feats[j]
            reps = np.flatnonzero(size[j] > 0)
            if not complete and reps.size and exact_rank[j]:
                # each exact-duplicate cluster is one input: its ratio row replaces the nearest inexact output
                ratio = a[idx[j], reps, :-1].astype(np.float64) / a[idx[j], reps, -1:].astype(np.float64)
                fn = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-300)
                rn = ratio / np.maximum(np.linalg.norm(ratio, axis=1, keepdims=True), 1e-300)
                sim = rn @ fn.T
                for r in np.argsort(-sim.max(axis=1)):
                    free = np.flatnonzero(~ex)
                    if not free.size:
                        break
                    b = free[np.argmax(sim[r, free])]
                    f[b] = ratio[r]
                    ex[b] = True
            results[i] = Separation(
                features=f, weights=wts[j], exact=ex, rank=int(rank[i]), n_clusters=int(reps.size),
                n_cluster_rows=int(size[j, reps].sum()), n_hyperplanes=int(found[j].sum()) if exact_rank[j] else 0,
                noise_floor=float(floor[j]),
            )
    out = [r for r in results if r is not None]
    return out[0] if single else out


# -- the registered method ------------------------------------------------------------------------------------


@register_reconstruction
class AnalyticInputs(ReconstructionMethod):
    """Analytic recovery of the inputs through the input layer (``"analytic"``); needs no model and no globals.

    Exact for a one-sample gradient; for a mini-batch it separates the inputs
    behind the update (:func:`separate_inputs`, module docstring). Recovered
    vectors are in the model's input space: the normalised features the
    client trained on.

    Parameters
    ----------
    max_inputs
        Cap of the number of inputs per update (``None``: the recorded sample
        count, divided by the local epochs for pseudo-gradients).
    starts, iterations, margin, seed
        As for :func:`separate_inputs`.
    chunk
        Updates separated together (the work is batched over them).

    Notes
    -----
    ``Reconstruction.info``: ``n_estimated`` (inputs estimated and returned),
    ``n_exact`` (of them recovered exactly), ``n_clusters`` (exact-duplicate
    clusters of ratio rows) and ``n_cluster_rows``, ``n_hyperplanes`` (error
    columns found exactly), ``rank`` (numerical rank of ``[dW | db]``),
    ``noise_floor`` and ``complete`` (1.0 when every input is exact).
    ``Reconstruction.feature_weights`` are the inputs' weights in the update's
    bias-weighted mixture.

    Examples
    --------
    >>> method = AnalyticInputs().prepare(ReconstructionContext.from_store(store))  # doctest: +SKIP
    >>> rec = next(method.reconstruct_many(observed_updates(store, [0])))  # doctest: +SKIP
    >>> rec.features.shape, rec.info["n_exact"]  # doctest: +SKIP
    """

    name: ClassVar[str] = "analytic"
    produces: ClassVar[frozenset[str]] = frozenset({"features"})

    def __init__(
        self, *, max_inputs: int | None = None, starts: int = 48, iterations: int = 40, margin: int = 3,
        chunk: int = 64, seed: int = 0,
    ) -> None:
        self.max_inputs = max_inputs
        self.starts = starts
        self.iterations = iterations
        self.margin = margin
        self.chunk = chunk
        self.seed = seed

    def prepare(self, context: ReconstructionContext) -> AnalyticInputs:
        for name, value, lo in (
            ("starts", self.starts, 1), ("iterations", self.iterations, 0), ("margin", self.margin, 1),
            ("chunk", self.chunk, 1),
        ):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lo:
                raise InvalidParameterError(
                    f"The {name!r} parameter of AnalyticInputs must be an integer >= {lo}. Got {value!r} instead."
                )
        if self.max_inputs is not None and (not isinstance(self.max_inputs, (int, np.integer)) or self.max_inputs < 1):
            raise InvalidParameterError(
                f"The 'max_inputs' parameter of AnalyticInputs must be None or an integer >= 1. Got {self.max_inputs!r} instead."
            )
        self.layer_ = input_layer(context.parameter_shapes)
        self.local_epochs_ = max(1, int(context.config.get("local_epochs", 1) or 1))
        super().prepare(context)
        return self

    def distinct_inputs(self, update: ObservedUpdate) -> int:
        """Upper bound of the distinct inputs behind an update (the cap of the estimated count)."""
        n = max(1, int(update.num_samples))
        if update.kind != "gradient":
            n = max(1, -(-n // self.local_epochs_))
        return n if self.max_inputs is None else min(n, int(self.max_inputs))

    def reconstruct(self, update: ObservedUpdate) -> Reconstruction:
        return next(iter(self.reconstruct_many([update])))

    def reconstruct_many(self, updates: Iterable[ObservedUpdate]) -> Iterator[Reconstruction]:
        layer = getattr(self, "layer_", None)
        if layer is None:
            raise InvalidParameterError("AnalyticInputs.prepare(context) must be called before reconstruct().")
        batch: list[ObservedUpdate] = []
        for update in updates:
            batch.append(update)
            if len(batch) == self.chunk:
                yield from self._run(batch)
                batch = []
        if batch:
            yield from self._run(batch)

    def _run(self, batch: list[ObservedUpdate]) -> Iterator[Reconstruction]:
        w_name, b_name = f"{self.layer_}.weight", f"{self.layer_}.bias"
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for j, up in enumerate(batch):
            by_shape.setdefault(tuple(np.shape(up.arrays[w_name])), []).append(j)
        seps: list[Separation | None] = [None] * len(batch)
        for members in by_shape.values():
            weight = np.stack([np.asarray(batch[j].arrays[w_name]) for j in members])
            bias = np.stack([np.asarray(batch[j].arrays[b_name]) for j in members])
            caps = [self.distinct_inputs(batch[j]) for j in members]
            out = separate_inputs(
                weight, bias, max_inputs=caps, starts=self.starts, iterations=self.iterations, margin=self.margin,
                seed=self.seed, ids=[batch[j].row for j in members],
            )
            for j, sep in zip(members, out, strict=True):
                seps[j] = sep
        for up, sep in zip(batch, seps, strict=True):
            assert sep is not None
            yield Reconstruction(
                method=self.name, row=up.row, client_id=up.client_id, server_round=up.server_round,
                features=sep.features, feature_weights=sep.weights,
                info={
                    "n_estimated": float(sep.n_inputs), "n_exact": float(sep.exact.sum()),
                    "n_clusters": float(sep.n_clusters), "n_cluster_rows": float(sep.n_cluster_rows),
                    "n_hyperplanes": float(sep.n_hyperplanes), "rank": float(sep.rank),
                    "noise_floor": sep.noise_floor, "complete": float(sep.complete),
                },
            )
