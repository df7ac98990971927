"""Model inversion: a representative feature vector of each emotion class, from a model alone.

:func:`invert_model` and :class:`ModelInversion` (``"model"``) follow Fredrikson et
al., "Model inversion attacks that exploit confidence information and basic
countermeasures" (CCS 2015), the attack the LDP-FL publication (Mohammadi et al.,
FedCSIS 2023) evaluates against federated SER: given white-box access to a model
and a class, find the input the model scores as most typical of that class, by
minimising the cross-entropy to the class under a prior that keeps the input in
the range of real (z-normalised) features.

The objective for a class ``c`` is

    CE(f(x), c) + prior_weight * mean(x ** 2) + box_weight * mean(relu(|x| - box) ** 2),

minimised by Adam from several random starts (solved together as one batch: the
terms of different starts do not interact). The starts' solutions are averaged
(``combine="mean"``) or the one of lowest objective kept (``"best"``).

Applied to an update, the method inverts the client's model: its local weights
``global - lr * U * update`` (a FedAvg client's exact local model; for FedSGD one
SGD step), or the round's global model (``source="global"``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from fedaudit.attacks.reconstruct.base import (
    ObservedUpdate,
    Reconstruction,
    ReconstructionContext,
    ReconstructionMethod,
    register_reconstruction,
)
from fedaudit.attacks.reconstruct.optimize import (
    RecordedModel,
    _check,
    _device,
    _generator,
    _is_int,
    _is_number,
    _prior,
    _threads,
    local_weights,
)
from fedaudit.exceptions import InvalidParameterError

__all__ = ["ModelInversion", "invert_model"]

_COMBINE = ("mean", "best")
_SOURCES = ("local", "global")


def _check_inversion(owner: str, *, iterations: Any, restarts: Any, lr: Any, prior_weight: Any, box: Any,
                     box_weight: Any, init_scale: Any, combine: Any, seed: Any, num_threads: Any) -> None:
    _check(owner, "iterations", _is_int(iterations) and iterations >= 1, "an integer >= 1", iterations)
    _check(owner, "restarts", _is_int(restarts) and restarts >= 1, "an integer >= 1", restarts)
    for name, value in (("lr", lr), ("box", box), ("init_scale", init_scale)):
        _check(owner, name, _is_number(value) and value > 0, "a number > 0", value)
    for name, value in (("prior_weight", prior_weight), ("box_weight", box_weight)):
        _check(owner, name, _is_number(value) and value >= 0, "a number >= 0", value)
    _check(owner, "combine", combine in _COMBINE, f"one of {list(_COMBINE)}", combine)
    _check(owner, "seed", _is_int(seed), "an integer", seed)
    _check(owner, "num_threads", num_threads is None or (_is_int(num_threads) and num_threads >= 1),
           "None or an integer >= 1", num_threads)


def _invert(
    model: RecordedModel, params: Sequence[torch.Tensor], classes: Sequence[int], *, iterations: int, restarts: int,
    lr: float, prior_weight: float, box: float, box_weight: float, init_scale: float, combine: str,
    generator: torch.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Representatives ``(len(classes), n_features)``, their objective and the model's probability of their class."""
    k, r, d = len(classes), restarts, model.n_features
    device = params[0].device
    target = torch.as_tensor(np.repeat(np.asarray(classes, np.int64), r), device=device)
    x = (init_scale * torch.randn(k * r, d, generator=generator)).to(device).requires_grad_()
    opt = torch.optim.Adam([x], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iterations)

    def objective() -> torch.Tensor:  # one value per start
        ce = torch.nn.functional.cross_entropy(model.forward(params, x), target, reduction="none")
        prior = prior_weight * x.pow(2).mean(1) + box_weight * torch.relu(x.abs() - box).pow(2).mean(1)
        return ce + prior

    for _ in range(iterations):
        opt.zero_grad(set_to_none=True)
        objective().sum().backward(inputs=[x])
        opt.step()
        sched.step()
    with torch.no_grad():
        per_start = objective().reshape(k, r)
        xs = x.detach().reshape(k, r, d)
        if combine == "mean":
            reps = xs.mean(1)
        else:
            reps = xs[torch.arange(k), per_start.argmin(1)]
        probs = torch.softmax(model.forward(params, reps), dim=1)
        conf = probs[torch.arange(k), torch.as_tensor(list(classes), device=device)]
        ce = torch.nn.functional.cross_entropy(
            model.forward(params, reps), torch.as_tensor(list(classes), device=device), reduction="none"
        )
        loss = ce + _prior_rows(reps, prior_weight=prior_weight, box=box, box_weight=box_weight)
    return reps.cpu().numpy().astype(np.float32), loss.cpu().numpy(), conf.cpu().numpy()


