"""Append-only writer of a recording (the layout is specified in ``docs/format.md``).

Files are written in HDF5 single-writer/multiple-reader (SWMR) mode: the
on-disk file stays consistent while it grows, so a run killed at any moment
leaves a file that opens and holds every completed round. Every chunk, table
and round carries a checksum written with it, so a reader can tell damage from
data. A writer holds an exclusive lock on its output for its whole life, so two
runs can never write (or replace) the same file at once.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import h5py
import numpy as np
import xxhash

from fedaudit.exceptions import InvalidParameterError, OutputExistsError, RecordingError, UndeclaredMetricWarning
from fedaudit.hooks import ClientInfo
from fedaudit.record import format as fmt
from fedaudit.record._h5 import (
    CHECKSUM_ATTR,
    STR,
    attrs_digest,
    canonical_bytes,
    digest,
    json_bytes,
    library_versions,
    seal,
    split_param,
    write_json,
)
from fedaudit.types import ClientUpdate, PrivacySpent

__all__ = ["UpdateWriter", "check_output_path"]

#: Small columns grow by this many rows at a time.
_BLOCK = 1024


def _ensure_rows(ds: h5py.Dataset, n: int, *, block: int = 1) -> None:
    """Grow ``ds`` along axis 0 to hold at least ``n`` rows (chunks are allocated only when written)."""
    if ds.shape[0] < n:
        ds.resize(((n + block - 1) // block) * block, axis=0)


class OutputLock:
    """Exclusive lock on an output path (``.<name>.lock`` beside it), held while a run writes it.

    ``flock`` locks vanish with their process, so a killed run never leaves a
    stale lock; the lock file is removed on release.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = path.with_name(f".{path.name}.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        for _ in range(5):
            try:
                fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise RecordingError(f"Cannot create the lock file {self.file} ({err.strerror}).") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise RecordingError(
                    f"Another run is writing {self.path} right now; wait for it to end or choose another output."
                ) from None
            try:  # the previous holder may have removed the file between our open and our lock
                same = os.stat(self.file).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return
            os.close(fd)
        raise RecordingError(f"Could not lock {self.path}: its lock file {self.file} keeps changing.")

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.unlink(self.file)
            except FileNotFoundError:
                pass
            os.close(self._fd)
            self._fd = None


def check_output_path(path: str | Path, *, overwrite: bool) -> Path:
    """Refuse an existing file (unless ``overwrite``) and a missing folder, before any work starts."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists.")
    if not path.parent.is_dir():
        raise RecordingError(f"The folder {path.parent} does not exist; create it or choose another output path.")
    return path


class UpdateWriter:
    """Append-only writer of a recording.

    Parameters
    ----------
    path
        Output ``.h5`` file.
    config
        The run's configuration (JSON-ready), written to ``/run/config``.
    parameter_shapes
        Parameter name (``"fc1.weight"``) to shape, in model order.
    clients
        Every client of the run; their ``attributes`` go to ``/ground_truth``
        (evaluation only), the rest to ``/clients``.
    initial_weights
        The global model before round 0, when known.
    store_globals
        Also store the global weights at the start of each round.
    dtype
        ``"float32"`` or ``"float16"`` storage of update arrays.
    overwrite
        Replace an existing file.
    metric_names
        Per-round metrics :meth:`commit_round` will be given (``/metrics/<name>``).

    Examples
    --------
    >>> with UpdateWriter("run.h5", config={}, parameter_shapes={"fc.weight": (2, 3)},
    ...                   clients=[ClientInfo(client_id=0)]) as w:  # doctest: +SKIP
    ...     w.add(update)
    ...     w.commit_round()
    ...     w.finish()
    """

    def __init__(
        self,
        path: str | Path,
        *,
        config: Mapping[str, Any],
        parameter_shapes: Mapping[str, Sequence[int]],
        clients: Sequence[ClientInfo],
        initial_weights: Mapping[str, np.ndarray] | None = None,
        store_globals: bool = False,
        dtype: str = "float32",
        overwrite: bool = False,
        metric_names: Sequence[str] = (),
    ) -> None:
        if dtype not in fmt.DTYPES:
            raise InvalidParameterError(f"Update dtype must be one of {sorted(fmt.DTYPES)}. Got {dtype!r}.")
        if not parameter_shapes:
            raise InvalidParameterError("A recording needs at least one parameter shape; got none.")
        path = check_output_path(path, overwrite=overwrite)
        self._lock = OutputLock(path)
        self._lock.acquire()
        try:
            path = check_output_path(path, overwrite=overwrite)  # again, now that no other run can write it
            if path.exists():
                path.unlink()
        except BaseException:
            self._lock.release()
            raise
        self.path = path
        self.shapes = {n: tuple(int(d) for d in s) for n, s in parameter_shapes.items()}
        for name in self.shapes:
            split_param(name)
        self.store_globals = store_globals
        self.metric_names = ["server_round", *[m for m in dict.fromkeys(metric_names) if m != "server_round"]]
        self._undeclared: set[str] = set()
        self.client_ids = [int(c.client_id) for c in clients]
        self.bytes_written = 0
        self._pending: list[ClientUpdate] = []
        self._n_rows = 0
        self._n_rounds = 0
        self._closed = False
        try:
            f = h5py.File(path, "w", libver="latest")
        except BaseException:
            self._lock.release()
            raise
        self._f = f
        try:
            self._create_layout(config, clients, initial_weights, dtype)
            # Opening an HDF5 object costs ~1 ms: keep every handle we append to.
            self._upd = {n: f[fmt.UPDATES][split_param(n)[0]][split_param(n)[1]] for n in self.shapes}
            self._glob = (
                {n: f[fmt.GLOBALS][split_param(n)[0]][split_param(n)[1]] for n in self.shapes}
                if store_globals else {}
            )
            self._idx = {col: f[fmt.INDEX][col] for col in fmt.INDEX_COLUMNS}
            self._idx_sum = f[fmt.INDEX_CHECKSUM]
            self._met = {col: f[fmt.METRICS][col] for col in self.metric_names}
            self._round_end = f[fmt.ROUND_END]
            self._round_sum = f[fmt.ROUND_CHECKSUM]
            self._glob_sum = f[fmt.ROUND_GLOBALS_CHECKSUM] if store_globals else None
            self._counters = (f["run/updates_committed"], f["run/rounds_completed"])
            f.swmr_mode = True
            f.flush()
        except BaseException:
            f.close()
            path.unlink(missing_ok=True)
            self._lock.release()
            raise

    # -- layout ------------------------------------------------------------
    def _create_layout(
        self,
        config: Mapping[str, Any],
        clients: Sequence[ClientInfo],
        initial_weights: Mapping[str, np.ndarray] | None,
        dtype: str,
    ) -> None:
        f = self._f
        f.attrs["encoding-type"] = fmt.ENCODING_TYPE
        f.attrs["encoding-version"] = fmt.ENCODING_VERSION
        run = f.create_group(fmt.RUN)
        write_json(run, "config", dict(config))
        write_json(run, "versions", library_versions())
        arch = [{"name": n, "layer": split_param(n)[0], "param": split_param(n)[1], "shape": list(s)}
                for n, s in self.shapes.items()]
        write_json(run, "architecture", arch)
        write_json(run, "result", {}, resizable=True)
        run.create_dataset("status", data=np.int8(fmt.STATUS_RUNNING))
        run.create_dataset("rounds_completed", data=np.int64(0))
        run.create_dataset("updates_committed", data=np.int64(0))

        cl = f.create_group(fmt.CLIENTS)
        cl.create_dataset("client_id", data=np.array([c.client_id for c in clients], dtype=np.int64))
        cl.create_dataset("corpus", data=np.array([c.corpus for c in clients], dtype=object), dtype=STR)
        cl.create_dataset("n_train", data=np.array([c.n_train for c in clients], dtype=np.int64))
        cl.create_dataset("n_val", data=np.array([c.n_val for c in clients], dtype=np.int64))
        for ds in cl.values():
            seal(ds)

        gt = f.create_group(fmt.GROUND_TRUTH)
        gt.attrs[fmt.EVALUATION_ONLY_ATTR] = True
        gt.attrs["description"] = "Private attributes of the clients. Attacks may read them only to score."
        keys = list(dict.fromkeys(k for c in clients for k in c.attributes))
        for key in keys:
            values = [str(c.attributes.get(key, "")) for c in clients]
            seal(gt.create_dataset(key, data=np.array(values, dtype=object), dtype=STR))
        gt.attrs["columns"] = json.dumps(sorted(keys))
        gt.attrs[CHECKSUM_ATTR] = np.uint64(attrs_digest(gt.attrs))

        idx = f.create_group(fmt.INDEX)
        for col, dt in fmt.INDEX_COLUMNS.items():
            idx.create_dataset(col, shape=(0,), maxshape=(None,), dtype=dt, chunks=(4096,))
        n_params = len(self.shapes)
        checksum = idx.create_dataset("checksum", shape=(0, n_params), maxshape=(None, n_params), dtype="<u8",
                                      chunks=(1024, n_params))
        checksum.attrs["algorithm"] = fmt.CHECKSUM_ALGORITHM
        rounds = f.create_group(fmt.ROUNDS)
        rounds.create_dataset("end", shape=(0,), maxshape=(None,), dtype="<i8", chunks=(1024,))
        rounds.create_dataset("checksum", shape=(0,), maxshape=(None,), dtype="<u8", chunks=(1024,))
        if self.store_globals:
            rounds.create_dataset("globals_checksum", shape=(0, n_params), maxshape=(None, n_params), dtype="<u8",
                                  chunks=(1024, n_params))
        upd = f[fmt.UPDATES]
        for name, shape in self.shapes.items():
            layer, param = split_param(name)
            upd.require_group(layer).create_dataset(
                param, shape=(0, *shape), maxshape=(None, *shape), dtype=fmt.DTYPES[dtype], chunks=(1, *shape)
            )
        if self.store_globals:
            glob = f.create_group(fmt.GLOBALS)
            for name, shape in self.shapes.items():
                layer, param = split_param(name)
                glob.require_group(layer).create_dataset(
                    param, shape=(0, *shape), maxshape=(None, *shape), dtype="<f4", chunks=(1, *shape)
                )
        met = f.create_group(fmt.METRICS)
        for col in self.metric_names:
            met.create_dataset(col, shape=(0,), maxshape=(None,), dtype="<f8", chunks=(1024,))
        if initial_weights is not None:
            init = f.create_group(fmt.INITIAL_WEIGHTS)
            for name in self.shapes:
                layer, param = split_param(name)
                arr = np.asarray(initial_weights[name], dtype=np.float32)
                seal(init.require_group(layer).create_dataset(param, data=arr))

    # -- appending ---------------------------------------------------------
    def add(self, update: ClientUpdate) -> None:
        """Queue one update of the current round (written by :meth:`commit_round`)."""
        missing = set(self.shapes) - set(update.arrays)
        if missing:
            raise RecordingError(f"Update of client {update.client_id} lacks parameters {sorted(missing)}.")
        if update.kind not in fmt.KINDS:
            raise RecordingError(f"Update of client {update.client_id} has kind {update.kind!r}; expected one of {list(fmt.KINDS)}.")
        self._pending.append(update)

    def commit_round(
        self, *, global_weights: Mapping[str, np.ndarray] | None = None, metrics: Mapping[str, float] | None = None
    ) -> None:
        """Write the queued updates of one round, then mark the round complete and flush.

        Each update is one uncompressed chunk, written straight to the file
        (``write_direct_chunk``: no chunk cache copy). Small columns grow in
        blocks; readers serve only the rows the counters declare committed.
        """
        pending, self._pending = self._pending, []
        arrays = {name: [self._as_chunk(u, name) for u in pending] for name in self.shapes}
        n_new = len(pending)
        start, stop = self._n_rows, self._n_rows + n_new
        sums = np.zeros((n_new, len(self.shapes)), dtype="<u8")
        index_rows = {col: np.zeros(0, dtype=dt) for col, dt in fmt.INDEX_COLUMNS.items()}
        if n_new:
            for j, (name, ds) in enumerate(self._upd.items()):
                _ensure_rows(ds, stop)
                zeros = (0,) * len(self.shapes[name])
                for i, arr in enumerate(arrays[name]):
                    ds.id.write_direct_chunk((start + i, *zeros), arr)
                    sums[i, j] = digest(arr)
                    self.bytes_written += arr.nbytes
            nan = math.nan
            cols = {
                "server_round": [u.server_round for u in pending],
                "client_id": [u.client_id for u in pending],
                "kind": [fmt.KINDS.index(u.kind) for u in pending],
                "num_samples": [u.num_samples for u in pending],
                "local_steps": [u.local_steps for u in pending],
                "lr": [u.lr for u in pending],
                "bytes_sent": [u.wire_bytes for u in pending],
                "encrypt_seconds": [nan if u.encrypt_seconds is None else u.encrypt_seconds for u in pending],
                "decrypt_seconds": [nan if u.decrypt_seconds is None else u.decrypt_seconds for u in pending],
            }
            for col, values in cols.items():
                ds = self._idx[col]
                _ensure_rows(ds, stop, block=_BLOCK)
                index_rows[col] = np.asarray(values, dtype=ds.dtype)
                ds[start:stop] = index_rows[col]
            _ensure_rows(self._idx_sum, stop, block=_BLOCK)
            self._idx_sum[start:stop] = sums
        glob_sums = np.zeros(len(self.shapes), dtype="<u8")
        if self.store_globals and global_weights is not None:
            for j, (name, ds) in enumerate(self._glob.items()):
                arr = np.ascontiguousarray(global_weights[name], dtype=ds.dtype)
                _ensure_rows(ds, self._n_rounds + 1)
                ds.id.write_direct_chunk((self._n_rounds, *(0,) * arr.ndim), arr)
                glob_sums[j] = digest(arr)
                self.bytes_written += arr.nbytes
        row = {"server_round": float(pending[0].server_round) if pending else float(self._n_rounds),
               **declared_metrics(metrics or {}, self.metric_names, self._undeclared)}
        # the loop's own round number wins when it gives one
        met_row = {}
        for col, ds in self._met.items():
            _ensure_rows(ds, self._n_rounds + 1, block=_BLOCK)
            met_row[col] = float(row.get(col, np.nan))
            ds[self._n_rounds] = met_row[col]
        r = self._n_rounds
        for ds in (self._round_end, self._round_sum, *([self._glob_sum] if self._glob_sum is not None else [])):
            _ensure_rows(ds, r + 1, block=_BLOCK)
        self._round_end[r] = stop
        if self._glob_sum is not None:
            self._glob_sum[r] = glob_sums
        self._round_sum[r] = round_checksum(index_rows, sums, stop, met_row,
                                            glob_sums if self._glob_sum is not None else None)
        # Data first, then the counters that make it visible to readers.
        self._f.flush()
        self._n_rows = stop
        self._n_rounds += 1
        self._counters[0][()] = self._n_rows
        self._counters[1][()] = self._n_rounds
        self._f.flush()

    def _as_chunk(self, update: ClientUpdate, name: str) -> np.ndarray:
        arr = np.ascontiguousarray(update.arrays[name], dtype=self._upd[name].dtype)
        if arr.shape != self.shapes[name]:
            raise RecordingError(
                f"Update of client {update.client_id} has {name} of shape {arr.shape}; "
                f"the recording expects {self.shapes[name]}."
            )
        return arr

    def finish(self, result: Mapping[str, Any] | None = None, privacy: Sequence[PrivacySpent] = ()) -> None:
        """Write the run result and the privacy spent, mark the recording complete and close it.

        The growing datasets are trimmed in SWMR mode; the file is then reopened
        without SWMR to add ``/privacy`` (SWMR cannot create objects), and the
        status is set last, so a crash in between leaves an incomplete file.
        """
        if self._pending:
            raise RecordingError(f"{len(self._pending)} updates were queued but their round was never committed.")
        for ds in [*self._upd.values(), *self._idx.values(), self._idx_sum]:
            ds.resize(self._n_rows, axis=0)
        for ds in [*self._glob.values(), *self._met.values(), self._round_end, self._round_sum,
                   *([self._glob_sum] if self._glob_sum is not None else [])]:
            ds.resize(self._n_rounds, axis=0)
        self._f.flush()
        self._f.close()
        try:
            with h5py.File(self.path, "a", libver="latest") as f:
                if result is not None:
                    raw = json_bytes(dict(result))
                    ds = f["run/result"]
                    ds.resize(len(raw), axis=0)
                    ds[:] = raw
                    ds.attrs[CHECKSUM_ATTR] = np.uint64(digest(raw))
                if privacy:
                    self._write_privacy(f, privacy)
                f.flush()
                f["run/status"][()] = fmt.STATUS_COMPLETE
        finally:
            self.close()

    def _write_privacy(self, f: h5py.File, privacy: Sequence[PrivacySpent]) -> None:
        group = f.create_group(fmt.PRIVACY)
        position = {cid: i for i, cid in enumerate(self.client_ids)}
        for spent in privacy:
            g = group.create_group(spent.mechanism)
            eps = np.full(len(self.client_ids), np.nan)
            joined = np.zeros(len(self.client_ids), dtype=np.int64)
            for cid, value in spent.epsilon_per_client.items():
                eps[position[int(cid)]] = float(value)
            for cid, count in spent.rounds_joined.items():
                joined[position[int(cid)]] = int(count)
            seal(g.create_dataset(fmt.PRIVACY_EPSILON, data=eps))
            seal(g.create_dataset(fmt.PRIVACY_ROUNDS_JOINED, data=joined))
            g.attrs["level"] = spent.level
            g.attrs["delta"] = float(spent.delta)
            g.attrs["accountant"] = spent.accountant
            g.attrs["noise_multiplier"] = math.nan if spent.noise_multiplier is None else float(spent.noise_multiplier)
            g.attrs["epsilon_aggregate"] = (
                math.nan if spent.epsilon_aggregate is None else float(spent.epsilon_aggregate)
            )
            g.attrs[CHECKSUM_ATTR] = np.uint64(attrs_digest(g.attrs))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._f.close()
            finally:
                self._lock.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def round_checksum(
    index_rows: Mapping[str, np.ndarray], chunk_sums: np.ndarray, end: int, metrics: Mapping[str, float],
    globals_sums: np.ndarray | None,
) -> int:
    """Checksum of one round's entries in the small tables (the reader recomputes it the same way).

    Covers, in this order: the round's rows of every index column (in the order
    of :data:`~fedaudit.record.format.INDEX_COLUMNS`), their chunk checksums,
    the round's row end, its metrics row (columns sorted by name, float64) and
    the checksums of its global weights when stored.
    """
    h = xxhash.xxh3_64()
    for col, dt in fmt.INDEX_COLUMNS.items():
        h.update(canonical_bytes(np.asarray(index_rows[col], dtype=dt)))
    h.update(canonical_bytes(np.asarray(chunk_sums, dtype="<u8")))
    h.update(canonical_bytes(np.asarray([end], dtype="<i8")))
    h.update(canonical_bytes(np.asarray([metrics[k] for k in sorted(metrics)], dtype="<f8")))
    if globals_sums is not None:
        h.update(canonical_bytes(np.asarray(globals_sums, dtype="<u8")))
    return h.intdigest()


def declared_metrics(metrics: Mapping[str, float], declared: Sequence[str], warned: set[str]) -> dict[str, float]:
    """The metrics of a round that the run declared; warns once per run for each other name (left out)."""
    known = set(declared) | {"n_clients"}
    extra = sorted(set(metrics) - known - warned)
    if extra:
        warned.update(extra)
        warnings.warn(
            f"The run reports metrics {extra} that it did not declare at its start (metric_names); the recording "
            "leaves them out. Declare them in RunStart.metric_names (or the writer's metric_names) to keep them.",
            UndeclaredMetricWarning, stacklevel=3,
        )
    return {k: v for k, v in metrics.items() if k in known}
