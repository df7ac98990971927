"""Update statistics: pure functions of a layer update that the attacks classify.

These are statistics of client *updates*, not acoustic features of audio
(:mod:`fedaudit.data.features`).

For one mini-batch, the gradient of a linear layer is ``dW = sum_b delta_b x_b^T``
and ``db = sum_b delta_b``: every row of ``dW`` lies in the span of the inputs
``x_b`` of that layer. Hence

    v = db^T dW / |db|^2 = sum_b w_b x_b,   w_b = (db . delta_b) / |db|^2,   sum_b w_b = 1

is an affine mixture of the client's own inputs (for the first layer: its acoustic
features), and for a single sample ``v = x`` exactly. FedAvg pseudo-gradients
(local SGD) are sums of such gradients, so the identity holds approximately.
The statistics below do not depend on the order of the hidden units, so they
transfer across runs whose hidden units are permuted or initialised otherwise.
"""

from __future__ import annotations

import numpy as np

__all__ = ["inversion_vector", "layer_statistics"]

_EPS = 1e-20


def inversion_vector(weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``db^T dW / |db|^2`` for each update.

    Parameters
    ----------
    weight
        Weight updates, shape ``(n, out, in)``.
    bias
        Bias updates, shape ``(n, out)``.

    Returns
    -------
    numpy.ndarray
        Shape ``(n, in)``: the bias-weighted mixture of the layer's inputs.

    Examples
    --------
    >>> x = np.array([1.0, -2.0, 3.0]); delta = np.array([0.5, -1.0])
    >>> inversion_vector(np.outer(delta, x)[None], delta[None])
    array([[ 1., -2.,  3.]])
    """
    weight = np.asarray(weight)
    bias = np.asarray(bias, dtype=weight.dtype)
    num = np.matmul(bias[:, None, :], weight)[:, 0, :].astype(np.float64)  # batched BLAS, not einsum
    b64 = bias.astype(np.float64)
    den = np.einsum("no,no->n", b64, b64)
    return num / np.maximum(den, _EPS)[:, None]


def layer_statistics(weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Update statistics of a layer that do not depend on the order of hidden units, scale-free.

    Concatenates, per update: the inversion vector ``v`` (``in`` values), the
    mean and the standard deviation over output units of ``dW`` divided by its
    Frobenius norm (``2 * in`` values), and four summaries (log norms of ``dW``
    and ``db``, the share of positive bias entries, the cosine between ``db``
    and the row means of ``dW``).

    Returns
    -------
    numpy.ndarray
        Shape ``(n, 3 * in + 4)``, float64.
    """
    weight = np.asarray(weight)
    if weight.dtype != np.float64:
        weight = weight.astype(np.float32, copy=False)
    bias = np.asarray(bias, dtype=np.float64)
    n, n_out = weight.shape[0], weight.shape[1]
    ones = np.ones((1, n_out), dtype=weight.dtype)
    col_sum = np.matmul(ones, weight)[:, 0, :].astype(np.float64)  # sum over output units
    col_sq = np.einsum("noi,noi->ni", weight, weight).astype(np.float64)
    w_norm = np.sqrt(col_sq.sum(axis=1))
    b_norm = np.sqrt(np.einsum("no,no->n", bias, bias))
    scale = np.maximum(w_norm, _EPS)[:, None]
    col_mean = col_sum / n_out
    col_std = np.sqrt(np.maximum(col_sq / n_out - col_mean**2, 0.0))
    col_mean, col_std = col_mean / scale, col_std / scale
    row_mean = np.matmul(weight, np.ones((weight.shape[2], 1), dtype=weight.dtype))[:, :, 0].astype(np.float64)
    row_mean /= weight.shape[2]
    cos = np.einsum("no,no->n", row_mean, bias) / np.maximum(
        np.linalg.norm(row_mean, axis=1) * b_norm, _EPS
    )
    summary = np.stack(
        [np.log(w_norm + _EPS), np.log(b_norm + _EPS), (bias > 0).mean(axis=1), cos], axis=1
    ).reshape(n, 4)
    return np.concatenate([inversion_vector(weight, bias), col_mean, col_std, summary], axis=1)
