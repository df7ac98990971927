"""Small recordings with a gender signal in the features, shared by the attack tests."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from fedaudit.attacks import ATTACKS, Attack, AttackerKnowledge
from fedaudit.audit import record_run
from fedaudit.config import FLConfig
from fedaudit.record import UpdateStore
from tests.conftest import make_table

#: The worked example of docs/adding-an-attack.md, run by the tests so that doc and code cannot drift.
ADDING_AN_ATTACK = Path(__file__).resolve().parents[2] / "docs" / "adding-an-attack.md"


def _record(path: Path, *, seed: int, table_seed: int, fold: int = 0, algorithm: str = "fedsgd") -> Path:
    table = make_table(n_speakers=20, per_speaker=24, n_features=16, seed=table_seed)
    cfg = FLConfig(algorithm=algorithm, rounds=15, client_fraction=0.25, hidden=(32, 16), seed=seed, fold=fold)
    record_run(cfg, table, path)
    return path


@pytest.fixture(scope="session")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("recordings")
    shadows = [_record(root / f"shadow{k}.h5", seed=10 + k, table_seed=1, fold=k) for k in range(3)]
    target = _record(root / "target.h5", seed=0, table_seed=2)
    return {"shadows": shadows, "target": [target]}


@pytest.fixture
def shadow_stores(recordings):
    stores = [UpdateStore.open(p) for p in recordings["shadows"]]
    yield stores
    for s in stores:
        s.close()


@pytest.fixture
def target_store(recordings):
    with UpdateStore.open(recordings["target"][0]) as store:
        yield store


@pytest.fixture
def public_table():
    """Public acoustic features of other speakers, in the targets' feature set."""
    return make_table(n_speakers=20, per_speaker=24, n_features=16, seed=5)


@pytest.fixture
def knowledge(shadow_stores, public_table, target_store) -> AttackerKnowledge:
    """Everything an attacker may know about the target: any attack can fit on it."""
    return AttackerKnowledge(shadows=shadow_stores, public=public_table, target_config=target_store.config)


def documented_example_code() -> str:
    """The first Python code block of docs/adding-an-attack.md: the example attack's whole module."""
    blocks = re.findall(r"```python\n(.*?)```", ADDING_AN_ATTACK.read_text(), flags=re.DOTALL)
    assert blocks, f"{ADDING_AN_ATTACK} holds no python code block"
    return blocks[0]


@contextlib.contextmanager
def registered_example() -> Iterator[type[Attack]]:
    """Run the example module of docs/adding-an-attack.md; its attack is registered inside the block only.

    An attack of the same name already in the registry (the example added to the package) is
    set aside meanwhile, and everything is put back as it was on leaving.
    """
    before = dict(ATTACKS)
    ATTACKS.clear()
    try:
        module = ModuleType("adding_an_attack_example")
        exec(compile(documented_example_code(), str(ADDING_AN_ATTACK), "exec"), module.__dict__)  # noqa: S102
        added = dict(ATTACKS)
        assert len(added) == 1, f"the example should register one attack; it registered {sorted(added)}"
        ATTACKS.update({k: v for k, v in before.items() if k not in added})
        yield next(iter(added.values()))
    finally:
        ATTACKS.clear()
        ATTACKS.update(before)


@pytest.fixture
def documented_attack() -> Iterator[type[Attack]]:
    """The example attack of docs/adding-an-attack.md, registered for the test only."""
    with registered_example() as cls:
        yield cls
