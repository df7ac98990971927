"""Gradient inversion by optimisation: dummy inputs whose update matches the observed one.

:class:`GradientMatching` (``"optimize"``) is the optimisation attack of Zhu et al.,
"Deep leakage from gradients" (NeurIPS 2019, https://arxiv.org/abs/1906.08935) in the
form of Geiping et al., "Inverting gradients - how easy is it to break privacy in
federated learning?" (NeurIPS 2020, https://arxiv.org/abs/2003.14053): starting from
the round's global weights, it optimises dummy inputs (and, when they are not known,
soft labels) so that the update the dummy data would produce matches the client's
recorded update in cosine distance, summed over the parameter tensors.

For FedSGD the dummy update is the gradient of one mini-batch. For FedAvg it is the
pseudo-gradient ``(theta_global - theta_local) / (lr * U)`` of the ``U`` local steps,
simulated differentiably (a hand-unrolled loop with ``create_graph``) with the recorded
learning rate, batch size, local epochs and local optimiser (SGD or Adam).

What the simulation cannot know, and so approximates:

- dropout: the client trained with dropout on and random masks; the dummy forward pass
  runs with dropout off (the expected activation);
- the batch order: within one local epoch the order is a permutation of the dummy
  inputs and so costs nothing; in later epochs the client reshuffled, the simulation
  keeps the first epoch's order.

The prior is written for z-normalised acoustic functionals (Emo-Base, 988 dims), not
images: a norm prior keeping each dummy's mean square near 1 (the typical set of
z-normalised features) and a box penalty on values beyond ``|x| > box`` (99.9% of globally z-normalised Emo-Base values of the
demo corpora lie within 4.2). Image priors (total variation) assume neighbouring
inputs are similar; neighbouring Emo-Base columns are different statistics of one
descriptor (max, min, range, position of the max, ...), so no smoothness prior is used.
For a linear input layer the strongest prior is structural: the inputs lie in the row
space of the input layer's update (:func:`span_basis`).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from fedaudit.attacks.reconstruct.base import (
    RECONSTRUCTIONS,
    ObservedUpdate,
    Reconstruction,
    ReconstructionContext,
    ReconstructionMethod,
    register_reconstruction,
)
from fedaudit.config import FLConfig
from fedaudit.exceptions import InvalidParameterError
from fedaudit.models import build_model

__all__ = [
    "GradientMatching",
    "RecordedModel",
    "input_mixture",
    "local_schedule",
    "local_weights",
    "matched_cosine",
    "simulate_update",
    "span_basis",
]

_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPS = 1e-8
_LABEL_MODES = ("auto", "infer", "optimize")

#: Progress callback: called after each restart with a dict of figures.
ProgressCallback = Callable[[Mapping[str, Any]], None]


# -- the recorded architecture -----------------------------------------------------------------------
class RecordedModel:
    """The architecture a recording names, rebuilt for functional forward passes.

    Parameters
    ----------
    context
        The recording's context: ``config["model"]``, ``["hidden"]``, ``["dropout"]``,
        ``["n_classes"]`` name the architecture; the input width comes from
        ``data["n_features"]``, else ``data["frame_shape"]`` (T x C), else the input
        layer's shape in ``parameter_shapes``.
    device
        Torch device of the forward passes.

    Raises
    ------
    InvalidParameterError
        If the model is not in the registry or its parameters do not have the recorded shapes.
    """

    def __init__(self, context: ReconstructionContext, *, device: torch.device | str = "cpu") -> None:
        config = context.config
        shapes = {name: tuple(int(s) for s in shape) for name, shape in context.parameter_shapes.items()}
        if not shapes:
            raise InvalidParameterError("The recording's context lists no parameters; cannot rebuild its model.")
        frame_shape = context.data.get("frame_shape") or config.get("frame_shape")
        n_features = context.data.get("n_features")
        if n_features is None:
            first = next(iter(shapes.values()))
            n_features = int(np.prod(frame_shape)) if frame_shape else int(first[1])
        self.n_features = int(n_features)
        self.n_classes = int(config.get("n_classes", context.n_classes))
        kwargs: dict[str, Any] = {"n_classes": self.n_classes}
        for key in ("hidden", "dropout"):  # absent: the registry's default architecture of the model
            kwargs[key] = None if config.get(key) is None else tuple(config[key])
        if frame_shape:
            kwargs["frame_shape"] = tuple(int(s) for s in frame_shape)
        name = str(config.get("model", "mlp"))
        try:
            model = build_model(name, self.n_features, **kwargs)
        except TypeError:
            raise InvalidParameterError(
                f"Model {name!r} cannot be built from the recorded configuration {kwargs}; "
                "this fedaudit's model registry does not accept it."
            ) from None
        model.eval()  # the forward pass of the attack: dropout off
        for p in model.parameters():
            p.requires_grad_(False)
        self.device = torch.device(device)
        self.module: nn.Module = model.to(self.device)
        #: recorded name ("fc1.weight") -> module name ("layers.fc1.weight")
        self.full_names = {".".join(n.split(".")[-2:]): n for n, _ in model.named_parameters()}
        built = {short: tuple(p.shape) for short, (_, p) in zip(self.full_names, model.named_parameters())}
        if built != shapes:
            raise InvalidParameterError(
                f"The rebuilt {name!r} model has parameters {built}, but the recording holds {shapes}; "
                "the recorded configuration does not describe the recorded updates."
            )
        self.names: tuple[str, ...] = tuple(shapes)
        self.linears = self._linear_layers(model)
        self._io: list[tuple[nn.Module, torch.Tensor, torch.Tensor]] | None = None
        for module in self.module.modules():
            if isinstance(module, nn.Linear):
                module.register_forward_hook(self._capture)

    def _linear_layers(self, model: nn.Module) -> dict[nn.Module, tuple[int, int]] | None:
        """Linear module -> (index of its weight, of its bias) when every parameter is one of a ``nn.Linear``."""
        index = {full: self.names.index(short) for short, full in self.full_names.items()}
        out: dict[nn.Module, tuple[int, int]] = {}
        covered = 0
        for prefix, module in model.named_modules():
            if isinstance(module, nn.Linear) and module.bias is not None:
                out[module] = (index[f"{prefix}.weight"], index[f"{prefix}.bias"])
                covered += 2
        return out if covered == len(self.names) else None

    def _capture(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if self._io is not None:
            self._io.append((module, inputs[0], output))

    def params(self, weights: Mapping[str, np.ndarray], *, requires_grad: bool = False) -> list[torch.Tensor]:
        """The weights as tensors on the device, in parameter order."""
        missing = [n for n in self.names if n not in weights]
        if missing:
            raise InvalidParameterError(f"The weights lack the parameters {missing}; they do not fit the recording.")
        out = []
        for name in self.names:
            t = torch.as_tensor(np.asarray(weights[name], dtype=np.float32), device=self.device).clone()
            out.append(t.requires_grad_(requires_grad))
        return out

    def forward(self, params: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` under the parameters ``params`` (in parameter order)."""
        mapping = {self.full_names[n]: p for n, p in zip(self.names, params, strict=True)}
        return functional_call(self.module, mapping, (x,))

    def forward_linear_io(
        self, params: Sequence[torch.Tensor], x: torch.Tensor
    ) -> tuple[torch.Tensor, list[tuple[nn.Module, torch.Tensor, torch.Tensor]]]:
        """Logits and, for every ``nn.Linear`` call in order, its (module, input, output)."""
        self._io = []
        try:
            logits = self.forward(params, x)
            return logits, self._io
        finally:
            self._io = None


