"""DP-SGD client training with Opacus ghost clipping: :class:`DPSGDConfig`, :class:`DPSGDTrainer`.

Sample-level differential privacy in local training (Abadi et al., CCS 2016),
with the ghost clipping of Li et al. (ICLR 2022) / Bu et al. (2023) as
implemented in Opacus >= 1.5. The ``"dp-sgd"`` defense
(:class:`~fedaudit.defenses.dpsgd.DPSGDDefense`) builds one trainer per run.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fedaudit.defenses._validation import (
    check_choice,
    check_delta,
    check_nonnegative,
    check_positive,
    require_opacus,
)
from fedaudit.defenses.accounting import ACCOUNTANTS, calibrate_noise
from fedaudit.exceptions import InvalidParameterError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["DPSGDConfig", "DPSGDTrainer", "GRAD_SAMPLE_MODES", "OPTIMIZERS"]

#: Opacus per-sample gradient machinery used by :class:`DPSGDTrainer`.
GRAD_SAMPLE_MODES: tuple[str, ...] = ("ghost", "hooks")
#: Local optimisers of :meth:`DPSGDTrainer.train`.
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")


@dataclass(frozen=True, kw_only=True)
class DPSGDConfig:
    """Sample-level DP-SGD settings for client training (Abadi et al., CCS 2016).

    Give exactly one of ``noise_multiplier`` and ``target_epsilon``; with a
    target, call :meth:`resolve` to get the calibrated noise multiplier before
    building a :class:`DPSGDTrainer`.

    Parameters
    ----------
    noise_multiplier
        Noise standard deviation over ``max_grad_norm``, >= 0.
    target_epsilon
        Epsilon to reach at the end of training, > 0.
    max_grad_norm
        Per-sample gradient clip bound, > 0.
    delta
        Target delta, in (0, 1).
    accountant
        ``"rdp"`` or ``"prv"``.
    grad_sample_mode
        ``"ghost"`` (Opacus ghost clipping: per-sample norms without
        per-sample gradients, two backward passes) or ``"hooks"`` (Opacus'
        default per-sample gradient hooks).

    Examples
    --------
    >>> DPSGDConfig(noise_multiplier=1.0).grad_sample_mode
    'ghost'
    """

    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    accountant: str = "rdp"
    grad_sample_mode: str = "ghost"

    def __post_init__(self) -> None:
        caller = "DPSGDConfig"
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise InvalidParameterError(
                f"{caller} needs exactly one of 'noise_multiplier' and 'target_epsilon'. "
                f"Got noise_multiplier={self.noise_multiplier!r} and target_epsilon={self.target_epsilon!r} instead."
            )
        if self.noise_multiplier is not None:
            check_nonnegative(self.noise_multiplier, "noise_multiplier", caller)
        if self.target_epsilon is not None:
            check_positive(self.target_epsilon, "target_epsilon", caller)
        check_positive(self.max_grad_norm, "max_grad_norm", caller)
        check_delta(self.delta, caller)
        check_choice(self.accountant, "accountant", caller, ACCOUNTANTS)
        check_choice(self.grad_sample_mode, "grad_sample_mode", caller, GRAD_SAMPLE_MODES)

    def resolve(self, *, sample_rate: float, steps: int) -> DPSGDConfig:
        """Return the config with a noise multiplier (calibrated if a target epsilon was given).

        Parameters
        ----------
        sample_rate
            Batch size over the client's training set size (use the smallest
            client: its rate is the largest, so every client stays within budget).
        steps
            Total DP-SGD steps of a client over the whole run.

        Returns
        -------
        DPSGDConfig
            ``self`` if ``noise_multiplier`` was given, else a copy with the
            calibrated ``noise_multiplier`` and ``target_epsilon=None``.
        """
        if self.noise_multiplier is not None:
            return self
        z = calibrate_noise(
            float(self.target_epsilon), delta=self.delta, sample_rate=sample_rate, steps=steps,  # type: ignore[arg-type]
            accountant=self.accountant,
        )
        return replace(self, noise_multiplier=z, target_epsilon=None)

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for the run configuration."""
        return {"name": "dp_sgd", **{k: getattr(self, k) for k in self.__dataclass_fields__}}


def _short(name: str) -> str:
    return ".".join(name.split(".")[-2:])


