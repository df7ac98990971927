"""The recorder: a hook that plays the honest-but-curious server and writes what it sees."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

import numpy as np

from fedaudit.exceptions import RecordingError
from fedaudit.hooks import BaseHook, RoundEnd, RoundStart, RunEnd, RunStart
from fedaudit.record._process import ProcessWriter
from fedaudit.record.format import DTYPES
from fedaudit.record.writer import UpdateWriter, check_output_path
from fedaudit.types import ClientUpdate

__all__ = ["Recorder"]


class Recorder(BaseHook):
    """Hook that appends every update the server receives to an HDF5 recording.

    Any federated loop can feed it the events of :mod:`fedaudit.hooks`: the
    run starts, client updates arrive, each round ends, the run ends. It sees
    updates after the defenses ran, as the server would. Each round is written
    and flushed when it ends, so a killed run leaves every completed round
    readable.

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
        loop only copies each round's arrays into shared memory. The recording
        is then at most ``depth`` rounds behind the loop (a round counts as
        completed once its commit has been flushed); if the loop's process
        dies, the child still commits every round it was sent. ``False``
        writes in the calling thread.
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
        self.path = check_output_path(Path(path), overwrite=overwrite)
        self.background = background
        self.depth = depth
        self.dtype = dtype
        self.store_globals = store_globals
        self.overwrite = overwrite
        self._proc: ProcessWriter | None = None
        self._writer: UpdateWriter | None = None
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._round: list[ClientUpdate] = []
        self._global: Mapping[str, np.ndarray] | None = None

    @property
    def bytes_written(self) -> int:
        source = self._proc if self._proc is not None else self._writer
        return source.bytes_written if source is not None else 0

    def on_run_start(self, event: RunStart) -> None:
        if self._writer is not None or self._proc is not None:
            raise RecordingError(f"The recorder of {self.path} was told twice that the run started.")
        config = {**dict(event.config), "data": dict(event.data)}
        self._shapes = {n: tuple(int(d) for d in s) for n, s in event.parameter_shapes.items()}
        kwargs = dict(
            config=config,
            parameter_shapes=self._shapes,
            clients=list(event.clients),
            initial_weights=event.initial_weights,
            store_globals=self.store_globals,
            dtype=self.dtype,
            overwrite=self.overwrite,
            metric_names=list(event.metric_names),
        )
        if self.background:
            self._proc = ProcessWriter(self.path, kwargs, depth=self.depth)
        else:
            self._writer = UpdateWriter(self.path, **kwargs)

    def on_round_start(self, event: RoundStart) -> None:
        self._global = event.global_weights

    def on_client_update(self, update: ClientUpdate) -> None:
        self._started()
        self._round.append(update)

    def on_round_end(self, event: RoundEnd) -> None:
        self._started()
        updates, self._round = self._round, []
        metrics = {**dict(event.metrics), "server_round": float(event.server_round), "n_clients": float(event.n_clients)}
        glob = self._global if self.store_globals else None
        if self.store_globals and glob is None:
            raise RecordingError(
                f"The recorder of {self.path} stores global weights, but round {event.server_round} started "
                "without them (RoundStart.global_weights)."
            )
        self._global = None
        if self._proc is not None:
            self._proc.commit_round(updates, glob, metrics, self._shapes, DTYPES[self.dtype])
        else:
            assert self._writer is not None
            for update in updates:
                self._writer.add(update)
            self._writer.commit_round(global_weights=glob, metrics=metrics)

    def on_run_end(self, event: RunEnd) -> None:
        self._started()
        if self._round:
            raise RecordingError(
                f"{len(self._round)} client updates reached the recorder of {self.path} after the last round ended."
            )
        if self._proc is not None:
            self._proc.finish(event.result, event.privacy)
        else:
            assert self._writer is not None
            self._writer.finish(event.result, event.privacy)

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