def local_weights(update: ObservedUpdate) -> dict[str, np.ndarray]:
    """The client's weights after its round: ``global - lr * U * update``.

    For a FedSGD gradient (``U = 1``) this is one SGD step; for a FedAvg
    pseudo-gradient it is exactly the local model the client reached.

    Raises
    ------
    InvalidParameterError
        If the update carries no global weights.
    """
    if update.global_weights is None:
        raise InvalidParameterError(
            f"Update row {update.row} carries no global weights; open the recording with its globals "
            "(observed_updates(..., with_globals=True)) to rebuild the client's local model."
        )
    scale = float(update.lr) * int(update.local_steps)
    return {
        name: (np.asarray(update.global_weights[name], np.float64) - scale * np.asarray(a, np.float64)).astype(
            np.float32
        )
        for name, a in update.arrays.items()
    }


# -- the simulated client ----------------------------------------------------------------------------
def _soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy to target distributions (equals ``nn.CrossEntropyLoss`` on one-hot targets)."""
    return -(target * torch.log_softmax(logits, dim=-1)).sum(-1).mean()


def local_schedule(n: int, *, local_steps: int, batch_size: int, local_epochs: int) -> tuple[list[np.ndarray], bool]:
    """Indices of the dummy inputs in each of the ``U`` local mini-batches, and whether the schedule is exact.

    The client ran ``local_epochs`` epochs of consecutive mini-batches of
    ``batch_size`` over a fresh permutation of its ``n`` samples. When the recorded
    ``U`` does not fit that schedule (a trainer with its own sampling), the ``n``
    samples are split into ``U`` near-equal batches instead, and the schedule is not exact.
    """
    per_epoch = math.ceil(n / batch_size)
    if n >= 1 and per_epoch * local_epochs == local_steps:
        epoch = [np.arange(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
        return epoch * local_epochs, True
    return [b for b in np.array_split(np.arange(n), local_steps) if len(b)], False


def simulate_update(
    model: RecordedModel, params: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor, *, kind: str,
    lr: float = 1.0, schedule: Sequence[np.ndarray] | None = None, optimizer: str = "sgd", create_graph: bool = True,
    adam_smoothing: float = 0.0,
) -> list[torch.Tensor]:
    """The update a client with inputs ``x`` and label distributions ``y`` would send.

    Parameters
    ----------
    model, params
        The architecture and the weights the client starts from (``params`` must require grad).
    x, y
        Inputs ``(n, n_features)`` and target distributions ``(n, n_classes)`` (one-hot for hard labels).
    kind
        ``"gradient"``: the mean cross-entropy gradient of the whole batch ``x``.
        ``"pseudo_gradient"``: ``(theta_0 - theta_U) / (lr * U)`` after the local
        steps of ``schedule`` (index arrays into ``x``) with ``optimizer``.
    create_graph
        Keep the graph so the result can be differentiated with respect to ``x`` and ``y``.

    Returns
    -------
    list of torch.Tensor
        One tensor per parameter, in parameter order.
    """
    if kind == "gradient":
        loss = _soft_cross_entropy(model.forward(params, x), y)
        return list(torch.autograd.grad(loss, list(params), create_graph=create_graph))
    if kind != "pseudo_gradient":
        raise InvalidParameterError(f"Unknown update kind {kind!r}; expected 'gradient' or 'pseudo_gradient'.")
    if not schedule:
        raise InvalidParameterError("A pseudo-gradient needs a schedule of at least one local mini-batch.")
    if optimizer not in ("sgd", "adam"):
        raise InvalidParameterError(f"Unknown local optimiser {optimizer!r}; expected 'sgd' or 'adam'.")
    w = list(params)
    moved = [torch.zeros_like(p) for p in w]  # theta_0 - theta_t, accumulated without cancellation
    m = [torch.zeros_like(p) for p in w]
    v = [torch.zeros_like(p) for p in w]
    b1, b2 = _ADAM_BETAS
    for t, rows in enumerate(schedule, start=1):
        idx = torch.as_tensor(rows, device=x.device)
        loss = _soft_cross_entropy(model.forward(w, x[idx]), y[idx])
        grads = torch.autograd.grad(loss, w, create_graph=create_graph)
        if optimizer == "sgd":
            steps = [lr * g for g in grads]
        else:  # torch.optim.Adam's update, written out so it can be differentiated
            m = [b1 * mi + (1 - b1) * g for mi, g in zip(m, grads)]
            v = [b2 * vi + (1 - b2) * g * g for vi, g in zip(v, grads)]
            bc1, bc2 = 1 - b1**t, math.sqrt(1 - b2**t)
            # clamp: d sqrt(v)/dv is infinite at v = 0 (unused units); the value moves by < 1e-15
            denoms = [vi.clamp_min(1e-30).sqrt() / bc2 + _ADAM_EPS for vi in v]
            if adam_smoothing > 0:  # a soft sign: the first Adam steps are ~sign(g), whose derivative is ~0
                denoms = [dn + adam_smoothing * dn.detach().pow(2).mean().sqrt() for dn in denoms]
            steps = [(lr / bc1) * mi / dn for mi, dn in zip(m, denoms)]
        w = [p - s for p, s in zip(w, steps)]
        moved = [a + s for a, s in zip(moved, steps)]
    scale = lr * len(schedule)
    return [a / scale for a in moved]


def _cosine_distance(dummy: Sequence[torch.Tensor], observed_unit: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum over tensors of ``1 - cos(dummy, observed)``; ``observed_unit`` holds the observed tensors at unit norm."""
    total = dummy[0].new_zeros(())
    for d, o in zip(dummy, observed_unit, strict=True):
        total = total + 1 - (d * o).sum() / (d.norm() + 1e-12)
    return total


