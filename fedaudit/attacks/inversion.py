"""The inversion attack: recover the client's input features from its first-layer update, no shadow FL.

From the first-layer update, :class:`InversionAttack` (``"inversion"``)
recovers the mixture of the client's input features it contains
(:func:`~fedaudit.attacks.update_statistics.inversion_vector`) and classifies
its gender with a model trained on public acoustic features only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fedaudit.attacks._data import ShadowRows, grouped_split
from fedaudit.attacks.base import Attack, AttackerKnowledge, ShapeMismatchError, gender_labels, register_attack
from fedaudit.attacks.stats import _Linear, fit_logistic
from fedaudit.attacks.update_statistics import inversion_vector
from fedaudit.exceptions import InvalidParameterError

if TYPE_CHECKING:
    from fedaudit.record.reader import UpdateStore

__all__ = ["InversionAttack"]


@register_attack
class InversionAttack(Attack):
    """Invert the first-layer update to the client's feature mixture; classify it with public data.

    The attacker needs no shadow federated training: it fits a gender
    classifier on public utterance features, normalised the way the target run
    normalises its inputs (``target_config["normalization"]``, ``"global"`` when
    unknown), aggregated as the gradient aggregates them (means of random
    same-speaker batches). On a target update it computes
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
        As for :class:`~fedaudit.attacks.stats.StatsAttack` (validation is split by speaker).

    Attributes
    ----------
    model_ : object
        The fitted logistic regression on ``v``.
    normalization_ : str
        The normalisation the public features were given (the target's).
    n_features_ : int
        Number of input features (the width of the input layer).

    Examples
    --------
    >>> data = AttackerKnowledge(public=public_table, target_config=target.config)  # doctest: +SKIP
    >>> InversionAttack(seed=0).fit(data).score(target).asr  # doctest: +SKIP
    """

    name = "inversion"
    needs_public = True
    layers_read = "input"

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

    def get_params(self) -> dict[str, Any]:
        params = super().get_params()
        params["batch_sizes"] = [int(b) for b in params["batch_sizes"]]
        return params

    def _fit(self, data: AttackerKnowledge) -> None:
        from fedaudit.data.normalize import normalize_features

        table = data.public
        assert table is not None  # needs_public: checked by fit()
        feature_set = data.target_feature_set
        if feature_set is not None and feature_set != table.feature_set:
            raise InvalidParameterError(
                f"The target was trained on {feature_set} features but the public features are "
                f"{table.feature_set}; extract the public corpus with the target's feature set."
            )
        normalization = data.target_normalization
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
        self.model_, fit_info = fit_logistic(x, y, train=train, val=val, clip=self.clip, seed=self.seed)
        fit_info["normalization"] = normalization
        fit_info["public_corpora"] = sorted(set(table.corpus.tolist()))
        fit_info["n_speakers"] = len(table.speakers)
        self.normalization_ = normalization
        self.n_features_ = table.n_features
        self.parameters_ = [f"{self.layer}.weight", f"{self.layer}.bias"]
        self.shapes_ = {}  # the hidden width is the target's own: only the input width is checked
        self.layers_ = [self.layer]
        self.fit_info_ = fit_info

    def _check_updates(self, updates: Mapping[str, np.ndarray]) -> None:
        super()._check_updates(updates)
        w = updates[f"{self.layer}.weight"]
        if w.shape[-1] != self.n_features_:
            raise ShapeMismatchError(
                f"The target's {self.layer}.weight has {w.shape[-1]} inputs but the inversion attack was fitted on "
                f"{self.n_features_} features; fit it on public features of the target's feature set."
            )

    def _predict_proba(self, updates: Mapping[str, np.ndarray]) -> np.ndarray:
        v = inversion_vector(updates[f"{self.layer}.weight"], updates[f"{self.layer}.bias"])
        p_m = self.model_.p_male(v)
        return np.stack([1 - p_m, p_m], axis=1)

    def check_store(self, store: UpdateStore) -> None:
        super().check_store(store)
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
                f"{self.normalization_!r}; refit it with the target's configuration "
                f"(normalization={target_norm!r})."
            )

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return self.model_.tensors("clf"), {"normalization": self.normalization_, "n_features": self.n_features_}

    def _load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        self.model_ = _Linear.from_tensors(tensors, "clf", self.clip)
        self.normalization_ = str(meta["normalization"])
        self.n_features_ = int(meta["n_features"])
        if not self.fit_info_ and "fit_info" in meta:  # older cards kept it in the state only
            self.fit_info_ = dict(meta["fit_info"])