def _prior_rows(x: torch.Tensor, *, prior_weight: float, box: float, box_weight: float) -> torch.Tensor:
    return torch.stack([_prior(row, l2=prior_weight, box=box, box_weight=box_weight) for row in x])


def invert_model(
    weights: Mapping[str, np.ndarray], context: ReconstructionContext, *, target_class: int,
    iterations: int = 300, restarts: int = 4, lr: float = 0.05, prior_weight: float = 1.0, box: float = 4.0,
    box_weight: float = 1.0, init_scale: float = 1.0, combine: str = "mean", seed: int = 0,
    device: str | None = None, num_threads: int | None = 1,
) -> np.ndarray:
    """A representative input of one class for a model: ``argmin_x CE(f(x), c) + prior(x)``.

    Parameters
    ----------
    weights
        The model's parameters by recorded name (``"fc1.weight"``, ...), e.g. a round's global weights.
    context
        The recording's context (architecture, input width, number of classes).
    target_class
        Class index in ``[0, n_classes)`` (the order of :data:`fedaudit.types.EMOTIONS`).
    iterations, restarts, lr
        Adam steps (cosine-annealed learning rate ``lr``) from ``restarts`` random starts.
    prior_weight, box, box_weight
        The Gaussian prior ``prior_weight * mean(x ** 2)`` and the box penalty beyond ``|x| > box``.
    init_scale
        Standard deviation of the random starts (normalised features have 1).
    combine
        ``"mean"`` of the starts' solutions, or the ``"best"`` one.
    seed, device, num_threads
        Seed of the starts; torch device (``None``: CUDA when available); CPU threads.

    Returns
    -------
    numpy.ndarray
        The representative, shape ``(n_features,)``, in the model's (normalised) input space.

    Raises
    ------
    InvalidParameterError
        On a bad parameter, a class out of range, or weights that do not fit the context.

    Examples
    --------
    >>> x = invert_model(store.global_weights(50), ReconstructionContext.from_store(store), target_class=2)  # doctest: +SKIP
    """
    _check_inversion("invert_model", iterations=iterations, restarts=restarts, lr=lr, prior_weight=prior_weight,
                     box=box, box_weight=box_weight, init_scale=init_scale, combine=combine, seed=seed,
                     num_threads=num_threads)
    dev = _device(device, "invert_model")
    with _threads(num_threads):
        model = RecordedModel(context, device=dev)
        if not _is_int(target_class) or not 0 <= target_class < model.n_classes:
            raise InvalidParameterError(
                f"The 'target_class' parameter of invert_model must be a class index in [0, {model.n_classes - 1}]. "
                f"Got {target_class!r} instead."
            )
        reps, _, _ = _invert(
            model, model.params(weights), [int(target_class)], iterations=iterations, restarts=restarts, lr=lr,
            prior_weight=prior_weight, box=box, box_weight=box_weight, init_scale=init_scale, combine=combine,
            generator=_generator(seed, int(target_class)),
        )
    return reps[0]


