"""Small recordings with a gender signal in the features, shared by the attack tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedaudit.config import FLConfig
from fedaudit.record import UpdateStore, record_run
from tests.conftest import make_table


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
