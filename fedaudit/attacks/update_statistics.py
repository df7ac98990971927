"""Update statistics: pure functions of a layer update that the attacks classify, for any layer type.

These are statistics of client *updates*, not acoustic features of audio
(:mod:`fedaudit.data.features`). Every statistic below is defined per layer
type (:func:`layer_kind`) and does not depend on the order of the layer's
output units (hidden units, output channels, LSTM cells), so it transfers
across runs whose units are permuted or initialised otherwise. Arrays carry a
leading update axis ``n``.

Linear layer (``weight (out, in)``, ``bias (out,)``)
    For one mini-batch, ``dW = sum_b delta_b x_b^T`` and ``db = sum_b delta_b``:
    every row of ``dW`` lies in the span of the layer's inputs ``x_b``. Hence

        v = db^T dW / |db|^2 = sum_b w_b x_b,   w_b = (db . delta_b) / |db|^2,   sum_b w_b = 1

    is an affine mixture of the client's own inputs (for the first layer: its
    acoustic features), and for a single sample ``v = x`` exactly. Row ``o``
    alone gives ``dW[o] / db[o] = sum_b (delta_b[o] / db[o]) x_b``, a mixture
    per unit. :func:`linear_statistics` concatenates ``v`` (``in`` values), the
    mean and the standard deviation over output units of each column of
    ``dW / |dW|_F`` (``2 in`` values) and four summaries (``log |dW|``,
    ``log |db|``, the share of positive ``db`` entries, the cosine between
    ``db`` and the row means of ``dW``): ``3 in + 4`` values.

Convolution (``weight (out, in, k)``, ``bias (out,)``; Conv1d over time)
    With padding ``p``, ``dW[o, c, j] = sum_{b,t} delta[b, o, t] x[b, c, t + j - p]``
    and ``db[o] = sum_{b,t} delta[b, o, t]``: write ``P[b, t]`` for the input
    patch ``x[b, :, t - p : t - p + k]`` (``in x k`` values, zeros outside the
    sequence), then ``dW[o] = sum_{b,t} delta[b, o, t] P[b, t]`` is a linear
    layer's gradient with one "sample" per (utterance, output position). So
    ``dW[o] / db[o]`` is an error-weighted mixture of input patches for each
    output channel, and the channel-mean mixture

        v = db^T dW / |db|^2 = sum_{b,t} w_{b,t} P[b, t],   w_{b,t} = sum_o db[o] delta[b, o, t] / |db|^2,

    reshaped ``(in, k)``, has weights that sum to 1. The output channels are the
    units: the statistics are :func:`linear_statistics` of the ``(out, in * k)``
    matrix, i.e. the bias-weighted patch mixture ``v`` plus, for each patch
    entry ``(c, j)``, its mean and standard deviation over output channels
    (``3 in k + 4`` values). Higher-dimensional convolutions flatten every
    trailing axis the same way.

LSTM (``weight_ih_l0 (4H, C)``, ``weight_hh_l0 (4H, H)``, ``bias_ih_l0``, ``bias_hh_l0 (4H,)``)
    The gate pre-activations are ``z_t = W_ih x_t + W_hh h_{t-1} + b_ih + b_hh``,
    so with ``g_t = dL/dz_t``: ``dW_ih = sum_{b,t} g_{b,t} x_{b,t}^T``,
    ``dW_hh = sum_{b,t} g_{b,t} h_{b,t-1}^T`` and ``db_ih = db_hh = sum_{b,t} g_{b,t}``.
    The two bias updates are equal (also for FedAvg pseudo-gradients of plain
    SGD or Adam steps), so they are combined into one, their mean
    ``b = (db_ih + db_hh) / 2``, which is the sum of the two scaled so that the
    identities keep their form. Then ``v = b^T dW_ih / |b|^2`` is an
    error-weighted mixture of the client's frames (``C`` values, weights summing
    to 1; ``x`` itself for one frame). The rows are split into the 4 gates
    (input, forget, cell, output, PyTorch's order): a permutation of the hidden
    units permutes the rows of every gate alike, so the per-gate statistics are
    order-invariant. Per cell the statistics are ``v``, then
    :func:`linear_statistics` of ``(W_ih[gate], b[gate])`` for each gate
    (``4 (3C + 4)`` values), then of ``(W_hh[gate], b[gate])`` (``4 (3H + 4)``).
    A layer with several cells (``num_layers > 1``, bidirectional) gives the
    concatenation over cells; GRU and plain RNN layers follow the same rule
    with the number of gates read from the shapes (3 and 1).

Any other layer
    Every tensor of 2 or more dimensions is read as ``(out, rest)`` with the
    mean of the layer's 1-D tensors of length ``out`` as its bias, and gives
    :func:`linear_statistics`; a layer of 1-D tensors only (a norm layer) gives
    :func:`vector_statistics` of each. The layer's statistics are the
    concatenation.

FedAvg pseudo-gradients (local SGD) are sums of such gradients, so the
identities hold approximately there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from fedaudit.exceptions import InvalidParameterError

__all__ = [
    "LAYER_KINDS",
    "input_mixture",
    "inversion_vector",
    "layer_kind",
    "layer_statistics",
    "linear_statistics",
    "recurrent_cells",
    "unit_mixtures",
    "update_statistics",
    "vector_statistics",
]

_EPS = 1e-20

#: Layer types the statistics distinguish (:func:`layer_kind`).
LAYER_KINDS: tuple[str, ...] = ("linear", "conv", "recurrent", "other")

_RECURRENT = re.compile(r"^weight_ih_l(\d+)(_reverse)?$")


def _as_matrix(weight: np.ndarray) -> np.ndarray:
    """``(n, out, ...)`` -> ``(n, out, prod(...))`` (a view when possible)."""
    weight = np.asarray(weight)
    if weight.ndim < 3:
        raise InvalidParameterError(
            f"A weight update needs an update axis and at least 2 more; got shape {weight.shape}."
        )
    return weight.reshape(weight.shape[0], weight.shape[1], -1) if weight.ndim > 3 else weight


def inversion_vector(weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``db^T dW / |db|^2`` for each update: the bias-weighted mixture of the layer's inputs.

    Parameters
    ----------
    weight
        Weight updates, shape ``(n, out, in)``, or ``(n, out, in, k, ...)`` for a
        convolution (trailing axes are flattened: the result is then a patch
        mixture, to reshape ``(in, k, ...)``).
    bias
        Bias updates, shape ``(n, out)``.

    Returns
    -------
    numpy.ndarray
        Shape ``(n, in * k * ...)``, float64.

    Examples
    --------
    >>> x = np.array([1.0, -2.0, 3.0]); delta = np.array([0.5, -1.0])
    >>> inversion_vector(np.outer(delta, x)[None], delta[None])
    array([[ 1., -2.,  3.]])
    """
    weight = _as_matrix(weight)
    bias = np.asarray(bias, dtype=weight.dtype)
    num = np.matmul(bias[:, None, :], weight)[:, 0, :].astype(np.float64)  # batched BLAS, not einsum
    b64 = bias.astype(np.float64)
    den = np.einsum("no,no->n", b64, b64)
    return num / np.maximum(den, _EPS)[:, None]