@register_reconstruction
class ModelInversion(ReconstructionMethod):
    """Model inversion of a client's model: one representative feature vector per class (``"model"``).

    Fredrikson et al. (CCS 2015), as evaluated in the LDP-FL publication
    (Mohammadi et al., FedCSIS 2023). See :func:`invert_model` for the objective.

    Parameters
    ----------
    source
        ``"local"``: invert the client's local model ``global - lr * U * update``;
        ``"global"``: invert the round's global model (the update then only names the round).
    classes
        Classes to invert (indices); ``None`` inverts every class, in index order.
    iterations, restarts, lr, prior_weight, box, box_weight, init_scale, combine
        As for :func:`invert_model`.
    device, num_threads, seed
        Torch device (``None``: CUDA when available); CPU threads while inverting;
        seed of the random starts (combined with the update's row).

    Examples
    --------
    >>> method = ModelInversion(seed=0).prepare(ReconstructionContext.from_store(store))  # doctest: +SKIP
    >>> rec = method.reconstruct(update)  # doctest: +SKIP
    >>> rec.features.shape, rec.info["class_order"]  # doctest: +SKIP
    """

    name = "model"
    produces = frozenset({"features"})
    needs_model = True
    needs_globals = True

    def __init__(
        self, *, source: str = "local", classes: Sequence[int] | None = None, iterations: int = 300,
        restarts: int = 4, lr: float = 0.05, prior_weight: float = 1.0, box: float = 4.0, box_weight: float = 1.0,
        init_scale: float = 1.0, combine: str = "mean", device: str | None = None, num_threads: int | None = 1,
        seed: int = 0,
    ) -> None:
        self.source = source
        self.classes = classes
        self.iterations = iterations
        self.restarts = restarts
        self.lr = lr
        self.prior_weight = prior_weight
        self.box = box
        self.box_weight = box_weight
        self.init_scale = init_scale
        self.combine = combine
        self.device = device
        self.num_threads = num_threads
        self.seed = seed

    def prepare(self, context: ReconstructionContext) -> ModelInversion:
        """Check the parameters and rebuild the recorded model; returns ``self``.

        Raises
        ------
        InvalidParameterError
            On a bad parameter, a class out of range, or a model the registry cannot build.
        """
        owner = type(self).__name__
        _check(owner, "source", self.source in _SOURCES, f"one of {list(_SOURCES)}", self.source)
        _check_inversion(owner, iterations=self.iterations, restarts=self.restarts, lr=self.lr,
                         prior_weight=self.prior_weight, box=self.box, box_weight=self.box_weight,
                         init_scale=self.init_scale, combine=self.combine, seed=self.seed,
                         num_threads=self.num_threads)
        self.context_ = context
        self.device_ = _device(self.device, owner)
        with _threads(self.num_threads):
            self.model_ = RecordedModel(context, device=self.device_)
        k = self.model_.n_classes
        classes = list(range(k)) if self.classes is None else list(self.classes)
        if not classes or isinstance(self.classes, str) or any(not _is_int(c) or not 0 <= c < k for c in classes):
            raise InvalidParameterError(
                f"The 'classes' parameter of {owner} must be None or class indices in [0, {k - 1}]. "
                f"Got {self.classes!r} instead."
            )
        self.classes_ = [int(c) for c in classes]
        return self

    def reconstruct(self, update: ObservedUpdate) -> Reconstruction:
        """Invert the client's model (or the round's global model) for every class.

        Returns
        -------
        Reconstruction
            ``features`` ``(len(classes), n_features)``, one representative per class in
            the order of ``info["class_order"]`` (a tuple of class indices); ``info``
            also holds ``source``, ``iterations``, ``restarts``, ``seconds`` and, per
            class ``c``, ``loss_c`` (objective at the representative) and
            ``confidence_c`` (the model's probability of class ``c`` there).

        Raises
        ------
        InvalidParameterError
            If the method was not prepared or the update has no global weights.
        """
        if not hasattr(self, "model_"):
            raise InvalidParameterError(f"{type(self).__name__} must be prepared with a context before reconstructing.")
        start = time.perf_counter()
        if self.source == "local":
            weights = local_weights(update)
        elif update.global_weights is None:
            raise InvalidParameterError(
                f"Update row {update.row} carries no global weights; source='global' inverts the round's global model."
            )
        else:
            weights = update.global_weights
        with _threads(self.num_threads):
            reps, loss, conf = _invert(
                self.model_, self.model_.params(weights), self.classes_, iterations=int(self.iterations),
                restarts=int(self.restarts), lr=float(self.lr), prior_weight=float(self.prior_weight),
                box=float(self.box), box_weight=float(self.box_weight), init_scale=float(self.init_scale),
                combine=self.combine, generator=_generator(self.seed, update.row),
            )
        info: dict[str, Any] = {
            "class_order": tuple(self.classes_), "source": self.source, "iterations": float(self.iterations),
            "restarts": float(self.restarts), "seconds": time.perf_counter() - start,
        }
        for c, lo, co in zip(self.classes_, loss, conf):
            info[f"loss_{c}"] = float(lo)
            info[f"confidence_{c}"] = float(co)
        return Reconstruction(
            method=self.name, row=update.row, client_id=update.client_id, server_round=update.server_round,
            features=reps, info=info,
        )
