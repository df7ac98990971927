"""Run a simulated federation and record every client update."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedaudit.config import FLConfig
from fedaudit.data.table import FeatureTable
from fedaudit.exceptions import RecordingError
from fedaudit.fl.hooks import Hook
from fedaudit.fl.simulate import SimulationResult, Transform, simulate
from fedaudit.record.recorder import Recorder

__all__ = ["record_run"]


def record_run(
    config: FLConfig,
    table: FeatureTable,
    out: str | os.PathLike[str],
    *,
    dtype: str = "float32",
    store_globals: bool = False,
    overwrite: bool = False,
    transforms: Sequence[Transform] = (),
    hooks: Sequence[Hook] = (),
    data_info: Mapping[str, Any] | None = None,
    extra_config: Mapping[str, Any] | None = None,
    aggregator: Any = None,
    client_trainer: Any = None,
    reporters: Sequence[Any] = (),
    initial_weights: Mapping[str, Any] | None = None,
) -> SimulationResult:
    """Simulate ``config`` on ``table`` and write every update to ``out``.

    The recording holds the full configuration, the data description, the
    library versions and, per round, the utility of the global model.
    ``transforms``, ``aggregator``, ``client_trainer`` and ``reporters`` are
    passed to :func:`~fedaudit.fl.simulate` (defenses); describe them in
    ``extra_config`` so the recording says how it was made.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise RecordingError(f"{out} already exists; choose another output path or pass --force to overwrite it.")
    if not out.parent.exists():
        raise RecordingError(f"The folder {out.parent} does not exist; create it or choose another output path.")
    info = {
        "feature_set": table.feature_set,
        "n_features": table.n_features,
        "n_utterances": len(table),
        "corpora": sorted(set(table.corpus.tolist())),
        "n_speakers": len(table.speakers),
        **dict(data_info or {}),
    }
    with Recorder(out, dtype=dtype, store_globals=store_globals, overwrite=overwrite) as recorder:
        return simulate(
            config, table, transforms=transforms, hooks=[recorder, *hooks], data_info=info,
            extra_config=extra_config, aggregator=aggregator, client_trainer=client_trainer, reporters=reporters,
            initial_weights=initial_weights,
        )
