"""Sequence models on frame-level features: 1-D CNN over time and LSTM.

Both take a batch of flattened frame matrices ``(B, T * C)`` (or ``(B, T, C)``)
and treat an all-zero frame as padding (``mask = frame.abs().sum(-1) > 0``), so
no length tensor travels with the data. Frames after a row's last valid frame
change nothing: the output on a padded batch equals the output on the unpadded
prefix (exactly, up to floating-point summation order).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fedaudit.exceptions import InvalidParameterError

__all__ = ["CNN", "LSTM", "frame_mask", "masked_mean"]


def frame_mask(x: torch.Tensor) -> torch.Tensor:
    """Valid frames of a ``(B, T, C)`` batch: True where a frame is not all zero."""
    return x.abs().sum(-1) > 0


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``h`` ``(B, T, H)`` over the valid time steps of each row (0 for a row without any)."""
    m = mask.to(h.dtype).unsqueeze(-1)
    return (h * m).sum(1) / m.sum(1).clamp(min=1.0)


def _as_frames(x: torch.Tensor, n_coefs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, T', C)`` frames cut after the batch's last valid frame, and their mask ``(B, T')``."""
    frames = x.reshape(len(x), -1, n_coefs) if x.dim() == 2 else x
    mask = frame_mask(frames)
    valid_steps = mask.any(0)
    if len(frames) and bool(valid_steps.any()):
        last = int(torch.nonzero(valid_steps).max()) + 1
        if last < frames.shape[1]:  # trailing frames are padding in every row: nothing to compute
            frames, mask = frames[:, :last], mask[:, :last]
    return frames, mask


def _check(name: str, n_features: int, frame_shape: tuple[int, int], hidden: Sequence[int],
           dropout: Sequence[float], min_hidden: int) -> tuple[int, int]:
    t, c = int(frame_shape[0]), int(frame_shape[1])
    if t * c != int(n_features):
        raise InvalidParameterError(
            f"{name} got n_features={n_features}, but frame_shape {tuple(frame_shape)} gives {t * c} values per utterance."
        )
    if len(hidden) < min_hidden or any(int(h) < 1 for h in hidden):
        raise InvalidParameterError(f"{name} needs at least {min_hidden} widths >= 1 in 'hidden'; got {list(hidden)}.")
    if len(dropout) != len(hidden):
        raise InvalidParameterError(
            f"{name} needs one dropout rate per entry of 'hidden' ({len(hidden)}); got {list(dropout)}."
        )
    return t, c


def _he(module: nn.Module) -> None:
    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    nn.init.zeros_(module.bias)


class CNN(nn.Module):
    """1-D convolutions over time, pooling over the valid frames, a dense head.

    frames (B, T, C) -> [conv_k (``kernel`` frames, 'same' padding) -> ReLU -> padding
    frames set to 0 -> Dropout] for k = 1..K -> mean and max over the valid frames
    (2 x channels) -> fc1 -> ReLU -> Dropout -> fc2 (n_classes).

    Setting the outputs at padding frames to zero after every convolution makes
    each layer see exactly the zero padding a shorter input would have, so the
    output on a padded row equals the output on its unpadded prefix. Conv and
    dense weights get He initialisation, biases zero.

    Parameters
    ----------
    n_features
        ``T * C``.
    frame_shape
        ``(T, C)``; ``C`` is conv1's input channels. Inputs of any length ``T'``
        are accepted (``(B, T' * C)`` or ``(B, T', C)``).
    hidden
        ``(c_1, ..., c_K, d)``: channels of conv1..convK, then the width ``d`` of
        the dense hidden layer fc1 (at least two entries).
    dropout
        One rate per entry of ``hidden``: after each convolution, then after fc1.
    n_classes
        Output width.
    kernel
        Frames per convolution kernel (odd; 5 frames = 100 ms).
    """

    def __init__(
        self, n_features: int, *, frame_shape: tuple[int, int], hidden: Sequence[int] = (32, 32, 32),
        dropout: Sequence[float] = (0.1, 0.1, 0.2), n_classes: int = 4, kernel: int = 5,
    ) -> None:
        super().__init__()
        _, c = _check("CNN", n_features, frame_shape, hidden, dropout, min_hidden=2)
        if kernel < 1 or kernel % 2 == 0:
            raise InvalidParameterError(f"CNN needs an odd kernel size >= 1; got {kernel!r}.")
        self.frame_shape = (int(frame_shape[0]), c)
        channels, dense = [int(h) for h in hidden[:-1]], int(hidden[-1])
        self.layers = nn.ModuleDict()
        widths = [c, *channels]
        for k in range(len(channels)):
            self.layers[f"conv{k + 1}"] = nn.Conv1d(widths[k], widths[k + 1], kernel, padding=kernel // 2)
        self.layers["fc1"] = nn.Linear(2 * channels[-1], dense)
        self.layers["fc2"] = nn.Linear(dense, n_classes)
        self.drops = nn.ModuleList(nn.Dropout(float(r)) for r in dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in self.layers.values():
            _he(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames, mask = _as_frames(x, self.frame_shape[1])
        keep = mask.unsqueeze(1).to(frames.dtype)  # (B, 1, T)
        h = frames.transpose(1, 2)  # (B, C, T)
        layers = list(self.layers.values())
        convs, (fc1, fc2) = layers[:-2], layers[-2:]
        for conv, drop in zip(convs, self.drops, strict=False):
            h = drop(torch.relu(conv(h)) * keep)
        h = h.transpose(1, 2)  # (B, T, channels)
        mean = masked_mean(h, mask)
        # after ReLU every value is >= 0, so padding (0) never exceeds the valid maximum
        peak = h.amax(dim=1) if h.shape[1] else torch.zeros_like(mean)
        z = self.drops[-1](torch.relu(fc1(torch.cat([mean, peak], dim=1))))
        return fc2(z)


class LSTM(nn.Module):
    """A one-layer LSTM over the frames, the mean of its states over the valid frames, a dense head.

    frames (B, T, C) -> lstm1 (``hidden[0]`` units, batch first) -> mean of the
    outputs over the valid frames -> Dropout -> [fc_k -> ReLU -> Dropout] for
    each further width -> last fc (n_classes).

    The LSTM runs forward in time, so its outputs at valid frames do not depend
    on the padding after them, and the masked mean equals the mean over the
    unpadded prefix. The mean of the states (rather than the last valid state)
    gives every frame a direct gradient path, which trains faster on short
    federated budgets. Dense weights get He initialisation; the LSTM keeps
    PyTorch's uniform initialisation. Opacus trains it with DP-SGD after
    swapping ``lstm1`` for its ``DPLSTM`` (same parameter names and shapes).

    Parameters
    ----------
    n_features
        ``T * C``.
    frame_shape
        ``(T, C)``; ``C`` is the LSTM input size. Inputs of any length are accepted.
    hidden
        ``(H, d_1, ..., d_K)``: the LSTM state size, then the widths of the dense
        hidden layers (none: fc1 maps the pooled state to the classes).
    dropout
        One rate per entry of ``hidden``: after pooling, then after each dense layer.
    n_classes
        Output width.
    """

    def __init__(
        self, n_features: int, *, frame_shape: tuple[int, int], hidden: Sequence[int] = (64, 32),
        dropout: Sequence[float] = (0.2, 0.0), n_classes: int = 4,
    ) -> None:
        super().__init__()
        _, c = _check("LSTM", n_features, frame_shape, hidden, dropout, min_hidden=1)
        self.frame_shape = (int(frame_shape[0]), c)
        widths = [int(h) for h in hidden]
        self.layers = nn.ModuleDict()
        self.layers["lstm1"] = nn.LSTM(c, widths[0], num_layers=1, batch_first=True)
        dims = [*widths, n_classes]
        for k in range(len(dims) - 1):
            self.layers[f"fc{k + 1}"] = nn.Linear(dims[k], dims[k + 1])
        self.drops = nn.ModuleList(nn.Dropout(float(r)) for r in dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.layers["lstm1"].reset_parameters()
        for name, layer in self.layers.items():
            if name.startswith("fc"):
                _he(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames, mask = _as_frames(x, self.frame_shape[1])
        layers = list(self.layers.values())
        out, _ = layers[0](frames)
        z = self.drops[0](masked_mean(out, mask))
        for fc, drop in zip(layers[1:-1], self.drops[1:], strict=True):
            z = drop(torch.relu(fc(z)))
        return layers[-1](z)
