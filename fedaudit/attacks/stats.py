"""The stats attack: logistic regression on update statistics of each layer, fused by layer size.

:class:`StatsAttack` (``"stats"``) is fedaudit's own attack, much cheaper than
the CNN of the publication: per layer of any type (linear, Conv1d, LSTM, ...),
update statistics that do not depend on the order of its units
(:func:`~fedaudit.attacks.update_statistics.update_statistics`),
a logistic regression per layer fitted on shadow recordings, and fusion of the
layers weighted by update size as in Feng et al. (Interspeech 2022).
:func:`fit_logistic` is the classifier it shares with the inversion attack.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from fedaudit.attacks._data import check_same_architecture, grouped_split, iter_blocks, shadow_rows
from fedaudit.attacks.base import (
    Attack,
    AttackerKnowledge,
    layer_of,
    layer_parameters,
    register_attack,
    resolve_layers,
)
from fedaudit.attacks.update_statistics import update_statistics
from fedaudit.exceptions import InvalidParameterError
from fedaudit.metrics.basic import uar

__all__ = ["StatsAttack", "fit_logistic"]

logger = logging.getLogger(__name__)

_C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


class _Linear:
    """Standardise, clip, then logistic regression: all state is plain arrays."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, coef: np.ndarray, intercept: float, clip: float) -> None:
        self.mean, self.std, self.coef, self.intercept, self.clip = mean, std, coef, float(intercept), float(clip)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.clip((x - self.mean) / self.std, -self.clip, self.clip)

    def p_male(self, x: np.ndarray) -> np.ndarray:
        return _sigmoid(self.transform(x) @ self.coef + self.intercept)

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}.mean": torch.from_numpy(self.mean), f"{prefix}.std": torch.from_numpy(self.std),
            f"{prefix}.coef": torch.from_numpy(self.coef), f"{prefix}.intercept": torch.tensor([self.intercept], dtype=torch.float64),
        }

    @classmethod
    def from_tensors(cls, t: Mapping[str, torch.Tensor], prefix: str, clip: float) -> _Linear:
        return cls(
            t[f"{prefix}.mean"].numpy(), t[f"{prefix}.std"].numpy(), t[f"{prefix}.coef"].numpy(),
            float(t[f"{prefix}.intercept"].item()), clip,
        )


