"""The recorder: a simulator hook that plays the honest-but-curious server."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np

from fedaudit.exceptions import RecordingError
from fedaudit.fl.hooks import BaseHook, RoundMetrics, RunInfo
from fedaudit.record.store import ClientRow, UpdateStore, UpdateWriter
from fedaudit.types import ClientUpdate

__all__ = ["Recorder"]


class _WriterThread:
    """Runs writes in order on one background thread, at most ``depth`` rounds behind."""

    def __init__(self, depth: int) -> None:
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fedaudit-recorder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self._error is None:
                try:
                    job()
                except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
                    self._error = err

    def submit(self, job: Callable[[], None]) -> None:
        self._raise()
        self._queue.put(job)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err


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
        Write on a background thread so training goes on meanwhile. The
        recording is then at most ``depth`` rounds behind the simulation: a
        round counts as completed once its commit has been flushed.
    depth
        Rounds that may wait for the background writer.

    Examples
    --------
    >>> with Recorder("recorded_updates/demo.h5") as rec:  # doctest: +SKIP
    ...     simulate(config, table, hooks=[rec])
    """

    def __init__(
        self, path: str | os.PathLike[str], *, dtype: str = "float32", store_globals: bool = False,
        overwrite: bool = False, background: bool = True, depth: int = 2,
    ) -> None:
        self.path = Path(path)
        self.background = background
        self.depth = depth
        self._thread: _WriterThread | None = None
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
        if self.background:
            self._thread = _WriterThread(self.depth)

    def on_round_start(self, server_round: int, client_ids: list[int], global_weights: Mapping[str, np.ndarray]) -> None:
        self._global = global_weights

    def on_client_update(self, update: ClientUpdate) -> None:
        self._require()
        self._round.append(update)

    def on_round_end(self, metrics: RoundMetrics) -> None:
        writer = self._require()
        updates, self._round = self._round, []
        global_weights = self._global
        row = {
            "server_round": metrics.server_round, "val_uar": metrics.val_uar, "val_acc": metrics.val_acc,
            "test_uar": metrics.test_uar, "test_acc": metrics.test_acc, "train_loss": metrics.train_loss,
            "n_clients": metrics.n_clients,
        }

        def commit() -> None:
            for update in updates:
                writer.add(update)
            writer.commit_round(global_weights=global_weights, metrics=row)

        self._run(commit)

    def on_run_end(self, result: Mapping[str, Any]) -> None:
        writer = self._require()
        self._run(lambda: writer.finish(result))
        if self._thread is not None:
            self._thread.close()

    def _run(self, job: Callable[[], None]) -> None:
        if self._thread is not None:
            self._thread.submit(job)
        else:
            job()

    def _require(self) -> UpdateWriter:
        if self._writer is None:
            raise RecordingError("The recorder was told about an update before the run started.")
        return self._writer

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if self._thread is not None:
                self._thread.close()  # finish pending rounds, so an interrupted run keeps them
        finally:
            if self._writer is not None:
                self._writer.close()
