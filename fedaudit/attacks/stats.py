"""Fast gender inference attacks that exploit the structure of layer updates.

Two attacks of fedaudit's own, much cheaper than the CNN of the publication:

* :class:`StatsAttack` (``"stats"``): per layer, statistics of the update that
  do not depend on the order of hidden units (see
  :func:`~fedaudit.attacks.features.layer_statistics`), a logistic regression
  per layer fitted on shadow recordings, and fusion of the layers weighted by
  update size as in Feng et al. (Interspeech 2022).
* :class:`InversionAttack` (``"inversion"``): recovers from the first-layer
  update the mixture of the client's input features it contains
  (:func:`~fedaudit.attacks.features.inversion_vector`) and classifies its
  gender with a model trained on public features only: no shadow FL at all.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Self

import numpy as np
import torch

from fedaudit.attacks._data import (
    ShadowRows,
    check_same_architecture,
    fusion_weights,
    grouped_split,
    iter_blocks,
    shadow_rows,
)
from fedaudit.attacks.base import (
    Attack,
    InvalidParameterError,
    ShapeMismatchError,
    check_is_fitted,
    gender_labels,
    register_attack,
    resolve_layers,
)
from fedaudit.attacks.features import inversion_vector, layer_statistics
from fedaudit.metrics.basic import uar

__all__ = ["InversionAttack", "StatsAttack", "fit_logistic"]

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


@register_attack
class StatsAttack(Attack):
    """Logistic regression on order-invariant statistics of each layer update, fused by layer size.

    Parameters
    ----------
    layers
        Layers to attack (names such as ``"fc1"``); ``None`` takes every layer.
    val_fraction
        Share of shadow clients held out to choose the regularisation.
    clip
        Standardised features are clipped to ``[-clip, clip]``.
    seed
        Seed of the validation split and the solver.
    """

    name = "stats"

    def __init__(
        self, *, layers: Sequence[str] | None = None, val_fraction: float = 0.2, clip: float = 10.0, seed: int = 0
    ) -> None:
        self.layers = layers
        self.val_fraction = val_fraction
        self.clip = clip
        self.seed = seed

    def fit(self, shadows: Sequence[Any]) -> Self:
        if not 0.0 < self.val_fraction < 1.0:
            raise InvalidParameterError(f"val_fraction must be in (0, 1). Got {self.val_fraction!r}.")
        layers = resolve_layers(self.layers, shadows[0].layers if shadows else [])
        params = [f"{layer}.{p}" for layer in layers for p in ("weight", "bias")]
        self.shapes_ = check_same_architecture(shadows, params)
        self.parameters_ = params
        rows = shadow_rows(shadows)
        train, val = grouped_split(rows, val_fraction=self.val_fraction, seed=self.seed)
        feats = {layer: None for layer in layers}
        for pos, block in iter_blocks(shadows, rows, params):
            for layer in layers:
                f = layer_statistics(block[f"{layer}.weight"], block[f"{layer}.bias"])
                if feats[layer] is None:
                    feats[layer] = np.empty((len(rows), f.shape[1]))
                feats[layer][pos] = f
        self.models_: dict[str, _Linear] = {}
        self.fit_info_: dict[str, Any] = {}
        for layer in layers:
            self.models_[layer], self.fit_info_[layer] = fit_logistic(
                feats[layer], rows.y, train=train, val=val, clip=self.clip, seed=self.seed
            )
        names = {layer: {p: f"{layer}.{p}" for p in ("weight", "bias")} for layer in layers}
        self.fusion_weights_ = fusion_weights(layers, self.shapes_, names)
        self.layers_ = list(layers)
        self.n_shadow_updates_ = len(rows)
        self.fitted_ = True
        return self

    def layer_proba(self, updates: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{layer: (n, 2)}`` probabilities of ("F", "M") from each layer alone."""
        check_is_fitted(self)
        out = {}
        for layer in self.layers_:
            f = layer_statistics(updates[f"{layer}.weight"], updates[f"{layer}.bias"])
            p_m = self.models_[layer].p_male(f)
            out[layer] = np.stack([1 - p_m, p_m], axis=1)
        return out

    def _predict_proba(self, updates: Mapping[str, np.ndarray]) -> np.ndarray:
        per_layer = self.layer_proba(updates)
        weights = np.array([self.fusion_weights_[layer] for layer in per_layer])
        stacked = np.stack(list(per_layer.values()))
        return np.tensordot(weights / weights.sum(), stacked, axes=1)

    def restricted(self, layers: Sequence[str]) -> StatsAttack:
        """The same fitted attack, predicting from ``layers`` only (layer-wise leakage)."""
        check_is_fitted(self)
        unknown = [layer for layer in layers if layer not in self.models_]
        if unknown:
            raise InvalidParameterError(f"Layers {unknown} were not fitted; this attack has {sorted(self.models_)}.")
        clone = copy.copy(self)
        clone.layers_ = list(layers)
        clone.parameters_ = [f"{layer}.{p}" for layer in layers for p in ("weight", "bias")]
        return clone

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors: dict[str, torch.Tensor] = {}
        for layer, model in self.models_.items():
            tensors.update(model.tensors(layer))
        meta = {"fusion_weights": self.fusion_weights_, "fit_info": self.fit_info_, "layers": list(self.models_),
                "use_layers": self.layers_, "n_shadow_updates": self.n_shadow_updates_}
        return tensors, meta

    def _load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        self.models_ = {layer: _Linear.from_tensors(tensors, layer, self.clip) for layer in meta["layers"]}
        self.fusion_weights_ = dict(meta["fusion_weights"])
        self.fit_info_ = dict(meta["fit_info"])
        self.layers_ = list(meta["use_layers"])
        self.n_shadow_updates_ = int(meta["n_shadow_updates"])


