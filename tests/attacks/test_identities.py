"""The input-mixture identities of Conv1d and LSTM input layers, checked against torch autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedaudit.attacks.update_statistics import input_mixture, inversion_vector, unit_mixtures


def _grads(module: nn.Module) -> dict[str, np.ndarray]:
    return {n: p.grad.detach().double().numpy()[None] for n, p in module.named_parameters()}


def test_conv1d_with_one_output_position_recovers_its_patch_exactly() -> None:
    torch.manual_seed(0)
    conv, head = nn.Conv1d(5, 7, kernel_size=3), nn.Linear(7, 4)  # no padding: an input of 3 frames, 1 position
    x = torch.randn(1, 5, 3, dtype=torch.float64)
    conv, head = conv.double(), head.double()
    nn.functional.cross_entropy(head(torch.tanh(conv(x))[:, :, 0]), torch.tensor([1])).backward()
    g = _grads(conv)
    v = input_mixture({"weight": g["weight"], "bias": g["bias"]})[0]
    np.testing.assert_allclose(v.reshape(5, 3), x[0].numpy(), rtol=1e-10, atol=1e-12)
    # every output channel alone gives the same patch
    per_channel = unit_mixtures(g["weight"], g["bias"])[0]
    np.testing.assert_allclose(per_channel, np.tile(x[0].numpy().reshape(1, -1), (7, 1)), rtol=1e-8, atol=1e-10)


def test_conv1d_update_is_an_error_weighted_mixture_of_padded_patches() -> None:
    torch.manual_seed(1)
    c, k, t, pad = 4, 3, 9, 1
    conv, head = nn.Conv1d(c, 6, kernel_size=k, padding=pad).double(), nn.Linear(6, 4).double()
    x = torch.randn(2, c, t, dtype=torch.float64)  # a batch of two sequences
    out = conv(x)
    out.retain_grad()
    nn.functional.cross_entropy(head(torch.relu(out).mean(-1)), torch.tensor([0, 3])).backward()
    delta = out.grad.numpy()  # (B, out, T)
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (pad, pad)))
    patches = np.stack([padded[:, :, j : j + k] for j in range(t)], axis=1).reshape(2 * t, c * k)  # (B*T, C*k)
    g = _grads(conv)
    db = g["bias"][0]
    weights = np.einsum("o,bot->bt", db, delta).reshape(-1) / (db @ db)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(inversion_vector(g["weight"], g["bias"])[0], weights @ patches, rtol=1e-9, atol=1e-12)
    # per output channel o: dW[o] / db[o] mixes the same patches with weights delta[:, o, :] / db[o]
    per_unit = unit_mixtures(g["weight"], g["bias"])[0]
    for o in range(6):
        w_o = delta[:, o, :].reshape(-1) / db[o]
        assert w_o.sum() == pytest.approx(1.0, abs=1e-9)
        np.testing.assert_allclose(per_unit[o], w_o @ patches, rtol=1e-7, atol=1e-9)


def _manual_lstm(lstm: nn.LSTM, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The same LSTM step by step, keeping each step's gate pre-activations to read their gradients."""
    w_ih, w_hh, b_ih, b_hh = lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0
    hidden = lstm.hidden_size
    h = torch.zeros(x.shape[0], hidden, dtype=x.dtype)
    cell = torch.zeros_like(h)
    outs, gates = [], []
    for t in range(x.shape[1]):
        z = x[:, t] @ w_ih.T + h @ w_hh.T + b_ih + b_hh
        z.retain_grad()
        gates.append(z)
        i, f, g, o = z.split(hidden, dim=1)  # PyTorch's gate order
        cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(cell)
        outs.append(h)
    return torch.stack(outs, dim=1), gates


def _lstm_case(n_frames: int, seed: int) -> tuple[nn.LSTM, nn.Linear, torch.Tensor]:
    torch.manual_seed(seed)
    lstm = nn.LSTM(6, 5, num_layers=1, batch_first=True).double()
    head = nn.Linear(5, 4).double()
    return lstm, head, torch.randn(1, n_frames, 6, dtype=torch.float64)


def test_lstm_with_one_frame_recovers_it_exactly() -> None:
    lstm, head, x = _lstm_case(1, seed=2)
    out, _ = lstm(x)
    nn.functional.cross_entropy(head(out[:, -1]), torch.tensor([2])).backward()
    g = {k: v for k, v in _grads(lstm).items()}
    np.testing.assert_array_equal(g["bias_ih_l0"], g["bias_hh_l0"])  # equal gradients: one bias, counted once
    v = input_mixture(g)[0]
    np.testing.assert_allclose(v, x[0, 0].numpy(), rtol=1e-9, atol=1e-12)


def test_lstm_update_is_a_weighted_mixture_of_its_frames_with_weights_summing_to_one() -> None:
    lstm, head, x = _lstm_case(7, seed=3)
    out, _ = lstm(x)
    nn.functional.cross_entropy(head(out.mean(1)), torch.tensor([1])).backward()
    g = _grads(lstm)
    v = input_mixture(g)[0]
    # the gate errors of a step-by-step copy of the same LSTM give the mixture weights
    copy = nn.LSTM(6, 5, batch_first=True).double()
    copy.load_state_dict(lstm.state_dict())
    manual_out, gates = _manual_lstm(copy, x)
    np.testing.assert_allclose(manual_out.detach().numpy(), out.detach().numpy(), rtol=1e-10, atol=1e-12)
    nn.functional.cross_entropy(head(manual_out.mean(1)), torch.tensor([1])).backward()
    np.testing.assert_allclose(copy.weight_ih_l0.grad.numpy(), g["weight_ih_l0"][0], rtol=1e-8, atol=1e-12)
    dz = np.stack([z.grad[0].numpy() for z in gates])  # (T, 4H)
    db = g["bias_ih_l0"][0]
    np.testing.assert_allclose(dz.sum(0), db, rtol=1e-8, atol=1e-12)
    weights = dz @ db / (db @ db)
    assert weights.sum() == pytest.approx(1.0, abs=1e-10)
    np.testing.assert_allclose(v, weights @ x[0].numpy(), rtol=1e-8, atol=1e-10)
    # and v is no single frame: every frame has a share
    assert np.count_nonzero(np.abs(weights) > 1e-6) == 7
