"""Contract of every registered defense: built from options, frozen, validated, its pieces usable."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

import fedaudit.defenses
from fedaudit.config import FLConfig, clients_per_round
from fedaudit.defenses import (
    DEFENSES,
    Defense,
    DefenseContext,
    InsecureKeyWarning,
    build_defenses,
    defenses_from_options,
    describe_options,
    register_defense,
)
from fedaudit.exceptions import InvalidParameterError
from fedaudit.types import Aggregate, ClientUpdate, DefensePieces, Participation, PrivacySpent
from tests.conftest import make_table

#: Default-ish options: enough for every built-in defense (a noise multiplier, a key small enough to be quick).
OPTIONS = {"noise_multiplier": 1.0, "key_bits": 512, "insecure_key": True, "ldp_epsilon": 8.0}
NAMES = sorted(DEFENSES)
N_FEATURES = 6


@pytest.fixture(scope="module")
def context() -> DefenseContext:
    table = make_table(n_speakers=10, per_speaker=16, n_features=N_FEATURES)
    config = FLConfig(rounds=3, client_fraction=0.3, batch_size=5, hidden=(8,), dropout=(0.0,), seed=0)
    return DefenseContext.for_table(config, table)


def _make(name: str, **overrides: object) -> Defense:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        (defense,) = defenses_from_options([name], {**OPTIONS, **overrides})
    return defense


def _build(defense: Defense, context: DefenseContext) -> DefensePieces:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        return defense.build(context)


def _update(client_id: int, server_round: int = 0, seed: int = 0) -> ClientUpdate:
    rng = np.random.default_rng([seed, client_id])
    arrays = {
        "fc1.weight": rng.normal(size=(8, N_FEATURES)).astype(np.float32),
        "fc1.bias": rng.normal(size=8).astype(np.float32),
        "fc2.weight": rng.normal(size=(4, 8)).astype(np.float32),
        "fc2.bias": rng.normal(size=4).astype(np.float32),
    }
    return ClientUpdate(server_round=server_round, client_id=client_id, kind="gradient", arrays=arrays,
                        num_samples=5, local_steps=1, lr=0.1)


def _participation(context: DefenseContext) -> Participation:
    return Participation(
        client_id=np.array([0, 2, 0, 1]), server_round=np.array([0, 0, 1, 1]), local_steps=np.ones(4, np.int64),
        num_samples=np.full(4, 5), n_train=np.full(context.n_clients, 10), batch_size=5, rounds=2,
        n_selected=2, n_clients=context.n_clients,
    )


# -- the registry ---------------------------------------------------------------------------------


def test_builtin_defenses_register_in_the_order_their_transforms_apply() -> None:
    assert list(DEFENSES)[:5] == ["prune", "udp", "ldp", "dp-sgd", "sefl"]
    for name, cls in DEFENSES.items():
        assert cls.name == name and issubclass(cls, Defense)
        assert isinstance(cls.description, str) and cls.description


def test_context_for_table_counts_clients_and_their_median_training_set(context: DefenseContext) -> None:
    from fedaudit.data.clients import split_clients

    split = split_clients(make_table(n_speakers=10, per_speaker=16, n_features=N_FEATURES), n_folds=5, fold=0,
                          seed=0)
    assert context.n_clients == len(split.clients) == 8
    assert context.n_train_typical == int(np.median([len(c.train_rows) for c in split.clients]))
    with pytest.raises(InvalidParameterError, match="The 'n_clients' parameter of DefenseContext"):
        DefenseContext(config=context.config, n_clients=0, n_train_typical=10)


def test_register_defense_refuses_malformed_classes() -> None:
    class NotFrozen(Defense):
        name: ClassVar[str] = "not-frozen"
        description: ClassVar[str] = "x"

        def build(self, context: DefenseContext) -> DefensePieces:
            return DefensePieces()

    with pytest.raises(TypeError, match="must be a frozen dataclass"):
        register_defense(dataclasses.dataclass(NotFrozen))
    with pytest.raises(ValueError, match="'udp' is already registered"):
        @register_defense
        @dataclasses.dataclass(frozen=True, kw_only=True)
        class OtherUDP(Defense):
            name: ClassVar[str] = "udp"
            description: ClassVar[str] = "x"

            def build(self, context: DefenseContext) -> DefensePieces:
                return DefensePieces()
    assert "not-frozen" not in DEFENSES and DEFENSES["udp"].__name__ == "UserLevelDPDefense"


def test_defenses_never_import_the_simulator_recorder_attacks_or_audit() -> None:
    root = Path(fedaudit.defenses.__file__).parent
    forbidden = ("fedaudit.fl", "fedaudit.record", "fedaudit.attacks", "fedaudit.audit")
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                assert not any(module == f or module.startswith(f + ".") for f in forbidden), (
                    f"{path.name} imports {module}"
                )


# -- every registered defense ----------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_defense_builds_from_options_into_pieces_with_json_settings(name: str, context: DefenseContext) -> None:
    defense = _make(name)
    assert type(defense) is DEFENSES[name]

    pieces = _build(defense, context)

    assert isinstance(pieces, DefensePieces)
    assert name in pieces.settings
    json.dumps(pieces.settings, allow_nan=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        composed = build_defenses([defense], context)
    assert composed.settings == {"names": [name], **pieces.settings}
    assert set(describe_options([name], OPTIONS)) == {"names", *fedaudit.defenses.option_defaults()}


@pytest.mark.parametrize("name", NAMES)
def test_defense_is_a_frozen_keyword_only_dataclass(name: str) -> None:
    defense = _make(name)
    field = dataclasses.fields(defense)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(defense, field, getattr(defense, field))
    assert all(f.kw_only for f in dataclasses.fields(defense))
    assert defense == _make(name) and hash(defense) == hash(_make(name))


@pytest.mark.parametrize("name", NAMES)
def test_every_option_of_a_defense_is_validated(name: str) -> None:
    defense = _make(name)
    cls = type(defense)
    for field, key in cls.options().items():
        with pytest.raises(InvalidParameterError, match=f"The '{field}' parameter of {cls.__name__} must be"):
            dataclasses.replace(defense, **{field: "bogus"})
        with pytest.raises(InvalidParameterError):
            defenses_from_options([name], {**OPTIONS, key: "bogus"})


@pytest.mark.parametrize("name", NAMES)
def test_pieces_transform_aggregate_account_and_summarise(name: str, context: DefenseContext) -> None:
    # Prepare
    pieces = _build(_make(name), context)
    rng = np.random.default_rng(0)
    updates = [_update(cid) for cid in (0, 2)]

    # Execute: what the simulator does in one round and at the end of the run
    sent = []
    for update in updates:
        for transform in pieces.transforms:
            update = transform(update, rng)
        if pieces.aggregator is not None:
            update = pieces.aggregator.client_send(update)
        sent.append(update)
    aggregate = pieces.aggregator.server_aggregate() if pieces.aggregator is not None else None
    participation = _participation(context)
    privacy = [account(participation) for account in pieces.accountants]
    report = {k: v for summary in pieces.summaries for k, v in summary(participation).items()}

    # Assert
    for before, after in zip(updates, sent, strict=True):
        assert after.arrays.keys() == before.arrays.keys()
        assert all(after.arrays[n].shape == a.shape for n, a in before.arrays.items())
        assert (after.client_id, after.server_round) == (before.client_id, before.server_round)
    if aggregate is not None:
        assert isinstance(aggregate, Aggregate)
        assert aggregate.mean_delta.keys() == updates[0].arrays.keys()
    for spent in privacy:
        assert isinstance(spent, PrivacySpent) and spent.mechanism == name
        assert spent.level in ("user", "sample", "release")
        assert set(spent.epsilon_per_client) == {0, 1, 2}
        assert all(eps > 0 for eps in spent.epsilon_per_client.values())
        assert dict(spent.rounds_joined) == {0: 2, 1: 1, 2: 1}
        assert PrivacySpent.from_dict(json.loads(json.dumps(spent.to_dict()))) == spent
    json.dumps(report, allow_nan=False)
    if pieces.client_trainer is not None:
        model = torch.nn.Sequential(torch.nn.Linear(N_FEATURES, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
        trainer = pieces.client_trainer(model)
        grads = trainer.gradient(model, torch.randn(5, N_FEATURES), torch.zeros(5, dtype=torch.long))
        assert {n: g.shape for n, g in grads.items()} == {n: tuple(p.shape) for n, p in model.named_parameters()}


# -- numbers each defense resolves -----------------------------------------------------------------


def test_udp_calibrates_its_amplified_epsilon_to_the_target(context: DefenseContext) -> None:
    from fedaudit.defenses.accounting import udp_epsilon

    pieces = _build(_make("udp", noise_multiplier=None, target_epsilon=5.0, clip=0.5), context)
    udp = pieces.settings["udp"]
    config = context.config
    assert udp["epsilon_amplified"] <= 5.0
    assert udp["epsilon_amplified"] == pytest.approx(5.0, rel=1e-3)
    assert udp_epsilon(udp["noise_multiplier"], client_fraction=config.client_fraction, rounds=config.rounds,
                       delta=1e-5) == udp["epsilon_amplified"]
    assert udp["noise_std"] == pytest.approx(0.5 * udp["noise_multiplier"])
    (spent,) = [account(_participation(context)) for account in pieces.accountants]
    assert spent.epsilon_aggregate == udp["epsilon_amplified"]
    # A client that joined twice spent more than one that joined once.
    assert spent.epsilon_per_client[0] > spent.epsilon_per_client[1] == spent.epsilon_per_client[2]


def test_dp_sgd_calibrates_on_the_typical_client(context: DefenseContext) -> None:
    from fedaudit.defenses.accounting import epsilon

    pieces = _build(_make("dp-sgd", noise_multiplier=None, target_epsilon=3.0), context)
    settings = pieces.settings["dp-sgd"]
    config = context.config
    rate = min(1.0, config.batch_size / context.n_train_typical)
    steps = max(1, round(config.rounds * config.client_fraction * 1))
    assert settings["calibration"] == {"sample_rate": rate, "steps": steps}
    assert settings["target_epsilon"] == 3.0
    assert epsilon(settings["noise_multiplier"], sample_rate=rate, steps=steps, delta=1e-5) <= 3.0


def test_ldp_reports_its_per_release_epsilon_for_every_client_that_joined(context: DefenseContext) -> None:
    pieces = _build(_make("ldp", ldp_epsilon=2.0, clip=0.5, css_keep=0.5), context)
    assert pieces.settings["css"] == {"keep": 0.5}
    assert pieces.settings["ldp"]["epsilon_per_round"] == 2.0
    (spent,) = [account(_participation(context)) for account in pieces.accountants]
    assert spent.level == "release" and spent.accountant == "analytic"
    assert spent.epsilon_per_client == {0: 2.0, 1: 2.0, 2: 2.0}
    assert spent.noise_multiplier == pytest.approx(pieces.settings["ldp"]["noise_std"] / 0.5)


def test_sefl_sizes_its_packing_for_one_round(context: DefenseContext) -> None:
    pieces = _build(_make("sefl"), context)
    expected = clients_per_round(context.config.client_fraction, context.n_clients)
    assert pieces.settings["sefl"]["max_clients"] == expected
    assert pieces.settings["sefl"]["prune_percent"] == 80.0 and pieces.settings["sefl"]["mode"] == "packed"
    assert pieces.summaries[0](_participation(context)) == {
        "sefl": {"clipped_share": 0.0, "key_warnings": pieces.aggregator.warnings}}
    assert math.isfinite(pieces.aggregator.max_clients)
