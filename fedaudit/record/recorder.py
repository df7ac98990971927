"""The recorder: a simulator hook that plays the honest-but-curious server."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np

from fedaudit.exceptions import RecordingError
from fedaudit.fl.hooks import BaseHook, RoundMetrics, RunInfo
from fedaudit.record.store import ClientRow, UpdateStore, UpdateWriter
from fedaudit.types import ClientUpdate

__all__ = ["Recorder"]


class Recorder(BaseHook):
    """Hook that appends every update the server receives to an HDF5 recording.

    It sees updates after the defenses ran, as the server would. Each round is
    written and flushed when it ends, so a killed run leaves every completed
    round readable.

    Parameters
    ----------
    path
        Output ``.h5`` file; must not exist unless ``overwrite`` is set.
    dtype
        ``"float32"`` (default) or ``"float16"`` storage of update arrays.
    store_globals
        Also store the global weights at the start of each round.
    overwrite
        Replace an existing file.

    Examples
    --------
    >>> with Recorder("recorded_updates/demo.h5") as rec:  # doctest: +SKIP
    ...     simulate(config, table, hooks=[rec])
    """

    def __init__(
        self, path: str | os.PathLike[str], *, dtype: str = "float32", store_globals: bool = False,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        self.dtype = dtype
        self.store_globals = store_globals
        self.overwrite = overwrite
        self._writer: UpdateWriter | None = None
        self._global: Mapping[str, np.ndarray] | None = None
        if self.path.exists() and not overwrite:
            raise RecordingError(f"{self.path} already exists; choose another output path or pass --force to overwrite it.")

    @property
    def bytes_written(self) -> int:
        return self._writer.bytes_written if self._writer is not None else 0

    def on_run_start(self, info: RunInfo) -> None:
        config = {**dict(info.config), "data": dict(info.data)}
        self._writer = UpdateStore.create(
            self.path,
            config=config,
            parameter_shapes=info.parameter_shapes,
            clients=[ClientRow(client_id=c.client_id, corpus=c.corpus, n_train=c.n_train, n_val=c.n_val) for c in info.clients],
            ground_truth={
                "gender": [c.gender for c in info.clients],
                "speaker_id": [c.speaker_id for c in info.clients],
            },
            initial_weights=info.initial_weights,
            store_globals=self.store_globals,
            dtype=self.dtype,
            overwrite=self.overwrite,
        )

    def on_round_start(self, server_round: int, client_ids: list[int], global_weights: Mapping[str, np.ndarray]) -> None:
        self._global = global_weights

    def on_client_update(self, update: ClientUpdate) -> None:
        self._require().add(update)

    def on_round_end(self, metrics: RoundMetrics) -> None:
        self._require().commit_round(
            global_weights=self._global,
            metrics={
                "server_round": metrics.server_round, "val_uar": metrics.val_uar, "val_acc": metrics.val_acc,
                "test_uar": metrics.test_uar, "test_acc": metrics.test_acc, "train_loss": metrics.train_loss,
                "n_clients": metrics.n_clients,
            },
        )

    def on_run_end(self, result: Mapping[str, Any]) -> None:
        self._require().finish(result)

    def _require(self) -> UpdateWriter:
        if self._writer is None:
            raise RecordingError("The recorder was told about an update before the run started.")
        return self._writer

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._writer is not None:
            self._writer.close()
