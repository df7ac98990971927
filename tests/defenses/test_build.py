"""Every defense is a setting of a recorded run: built, applied, recorded and read back."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from fedaudit.audit import record_run
from fedaudit.cli.main import app
from fedaudit.config import FLConfig
from fedaudit.defenses import (
    DefenseContext,
    LocalDPDefense,
    PruneDefense,
    SEFLDefense,
    UserLevelDPDefense,
    build_defenses,
    defenses_from_options,
    describe_options,
)
from fedaudit.defenses.paillier import InsecureKeyWarning
from fedaudit.exceptions import InvalidParameterError
from fedaudit.record import UpdateStore
from fedaudit.types import PrivacySpent
from tests.conftest import make_table

runner = CliRunner()

#: The option keys of today's command line, with their defaults.
SPEC_DEFAULTS = {
    "names": [], "clip": 1.0, "noise_multiplier": None, "target_epsilon": None, "delta": 1e-5, "accountant": "rdp",
    "max_grad_norm": 1.0, "ldp_epsilon": 10.0, "css_keep": 1.0, "prune_percent": 80.0, "key_bits": 2048,
    "he_mode": "packed", "he_clip": 0.5, "value_bits": 16, "encrypted_rounds": 1, "insecure_key": False,
}


def _record(tmp_path: Path, names: tuple[str, ...], *, algorithm: str = "fedsgd", rounds: int = 4,
            **options: Any) -> UpdateStore:
    table = make_table(n_speakers=10, per_speaker=24, n_features=16)
    config = FLConfig(algorithm=algorithm, rounds=rounds, client_fraction=0.3, hidden=(16, 8), seed=0)
    defenses = defenses_from_options(names, options)
    path = tmp_path / f"{'_'.join(names) or 'none'}_{algorithm}_{len(list(tmp_path.iterdir()))}.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        record_run(config, table, path, defenses=defenses,
                   extra_config={"defense_spec": describe_options(names, options)})
    return UpdateStore.open(path)


def _spent(store: UpdateStore, mechanism: str) -> PrivacySpent:
    (spent,) = [p for p in store.privacy() if p.mechanism == mechanism]
    return spent


def test_udp_updates_are_clipped_then_noised_and_epsilon_recorded(tmp_path: Path) -> None:
    with _record(tmp_path, ("udp",), clip=0.5, noise_multiplier=0.0) as store:
        norms = np.sqrt(sum(np.square(store.param(n).astype(np.float64)).reshape(store.n_updates, -1).sum(axis=1)
                            for n in store.parameter_names))
        assert norms.max() <= 0.5 + 1e-5
        assert store.config["defenses"]["udp"]["noise_multiplier"] == 0.0
        assert store.config["defenses"]["names"] == ["udp"]
        assert store.config["defense_spec"] == {**SPEC_DEFAULTS, "names": ["udp"], "clip": 0.5,
                                                "noise_multiplier": 0.0}
    with _record(tmp_path, ("udp",), clip=0.5, noise_multiplier=2.0) as store:
        privacy = _spent(store, "udp")
        eps = privacy.epsilon_per_client
        rows = store.index["client_id"]
        # A client that joined more rounds spent more.
        counts = {int(c): int((rows == c).sum()) for c in np.unique(rows)}
        assert set(eps) == set(counts) and dict(privacy.rounds_joined) == counts
        ordered = sorted(eps, key=lambda c: counts[c])
        assert eps[ordered[0]] <= eps[ordered[-1]]
        assert privacy.epsilon_aggregate > 0
        assert privacy.epsilon_aggregate == store.config["defenses"]["udp"]["epsilon_amplified"]
        assert privacy.level == "user" and privacy.noise_multiplier == 2.0 and privacy.delta == 1e-5
        noisy = np.sqrt(np.square(store.param("fc1.weight").astype(np.float64)).reshape(store.n_updates, -1).sum(1))
        assert noisy.min() > 0.5  # noise of std 1.0 on 256 values dominates a 0.5 bound


def test_dp_sgd_trains_privately_and_accounts_each_client(tmp_path: Path) -> None:
    with _record(tmp_path, ("dp-sgd",), noise_multiplier=1.0, max_grad_norm=0.1) as store:
        grads = np.sqrt(sum(np.square(store.param(n).astype(np.float64)).reshape(store.n_updates, -1).sum(1)
                            for n in store.parameter_names))
        assert np.isfinite(grads).all()
        eps = _spent(store, "dp-sgd").epsilon_per_client
        assert set(eps) == set(store.index["client_id"].tolist())
        assert all(v > 0 for v in eps.values())
    with _record(tmp_path, ("dp-sgd",), algorithm="fedavg", noise_multiplier=1.0) as store:
        assert store.config["defenses"]["dp-sgd"]["noise_multiplier"] == 1.0
        assert [p.mechanism for p in store.privacy()] == ["dp-sgd"]
        assert _spent(store, "dp-sgd").level == "sample"


def test_dp_sgd_target_epsilon_is_calibrated(tmp_path: Path) -> None:
    with _record(tmp_path, ("dp-sgd",), rounds=6, target_epsilon=5.0) as store:
        z = store.config["defenses"]["dp-sgd"]["noise_multiplier"]
        assert z > 0
        assert store.config["defenses"]["dp-sgd"]["target_epsilon"] == 5.0


def test_ldp_with_client_selection(tmp_path: Path) -> None:
    with _record(tmp_path, ("ldp",), ldp_epsilon=8.0, clip=0.5, css_keep=0.5) as store:
        assert store.config["defenses"]["css"] == {"keep": 0.5}
        privacy = _spent(store, "ldp")
        assert privacy.level == "release"
        rows = store.index["client_id"]
        assert privacy.epsilon_per_client == {int(c): 8.0 for c in np.unique(rows)}
        assert sum(privacy.rounds_joined.values()) == store.n_updates


def test_sefl_records_key_holder_view_and_wire_costs(tmp_path: Path) -> None:
    with _record(tmp_path, ("sefl",), key_bits=512, insecure_key=True, prune_percent=50.0, he_clip=0.5,
                 encrypted_rounds=1) as store:
        w = store.param("fc1.weight")
        zero_share = (w == 0).reshape(store.n_updates, -1).mean(axis=1)
        assert np.all(zero_share >= 0.5)  # half of each layer pruned
        rounds = store.index["server_round"]
        assert np.isfinite(store.index["encrypt_seconds"][rounds == 0]).all()
        assert np.isnan(store.index["encrypt_seconds"][rounds > 0]).all()
        assert np.isfinite(store.index["decrypt_seconds"][rounds == 0]).all()
        assert np.isnan(store.index["decrypt_seconds"][rounds > 0]).all()
        assert (store.index["bytes_sent"] > 0).all()
        assert store.config["defenses"]["sefl"]["server_sees"] == "ciphertexts only"
        assert set(store.result["sefl"]) == {"clipped_share", "key_warnings"}


def test_prune_defense(tmp_path: Path) -> None:
    with _record(tmp_path, ("prune",), prune_percent=80.0) as store:
        w = store.param("fc1.weight").reshape(store.n_updates, -1)
        assert np.all((w == 0).sum(axis=1) >= (w.shape[1] * 80) // 100)  # exactly floor(N pp / 100) pruned
        assert (store.index["bytes_sent"] == sum(np.prod(store.shape(n)) for n in store.parameter_names) * 4).all()
        assert store.privacy() == []


# -- options and composition ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "options", "needle"),
    [
        (("nosuch",), {}, "Unknown defense 'nosuch'"),
        (("udp",), {}, "exactly one of --noise-multiplier or --target-epsilon"),
        (("dp-sgd",), {"noise_multiplier": 1.0, "target_epsilon": 3.0}, "exactly one"),
        (("sefl", "prune"), {}, "already prunes"),
        (("udp",), {"noise_multiplier": 1.0, "css_keep": 0.5}, "'ldp' defense only"),
        (("ldp",), {"css_keep": 0.0}, r"css_keep must be in \(0, 1\]"),
        (("ldp", "ldp"), {}, "named twice"),
        (("ldp",), {"css_kept": 0.5}, r"Unknown defense options \['css_kept'\]"),
        (("udp",), {"clip": -1, "noise_multiplier": 1.0},
         r"The 'clip' parameter of UserLevelDPDefense must be a float > 0\. Got -1 instead\."),
    ],
)
def test_bad_defense_options(names, options, needle) -> None:
    with pytest.raises(InvalidParameterError, match=needle):
        defenses_from_options(names, options)


def test_defenses_from_options_fills_each_defense_from_its_option_keys() -> None:
    options = {**{k: v for k, v in SPEC_DEFAULTS.items() if k != "names"}, "noise_multiplier": 0.5,
               "ldp_epsilon": 3.0, "prune_percent": 20.0, "he_mode": "single", "he_clip": 0.1, "clip": 0.25}
    udp, ldp = defenses_from_options(["ldp", "udp"], options)
    assert udp == UserLevelDPDefense(clip=0.25, noise_multiplier=0.5)  # registry order: udp before ldp
    assert ldp == LocalDPDefense(clip=0.25, epsilon=3.0)
    (sefl,) = defenses_from_options(["sefl"], {**options, "key_bits": 1024})
    assert sefl == SEFLDefense(key_bits=1024, mode="single", clip=0.1, prune_percent=20.0)
    assert defenses_from_options([], options) == []


def test_build_defenses_composes_in_the_given_order() -> None:
    context = DefenseContext(config=FLConfig(rounds=3), n_clients=10, n_train_typical=40)
    pieces = build_defenses([PruneDefense(percent=50.0), UserLevelDPDefense(clip=1.0, noise_multiplier=1.0),
                             LocalDPDefense(epsilon=5.0, css_keep=0.5)], context)
    assert [type(t).__name__ for t in pieces.transforms] == ["MagnitudePrune", "UserLevelDP", "LocalDP"]
    assert list(pieces.settings) == ["names", "prune", "udp", "ldp", "css"]
    assert pieces.settings["names"] == ["prune", "udp", "ldp"]
    assert type(pieces.aggregator).__name__ == "SelectiveAggregation"
    assert len(pieces.accountants) == 2 and pieces.client_trainer is None
    with pytest.raises(InvalidParameterError, match="named twice"):
        build_defenses([PruneDefense(), PruneDefense(percent=10.0)], context)


def test_two_aggregators_cannot_be_combined() -> None:
    context = DefenseContext(config=FLConfig(rounds=3), n_clients=10, n_train_typical=40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        with pytest.raises(InvalidParameterError,
                           match=r"^sefl cannot be combined with the LDP client selection strategy\.$"):
            build_defenses([LocalDPDefense(css_keep=0.5), SEFLDefense(key_bits=512, insecure_key=True)], context)
        # Without the selection strategy LDP has no aggregator, and the two combine.
        pieces = build_defenses([LocalDPDefense(), SEFLDefense(key_bits=512, insecure_key=True)], context)
    assert type(pieces.aggregator).__name__ == "SecureAggregation"


# -- the command line -------------------------------------------------------------------------------


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
