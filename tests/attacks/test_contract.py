"""The contract every registered attack keeps, checked over the whole registry.

As scikit-learn's ``parametrize_with_checks``: each check is a plain function
run for every attack in :data:`~fedaudit.attacks.ATTACKS`, and for the worked
example of ``docs/adding-an-attack.md`` while it is registered. The last tests
show that the checks fail on attacks that break the contract.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fedaudit.attacks import ATTACKS, Attack, AttackerKnowledge, NotFittedError, load_attack, register_attack
from fedaudit.exceptions import InvalidParameterError
from fedaudit.metrics import AttackResult
from fedaudit.record import UpdateStore
from tests.conftest import make_table

#: Small hyper-parameters that keep a check fast; an attack not listed runs with its defaults.
FAST: dict[str, dict[str, Any]] = {
    "cnn": {"epochs": 1, "max_train_updates": 40, "batch_size": 10, "patience": 1},
}
#: The example attack of docs/adding-an-attack.md (registered by a fixture, for the test only).
DOCUMENTED = "docs-example"
CASES = [*sorted(ATTACKS), DOCUMENTED]


@dataclass(frozen=True)
class Context:
    """Everything a check needs: the attacker's knowledge, a target with ground truth, a scratch folder."""

    knowledge: AttackerKnowledge
    target: UpdateStore
    updates: Mapping[str, np.ndarray]  # the target's first updates, every parameter
    tmp_path: Path
    fitted: Callable[[type[Attack]], Attack]  # a fitted attack of the class (cached per module)


@pytest.fixture(scope="module")
def stores(recordings):
    opened = {"shadows": [UpdateStore.open(p) for p in recordings["shadows"]],
              "target": UpdateStore.open(recordings["target"][0])}
    yield opened
    for s in (*opened["shadows"], opened["target"]):
        s.close()


@pytest.fixture(scope="module")
def fitted_cache() -> dict[type[Attack], Attack]:
    return {}


@pytest.fixture
def context(stores, fitted_cache, tmp_path: Path) -> Context:
    target = stores["target"]
    knowledge = AttackerKnowledge(
        shadows=stores["shadows"], public=make_table(n_speakers=20, per_speaker=24, n_features=16, seed=5),
        target_config=target.config,
    )

    def fitted(cls: type[Attack]) -> Attack:
        if cls not in fitted_cache:
            fitted_cache[cls] = new(cls).fit(knowledge)
        return fitted_cache[cls]

    updates = {n: target.param(n, np.arange(24)) for n in target.parameter_names}
    return Context(knowledge=knowledge, target=target, updates=updates, tmp_path=tmp_path, fitted=fitted)


def new(cls: type[Attack]) -> Attack:
    return cls(**FAST.get(cls.name, {}))


@pytest.fixture(params=CASES)
def attack_cls(request: pytest.FixtureRequest) -> type[Attack]:
    if request.param == DOCUMENTED:
        return request.getfixturevalue("documented_attack")
    return ATTACKS[request.param]


# -- the checks ----------------------------------------------------------------------------
def check_class_attributes(cls: type[Attack], ctx: Context) -> None:
    assert ATTACKS.get(cls.name) is cls, f"{cls.__name__} is not registered under its name {cls.name!r}"
    assert cls.name == cls.name.lower() and " " not in cls.name
    for flag in ("needs_shadow", "needs_public", "per_layer"):
        assert isinstance(getattr(cls, flag), bool), f"{cls.__name__}.{flag} is not a bool"
    assert cls.layers_read in ("input", "all")
    attack = new(cls)
    assert not [k for k in vars(attack) if k.endswith("_")], "fitted attributes were set before fit"
    params = attack.get_params()
    assert cls(**params).get_params() == params, "hyper-parameters are not stored unchanged"
    json.dumps(params)  # a saved card records them


