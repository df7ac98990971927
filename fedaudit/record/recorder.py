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
from fedaudit.record._process import ProcessWriter
from fedaudit.record.format import DTYPES
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
    background
        Write from a child process, so training and writing use two cores: the
        simulator only copies each round's arrays into shared memory. The
        recording is then at most ``depth`` rounds behind the simulation (a
        round counts as completed once its commit has been flushed); if the
        simulating process dies, the child still commits every round it was
        sent. ``False`` writes in the calling thread.
    depth
        Rounds that may wait for the background writer.

    Examples
    --------
    >>> with Recorder("recorded_updates/demo.h5") as rec:  # doctest: +SKIP
    ...     simulate(config, table, hooks=[rec])
    """

    def __init__(
        self, path: str | os.PathLike[str], *, dtype: str = "float32", store_globals: bool = False,
        overwrite: bool = False, background: bool = True, depth: int = 4,
    ) -> None:
        self.path = Path(path)
        self.background = background
        self.depth = depth
        self._proc: ProcessWriter | None = None
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._round: list[ClientUpdate] = []
        self.dtype = dtype
        self.store_globals = store_globals
        self.overwrite = overwrite
        self._writer: UpdateWriter | None = None
        self._global: Mapping[str, np.ndarray] | None = None
        if self.path.exists() and not overwrite:
            raise RecordingError(f"{self.path} already exists; choose another output path or pass --force to overwrite it.")

    @property
    def bytes_written(self) -> int:
        source = self._proc if self._proc is not None else self._writer
        return source.bytes_written if source is not None else 0

    def on_run_start(self, info: RunInfo) -> None:
        config = {**dict(info.config), "data": dict(info.data)}
        self._shapes = {n: tuple(int(d) for d in s) for n, s in info.parameter_shapes.items()}
        kwargs = dict(
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
        if self.background:
            self._proc = ProcessWriter(self.path, kwargs, depth=self.depth)
        else:
            self._writer = UpdateStore.create(self.path, **kwargs)

    def on_round_start(self, server_round: int, client_ids: list[int], global_weights: Mapping[str, np.ndarray]) -> None:
        self._global = global_weights

    def on_client_update(self, update: ClientUpdate) -> None:
        self._started()
        self._round.append(update)

    def on_round_end(self, metrics: RoundMetrics) -> None:
        self._started()
        updates, self._round = self._round, []
        row = {
            "server_round": metrics.server_round, "val_uar": metrics.val_uar, "val_acc": metrics.val_acc,
            "test_uar": metrics.test_uar, "test_acc": metrics.test_acc, "train_loss": metrics.train_loss,
            "n_clients": metrics.n_clients,
        }
        glob = self._global if self.store_globals else None
        if self._proc is not None:
            self._proc.commit_round(updates, glob, row, self._shapes, DTYPES[self.dtype])
        else:
            for update in updates:
                self._writer.add(update)
            self._writer.commit_round(global_weights=glob, metrics=row)

    def on_run_end(self, result: Mapping[str, Any]) -> None:
        self._started()
        if self._proc is not None:
            self._proc.finish(result)
        else:
            self._writer.finish(result)

    def _started(self) -> None:
        if self._writer is None and self._proc is None:
            raise RecordingError("The recorder was told about an update before the run started.")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._proc is not None:
            self._proc.close()  # the child commits the rounds it was sent, so an interrupted run keeps them
        if self._writer is not None:
            self._writer.close()
