"""Tests of the DP modules of fedaudit.defenses: transforms, accounting and DP-SGD with ghost clipping."""

from __future__ import annotations

import copy
import math
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from fedaudit.defenses.accounting import (
    analytic_gaussian_sigma,
    calibrate_noise,
    epsilon,
    gaussian_delta,
    per_client_epsilon,
    udp_epsilon,
    udp_per_client_epsilon,
)
from fedaudit.defenses.dpsgd_trainer import DPSGDConfig, DPSGDTrainer
from fedaudit.defenses.transforms import (
    ClipNorm,
    GaussianNoise,
    LocalDP,
    UserLevelDP,
    clip_by_global_norm,
    global_l2_norm,
)
from fedaudit.exceptions import InvalidParameterError
from fedaudit.models import MLP
from fedaudit.types import ClientUpdate

opacus = pytest.importorskip("opacus")


def _update(arrays: dict[str, np.ndarray]) -> ClientUpdate:
    return ClientUpdate(
        server_round=0, client_id=3, kind="gradient", arrays=arrays, num_samples=20, local_steps=1, lr=0.1,
    )


def _random_update(seed: int = 0, scale: float = 1.0) -> ClientUpdate:
    rng = np.random.default_rng(seed)
    return _update({
        "fc1.weight": (scale * rng.normal(size=(16, 30))).astype(np.float32),
        "fc1.bias": (scale * rng.normal(size=16)).astype(np.float32),
        "fc2.weight": (scale * rng.normal(size=(4, 16))).astype(np.float32),
        "fc2.bias": (scale * rng.normal(size=4)).astype(np.float32),
    })


