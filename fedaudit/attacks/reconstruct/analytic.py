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
  sparse vectors of the column space of ``A``. Once all ``B`` of them are found
  (up to scale), ``S = Delta^+ A`` and every ``x_b`` follows exactly (divide by
  the last coordinate).

How the columns are found (:func:`separate_inputs`):

1. **Span and count.** The column space of ``A`` (a randomised range finder,
   with one power iteration when the update has no clear rank gap, e.g. under
   DP noise); its dimension ``k`` estimates the number of distinct inputs
   (capped by the recorded sample count).
2. **Exact-duplicate clusters.** Numerically parallel rows come from units
   active for one sample only; each cluster is one input, exactly (its ratio row).
3. **Supports from the second layer.** The next layer reads ``h_b =
   ReLU(z_b)`` (after dropout): its weight update is ``dW2 = sum_b e_b h_b^T``,
   so its row space holds the ``B`` non-negative vectors ``h_b``, whose zeros
   are exactly those of ``delta_b``. The ``h_b`` are extreme rays of the cone
   ``{w in rowspace(dW2): w >= 0}`` with many zeros; random vertex walks with
   simplex pivots (an LP with a random objective, solved for many objectives at
   once) find them (the non-negative, minimum-volume view of NMF; Donoho and
   Stodden, NeurIPS 2003). The zeros of a vertex name the rows where
   ``delta_b = 0``; the column is the null vector of those rows of ``A``'s span,
   and it is *certified* when that null space is one-dimensional and exact (up
   to the update's rounding), holds many more than ``k - 1`` distinct rows, and
   does not hang on any single row (leverage below 1).
4. **Sparse vectors in the span (no second layer).** Alternating directions
   (soft threshold, project) from many starts, each result snapped to the
   hyperplane through its ``k - 1`` smallest rows (Qu, Sun and Wright, "Finding
   a sparse vector in a subspace", NeurIPS 2014; Spielman, Wang and Wright,
   "Exact recovery of sparsely-used dictionaries", COLT 2012); certified when
   the hyperplane holds a quarter of the rows.
5. **Assembly.** Certified columns first (most zeros first, linearly
   independent), then the best uncertified candidates. Input ``b`` is exact when
   every column but its own is certified (the ``b``-th row of ``Q^-1`` is then
   fixed), and cluster inputs are exact in any case.

The gradient-inversion use of blind source separation is Kariyappa et al.,
"Cocktail party attack" (ICML 2023), which unmixes fully connected layers by ICA
instead (it relies on independent, non-Gaussian inputs; utterances of one
speaker are neither).

FedAvg pseudo-gradients of local SGD are sums over the local steps of such
gradients (at moving weights). With one local epoch every sample enters one
step, so ``A`` is still ``Delta S`` with one sparse column per sample, and
``dW2`` still holds one non-negative ``h_b`` per sample with the same zeros:
the separation applies (the recorded sample count is divided by the local
epochs). More epochs add up each sample's errors over its steps (denser
columns); Adam's element-wise step breaks the product form altogether.
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

__all__ = ["AnalyticInputs", "RELU_MODELS", "Separation", "input_layer", "next_relu_layer", "separate_inputs"]

#: Models whose second linear layer reads the (dropped-out) ReLU output of the input layer.
RELU_MODELS: tuple[str, ...] = ("mlp", "dnn")

#: Rows of ``[dW | db]`` below this share of the largest row norm are dead units (no sample active).
_LIVE_TOL = 1e-6
#: Singular values of the range sketch below this share of the largest one count as zero.
_RANK_TOL = 1e-5
#: Entries below this share of a vector's largest entry count as exact zeros.
_ZERO_TOL = 1e-5
#: Rows whose directions differ by less than this (1 - |cos|) are duplicates.
_DUP_TOL = 1e-9
#: Smallest over largest eigenvalue of a zero set's Gram matrix below which its null vector is exact.
_NULL_TOL = 1e-8
_OVERSAMPLE = 8
#: An update is exact (float32 rounding only) when its k+1-th singular value is below this share of the first.
_EXACT_FLOOR = 1e-6
#: The same for the float32 two-column sketch of a one-sample update (its rounding is coarser).
_SKETCH_FLOOR = 1e-4
#: Share of the live rows a first-layer hyperplane must hold to be certified (no second layer).
_TRIM = 0.25
#: Vertex walks stop pivoting at a vertex holding this many zeros beyond k - 1.
_DEGENERATE = 4
#: A certified null vector must survive leaving out any one of its zero rows (leverage below this).
_MAX_LEVERAGE = 0.99


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
        Shape ``(k,)``: whether each input is recovered exactly (every other
        error column certified, or an exact-duplicate cluster).
    rank
        Numerical rank of ``[dW | db]`` (before the cap by the sample count).
    n_clusters, n_cluster_rows
        Exact-duplicate clusters of ratio rows (each one input, exactly) and the rows in them.
    n_certified
        Error columns of ``Delta`` found and certified (``k`` when the separation is complete).
    noise_floor
        Largest singular value outside the recovered span over the largest one
        (about 1e-7 for an exact float32 update; large under DP noise).
    second_layer
        Whether the supports came from the second layer's update.
    """

    features: np.ndarray
    weights: np.ndarray
    exact: np.ndarray
    rank: int
    n_clusters: int
    n_cluster_rows: int
    n_certified: int
    noise_floor: float
    second_layer: bool = False

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


def next_relu_layer(parameter_shapes: Mapping[str, tuple[int, ...]], model: str | None) -> str | None:
    """The linear layer that reads the input layer's ReLU output (``"fc2"``), or ``None``.

    Only the models of :data:`RELU_MODELS` are known to put a ReLU (and dropout)
    between their first two linear layers.
    """
    if model not in RELU_MODELS:
        return None
    layers = list(dict.fromkeys(n.rsplit(".", 1)[0] for n in parameter_shapes))
    if len(layers) < 2:
        return None
    first = parameter_shapes.get(f"{layers[0]}.weight")
    second = parameter_shapes.get(f"{layers[1]}.weight")
    if first is None or second is None or len(second) != 2 or second[1] != first[0]:
        return None
    return layers[1]


# -- small kernels ---------------------------------------------------------------------------------------------


def _stacked(weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(n, out, in)`` weight and ``(n, out)`` bias updates, and whether one update came unstacked."""
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
    return weight, bias, single