def unit_mixtures(weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``dW[o] / db[o]`` for every unit ``o``: one input (or patch) mixture per output unit or channel.

    Units whose bias update is 0 give a row of zeros.

    Returns
    -------
    numpy.ndarray
        Shape ``(n, out, in * k * ...)``, float64.
    """
    weight = _as_matrix(weight).astype(np.float64)
    bias = np.asarray(bias, dtype=np.float64)
    safe = np.where(np.abs(bias) > _EPS, bias, np.inf)
    return weight / safe[:, :, None]


def linear_statistics(weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Update statistics of a linear map ``(out, in)`` that do not depend on the order of its output units.

    Concatenates, per update: the inversion vector ``v`` (``in`` values), the
    mean and the standard deviation over output units of ``dW`` divided by its
    Frobenius norm (``2 * in`` values), and four summaries (log norms of ``dW``
    and ``db``, the share of positive bias entries, the cosine between ``db``
    and the row means of ``dW``). Scale-free apart from the two log norms.

    Parameters
    ----------
    weight
        ``(n, out, in)``; trailing axes beyond ``in`` (a convolution's kernel) are flattened into ``in``.
    bias
        ``(n, out)``.

    Returns
    -------
    numpy.ndarray
        Shape ``(n, 3 * in + 4)``, float64.
    """
    weight = _as_matrix(weight)
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


#: The statistics of a linear layer (and, flattened, of a convolution): :func:`linear_statistics`.
layer_statistics = linear_statistics

_QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def vector_statistics(values: np.ndarray) -> np.ndarray:
    """Order-invariant statistics of a 1-D update ``(n, m)``: log norm, share positive, quantiles of ``x / rms``.

    Returns
    -------
    numpy.ndarray
        Shape ``(n, 2 + 7)``, float64.
    """
    values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    norm = np.linalg.norm(values, axis=1)
    rms = np.maximum(norm / np.sqrt(values.shape[1]), _EPS)[:, None]
    q = np.quantile(values / rms, _QUANTILES, axis=1).T
    return np.concatenate([np.log(norm + _EPS)[:, None], (values > 0).mean(axis=1)[:, None], q], axis=1)


def recurrent_cells(names: Sequence[str]) -> list[dict[str, str]]:
    """The cells of a recurrent layer from its parameter names, in order.

    Each cell is ``{"ih": "weight_ih_l0", "hh": "weight_hh_l0", "bias_ih": ..., "bias_hh": ...}``
    (the bias keys only when present); ``_reverse`` cells of a bidirectional
    layer follow their forward cell.

    Examples
    --------
    >>> recurrent_cells(["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"])
    [{'ih': 'weight_ih_l0', 'hh': 'weight_hh_l0', 'bias_ih': 'bias_ih_l0', 'bias_hh': 'bias_hh_l0'}]
    """
    cells = []
    for name in names:
        match = _RECURRENT.match(name)
        if match is None:
            continue
        suffix = f"_l{match.group(1)}{match.group(2) or ''}"
        cell = {"ih": name, "hh": f"weight_hh{suffix}"}
        for key in ("bias_ih", "bias_hh"):
            if f"{key}{suffix}" in names:
                cell[key] = f"{key}{suffix}"
        cells.append(cell)
    return cells


def layer_kind(shapes: Mapping[str, Sequence[int]]) -> str:
    """The type of a layer from its parameters' shapes (without the update axis): one of :data:`LAYER_KINDS`.

    Parameters
    ----------
    shapes
        Parameter name inside the layer (``"weight"``, ``"weight_ih_l0"``) -> shape.

    Examples
    --------
    >>> layer_kind({"weight": (256, 988), "bias": (256,)})
    'linear'
    >>> layer_kind({"weight": (32, 13, 5), "bias": (32,)})
    'conv'
    >>> layer_kind({"weight_ih_l0": (256, 13), "weight_hh_l0": (256, 64), "bias_ih_l0": (256,), "bias_hh_l0": (256,)})
    'recurrent'
    """
    names = list(shapes)
    cells = recurrent_cells(names)
    if cells and all(c["hh"] in shapes for c in cells):
        return "recurrent"
    if set(names) <= {"weight", "bias"} and "weight" in shapes:
        ndim = len(shapes["weight"])
        if ndim == 2 and ("bias" not in shapes or tuple(shapes["bias"]) == (shapes["weight"][0],)):
            return "linear"
        if ndim >= 3 and ("bias" not in shapes or tuple(shapes["bias"]) == (shapes["weight"][0],)):
            return "conv"
    return "other"


def _gates(cell: Mapping[str, str], shapes: Mapping[str, Sequence[int]]) -> int:
    rows, hidden = int(shapes[cell["hh"]][0]), int(shapes[cell["hh"]][1])
    if hidden < 1 or rows % hidden or tuple(shapes[cell["ih"]])[0] != rows:
        raise InvalidParameterError(
            f"Recurrent weights {cell['ih']} {tuple(shapes[cell['ih']])} and {cell['hh']} {tuple(shapes[cell['hh']])} "
            "do not have the shapes (gates * H, C) and (gates * H, H)."
        )
    return rows // hidden


def _cell_bias(arrays: Mapping[str, np.ndarray], cell: Mapping[str, str], n: int, rows: int) -> np.ndarray:
    parts = [np.asarray(arrays[cell[k]], dtype=np.float64) for k in ("bias_ih", "bias_hh") if k in cell]
    return np.mean(parts, axis=0) if parts else np.zeros((n, rows))


def _shapes(arrays: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(np.shape(v)[1:]) for k, v in arrays.items()}


def update_statistics(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """Order-invariant statistics of one layer's updates, whatever its type (see the module docstring).

    Parameters
    ----------
    arrays
        The layer's parameters by their name inside the layer, each with a
        leading update axis: ``{"weight": (n, out, in), "bias": (n, out)}``,
        ``{"weight": (n, out, in, k), ...}``, or an LSTM's
        ``{"weight_ih_l0": (n, 4H, C), "weight_hh_l0": (n, 4H, H), "bias_ih_l0": ..., "bias_hh_l0": ...}``.

    Returns
    -------
    numpy.ndarray
        ``(n, m)`` float64, ``m`` fixed by the shapes.
    """
    shapes = _shapes(arrays)
    kind = layer_kind(shapes)
    n = len(next(iter(arrays.values())))
    if kind in ("linear", "conv"):
        bias = arrays.get("bias")
        if bias is None:
            bias = np.zeros((n, shapes["weight"][0]))
        return linear_statistics(arrays["weight"], bias)
    if kind == "recurrent":
        parts = []
        for cell in recurrent_cells(list(arrays)):
            gates = _gates(cell, shapes)
            rows = shapes[cell["hh"]][0]
            hidden = rows // gates
            bias = _cell_bias(arrays, cell, n, rows)
            w_ih, w_hh = np.asarray(arrays[cell["ih"]]), np.asarray(arrays[cell["hh"]])
            parts.append(inversion_vector(w_ih, bias))
            for weight in (w_ih, w_hh):
                for g in range(gates):
                    rows_g = slice(g * hidden, (g + 1) * hidden)
                    parts.append(linear_statistics(weight[:, rows_g], bias[:, rows_g]))
        return np.concatenate(parts, axis=1)
    parts = []
    vectors = {k: np.asarray(v) for k, v in arrays.items() if len(shapes[k]) == 1}
    for name, array in arrays.items():
        if len(shapes[name]) < 2:
            continue
        same = [v for v in vectors.values() if v.shape[1] == shapes[name][0]]
        bias = np.mean(np.stack(same).astype(np.float64), axis=0) if same else np.zeros((n, shapes[name][0]))
        parts.append(linear_statistics(np.asarray(array), bias))
    if not parts:
        parts = [vector_statistics(v) for v in vectors.values()]
    if not parts:
        raise InvalidParameterError(f"A layer with parameters {sorted(arrays)} gives no update statistics.")
    return np.concatenate(parts, axis=1)


def input_mixture(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """The mixture of the layer's inputs its update carries: what the inversion attack classifies.

    Linear: ``db^T dW / |db|^2`` (``in`` values, a mixture of input vectors).
    Convolution: the channel-mean patch mixture ``db^T dW / |db|^2`` flattened
    from ``(in, k)`` (a mixture of input patches). Recurrent: ``b^T dW_ih / |b|^2``
    of the first cell with ``b`` its bias update (``C`` values, a mixture of
    input frames).

    Parameters
    ----------
    arrays
        The layer's parameters by their name inside the layer, with a leading update axis.

    Returns
    -------
    numpy.ndarray
        ``(n, d)`` float64.

    Raises
    ------
    InvalidParameterError
        For a layer without such an identity (no bias, or another type).
    """
    shapes = _shapes(arrays)
    kind = layer_kind(shapes)
    cells = recurrent_cells(list(arrays))
    if kind in ("linear", "conv") and "bias" in arrays:
        return inversion_vector(arrays["weight"], arrays["bias"])
    if cells:  # the input weights and biases suffice (weight_hh need not be given)
        cell = cells[0]
        if "bias_ih" in cell or "bias_hh" in cell:
            n = len(arrays[cell["ih"]])
            return inversion_vector(arrays[cell["ih"]], _cell_bias(arrays, cell, n, shapes[cell["ih"]][0]))
    raise InvalidParameterError(
        f"A layer with parameters {sorted(shapes)} has no input-mixture identity: the inversion needs a linear, "
        "convolutional or recurrent input layer with a bias."
    )
