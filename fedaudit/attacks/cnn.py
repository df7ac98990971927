"""The CNN fusion attack of Feng et al.: one convolutional classifier per layer, fused by layer size.

Implementation based on Feng, Hashemi, Hebbar, Annavaram and Narayanan,
"Attribute inference attack of speech emotion recognition in federated learning
settings" (Interspeech 2022), https://arxiv.org/abs/2112.13416, without the
defects of its reference code (see ``docs/attacks-cnn.md``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fedaudit.attacks._data import (
    ShadowRows,
    check_same_architecture,
    grouped_split,
    iter_blocks,
    shadow_rows,
)
from fedaudit.attacks.base import Attack, AttackerKnowledge, register_attack, resolve_layers
from fedaudit.exceptions import InvalidParameterError
from fedaudit.metrics.basic import uar

__all__ = ["CNNFusionAttack", "LayerBranch"]

logger = logging.getLogger(__name__)

#: Filters of the three convolutional blocks of a branch.
CONV_FILTERS: tuple[int, ...] = (16, 32, 64)
#: Kernel size and padding of every convolution.
KERNEL_SIZE, PADDING = 5, 2
#: Widths of the dense layers after the convolutions (then 2 classes).
DENSE_WIDTHS: tuple[int, ...] = (256, 128)
#: Updates per forward pass when predicting (bounds the memory of the first layer's activations).
_PREDICT_BATCH = 32
#: Rows read from HDF5 per block when loading shadow updates.
_READ_BLOCK = 64

#: Called during ``fit`` with one dict per finished epoch (see :class:`CNNFusionAttack`).
ProgressCallback = Callable[[Mapping[str, Any]], None]


def _pool_kernels(height: int, width: int, n_blocks: int) -> list[tuple[int, int]]:
    """Max-pooling kernel of each block: 2 along an axis while that axis is at least 2, else 1.

    A 256 x 988 image is pooled by (2, 2) three times; the 4 x 128 update of the
    last layer of a 4-class MLP is pooled (2, 2), (2, 2), then (1, 2).
    """
    kernels = []
    for _ in range(n_blocks):
        kh, kw = (2 if height >= 2 else 1), (2 if width >= 2 else 1)
        kernels.append((kh, kw))
        height, width = height // kh, width // kw
    return kernels


class LayerBranch(nn.Module):
    """Classifier of one layer's update: conv image branch, bias concatenated, MLP to 2 classes.

    Parameters
    ----------
    weight_shape
        ``(out, in)`` of the layer's weight update (trailing dimensions of a
        convolution weight are flattened into ``in``).
    n_bias
        Length of the layer's bias update (0 if the layer has no bias).
    dropout
        Drop rate after each convolutional block (channel dropout) and after each dense layer.
    """

    def __init__(self, weight_shape: Sequence[int], n_bias: int, *, dropout: float) -> None:
        super().__init__()
        height, width = int(weight_shape[0]), int(math.prod(weight_shape[1:]))
        self.weight_shape = (height, width)
        self.n_bias = int(n_bias)
        blocks: list[nn.Module] = []
        channels = 1
        for filters, kernel in zip(CONV_FILTERS, _pool_kernels(height, width, len(CONV_FILTERS)), strict=True):
            blocks += [
                nn.Conv2d(channels, filters, kernel_size=KERNEL_SIZE, padding=PADDING),
                nn.ReLU(),
                nn.MaxPool2d(kernel_size=kernel, stride=kernel),
                nn.Dropout2d(dropout),
            ]
            channels = filters
        self.conv = nn.Sequential(*blocks)
        with torch.no_grad():  # flatten size from a dummy forward, never hard-coded
            self.n_flat = int(self.conv(torch.zeros(1, 1, height, width)).numel())
        dense: list[nn.Module] = []
        n_in = self.n_flat + self.n_bias
        for n_out in DENSE_WIDTHS:
            dense += [nn.Linear(n_in, n_out), nn.ReLU(), nn.Dropout(dropout)]
            n_in = n_out
        dense.append(nn.Linear(n_in, 2))
        self.head = nn.Sequential(*dense)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights and biases of 0.01 (what the reference code meant to apply)."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.constant_(module.bias, 0.01)

    def forward(self, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Logits ``(n, 2)`` from normalised ``weight`` ``(n, out, in)`` and ``bias`` ``(n, out)``."""
        z = self.conv(weight.reshape(weight.shape[0], 1, *self.weight_shape)).flatten(1)
        if self.n_bias:
            z = torch.cat((z, bias.reshape(bias.shape[0], -1)), dim=1)
        return self.head(z)


