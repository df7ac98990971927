"""The CNN fusion attack of Feng et al.: one convolutional classifier per layer, fused by layer size.

Implementation based on Feng, Hashemi, Hebbar, Annavaram and Narayanan,
"Attribute inference attack of speech emotion recognition in federated learning
settings" (Interspeech 2022), https://arxiv.org/abs/2112.13416, without the
defects of its reference code (see ``docs/attacks-cnn.md``). Any layer type is
read: every tensor of 2 or more dimensions of a layer is an image ``(out, rest)``
(a Conv1d weight ``(out, in, k)`` becomes ``(out, in * k)``, an LSTM's
``weight_ih_l0`` ``(4H, C)`` and ``weight_hh_l0`` ``(4H, H)`` two images), and
its 1-D tensors (biases) are concatenated after the image branches.
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
from fedaudit.attacks.base import (
    Attack,
    AttackerKnowledge,
    layer_of,
    layer_parameters,
    register_attack,
    resolve_layers,
)
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

#: Largest flattened map of a branch: that of the 256 x 988 Emo-Base input layer (64 x 32 x 123).
#: A larger image (a 3,900-wide frame-sequence layer) is max-pooled further, to at most this size.
MAX_FLAT = 64 * 32 * 123
#: How the validation split groups the shadow updates (see :class:`CNNFusionAttack`).
VAL_SPLITS: tuple[str, ...] = ("client", "speaker")

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


def _final_pool(height: int, width: int, channels: int, n_blocks: int) -> tuple[int, int] | None:
    """Output size of an extra adaptive max-pooling that keeps the flattened map at most :data:`MAX_FLAT`.

    ``None`` when the map after the blocks is small enough (every layer of the
    Emo-Base MLP); otherwise the longer axis is halved until it fits.
    """
    for kh, kw in _pool_kernels(height, width, n_blocks):
        height, width = height // kh, width // kw
    if channels * height * width <= MAX_FLAT:
        return None
    while channels * height * width > MAX_FLAT:
        if width >= height:
            width = max(1, (width + 1) // 2)
        else:
            height = max(1, (height + 1) // 2)
    return height, width


def _conv_stack(height: int, width: int, dropout: float) -> nn.Sequential:
    """Three blocks Conv2d -> ReLU -> MaxPool2d -> Dropout2d for a one-channel ``height x width`` image."""
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
    extra = _final_pool(height, width, channels, len(CONV_FILTERS))
    if extra is not None:
        blocks.append(nn.AdaptiveMaxPool2d(extra))
    return nn.Sequential(*blocks)


class LayerBranch(nn.Module):
    """Classifier of one layer's update: one conv image branch per weight tensor, biases concatenated, MLP to 2 classes.

    Parameters
    ----------
    weight_shape
        ``(out, in)`` of the layer's weight update (trailing dimensions of a
        convolution weight are flattened into ``in``), or a list of such shapes,
        one per weight tensor of the layer (an LSTM's ``weight_ih_l0`` and
        ``weight_hh_l0``).
    n_bias
        Length of the layer's bias updates, all 1-D tensors together (0 if none).
    dropout
        Drop rate after each convolutional block (channel dropout) and after each dense layer.
    """

    def __init__(self, weight_shape: Sequence[int] | Sequence[Sequence[int]], n_bias: int, *, dropout: float) -> None:
        super().__init__()
        shapes = [weight_shape] if isinstance(weight_shape[0], (int, np.integer)) else list(weight_shape)
        self.image_shapes = [(int(s[0]), int(math.prod(s[1:]))) for s in shapes]  # type: ignore[index]
        self.weight_shape = self.image_shapes[0]
        self.n_bias = int(n_bias)
        # the first image keeps the name ``conv`` so that models saved before several images were read still load
        self.conv = _conv_stack(*self.image_shapes[0], dropout)
        self.more_convs = nn.ModuleList(_conv_stack(h, w, dropout) for h, w in self.image_shapes[1:])
        with torch.no_grad():  # flatten size from a dummy forward, never hard-coded
            self.n_flats = [int(conv(torch.zeros(1, 1, h, w)).numel())
                            for conv, (h, w) in zip(self._convs(), self.image_shapes, strict=True)]
        self.n_flat = sum(self.n_flats)
        dense: list[nn.Module] = []
        n_in = self.n_flat + self.n_bias
        for n_out in DENSE_WIDTHS:
            dense += [nn.Linear(n_in, n_out), nn.ReLU(), nn.Dropout(dropout)]
            n_in = n_out
        dense.append(nn.Linear(n_in, 2))
        self.head = nn.Sequential(*dense)
        self.reset_parameters()

    def _convs(self) -> list[nn.Module]:
        return [self.conv, *self.more_convs]

    def reset_parameters(self) -> None:
        """Xavier-uniform weights and biases of 0.01 (what the reference code meant to apply)."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.constant_(module.bias, 0.01)

    def forward(self, weight: torch.Tensor | Sequence[torch.Tensor], bias: torch.Tensor | None) -> torch.Tensor:
        """Logits ``(n, 2)`` from normalised weight images ``(n, out, in)`` (one or a list) and biases ``(n, n_bias)``."""
        images = [weight] if isinstance(weight, torch.Tensor) else list(weight)
        z = [conv(w.reshape(w.shape[0], 1, *shape)).flatten(1)
             for conv, w, shape in zip(self._convs(), images, self.image_shapes, strict=True)]
        if self.n_bias:
            z.append(bias.reshape(bias.shape[0], -1))
        return self.head(torch.cat(z, dim=1) if len(z) > 1 else z[0])


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
    a small last layer (4 x 128) works; a map larger than that of the 256 x 988
    Emo-Base layer (:data:`MAX_FLAT`) is max-pooled down to it. A layer with
    several weight tensors (an LSTM) gets one image stack per tensor, their maps
    concatenated; a Conv1d weight ``(out, in, k)`` is the image ``(out, in * k)``.
    The branches are trained separately; the fused probability is the average
    of the branches' probabilities weighted by the number of values of each
    layer's update.

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
        Share of shadow clients (per gender) held out for validation (early
        stopping). The split is by client, never by update.
    val_split
        ``"client"`` (default): validation holds out whole clients of a shadow
        run, as the ``stats`` attack does, so a voice held out in one run still
        trains in the others and few shadow speakers remain enough to learn
        from. ``"speaker"``: all clients of one speaker (same corpus) in every
        shadow run fall on the same side, a stricter validation that, with few
        speakers, leaves few voices to train on (with 4 shadow speakers, 2).
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
        Called after every epoch with a dict (``layer``, ``layer_index``,
        ``n_layers``, ``epoch``, ``epochs``, ``train_loss``, ``val_uar``,
        ``best_epoch``, ``seconds``, ``done`` (the branch's last epoch), and
        ``work_done`` / ``work_total``, the fit's progress in epochs weighted by
        layer size, for an ETA; ``work_total`` shrinks when a branch stops early). Not saved
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
        val_split: str = "client",
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
        self.val_split = val_split
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
        if self.val_split not in VAL_SPLITS:
            fail("val_split", f"one of {list(VAL_SPLITS)}")
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
        shapes = check_same_architecture(stores, [p for ps in params.values() for p in ps["images"] + ps["vectors"]])
        device = self._torch_device()

        rows = shadow_rows(stores)
        if self.val_split == "speaker":
            rows = _speaker_grouped(stores, rows)
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
        sizes = {layer: sum(int(math.prod(shapes[p])) for p in ps["images"] + ps["vectors"])
                 for layer, ps in params.items()}
        self._work = {"done": 0.0, "total": float(sum(sizes.values()) * int(self.epochs)), "sizes": sizes,
                      "n_layers": len(layers)}
        for index, layer in enumerate(layers):
            images, vectors = params[layer]["images"], params[layer]["vectors"]
            xw, xb, stats = _load(stores, rows, images, vectors, train, stats=None)
            vw, vb, _ = _load(stores, rows, images, vectors, val, stats=stats)
            norm_stats[layer] = stats
            branch = _build_branch(
                [shapes[p] for p in images], sum(int(math.prod(shapes[p])) for p in vectors),
                dropout=float(self.dropout),
            )
            branches[layer], history[layer] = self._train_branch(
                layer, branch, (xw, xb, rows.y[train]), (vw, vb, rows.y[val]), device, seed=int(self.seed) + index,
                index=index,
            )
            del xw, xb, vw, vb
        del self._work

        self.layers_ = list(layers)
        self.parameters_ = [p for layer in layers for p in stores[0].parameter_names if p in params[layer]["images"]
                            or p in params[layer]["vectors"]]
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
        train: tuple[list[torch.Tensor], torch.Tensor | None, np.ndarray],
        val: tuple[list[torch.Tensor], torch.Tensor | None, np.ndarray],
        device: torch.device,
        *,
        seed: int,
        index: int = 0,
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
                    logits = branch([w[idx].to(device) for w in xw], None if xb is None else xb[idx].to(device))
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
                stop = bool(len(vy)) and epoch - best_epoch >= int(self.patience)
                done = stop or epoch + 1 == int(self.epochs)
                self._report_progress(layer, index, epoch, record, best_epoch, done=done)
                if stop:
                    break
        assert best_state is not None
        branch.load_state_dict(best_state)
        branch.eval()
        return branch, {"epochs": epochs, "best_epoch": best_epoch, "best_val_uar": best_uar}

    def _report_progress(
        self, layer: str, index: int, epoch: int, record: Mapping[str, Any], best_epoch: int, *, done: bool
    ) -> None:
        work = getattr(self, "_work", None)
        if work is None:
            return
        size = work["sizes"][layer]
        work["done"] += size
        if done:  # the epochs this branch will not run are no longer to do
            work["total"] -= size * (int(self.epochs) - epoch - 1)
        if self.progress is not None:
            self.progress({
                "layer": layer, "layer_index": index, "n_layers": work["n_layers"], **record, "epochs": int(self.epochs),
                "best_epoch": best_epoch, "done": done, "work_done": work["done"], "work_total": work["total"],
            })

    # -- predicting ----------------------------------------------------------------
    def _layer_proba(self, updates: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        device = self._torch_device()
        for layer in self.layers_:
            images, vectors = self._names(layer)
            stats = self.norm_stats_[layer]
            w = [_normalised(updates[p], *_stat(stats, layer, p)) for p in images]
            b = torch.cat([_normalised(updates[p], *_stat(stats, layer, p)) for p in vectors], dim=1) if vectors else None
            out[layer] = _branch_proba(self.branches_[layer], w, b, device)
        return out

    def _names(self, layer: str) -> tuple[list[str], list[str]]:
        """The layer's weight tensors (images) and its 1-D tensors (biases), in model order."""
        own = [p for p in self.parameters_ if layer_of(p) == layer]
        return [p for p in own if len(self.shapes_[p]) >= 2], [p for p in own if len(self.shapes_[p]) == 1]

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
                "max_flat": MAX_FLAT, "val_split": self.val_split,
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
            images, vectors = self._names(layer)
            n_bias = sum(int(math.prod(self.shapes_[p])) for p in vectors)
            branch = _build_branch([self.shapes_[p] for p in images], n_bias, dropout=float(self.dropout))
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


def _build_branch(weight_shape: Sequence[int] | Sequence[Sequence[int]], n_bias: int, *, dropout: float) -> LayerBranch:
    """A branch built without drawing from the caller's global random generator."""
    with torch.random.fork_rng(devices=[]):
        return LayerBranch(weight_shape, n_bias, dropout=dropout)


def _layer_params(store: Any, layer: str) -> dict[str, list[str]]:
    """``{"images": [...], "vectors": [...]}``: a layer's tensors of 2 or more dimensions and its 1-D tensors."""
    names = layer_parameters(store.parameter_names, layer)
    images = [p for p in names if len(store.shape(p)) >= 2]
    if not images:
        raise InvalidParameterError(
            f"Layer {layer!r} of {store.path} has no tensor of 2 or more dimensions (its parameters are "
            f"{names} of shapes {[store.shape(p) for p in names]}); the CNN fusion attack reads weight images."
        )
    return {"images": images, "vectors": [p for p in names if len(store.shape(p)) == 1 and p not in images]}


def _stat(stats: Mapping[str, float], layer: str, param: str) -> tuple[float, float]:
    """Mean and std of one parameter of a layer (keys ``"weight_mean"``, ``"bias_ih_l0_std"``, ...)."""
    key = param[len(layer) + 1 :]
    return stats[f"{key}_mean"], stats[f"{key}_std"]


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
    stores: Sequence[Any], rows: ShadowRows, images: Sequence[str], vectors: Sequence[str], mask: np.ndarray, *,
    stats: dict[str, float] | None,
) -> tuple[list[torch.Tensor], torch.Tensor | None, dict[str, float]]:
    """Selected rows of a layer as float32 tensors, read block by block and z-normalised in place.

    Each weight tensor becomes an image ``(n, out, rest)``; the 1-D tensors are
    concatenated into one ``(n, sum of lengths)``. Every parameter is
    normalised with its own scalar mean and std (keys ``"<param>_mean"``,
    ``"<param>_std"`` with the parameter's name inside the layer); with
    ``stats=None`` they are computed on these rows (the training set).
    """
    n = int(mask.sum())
    layer = layer_of(images[0])
    names = list(images) + list(vectors)
    shapes = {p: tuple(stores[0].shape(p)) for p in names}
    width = {p: int(math.prod(shapes[p][1:])) for p in images}
    w = {p: torch.empty((n, shapes[p][0], width[p]), dtype=torch.float32) for p in images}
    offsets = np.cumsum([0] + [int(math.prod(shapes[p])) for p in vectors]).tolist()
    b = torch.empty((n, offsets[-1]), dtype=torch.float32) if vectors else None
    views = {**w, **({p: b[:, offsets[i] : offsets[i + 1]] for i, p in enumerate(vectors)} if b is not None else {})}
    acc = {name: [0.0, 0.0, 0] for name in names}
    k = 0
    for pos, block in iter_blocks(stores, rows, names, mask=mask, batch=_READ_BLOCK):
        m = len(pos)
        for name in names:
            target = views[name]
            target[k : k + m].copy_(torch.from_numpy(np.ascontiguousarray(block[name])).reshape(m, *target.shape[1:]))
            if stats is None:
                part = target[k : k + m].double()
                acc[name][0] += float(part.sum())
                acc[name][1] += float((part * part).sum())
                acc[name][2] += part.numel()
        k += m
    if stats is None:
        stats = {}
        for name in names:
            total, squares, count = acc[name]
            mean = total / max(1, count)
            std = math.sqrt(max(0.0, squares / max(1, count) - mean * mean))
            key = name[len(layer) + 1 :]
            stats[f"{key}_mean"], stats[f"{key}_std"] = mean, std if std > 0 else 1.0
    for name in names:
        mean, std = _stat(stats, layer, name)
        views[name].sub_(mean).div_(std)
    return [w[p] for p in images], b, stats


def _normalised(array: np.ndarray, mean: float, std: float) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(array), dtype=torch.float32)
    t = t.reshape(t.shape[0], t.shape[1], -1) if t.dim() > 2 else t
    return (t - mean) / std


@torch.no_grad()
def _branch_proba(
    branch: LayerBranch, weight: torch.Tensor | Sequence[torch.Tensor], bias: torch.Tensor | None, device: torch.device
) -> np.ndarray:
    was_training = branch.training
    branch.eval()
    branch.to(device)
    images = [weight] if isinstance(weight, torch.Tensor) else list(weight)
    n = len(images[0])
    out = np.empty((n, 2), dtype=np.float64)
    for i in range(0, n, _PREDICT_BATCH):
        w = [image[i : i + _PREDICT_BATCH].to(device) for image in images]
        b = None if bias is None else bias[i : i + _PREDICT_BATCH].to(device)
        out[i : i + len(w[0])] = torch.softmax(branch(w, b), dim=1).double().cpu().numpy()
    branch.train(was_training)
    return out