def check_not_fitted(cls: type[Attack], ctx: Context) -> None:
    attack = new(cls)
    for call in (
        lambda: attack.predict_proba(ctx.updates),
        lambda: attack.layer_proba(ctx.updates),
        lambda: attack.score(ctx.target),
        lambda: attack.restricted([1]),
        lambda: attack.required_parameters(),
        lambda: attack.save(ctx.tmp_path / "unfitted"),
    ):
        with pytest.raises(NotFittedError, match="not fitted"):
            call()
    assert not list(ctx.tmp_path.iterdir())


def check_fit_returns_self(cls: type[Attack], ctx: Context) -> None:
    attack = new(cls)
    assert attack.fit(ctx.knowledge) is attack
    for name in ("parameters_", "shapes_", "layers_", "fit_info_"):
        assert name in vars(attack), f"fit did not set {name}"
    assert attack.layers_ and set(attack.layers_) <= set(ctx.target.layers)
    if cls.layers_read == "input":
        assert attack.layers_ == [ctx.target.layers[0]]
    assert set(attack.required_parameters()) <= set(ctx.target.parameter_names)
    json.dumps(attack.fit_info_)
    if cls.per_layer:
        assert set(attack.fusion_weights_) == set(attack.layers_)
        assert sum(attack.fusion_weights_.values()) == pytest.approx(1.0)


def check_predictions(cls: type[Attack], ctx: Context) -> None:
    attack = ctx.fitted(cls)
    n = len(next(iter(ctx.updates.values())))
    p = attack.predict_proba(ctx.updates)
    assert p.shape == (n, 2) and np.all((p >= 0) & (p <= 1))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    per_layer = attack.layer_proba(ctx.updates)
    expected_keys = attack.layers_ if cls.per_layer or len(attack.layers_) == 1 else ["fused"]
    assert list(per_layer) == list(expected_keys)
    assert all(v.shape == (n, 2) for v in per_layer.values())
    np.testing.assert_allclose(attack.fuse(per_layer), p, rtol=1e-12)
    with pytest.raises(InvalidParameterError, match="needs parameters"):
        attack.predict_proba({})


def check_same_seed_same_probabilities(cls: type[Attack], ctx: Context) -> None:
    first = new(cls).fit(ctx.knowledge).predict_proba(ctx.updates)
    again = new(cls).fit(ctx.knowledge).predict_proba(ctx.updates)
    np.testing.assert_array_equal(first, again)


def check_save_load(cls: type[Attack], ctx: Context) -> None:
    attack = ctx.fitted(cls)
    card = attack.save(ctx.tmp_path / "model", card={"note": "contract"})
    tensors = torch.load(card.with_suffix(".pt"), weights_only=True)
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())
    loaded = load_attack(card)
    assert type(loaded) is cls and loaded.card_["note"] == "contract"
    assert loaded.get_params() == attack.get_params()
    assert loaded.layers_ == attack.layers_ and loaded.required_parameters() == attack.required_parameters()
    assert loaded.fit_info_ == json.loads(json.dumps(attack.fit_info_))
    np.testing.assert_array_equal(loaded.predict_proba(ctx.updates), attack.predict_proba(ctx.updates))


def check_score(cls: type[Attack], ctx: Context) -> None:
    result = ctx.fitted(cls).score(ctx.target, repeats=3, seed=0)
    assert isinstance(result, AttackResult)
    assert 0.0 <= result.asr <= 1.0 and result.repeats == 3
    gender = ctx.target.ground_truth()["gender"]
    active = [i for i, c in enumerate(ctx.target.client_ids.tolist()) if len(ctx.target.client_rows(c))]
    share_f = np.mean(gender[active] == "F")
    assert result.n_clients == len(active)
    assert result.chance == pytest.approx(max(share_f, 1 - share_f))
    assert ctx.fitted(cls).score(ctx.target, repeats=3, seed=0) == result  # the draws are seeded


def check_restricted_to_first_layer(cls: type[Attack], ctx: Context) -> None:
    attack = ctx.fitted(cls)
    layers_before = list(attack.layers_)
    first = attack.layers_[0]
    sub = attack.restricted([first])
    assert sub.layers_ == [first] and attack.layers_ == layers_before
    assert {p.rsplit(".", 1)[0] for p in sub.required_parameters()} == {first}
    p = sub.predict_proba(ctx.updates)
    assert p.shape == (len(ctx.updates[sub.required_parameters()[0]]), 2)
    if cls.per_layer:
        np.testing.assert_allclose(p, attack.layer_proba(ctx.updates)[first], rtol=1e-12)
    with pytest.raises(InvalidParameterError):
        attack.restricted(["no_such_layer"])