def _factored_cosine_distance(
    model: RecordedModel, params: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
    observed_unit: Mapping[int, torch.Tensor],
) -> torch.Tensor | None:
    """:func:`_cosine_distance` of a FedSGD gradient of a model made of linear layers, without forming ``dW``.

    A linear layer with inputs ``a`` (rows) and output gradients ``g`` has ``dW = g^T a``
    and ``db = sum(g)``, so ``<dW, G> = sum(g * (a G^T))`` and
    ``|dW|^2 = sum((g g^T) * (a a^T))``: the cosine to an observed ``G`` needs no
    ``(out, in)`` tensor while there are fewer rows than ``sqrt(out * in)``.
    Returns ``None`` when the model is not of that form (the caller then forms the gradient).
    """
    if model.linears is None:
        return None
    logits, io = model.forward_linear_io(params, x)
    if len({id(m) for m, _, _ in io}) != len(io) or len(io) != len(model.linears):
        return None  # a layer called twice, or one not called
    loss = _soft_cross_entropy(logits, y)
    grads = torch.autograd.grad(loss, [out for _, _, out in io], create_graph=True)
    total = x.new_zeros(())
    for (module, inp, out), g in zip(io, grads):
        w_idx, b_idx = model.linears[module]
        a2 = inp.reshape(-1, inp.shape[-1])
        g2 = g.reshape(-1, out.shape[-1])
        if w_idx in observed_unit:
            o = observed_unit[w_idx]
            if a2.shape[0] ** 2 <= o.numel():
                dot = (g2 * (a2 @ o.T)).sum()
                norm = ((g2 @ g2.T) * (a2 @ a2.T)).sum().clamp_min(1e-30).sqrt()
            else:
                dw = g2.T @ a2
                dot, norm = (dw * o).sum(), dw.norm()
            total = total + 1 - dot / (norm + 1e-12)
        if b_idx in observed_unit:
            db = g2.sum(0)
            total = total + 1 - (db * observed_unit[b_idx]).sum() / (db.norm() + 1e-12)
    return total