@register_attack
class CNNFusionAttack(Attack):
    """Gender inference from client updates with one CNN per layer, fused by layer size.

    Implementation based on Feng et al., "Attribute inference attack of speech
    emotion recognition in federated learning settings" (Interspeech 2022),
    https://arxiv.org/abs/2112.13416.

    Each attacked layer gets its own classifier (:class:`LayerBranch`): the
    weight update (``out x in``) is a one-channel image, z-normalised with the
    shadow statistics of that layer; three blocks Conv2d (16, 32, 64 filters,
    kernel 5, padding 2) -> ReLU -> MaxPool2d(2) -> dropout; the flattened maps
    are concatenated with the normalised bias update and go through a
    256 -> 128 -> 2 MLP. An axis shorter than 2 is not pooled any further, so
    a small last layer (4 x 128) works. The branches are trained separately;
    the fused probability is the average of the branches' probabilities
    weighted by the number of values (weight + bias) of each layer's update.

    Parameters
    ----------
    layers
        Layer names (``"fc1"``) or 1-based numbers to attack; ``None`` attacks
        every layer of the shadow recordings.
    epochs
        Maximum training epochs per layer.
    lr
        Adam learning rate.
    batch_size
        Training mini-batch size.
    dropout
        Dropout rate after each convolutional block and dense layer.
    patience
        Stop a branch after this many epochs without a better validation UAR;
        the weights of the best epoch are kept.
    val_fraction
        Share of shadow clients (per gender) held out for validation. The split
        is by client, never by update; when the shadow ground truth names the
        speakers, all clients of one speaker (in any shadow recording) fall on
        the same side.
    max_train_updates
        Train on at most this many shadow updates, drawn in proportion to each
        client's number of updates (a CPU budget). The validation set is then
        capped in the same proportion. ``None`` uses every update.
    seed
        Seed of the split, the subsampling, the initialisation, dropout and shuffling.
    device
        Torch device; ``None`` picks CUDA when available, else the CPU (with
        every thread torch is allowed to use).
    progress
        Called after every epoch with a dict (``layer``, ``epoch``,
        ``train_loss``, ``val_uar``, ``best_epoch``, ``seconds``). Not saved
        with the model.

    Attributes
    ----------
    layers_ : list of str
        Layers whose probabilities :meth:`predict_proba` fuses.
    fit_info_ : dict
        Per layer: the best epoch, its validation UAR and the epochs run.
    branches_ : dict of str to LayerBranch
        One fitted classifier per layer.
    norm_stats_ : dict
        ``{layer: {"weight_mean", "weight_std", "bias_mean", "bias_std"}}`` of
        the training shadow updates.
    fusion_weights_ : dict of str to float
        Weight of each layer in the fusion (sums to 1 over ``layers_``).
    history_ : dict
        Per layer: the epochs run (train loss, validation UAR) and the best epoch.
    train_mask_, val_mask_ : numpy.ndarray of bool
        Shadow rows used for training and validation, in the order of
        :func:`fedaudit.attacks._data.shadow_rows` (set by ``fit`` only, not saved).

    Examples
    --------
    >>> attack = CNNFusionAttack(max_train_updates=600).fit(AttackerKnowledge(shadows=[shadow]))  # doctest: +SKIP
    >>> attack.score(target).asr  # doctest: +SKIP
    >>> attack.restricted(["fc1"]).predict_proba(target.client(3))  # doctest: +SKIP
    """

    name = "cnn"
    needs_shadow = True
    per_layer = True
    layers_read = "all"

    def __init__(
        self,
        *,
        layers: Sequence[str] | None = None,
        epochs: int = 50,
        lr: float = 1e-4,
        batch_size: int = 20,
        dropout: float = 0.2,
        patience: int = 5,
        val_fraction: float = 0.2,
        max_train_updates: int | None = None,
        seed: int = 0,
        device: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.layers = layers
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.dropout = dropout
        self.patience = patience
        self.val_fraction = val_fraction
        self.max_train_updates = max_train_updates
        self.seed = seed
        self.device = device
        self.progress = progress

    # -- parameters ----------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters, without ``progress`` (a callback is not part of a saved model)."""
        params = super().get_params()
        params.pop("progress", None)
        if params["layers"] is not None:
            params["layers"] = list(params["layers"])
        return params

    def _validate_params(self) -> None:
        def fail(name: str, constraint: str) -> None:
            raise InvalidParameterError(
                f"The {name!r} parameter of {type(self).__name__} must be {constraint}. "
                f"Got {getattr(self, name)!r} instead."
            )

        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                fail(name, "an integer >= 1")
        if not isinstance(self.patience, (int, np.integer)) or isinstance(self.patience, bool) or self.patience < 1:
            fail("patience", "an integer >= 1")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            fail("lr", "a float > 0")
        if not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            fail("dropout", "a float in [0, 1)")
        if not (isinstance(self.val_fraction, (int, float)) and 0 < self.val_fraction < 1):
            fail("val_fraction", "a float in (0, 1)")
        if self.max_train_updates is not None and (
            not isinstance(self.max_train_updates, (int, np.integer))
            or isinstance(self.max_train_updates, bool)
            or self.max_train_updates < 2
        ):
            fail("max_train_updates", "None or an integer >= 2")
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool):
            fail("seed", "an integer")
        if self.progress is not None and not callable(self.progress):
            fail("progress", "None or a callable")
        if isinstance(self.layers, str):
            fail("layers", "None or a sequence of layer names (a list, not a single string)")

    def _torch_device(self) -> torch.device:
        if self.device is None:
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(self.device)
        except RuntimeError:
            raise InvalidParameterError(
                f"The 'device' parameter of {type(self).__name__} must be None or a torch device "
                f"such as 'cpu' or 'cuda'. Got {self.device!r} instead."
            ) from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InvalidParameterError(
                f"device={self.device!r} was requested but CUDA is not available here; pass device=None or 'cpu'."
            )
        return device

    # -- fitting -------------------------------------------------------------------
    def _fit(self, data: AttackerKnowledge) -> None:
        """Train one branch per layer on ``data.shadows``.

        The shadow recordings must have the target's architecture and
        features. Their ground truth (gender, and speaker when present) is the
        attacker's own.

        Raises
        ------
        InvalidParameterError
            On a bad hyper-parameter, an unknown layer, or shadow recordings
            with a single gender.
        ShapeMismatchError
            If the shadow recordings disagree on a layer's shape.
        """
        self._validate_params()
        stores = list(data.shadows)
        layers = resolve_layers(self.layers, stores[0].layers)
        if not layers:
            raise InvalidParameterError("The 'layers' parameter of CNNFusionAttack selects no layer.")
        params = {layer: _layer_params(stores[0], layer) for layer in layers}
        shapes = check_same_architecture(stores, [p for ps in params.values() for p in ps.values()])
        device = self._torch_device()

        rows = _speaker_grouped(stores, shadow_rows(stores))
        if len(np.unique(rows.y)) < 2:
            raise InvalidParameterError(
                "The shadow recordings hold clients of one gender only; the attack needs both to learn."
            )
        train, val = grouped_split(rows, val_fraction=self.val_fraction, seed=self.seed)
        rng = np.random.default_rng([self.seed, 1])
        if self.max_train_updates is not None:
            n_train = min(int(self.max_train_updates), int(train.sum()))
            n_val = min(int(val.sum()), math.ceil(n_train * val.sum() / max(1, train.sum())))
            train = _subsample_by_group(rows, train, n_train, rng)
            val = _subsample_by_group(rows, val, n_val, rng)

        branches: dict[str, LayerBranch] = {}
        norm_stats: dict[str, dict[str, float]] = {}
        history: dict[str, dict[str, Any]] = {}
        for index, layer in enumerate(layers):
            w_name, b_name = params[layer]["weight"], params[layer].get("bias")
            names = [w_name] + ([b_name] if b_name else [])
            xw, xb, stats = _load(stores, rows, names, train, stats=None)
            vw, vb, _ = _load(stores, rows, names, val, stats=stats)
            norm_stats[layer] = stats
            branch = _build_branch(
                shapes[w_name], int(math.prod(shapes[b_name])) if b_name else 0, dropout=float(self.dropout)
            )
            branches[layer], history[layer] = self._train_branch(
                layer, branch, (xw, xb, rows.y[train]), (vw, vb, rows.y[val]), device, seed=int(self.seed) + index
            )
            del xw, xb, vw, vb

        self.layers_ = list(layers)
        self.parameters_ = [p for layer in layers for p in params[layer].values()]
        self.shapes_ = {p: tuple(shapes[p]) for p in self.parameters_}
        self.branches_ = branches
        self.norm_stats_ = norm_stats
        self.history_ = history
        self.fit_info_ = _fit_info(history)
        self.train_mask_, self.val_mask_ = train, val
        self.n_train_updates_ = int(train.sum())
        self.n_val_updates_ = int(val.sum())
        self.n_train_groups_ = int(len(np.unique(rows.group[train])))
        self.n_val_groups_ = int(len(np.unique(rows.group[val])))
        self.device_ = str(device)

    def _train_branch(
        self,
        layer: str,
        branch: LayerBranch,
        train: tuple[torch.Tensor, torch.Tensor | None, np.ndarray],
        val: tuple[torch.Tensor, torch.Tensor | None, np.ndarray],
        device: torch.device,
        *,
        seed: int,
    ) -> tuple[LayerBranch, dict[str, Any]]:
        xw, xb, y_np = train
        vw, vb, vy = val
        y = torch.from_numpy(np.asarray(y_np, dtype=np.int64))
        devices = [device.index or 0] if device.type == "cuda" else []
        epochs: list[dict[str, float]] = []
        best_uar, best_epoch, best_state = -math.inf, -1, None
        with torch.random.fork_rng(devices=devices):  # leaves the caller's global RNG untouched
            torch.manual_seed(seed)
            branch.reset_parameters()
            branch.to(device)
            optimizer = torch.optim.Adam(branch.parameters(), lr=float(self.lr))
            loss_fn = nn.CrossEntropyLoss()
            shuffle = torch.Generator().manual_seed(seed)
            for epoch in range(int(self.epochs)):
                start = time.perf_counter()
                branch.train()
                order = torch.randperm(len(y), generator=shuffle)
                total, seen = 0.0, 0
                for i in range(0, len(order), int(self.batch_size)):
                    idx = order[i : i + int(self.batch_size)]
                    if len(idx) < 2 and len(order) > 1:  # a batch of one gives no useful gradient signal
                        continue
                    logits = branch(xw[idx].to(device), None if xb is None else xb[idx].to(device))
                    loss = loss_fn(logits, y[idx].to(device))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach()) * len(idx)
                    seen += len(idx)
                val_uar = (
                    uar(vy, _branch_proba(branch, vw, vb, device).argmax(axis=1)) if len(vy) else float("nan")
                )
                improved = len(vy) == 0 or val_uar > best_uar
                if improved:
                    best_uar, best_epoch = val_uar, epoch
                    best_state = {k: v.detach().clone() for k, v in branch.state_dict().items()}
                record = {
                    "epoch": epoch, "train_loss": total / max(1, seen), "val_uar": val_uar,
                    "seconds": time.perf_counter() - start,
                }
                epochs.append(record)
                logger.debug("cnn attack %s epoch %d: %s", layer, epoch, record)
                if self.progress is not None:
                    self.progress({"layer": layer, **record, "best_epoch": best_epoch})
                if len(vy) and epoch - best_epoch >= int(self.patience):
                    break
        assert best_state is not None
        branch.load_state_dict(best_state)
        branch.eval()
        return branch, {"epochs": epochs, "best_epoch": best_epoch, "best_val_uar": best_uar}

    # -- predicting ----------------------------------------------------------------
    def _layer_proba(self, updates: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        device = self._torch_device()
        for layer in self.layers_:
            names = self._names(layer)
            stats = self.norm_stats_[layer]
            w = _normalised(updates[names["weight"]], stats["weight_mean"], stats["weight_std"])
            b = _normalised(updates[names["bias"]], stats["bias_mean"], stats["bias_std"]) if "bias" in names else None
            out[layer] = _branch_proba(self.branches_[layer], w, b, device)
        return out

    def _names(self, layer: str) -> dict[str, str]:
        names = {"weight": f"{layer}.weight"}
        if f"{layer}.bias" in self.shapes_:
            names["bias"] = f"{layer}.bias"
        return names

    # -- persistence -----------------------------------------------------------------
    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors = {
            f"{layer}/{key}": value for layer in self.layers_ for key, value in self.branches_[layer].state_dict().items()
        }
        meta = {
            "layers": self.layers_,
            "norm_stats": self.norm_stats_,
            "history": self.history_,
            "n_train_updates": getattr(self, "n_train_updates_", None),
            "n_val_updates": getattr(self, "n_val_updates_", None),
            "n_train_groups": getattr(self, "n_train_groups_", None),
            "n_val_groups": getattr(self, "n_val_groups_", None),
            "architecture": {
                "conv_filters": list(CONV_FILTERS), "kernel_size": KERNEL_SIZE, "padding": PADDING,
                "dense": list(DENSE_WIDTHS), "pooling": "2 per axis while the axis is >= 2",
            },
        }
        return tensors, meta

    def _load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        self.norm_stats_ = {k: {s: float(v) for s, v in d.items()} for k, d in meta["norm_stats"].items()}
        self.history_ = dict(meta.get("history", {}))
        self.fit_info_ = self.fit_info_ or _fit_info(self.history_)
        for key in ("n_train_updates", "n_val_updates", "n_train_groups", "n_val_groups"):
            if meta.get(key) is not None:
                setattr(self, f"{key}_", int(meta[key]))
        self.branches_ = {}
        for layer in self.layers_:
            names = self._names(layer)
            n_bias = int(math.prod(self.shapes_[names["bias"]])) if "bias" in names else 0
            branch = _build_branch(self.shapes_[names["weight"]], n_bias, dropout=float(self.dropout))
            prefix = f"{layer}/"
            branch.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
            branch.eval()
            self.branches_[layer] = branch
        # the device is resolved (and checked) when predicting, so a model fitted on CUDA loads anywhere
        self.device_ = self.device or ("cuda" if torch.cuda.is_available() else "cpu")


# -- helpers ---------------------------------------------------------------------------
def _fit_info(history: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per layer: the best epoch, its validation UAR and the number of epochs run."""
    return {
        layer: {"best_epoch": h["best_epoch"], "best_val_uar": h["best_val_uar"], "epochs_run": len(h["epochs"])}
        for layer, h in history.items()
    }


def _build_branch(weight_shape: Sequence[int], n_bias: int, *, dropout: float) -> LayerBranch:
    """A branch built without drawing from the caller's global random generator."""
    with torch.random.fork_rng(devices=[]):
        return LayerBranch(weight_shape, n_bias, dropout=dropout)


def _layer_params(store: Any, layer: str) -> dict[str, str]:
    """``{"weight": "fc1.weight", "bias": "fc1.bias"}`` of a layer, checking what the branch can read."""
    names = {a["param"]: a["name"] for a in store.architecture if a["layer"] == layer}
    if "weight" not in names:
        raise InvalidParameterError(f"Layer {layer!r} of {store.path} has no 'weight' update; it has {sorted(names)}.")
    extra = sorted(set(names) - {"weight", "bias"})
    if extra:
        raise InvalidParameterError(
            f"Layer {layer!r} of {store.path} has parameters {extra} besides weight and bias; "
            "the CNN fusion attack reads dense-like layers only."
        )
    if len(store.shape(names["weight"])) < 2:
        raise InvalidParameterError(
            f"{names['weight']} of {store.path} has shape {store.shape(names['weight'])}; an image needs 2 dimensions."
        )
    return {k: names[k] for k in ("weight", "bias") if k in names}


def _speaker_grouped(stores: Sequence[Any], rows: ShadowRows) -> ShadowRows:
    """Merge the groups of clients of the same speaker (same corpus) across all shadow stores.

    Shadow runs of one corpus with other seeds, or with several clients per
    speaker, would otherwise put one voice on both sides of the validation split.
    """
    keys: list[np.ndarray] = []
    for store in stores:
        truth = store.ground_truth()
        if "speaker_id" not in truth:
            return rows
        corpus = np.asarray(store.clients["corpus"]).astype(str)
        keys.append(np.char.add(np.char.add(corpus, "\x1f"), truth["speaker_id"].astype(str)))
    per_group = np.concatenate(keys)  # groups are numbered store by store in client order
    _, speaker_group = np.unique(per_group, return_inverse=True)
    return ShadowRows(store_index=rows.store_index, row=rows.row, y=rows.y, group=speaker_group[rows.group])


def _subsample_by_group(rows: ShadowRows, mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rows of ``mask``, each group contributing in proportion to its rows (largest remainders)."""
    selected = np.flatnonzero(mask)
    if n >= len(selected):
        return mask.copy()
    groups, counts = np.unique(rows.group[selected], return_counts=True)
    quota = counts * n / len(selected)
    take = np.floor(quota).astype(np.int64)
    for i in np.argsort(-(quota - take), kind="stable")[: n - int(take.sum())]:
        take[i] += 1
    out = np.zeros_like(mask)
    for group, k in zip(groups, take, strict=True):
        if k:
            mine = selected[rows.group[selected] == group]
            out[rng.choice(mine, size=int(k), replace=False)] = True
    return out


def _load(
    stores: Sequence[Any], rows: ShadowRows, names: Sequence[str], mask: np.ndarray, *, stats: dict[str, float] | None
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, float]]:
    """Selected rows of a layer as float32 tensors, read block by block and z-normalised in place.

    With ``stats=None`` the statistics are computed on these rows (the training set).
    """
    n = int(mask.sum())
    w_name = names[0]
    b_name = names[1] if len(names) > 1 else None
    w_shape = tuple(stores[0].shape(w_name))
    w = torch.empty((n, w_shape[0], int(math.prod(w_shape[1:]))), dtype=torch.float32)
    b = torch.empty((n, *stores[0].shape(b_name)), dtype=torch.float32) if b_name else None
    acc = {name: [0.0, 0.0, 0] for name in names}
    k = 0
    for pos, block in iter_blocks(stores, rows, names, mask=mask, batch=_READ_BLOCK):
        m = len(pos)
        w[k : k + m].copy_(torch.from_numpy(block[w_name]).reshape(m, *w.shape[1:]))
        if b is not None:
            b[k : k + m].copy_(torch.from_numpy(block[b_name]))
        if stats is None:
            for name, target in ((w_name, w), (b_name, b)):
                if name is not None:
                    part = target[k : k + m].double()
                    acc[name][0] += float(part.sum())
                    acc[name][1] += float((part * part).sum())
                    acc[name][2] += part.numel()
        k += m
    if stats is None:
        stats = {}
        for prefix, name in (("weight", w_name), ("bias", b_name)):
            if name is None:
                continue
            total, squares, count = acc[name]
            mean = total / max(1, count)
            std = math.sqrt(max(0.0, squares / max(1, count) - mean * mean))
            stats[f"{prefix}_mean"], stats[f"{prefix}_std"] = mean, std if std > 0 else 1.0
    w.sub_(stats["weight_mean"]).div_(stats["weight_std"])
    if b is not None:
        b.sub_(stats["bias_mean"]).div_(stats["bias_std"])
    return w, b, stats


def _normalised(array: np.ndarray, mean: float, std: float) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(array), dtype=torch.float32)
    t = t.reshape(t.shape[0], t.shape[1], -1) if t.dim() > 2 else t
    return (t - mean) / std


@torch.no_grad()
def _branch_proba(
    branch: LayerBranch, weight: torch.Tensor, bias: torch.Tensor | None, device: torch.device
) -> np.ndarray:
    was_training = branch.training
    branch.eval()
    branch.to(device)
    out = np.empty((len(weight), 2), dtype=np.float64)
    for i in range(0, len(weight), _PREDICT_BATCH):
        w = weight[i : i + _PREDICT_BATCH].to(device)
        b = None if bias is None else bias[i : i + _PREDICT_BATCH].to(device)
        out[i : i + len(w)] = torch.softmax(branch(w, b), dim=1).double().cpu().numpy()
    branch.train(was_training)
    return out
