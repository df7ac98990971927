"""Per-round metrics: declared names are kept, others are left out with one warning per name."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from fedaudit.exceptions import UndeclaredMetricWarning
from fedaudit.hooks import ClientInfo, RoundEnd, RoundStart, RunEnd, RunStart
from fedaudit.record import Recorder, UpdateStore
from fedaudit.types import ClientUpdate

SHAPES = {"fc1.weight": (3, 2), "fc1.bias": (3,)}


def _record(path: Path, *, background: bool) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Recorder(path, background=background) as rec:
            rec.on_run_start(RunStart(config={"algorithm": "fedsgd"}, parameter_shapes=SHAPES,
                                      clients=[ClientInfo(client_id=0, n_train=4)], metric_names=("val_uar",)))
            for r in range(3):
                rec.on_round_start(RoundStart(server_round=r, client_ids=[0]))
                arrays = {n: np.full(s, r, dtype=np.float32) for n, s in SHAPES.items()}
                rec.on_client_update(ClientUpdate(server_round=r, client_id=0, kind="gradient", arrays=arrays,
                                                  num_samples=4, local_steps=1, lr=0.1))
                rec.on_round_end(RoundEnd(server_round=r, n_clients=1,
                                          metrics={"val_uar": 0.5 + r / 10, "secret_score": 1.0, "other": 2.0}))
            rec.on_run_end(RunEnd())
    return [w for w in caught if issubclass(w.category, UndeclaredMetricWarning)]


@pytest.mark.parametrize("background", [False, True])
def test_undeclared_metrics_are_left_out_with_one_warning(tmp_path: Path, background: bool) -> None:
    path = tmp_path / "run.h5"
    caught = _record(path, background=background)
    assert len(caught) == 1, [str(w.message) for w in caught]
    assert "['other', 'secret_score']" in str(caught[0].message)
    with UpdateStore.open(path) as store:
        metrics = store.metrics()
    assert np.allclose(metrics["val_uar"], [0.5, 0.6, 0.7])
    assert "secret_score" not in metrics and "other" not in metrics