def matched_cosine(recovered: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Cosine of each true input to the recovered vector assigned to it (Hungarian matching).

    The assignment maximises the summed cosine (each recovered vector is used at
    most once). Returns one cosine per matched pair, ``min(len(recovered), len(true))`` in all.
    """
    from scipy.optimize import linear_sum_assignment

    r = np.atleast_2d(np.asarray(recovered, np.float64))
    t = np.atleast_2d(np.asarray(true, np.float64))
    if r.shape[1] != t.shape[1]:
        raise InvalidParameterError(
            f"Recovered vectors have {r.shape[1]} features, the true inputs {t.shape[1]}; they cannot be compared."
        )
    rn = r / np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-12)
    tn = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    sim = tn @ rn.T
    rows, cols = linear_sum_assignment(-sim)
    return sim[rows, cols]


def _largest_remainder(counts: np.ndarray, total: int) -> np.ndarray:
    """Non-negative integers proportional to ``counts`` that sum to ``total``."""
    c = np.clip(np.nan_to_num(np.asarray(counts, np.float64)), 0, None)
    if c.sum() <= 0:
        c = np.ones_like(c)
    share = c / c.sum() * total
    out = np.floor(share).astype(np.int64)
    order = np.argsort(-(share - out), kind="stable")
    out[order[: total - out.sum()]] += 1
    return out


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _device(device: str | None, owner: str) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        out = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidParameterError(
            f"The 'device' parameter of {owner} must be None or a torch device such as 'cpu' or 'cuda'. "
            f"Got {device!r} instead."
        ) from None
    if out.type == "cuda" and not torch.cuda.is_available():
        raise InvalidParameterError(f"device={device!r} was requested but CUDA is not available here; pass None or 'cpu'.")
    return out


def _generator(seed: int, *parts: int) -> torch.Generator:
    state = np.random.SeedSequence([int(seed), *(int(p) for p in parts)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _prior(x: torch.Tensor, *, l2: float, box: float, box_weight: float, kind: str = "gauss") -> torch.Tensor:
    """``l2 * mean(x ** 2)`` (``"gauss"``) or ``l2 * mean_b((mean_j x_bj ** 2 - 1) ** 2)`` (``"norm"``), plus the box."""
    if kind == "norm":
        out = l2 * (x.pow(2).mean(-1) - 1).pow(2).mean()
    elif kind == "gauss":
        out = l2 * x.pow(2).mean()
    else:
        out = x.new_zeros(())
    if box_weight > 0:
        out = out + box_weight * torch.relu(x.abs() - box).pow(2).mean()
    return out


def _lr_factor(schedule: str, total: int) -> Callable[[int], float]:
    """Learning-rate factor per step of a schedule (``"cosine"``, ``"step"`` or ``"constant"``)."""

    def factor(step: int) -> float:
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        if schedule == "step":
            return 0.1 ** sum(step >= int(total * f) for f in (3 / 8, 5 / 8, 7 / 8))
        return 1.0

    return factor


def _label_inference(context: ReconstructionContext) -> ReconstructionMethod | None:
    """The registered ``"labels"`` method (last-layer label inference), prepared, when this fedaudit has it."""
    try:
        import fedaudit.attacks.reconstruct.labels  # noqa: F401  (registers "labels")
    except ImportError:
        return None
    cls = RECONSTRUCTIONS.get("labels")
    if cls is None:
        return None
    try:
        return cls().prepare(context)
    except InvalidParameterError:  # an architecture without a classifier output layer
        return None


def _check(owner: str, name: str, ok: bool, expected: str, value: Any) -> None:
    if not ok:
        raise InvalidParameterError(f"The {name!r} parameter of {owner} must be {expected}. Got {value!r} instead.")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and math.isfinite(value)


# -- the method ------------------------------------------------------------------------------------
def span_basis(weight_update: np.ndarray, rank: int) -> np.ndarray:
    """Orthonormal basis ``(k, n_inputs)`` of the top-``rank`` right singular vectors of an input-layer update.

    For a linear input layer the FedSGD weight gradient is ``(1/B) sum_b delta_b x_b^T``
    (and a local-SGD pseudo-gradient a mean of such matrices), so every input of the
    batch lies in its row space, of rank at most ``B``. Singular vectors with a
    singular value below ``1e-6`` of the largest are dropped (``k <= rank``).
    """
    w = np.asarray(weight_update, np.float64)
    if w.ndim != 2:
        raise InvalidParameterError(f"A span basis needs a 2-D input-layer update; got shape {w.shape}.")
    _, sv, vh = np.linalg.svd(w, full_matrices=False)
    if sv.size == 0 or sv[0] <= 0:
        return np.zeros((0, w.shape[1]))
    k = int(min(rank, np.sum(sv > 1e-6 * sv[0])))
    return vh[:k]


def input_mixture(weight_update: np.ndarray, bias_update: np.ndarray) -> np.ndarray:
    """``db^T dW / |db|^2`` of a linear input layer: a weighted mean of the batch's inputs (the input for one sample).

    With ``dW = (1/B) sum_b delta_b x_b^T`` and ``db = (1/B) sum_b delta_b``, this is
    ``sum_b w_b x_b`` with weights ``w_b = db . delta_b / |db|^2`` summing to 1.
    Zeros when the bias update is zero.
    """
    w = np.asarray(weight_update, np.float64)
    b = np.asarray(bias_update, np.float64)
    denom = float(b @ b)
    return np.zeros(w.shape[1]) if denom <= 0 else (b @ w) / denom


_SCHEDULES = ("cosine", "step", "constant")
_PRIORS = ("norm", "gauss", "none")
_INITS = ("random", "mixture")


@register_reconstruction
class GradientMatching(ReconstructionMethod):
    """Optimise dummy inputs until their simulated update matches the observed one (DLG / inverting gradients).

    Zhu et al., "Deep leakage from gradients" (NeurIPS 2019); Geiping et al.,
    "Inverting gradients" (NeurIPS 2020): cosine distance summed over the parameter
    tensors, Adam on the dummy inputs, and restarts from independent random starts
    of which the best match is kept. Starts lie near the update's input mixture
    (:func:`input_mixture`, the input itself for one sample) by default; random first
    starts are put on its side (the opposite side is a trap the ReLU gates cannot
    leave). Soft labels start uniform, and random in further starts.

    One prior is specific to the architecture: when the input layer is linear on the
    flat input (the MLP), every input of a FedSGD batch (and of a local-SGD client)
    lies in the row space of the input layer's weight update, of rank at most the
    number of samples (:func:`span_basis`). With ``span`` on, the gradient and the
    dummy inputs are projected onto that space at every step (Adam's per-coordinate
    rescaling of an in-span gradient is still a descent direction; projecting only
    the iterate is not, and lost the sign of one-sample inputs). For the effect on
    the Emo-Base MLP see part 5 of ``benchmarks/bench_optimize.py``. It holds only
    approximately under added noise (the top singular vectors then estimate the
    space) and for a local Adam optimiser (its steps are rescaled per coordinate;
    on, it still matched better there), and not at all for convolutional or
    recurrent input layers (off there).

    A local Adam optimiser (FLConfig's default for FedAvg) makes the first local
    steps close to ``lr * sign(g)``, whose derivative is almost zero: the exact
    simulation gives the optimisation nothing to follow (matched cosine about 0.05
    on the Emo-Base MLP). ``adam_smoothing`` adds ``adam_smoothing * rms(denominator)``
    to the simulated Adam denominator, a soft sign with a usable gradient (the
    simulated update then is not the client's exact one).

    Labels come, in order of preference, from the ``labels`` argument of
    :meth:`reconstruct` (per-sample classes the caller knows), from the registered
    last-layer label inference (``"labels"``, :mod:`fedaudit.attacks.reconstruct.labels`;
    ``label_mode="auto"`` or ``"infer"``), or are optimised jointly as soft labels
    (``label_mode="optimize"``, or ``"auto"`` when this fedaudit has no label inference).

    Parameters
    ----------
    iterations
        Adam steps per restart.
    restarts
        Independent random starts; the one with the lowest final matching loss is returned.
    lr
        Adam learning rate on the dummy inputs (and soft-label logits).
    schedule
        Learning-rate schedule: ``"cosine"`` (annealed to 0), ``"step"`` (x0.1 at
        3/8, 5/8 and 7/8 of the budget, as Geiping et al.) or ``"constant"``.
    signed
        Feed Adam the sign of the gradient (Geiping et al.); off by default, as the
        plain gradient matched better on the Emo-Base MLP.
    span
        Project the dummy inputs onto the row space of the input layer's update
        (see above); ``None`` turns it on for a linear input layer on the flat input.
    adam_smoothing
        Soft-sign smoothing of a simulated local Adam step (see above); 0 simulates it exactly.
    prior, prior_weight
        ``"norm"``: ``prior_weight * mean_b((mean_j x_bj ** 2 - 1) ** 2)``, each dummy's mean
        square near 1, the typical set of z-normalised features (a 988-dim standard normal
        vector lies near the sphere of radius ``sqrt(988)``, not near its mode 0; demo
        Emo-Base rows have RMS 0.99); ``"gauss"``: ``prior_weight * mean(x ** 2)``, a pull
        toward the mean; ``"none"``. The choice moved the matched cosine by at most 0.04
        on the demo (``benchmarks/bench_optimize.py``); the span prior matters far more.
    box, box_weight
        Penalty ``box_weight * mean(relu(|x| - box) ** 2)`` on values outside ``[-box, box]``.
    init
        ``"mixture"``: every dummy starts at the update's input mixture plus noise of
        ``0.3 * init_scale`` (near the batch mean, which is close to each sample when a
        client's samples are alike: one speaker's utterances); ``"random"``: random starts
        of standard deviation ``init_scale``. On the demo (FedSGD, batch 20, 300
        iterations) the mixture start matched 0.66 against 0.61 for random starts.
    init_scale
        Standard deviation of the random start.
    layers
        Parameter tensors to match (``"fc1.weight"``, ...); ``None`` matches them all.
    label_mode
        ``"auto"``, ``"infer"`` or ``"optimize"`` (see above).
    device
        Torch device; ``None`` picks CUDA when available, else the CPU.
    num_threads
        CPU threads while reconstructing (restored afterwards); ``None`` keeps torch's setting. The
        tensors are small: on 2 shared cores, 2 threads ran 5-20x slower than 1
        (``benchmarks/bench_optimize.py``).
    seed
        Seed of the random starts (combined with the update's row, so every update has its own).
    progress
        Called after every restart with a dict (``row``, ``restart``, ``matching_loss``, ``seconds``).

    Examples
    --------
    >>> method = GradientMatching(iterations=300, seed=0).prepare(ReconstructionContext.from_store(store))  # doctest: +SKIP
    >>> rec = method.reconstruct(update)  # doctest: +SKIP
    >>> rec.features.shape, rec.info["matching_loss"]  # doctest: +SKIP
    """

    name = "optimize"
    produces = frozenset({"features", "labels"})
    needs_model = True
    needs_globals = True

    def __init__(
        self, *, iterations: int = 300, restarts: int = 1, lr: float = 0.1, schedule: str = "cosine",
        signed: bool = False, span: bool | None = None, adam_smoothing: float = 1.0, prior: str = "norm",
        prior_weight: float = 1e-2, box: float = 4.0,
        box_weight: float = 1.0, init: str = "mixture", init_scale: float = 1.0, layers: Sequence[str] | None = None,
        label_mode: str = "auto", device: str | None = None, num_threads: int | None = 1, seed: int = 0,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.iterations = iterations
        self.restarts = restarts
        self.lr = lr
        self.schedule = schedule
        self.signed = signed
        self.span = span
        self.adam_smoothing = adam_smoothing
        self.prior = prior
        self.prior_weight = prior_weight
        self.box = box
        self.box_weight = box_weight
        self.init = init
        self.init_scale = init_scale
        self.layers = layers
        self.label_mode = label_mode
        self.device = device
        self.num_threads = num_threads
        self.seed = seed
        self.progress = progress

    def _validate_params(self) -> None:
        owner = type(self).__name__
        _check(owner, "iterations", _is_int(self.iterations) and self.iterations >= 1, "an integer >= 1", self.iterations)
        _check(owner, "restarts", _is_int(self.restarts) and self.restarts >= 1, "an integer >= 1", self.restarts)
        for name in ("lr", "init_scale", "box"):
            value = getattr(self, name)
            _check(owner, name, _is_number(value) and value > 0, "a number > 0", value)
        for name in ("prior_weight", "box_weight", "adam_smoothing"):
            value = getattr(self, name)
            _check(owner, name, _is_number(value) and value >= 0, "a number >= 0", value)
        _check(owner, "schedule", self.schedule in _SCHEDULES, f"one of {list(_SCHEDULES)}", self.schedule)
        _check(owner, "prior", self.prior in _PRIORS, f"one of {list(_PRIORS)}", self.prior)
        _check(owner, "init", self.init in _INITS, f"one of {list(_INITS)}", self.init)
        _check(owner, "signed", isinstance(self.signed, bool), "True or False", self.signed)
        _check(owner, "span", self.span is None or isinstance(self.span, bool), "None, True or False", self.span)
        _check(owner, "label_mode", self.label_mode in _LABEL_MODES, f"one of {list(_LABEL_MODES)}", self.label_mode)
        _check(owner, "seed", _is_int(self.seed), "an integer", self.seed)
        _check(owner, "num_threads", self.num_threads is None or (_is_int(self.num_threads) and self.num_threads >= 1),
               "None or an integer >= 1", self.num_threads)
        _check(owner, "layers", not isinstance(self.layers, str), "None or a sequence of parameter names", self.layers)
        _check(owner, "progress", self.progress is None or callable(self.progress), "None or a callable", self.progress)

    def prepare(self, context: ReconstructionContext) -> GradientMatching:
        """Check the parameters, rebuild the recorded model; returns ``self``.

        Raises
        ------
        InvalidParameterError
            On a bad parameter, a model the registry cannot build, ``layers`` naming
            unknown tensors, or ``span=True`` for an input layer it does not hold for.
        """
        self._validate_params()
        self.context_ = context
        self.device_ = _device(self.device, type(self).__name__)
        with _threads(self.num_threads):
            self.model_ = RecordedModel(context, device=self.device_)
        names = self.model_.names
        if self.layers is not None:
            unknown = [n for n in self.layers if n not in names]
            if unknown or not self.layers:
                raise InvalidParameterError(
                    f"The 'layers' parameter of {type(self).__name__} names {list(self.layers)}; "
                    f"choose among the recorded parameters {list(names)}."
                )
        self.matched_ = [i for i, n in enumerate(names) if self.layers is None or n in self.layers]
        config = context.config
        defaults = FLConfig()
        self.batch_size_ = int(config.get("batch_size", defaults.batch_size))
        self.local_epochs_ = int(config.get("local_epochs", defaults.local_epochs))
        self.optimizer_ = str(config.get("optimizer", defaults.optimizer))
        first = tuple(context.parameter_shapes[names[0]])
        self.linear_input_ = len(first) == 2 and first[1] == self.model_.n_features
        if self.span and not self.linear_input_:
            raise InvalidParameterError(
                f"span=True needs a linear input layer on the flat input; {names[0]} has shape {first} for "
                f"{self.model_.n_features} inputs. Use span=None or False."
            )
        self.labels_ = None if self.label_mode == "optimize" else _label_inference(context)
        return self

    # -- labels --------------------------------------------------------------------------------------
    def _labels(
        self, update: ObservedUpdate, n: int, labels: Sequence[int] | np.ndarray | None
    ) -> tuple[np.ndarray | None, str]:
        k = self.model_.n_classes
        if labels is not None:
            given = np.asarray(labels)
            if (
                given.shape != (n,) or not np.issubdtype(given.dtype, np.integer)
                or given.min() < 0 or given.max() >= k
            ):
                raise InvalidParameterError(
                    f"The labels of update row {update.row} must be {n} class indices in [0, {k - 1}] "
                    f"(one per sample behind the update). Got an array of shape {given.shape}, dtype {given.dtype}."
                )
            return given.astype(np.int64), "given"
        if self.labels_ is None:
            if self.label_mode == "infer":
                raise InvalidParameterError(
                    "label_mode='infer' needs the 'labels' reconstruction method, which this fedaudit lacks "
                    "or which does not apply to this architecture; use label_mode='optimize' or pass the labels."
                )
            return None, "optimized"
        counts = np.asarray(self.labels_.reconstruct(update).label_counts, dtype=np.float64).reshape(-1)
        if counts.shape != (k,):
            raise InvalidParameterError(f"Label inference returned {counts.shape[0]} counts for {k} classes.")
        return np.repeat(np.arange(k), _largest_remainder(counts, n)), "inferred"

    # -- the reconstruction --------------------------------------------------------------------------
    def reconstruct(
        self, update: ObservedUpdate, *, labels: Sequence[int] | np.ndarray | None = None
    ) -> Reconstruction:
        """Recover the inputs (and labels) behind one update.

        Parameters
        ----------
        update
            The observed update, with the round's global weights.
        labels
            Per-sample classes of the samples behind the update, when the caller knows
            them (FedSGD: ``num_samples``; FedAvg: ``num_samples / local_epochs``).

        Returns
        -------
        Reconstruction
            ``features`` ``(n, n_features)`` (one row per dummy sample, in the model's
            normalised input space), ``feature_weights`` ``1 / n`` each, ``label_counts``
            (given, inferred, or the argmax of the optimised soft labels), and ``info``:
            ``iterations``, ``restarts``, ``best_restart``, ``matching_loss`` (cosine
            distance summed over the matched tensors, 0 = perfect), ``prior_loss``,
            ``seconds``, ``n_dummy``, ``span_rank`` (dimension of the span prior, 0 when
            off), ``schedule_exact`` (1.0 when the simulated local schedule is the
            client's), ``label_source`` (``"given"``, ``"inferred"`` or ``"optimized"``).

        Raises
        ------
        InvalidParameterError
            If the method was not prepared, the update has no global weights, an unknown
            kind, or labels that do not fit it.
        """
        if not hasattr(self, "model_"):
            raise InvalidParameterError(f"{type(self).__name__} must be prepared with a context before reconstructing.")
        if update.global_weights is None:
            raise InvalidParameterError(
                f"Update row {update.row} carries no global weights; the 'optimize' method needs the round's "
                "global model (record with globals and read with observed_updates(..., with_globals=True))."
            )
        if update.kind not in ("gradient", "pseudo_gradient"):
            raise InvalidParameterError(f"Update row {update.row} has unknown kind {update.kind!r}.")
        start = time.perf_counter()
        if update.kind == "gradient":
            n = int(update.num_samples)
            schedule, exact = None, True
        else:
            n = int(update.num_samples) // max(1, self.local_epochs_)
            schedule, exact = local_schedule(
                n, local_steps=int(update.local_steps), batch_size=self.batch_size_, local_epochs=self.local_epochs_
            )
        if n < 1:
            raise InvalidParameterError(f"Update row {update.row} stands for {update.num_samples} samples; need >= 1.")
        hard, label_source = self._labels(update, n, labels)
        model = self.model_
        use_span = self.span if self.span is not None else self.linear_input_
        basis = None
        with _threads(self.num_threads):
            if use_span:
                vh = span_basis(update.arrays[model.names[0]], n)
                basis = torch.as_tensor(vh, dtype=torch.float32, device=self.device_) if len(vh) < vh.shape[1] else None
            mixture = None
            bias_name = model.names[0].rsplit(".", 1)[0] + ".bias"
            if self.linear_input_ and bias_name in update.arrays:
                mixture = torch.as_tensor(
                    input_mixture(update.arrays[model.names[0]], update.arrays[bias_name]), dtype=torch.float32,
                    device=self.device_,
                )
            params = model.params(update.global_weights, requires_grad=True)
            observed = [
                torch.as_tensor(np.asarray(update.arrays[name], np.float32), device=self.device_)
                for name in model.names
            ]
            best: tuple[float, int, torch.Tensor, torch.Tensor | None, float] | None = None
            for restart in range(int(self.restarts)):
                match, x, z, prior = self._run(
                    model, params, observed, n, hard, update, schedule, basis, mixture, restart
                )
                if best is None or match < best[0]:
                    best = (match, restart, x, z, prior)
                if self.progress is not None:
                    self.progress({"row": update.row, "restart": restart, "matching_loss": match,
                                   "seconds": time.perf_counter() - start})
        assert best is not None
        match, best_restart, x, z, prior = best
        k = model.n_classes
        counts = np.bincount(hard if hard is not None else z.argmax(dim=1).cpu().numpy(), minlength=k)
        return Reconstruction(
            method=self.name, row=update.row, client_id=update.client_id, server_round=update.server_round,
            features=x.cpu().numpy().astype(np.float32), feature_weights=np.full(n, 1.0 / n),
            label_counts=counts.astype(np.float64),
            info={
                "iterations": float(self.iterations), "restarts": float(self.restarts),
                "best_restart": float(best_restart), "matching_loss": float(match), "prior_loss": float(prior),
                "seconds": time.perf_counter() - start, "n_dummy": float(n),
                "span_rank": float(0 if basis is None else len(basis)), "schedule_exact": float(exact),
                "label_source": label_source,
            },
        )

    def _run(
        self, model: RecordedModel, params: list[torch.Tensor], observed: list[torch.Tensor], n: int,
        hard: np.ndarray | None, update: ObservedUpdate, schedule: list[np.ndarray] | None,
        basis: torch.Tensor | None, mixture: torch.Tensor | None, restart: int,
    ) -> tuple[float, torch.Tensor, torch.Tensor | None, float]:
        gen = _generator(self.seed, update.row, restart)
        k = model.n_classes
        keep = [i for i in self.matched_ if float(observed[i].norm()) > 0]  # an all-zero tensor has no direction
        if not keep:
            raise InvalidParameterError(f"Update row {update.row} is all zeros in the matched tensors; nothing to match.")
        obs = [observed[i] / observed[i].norm() for i in keep]

        def project(v: torch.Tensor) -> torch.Tensor:
            return v if basis is None else (v @ basis.T) @ basis

        x0 = project(self.init_scale * torch.randn(n, model.n_features, generator=gen).to(self.device_))
        if mixture is not None and restart == 0:  # on the side of the update's input mixture (one sample: the input)
            x0 = x0 * torch.where(x0 @ mixture >= 0, 1.0, -1.0)[:, None]
        if self.init == "mixture" and mixture is not None:  # the mixture, spread by noise to break the symmetry
            noise = 0.3 * self.init_scale * torch.randn(n, model.n_features, generator=gen)
            x0 = project(mixture[None] + noise.to(self.device_))
        x = x0.requires_grad_()
        variables = [x]
        z = None
        y_fixed = None
        if hard is None:
            z = torch.randn(n, k, generator=gen).to(self.device_) if restart else torch.zeros(n, k, device=self.device_)
            z.requires_grad_()  # the first start from uniform soft labels, the others from random ones
            variables.append(z)
        else:
            y_fixed = torch.nn.functional.one_hot(torch.as_tensor(hard, device=self.device_), k).float()
        opt = torch.optim.Adam(variables, lr=float(self.lr))
        total = int(self.iterations)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(self.schedule, total))

        obs_by_index = dict(zip(keep, obs))
        factored = update.kind == "gradient" and model.linears is not None

        def objective() -> tuple[torch.Tensor, torch.Tensor]:
            nonlocal factored
            y = torch.softmax(z, dim=1) if z is not None else y_fixed
            prior = _prior(x, l2=float(self.prior_weight), box=float(self.box), box_weight=float(self.box_weight),
                           kind=self.prior)
            if factored:
                match = _factored_cosine_distance(model, params, x, y, obs_by_index)
                if match is not None:
                    return match, prior
                factored = False
            dummy = simulate_update(
                model, params, x, y, kind=update.kind, lr=float(update.lr), schedule=schedule,
                optimizer=self.optimizer_, adam_smoothing=float(self.adam_smoothing),
            )
            return _cosine_distance([dummy[i] for i in keep], obs), prior

        for _ in range(total):
            opt.zero_grad(set_to_none=True)
            match, prior = objective()
            (match + prior).backward(inputs=variables)
            if basis is not None:  # Adam then rescales an in-span gradient per coordinate: still a descent direction
                x.grad = project(x.grad)
            if self.signed:
                for v in variables:
                    v.grad.sign_()
            opt.step()
            sched.step()
            if basis is not None:
                with torch.no_grad():
                    x.copy_(project(x))
        match, prior = objective()
        return float(match.detach()), x.detach(), None if z is None else z.detach(), float(prior.detach())
