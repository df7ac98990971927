"""SER client models, in one registry: the simulator trains them, attacks that need a forward pass rebuild them.

This package sits below both `fl/` and `attacks/` (it imports only the ground floor), so an
attack can rebuild the architecture a recording names without importing the simulator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from fedaudit.exceptions import InvalidParameterError

__all__ = [
    "MLP",
    "MODELS",
    "build_model",
    "layer_names",
    "parameter_shapes",
]


class MLP(nn.Module):
    """input -> Dense h1 -> ReLU -> Dropout -> Dense h2 -> ReLU -> Dropout -> ... -> Dense n_classes.

    The architecture of Feng et al. (Interspeech 2022). Linear layers are
    named ``fc1``, ``fc2``, ... so that ``fc1`` is the input layer. Weights get
    He (Kaiming) initialisation, biases zero; dropout modules are built in
    ``__init__`` so ``eval()`` turns them off.
    """

    def __init__(
        self, n_features: int, *, hidden: Sequence[int] = (256, 128), dropout: Sequence[float] = (0.2, 0.0),
        n_classes: int = 4,
    ) -> None:
        super().__init__()
        if len(dropout) != len(hidden):
            raise InvalidParameterError(
                f"MLP needs one dropout rate per hidden layer ({len(hidden)}); got {list(dropout)}."
            )
        widths = [n_features, *hidden, n_classes]
        self.layers = nn.ModuleDict()
        self.drops = nn.ModuleList()
        for i in range(len(widths) - 1):
            self.layers[f"fc{i + 1}"] = nn.Linear(widths[i], widths[i + 1])
        for rate in dropout:
            self.drops.append(nn.Dropout(rate))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in self.layers.values():
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        linears = list(self.layers.values())
        for linear, drop in zip(linears[:-1], self.drops, strict=True):
            x = drop(torch.relu(linear(x)))
        return linears[-1](x)


#: Model registry: key -> builder(n_features, hidden=, dropout=, n_classes=).
MODELS: dict[str, Callable[..., nn.Module]] = {"mlp": MLP}


def build_model(
    name: str, n_features: int, *, hidden: Sequence[int], dropout: Sequence[float], n_classes: int
) -> nn.Module:
    """Build a registered model."""
    try:
        builder = MODELS[name]
    except KeyError:
        raise InvalidParameterError(f"Unknown model {name!r}; choose one of {sorted(MODELS)}.") from None
    return builder(n_features, hidden=hidden, dropout=dropout, n_classes=n_classes)


def _short_name(param_name: str) -> str:
    # "layers.fc1.weight" -> "fc1.weight"
    parts = param_name.split(".")
    return ".".join(parts[-2:])


def parameter_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """``{"fc1.weight": (256, 988), ...}`` in model order."""
    return {_short_name(n): tuple(p.shape) for n, p in model.named_parameters()}


def layer_names(model: nn.Module) -> list[str]:
    """Layer names in model order, input layer first (``["fc1", "fc2", "fc3"]``)."""
    return list(dict.fromkeys(n.split(".")[0] for n in parameter_shapes(model)))
