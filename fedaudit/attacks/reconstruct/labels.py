"""Label counts from the output layer's update: how many samples of each emotion a client trained on.

For softmax cross-entropy with mean reduction over a batch of ``B`` samples, the
gradient of the output bias is

    db_c = (1/B) sum_b (p_bc - y_bc) = pbar_c - n_c / B,

with ``p_bc`` the softmax output, ``y_bc`` the one-hot label and ``n_c`` the
number of samples of class ``c``. So ``n_c = B (pbar_c - db_c)``: the counts
follow from the bias gradient once the batch-mean softmax ``pbar`` is
estimated, and the estimate is rounded to integers summing to ``B`` by the
largest-remainder rule. This is the analytic family of Wainakh et al.
("User-level label leakage from gradients in federated learning", PETS 2022:
LLG), Geng et al. ("Towards general deep leakage in federated learning", 2021:
the zero-shot estimate from the mean softmax) and Ma et al. ("Instance-wise
batch label restoration via gradients in federated learning", ICLR 2023); the
one-sample case is iDLG (Zhao et al., 2020): the class present is the one with
a negative bias gradient, and it is recovered exactly.

Estimators of ``pbar`` (:data:`ESTIMATORS`):

``"uniform"`` (:func:`label_counts`; needs nothing but the update)
    ``pbar_c = 1 / C``, the zero-knowledge prior: exact for a model whose
    outputs are uniform (small logits, e.g. an untrained output layer), and
    biased towards a balanced histogram for a confident model. A one-sample
    batch is always exact: the class present is the one with the most
    negative bias gradient (iDLG).
``"present-share"`` (scale-free)
    A class with no sample has ``db_c = pbar_c >= 0``, so the classes with a
    negative bias gradient are taken as the present ones, sharing the
    probability mass in proportion to their counts: ``n_c`` proportional to
    ``-db_c`` over them (LLG's rule). Exact for one sample; needs no gradient
    scale, so it is what a raw parameter delta gets, but it gives absent
    classes nothing and is much worse than ``"uniform"`` on larger batches.
``"model"`` (needs the round's global weights, output layer ``(W, b)``)
    Each class ``k`` is summarised by one penultimate activation ``m_k`` with
    probabilities ``q_k = softmax(W m_k + b)`` and a share ``f_k = n_k / B``;
    then ``dW_c = sum_k f_k (q_kc - [k = c]) m_k`` and
    ``db_c = sum_k f_k q_kc - f_c``. The method alternates least squares for
    the ``m_k`` (given ``f``, ``q``) and for ``f`` (given ``q``, with
    ``sum f = 1``), starting from one activation shared by the whole batch,
    and keeps the iterate that fits ``(dW, db)`` best.
    Exact when the samples of each class share their activation (for a
    one-sample batch in exact arithmetic; with a confident model the float32
    update is too coarse, so one sample gets iDLG's rule instead).

Signs (``kind``): FedSGD recordings hold gradients (``"gradient"``) and FedAvg
recordings pseudo-gradients ``(theta_global - theta_local) / (lr U)``
(``"pseudo_gradient"``), which carry the gradient's sign and, for local SGD,
approximately the mean gradient over the local steps. A raw parameter delta
``theta_local - theta_global`` (``"delta"``, what some frameworks send) has the
opposite sign and an unknown scale: it is negated, and only the scale-free
``"present-share"`` estimator reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from fedaudit.attacks.reconstruct.base import (
    ObservedUpdate,
    Reconstruction,
    ReconstructionContext,
    ReconstructionMethod,
    register_reconstruction,
)
from fedaudit.exceptions import InvalidParameterError

__all__ = [
    "ESTIMATORS",
    "LABEL_KINDS",
    "LabelCounts",
    "counts_from_mean_probs",
    "label_counts",
    "label_histograms",
    "largest_remainder",
    "model_class_shares",
    "output_layer",
    "present_share_counts",
    "round_counts",
]

#: Update kinds :func:`label_counts` reads, and the sign that turns each into a gradient.
LABEL_KINDS: dict[str, float] = {"gradient": 1.0, "pseudo_gradient": 1.0, "delta": -1.0}

#: Estimators of the batch-mean softmax, by name (see the module docstring).
ESTIMATORS: tuple[str, ...] = ("auto", "uniform", "present-share", "model")


def largest_remainder(values: np.ndarray, total: int) -> np.ndarray:
    """Non-negative integers summing to ``total``, proportional to ``values`` (largest-remainder rounding).

    Negative values count as zero; if nothing is positive the total is spread
    as evenly as possible (lower class indices first). Ties are broken by the
    lower index, so the result is deterministic.

    Examples
    --------
    >>> largest_remainder(np.array([0.6, 2.3, 1.1, -0.5]), 4).tolist()
    [1, 2, 1, 0]
    """
    values = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0), 0.0, None)
    n = len(values)
    if total < 0:
        raise InvalidParameterError(f"The total of the counts must be >= 0; got {total}.")
    if values.sum() <= 0:
        values = np.ones(n)
    scaled = values * (total / values.sum())
    counts = np.floor(scaled).astype(np.int64)
    short = int(total - counts.sum())
    if short > 0:
        order = np.lexsort((np.arange(n), -(scaled - counts)))  # largest remainder first, then lower index
        counts[order[:short]] += 1
    return counts


def round_counts(estimate: np.ndarray, total: int) -> np.ndarray:
    """The non-negative integers summing to ``total`` nearest to real-valued count estimates.

    Floors the positive part, then adds the missing units to the largest
    remainders (or takes surplus units from the smallest), lower index first on
    ties. When ``estimate`` sums to ``total`` and every entry is within 1/2 of
    the true count, the true counts come back.

    Examples
    --------
    >>> round_counts(np.array([-0.3, 2.6, 1.2, 0.5]), 4).tolist()
    [0, 3, 1, 0]
    """
    x = np.nan_to_num(np.asarray(estimate, dtype=np.float64), nan=0.0)
    if total < 0:
        raise InvalidParameterError(f"The total of the counts must be >= 0; got {total}.")
    counts = np.floor(np.clip(x, 0.0, None)).astype(np.int64)
    idx = np.arange(len(x))
    while counts.sum() < total:
        counts[np.lexsort((idx, -(x - counts)))[0]] += 1
    while counts.sum() > total:
        rest = np.where(counts > 0, x - counts, np.inf)
        counts[np.lexsort((idx, rest))[0]] -= 1
    return counts


def _check(bias_update: np.ndarray, num_samples: int, kind: str) -> tuple[np.ndarray, float]:
    if kind not in LABEL_KINDS:
        raise InvalidParameterError(
            f"Unknown update kind {kind!r}; label counts read {sorted(LABEL_KINDS)}."
        )
    if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 1:
        raise InvalidParameterError(f"num_samples must be an integer >= 1; got {num_samples!r}.")
    bias = np.asarray(bias_update, dtype=np.float64)
    if bias.ndim != 1 or len(bias) < 2:
        raise InvalidParameterError(
            f"The output layer's bias update must have shape (n_classes,) with n_classes >= 2; got {bias.shape}."
        )
    return LABEL_KINDS[kind] * bias, LABEL_KINDS[kind]


def _present_share(score: np.ndarray, total: int) -> np.ndarray:
    return largest_remainder(np.where(score > 0, score, 0.0), total)


def label_counts(
    weight_update: np.ndarray | None, bias_update: np.ndarray, *, num_samples: int, kind: str
) -> np.ndarray:
    """Samples of each class behind one update, from its output layer alone (no model needed).

    The ``"uniform"`` estimator (``pbar_c = 1 / C``) for updates with gradient
    scale, iDLG's rule for one sample, ``"present-share"`` for a raw parameter
    delta (module docstring).

    Parameters
    ----------
    weight_update
        The output layer's weight update, shape ``(n_classes, h)``. Optional: it
        is read only when the bias update is all zero (a pruned bias); then the
        weight-row sums stand in for it (LLG): with non-negative (ReLU)
        activations they have the sign of each class's summed error.
    bias_update
        The output layer's bias update, shape ``(n_classes,)``.
    num_samples
        Samples behind the update as recorded: the batch (FedSGD), or the
        samples seen in local training (FedAvg: train rows times local epochs).
    kind
        ``"gradient"`` or ``"pseudo_gradient"`` (the gradient's sign), or
        ``"delta"`` (a raw parameter delta ``theta_local - theta_global``, negated).

    Returns
    -------
    numpy.ndarray
        Integer counts, shape ``(n_classes,)``, summing to ``num_samples``.

    Raises
    ------
    InvalidParameterError
        On an unknown kind, a sample count below 1, or shapes that do not match.

    Examples
    --------
    >>> label_counts(None, np.array([0.2, -0.7, 0.3, 0.2]), num_samples=1, kind="gradient").tolist()
    [0, 1, 0, 0]
    >>> label_counts(None, np.array([0.2, -0.3, 0.2, -0.1]), num_samples=4, kind="gradient").tolist()
    [0, 2, 0, 2]
    """
    grad, sign = _check(bias_update, num_samples, kind)
    total = int(num_samples)
    if weight_update is not None:
        weight = sign * np.asarray(weight_update, dtype=np.float64)
        if weight.ndim != 2 or weight.shape[0] != len(grad):
            raise InvalidParameterError(
                f"The output layer's weight update must have shape (n_classes={len(grad)}, h); got {weight.shape}."
            )
        if not grad.any():  # no bias signal: LLG's weight-row sums, scale-free
            return _present_share(-weight.sum(axis=1), total)
    if total == 1:  # iDLG: the class present has the most negative gradient
        counts = np.zeros(len(grad), dtype=np.int64)
        counts[int(np.argmin(grad))] = 1
        return counts
    if kind == "delta":
        return _present_share(-grad, total)
    return round_counts(total * (1.0 / len(grad) - grad), total)


def present_share_counts(bias_update: np.ndarray, *, num_samples: int, kind: str) -> np.ndarray:
    """Counts by LLG's rule: classes with a negative bias update share the samples in proportion to it.

    Examples
    --------
    >>> present_share_counts(np.array([0.2, -0.3, 0.2, -0.1]), num_samples=4, kind="gradient").tolist()
    [0, 3, 0, 1]
    """
    grad, _ = _check(bias_update, num_samples, kind)
    return _present_share(-grad, int(num_samples))


def label_histograms(
    weight_update: np.ndarray | None, bias_update: np.ndarray, *, kind: str = "gradient", estimator: str = "uniform"
) -> np.ndarray:
    """Estimated class shares ``n / B`` of many updates at once, before rounding (no sample count needed).

    The ``"uniform"`` estimate ``1 / C - db`` (or ``"present-share"``: ``-db``
    over the negative entries), clipped at zero and normalised per row; a row
    whose bias update is all zero reads its weight-row sums instead (LLG).
    Rounding it to integer counts would need each update's sample count and only
    loses information.

    Parameters
    ----------
    weight_update
        ``(n, C, h)`` (or ``(C, h)``), or ``None``.
    bias_update
        ``(n, C)`` (or ``(C,)``).
    kind, estimator
        As :func:`label_counts` and :data:`ESTIMATORS` (``"uniform"`` or ``"present-share"``).

    Returns
    -------
    numpy.ndarray
        Shape ``(n, C)`` (or ``(C,)``), rows summing to 1.

    Examples
    --------
    >>> label_histograms(None, np.array([[0.1, -0.2, 0.05, 0.05]])).round(2).tolist()
    [[0.15, 0.45, 0.2, 0.2]]
    """
    if kind not in LABEL_KINDS:
        raise InvalidParameterError(f"Unknown update kind {kind!r}; label counts read {sorted(LABEL_KINDS)}.")
    if estimator not in ("uniform", "present-share"):
        raise InvalidParameterError(
            f"label_histograms takes estimator 'uniform' or 'present-share'; got {estimator!r}."
        )
    if estimator == "uniform" and kind == "delta":
        raise InvalidParameterError(
            "A raw parameter delta has no gradient scale; use estimator='present-share' with kind='delta'."
        )
    sign = LABEL_KINDS[kind]
    grad = sign * np.asarray(bias_update, dtype=np.float64)
    single = grad.ndim == 1
    grad = np.atleast_2d(grad)
    c = grad.shape[1]
    raw = (1.0 / c - grad) if estimator == "uniform" else -grad
    if weight_update is not None:
        weight = sign * np.asarray(weight_update, dtype=np.float64).reshape(len(grad), c, -1)
        silent = ~grad.any(axis=1)
        raw[silent] = -weight[silent].sum(axis=2)
    raw = np.clip(np.nan_to_num(raw, nan=0.0), 0.0, None)
    total = raw.sum(axis=1, keepdims=True)
    out = np.where(total > 0, raw / np.where(total > 0, total, 1.0), 1.0 / c)
    return out[0] if single else out


def counts_from_mean_probs(
    bias_update: np.ndarray, mean_probs: np.ndarray, *, num_samples: int, kind: str
) -> np.ndarray:
    """Counts ``n = B (pbar - db)`` for a known or estimated batch-mean softmax ``pbar``, rounded to sum ``B``.

    Exact (after rounding) whenever ``pbar`` is within ``1 / (2 B)`` of the
    truth in every class (:func:`round_counts`). Needs the gradient's scale: a ``"delta"`` update is refused.

    Examples
    --------
    >>> counts_from_mean_probs(np.array([0.1, -0.15, 0.05, 0.0]), np.array([0.35, 0.35, 0.05, 0.25]),
    ...                        num_samples=4, kind="gradient").tolist()
    [1, 2, 0, 1]
    """
    grad, _ = _check(bias_update, num_samples, kind)
    if kind == "delta":
        raise InvalidParameterError(
            "A raw parameter delta has no gradient scale; use label_counts (the 'present-share' estimator)."
        )
    probs = np.asarray(mean_probs, dtype=np.float64)
    if probs.shape != grad.shape:
        raise InvalidParameterError(f"mean_probs must have shape {grad.shape}; got {probs.shape}.")
    return round_counts(int(num_samples) * (probs - grad), int(num_samples))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def model_class_shares(
    weight_update: np.ndarray, bias_update: np.ndarray, global_weight: np.ndarray, global_bias: np.ndarray,
    *, iterations: int = 30,
) -> np.ndarray:
    """Class shares ``n / B`` of one gradient-scaled update, with the global output layer (the ``"model"`` estimator).

    Parameters
    ----------
    weight_update, bias_update
        The output layer's update with the gradient's sign and scale, ``(C, h)`` and ``(C,)``.
    global_weight, global_bias
        The output layer of the global model the client started from.
    iterations
        Alternations of the two least-squares steps (module docstring).

    Returns
    -------
    numpy.ndarray
        Non-negative shares, shape ``(C,)``, summing to 1.
    """
    db = np.asarray(bias_update, dtype=np.float64)
    dw = np.asarray(weight_update, dtype=np.float64)
    w = np.asarray(global_weight, dtype=np.float64)
    b = np.asarray(global_bias, dtype=np.float64)
    c = len(db)
    eye = np.eye(c)
    denom = float(db @ db)
    if denom <= 0:
        return np.full(c, 1.0 / c)
    h = (db @ dw) / denom  # one activation shared by the whole batch
    q = np.tile(_softmax(w @ h + b), (c, 1))
    m = np.tile(h, (c, 1))
    f = np.clip(q[0] - db, 0.0, None)
    f = f / f.sum() if f.sum() > 0 else np.full(c, 1.0 / c)
    scale_w, scale_b = float((dw * dw).sum()) or 1.0, denom
    weight_sum = 10.0  # weight of the constraint sum f = 1 in the least squares

    def residual(f: np.ndarray, q: np.ndarray, m: np.ndarray) -> float:
        a = f[:, None] * (q - eye)  # a[k, c] = f_k (q_kc - [k = c])
        with np.errstate(over="ignore", invalid="ignore"):
            r = float(((dw - a.T @ m) ** 2).sum() / scale_w + ((db - (q.T - eye) @ f) ** 2).sum() / scale_b)
        return r if np.isfinite(r) else np.inf

    best, best_f = residual(f, q, m), f
    for _ in range(iterations):  # the fixed point can be unstable for a confident model: keep the best fit
        a = f[:, None] * (q - eye)
        m = np.linalg.lstsq(a.T, dw, rcond=None)[0]  # representative activation of each class
        present = f > 1e-3  # an absent class's activation is not identified: keep its probabilities
        with np.errstate(over="ignore", invalid="ignore"):
            fresh = _softmax(m @ w.T + b)
        q = np.where(present[:, None] & np.isfinite(fresh), fresh, q)
        g = np.vstack([q.T - eye, np.full((1, c), weight_sum)])
        f = np.linalg.lstsq(g, np.concatenate([db, [weight_sum]]), rcond=None)[0]
        f = np.clip(f, 0.0, None)
        f = f / f.sum() if f.sum() > 0 else np.full(c, 1.0 / c)
        r = residual(f, q, m)
        if r < best - 1e-9:  # a confident model fits many shares equally: move only on a real gain
            best, best_f = r, f
    return best_f


def output_layer(parameter_shapes: Mapping[str, tuple[int, ...]], n_classes: int) -> str:
    """The output layer: the last layer whose weight is ``(n_classes, h)`` and bias ``(n_classes,)``."""
    layers = list(dict.fromkeys(p.rsplit(".", 1)[0] for p in parameter_shapes))
    for layer in reversed(layers):
        w, b = parameter_shapes.get(f"{layer}.weight"), parameter_shapes.get(f"{layer}.bias")
        if w is not None and b is not None and len(w) == 2 and tuple(b) == (n_classes,) and w[0] == n_classes:
            return layer
        break  # only the last layer can be the output layer
    raise InvalidParameterError(
        f"The last layer of this architecture ({layers[-1] if layers else 'none'}) is not an output layer of "
        f"{n_classes} classes with a weight and a bias; label counts read such a layer."
    )


@register_reconstruction
class LabelCounts(ReconstructionMethod):
    """Label counts of each update from its output layer (``"labels"``), with a choice of estimator.

    Parameters
    ----------
    estimator
        ``"auto"`` (``"model"`` when the update comes with the round's global
        weights and has gradient scale, else what :func:`label_counts` does:
        ``"uniform"``), ``"uniform"``, ``"present-share"`` or ``"model"``
        (module docstring).

    Notes
    -----
    ``Reconstruction.info["estimator"]`` is the index in :data:`ESTIMATORS` of
    the estimator that produced the counts.

    Examples
    --------
    >>> method = LabelCounts().prepare(ReconstructionContext.from_store(store))  # doctest: +SKIP
    >>> [r.label_counts for r in method.reconstruct_many(observed_updates(store, rows))]  # doctest: +SKIP
    """

    name: ClassVar[str] = "labels"
    produces: ClassVar[frozenset[str]] = frozenset({"labels"})

    def __init__(self, *, estimator: str = "auto") -> None:
        self.estimator = estimator

    def prepare(self, context: ReconstructionContext) -> LabelCounts:
        if self.estimator not in ESTIMATORS:
            raise InvalidParameterError(
                f"The 'estimator' parameter of LabelCounts must be one of {list(ESTIMATORS)}. "
                f"Got {self.estimator!r} instead."
            )
        self.layer_ = output_layer(context.parameter_shapes, context.n_classes)
        super().prepare(context)
        return self

    def estimator_for(self, update: ObservedUpdate) -> str:
        """The estimator this method applies to ``update`` (a one-sample update always gets iDLG's exact rule)."""
        if update.num_samples == 1:
            return "uniform"  # label_counts: iDLG for one sample, whatever the estimator
        if self.estimator != "auto":
            return self.estimator
        if update.global_weights is not None and update.kind != "delta":
            return "model"
        return "uniform"

    def reconstruct(self, update: ObservedUpdate) -> Reconstruction:
        layer = getattr(self, "layer_", None)
        if layer is None:
            raise InvalidParameterError("LabelCounts.prepare(context) must be called before reconstruct().")
        weight, bias = update.arrays[f"{layer}.weight"], update.arrays[f"{layer}.bias"]
        estimator = self.estimator_for(update)
        n = update.num_samples
        if estimator == "uniform":
            counts = label_counts(weight, bias, num_samples=n, kind=update.kind)
        elif estimator == "present-share":
            counts = present_share_counts(bias, num_samples=n, kind=update.kind)
        else:
            if update.global_weights is None:
                raise InvalidParameterError(
                    "The 'model' estimator needs the round's global weights; record with store_globals "
                    "(FedAvg recordings hold them) or choose estimator='uniform'."
                )
            if update.kind == "delta":
                raise InvalidParameterError(
                    "The 'model' estimator needs an update with gradient scale; a raw parameter delta has none."
                )
            shares = model_class_shares(
                weight, bias, update.global_weights[f"{layer}.weight"], update.global_weights[f"{layer}.bias"]
            )
            counts = round_counts(n * shares, n)
        return Reconstruction(
            method=self.name, row=update.row, client_id=update.client_id, server_round=update.server_round,
            label_counts=counts, info={"estimator": float(ESTIMATORS.index(estimator))},
        )
