"""HDF5 store of client updates: writer and lazy reader.

The layout is specified in ``docs/format.md``. Files are written in HDF5
single-writer/multiple-reader (SWMR) mode: the on-disk file stays consistent
while it grows, so a run killed at any moment leaves a file that opens and
holds every completed round.
"""

from __future__ import annotations

import json
import os
import platform
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import h5py
import numpy as np

from fedaudit._version import __version__
from fedaudit.exceptions import FormatVersionError, IncompleteRecordingWarning, InvalidParameterError, RecordingError
from fedaudit.record.format import (
    DTYPES,
    ENCODING_TYPE,
    ENCODING_VERSION,
    EVALUATION_ONLY_ATTR,
    FORMAT_MAJOR,
    INDEX_COLUMNS,
    KINDS,
    METRIC_COLUMNS,
    STATUS_COMPLETE,
    STATUS_RUNNING,
)
from fedaudit.types import ClientUpdate

__all__ = ["UpdateStore", "UpdateWriter", "library_versions"]

_STR = h5py.string_dtype("utf-8")


def library_versions() -> dict[str, str]:
    """Versions of fedaudit and the libraries that shape a run's numbers."""
    import importlib.metadata as md

    out = {"fedaudit": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for name in ("torch", "numpy", "h5py", "scikit-learn", "opensmile", "opacus", "phe"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    out["hdf5"] = h5py.version.hdf5_version
    return out


def _plain_bytes(update: ClientUpdate) -> int:
    """Bytes of an update sent in the clear as float32."""
    return int(sum(np.asarray(a).size for a in update.arrays.values()) * 4)


#: Small columns grow by this many rows at a time.
_BLOCK = 1024


def _ensure_rows(ds: h5py.Dataset, n: int, *, block: int = 1) -> None:
    """Grow ``ds`` along axis 0 to hold at least ``n`` rows (chunks are allocated only when written)."""
    if ds.shape[0] < n:
        ds.resize(((n + block - 1) // block) * block, axis=0)


def _split_param(name: str) -> tuple[str, str]:
    layer, _, param = name.rpartition(".")
    if not layer:
        raise InvalidParameterError(f"Parameter name {name!r} must look like 'layer.param' (e.g. 'fc1.weight').")
    return layer, param


def _write_json(group: h5py.Group, name: str, obj: Any, *, resizable: bool = False) -> None:
    raw = np.frombuffer(json.dumps(obj, sort_keys=True, default=_json_default).encode(), dtype=np.uint8)
    if resizable:
        ds = group.create_dataset(name, data=raw, maxshape=(None,), chunks=(4096,))
    else:
        ds = group.create_dataset(name, data=raw)
    ds.attrs["encoding-type"] = "json"


def _read_json(ds: h5py.Dataset) -> Any:
    raw = ds[()]
    return json.loads(bytes(raw).decode()) if len(raw) else None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


@dataclass(frozen=True, kw_only=True)
class ClientRow:
    """One row of a recording's client table (public facts only)."""

    client_id: int
    corpus: str
    n_train: int
    n_val: int


class UpdateWriter:
    """Append-only writer of a recording. Use :meth:`UpdateStore.create`."""

    def __init__(
        self,
        path: Path,
        *,
        config: Mapping[str, Any],
        parameter_shapes: Mapping[str, Sequence[int]],
        clients: Sequence[ClientRow],
        ground_truth: Mapping[str, Sequence[str]] | None = None,
        initial_weights: Mapping[str, np.ndarray] | None = None,
        store_globals: bool = False,
        dtype: str = "float32",
        overwrite: bool = False,
    ) -> None:
        if dtype not in DTYPES:
            raise InvalidParameterError(f"Update dtype must be one of {sorted(DTYPES)}. Got {dtype!r}.")
        path = Path(path)
        if path.exists() and not overwrite:
            raise RecordingError(
                f"{path} already exists; choose another output path or pass --force to overwrite it."
            )
        if not path.parent.exists():
            raise RecordingError(f"The folder {path.parent} does not exist; create it or choose another output path.")
        if path.exists():
            path.unlink()
        self.path = path
        self.shapes = {n: tuple(int(d) for d in s) for n, s in parameter_shapes.items()}
        self.store_globals = store_globals
        self.bytes_written = 0
        self._pending: list[ClientUpdate] = []
        self._n_rows = 0
        self._n_rounds = 0
        self._closed = False
        f = h5py.File(path, "w", libver="latest")
        self._f = f
        try:
            self._create_layout(config, clients, ground_truth, initial_weights, dtype)
            # Opening an HDF5 object costs ~1 ms: keep every handle we append to.
            self._upd = {n: f["updates"][_split_param(n)[0]][_split_param(n)[1]] for n in self.shapes}
            self._glob = (
                {n: f["globals"][_split_param(n)[0]][_split_param(n)[1]] for n in self.shapes}
                if store_globals else {}
            )
            self._idx = {col: f["updates/index"][col] for col in INDEX_COLUMNS}
            self._met = {col: f["metrics"][col] for col in METRIC_COLUMNS}
            self._counters = (f["run/updates_committed"], f["run/rounds_completed"])
            f.swmr_mode = True
            f.flush()
        except BaseException:
            f.close()
            path.unlink(missing_ok=True)
            raise

    # -- layout ------------------------------------------------------------
    def _create_layout(
        self,
        config: Mapping[str, Any],
        clients: Sequence[ClientRow],
        ground_truth: Mapping[str, Sequence[str]] | None,
        initial_weights: Mapping[str, np.ndarray] | None,
        dtype: str,
    ) -> None:
        f = self._f
        f.attrs["encoding-type"] = ENCODING_TYPE
        f.attrs["encoding-version"] = ENCODING_VERSION
        run = f.create_group("run")
        _write_json(run, "config", dict(config))
        _write_json(run, "versions", library_versions())
        arch = [{"name": n, "layer": _split_param(n)[0], "param": _split_param(n)[1], "shape": list(s)}
                for n, s in self.shapes.items()]
        _write_json(run, "architecture", arch)
        _write_json(run, "result", {}, resizable=True)
        run.create_dataset("status", data=np.int8(STATUS_RUNNING))
        run.create_dataset("rounds_completed", data=np.int64(0))
        run.create_dataset("updates_committed", data=np.int64(0))

        cl = f.create_group("clients")
        cl.create_dataset("client_id", data=np.array([c.client_id for c in clients], dtype=np.int64))
        cl.create_dataset("corpus", data=np.array([c.corpus for c in clients], dtype=object), dtype=_STR)
        cl.create_dataset("n_train", data=np.array([c.n_train for c in clients], dtype=np.int64))
        cl.create_dataset("n_val", data=np.array([c.n_val for c in clients], dtype=np.int64))

        gt = f.create_group("ground_truth")
        gt.attrs[EVALUATION_ONLY_ATTR] = True
        gt.attrs["description"] = "Private attributes of the clients. Attacks may read them only to score."
        for key, values in (ground_truth or {}).items():
            gt.create_dataset(key, data=np.array(list(values), dtype=object), dtype=_STR)

        idx = f.create_group("updates/index")
        for col, dt in INDEX_COLUMNS.items():
            idx.create_dataset(col, shape=(0,), maxshape=(None,), dtype=dt, chunks=(4096,))
        upd = f["updates"]
        for name, shape in self.shapes.items():
            layer, param = _split_param(name)
            upd.require_group(layer).create_dataset(
                param, shape=(0, *shape), maxshape=(None, *shape), dtype=DTYPES[dtype], chunks=(1, *shape)
            )
        if self.store_globals:
            glob = f.create_group("globals")
            for name, shape in self.shapes.items():
                layer, param = _split_param(name)
                glob.require_group(layer).create_dataset(
                    param, shape=(0, *shape), maxshape=(None, *shape), dtype="<f4", chunks=(1, *shape)
                )
        met = f.create_group("metrics")
        for col in METRIC_COLUMNS:
            met.create_dataset(col, shape=(0,), maxshape=(None,), dtype="<f8", chunks=(1024,))
        if initial_weights is not None:
            init = f.create_group("initial_weights")
            for name, arr in initial_weights.items():
                layer, param = _split_param(name)
                init.require_group(layer).create_dataset(param, data=np.asarray(arr, dtype=np.float32))

    # -- appending ---------------------------------------------------------
    def add(self, update: ClientUpdate) -> None:
        """Queue one update of the current round (written by :meth:`commit_round`)."""
        missing = set(self.shapes) - set(update.arrays)
        if missing:
            raise RecordingError(f"Update of client {update.client_id} lacks parameters {sorted(missing)}.")
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
        if n_new:
            for name, ds in self._upd.items():
                _ensure_rows(ds, stop)
                zeros = (0,) * len(self.shapes[name])
                for i, arr in enumerate(arrays[name]):
                    ds.id.write_direct_chunk((start + i, *zeros), arr)
                    self.bytes_written += arr.nbytes
            cols = {
                "server_round": [u.server_round for u in pending],
                "client_id": [u.client_id for u in pending],
                "kind": [KINDS.index(u.kind) for u in pending],
                "num_samples": [u.num_samples for u in pending],
                "local_steps": [u.local_steps for u in pending],
                "lr": [u.lr for u in pending],
                "bytes_sent": [int(u.extras.get("bytes_sent", _plain_bytes(u))) for u in pending],
                "encrypt_seconds": [float(u.extras.get("encrypt_seconds", np.nan)) for u in pending],
                "decrypt_seconds": [float(u.extras.get("decrypt_seconds", np.nan)) for u in pending],
            }
            for col, values in cols.items():
                ds = self._idx[col]
                _ensure_rows(ds, stop, block=_BLOCK)
                ds[start:stop] = np.asarray(values, dtype=ds.dtype)
        if self.store_globals and global_weights is not None:
            for name, ds in self._glob.items():
                arr = np.ascontiguousarray(global_weights[name], dtype=ds.dtype)
                _ensure_rows(ds, self._n_rounds + 1)
                ds.id.write_direct_chunk((self._n_rounds, *(0,) * arr.ndim), arr)
                self.bytes_written += arr.nbytes
        if metrics is not None:
            for col, ds in self._met.items():
                _ensure_rows(ds, self._n_rounds + 1, block=_BLOCK)
                ds[self._n_rounds] = float(metrics.get(col, np.nan))
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

    def finish(self, result: Mapping[str, Any] | None = None) -> None:
        """Write the run result, mark the recording complete and close it."""
        if self._pending:
            raise RecordingError(f"{len(self._pending)} updates were queued but their round was never committed.")
        if result is not None:
            raw = np.frombuffer(json.dumps(dict(result), sort_keys=True, default=_json_default).encode(), np.uint8)
            ds = self._f["run/result"]
            ds.resize(len(raw), axis=0)
            ds[:] = raw
        for ds in [*self._upd.values(), *self._idx.values()]:
            ds.resize(self._n_rows, axis=0)
        for ds in [*self._glob.values(), *self._met.values()]:
            ds.resize(self._n_rounds, axis=0)
        self._f["run/status"][()] = STATUS_COMPLETE
        self._f.flush()
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._f.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class UpdateStore:
    """Lazy reader of a recording.

    Opening reads only the small tables; update arrays are read on demand,
    one layer, one client or one round at a time, in contiguous slices.

    Examples
    --------
    >>> store = UpdateStore.open("recorded_updates/demo_fedsgd.h5")  # doctest: +SKIP
    >>> w1 = store.layer("fc1")                     # (n_updates, 256, 988)  # doctest: +SKIP
    >>> rows = store.client_rows(3)                 # doctest: +SKIP
    """

    def __init__(self, path: Path, f: h5py.File) -> None:
        self.path = path
        self._f = f
        self.config: dict[str, Any] = _read_json(f["run/config"])
        self.versions: dict[str, str] = _read_json(f["run/versions"])
        self.architecture: list[dict[str, Any]] = _read_json(f["run/architecture"])
        self.status = int(f["run/status"][()])
        self.rounds_completed = int(f["run/rounds_completed"][()])
        self.n_updates = int(f["run/updates_committed"][()])
        idx = f["updates/index"]
        self.index: dict[str, np.ndarray] = {col: idx[col][: self.n_updates] for col in INDEX_COLUMNS}
        cl = f["clients"]
        self.clients: dict[str, np.ndarray] = {
            "client_id": cl["client_id"][()],
            "corpus": cl["corpus"].asstr()[()],
            "n_train": cl["n_train"][()],
            "n_val": cl["n_val"][()],
        }
        self._rows_by_client: dict[int, np.ndarray] | None = None

    # -- opening -----------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str], *, warn_incomplete: bool = True) -> UpdateStore:
        """Open a recording for reading; checks the format version first.

        An incomplete recording (a killed run) raises :class:`IncompleteRecordingWarning`
        unless ``warn_incomplete`` is false; ``complete`` tells either way.
        """
        path = Path(path)
        if not path.is_file():
            raise RecordingError(f"No recording at {path}; check the path (recordings end in .h5).")
        try:
            # No chunk cache: every read is of whole chunks, straight into the caller's array.
            f = h5py.File(path, "r", swmr=True, locking=False, rdcc_nbytes=0)
        except OSError as err:
            raise RecordingError(
                f"{path} is not a readable HDF5 recording ({err}); was it written by `fedaudit record`?"
            ) from None
        try:
            kind = f.attrs.get("encoding-type")
            version = f.attrs.get("encoding-version")
            if kind != ENCODING_TYPE:
                raise FormatVersionError(
                    f"{path} is an HDF5 file but not a fedaudit recording (encoding-type {kind!r}, "
                    f"expected {ENCODING_TYPE!r})."
                )
            major = int(str(version).split(".")[0])
            if major != FORMAT_MAJOR:
                raise FormatVersionError(
                    f"{path} uses update format {version}, but this fedaudit reads {FORMAT_MAJOR}.x. "
                    "Re-record the run, or open it with the fedaudit version that wrote it."
                )
            store = cls(path, f)
        except KeyError as err:
            f.close()
            raise RecordingError(f"{path} lacks part of the recording layout ({err}); the file is damaged.") from None
        except BaseException:
            f.close()
            raise
        if warn_incomplete and not store.complete:
            warnings.warn(
                f"{path} is incomplete: the run stopped after {store.rounds_completed} completed rounds; "
                "only those are served.",
                IncompleteRecordingWarning,
                stacklevel=2,
            )
        return store

    @classmethod
    def create(cls, path: str | os.PathLike[str], **kwargs: Any) -> UpdateWriter:
        """Create a new recording; see :class:`UpdateWriter` for the arguments."""
        return UpdateWriter(Path(path), **kwargs)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- facts -------------------------------------------------------------
    @property
    def complete(self) -> bool:
        return self.status == STATUS_COMPLETE

    @property
    def result(self) -> dict[str, Any]:
        return _read_json(self._f["run/result"]) or {}

    @property
    def parameter_names(self) -> list[str]:
        return [a["name"] for a in self.architecture]

    @property
    def layers(self) -> list[str]:
        """Layer names, input layer first."""
        return list(dict.fromkeys(a["layer"] for a in self.architecture))

    def shape(self, name: str) -> tuple[int, ...]:
        for a in self.architecture:
            if a["name"] == name:
                return tuple(a["shape"])
        raise InvalidParameterError(f"{self.path} has no parameter {name!r}; it has {self.parameter_names}.")

    @property
    def client_ids(self) -> np.ndarray:
        return self.clients["client_id"]

    @property
    def has_globals(self) -> bool:
        return "globals" in self._f

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def metrics(self) -> dict[str, np.ndarray]:
        """Utility of the global model per completed round."""
        met = self._f["metrics"]
        return {col: met[col][: self.rounds_completed] for col in METRIC_COLUMNS}

    def ground_truth(self) -> dict[str, np.ndarray]:
        """Evaluation-only private attributes (``gender``, ``speaker_id``) per client.

        An attack must never use these to fit or predict, only to score.
        """
        gt = self._f["ground_truth"]
        return {key: gt[key].asstr()[()] for key in gt}

    # -- arrays ------------------------------------------------------------
    def _dataset(self, name: str, group: str = "updates") -> h5py.Dataset:
        layer, param = _split_param(name)
        try:
            return self._f[group][layer][param]
        except KeyError:
            raise InvalidParameterError(
                f"{self.path} has no parameter {name!r} under /{group}; it has {self.parameter_names}."
            ) from None

    def param(
        self, name: str, rows: slice | Sequence[int] | np.ndarray | None = None, *, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Updates of one parameter (``"fc1.weight"``), all committed rows or the given ones.

        Rows are read in contiguous runs straight into the result (``out``, if
        given and large enough, is reused: passing the same buffer across calls
        avoids paging in fresh memory for every block).
        """
        ds = self._dataset(name)
        if rows is None:
            rows = np.arange(self.n_updates)
        elif isinstance(rows, slice):
            start, stop, step = rows.indices(self.n_updates)
            rows = np.arange(start, stop, step)
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_updates):
            raise InvalidParameterError(f"Update rows must lie in [0, {self.n_updates}); got {rows.min()}..{rows.max()}.")
        shape = (len(rows), *ds.shape[1:])
        if out is None or out.dtype != ds.dtype or out.shape[1:] != shape[1:] or out.shape[0] < len(rows):
            out = np.empty(shape, dtype=ds.dtype)
        else:
            out = out[: len(rows)]
        for start, stop, dst in _runs(rows):  # contiguous runs, never strided reads
            ds.read_direct(out, np.s_[start:stop], np.s_[dst : dst + stop - start])
        return out

    def layer(self, layer: str, rows: slice | Sequence[int] | np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``{"weight": ..., "bias": ...}`` updates of one layer."""
        names = [a["name"] for a in self.architecture if a["layer"] == layer]
        if not names:
            raise InvalidParameterError(f"{self.path} has no layer {layer!r}; its layers are {self.layers}.")
        return {_split_param(n)[1]: self.param(n, rows) for n in names}

    def client_rows(self, client_id: int) -> np.ndarray:
        """Row numbers of one client's updates, in round order."""
        if self._rows_by_client is None:
            order = np.argsort(self.index["client_id"], kind="stable")
            ids = self.index["client_id"][order]
            bounds = np.flatnonzero(np.diff(ids)) + 1
            starts, stops = np.r_[0, bounds], np.r_[bounds, len(ids)]
            self._rows_by_client = {
                int(ids[s]): np.sort(order[s:e]) for s, e in zip(starts, stops, strict=True) if e > s
            }
        return self._rows_by_client.get(int(client_id), np.empty(0, dtype=np.int64))

    def round_rows(self, server_round: int) -> np.ndarray:
        return np.flatnonzero(self.index["server_round"] == server_round)

    def client(self, client_id: int) -> dict[str, np.ndarray]:
        """Every update of one client: ``{"fc1.weight": (n, 256, 988), ...}``."""
        rows = self.client_rows(client_id)
        return {n: self.param(n, rows) for n in self.parameter_names}

    def round(self, server_round: int) -> dict[str, np.ndarray]:
        """Every update of one round (rows are contiguous: one slice read)."""
        rows = self.round_rows(server_round)
        return {n: self.param(n, rows) for n in self.parameter_names}

    def global_weights(self, server_round: int) -> dict[str, np.ndarray]:
        """Global weights at the start of a round (FedAvg recordings with globals)."""
        if not self.has_globals:
            raise RecordingError(f"{self.path} was recorded without global weights; re-record with --store-globals.")
        if not 0 <= server_round < self.rounds_completed:
            raise InvalidParameterError(
                f"Round {server_round} is outside the recorded rounds [0, {self.rounds_completed})."
            )
        return {n: self._dataset(n, "globals")[server_round] for n in self.parameter_names}

    def initial_weights(self) -> dict[str, np.ndarray]:
        """The global model before round 0 (what the server sent first)."""
        if "initial_weights" not in self._f:
            raise RecordingError(f"{self.path} holds no initial weights.")
        return {n: self._dataset(n, "initial_weights")[()] for n in self.parameter_names}

    def iter_rows(self, name: str, *, batch: int = 64) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_row, block)`` of one parameter in contiguous blocks."""
        for start in range(0, self.n_updates, batch):
            yield start, self.param(name, slice(start, min(start + batch, self.n_updates)))


def _runs(rows: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """Split row numbers into contiguous ascending runs: (start, stop, position in output)."""
    if rows.size == 0:
        return
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.r_[0, breaks]
    stops = np.r_[breaks, rows.size]
    for s, e in zip(starts, stops, strict=True):
        yield int(rows[s]), int(rows[e - 1]) + 1, int(s)