def _as_stack(weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, bool]:
    weight, bias, single = _stacked(weight, bias)
    a = np.empty((*weight.shape[:2], weight.shape[2] + 1), dtype=np.float32)
    a[:, :, :-1] = weight
    a[:, :, -1] = bias
    return a, single


def _range(a: np.ndarray, live: np.ndarray, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Orthonormal bases (n, H, width) of the column spaces of ``a`` (n, H, d) and the sketches' singular values."""
    omega = rng.standard_normal((a.shape[2], width)).astype(np.float32)
    y = np.matmul(a, omega).astype(np.float64)
    y[~live] = 0.0
    u, s, _ = np.linalg.svd(y, full_matrices=False)
    return u, s


def _power(a: np.ndarray, u: np.ndarray, live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One power iteration of the range finder (a better top-k subspace of a noisy update)."""
    z = np.matmul(np.swapaxes(a, 1, 2), u.astype(np.float32))
    y = np.matmul(a, z).astype(np.float64)
    y[~live] = 0.0
    u, s, _ = np.linalg.svd(y, full_matrices=False)
    return u, np.sqrt(s)  # the sketch of A A^T: square roots are A's singular values


def _soft(c: np.ndarray, lam: np.ndarray) -> np.ndarray:
    return np.sign(c) * np.maximum(np.abs(c) - lam, 0.0)


def _clusters(u: np.ndarray, live: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact-duplicate clusters of the rows of ``u`` (g, H, k): each row's first duplicate and the cluster sizes."""
    g, h, _ = u.shape
    norms = np.linalg.norm(u, axis=2)
    unit = np.divide(u, norms[:, :, None], out=np.zeros_like(u), where=norms[:, :, None] > 0)
    gram = np.abs(np.matmul(unit, np.swapaxes(unit, 1, 2)))
    dup = (gram > 1.0 - _DUP_TOL) & live[:, :, None] & live[:, None, :]
    first = np.argmax(dup | np.eye(h, dtype=bool)[None], axis=2)
    size = dup.sum(axis=2)
    return first, size


def _null_of_rows(
    u: np.ndarray, mask: np.ndarray, *, leverage: bool = False
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Null vectors of the rows ``mask`` (g, m, H) of ``u`` (g, H, k): unit vectors (g, m, k), and how exact.

    The second value is the smallest over the second smallest eigenvalue of the rows' Gram matrix:
    near 0 when the rows have a one-dimensional null space. With ``leverage``, the third is the
    largest leverage of a row in its row space (g, m): 1 when leaving that one row out would
    leave a larger null space, i.e. the null vector hangs on that single row.
    """
    masked = mask[..., None] * u[:, None, :, :]  # (g, m, H, k)
    gram = np.matmul(np.swapaxes(masked, 2, 3), u[:, None, :, :])
    lam, vec = np.linalg.eigh(gram)
    ratio = lam[..., 0] / np.maximum(lam[..., 1], 1e-300)
    if not leverage:
        return vec[..., 0], ratio
    proj = np.matmul(masked, vec[..., 1:])  # (g, m, H, k-1): the rows in the row space's eigenbasis
    lev = (proj**2 / np.maximum(lam[..., None, 1:], 1e-300)).sum(axis=3)
    return vec[..., 0], ratio, lev.max(axis=2)


# -- candidates from the second layer: vertices of the non-negative cone ------------------------------------------


def _interior(v: np.ndarray, live: np.ndarray, iters: int = 200) -> np.ndarray:
    """Points ``c`` (g, k) with ``v c > 0`` on the live rows (soft-min ascent from the projected all-ones)."""
    vn = np.linalg.norm(v, axis=2) + 1e-300
    c = np.einsum("ghk,gh->gk", v, live.astype(v.dtype))
    c /= np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-300)
    for _ in range(iters):
        w = np.matmul(v, c[:, :, None])[:, :, 0] / vn
        scale = np.abs(np.where(live, w, 0.0)).sum(axis=1) / np.maximum(live.sum(axis=1), 1)
        lowest = np.where(live, w, np.inf).min(axis=1)
        todo = lowest <= 1e-3 * scale
        if not todo.any():
            break
        tau = np.maximum(0.1 * scale, 1e-300)[:, None]
        push = np.where(live, np.exp(-np.clip(w / tau, -50.0, 50.0)), 0.0) / vn
        step = np.matmul(push[:, None, :], v)[:, 0, :]
        step /= np.maximum(np.linalg.norm(step, axis=1, keepdims=True), 1e-300)
        c = np.where(todo[:, None], c + 0.5 * tau * step, c)
        c /= np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-300)
    return c


def _vertex_walks(
    v: np.ndarray, live: np.ndarray, distinct: np.ndarray, r: np.ndarray, tol: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Vertices ``c`` (g, m, k) of ``{v c >= 0, sum(v c) = 1}`` and ``v c``, by walks with objectives ``r`` (g, m, k).

    Each walk moves along its projected objective until a row blocks it, keeps that row at zero,
    and so on (k - 1 rows); at a vertex with few zeros it pivots like the simplex method
    (releases the basis row whose edge raises the objective most) until the vertex is optimal or
    degenerate (many zeros among the ``distinct`` rows, like the ``h_b``). Rows negative at the
    start never block.
    """
    g, h, k = v.shape
    m = r.shape[1]
    dt = v.dtype
    s = np.einsum("ghk,gh->gk", v, live.astype(dt))  # the slice's normal: total mass
    ss = np.maximum(np.einsum("gk,gk->g", s, s), 1e-300)
    p = np.broadcast_to(np.eye(k, dtype=dt) - s[:, :, None] * s[:, None, :] / ss[:, None, None], (m, g, k, k))
    p = np.ascontiguousarray(np.swapaxes(p, 0, 1))  # (g, m, k, k)
    c = np.repeat(_interior(v, live)[:, None, :], m, axis=1)
    r = r - np.einsum("gmk,gk->gm", r, s)[:, :, None] * s[:, None, :] / ss[:, None, None]
    vt = np.swapaxes(v, 1, 2)
    vc = np.matmul(c, vt)  # (g, m, H)
    vn = (np.linalg.norm(v, axis=2) + 1e-300) * tol[:, None]  # (g, H): row norms times the zero tolerance
    block_ok = live[:, None, :]
    basis = np.zeros((g, m, max(k - 1, 1)), dtype=np.int64)
    nb = np.zeros((g, m), dtype=np.int64)
    done = np.zeros((g, m), dtype=bool)
    gi = np.arange(g)[:, None]
    for _ in range(6 * k):
        moving = (nb < k - 1) & ~done
        if moving.any():
            d = np.matmul(p, r[..., None])[..., 0]
            dn = np.linalg.norm(d, axis=2)
            d /= np.maximum(dn, 1e-300)[:, :, None]
            vd = np.matmul(d, vt)
            ok = (vd < -vn[:, None, :]) & (vc >= -vn[:, None, :]) & block_ok
            with np.errstate(divide="ignore", invalid="ignore"):
                t = np.where(ok, np.maximum(vc, 0.0) / -vd, np.inf)
            i = np.argmin(t, axis=2)
            ts = np.take_along_axis(t, i[:, :, None], axis=2)[:, :, 0]
            blocked = np.isfinite(ts) & moving & (dn > 1e-12)
            done |= moving & ~blocked
            ts = np.where(blocked, ts, 0.0)
            c += ts[:, :, None] * d
            vc += ts[:, :, None] * vd
            vi = v[gi, i]  # (g, m, k)
            u = np.matmul(p, vi[..., None])[..., 0]
            un = np.linalg.norm(u, axis=2)
            defl = blocked & (un > 0.1 * vn[gi, i])
            u /= np.maximum(un, 1e-300)[:, :, None]
            p -= np.where(defl[:, :, None, None], u[:, :, :, None] * u[:, :, None, :], 0.0)
            gd, md = np.nonzero(defl)
            basis[gd, md, nb[gd, md]] = i[gd, md]
            nb += defl
        at_vertex = (nb >= k - 1) & ~done
        if at_vertex.any():
            zeros = ((vc <= vn[:, None, :]) & distinct[:, None, :]).sum(axis=2)
            done |= at_vertex & (zeros >= _min_zeros(k))
            gp, mp = np.nonzero(at_vertex & ~done)
            if gp.size:
                rows = v[gp[:, None], basis[gp, mp]]  # (q, k-1, k)
                mat = np.concatenate([rows, s[gp][:, None, :]], axis=1)
                ok_inv = np.abs(np.linalg.det(mat)) > 1e-300
                mat[~ok_inv] = np.eye(k, dtype=dt)
                edges = np.linalg.inv(mat)[:, :, : k - 1]  # column j: release basis row j
                gain = np.einsum("qk,qkj->qj", r[gp, mp], edges) / np.maximum(np.linalg.norm(edges, axis=1), 1e-300)
                j = np.argmax(gain, axis=1)
                best = gain[np.arange(gp.size), j]
                stop = (best <= 1e-12) | ~ok_inv
                done[gp[stop], mp[stop]] = True
                go = ~stop
                if go.any():
                    gq, mq, jq = gp[go], mp[go], j[go]
                    dvec = edges[np.flatnonzero(go), :, jq]
                    dvec /= np.maximum(np.linalg.norm(dvec, axis=1, keepdims=True), 1e-300)
                    p[gq, mq] = dvec[:, :, None] * dvec[:, None, :]
                    basis[gq, mq, jq] = basis[gq, mq, k - 2]
                    nb[gq, mq] = k - 2
        if done.all():
            break
    return c, vc


def _min_zeros(k: int) -> int:
    """Distinct zero rows a column must have to be certified: twice the k - 1 any hyperplane can hold."""
    return max(k - 1 + _DEGENERATE, 2 * (k - 1))


def _second_layer_candidates(
    u: np.ndarray, v: np.ndarray, live: np.ndarray, distinct: np.ndarray, objectives: np.ndarray,
    zero_tol: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Candidate columns (as coefficients ``q`` (g, m, k) of ``u``) from vertices of the second layer's cone.

    Returns ``q``, whether each is certified (g, m), its number of distinct zero rows (g, m), the
    vertices ``c`` (g, m, k) in the coordinates of ``v``, and how exact each null vector is (g, m;
    smaller is better).
    """
    c, w = _vertex_walks(v, live, distinct, objectives, zero_tol)  # (g, m, k), (g, m, H)
    peak = np.maximum(np.abs(w).max(axis=2, keepdims=True), 1e-300)
    zset = (w <= zero_tol[:, None, None] * peak) & live[:, None, :]
    q, ratio, lev = _null_of_rows(u, zset, leverage=True)
    n_zero = (zset & distinct[:, None, :]).sum(axis=2)
    # certified: the first layer's rows where h_b vanishes (many more than k - 1 distinct ones) leave one
    # direction, and no single row decides it (a face of two h's plus one stray row has a row of leverage 1)
    null_tol = _NULL_TOL * (zero_tol / 1e-6) ** 2  # eigenvalues scale with the square of the rounding
    certified = (ratio < null_tol[:, None]) & (n_zero >= _min_zeros(u.shape[2])) & (lev < _MAX_LEVERAGE)
    return q, certified, n_zero, c, ratio


def _concentrate(
    u: np.ndarray, live: np.ndarray, q: np.ndarray, keep: np.ndarray, steps: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Refine candidates ``q`` (g, m, k): the null vector of the ``keep`` (g, m) live rows nearest to each."""
    ratio = np.ones(q.shape[:2])
    for _ in range(steps):
        mag = np.where(live[:, None, :], np.abs(np.einsum("ghk,gmk->gmh", u, q)), np.inf)
        rank_of = np.argsort(np.argsort(mag, axis=2), axis=2)
        q, ratio = _null_of_rows(u, (rank_of < keep[:, :, None]) & live[:, None, :])
    return q, ratio


def _distinct(q: np.ndarray, certified: np.ndarray) -> np.ndarray:
    """Number of distinct certified columns of each update (q (g, m, k), certified (g, m))."""
    out = np.zeros(q.shape[0], dtype=np.int64)
    for j in range(q.shape[0]):
        cq = q[j][certified[j]]
        if cq.size:
            same = np.abs(cq @ cq.T) > 0.999
            out[j] = int((np.argmax(same, axis=1) == np.arange(len(cq))).sum())
    return out


# -- candidates from the first layer alone: sparse vectors of its span ----------------------------------------------


def _first_layer_candidates(
    u: np.ndarray, search: np.ndarray, *, starts: int, iterations: int, margin: int, keys: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sparse columns of the span of ``u`` (g, H, k) from alternating directions, snapped to hyperplanes.

    Returns the snapped candidates (g, m, k), whether each is certified (g, m), its zeros (g, m)
    and the unsnapped iterates (g, m, k) ordered by an l1/l2 sparsity score (sparsest first).
    """
    g, h, k = u.shape
    norms = np.linalg.norm(u, axis=2)
    unit = np.divide(u, norms[:, :, None], out=np.zeros_like(u), where=norms[:, :, None] > 0)
    n_search = search.sum(axis=1)
    m = int(max(1, min(starts, h)))
    pick = np.argsort(-(keys + 4.0 * search), axis=1)[:, :m]
    q = np.swapaxes(np.take_along_axis(unit, pick[:, :, None], axis=1), 1, 2).copy()  # (g, k, m)
    lam = 0.1 / np.sqrt(np.maximum(n_search, 1))[:, None, None]
    us = np.where(search[:, :, None], u, 0.0)
    ust = np.swapaxes(us, 1, 2)
    for _ in range(iterations):
        q = np.matmul(ust, _soft(np.matmul(us, q), lam))
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-300)
    c = np.matmul(us, q)  # (g, H, m)
    mag = np.where(search[:, :, None], np.abs(c), np.inf)
    small = np.argpartition(mag, k - 2, axis=1)[:, : k - 1, :] if k - 1 < h else np.argsort(mag, axis=1)[:, : k - 1]
    rows = np.take_along_axis(us[:, :, None, :], small[:, :, :, None], axis=1)  # (g, k-1, m, k)
    _, _, vt = np.linalg.svd(np.swapaxes(rows, 1, 2), full_matrices=True)
    snapped = vt[..., -1, :]  # (g, m, k)
    cs = np.matmul(us, np.swapaxes(snapped, 1, 2))
    peak = np.abs(cs).max(axis=1, keepdims=True)
    zeros = ((np.abs(cs) <= _ZERO_TOL * peak) & search[:, :, None]).sum(axis=1)
    need = np.maximum(k - 1 + margin, np.ceil(_TRIM * n_search).astype(np.int64))
    certified = zeros >= need[:, None]
    score = np.abs(c).sum(axis=1) / np.maximum(np.linalg.norm(c, axis=1), 1e-300)
    iterates = np.take_along_axis(np.swapaxes(q, 1, 2), np.argsort(score, axis=1)[:, :, None], axis=1)
    return snapped, certified, zeros, iterates


# -- assembly --------------------------------------------------------------------------------------------------------


def _choose(
    k: int, certified: np.ndarray, cert_zeros: np.ndarray, others: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``k`` independent columns (k, k): certified ones first (most zeros first), then ``others`` in order."""
    chosen: list[np.ndarray] = []
    flags: list[bool] = []
    basis = np.zeros((k, 0))
    order = np.argsort(-cert_zeros, kind="stable")
    for cands, is_cert, tol in ((certified[order], True, 0.05), (others, False, 0.3)):
        for vec in cands:
            if len(chosen) == k:
                break
            resid = vec - basis @ (basis.T @ vec)
            norm = np.linalg.norm(resid)
            if norm < tol:
                continue
            chosen.append(vec)
            flags.append(is_cert)
            basis = np.concatenate([basis, (resid / norm)[:, None]], axis=1)
    while len(chosen) < k:  # too few distinct candidates: complete with an orthonormal basis
        vec = np.linalg.svd(np.eye(k) - basis @ basis.T)[0][:, 0]
        chosen.append(vec)
        flags.append(False)
        basis = np.concatenate([basis, vec[:, None]], axis=1)
    return np.stack(chosen, axis=1), np.array(flags)


def separate_inputs(
    weight: np.ndarray,
    bias: np.ndarray,
    *,
    max_inputs: int | Sequence[int] | np.ndarray,
    next_weight: np.ndarray | None = None,
    walks: int = 1,
    rounds: int = 8,
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
        Weight updates of the input layer, shape ``(n, H, n_inputs)`` (or one update ``(H, n_inputs)``).
    bias
        Its bias updates, shape ``(n, H)`` (or ``(H,)``).
    max_inputs
        Upper bound of the number of distinct inputs of each update (its sample
        count), one value or one per update; the estimate is the numerical rank
        of ``[dW | db]`` capped by it.
    next_weight
        Weight updates of the layer that reads the input layer's ReLU output,
        shape ``(n, H2, H)``; ``None`` separates from the input layer alone.
    walks
        Vertex walks per estimated input and round (second-layer route).
    rounds
        Further rounds of walks for updates with columns still missing, aimed at
        the vertices not yet found (objectives orthogonal to those found).
    starts, iterations, margin
        Starts and alternating-direction iterations of the first-layer search,
        and the zero rows beyond ``k - 1`` its hyperplanes must hold.
    seed
        Seed of the range sketch, the walks and the starts.
    ids
        One integer per update (e.g. its row in the recording) that, with
        ``seed``, draws its walks and starts: an update gets the same result
        whatever else it is separated with. Default ``0 .. n - 1``.

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
    weight, bias, single = _stacked(weight, bias)
    n, h, d1 = weight.shape[0], weight.shape[1], weight.shape[2] + 1
    caps = np.broadcast_to(np.asarray(max_inputs, dtype=np.int64), (n,)).copy()
    if np.any(caps < 1):
        raise InvalidParameterError(f"The 'max_inputs' of separate_inputs must be >= 1; got {int(caps.min())}.")
    checks = (
        ("walks", walks, 0), ("rounds", rounds, 0), ("starts", starts, 1), ("iterations", iterations, 0),
        ("margin", margin, 1),
    )
    for name, value, lo in checks:
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lo:
            raise InvalidParameterError(
                f"The {name!r} parameter of separate_inputs must be an integer >= {lo}. Got {value!r} instead."
            )
    nxt = None
    if next_weight is not None:
        nxt = np.asarray(next_weight, dtype=np.float32)
        nxt = nxt[None] if single and nxt.ndim == 2 else nxt
        if nxt.ndim != 3 or nxt.shape[0] != n or nxt.shape[2] != h:
            raise InvalidParameterError(
                f"separate_inputs needs next-layer weight updates of shape ({n}, H2, {h}); got {nxt.shape}."
            )
    ids = np.arange(n) if ids is None else np.asarray(ids, dtype=np.int64)
    if ids.shape != (n,):
        raise InvalidParameterError(f"separate_inputs needs one id per update ({n}); got {ids.shape}.")
    results: list[Separation | None] = [None] * n
    one = np.flatnonzero(caps == 1)
    if one.size:
        whole = one.size == n
        seps = _one_sample(weight if whole else weight[one], bias if whole else bias[one])
        for i, sep in zip(one, seps, strict=True):
            results[i] = sep
    many = np.flatnonzero(caps > 1)
    if many.size:
        sub = (lambda x: x) if many.size == n else (lambda x: x[many])  # noqa: E731
        for i, sep in zip(many, _many_samples(
            _as_stack(sub(weight), sub(bias))[0], caps[many], None if nxt is None else sub(nxt), walks=walks,
            rounds=rounds, starts=starts, iterations=iterations, margin=margin, seed=seed, ids=ids[many],
        ), strict=True):
            results[i] = sep
    out = [r for r in results if r is not None]
    return out[0] if single else out


def _one_sample(weight: np.ndarray, bias: np.ndarray) -> list[Separation]:
    """One-sample updates: the inversion vector, exact when ``[dW | db]`` is rank one."""
    v = inversion_vector(weight, bias)
    # rank one or not: the two singular values of a two-column sketch of [dW | db]
    omega = np.random.default_rng([0, 4]).standard_normal((weight.shape[2] + 1, 2)).astype(np.float32)
    y = (np.matmul(weight.astype(np.float32, copy=False), omega[:-1]) + bias[:, :, None] * omega[-1]).astype(np.float64)
    sv = np.linalg.svd(y, compute_uv=False)
    floor = sv[:, 1] / np.maximum(sv[:, 0], 1e-300)
    exact = floor < _SKETCH_FLOOR
    return [
        Separation(
            features=v[j : j + 1], weights=np.ones(1), exact=np.array([bool(exact[j])]), rank=1 if exact[j] else 2,
            n_clusters=0, n_cluster_rows=0, n_certified=int(exact[j]), noise_floor=float(floor[j]),
        )
        for j in range(len(v))
    ]


def _many_samples(
    a: np.ndarray, caps: np.ndarray, nxt: np.ndarray | None, *, walks: int, rounds: int, starts: int,
    iterations: int, margin: int, seed: int, ids: np.ndarray,
) -> list[Separation]:
    """Updates of more than one sample (``a`` = ``[dW | db]``, (n, H, d + 1))."""
    n, h, d1 = a.shape
    rng = np.random.default_rng([seed, 0])
    row_norm = np.sqrt(np.einsum("nhd,nhd->nh", a, a, dtype=np.float64))
    live = row_norm > _LIVE_TOL * np.maximum(row_norm.max(axis=1, keepdims=True), 1e-300)
    caps = np.minimum(caps, np.minimum(live.sum(axis=1), d1 - 1))
    width = int(min(max(int(caps.max()) + _OVERSAMPLE, 1), h, d1))
    u, s = _range(a, live, width, rng)
    rank = (s > _RANK_TOL * np.maximum(s[:, :1], 1e-300)).sum(axis=1)
    k_all = np.minimum(rank, caps)
    tail = s[np.arange(n), np.minimum(k_all, width - 1)] * (k_all < width)
    noisy = tail > _EXACT_FLOOR * np.maximum(s[:, 0], 1e-300)  # no float32-exact gap after the k-th value
    if np.any(noisy) and width < min(h, d1):
        un, sn = _power(a[noisy], u[noisy], live[noisy])
        # rows at the noise level (units no sample reached, now carrying noise only) are left out:
        # iid noise of scale sigma has largest singular value about sigma (sqrt(H) + sqrt(d)), rows sigma sqrt(d)
        kk = np.minimum(caps[noisy], sn.shape[1] - 1)
        sigma = sn[np.arange(kk.size), kk] / (np.sqrt(h) + np.sqrt(d1))
        live[noisy] &= row_norm[noisy] > 3.0 * sigma[:, None] * np.sqrt(d1)
        un, sn = _power(a[noisy], un, live[noisy])
        u[noisy], s[noisy] = un, sn
    results: list[Separation] = [None] * n  # type: ignore[list-item]
    for k in np.unique(k_all).tolist():
        idx = np.flatnonzero(k_all == k)
        floor = np.where(k < width, s[idx, min(k, width - 1)], 0.0) / np.maximum(s[idx, 0], 1e-300)
        if k <= 1:
            v1 = inversion_vector(a[idx, :, :-1], a[idx, :, -1]) if k == 1 else np.zeros((len(idx), 0, d1 - 1))
            for j, i in enumerate(idx):
                results[i] = Separation(
                    features=v1[j : j + 1] if k == 1 else np.zeros((0, d1 - 1)), weights=np.ones(k),
                    exact=np.full(k, not noisy[i]), rank=int(rank[i]), n_clusters=0, n_cluster_rows=0,
                    n_certified=int(k == 1 and not noisy[i]), noise_floor=float(floor[j]),
                )
            continue
        whole = idx.size == n
        results_k = _separate_group(
            a if whole else a[idx], u[:, :, :k] if whole else u[idx, :, :k], live if whole else live[idx],
            None if nxt is None else (nxt if whole else nxt[idx]), exact_rank=~noisy[idx],
            floor=floor, walks=walks, rounds=rounds, starts=starts, iterations=iterations, margin=margin, seed=seed,
            ids=ids[idx],
        )
        for j, i in enumerate(idx):
            sep = results_k[j]
            results[i] = Separation(
                features=sep["features"], weights=sep["weights"], exact=sep["exact"], rank=int(rank[i]),
                n_clusters=sep["n_clusters"], n_cluster_rows=sep["n_cluster_rows"], n_certified=sep["n_certified"],
                noise_floor=float(floor[j]), second_layer=sep["second_layer"],
            )
    return results


def _separate_group(
    a: np.ndarray, u: np.ndarray, live: np.ndarray, nxt: np.ndarray | None, *, exact_rank: np.ndarray,
    floor: np.ndarray, walks: int, rounds: int, starts: int, iterations: int, margin: int, seed: int,
    ids: np.ndarray,
) -> list[dict]:
    """Separate updates of one estimated count ``k = u.shape[2] >= 2``."""
    g, h, k = u.shape
    first, size = _clusters(u, live)
    rep = (first == np.arange(h)[None]) & live
    keys = np.stack([np.random.default_rng([seed, 1, int(i)]).random(h) for i in ids])
    cands: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (q (g, m, k), certified, zeros)
    others = np.zeros((g, 0, k))
    use_second = np.zeros(g, dtype=bool)
    if nxt is not None and walks > 0:
        # the second layer's row space (H-dimensional rows), of the same estimated dimension k
        vt = np.swapaxes(nxt, 1, 2)  # (g, H, H2)
        v_all, sv = _range(vt, live, min(k + _OVERSAMPLE, vt.shape[2], h), np.random.default_rng([seed, 2]))
        rank2 = (sv > _RANK_TOL * np.maximum(sv[:, :1], 1e-300)).sum(axis=1)
        use_second = (rank2 >= k) | ~exact_rank
        if use_second.any():
            sel = np.flatnonzero(use_second)
            v2 = v_all[sel, :, :k]
            rngs = [np.random.default_rng([seed, 3, int(i)]) for i in ids[sel]]
            objectives = np.stack([r.standard_normal((walks * k, k)) for r in rngs])
            # zeros are exact up to the update's rounding: about 8 x the noise floor per entry, tolerated 10-fold
            zero_tol = np.maximum(1e-6, 100.0 * floor[sel])
            q2, cert2, zeros2, c2, ratio2 = _second_layer_candidates(
                u[sel], v2, live[sel], rep[sel], objectives, zero_tol
            )
            # more rounds for updates with columns still missing: objectives orthogonal to the vertices
            # found, so that every found h_b scores 0 and the best vertex is a missing one
            for _ in range(rounds):
                short = np.flatnonzero((_distinct(q2, cert2) < k) & exact_rank[sel])
                if not short.size:
                    break
                obj2 = np.zeros((short.size, walks * k, k))
                for t, j in enumerate(short):
                    known = c2[j][cert2[j]]
                    null = np.eye(k)
                    if known.size:
                        known = known / np.maximum(np.linalg.norm(known, axis=1, keepdims=True), 1e-300)
                        _, sk, vk = np.linalg.svd(known, full_matrices=True)
                        null = vk[int((sk > 1e-3 * sk[0]).sum()) :].T
                    if null.shape[1] == 0:
                        continue
                    obj2[t] = rngs[j].standard_normal((walks * k, null.shape[1])) @ null.T
                new = _second_layer_candidates(
                    u[sel][short], v2[short], live[sel][short], rep[sel][short], obj2, zero_tol[short]
                )
                pad = lambda x: np.concatenate([x, np.zeros((len(sel), *x.shape[1:]), x.dtype)], axis=1)  # noqa: E731
                q2, cert2, zeros2, c2, ratio2 = pad(q2), pad(cert2), pad(zeros2), pad(c2), pad(ratio2) + 0.0
                m1 = new[0].shape[1]
                ratio2[:, -m1:] = np.inf
                for old, add in zip((q2, cert2, zeros2, c2, ratio2), new, strict=True):
                    old[short, -m1:] = add
            full_q = np.zeros((g, q2.shape[1], k))
            full_c = np.zeros((g, q2.shape[1]), dtype=bool)
            full_z = np.zeros((g, q2.shape[1]), dtype=np.int64)
            full_q[sel], full_c[sel], full_z[sel] = q2, cert2 & exact_rank[sel, None], zeros2
            cands.append((full_q, full_c, full_z))
            noisy_sel = ~exact_rank[sel]
            if noisy_sel.any():
                # noisy updates: no zero is exact; refine each candidate by least squares on the rows
                # nearest to its hyperplane (concentration steps, as in FAST-LTS)
                q2[noisy_sel], ratio2[noisy_sel] = _concentrate(
                    u[sel][noisy_sel], live[sel][noisy_sel], q2[noisy_sel], np.maximum(zeros2[noisy_sel], k - 1)
                )
            # uncertified candidates, the nearest to exact first (those with many zeros before the others)
            badness = np.where(zeros2 >= _min_zeros(k), ratio2, 1e6 + ratio2)
            ordered = np.take_along_axis(q2, np.argsort(badness, axis=1)[:, :, None], axis=1)
            full_o = np.zeros((g, q2.shape[1], k))
            full_o[sel] = ordered
            others = np.concatenate([others, full_o], axis=1)
    if not use_second.all():
        snapped, cert1, zeros1, iterates = _first_layer_candidates(
            u, rep, starts=starts, iterations=iterations, margin=margin, keys=keys
        )
        cert1 &= (~use_second & exact_rank)[:, None]
        cands.append((snapped, cert1, zeros1))
        others = np.concatenate([others, np.where(use_second[:, None, None], 0.0, iterates)], axis=1)
    qs = np.zeros((g, k, k))
    found = np.zeros((g, k), dtype=bool)
    for j in range(g):
        cq = np.concatenate([c[0][j][c[1][j]] for c in cands]) if cands else np.zeros((0, k))
        cz = np.concatenate([c[2][j][c[1][j]] for c in cands]) if cands else np.zeros(0)
        oth = others[j][np.linalg.norm(others[j], axis=1) > 0]
        qs[j], found[j] = _choose(k, cq, cz, oth)
    cols = np.matmul(u, qs)  # (g, H, k) error columns up to scale
    t = np.matmul(np.swapaxes(cols, 1, 2).astype(np.float32), a).astype(np.float64)  # (g, k, d1)
    gram = np.matmul(np.swapaxes(cols, 1, 2), cols)
    sol = np.linalg.solve(gram, t)
    scale = sol[:, :, -1]
    safe = np.where(np.abs(scale) > 1e-300, scale, 1e-300)
    feats = sol[:, :, :-1] / safe[:, :, None]
    # a column whose scale coordinate (its share of the bias) nearly vanishes is not separable from
    # a noisy update: its division blows up, and the output falls back to the update's mixture
    v_mix = inversion_vector(a[:, :, :-1], a[:, :, -1])
    norms = np.linalg.norm(feats, axis=2)
    limit = 4.0 * np.maximum(np.median(norms, axis=1), np.linalg.norm(v_mix, axis=1))
    blown = ~exact_rank[:, None] & (norms > limit[:, None])
    feats = np.where(blown[:, :, None], v_mix[:, None, :], feats)
    deltas = cols * scale[:, None, :]
    db = a[:, :, -1].astype(np.float64)
    wts = np.einsum("gh,ghk->gk", db, deltas) / np.maximum(np.einsum("gh,gh->g", db, db), 1e-300)[:, None]
    out = []
    for j in range(g):
        n_found = int(found[j].sum()) if exact_rank[j] else 0
        # input b is exact when every column but its own is certified
        if not exact_rank[j] or n_found < k - 1:
            ex = np.zeros(k, dtype=bool)
        else:
            ex = np.ones(k, dtype=bool) if n_found == k else ~found[j]
        f = feats[j]
        reps = np.flatnonzero((size[j] >= 2) & rep[j])
        if reps.size and exact_rank[j] and not ex.all():
            # each exact-duplicate cluster is one input, exactly (its ratio row); its row of the error
            # columns is nonzero in that input's column only, which names the output it replaces
            ratio = a[j, reps, :-1].astype(np.float64) / a[j, reps, -1:].astype(np.float64)
            rows = np.abs(cols[j, reps])  # (c, k)
            rows /= np.maximum(rows.max(axis=1, keepdims=True), 1e-300)
            for r in range(reps.size):
                hit = np.flatnonzero(found[j] & (rows[r] > 1e-4))
                if hit.size > 1:
                    continue  # not a single-sample row after all
                b = int(hit[0]) if hit.size else int(np.flatnonzero(~found[j])[np.argmax(rows[r, ~found[j]])])
                f[b] = ratio[r]
                ex[b] = True
        out.append({
            "features": f, "weights": wts[j], "exact": ex, "n_clusters": int(reps.size),
            "n_cluster_rows": int(size[j, reps].sum()), "n_certified": n_found, "second_layer": bool(use_second[j]),
        })
    return out


# -- the registered method ------------------------------------------------------------------------------------


@register_reconstruction
class AnalyticInputs(ReconstructionMethod):
    """Analytic recovery of the inputs through the input layer (``"analytic"``); needs no model and no globals.

    Exact for a one-sample gradient; for a mini-batch it separates the inputs
    behind the update (:func:`separate_inputs`, module docstring), reading the
    second layer's update too when the architecture puts a ReLU between the
    two (:data:`RELU_MODELS`). Recovered vectors are in the model's input
    space: the normalised features the client trained on.

    Parameters
    ----------
    max_inputs
        Cap of the number of inputs per update (``None``: the recorded sample
        count, divided by the local epochs for pseudo-gradients).
    second_layer
        Read the second layer's update for the supports when the architecture allows it.
    walks, rounds, starts, iterations, margin, seed
        As for :func:`separate_inputs`.
    chunk
        Updates separated together (the work is batched over them).

    Notes
    -----
    ``Reconstruction.info``: ``n_estimated`` (inputs estimated and returned),
    ``n_exact`` (of them recovered exactly), ``n_clusters`` (exact-duplicate
    clusters of ratio rows) and ``n_cluster_rows``, ``n_certified`` (error
    columns found and certified), ``rank`` (numerical rank of ``[dW | db]``),
    ``noise_floor``, ``second_layer`` (1.0 when the second layer gave the
    supports) and ``complete`` (1.0 when every input is exact).
    ``Reconstruction.feature_weights`` are the inputs' weights in the update's
    bias-weighted mixture (they sum to 1).

    Examples
    --------
    >>> method = AnalyticInputs().prepare(ReconstructionContext.from_store(store))  # doctest: +SKIP
    >>> rec = next(method.reconstruct_many(observed_updates(store, [0])))  # doctest: +SKIP
    >>> rec.features.shape, rec.info["n_exact"]  # doctest: +SKIP
    """

    name: ClassVar[str] = "analytic"
    produces: ClassVar[frozenset[str]] = frozenset({"features"})

    def __init__(
        self, *, max_inputs: int | None = None, second_layer: bool = True, walks: int = 1, rounds: int = 8,
        starts: int = 48, iterations: int = 40, margin: int = 3, chunk: int = 32, seed: int = 0,
    ) -> None:
        self.max_inputs = max_inputs
        self.second_layer = second_layer
        self.walks = walks
        self.rounds = rounds
        self.starts = starts
        self.iterations = iterations
        self.margin = margin
        self.chunk = chunk
        self.seed = seed

    def prepare(self, context: ReconstructionContext) -> AnalyticInputs:
        for name, value, lo in (
            ("walks", self.walks, 0), ("rounds", self.rounds, 0), ("starts", self.starts, 1),
            ("iterations", self.iterations, 0), ("margin", self.margin, 1), ("chunk", self.chunk, 1),
            ("seed", self.seed, 0),
        ):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lo:
                raise InvalidParameterError(
                    f"The {name!r} parameter of AnalyticInputs must be an integer >= {lo}. Got {value!r} instead."
                )
        if self.max_inputs is not None and (
            not isinstance(self.max_inputs, (int, np.integer)) or isinstance(self.max_inputs, bool)
            or self.max_inputs < 1
        ):
            raise InvalidParameterError(
                f"The 'max_inputs' parameter of AnalyticInputs must be None or an integer >= 1. "
                f"Got {self.max_inputs!r} instead."
            )
        self.layer_ = input_layer(context.parameter_shapes)
        model = context.config.get("model", "mlp")
        self.next_layer_ = next_relu_layer(context.parameter_shapes, model) if self.second_layer else None
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
        if getattr(self, "layer_", None) is None:
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
        n_name = None if self.next_layer_ is None else f"{self.next_layer_}.weight"
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for j, up in enumerate(batch):
            by_shape.setdefault(tuple(np.shape(up.arrays[w_name])), []).append(j)
        seps: list[Separation | None] = [None] * len(batch)
        for members in by_shape.values():
            weight = np.stack([np.asarray(batch[j].arrays[w_name]) for j in members])
            bias = np.stack([np.asarray(batch[j].arrays[b_name]) for j in members])
            caps = [self.distinct_inputs(batch[j]) for j in members]
            nxt = None
            if n_name is not None and max(caps) > 1 and all(n_name in batch[j].arrays for j in members):
                nxt = np.stack([np.asarray(batch[j].arrays[n_name]) for j in members])
            out = separate_inputs(
                weight, bias, max_inputs=caps, next_weight=nxt,
                walks=self.walks, rounds=self.rounds, starts=self.starts, iterations=self.iterations,
                margin=self.margin, seed=self.seed, ids=[batch[j].row for j in members],
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
                    "n_certified": float(sep.n_certified), "rank": float(sep.rank),
                    "noise_floor": sep.noise_floor, "second_layer": float(sep.second_layer),
                    "complete": float(sep.complete),
                },
            )
