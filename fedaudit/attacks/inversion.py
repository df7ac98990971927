"""The inversion attack: recover the client's inputs from its input-layer update, no shadow FL.

From the input-layer update, :class:`InversionAttack` (``"inversion"``)
recovers the mixture of the client's inputs it contains
(:func:`~fedaudit.attacks.update_statistics.input_mixture`): its utterance
features for a linear input layer, an error-weighted mixture of its input
patches for a Conv1d input layer, of its frames for an LSTM. It classifies the
mixture's gender with a model trained on public acoustic features only, turned
into the same kind of mixture (of utterances, patches or frames).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fedaudit.attacks._data import ShadowRows, grouped_split
from fedaudit.attacks.base import (
    Attack,
    AttackerKnowledge,
    ShapeMismatchError,
    gender_labels,
    layer_of,
    register_attack,
)
from fedaudit.attacks.stats import _Linear, fit_logistic
from fedaudit.attacks.update_statistics import input_mixture, layer_kind, recurrent_cells
from fedaudit.exceptions import InvalidParameterError

if TYPE_CHECKING:
    from fedaudit.data.table import FeatureTable
    from fedaudit.record.reader import UpdateStore

__all__ = ["InversionAttack", "input_layer_plan", "public_mixtures"]

#: What the mixture of each kind of input layer is made of.
_MIXTURE_OF = {"linear": "utterances", "conv": "patches", "recurrent": "frames"}


def input_layer_plan(shapes: Mapping[str, Sequence[int]], layer: str) -> dict[str, Any]:
    """What the inversion reads from an input layer: its kind, parameters and the mixture's width.

    Parameters
    ----------
    shapes
        Parameter shapes of the model (``{"conv1.weight": (32, 13, 5), ...}``).
    layer
        The input layer's name.

    Returns
    -------
    dict
        ``kind`` (``"linear"``, ``"conv"`` or ``"recurrent"``), ``parameters``
        (full names), ``width`` (values of the mixture), and ``kernel`` (conv:
        the kernel size) or ``frame_width`` (conv, recurrent: values per frame).

    Raises
    ------
    InvalidParameterError
        If the layer is unknown or has no input-mixture identity.
    """
    own = {p[len(layer) + 1 :]: tuple(int(d) for d in s) for p, s in shapes.items() if layer_of(p) == layer}
    if not own:
        layers = list(dict.fromkeys(layer_of(p) for p in shapes))
        raise InvalidParameterError(f"Unknown layer {layer!r}; this model has layers {layers}.")
    kind = layer_kind(own)
    if kind in ("linear", "conv") and "bias" in own:
        weight = own["weight"]
        plan: dict[str, Any] = {"kind": kind, "parameters": [f"{layer}.weight", f"{layer}.bias"],
                                "width": int(math.prod(weight[1:]))}
        if kind == "conv":
            if len(weight) != 3:
                raise InvalidParameterError(
                    f"{layer}.weight has shape {weight}; the inversion reads Conv1d input layers (out, in, k) only."
                )
            plan.update(frame_width=weight[1], kernel=weight[2])
        return plan
    if kind == "recurrent":
        cell = recurrent_cells(list(own))[0]
        biases = [cell[k] for k in ("bias_ih", "bias_hh") if k in cell]
        if biases:
            width = own[cell["ih"]][1]
            return {"kind": kind, "parameters": [f"{layer}.{cell['ih']}", *(f"{layer}.{b}" for b in biases)],
                    "width": width, "frame_width": width}
    raise InvalidParameterError(
        f"The input layer {layer!r} (parameters {sorted(own)}) has no input-mixture identity; the inversion attack "
        "reads a linear, Conv1d or LSTM input layer with a bias."
    )


def _items(frames: np.ndarray, length: int, kind: str, *, kernel: int, padding: int) -> np.ndarray:
    """The valid frames ``(L, C)`` of one utterance, or its patches ``(L', C * k)`` (channel-major, as ``(in, k)``)."""
    if kind == "recurrent":
        return frames[:length]
    t, c = frames.shape
    padded = np.zeros((t + 2 * padding, c), dtype=frames.dtype)
    padded[padding : padding + t] = frames
    patches = np.lib.stride_tricks.sliding_window_view(padded, kernel, axis=0)  # (positions, C, k)
    n_valid = max(1, min(len(patches), length + 2 * padding - kernel + 1))
    return patches[:n_valid].reshape(n_valid, c * kernel)


def public_mixtures(
    table: FeatureTable, *, kind: str, batch_sizes: Sequence[int], draws_per_speaker: int,
    frames_per_mixture: Sequence[int], kernel: int = 1, padding: int = 0, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random same-speaker mixtures of public inputs, the kind an input-layer update carries.

    Each draw picks ``b`` utterances of one speaker (``b`` from ``batch_sizes``);
    for a linear input layer it mixes their feature rows, for a convolution
    their valid input patches (with ``padding`` zeros at either end), for an
    LSTM their valid frames, ``m`` of them drawn at random (``m`` cycling over
    ``frames_per_mixture``); the mixture weights are Dirichlet(1).

    Returns
    -------
    tuple
        ``x`` (mixtures, float64), ``y`` (0 = F, 1 = M) and ``group`` (the speaker's index).
    """
    rng = np.random.default_rng(seed)
    labels = gender_labels(table.gender)
    frames = table.frames() if kind != "linear" else None
    xs, ys, groups = [], [], []
    for g, spk in enumerate(table.speakers):
        rows = np.flatnonzero(table.speaker_id == spk)
        if frames is not None:
            items = [_items(frames[r], int(table.lengths[r]), kind, kernel=kernel, padding=padding) for r in rows]
        for b in batch_sizes:
            k = min(int(b), len(rows))
            if frames is None:  # utterance mixtures
                picks = np.stack([rng.choice(rows, size=k, replace=False) for _ in range(draws_per_speaker)])
                weights = (rng.dirichlet(np.ones(k), size=draws_per_speaker) if k > 1
                           else np.ones((draws_per_speaker, 1)))
                xs.append(np.einsum("dk,dkf->df", weights, table.x[picks].astype(np.float64)))
            else:  # patch or frame mixtures
                for d in range(draws_per_speaker):
                    pick = rng.choice(len(rows), size=k, replace=False)
                    pool = np.concatenate([items[i] for i in pick])
                    m = min(int(frames_per_mixture[d % len(frames_per_mixture)]), len(pool))
                    pool = pool[rng.choice(len(pool), size=m, replace=False)].astype(np.float64)
                    w = rng.dirichlet(np.ones(m)) if m > 1 else np.ones(1)
                    xs.append((w @ pool)[None])
            ys.append(np.full(draws_per_speaker, labels[rows[0]]))
            groups.append(np.full(draws_per_speaker, g))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(groups)


@register_attack
class InversionAttack(Attack):
    """Invert the input-layer update to a mixture of the client's inputs; classify it with public data.

    The attacker needs no shadow federated training: it fits a gender
    classifier on public acoustic features, normalised the way the target run
    normalises its inputs (``target_config["normalization"]``, ``"global"`` when
    unknown), mixed as the gradient mixes them. On a target update it computes
    the input mixture of :func:`~fedaudit.attacks.update_statistics.input_mixture`
    and classifies it:

    - linear input layer (``fc1``): ``v = db1^T dW1 / |db1|^2``, a weighted
      mixture of the client's own feature vectors; public training inputs are
      Dirichlet-weighted means of random same-speaker batches of utterances;
    - Conv1d input layer (``conv1``, weight ``(out, C, k)``): the channel-mean
      patch mixture ``db^T dW / |db|^2`` (``C * k`` values, ``(C, k)``
      flattened), an error-weighted mixture of the client's input patches;
      public inputs are mixtures of patches of public frame sequences;
    - LSTM input layer (``lstm1``): ``b^T dW_ih / |b|^2`` with ``b`` the bias
      update, an error-weighted mixture of the client's frames (``C`` values);
      public inputs are mixtures of public frames.

    Patch and frame mixtures need public features of the target's frame-level
    feature set (a :class:`~fedaudit.data.FeatureTable` with ``frame_shape``).

    Parameters
    ----------
    layer
        The input layer's name; ``None`` takes the target's first layer
        (``AttackerKnowledge.target_shapes``), else ``"fc1"``.
    batch_sizes
        Utterances per same-speaker mixture the classifier is trained on.
    draws_per_speaker
        Mixtures drawn per speaker and batch size.
    frames_per_mixture
        Patch and frame mixtures: how many of the batch's patches or frames
        one mixture draws (cycled over the draws); ignored for a linear input layer.
    padding
        Conv1d input layers: zeros added at either end of a sequence before
        cutting patches; ``None`` takes ``k // 2`` ("same" padding).
    val_fraction, clip, seed
        As for :class:`~fedaudit.attacks.stats.StatsAttack` (validation is split by speaker).

    Attributes
    ----------
    model_ : object
        The fitted logistic regression on the mixture.
    layer_ : str
        The input layer read.
    kind_ : str
        Its type: ``"linear"``, ``"conv"`` or ``"recurrent"``.
    normalization_ : str
        The normalisation the public features were given (the target's).
    n_features_ : int
        Width of the mixture (input features, ``C * k`` patch values, or ``C`` frame values).

    Examples
    --------
    >>> shapes = {p: target.shape(p) for p in target.parameter_names}  # doctest: +SKIP
    >>> data = AttackerKnowledge(public=public_table, target_config=target.config, target_shapes=shapes)  # doctest: +SKIP
    >>> InversionAttack(seed=0).fit(data).score(target).asr  # doctest: +SKIP
    """

    name = "inversion"
    needs_public = True
    layers_read = "input"

    def __init__(
        self, *, layer: str | None = None, batch_sizes: Sequence[int] = (1, 5, 20, 50), draws_per_speaker: int = 40,
        frames_per_mixture: Sequence[int] = (1, 10, 100, 1000), padding: int | None = None,
        val_fraction: float = 0.2, clip: float = 10.0, seed: int = 0,
    ) -> None:
        self.layer = layer
        self.batch_sizes = batch_sizes
        self.draws_per_speaker = draws_per_speaker
        self.frames_per_mixture = frames_per_mixture
        self.padding = padding
        self.val_fraction = val_fraction
        self.clip = clip
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        params = super().get_params()
        params["batch_sizes"] = [int(b) for b in params["batch_sizes"]]
        params["frames_per_mixture"] = [int(m) for m in params["frames_per_mixture"]]
        return params

    def _plan(self, data: AttackerKnowledge) -> dict[str, Any]:
        """The input layer and what to mix, from the target's shapes (a linear ``fc1`` when they are unknown)."""
        shapes = data.target_shapes
        layer = self.layer
        if shapes is None:
            layer = layer or "fc1"
            return {"layer": layer, "kind": "linear", "parameters": [f"{layer}.weight", f"{layer}.bias"], "width": None}
        layer = layer or data.target_layers[0]  # type: ignore[index]
        return {"layer": layer, **input_layer_plan(shapes, layer)}

    def _fit(self, data: AttackerKnowledge) -> None:
        from fedaudit.data.normalize import normalize_features

        for name in ("batch_sizes", "frames_per_mixture"):
            values = list(getattr(self, name))
            if not values or any(isinstance(v, bool) or int(v) != v or v < 1 for v in values):
                raise InvalidParameterError(
                    f"The {name!r} parameter of InversionAttack must be a non-empty list of integers >= 1. "
                    f"Got {getattr(self, name)!r} instead."
                )
        table = data.public
        assert table is not None  # needs_public: checked by fit()
        feature_set = data.target_feature_set
        if feature_set is not None and feature_set != table.feature_set:
            raise InvalidParameterError(
                f"The target was trained on {feature_set} features but the public features are "
                f"{table.feature_set}; extract the public corpus with the target's feature set."
            )
        plan = self._plan(data)
        kind = plan["kind"]
        frame_shape = getattr(table, "frame_shape", None)
        kernel, padding = int(plan.get("kernel", 1)), 0
        if kind != "linear":
            if frame_shape is None:
                raise InvalidParameterError(
                    f"The target's input layer {plan['layer']} is {'a convolution' if kind == 'conv' else 'recurrent'} "
                    f"over frames of {plan['frame_width']} values, but the public features ({table.feature_set}) "
                    "have no frames; extract the public corpus with the target's frame-level feature set."
                )
            if frame_shape[1] != plan["frame_width"]:
                raise ShapeMismatchError(
                    f"The target's input layer {plan['layer']} reads frames of {plan['frame_width']} values, but the "
                    f"public frames have {frame_shape[1]}; extract the public corpus with the target's feature set."
                )
            padding = kernel // 2 if self.padding is None else int(self.padding)
            if not 0 <= padding < kernel:
                raise InvalidParameterError(
                    f"The 'padding' parameter of InversionAttack must be None or an integer in [0, {kernel - 1}] "
                    f"for a kernel of {kernel}. Got {self.padding!r} instead."
                )
        normalization = data.target_normalization
        table = normalize_features(table, method=normalization, train_mask=np.ones(len(table), bool))
        x, y, group = public_mixtures(
            table, kind=kind, batch_sizes=self.batch_sizes, draws_per_speaker=int(self.draws_per_speaker),
            frames_per_mixture=self.frames_per_mixture, kernel=kernel, padding=padding, seed=self.seed,
        )
        by_speaker = ShadowRows(store_index=np.zeros_like(y), row=np.arange(len(y)), y=y, group=group)
        train, val = grouped_split(by_speaker, val_fraction=self.val_fraction, seed=[self.seed, 1])
        self.model_, fit_info = fit_logistic(x, y, train=train, val=val, clip=self.clip, seed=self.seed)
        fit_info["normalization"] = normalization
        fit_info["public_corpora"] = sorted(set(table.corpus.tolist()))
        fit_info["n_speakers"] = len(table.speakers)
        fit_info["mixture_of"] = _MIXTURE_OF[kind]
        if kind == "conv":
            fit_info["padding"] = padding
        self.normalization_ = normalization
        self.n_features_ = int(x.shape[1])
        self.layer_ = plan["layer"]
        self.kind_ = kind
        self.parameters_ = list(plan["parameters"])
        self.shapes_ = {}  # the hidden width is the target's own: only the input width is checked
        self.layers_ = [self.layer_]
        self.fit_info_ = fit_info

    def _mixture(self, updates: Mapping[str, np.ndarray]) -> np.ndarray:
        prefix = f"{self.layer_}."
        return input_mixture({p[len(prefix) :]: updates[p] for p in self.parameters_})

    def _width(self, shapes: Mapping[str, Sequence[int]]) -> tuple[str, int]:
        """The kind and mixture width of the input layer described by ``shapes`` (full names)."""
        plan = input_layer_plan(shapes, self.layer_)
        return plan["kind"], int(plan["width"])

    def _check_width(self, shapes: Mapping[str, Sequence[int]], where: str) -> None:
        try:
            kind, width = self._width(shapes)
        except InvalidParameterError as err:
            raise ShapeMismatchError(f"{where}: {err}") from None
        if kind != self.kind_ or width != self.n_features_:
            raise ShapeMismatchError(
                f"{where} has a {kind} input layer {self.layer_} whose update mixes {width} inputs, but the "
                f"inversion attack was fitted on {self.kind_} mixtures of {self.n_features_} values; fit it on "
                "public features of the target's feature set and architecture."
            )

    def _check_updates(self, updates: Mapping[str, np.ndarray]) -> None:
        super()._check_updates(updates)
        weight = np.shape(updates[self.parameters_[0]])  # the weight the mixture is read from: (n, out, ...)
        width = int(weight[-1]) if self.kind_ == "recurrent" else int(math.prod(weight[2:]))
        if width != self.n_features_:
            raise ShapeMismatchError(
                f"The target's {self.parameters_[0]} has {width} inputs but the inversion attack was fitted on "
                f"mixtures of {self.n_features_} values; fit it on public features of the target's feature set."
            )

    def _predict_proba(self, updates: Mapping[str, np.ndarray]) -> np.ndarray:
        p_m = self.model_.p_male(self._mixture(updates))
        return np.stack([1 - p_m, p_m], axis=1)

    def check_store(self, store: UpdateStore) -> None:
        super().check_store(store)
        self._check_width({p: store.shape(p) for p in store.parameter_names if layer_of(p) == self.layer_},
                          str(store.path))
        target_norm = store.config.get("normalization")
        if target_norm is not None and target_norm != self.normalization_:
            raise InvalidParameterError(
                f"{store.path} normalises features with {target_norm!r} but the inversion attack was fitted with "
                f"{self.normalization_!r}; refit it with the target's configuration "
                f"(normalization={target_norm!r})."
            )

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        meta = {"normalization": self.normalization_, "n_features": self.n_features_, "layer": self.layer_,
                "kind": self.kind_}
        return self.model_.tensors("clf"), meta

    def _load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        self.model_ = _Linear.from_tensors(tensors, "clf", self.clip)
        self.normalization_ = str(meta["normalization"])
        self.n_features_ = int(meta["n_features"])
        # cards written before other input layers were read: a linear layer, the one of the parameters
        self.layer_ = str(meta.get("layer") or self.layers_[0])
        self.kind_ = str(meta.get("kind", "linear"))
        if not self.fit_info_ and "fit_info" in meta:  # older cards kept it in the state only
            self.fit_info_ = dict(meta["fit_info"])