def check_wrong_knowledge_is_refused(cls: type[Attack], ctx: Context) -> None:
    full = ctx.knowledge
    with pytest.raises(InvalidParameterError, match="takes an AttackerKnowledge"):
        new(cls).fit(list(full.shadows))  # type: ignore[arg-type]
    if cls.needs_shadow:
        with pytest.raises(InvalidParameterError, match="fitted on shadow recordings: give --shadow FILE"):
            new(cls).fit(AttackerKnowledge(public=full.public, target_config=full.target_config))
    if cls.needs_public:
        with pytest.raises(InvalidParameterError, match="needs public features: give --public-corpus"):
            new(cls).fit(AttackerKnowledge(shadows=full.shadows, target_config=full.target_config))


CHECKS = [
    check_class_attributes,
    check_not_fitted,
    check_fit_returns_self,
    check_predictions,
    check_same_seed_same_probabilities,
    check_save_load,
    check_score,
    check_restricted_to_first_layer,
    check_wrong_knowledge_is_refused,
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_attack_keeps_the_contract(attack_cls: type[Attack], check: Callable[..., None], context: Context) -> None:
    check(attack_cls, context)


def test_the_registry_is_covered() -> None:
    assert {"cnn", "inversion", "stats"} <= set(CASES)


# -- the checks can fail ----------------------------------------------------------------------
class _FirstLayerMean(Attack):
    """Predicts from the mean first-layer weight update: a minimal attack to break on purpose."""

    name = "broken"
    needs_shadow = True
    layers_read = "input"

    def __init__(self, *, seed: int = 0) -> None:
        self.seed = seed

    def _fit(self, data: AttackerKnowledge) -> None:
        first = data.shadows[0]
        self.layers_ = [first.layers[0]]
        self.parameters_ = [f"{first.layers[0]}.weight"]
        self.shapes_ = {p: first.shape(p) for p in self.parameters_}
        self.fit_info_ = {}
        self.offset_ = 0.25

    def _predict_proba(self, updates: Mapping[str, np.ndarray]) -> np.ndarray:
        w = updates[self.parameters_[0]]
        p_m = 1 / (1 + np.exp(-(w.reshape(len(w), -1).mean(axis=1) + self.offset_)))
        return np.stack([1 - p_m, p_m], axis=1)

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return {"offset": torch.tensor([self.offset_])}, {}

    def _load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        self.offset_ = float(tensors["offset"][0])


class _Unseeded(_FirstLayerMean):
    def _fit(self, data: AttackerKnowledge) -> None:
        super()._fit(data)
        self.offset_ = float(np.random.default_rng().normal())  # ignores the seed


class _Forgetful(_FirstLayerMean):
    def _load_state(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        self.offset_ = 0.0  # does not restore what it saved


@pytest.fixture
def register_temporarily():
    before = dict(ATTACKS)

    def register(cls: type[Attack]) -> type[Attack]:
        ATTACKS.pop(cls.name, None)
        return register_attack(cls)

    yield register
    ATTACKS.clear()
    ATTACKS.update(before)


def test_a_minimal_attack_keeps_the_contract(register_temporarily, context: Context) -> None:
    cls = register_temporarily(_FirstLayerMean)
    for check in CHECKS:
        check(cls, context)


@pytest.mark.parametrize(
    ("broken", "check"),
    [(_Unseeded, check_same_seed_same_probabilities), (_Forgetful, check_save_load)],
    ids=["unseeded", "forgetful"],
)
def test_the_checks_catch_a_broken_attack(register_temporarily, context: Context, broken, check) -> None:
    cls = register_temporarily(broken)
    with pytest.raises(AssertionError):
        check(cls, context)
