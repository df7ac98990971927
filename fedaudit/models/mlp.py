"""Dense models: the utterance-level MLP and the DNN on flattened frames."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fedaudit.exceptions import InvalidParameterError

__all__ = ["DNN", "MLP"]


class MLP(nn.Module):
    """input -> Dense h1 -> ReLU -> Dropout -> Dense h2 -> ReLU -> Dropout -> ... -> Dense n_classes.

    The architecture of Feng et al. (Interspeech 2022). Linear layers are
    named ``fc1``, ``fc2``, ... so that ``fc1`` is the input layer. Weights get
    He (Kaiming) initialisation, biases zero; dropout modules are built in
    ``__init__`` so ``eval()`` turns them off.

    Parameters
    ----------
    n_features
        Input width.
    hidden
        Widths of the hidden layers.
    dropout
        Dropout rate after each hidden layer (one per hidden layer).
    n_classes
        Output width.
    """

    def __init__(
        self, n_features: int, *, hidden: Sequence[int] = (256, 128), dropout: Sequence[float] = (0.2, 0.0),
        n_classes: int = 4,
    ) -> None:
        super().__init__()
        if len(dropout) != len(hidden):
            raise InvalidParameterError(
                f"{type(self).__name__} needs one dropout rate per hidden layer ({len(hidden)}); got {list(dropout)}."
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


class DNN(MLP):
    """The MLP on the flattened frame matrix of a frame-level feature set (``mfcc-frames``).

    input (T * C, frames flattened frame-major, padding frames zero) -> fc1 -> ReLU
    -> Dropout -> ... -> fc(K+1) (n_classes). The frame-level DNN of the BRAC
    draft (PAPERS.md, section E) takes the frames themselves; statistics of the
    frames (mean, std, ...) are what the utterance-level ``mfcc`` set already
    gives the ``mlp``, so the DNN keeps the time axis: every frame position has
    its own input weights, and the gradient of ``fc1`` is a mixture of whole
    frame matrices (``dW = sum_b delta_b x_b^T``). Zero padding frames add nothing
    to ``fc1``'s pre-activations, so no mask is needed.

    Parameters
    ----------
    n_features
        ``T * C``.
    frame_shape
        ``(T, C)`` of the input (checked against ``n_features``).
    hidden, dropout, n_classes
        As for :class:`MLP`.
    """

    def __init__(
        self, n_features: int, *, frame_shape: tuple[int, int], hidden: Sequence[int] = (128, 64),
        dropout: Sequence[float] = (0.2, 0.0), n_classes: int = 4,
    ) -> None:
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        super().__init__(n_features, hidden=hidden, dropout=dropout, n_classes=n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(len(x), -1))