def fit_logistic(
    x: np.ndarray, y: np.ndarray, *, train: np.ndarray, val: np.ndarray, clip: float, seed: int,
    c_grid: Sequence[float] = _C_GRID,
) -> tuple[_Linear, dict[str, Any]]:
    """Pick the regularisation on the validation rows, then refit on all rows."""
    from sklearn.linear_model import LogisticRegression

    def fit(rows: np.ndarray, c: float) -> _Linear:
        mean = x[rows].mean(axis=0)
        std = x[rows].std(axis=0)
        std[std < 1e-12] = 1.0
        z = np.clip((x[rows] - mean) / std, -clip, clip)
        model = LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(z, y[rows])
        return _Linear(mean, std, model.coef_[0].astype(np.float64), float(model.intercept_[0]), clip)

    scores: dict[float, float] = {}
    if val.any() and len(np.unique(y[train])) == 2:
        for c in c_grid:
            model = fit(train, c)
            scores[c] = uar(y[val], (model.p_male(x[val]) >= 0.5).astype(int))
        best_c = max(scores, key=lambda c: (scores[c], -c))
    else:
        best_c = c_grid[len(c_grid) // 2]
    if len(np.unique(y)) < 2:
        raise InvalidParameterError("The training data hold one gender only; the attack needs both.")
    final = fit(np.ones(len(y), bool), best_c)
    return final, {"C": best_c, "val_uar_by_C": {str(k): v for k, v in scores.items()},
                   "val_uar": scores.get(best_c, float("nan"))}


def _layer_arrays(updates: Mapping[str, np.ndarray], params: Sequence[str], layer: str) -> dict[str, np.ndarray]:
    """``{"weight": ..., "bias": ...}`` of one layer, keyed by the name inside the layer."""
    return {p[len(layer) + 1 :]: updates[p] for p in params if layer_of(p) == layer}


@register_attack
class StatsAttack(Attack):
    """Logistic regression on order-invariant update statistics of each layer, fused by layer size.

    Every layer of the recording is read with all its parameters (a linear or
    Conv1d layer's weight and bias, an LSTM's four tensors); the statistics of
    each layer type are defined in :mod:`fedaudit.attacks.update_statistics`.

    Fusion by update size follows Feng et al., "Attribute inference attack of
    speech emotion recognition in federated learning settings" (Interspeech
    2022), https://arxiv.org/abs/2112.13416; the update statistics are
    fedaudit's own (``docs/attacks.md``).

    Parameters
    ----------
    layers
        Layers to attack (names such as ``"fc1"``, or 1-based numbers); ``None`` takes every layer.
    val_fraction
        Share of shadow clients held out to choose the regularisation.
    clip
        Standardised statistics are clipped to ``[-clip, clip]``.
    seed
        Seed of the validation split and the solver.

    Attributes
    ----------
    models_ : dict
        One fitted logistic regression per layer.
    n_shadow_updates_ : int
        Shadow updates the attack was fitted on.

    Examples
    --------
    >>> attack = StatsAttack(seed=0).fit(AttackerKnowledge(shadows=shadow_stores))  # doctest: +SKIP
    >>> attack.score(target).asr  # doctest: +SKIP
    """

    name = "stats"
    needs_shadow = True
    per_layer = True
    layers_read = "all"

    def __init__(
        self, *, layers: Sequence[str] | None = None, val_fraction: float = 0.2, clip: float = 10.0, seed: int = 0
    ) -> None:
        self.layers = layers
        self.val_fraction = val_fraction
        self.clip = clip
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        params = super().get_params()
        if params["layers"] is not None:
            params["layers"] = list(params["layers"])
        return params

    def _fit(self, data: AttackerKnowledge) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise InvalidParameterError(
                "The 'val_fraction' parameter of StatsAttack must be a float in (0, 1). "
                f"Got {self.val_fraction!r} instead."
            )
        shadows = data.shadows
        layers = resolve_layers(self.layers, shadows[0].layers)
        params = [p for layer in layers for p in layer_parameters(shadows[0].parameter_names, layer)]
        shapes = check_same_architecture(shadows, params)
        rows = shadow_rows(shadows)
        train, val = grouped_split(rows, val_fraction=self.val_fraction, seed=self.seed)
        stats: dict[str, np.ndarray] = {}
        for pos, block in iter_blocks(shadows, rows, params):
            for layer in layers:
                f = update_statistics(_layer_arrays(block, params, layer))
                if layer not in stats:
                    stats[layer] = np.empty((len(rows), f.shape[1]))
                stats[layer][pos] = f
        models: dict[str, _Linear] = {}
        fit_info: dict[str, Any] = {}
        for layer in layers:
            models[layer], fit_info[layer] = fit_logistic(
                stats[layer], rows.y, train=train, val=val, clip=self.clip, seed=self.seed
            )
        self.parameters_ = params
        self.shapes_ = shapes
        self.layers_ = list(layers)
        self.fit_info_ = fit_info
        self.models_ = models
        self.n_shadow_updates_ = len(rows)

    def _layer_proba(self, updates: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for layer in self.layers_:
            f = update_statistics(_layer_arrays(updates, self.parameters_, layer))
            p_m = self.models_[layer].p_male(f)
            out[layer] = np.stack([1 - p_m, p_m], axis=1)
        return out

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors: dict[str, torch.Tensor] = {}
        for layer, model in self.models_.items():
            tensors.update(model.tensors(layer))
        return tensors, {"layers": list(self.models_), "n_shadow_updates": self.n_shadow_updates_}

    def _load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        self.models_ = {layer: _Linear.from_tensors(tensors, layer, self.clip) for layer in meta["layers"]}
        self.n_shadow_updates_ = int(meta["n_shadow_updates"])
        if not self.fit_info_ and "fit_info" in meta:  # older cards kept it in the state only
            self.fit_info_ = dict(meta["fit_info"])