@register_attack
class InversionAttack(Attack):
    """Invert the first-layer update to the client's feature mixture; classify it with public data.

    The attacker needs no shadow federated training: it fits a gender
    classifier on public utterance features, normalised the way the target run
    normalises its inputs, aggregated as the gradient aggregates them (means
    of random same-speaker batches). On a target update it computes
    ``v = db1^T dW1 / |db1|^2``, a weighted mixture of the client's own
    (normalised) features, and classifies ``v``.

    Parameters
    ----------
    layer
        The input layer's name.
    batch_sizes
        Sizes of the same-speaker mixtures the classifier is trained on.
    draws_per_speaker
        Mixtures drawn per speaker and batch size.
    val_fraction, clip, seed
        As for :class:`StatsAttack` (validation is split by speaker).
    """

    name = "inversion"

    def __init__(
        self, *, layer: str = "fc1", batch_sizes: Sequence[int] = (1, 5, 20, 50), draws_per_speaker: int = 40,
        val_fraction: float = 0.2, clip: float = 10.0, seed: int = 0,
    ) -> None:
        self.layer = layer
        self.batch_sizes = batch_sizes
        self.draws_per_speaker = draws_per_speaker
        self.val_fraction = val_fraction
        self.clip = clip
        self.seed = seed

    def fit(self, shadows: Any, *, normalization: str = "global") -> Self:  # type: ignore[override]
        """Fit on public feature table(s) (not recordings): ``shadows`` is a FeatureTable or a list of them."""
        from fedaudit.data.normalize import normalize_features
        from fedaudit.data.table import FeatureTable

        tables = [shadows] if isinstance(shadows, FeatureTable) else list(shadows)
        table = FeatureTable.concat(tables)
        table = normalize_features(table, method=normalization, train_mask=np.ones(len(table), bool))
        rng = np.random.default_rng(self.seed)
        xs, ys, groups = [], [], []
        labels = gender_labels(table.gender)
        for g, spk in enumerate(table.speakers):
            rows = np.flatnonzero(table.speaker_id == spk)
            for b in self.batch_sizes:
                k = min(int(b), len(rows))
                picks = np.stack([rng.choice(rows, size=k, replace=False) for _ in range(self.draws_per_speaker)])
                weights = rng.dirichlet(np.ones(k), size=self.draws_per_speaker) if k > 1 else np.ones((self.draws_per_speaker, 1))
                xs.append(np.einsum("dk,dkf->df", weights, table.x[picks].astype(np.float64)))
                ys.append(np.full(self.draws_per_speaker, labels[rows[0]]))
                groups.append(np.full(self.draws_per_speaker, g))
        x, y, group = np.concatenate(xs), np.concatenate(ys), np.concatenate(groups)
        by_speaker = ShadowRows(store_index=np.zeros_like(y), row=np.arange(len(y)), y=y, group=group)
        train, val = grouped_split(by_speaker, val_fraction=self.val_fraction, seed=[self.seed, 1])
        self.model_, self.fit_info_ = fit_logistic(x, y, train=train, val=val, clip=self.clip, seed=self.seed)
        self.fit_info_["normalization"] = normalization
        self.fit_info_["public_corpora"] = sorted(set(table.corpus.tolist()))
        self.fit_info_["n_speakers"] = len(table.speakers)
        self.normalization_ = normalization
        self.n_features_ = table.n_features
        self.parameters_ = [f"{self.layer}.weight", f"{self.layer}.bias"]
        self.shapes_ = {}
        self.fitted_ = True
        return self

    def predict_proba(self, updates: Mapping[str, np.ndarray]) -> np.ndarray:
        check_is_fitted(self)
        w = updates[f"{self.layer}.weight"]
        if w.shape[-1] != self.n_features_:
            raise ShapeMismatchError(
                f"The target's {self.layer}.weight has {w.shape[-1]} inputs but the inversion attack was fitted on "
                f"{self.n_features_} features; fit it on public features of the target's feature set."
            )
        return self._predict_proba(updates)

    def _predict_proba(self, updates: Mapping[str, np.ndarray]) -> np.ndarray:
        v = inversion_vector(updates[f"{self.layer}.weight"], updates[f"{self.layer}.bias"])
        p_m = self.model_.p_male(v)
        return np.stack([1 - p_m, p_m], axis=1)

    def layer_proba(self, updates: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {self.layer: self.predict_proba(updates)}

    def check_store(self, store: Any) -> None:
        check_is_fitted(self)
        shape = tuple(store.shape(f"{self.layer}.weight"))
        if shape[-1] != self.n_features_:
            raise ShapeMismatchError(
                f"{store.path} has {self.layer}.weight of shape {shape}, but the inversion attack was fitted on "
                f"{self.n_features_} input features; fit it on public features of the target's feature set."
            )
        target_norm = store.config.get("normalization")
        if target_norm is not None and target_norm != self.normalization_:
            raise InvalidParameterError(
                f"{store.path} normalises features with {target_norm!r} but the inversion attack was fitted with "
                f"{self.normalization_!r}; refit it with normalization={target_norm!r}."
            )

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return self.model_.tensors("clf"), {"fit_info": self.fit_info_, "normalization": self.normalization_,
                                            "n_features": self.n_features_}

    def _load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        self.model_ = _Linear.from_tensors(tensors, "clf", self.clip)
        self.fit_info_ = dict(meta["fit_info"])
        self.normalization_ = str(meta["normalization"])
        self.n_features_ = int(meta["n_features"])