def _zero_update(n: int = 200_000) -> ClientUpdate:
    return _update({"fc1.weight": np.zeros((n // 100, 100), np.float32), "fc1.bias": np.zeros(10, np.float32)})


# -- transforms -------------------------------------------------------------------------------

update_arrays = st.dictionaries(
    st.sampled_from(["fc1.weight", "fc1.bias", "fc2.weight", "fc3.bias"]),
    arrays(np.float32, st.integers(1, 40), elements=st.floats(-1e4, 1e4, width=32)),
    min_size=1, max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(arrs=update_arrays, max_norm=st.floats(1e-6, 1e3))
def test_clipped_update_never_exceeds_max_norm(arrs: dict[str, np.ndarray], max_norm: float) -> None:
    # Prepare
    update = _update(arrs)
    norm_before = global_l2_norm(arrs)

    # Execute
    out = ClipNorm(max_norm=max_norm)(update, np.random.default_rng(0))

    # Assert: bounded, same shapes and dtype, same direction, untouched if already small
    assert global_l2_norm(out.arrays) <= max_norm
    for name, a in arrs.items():
        assert out.arrays[name].shape == a.shape and out.arrays[name].dtype == a.dtype
    if norm_before <= max_norm:
        for name, a in arrs.items():
            np.testing.assert_array_equal(out.arrays[name], a)
    elif norm_before > 0:
        _, scale = clip_by_global_norm(arrs, max_norm)
        for name, a in arrs.items():
            np.testing.assert_allclose(out.arrays[name], a * scale, rtol=1e-5, atol=1e-30)
        assert global_l2_norm(out.arrays) >= max_norm * (1 - 1e-5)


@settings(max_examples=60, deadline=None)
@given(arrs=update_arrays, clip=st.floats(1e-3, 10.0), z=st.floats(0.0, 3.0))
def test_user_level_dp_clips_before_noise(arrs: dict[str, np.ndarray], clip: float, z: float) -> None:
    # With a zero noise multiplier UDP is exactly the clip; otherwise its noiseless part is.
    udp = UserLevelDP(clip=clip, noise_multiplier=z)
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
    out = udp(_update(arrs), rng_a)
    clipped = ClipNorm(max_norm=clip)(_update(arrs), rng_b).arrays
    if z == 0:
        assert global_l2_norm(out.arrays) <= clip
    noise = {n: out.arrays[n].astype(np.float64) - clipped[n] for n in arrs}
    expected = np.random.default_rng(1)
    for name, a in clipped.items():
        draw = expected.normal(0.0, z * clip, size=a.shape)
        np.testing.assert_allclose(noise[name], draw, atol=1e-3 * (1 + z * clip) + 1e-6 * abs(a).max(initial=0))


@pytest.mark.parametrize(
    ("transform", "expected_std"),
    [
        (GaussianNoise(std=0.03), 0.03),
        (UserLevelDP(clip=0.25, noise_multiplier=2.0), 0.5),
        (LocalDP(clip=1.0, epsilon=1.92, delta=1e-5), analytic_gaussian_sigma(1.92, 1e-5, 2.0)),
    ],
)
def test_noise_std_matches(transform, expected_std: float) -> None:
    # Prepare: a zero update, so the output is pure noise (200k draws: relative s.e. of the std ~0.16%)
    update = _zero_update()

    # Execute
    out = transform(update, np.random.default_rng(12345))

    # Assert: mean 0, std within 2% (more than 10 standard errors)
    values = np.concatenate([a.ravel().astype(np.float64) for a in out.arrays.values()])
    assert abs(values.mean()) < 0.02 * expected_std
    assert values.std() == pytest.approx(expected_std, rel=0.02)


@pytest.mark.parametrize(
    "transform",
    [
        ClipNorm(max_norm=0.1),
        GaussianNoise(std=0.5),
        UserLevelDP(clip=0.1, noise_multiplier=1.0),
        LocalDP(clip=0.1, epsilon=1.0, delta=1e-5),
    ],
)
def test_transforms_do_not_mutate_input(transform) -> None:
    # Prepare
    update = _random_update(scale=10.0)
    before = {n: a.copy() for n, a in update.arrays.items()}

    # Execute
    out = transform(update, np.random.default_rng(0))

    # Assert: input untouched, output changed and in new arrays
    for name, a in update.arrays.items():
        np.testing.assert_array_equal(a, before[name])
        assert not np.shares_memory(out.arrays[name], a)
        assert out.arrays[name].dtype == np.float32
    assert (out.bytes_sent, out.encrypt_seconds, out.decrypt_seconds) == (None, None, None)
    assert any(not np.array_equal(out.arrays[n], before[n]) for n in before)
    assert out.client_id == update.client_id and out.server_round == update.server_round


def test_transform_same_rng_seed_same_output_and_describe_is_json() -> None:
    import json

    udp = LocalDP(clip=0.5, epsilon=2.0, delta=1e-5)
    a = udp(_random_update(), np.random.default_rng(7))
    b = udp(_random_update(), np.random.default_rng(7))
    c = udp(_random_update(), np.random.default_rng(8))
    for name in a.arrays:
        np.testing.assert_array_equal(a.arrays[name], b.arrays[name])
    assert not np.array_equal(a.arrays["fc1.weight"], c.arrays["fc1.weight"])
    for t in (ClipNorm(max_norm=1.0), GaussianNoise(std=0.1), UserLevelDP(clip=1.0, noise_multiplier=1.0), udp,
              DPSGDConfig(noise_multiplier=1.0)):
        assert json.loads(json.dumps(t.describe())) == t.describe()


def test_local_dp_noise_grows_as_epsilon_falls() -> None:
    epsilons = [100.0, 20.0, 5.0, 1.92, 1.0, 0.5, 0.1]
    stds = [LocalDP(clip=0.25, epsilon=e, delta=1e-5).noise_std for e in epsilons]
    assert all(s1 < s2 for s1, s2 in zip(stds, stds[1:], strict=False))
    for e, s in zip(epsilons, stds, strict=True):
        # Calibrated exactly (analytic Gaussian mechanism) for sensitivity 2 * clip ...
        assert gaussian_delta(s, e, 0.5) <= 1e-5
        assert gaussian_delta(s * 0.999, e, 0.5) > 1e-5
        # ... and never above the classical bound where that bound is valid (epsilon < 1).
        if e < 1:
            assert s <= 0.5 * math.sqrt(2 * math.log(1.25 / 1e-5)) / e
    # Empirically too: less epsilon, noisier update.
    loud = LocalDP(clip=0.25, epsilon=0.5)(_zero_update(20_000), np.random.default_rng(0))
    quiet = LocalDP(clip=0.25, epsilon=5.0)(_zero_update(20_000), np.random.default_rng(0))
    assert loud.arrays["fc1.weight"].std() > 3 * quiet.arrays["fc1.weight"].std()


def test_analytic_gaussian_matches_rdp_order_of_magnitude() -> None:
    # One Gaussian release: the exact sigma is at most what the RDP accountant needs.
    sigma = analytic_gaussian_sigma(2.0, 1e-5)
    z_rdp = calibrate_noise(2.0, delta=1e-5, sample_rate=1.0, steps=1)
    assert sigma <= z_rdp <= 1.3 * sigma


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ClipNorm(max_norm=0.0), "The 'max_norm' parameter of ClipNorm must be a real number in (0, inf). Got 0.0 instead."),
        (lambda: ClipNorm(max_norm=float("nan")), "The 'max_norm' parameter of ClipNorm must be a real number in (0, inf). Got nan instead."),
        (lambda: ClipNorm(max_norm=math.inf), "The 'max_norm' parameter of ClipNorm must be a finite real number > 0. Got inf instead."),
        (lambda: ClipNorm(max_norm=True), "The 'max_norm' parameter of ClipNorm must be a real number in (0, inf). Got True instead."),
        (lambda: GaussianNoise(std=-1.0), "The 'std' parameter of GaussianNoise must be a real number in [0, inf). Got -1.0 instead."),
        (lambda: UserLevelDP(clip=0.25, noise_multiplier=-0.1), "The 'noise_multiplier' parameter of UserLevelDP must be a real number in [0, inf). Got -0.1 instead."),
        (lambda: UserLevelDP(clip="1", noise_multiplier=1.0), "The 'clip' parameter of UserLevelDP must be a real number in (0, inf). Got '1' instead."),
        (lambda: LocalDP(clip=1.0, epsilon=0.0), "The 'epsilon' parameter of LocalDP must be a real number in (0, inf). Got 0.0 instead."),
        (lambda: LocalDP(clip=1.0, epsilon=1.0, delta=1.0), "The 'delta' parameter of LocalDP must be a real number in (0, 1). Got 1.0 instead."),
        (lambda: epsilon(1.0, sample_rate=1.5, steps=1, delta=1e-5), "The 'sample_rate' parameter of epsilon must be a real number in (0, 1]. Got 1.5 instead."),
        (lambda: epsilon(1.0, sample_rate=0.5, steps=1.5, delta=1e-5), "The 'steps' parameter of epsilon must be an integer >= 0. Got 1.5 instead."),
        (lambda: epsilon(1.0, sample_rate=0.5, steps=1, delta=1e-5, accountant="gdp"), "The 'accountant' parameter of epsilon must be one of ['rdp', 'prv']. Got 'gdp' instead."),
        (lambda: calibrate_noise(1.0, delta=1e-5, sample_rate=0.1, steps=0), "The 'steps' parameter of calibrate_noise must be an integer >= 1. Got 0 instead; zero steps spend no privacy and need no noise."),
        (lambda: udp_epsilon(1.0, client_fraction=0.0, rounds=10, delta=1e-5), "The 'client_fraction' parameter of udp_epsilon must be a real number in (0, 1]. Got 0.0 instead."),
        (lambda: per_client_epsilon(np.array([0, 1]), steps_per_row=np.array([1, 1, 1]), sample_rate_per_row=1.0, noise_multiplier=1.0, delta=1e-5),
         "The 'steps_per_row' parameter of per_client_epsilon must be a scalar or a 1-D array with one entry per row (2 rows). Got shape (3,) instead."),
        (lambda: per_client_epsilon(np.array([0]), steps_per_row=np.array([1]), sample_rate_per_row=np.array([0.5]), noise_multiplier=1.0, delta=1e-5, adjacency="replace"),
         "The 'adjacency' parameter of per_client_epsilon can be 'replace' only when every sample rate is 1 (the halved noise multiplier is exact only without subsampling). Got sample rates down to 0.5 instead."),
        (lambda: DPSGDConfig(), "DPSGDConfig needs exactly one of 'noise_multiplier' and 'target_epsilon'. Got noise_multiplier=None and target_epsilon=None instead."),
        (lambda: DPSGDConfig(noise_multiplier=1.0, target_epsilon=3.0), "DPSGDConfig needs exactly one of 'noise_multiplier' and 'target_epsilon'. Got noise_multiplier=1.0 and target_epsilon=3.0 instead."),
        (lambda: DPSGDConfig(noise_multiplier=1.0, grad_sample_mode="ew"), "The 'grad_sample_mode' parameter of DPSGDConfig must be one of ['ghost', 'hooks']. Got 'ew' instead."),
        (lambda: DPSGDConfig(noise_multiplier=1.0, max_grad_norm=0), "The 'max_grad_norm' parameter of DPSGDConfig must be a real number in (0, inf). Got 0 instead."),
        (lambda: DPSGDTrainer(MLP(4, hidden=(3,), dropout=(0.0,)), DPSGDConfig(target_epsilon=3.0)),
         "The 'config' parameter of DPSGDTrainer must have a noise multiplier. Got target_epsilon=3.0 instead; call config.resolve(sample_rate=..., steps=...) first."),
    ],
)
def test_invalid_parameters_are_reported(build, message: str) -> None:
    with pytest.raises(InvalidParameterError, match=re.escape(message) + "$"):
        build()


def test_transform_refuses_legacy_rng_and_nan_update() -> None:
    with pytest.raises(InvalidParameterError, match=r"The 'rng' argument of UserLevelDP must be a numpy.random.Generator"):
        UserLevelDP(clip=1.0, noise_multiplier=1.0)(_random_update(), np.random)  # type: ignore[arg-type]
    bad = _update({"w": np.array([np.nan, 1.0], np.float32)})
    with pytest.raises(InvalidParameterError, match="Cannot clip an update whose L2 norm is nan"):
        ClipNorm(max_norm=1.0)(bad, np.random.default_rng(0))


# -- accounting -------------------------------------------------------------------------------

NOISES = [0.5, 1.0, 2.0, 4.0]
RATES = [0.01, 0.1, 1.0]
STEPS = [1, 10, 100]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(z=st.sampled_from(NOISES), q=st.sampled_from(RATES), steps=st.sampled_from(STEPS))
def test_epsilon_grows_with_steps_and_rate_and_falls_with_noise(z: float, q: float, steps: int) -> None:
    eps = epsilon(z, sample_rate=q, steps=steps, delta=1e-5)
    assert 0 < eps < math.inf
    assert epsilon(z, sample_rate=q, steps=2 * steps, delta=1e-5) > eps
    assert epsilon(2 * z, sample_rate=q, steps=steps, delta=1e-5) < eps
    if q < 1:
        assert epsilon(z, sample_rate=min(1.0, 2 * q), steps=steps, delta=1e-5) > eps
    assert epsilon(z, sample_rate=q, steps=steps, delta=1e-3) < eps


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_epsilon_monotone_in_rounds_for_both_accountants(accountant: str) -> None:
    eps = [udp_epsilon(1.0, client_fraction=0.1, rounds=r, delta=1e-5, accountant=accountant) for r in (10, 50, 200)]
    assert eps[0] < eps[1] < eps[2]
    assert epsilon(1.0, sample_rate=0.1, steps=0, delta=1e-5, accountant=accountant) == 0.0
    assert epsilon(0.0, sample_rate=0.1, steps=5, delta=1e-5, accountant=accountant) == math.inf


@pytest.mark.parametrize(
    ("target", "q", "steps", "accountant"),
    [(0.5, 0.1, 200, "rdp"), (2.0, 0.05, 1000, "rdp"), (8.0, 1.0, 1, "rdp"), (25.0, 0.1, 200, "rdp"),
     (2.0, 0.1, 200, "prv")],
)
def test_calibrate_noise_inverts_epsilon(target: float, q: float, steps: int, accountant: str) -> None:
    z = calibrate_noise(target, delta=1e-5, sample_rate=q, steps=steps, accountant=accountant)
    eps = epsilon(z, sample_rate=q, steps=steps, delta=1e-5, accountant=accountant)
    assert target * 0.99 <= eps <= target


def test_dpsgd_config_resolve_calibrates() -> None:
    cfg = DPSGDConfig(target_epsilon=3.0, max_grad_norm=0.5)
    resolved = cfg.resolve(sample_rate=0.5, steps=40)
    assert resolved.target_epsilon is None and resolved.max_grad_norm == 0.5
    assert resolved.noise_multiplier == pytest.approx(calibrate_noise(3.0, delta=1e-5, sample_rate=0.5, steps=40))
    fixed = DPSGDConfig(noise_multiplier=1.3)
    assert fixed.resolve(sample_rate=0.5, steps=40) is fixed


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_per_client_epsilon_composes_each_clients_rounds(accountant: str) -> None:
    # Prepare: client 7 joins k = 5 rounds, client 2 joins 1, interleaved with others; FedAvg DP-SGD,
    # 2 local steps per round at sample rate 0.5.
    ids = np.array([7, 2, 7, 9, 7, 9, 7, 7])
    steps = np.full(len(ids), 2)
    rates = np.full(len(ids), 0.5)

    # Execute
    eps = per_client_epsilon(ids, steps_per_row=steps, sample_rate_per_row=rates, noise_multiplier=1.5,
                             delta=1e-5, accountant=accountant)

    # Assert: k composed rounds = 5 * 2 steps; a fresh engine per round reports only 2 steps.
    assert list(eps) == [2, 7, 9]
    composed = epsilon(1.5, sample_rate=0.5, steps=10, delta=1e-5, accountant=accountant)
    single_round = epsilon(1.5, sample_rate=0.5, steps=2, delta=1e-5, accountant=accountant)
    assert eps[7] == pytest.approx(composed, rel=1e-9)
    assert eps[2] == pytest.approx(single_round, rel=1e-9)
    assert eps[9] == pytest.approx(epsilon(1.5, sample_rate=0.5, steps=4, delta=1e-5, accountant=accountant))
    assert eps[7] > 2 * single_round


def test_per_client_epsilon_exceeds_fresh_privacy_engine_per_round() -> None:
    from opacus.accountants import RDPAccountant

    ids = np.array([0] * 4)
    eps = per_client_epsilon(ids, steps_per_row=np.array([3, 1, 3, 2]), sample_rate_per_row=np.array([0.2, 0.2, 0.4, 1.0]),
                             noise_multiplier=np.array([1.0, 1.0, 2.0, 3.0]), delta=1e-5)
    # What a fresh engine per round would report: each round's accountant on its own.
    per_round = []
    for s, q, z in [(3, 0.2, 1.0), (1, 0.2, 1.0), (3, 0.4, 2.0), (2, 1.0, 3.0)]:
        acc = RDPAccountant()
        for _ in range(s):
            acc.step(noise_multiplier=z, sample_rate=q)
        per_round.append(acc.get_epsilon(delta=1e-5))
    # One accountant stepped through the whole history, as a single long-lived engine would.
    whole = RDPAccountant()
    for s, q, z in [(3, 0.2, 1.0), (1, 0.2, 1.0), (3, 0.4, 2.0), (2, 1.0, 3.0)]:
        for _ in range(s):
            whole.step(noise_multiplier=z, sample_rate=q)
    assert eps[0] == pytest.approx(whole.get_epsilon(delta=1e-5), rel=1e-9)
    assert eps[0] > max(per_round)


def test_udp_per_client_epsilon_and_replace_adjacency() -> None:
    ids = np.array([4, 4, 4, 1])
    add_remove = udp_per_client_epsilon(ids, noise_multiplier=2.0, delta=1e-5)
    replace_adj = udp_per_client_epsilon(ids, noise_multiplier=2.0, delta=1e-5, adjacency="replace")
    assert add_remove[4] == pytest.approx(epsilon(2.0, sample_rate=1.0, steps=3, delta=1e-5))
    assert replace_adj[4] == pytest.approx(epsilon(1.0, sample_rate=1.0, steps=3, delta=1e-5))
    assert replace_adj[1] > add_remove[1]
    # Without amplification the server's view costs far more than the central, amplified figure.
    assert udp_epsilon(2.0, client_fraction=0.1, rounds=30, delta=1e-5) < add_remove[4]


# -- DP-SGD -----------------------------------------------------------------------------------


def _mlp(dropout: float = 0.0, seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return MLP(30, hidden=(16, 8), dropout=(dropout, 0.0))


def _batch(n: int = 12, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 30, generator=g), torch.randint(0, 4, (n,), generator=g)


def _plain_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
    model.zero_grad(set_to_none=True)
    nn.CrossEntropyLoss()(model(x), y).backward()
    return {".".join(n.split(".")[-2:]): p.grad.numpy().copy() for n, p in model.named_parameters()}


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
def test_dpsgd_without_noise_or_clipping_is_plain_gradient(mode: str) -> None:
    # Prepare: dropout on, so the same seed must give the same masks to both.
    model = _mlp(dropout=0.3)
    x, y = _batch()
    trainer = DPSGDTrainer(model, DPSGDConfig(noise_multiplier=0.0, max_grad_norm=1e6, grad_sample_mode=mode))

    # Execute
    torch.manual_seed(5)
    g = trainer.gradient(model, x, y)
    torch.manual_seed(5)
    model.train()
    ref = _plain_gradient(model, x, y)
    torch.manual_seed(5)
    with torch.no_grad():
        plain_loss = float(nn.CrossEntropyLoss()(model(x), y))
    model.eval()
    no_dropout = _plain_gradient(model, x, y)

    # Assert
    assert list(g) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]
    for name in ref:
        assert g[name].dtype == np.float32
        np.testing.assert_allclose(g[name], ref[name], rtol=1e-4, atol=1e-6)
    assert not np.allclose(g["fc1.weight"], no_dropout["fc1.weight"])  # dropout was active
    assert trainer.last_loss == pytest.approx(plain_loss, rel=1e-5)


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
def test_dpsgd_clips_every_per_sample_gradient(mode: str) -> None:
    # Prepare
    model = _mlp()
    x, y = _batch(n=10)
    c = 0.05
    trainer = DPSGDTrainer(model, DPSGDConfig(noise_multiplier=0.0, max_grad_norm=c, grad_sample_mode=mode))

    # Execute
    g = trainer.gradient(model, x, y)
    reference = {name: np.zeros_like(a) for name, a in _plain_gradient(model, x, y).items()}
    norms = []
    for i in range(len(x)):
        gi = _plain_gradient(model, x[i : i + 1], y[i : i + 1])
        norms.append(global_l2_norm(gi))
        for name in reference:
            reference[name] += min(1.0, c / (norms[-1] + 1e-6)) * gi[name] / len(x)

    # Assert: every sample needed clipping, the result is the mean of clipped per-sample gradients
    assert min(norms) > c
    assert global_l2_norm(g) <= c * (1 + 1e-5)
    for name in reference:
        np.testing.assert_allclose(g[name], reference[name], rtol=1e-4, atol=1e-8)


def test_dpsgd_noise_std_is_noise_multiplier_times_clip_over_batch() -> None:
    model = _mlp()
    x, y = _batch(n=8)
    quiet = DPSGDTrainer(model, DPSGDConfig(noise_multiplier=0.0, max_grad_norm=0.5)).gradient(model, x, y)
    torch.manual_seed(0)
    noisy = DPSGDTrainer(model, DPSGDConfig(noise_multiplier=1.5, max_grad_norm=0.5)).gradient(model, x, y)
    diff = np.concatenate([(noisy[n].astype(np.float64) - quiet[n]).ravel() for n in quiet])
    assert diff.size > 600
    assert diff.std() == pytest.approx(1.5 * 0.5 / 8, rel=0.1)


def test_dpsgd_same_seed_same_gradient_and_training() -> None:
    model = _mlp(dropout=0.2)
    x, y = _batch()
    trainer = DPSGDTrainer(model, DPSGDConfig(noise_multiplier=1.0, max_grad_norm=1.0))
    outs = []
    for seed in (3, 3, 4):
        torch.manual_seed(seed)
        outs.append(trainer.gradient(model, x, y))
    for name in outs[0]:
        np.testing.assert_array_equal(outs[0][name], outs[1][name])
    assert not np.array_equal(outs[0]["fc1.weight"], outs[2]["fc1.weight"])

    batches = [_batch(n=20, seed=s) for s in (1, 2)]
    trained = []
    for _ in range(2):
        worker = copy.deepcopy(model)
        torch.manual_seed(9)
        loss, steps = trainer.train(worker, batches, optimizer="adam", lr=1e-3)
        trained.append((loss, steps, {n: p.detach().clone() for n, p in worker.named_parameters()}))
    assert trained[0][:2] == trained[1][:2] and trained[0][1] == 2
    for name, p in trained[0][2].items():
        assert torch.equal(p, trained[1][2][name])


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_dpsgd_train_without_noise_or_clipping_matches_plain_training(optimizer: str) -> None:
    # Prepare: dropout on; plain training with the same seed draws the same masks.
    model = _mlp(dropout=0.2)
    batches = [_batch(n=20, seed=s) for s in (1, 2, 3)]
    trainer = DPSGDTrainer(model, DPSGDConfig(noise_multiplier=0.0, max_grad_norm=1e6))
    dp_model, plain = copy.deepcopy(model), copy.deepcopy(model)

    # Execute
    torch.manual_seed(11)
    loss, steps = trainer.train(dp_model, batches, optimizer=optimizer, lr=0.05)
    torch.manual_seed(11)
    opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)(plain.parameters(), lr=0.05)
    plain.train()
    losses = []
    for x, y in batches:
        opt.zero_grad()
        out = nn.CrossEntropyLoss()(plain(x), y)
        out.backward()
        opt.step()
        losses.append(out.item())

    # Assert: trained in place, same weights as plain training, original model untouched by the trainer's copy
    assert steps == 3 and loss == pytest.approx(np.mean(losses), rel=1e-5)
    for (name, p), q in zip(dp_model.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6, msg=name)
    assert not torch.equal(dp_model.layers["fc1"].weight, model.layers["fc1"].weight)


def test_dpsgd_trainer_refuses_other_architecture() -> None:
    trainer = DPSGDTrainer(_mlp(), DPSGDConfig(noise_multiplier=1.0))
    other = MLP(30, hidden=(16,), dropout=(0.0,))
    x, y = _batch()
    with pytest.raises(InvalidParameterError, match=r"build one trainer per architecture\.$"):
        trainer.gradient(other, x, y)
    with pytest.raises(InvalidParameterError, match=re.escape(
        "The 'optimizer' parameter of DPSGDTrainer.train must be one of ['sgd', 'adam']. Got 'rmsprop' instead."
    )):
        trainer.train(_mlp(), [(x, y)], optimizer="rmsprop", lr=0.1)  # type: ignore[arg-type]
    bn = nn.Sequential(nn.Linear(30, 8), nn.BatchNorm1d(8))
    with pytest.raises(InvalidParameterError, match="Opacus cannot train Sequential with DP-SGD"):
        DPSGDTrainer(bn, DPSGDConfig(noise_multiplier=1.0))


def test_ghost_in_place_noise_step_equals_opacus_pre_step() -> None:
    # The trainer's in-place noise/averaging step must be Opacus' DPOptimizerFastGradientClipping.pre_step
    # bit for bit: same arithmetic, same draws from torch's global generator.
    from opacus.grad_sample import GradSampleModuleFastGradientClipping
    from opacus.optimizers import DPOptimizerFastGradientClipping
    from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

    model = _mlp()
    x, y = _batch(n=9)
    torch.manual_seed(21)
    ours = DPSGDTrainer(model, DPSGDConfig(noise_multiplier=1.3, max_grad_norm=0.2)).gradient(model, x, y)

    gsm = GradSampleModuleFastGradientClipping(copy.deepcopy(model), batch_first=True, loss_reduction="mean",
                                               max_grad_norm=0.2, use_ghost_clipping=True)
    opt = DPOptimizerFastGradientClipping(torch.optim.SGD(gsm.parameters(), lr=0.0), noise_multiplier=1.3,
                                          max_grad_norm=0.2, expected_batch_size=9, loss_reduction="mean")
    torch.manual_seed(21)
    gsm.train()
    DPLossFastGradientClipping(gsm, opt, nn.CrossEntropyLoss(), "mean")(gsm(x), y).backward()
    opt.pre_step()
    theirs = {".".join(n.split(".")[-2:]): p.grad.numpy() for n, p in gsm.named_parameters()}
    for name in theirs:
        np.testing.assert_array_equal(ours[name], theirs[name])