def _with_dp_lstm(model: nn.Module) -> nn.Module:
    """``model`` with every ``nn.LSTM`` swapped for Opacus' ``DPLSTM`` (same weights, names and outputs).

    ``nn.LSTM`` runs as one fused kernel that per-sample gradient hooks cannot
    see; ``DPLSTM`` computes the same recurrence from linear layers that they
    can, and names its parameters as ``nn.LSTM`` does (``weight_ih_l0``, ...).
    """
    from opacus.layers import DPLSTM
    from torch import nn as tnn

    for name, child in list(model.named_children()):
        if isinstance(child, tnn.LSTM) and not isinstance(child, DPLSTM):
            replacement = DPLSTM(child.input_size, child.hidden_size, num_layers=child.num_layers,
                                 bias=child.bias, batch_first=child.batch_first, dropout=child.dropout,
                                 bidirectional=child.bidirectional)
            replacement.load_state_dict(child.state_dict())
            setattr(model, name, replacement)
        else:
            _with_dp_lstm(child)
    return model


class DPSGDTrainer:
    """DP-SGD on one client's mini-batches, with Opacus ghost clipping or per-sample hooks.

    Built once per run around a model of the run's architecture: the trainer
    keeps its own copy of that model wrapped by Opacus, and each call copies
    the weights of the model it is given into it, so wrapping (hook
    registration) is paid once. Per-sample gradients are clipped to
    ``max_grad_norm``, summed, noised with N(0, (noise_multiplier *
    max_grad_norm)^2) per coordinate and divided by the batch size (the
    Opacus ``DPOptimizer`` step). Noise and dropout masks come from torch's
    global random generator, so a run seeded with ``torch.manual_seed`` is
    reproducible. The model is run in training mode (dropout on).

    Implementation based on Abadi et al., "Deep learning with differential
    privacy" (CCS 2016) and the ghost clipping of Li et al., "Large language
    models can be strong differentially private learners" (ICLR 2022) as
    implemented in Opacus (``GradSampleModuleFastGradientClipping``,
    ``DPOptimizerFastGradientClipping``, ``DPLossFastGradientClipping``).

    Parameters
    ----------
    model
        A model of the run's architecture (copied; not modified). Its weights are irrelevant.
    config
        A resolved :class:`DPSGDConfig` (``noise_multiplier`` set).
    criterion
        Loss function with a ``reduction`` attribute; cross-entropy by default.

    Raises
    ------
    InvalidParameterError
        If the config has no noise multiplier, or Opacus cannot compute
        per-sample gradients of the model (e.g. BatchNorm).

    Examples
    --------
    >>> import torch
    >>> def model():
    ...     return torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> trainer = DPSGDTrainer(model(), DPSGDConfig(noise_multiplier=0.0))
    >>> g = trainer.gradient(model(), torch.randn(5, 8), torch.zeros(5, dtype=torch.long))
    >>> sorted(g)
    ['0.bias', '0.weight', '2.bias', '2.weight']
    """

    def __init__(self, model: nn.Module, config: DPSGDConfig, *, criterion: nn.Module | None = None) -> None:
        require_opacus()
        import torch
        from opacus.grad_sample import GradSampleModule, GradSampleModuleFastGradientClipping
        from opacus.validators import ModuleValidator

        if not isinstance(config, DPSGDConfig):
            raise InvalidParameterError(
                f"The 'config' parameter of DPSGDTrainer must be a DPSGDConfig. Got {type(config).__name__} instead."
            )
        if config.noise_multiplier is None:
            raise InvalidParameterError(
                "The 'config' parameter of DPSGDTrainer must have a noise multiplier. Got "
                f"target_epsilon={config.target_epsilon!r} instead; call config.resolve(sample_rate=..., steps=...) "
                "first."
            )
        worker = _with_dp_lstm(copy.deepcopy(model))
        errors = ModuleValidator.validate(worker, strict=False)
        if errors:
            raise InvalidParameterError(
                f"Opacus cannot train {type(model).__name__} with DP-SGD: {'; '.join(str(e) for e in errors)}. "
                "Replace the unsupported layers (e.g. BatchNorm by GroupNorm)."
            )
        self.config = config
        self._criterion = criterion if criterion is not None else torch.nn.CrossEntropyLoss()
        if config.grad_sample_mode == "ghost":
            self._module = GradSampleModuleFastGradientClipping(
                worker, batch_first=True, loss_reduction="mean", max_grad_norm=config.max_grad_norm,
                use_ghost_clipping=True,
            )
        else:
            self._module = GradSampleModule(worker, batch_first=True, loss_reduction="mean")
        self._params = {_short(n): p for n, p in self._module.named_parameters() if p.requires_grad}
        self._grad_optimizer = self._dp_optimizer(torch.optim.SGD(list(self._params.values()), lr=0.0))
        self.last_loss: float = math.nan

    def _dp_optimizer(self, optimizer: torch.optim.Optimizer) -> Any:
        from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping

        cls = DPOptimizerFastGradientClipping if self.config.grad_sample_mode == "ghost" else DPOptimizer
        return cls(
            optimizer, noise_multiplier=float(self.config.noise_multiplier),  # type: ignore[arg-type]
            max_grad_norm=float(self.config.max_grad_norm), expected_batch_size=1, loss_reduction="mean",
        )

    def _load(self, source: nn.Module) -> None:
        import torch

        src = {_short(n): p for n, p in source.named_parameters()}
        if src.keys() != self._params.keys():
            raise InvalidParameterError(
                f"The model given to DPSGDTrainer has parameters {sorted(src)}, but the trainer was built for "
                f"{sorted(self._params)}; build one trainer per architecture."
            )
        with torch.no_grad():
            for name, p in self._params.items():
                p.copy_(src[name])

    def _privatize(self, dp_optimizer: Any, x: torch.Tensor, y: torch.Tensor) -> bool:
        """Forward/backward on one batch; leave the privatized mean gradient in ``p.grad``."""
        from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

        if len(x) == 0:
            raise InvalidParameterError("DPSGDTrainer got an empty mini-batch; drop empty batches before training.")
        dp_optimizer.expected_batch_size = len(x)
        dp_optimizer.zero_grad(set_to_none=True)
        self._module.train()
        out = self._module(x)
        if self.config.grad_sample_mode == "ghost":
            loss = DPLossFastGradientClipping(self._module, dp_optimizer, self._criterion, "mean")(out, y)
        else:
            loss = self._criterion(out, y)
        with warnings.catch_warnings():
            # Opacus' hooks fire on module outputs because the inputs do not require gradients.
            warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
            loss.backward()
        self.last_loss = float(loss.item())
        if self.config.grad_sample_mode == "hooks":
            return bool(dp_optimizer.pre_step())
        self._noise_and_scale(len(x))
        return True

    def _noise_and_scale(self, batch_size: int) -> None:
        """Ghost mode: ``p.grad`` holds the sum of clipped per-sample gradients; noise it, average it.

        The same arithmetic and the same draws from torch's global generator as
        ``DPOptimizerFastGradientClipping.pre_step`` (``(summed + N(0, (z C)^2)) /
        batch_size``, noise drawn parameter by parameter with ``torch.normal``),
        done in place: Opacus copies the summed gradient and allocates a zero
        tensor per parameter and step, which costs more than the two backward
        passes for this small model.
        """
        import torch

        std = float(self.config.noise_multiplier) * float(self.config.max_grad_norm)  # type: ignore[arg-type]
        with torch.no_grad():
            for p in self._params.values():
                if std != 0:
                    p.grad.add_(torch.normal(mean=0, std=std, size=p.grad.shape, device=p.grad.device))
                p.grad.div_(batch_size)

    def gradient(self, model_params_source: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
        """Privatized mini-batch gradient at the weights of ``model_params_source`` (for FedSGD).

        Parameters
        ----------
        model_params_source
            Model whose current weights are used; not modified.
        x, y
            One mini-batch (features, integer labels).

        Returns
        -------
        dict[str, numpy.ndarray]
            ``"fc1.weight"``-style name to the clipped, noised, averaged
            gradient (float32). The batch's mean loss is in :attr:`last_loss`.
        """
        self._load(model_params_source)
        self._privatize(self._grad_optimizer, x, y)
        return {name: p.grad.detach().numpy().copy() for name, p in self._params.items()}

    def train(
        self,
        model: nn.Module,
        batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
        *,
        optimizer: Literal["sgd", "adam"] = "sgd",
        lr: float,
    ) -> tuple[float, int]:
        """Train ``model`` in place with DP-SGD on ``batches`` (for FedAvg local epochs).

        Parameters
        ----------
        model
            Model to train; its weights are overwritten with the trained ones.
        batches
            Mini-batches ``(x, y)`` in the order to use them (all local epochs).
        optimizer
            ``"sgd"`` or ``"adam"`` (fresh state each call).
        lr
            Learning rate, > 0.

        Returns
        -------
        mean_loss : float
            Mean of the mini-batch losses.
        steps : int
            Number of optimiser steps taken (``U`` of the pseudo-gradient).
        """
        import torch

        caller = "DPSGDTrainer.train"
        check_choice(optimizer, "optimizer", caller, OPTIMIZERS)
        lr = check_positive(lr, "lr", caller)
        builders: dict[str, Callable[..., torch.optim.Optimizer]] = {
            "sgd": torch.optim.SGD, "adam": torch.optim.Adam,
        }
        self._load(model)
        dp_optimizer = self._dp_optimizer(builders[optimizer](list(self._params.values()), lr=lr))
        losses = []
        for x, y in batches:
            if self._privatize(dp_optimizer, x, y):
                dp_optimizer.original_optimizer.step()
            losses.append(self.last_loss)
        dst = {_short(n): p for n, p in model.named_parameters()}
        with torch.no_grad():
            for name, p in self._params.items():
                dst[name].copy_(p)
        return (float(np.mean(losses)) if losses else math.nan), len(losses)