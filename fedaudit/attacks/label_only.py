"""The label-only baseline: gender guessed from nothing but the label mix each update reveals.

An attack on updates may read the emotions a client trained on rather than its
voice: when a corpus's women and men act different emotion mixes, the label
histogram alone predicts gender. :class:`LabelOnlyAttack` (``"label-only"``)
measures how far that confound goes. It sees, of each update, only the class
shares inferred from the output layer
(:func:`~fedaudit.attacks.reconstruct.labels.label_histograms`), and fits the
logistic regression of the ``stats`` attack on them with the same shadow
recordings and the same client-grouped validation. An attack whose ASR the
baseline matches may be reading labels, not speakers; the report shows every attack beside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from fedaudit.attacks._data import check_same_architecture, grouped_split, iter_blocks, shadow_rows
from fedaudit.attacks.base import Attack, AttackerKnowledge, register_attack
from fedaudit.attacks.reconstruct.labels import label_histograms, output_layer
from fedaudit.attacks.stats import _Linear, fit_logistic
from fedaudit.exceptions import InvalidParameterError

__all__ = ["LabelOnlyAttack"]

_ESTIMATORS = ("uniform", "present-share")


@register_attack
class LabelOnlyAttack(Attack):
    """Logistic regression on the label histogram inferred from each update's output layer.

    The baseline that separates label confounds from gender leakage: what an
    attacker gets from the emotion mix alone. The label inference is the
    analytic one of Wainakh et al. (PETS 2022, LLG) and Geng et al. (2021):
    class shares ``n_c / B = pbar_c - db_c`` with a uniform prior ``pbar``
    (``estimator="uniform"``) or LLG's rule (``"present-share"``).

    The attack interface hands an attack parameter arrays only, so the
    features are the class shares (a histogram that sums to 1), not integer
    counts: rounding would need each update's sample count, which the arrays
    do not carry. The sample count is thus no input either: in FedSGD it is
    the batch size for every client, in FedAvg the client's data size.

    Parameters
    ----------
    estimator
        ``"uniform"`` (gradient scale needed; FedSGD gradients and FedAvg
        pseudo-gradients have it) or ``"present-share"`` (scale-free).
    val_fraction
        Share of shadow clients held out to choose the regularisation.
    clip
        Standardised features are clipped to ``[-clip, clip]``.
    seed
        Seed of the validation split and the solver.

    Attributes
    ----------
    model_ : object
        The fitted logistic regression.
    n_classes_ : int
        Classes of the output layer.
    n_shadow_updates_ : int
        Shadow updates the attack was fitted on.

    Examples
    --------
    >>> attack = LabelOnlyAttack(seed=0).fit(AttackerKnowledge(shadows=shadow_stores))  # doctest: +SKIP
    >>> attack.score(target).asr  # doctest: +SKIP
    """

    name = "label-only"
    needs_shadow = True
    per_layer = False
    layers_read = "all"

    def __init__(
        self, *, estimator: str = "uniform", val_fraction: float = 0.2, clip: float = 10.0, seed: int = 0
    ) -> None:
        self.estimator = estimator
        self.val_fraction = val_fraction
        self.clip = clip
        self.seed = seed

    def _check_params(self) -> None:
        if self.estimator not in _ESTIMATORS:
            raise InvalidParameterError(
                f"The 'estimator' parameter of LabelOnlyAttack must be one of {list(_ESTIMATORS)}. "
                f"Got {self.estimator!r} instead."
            )
        if not 0.0 < self.val_fraction < 1.0:
            raise InvalidParameterError(
                "The 'val_fraction' parameter of LabelOnlyAttack must be a float in (0, 1). "
                f"Got {self.val_fraction!r} instead."
            )

    def features(self, updates: Mapping[str, np.ndarray]) -> np.ndarray:
        """Inferred class shares ``(n, n_classes)`` of updates given as parameter arrays."""
        layer = self.layers_[0]
        return label_histograms(updates[f"{layer}.weight"], updates[f"{layer}.bias"], estimator=self.estimator)

    def _fit(self, data: AttackerKnowledge) -> None:
        self._check_params()
        shadows = data.shadows
        first = shadows[0]
        n_classes = int(first.config.get("n_classes", 4))
        layer = output_layer({p: tuple(first.shape(p)) for p in first.parameter_names}, n_classes)
        params = [f"{layer}.weight", f"{layer}.bias"]
        shapes = check_same_architecture(shadows, params)
        rows = shadow_rows(shadows)
        train, val = grouped_split(rows, val_fraction=self.val_fraction, seed=self.seed)
        self.layers_ = [layer]  # features() reads it; set again below with the rest
        x = np.empty((len(rows), n_classes))
        for pos, block in iter_blocks(shadows, rows, params):
            x[pos] = self.features(block)
        model, info = fit_logistic(x, rows.y, train=train, val=val, clip=self.clip, seed=self.seed)
        by_gender = {g: x[rows.y == k].mean(axis=0).round(4).tolist() for k, g in enumerate(("F", "M"))}
        self.parameters_ = params
        self.shapes_ = shapes
        self.layers_ = [layer]
        self.fit_info_ = {**info, "mean_histogram_by_gender": by_gender, "n_shadow_updates": len(rows)}
        self.model_ = model
        self.n_classes_ = n_classes
        self.n_shadow_updates_ = len(rows)

    def _predict_proba(self, updates: Mapping[str, np.ndarray]) -> np.ndarray:
        p_m = self.model_.p_male(self.features(updates))
        return np.stack([1.0 - p_m, p_m], axis=1)

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return self.model_.tensors("clf"), {"n_classes": self.n_classes_, "n_shadow_updates": self.n_shadow_updates_}

    def _load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        self._check_params()
        self.model_ = _Linear.from_tensors(tensors, "clf", self.clip)
        self.n_classes_ = int(meta["n_classes"])
        self.n_shadow_updates_ = int(meta["n_shadow_updates"])
