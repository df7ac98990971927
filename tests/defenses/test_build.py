"""Every defense is a setting of a recorded run: built, applied, recorded and read back."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedaudit.cli.main import app
from fedaudit.config import FLConfig
from fedaudit.defenses.build import DefenseSpec, SelectiveAggregation, build_defenses
from fedaudit.defenses.paillier import InsecureKeyWarning
from fedaudit.exceptions import InvalidParameterError
from fedaudit.record import UpdateStore, record_run
from fedaudit.types import ClientUpdate
from tests.conftest import make_table

runner = CliRunner()


def _record(tmp_path: Path, spec: DefenseSpec, *, algorithm: str = "fedsgd", rounds: int = 4) -> UpdateStore:
    table = make_table(n_speakers=10, per_speaker=24, n_features=16)
    config = FLConfig(algorithm=algorithm, rounds=rounds, client_fraction=0.3, hidden=(16, 8), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        d = build_defenses(spec, config=config, n_clients=8, n_train_typical=15)
    path = tmp_path / f"{'_'.join(spec.names) or 'none'}_{algorithm}_{len(list(tmp_path.iterdir()))}.h5"
    record_run(config, table, path, transforms=d.transforms, aggregator=d.aggregator, client_trainer=d.client_trainer,
               reporters=d.reporters, extra_config={"defenses": d.settings})
    return UpdateStore.open(path)


def test_udp_updates_are_clipped_then_noised_and_epsilon_recorded(tmp_path: Path) -> None:
    with _record(tmp_path, DefenseSpec(names=("udp",), clip=0.5, noise_multiplier=0.0)) as store:
        norms = np.sqrt(sum(np.square(store.param(n).astype(np.float64)).reshape(store.n_updates, -1).sum(axis=1)
                            for n in store.parameter_names))
        assert norms.max() <= 0.5 + 1e-5
        assert store.config["defenses"]["udp"]["noise_multiplier"] == 0.0
    with _record(tmp_path, DefenseSpec(names=("udp",), clip=0.5, noise_multiplier=2.0)) as store:
        privacy = store.result["privacy_udp"]
        eps = privacy["epsilon_per_client"]
        rows = store.index["client_id"]
        # A client that joined more rounds spent more.
        counts = {str(c): int((rows == c).sum()) for c in np.unique(rows)}
        ordered = sorted(eps, key=lambda c: counts[c])
        assert eps[ordered[0]] <= eps[ordered[-1]]
        assert privacy["epsilon_amplified"] > 0
        noisy = np.sqrt(np.square(store.param("fc1.weight").astype(np.float64)).reshape(store.n_updates, -1).sum(1))
        assert noisy.min() > 0.5  # noise of std 1.0 on 256 values dominates a 0.5 bound


def test_dp_sgd_trains_privately_and_accounts_each_client(tmp_path: Path) -> None:
    with _record(tmp_path, DefenseSpec(names=("dp-sgd",), noise_multiplier=1.0, max_grad_norm=0.1)) as store:
        grads = np.sqrt(sum(np.square(store.param(n).astype(np.float64)).reshape(store.n_updates, -1).sum(1)
                            for n in store.parameter_names))
        assert np.isfinite(grads).all()
        eps = store.result["privacy_dp_sgd"]["epsilon_per_client"]
        assert set(map(int, eps)) == set(store.index["client_id"].tolist())
        assert all(v > 0 for v in eps.values())
    with _record(tmp_path, DefenseSpec(names=("dp-sgd",), noise_multiplier=1.0), algorithm="fedavg") as store:
        assert store.config["defenses"]["dp-sgd"]["noise_multiplier"] == 1.0
        assert "privacy_dp_sgd" in store.result


def test_dp_sgd_target_epsilon_is_calibrated(tmp_path: Path) -> None:
    with _record(tmp_path, DefenseSpec(names=("dp-sgd",), target_epsilon=5.0), rounds=6) as store:
        z = store.config["defenses"]["dp-sgd"]["noise_multiplier"]
        assert z > 0
        assert store.config["defenses"]["dp-sgd"]["target_epsilon"] == 5.0


def test_ldp_with_client_selection(tmp_path: Path) -> None:
    with _record(tmp_path, DefenseSpec(names=("ldp",), ldp_epsilon=8.0, clip=0.5, css_keep=0.5)) as store:
        assert store.config["defenses"]["css"] == {"keep": 0.5}
        assert store.result["privacy_ldp"]["epsilon_per_round"] == 8.0


def test_selective_aggregation_keeps_least_noisy_updates() -> None:
    agg = SelectiveAggregation(keep=0.5, noise_std=1.0)
    rng = np.random.default_rng(0)
    def upd(cid: int, signal: float) -> ClientUpdate:
        arr = rng.normal(size=1000) + signal
        return ClientUpdate(server_round=0, client_id=cid, kind="gradient", arrays={"w": arr}, num_samples=10,
                            local_steps=1, lr=1.0)
    ups = [upd(0, 0.0), upd(1, 3.0), upd(2, 0.0), upd(3, 3.0)]
    for u in ups:
        agg.client_send(u)
    mean = agg.server_aggregate()["w"]
    np.testing.assert_allclose(mean, (ups[1].arrays["w"] + ups[3].arrays["w"]) / 2)
    assert agg.kept == 2 and agg.received == 4


def test_sefl_records_key_holder_view_and_wire_costs(tmp_path: Path) -> None:
    spec = DefenseSpec(names=("sefl",), key_bits=512, insecure_key=True, prune_percent=50.0, he_clip=0.5,
                       encrypted_rounds=1)
    with _record(tmp_path, spec) as store:
        w = store.param("fc1.weight")
        zero_share = (w == 0).reshape(store.n_updates, -1).mean(axis=1)
        assert np.all(zero_share >= 0.5)  # half of each layer pruned
        rounds = store.index["server_round"]
        assert np.isfinite(store.index["encrypt_seconds"][rounds == 0]).all()
        assert np.isnan(store.index["encrypt_seconds"][rounds > 0]).all()
        assert (store.index["bytes_sent"] > 0).all()
        assert store.config["defenses"]["sefl"]["server_sees"] == "ciphertexts only"


def test_prune_defense(tmp_path: Path) -> None:
    with _record(tmp_path, DefenseSpec(names=("prune",), prune_percent=80.0)) as store:
        w = store.param("fc1.weight").reshape(store.n_updates, -1)
        assert np.all((w == 0).sum(axis=1) >= (w.shape[1] * 80) // 100)  # exactly floor(N pp / 100) pruned
        assert (store.index["bytes_sent"] == sum(np.prod(store.shape(n)) for n in store.parameter_names) * 4).all()


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"names": ("nosuch",)}, "Unknown defense 'nosuch'"),
        ({"names": ("udp",)}, "exactly one of --noise-multiplier or --target-epsilon"),
        ({"names": ("dp-sgd",), "noise_multiplier": 1.0, "target_epsilon": 3.0}, "exactly one"),
        ({"names": ("sefl", "prune")}, "already prunes"),
        ({"names": ("udp",), "noise_multiplier": 1.0, "css_keep": 0.5}, "'ldp' defense only"),
    ],
)
def test_bad_defense_specs(kwargs, needle) -> None:
    with pytest.raises(InvalidParameterError, match=needle):
        DefenseSpec(**kwargs)


def test_cli_refuses_tiny_keys_and_warns_on_1024(tmp_path: Path) -> None:
    res = runner.invoke(app, ["record", "--rounds", "1", "--defense", "sefl", "--key-bits", "512",
                              "--out", str(tmp_path / "a.h5")])
    assert res.exit_code != 0 and "--insecure-key" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "a.h5").exists()
    res = runner.invoke(app, ["record", "--rounds", "1", "--defense", "sefl", "--key-bits", "1024",
                              "--out", str(tmp_path / "b.h5")])
    assert res.exit_code == 0, res.output
    assert "NIST SP 800-57" in res.output


def test_cli_bad_defense_name(tmp_path: Path) -> None:
    res = runner.invoke(app, ["record", "--rounds", "1", "--defense", "dp", "--out", str(tmp_path / "x.h5")])
    assert res.exit_code != 0 and "Unknown defense 'dp'" in res.output
