"""Lazy reader of a recording (the layout is specified in ``docs/format.md``).

Every format version listed in :data:`~fedaudit.record.format.READABLE_VERSIONS`
is read; what an older minor version lacks is converted on read (format 1.0.0
kept the privacy spent in the run result, 1.1.0 keeps it in ``/privacy``).

Opening checks the layout (every group, dtype, shape and counter) and, from
format 1.1.0 on, every checksum: damaged update rows are left out of what the
store serves (with a counted :class:`~fedaudit.exceptions.DamagedRowsWarning`)
or refused. Whatever is wrong with a file ends in one
:class:`~fedaudit.exceptions.RecordingError` sentence naming the file and the
part; no plain h5py, numpy or JSON error escapes.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import json
import math
import mmap
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import h5py
import numpy as np

from fedaudit.exceptions import (
    DamagedRecordingError,
    DamagedRowsWarning,
    FedAuditError,
    FormatVersionError,
    IncompleteRecordingWarning,
    InvalidParameterError,
    RecordingError,
)
from fedaudit.record import format as fmt
from fedaudit.record._h5 import CHECKSUM_ATTR, array_digest, attrs_digest, digest, read_json, split_param
from fedaudit.record.writer import round_checksum
from fedaudit.types import PrivacySpent

__all__ = ["UpdateStore", "Verification", "verification", "verify_recording"]

#: Whether :meth:`UpdateStore.open` checks checksums when its caller does not say (``verify=None``).
_VERIFY: contextvars.ContextVar[bool] = contextvars.ContextVar("fedaudit_verify", default=True)


@contextlib.contextmanager
def verification(enabled: bool) -> Iterator[None]:
    """Within the block, recordings opened without an explicit ``verify`` check checksums or not.

    This is how a command's ``--no-verify`` reaches every recording it opens (target, shadow
    runs) without threading a flag through each call.

    Examples
    --------
    >>> with verification(False):  # doctest: +SKIP
    ...     report = attack_target("run.h5", shadows=["shadow/"])
    """
    token = _VERIFY.set(bool(enabled))
    try:
        yield
    finally:
        _VERIFY.reset(token)

#: What the reader does with update rows that fail their checksums.
ON_DAMAGE: tuple[str, ...] = ("exclude", "raise")

#: Metadata read attempts of an SWMR open (HDF5's default, 100 with growing sleeps, can take
#: 20+ minutes on a damaged file; a live writer's half-written metadata needs only a few).
SWMR_READ_ATTEMPTS = 4

#: Errors of h5py, numpy and json that a damaged file can cause, turned into one sentence.
_LOW_LEVEL_ERRORS = (
    OSError, KeyError, ValueError, TypeError, IndexError, AttributeError, RuntimeError, OverflowError,
    MemoryError, UnicodeDecodeError, json.JSONDecodeError, AssertionError,
)
_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."


@contextlib.contextmanager
def _part(path: Path, part: str) -> Iterator[None]:
    """Turn any low-level error while reading ``part`` into one RecordingError sentence."""
    try:
        yield
    except FedAuditError:
        raise
    except _LOW_LEVEL_ERRORS as err:
        raise RecordingError(
            f"{path} is damaged: {part} cannot be read ({type(err).__name__}: {_reason(err)})."
        ) from None


def _fail(path: Path, part: str, problem: str) -> RecordingError:
    return RecordingError(f"{path} is damaged: {part} {problem}.")


# -- opening ----------------------------------------------------------------------
def _hdf5_library() -> Any:
    """The libhdf5 that h5py uses (for the one file-access property h5py does not expose)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                if "libhdf5" in line and "hl" not in Path(line.split()[-1]).name:
                    return ctypes.CDLL(line.split()[-1])
    except OSError:
        pass
    return None


_LIB: list[Any] = []


def _swmr_fapl() -> Any:
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_fclose_degree(h5py.h5f.CLOSE_STRONG)
    fapl.set_cache(0, 521, 0, 0.75)  # no chunk cache: reads go straight into the caller's arrays
    with contextlib.suppress(AttributeError):
        fapl.set_file_locking(False, True)
    if not _LIB:
        _LIB.append(_hdf5_library())
    lib = _LIB[0]
    if lib is not None:
        try:
            fn = lib.H5Pset_metadata_read_attempts
            fn.argtypes = [ctypes.c_int64, ctypes.c_uint]
            fn(fapl.id, SWMR_READ_ATTEMPTS)
        except AttributeError:
            pass
    return fapl


def _open_file(path: Path, swmr: bool | None) -> tuple[h5py.File, bool]:
    """Open without SWMR when the file is closed; with SWMR (bounded retries) when a writer has it open."""
    if swmr is not True:
        try:
            return h5py.File(path, "r", locking=False, rdcc_nbytes=0), False
        except OSError as err:
            still_open = "already open for write" in str(err) or "consistency flags" in str(err)
            if swmr is False or not still_open:
                raise RecordingError(
                    f"{path} is not a readable HDF5 recording ({_reason(err)}); was it written by `fedaudit record`?"
                ) from None
    try:
        fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ, fapl=_swmr_fapl())
        return h5py.File(fid), True
    except OSError as err:
        raise RecordingError(
            f"{path} is being written or was left open by a killed run, and cannot be read ({_reason(err)})."
        ) from None


def _version_of(path: Path, f: h5py.File) -> tuple[str, tuple[int, int, int]]:
    with _part(path, "the root attributes"):
        kind = f.attrs.get("encoding-type")
        version = f.attrs.get("encoding-version")
    if isinstance(kind, bytes):
        kind = kind.decode("utf-8", "replace")
    if kind != fmt.ENCODING_TYPE:
        raise FormatVersionError(
            f"{path} is an HDF5 file but not a fedaudit recording (encoding-type {kind!r}, "
            f"expected {fmt.ENCODING_TYPE!r})."
        )
    if isinstance(version, bytes):
        version = version.decode("utf-8", "replace")
    match = _VERSION.match(version) if isinstance(version, str) else None
    if match is None:
        raise FormatVersionError(
            f"{path} has encoding-version {version!r}, which is not a version like '1.1.0'; the file is damaged."
        )
    parts = (int(match[1]), int(match[2]), int(match[3]))
    if parts[0] != fmt.FORMAT_MAJOR:
        raise FormatVersionError(
            f"{path} uses update format {version}, but this fedaudit reads {fmt.FORMAT_MAJOR}.x. "
            "Re-record the run, or open it with the fedaudit version that wrote it."
        )
    return version, parts


class UpdateStore:
    """Lazy reader of a recording.

    Opening reads only the small tables (and, with ``verify``, checks every
    checksum); update arrays are read on demand, one layer, one client or one
    round at a time, in contiguous slices. Rows that failed their checksums are
    not served: row numbers of :attr:`index`, :meth:`param` and the rest count
    the rows served, and :attr:`damaged_rows` lists the file rows left out.

    Examples
    --------
    >>> store = UpdateStore.open("recorded_updates/demo_fedsgd.h5")  # doctest: +SKIP
    >>> w1 = store.layer("fc1")                     # (n_updates, 256, 988)  # doctest: +SKIP
    >>> rows = store.client_rows(3)                 # doctest: +SKIP
    """

    def __init__(
        self, path: Path, f: h5py.File, *, verify: bool = True, on_damage: str = "exclude", swmr: bool = False,
    ) -> None:
        self.path = path
        self._f = f
        self.verify = verify
        self.on_damage = on_damage
        self.swmr = swmr
        self.encoding_version, self._version = _version_of(path, f)
        self.has_checksums = self._version >= fmt.CHECKSUM_SINCE
        self._rows_by_client: dict[int, np.ndarray] | None = None
        self._load()

    # -- opening -----------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        verify: bool | None = None,
        on_damage: Literal["exclude", "raise"] = "exclude",
        warn_incomplete: bool = True,
        swmr: bool | None = None,
    ) -> UpdateStore:
        """Open a recording for reading; checks the format version first, then the layout and checksums.

        Parameters
        ----------
        path
            The ``.h5`` recording.
        verify
            Check every checksum (format 1.1.0 on): the JSON datasets, the
            tables, the index of every round and every update chunk. ``False``
            skips them for speed (the layout and counters are still checked).
            ``None`` (default): true, unless the caller runs inside
            ``with verification(False):`` (how ``--no-verify`` reaches every
            recording a command opens).
        on_damage
            ``"exclude"``: leave damaged update rows out, with a
            :class:`~fedaudit.exceptions.DamagedRowsWarning` that counts them
            (see :attr:`damaged_rows`). ``"raise"``: refuse the file with
            :class:`~fedaudit.exceptions.DamagedRecordingError`.
        warn_incomplete
            Warn (:class:`~fedaudit.exceptions.IncompleteRecordingWarning`) when
            the run did not finish; :attr:`complete` tells either way.
        swmr
            ``None`` (default): open a closed file plainly, and a file a writer
            still holds open (a run being written, or killed) in SWMR mode with
            a bounded number of metadata read retries. ``True`` or ``False``
            forces the mode.

        Raises
        ------
        RecordingError
            One sentence naming the file and the part, for any structural problem.
        FormatVersionError
            Not a fedaudit recording, or a major version this fedaudit does not read.
        DamagedRecordingError
            A table or JSON dataset fails its checksum, or (``on_damage="raise"``) any update row does.
        """
        path = Path(path)
        if verify is None:
            verify = _VERIFY.get()
        if on_damage not in ON_DAMAGE:
            raise InvalidParameterError(f"on_damage must be one of {list(ON_DAMAGE)}. Got {on_damage!r}.")
        if not path.is_file():
            raise RecordingError(f"No recording at {path}; check the path (recordings end in .h5).")
        f, used_swmr = _open_file(path, swmr)
        try:
            with _part(path, "its layout"):
                store = cls(path, f, verify=verify, on_damage=on_damage, swmr=used_swmr)
        except BaseException:
            with contextlib.suppress(Exception):
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
    def create(cls, path: str | os.PathLike[str], **kwargs: Any) -> Any:
        """Create a new recording; see :class:`~fedaudit.record.UpdateWriter` for the arguments."""
        from fedaudit.record.writer import UpdateWriter

        return UpdateWriter(Path(path), **kwargs)

    def refresh(self) -> None:
        """Read the counters again, to follow a run that is still being written (SWMR)."""
        self._f.close()
        self._f, self.swmr = _open_file(self.path, True if self.swmr else None)
        self._rows_by_client = None
        with _part(self.path, "its layout"):
            self._load()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._f.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # -- loading and checking ---------------------------------------------------
    def _node(self, name: str, kind: type = h5py.Dataset) -> Any:
        if name not in self._f:
            raise _fail(self.path, f"/{name}", "is missing")
        node = self._f[name]
        if not isinstance(node, kind):
            raise _fail(self.path, f"/{name}", f"is not an HDF5 {'dataset' if kind is h5py.Dataset else 'group'}")
        return node

    def _column(self, name: str, kinds: str, *, ndim: int = 1) -> h5py.Dataset:
        ds = self._node(name)
        if ds.ndim != ndim or ds.dtype.kind not in kinds:
            raise _fail(self.path, f"/{name}", f"has dtype {ds.dtype} and {ds.ndim} dimensions, which the format "
                                               "does not allow there")
        return ds

    def _sealed(self, ds: h5py.Dataset, values: np.ndarray, part: str) -> None:
        if not (self.verify and self.has_checksums):
            return
        stored = ds.attrs.get(CHECKSUM_ATTR)
        if stored is None:
            raise _fail(self.path, part, "has no checksum attribute")
        if int(np.asarray(stored).reshape(-1)[0]) != array_digest(values):
            raise DamagedRecordingError(f"{self.path} is damaged: {part} fails its checksum.")

    def _json(self, name: str) -> Any:
        ds = self._column(name, "u")
        with _part(self.path, f"/{name}"):
            raw = ds[()]
        self._sealed(ds, raw, f"/{name}")
        with _part(self.path, f"/{name}"):
            return json.loads(bytes(raw).decode()) if len(raw) else None

    def _scalar(self, name: str) -> int:
        ds = self._column(name, "iu", ndim=0)
        return int(ds[()])

    def _load(self) -> None:
        path = self.path
        self.config: dict[str, Any] = self._json("run/config")
        self.versions: dict[str, str] = self._json("run/versions")
        self.architecture: list[dict[str, Any]] = self._json("run/architecture")
        if not isinstance(self.config, dict) or not isinstance(self.versions, dict):
            raise _fail(path, "/run/config or /run/versions", "is not a JSON object")
        self._check_architecture()
        self.status = self._scalar("run/status")
        if self.status not in (fmt.STATUS_RUNNING, fmt.STATUS_COMPLETE):
            raise _fail(path, "/run/status", f"is {self.status}, neither 0 (running) nor 1 (complete)")
        self.rounds_completed = rounds = self._scalar("run/rounds_completed")
        n = self._scalar("run/updates_committed")
        if n < 0 or rounds < 0:
            raise _fail(path, "/run/updates_committed or /run/rounds_completed", "is negative")
        self._file_size = path.stat().st_size
        datasets = self._update_datasets()
        index_ds = {col: self._column(f"{fmt.INDEX}/{col}", _kinds(dt)) for col, dt in fmt.INDEX_COLUMNS.items()}
        n_params = len(self.architecture)
        sums_ds = None
        if self.has_checksums:
            sums_ds = self._column(fmt.INDEX_CHECKSUM, "u", ndim=2)
            if sums_ds.shape[1] != n_params:
                raise _fail(path, f"/{fmt.INDEX_CHECKSUM}", f"has {sums_ds.shape[1]} columns for {n_params} parameters")
        held = min([ds.shape[0] for ds in datasets.values()] + [ds.shape[0] for ds in index_ds.values()]
                   + ([sums_ds.shape[0]] if sums_ds is not None else []))
        if n > held:
            raise _fail(path, "/run/updates_committed", f"says {n} update rows were written, but the datasets hold {held}")
        met = self._node(fmt.METRICS, h5py.Group)
        metric_ds = {col: self._column(f"{fmt.METRICS}/{col}", "fiu") for col in met}
        met_held = min((ds.shape[0] for ds in metric_ds.values()), default=rounds)
        if rounds > met_held:
            raise _fail(path, "/run/rounds_completed", f"says {rounds} rounds were completed, but /metrics holds {met_held}")
        if self.status == fmt.STATUS_COMPLETE and (n != held or rounds != met_held):
            raise _fail(path, "/run/updates_committed or /run/rounds_completed",
                        f"({n} rows, {rounds} rounds) disagree with the data of the finished run "
                        f"({held} rows, {met_held} rounds)")
        for col, ds in [*index_ds.items(), *metric_ds.items()]:
            with _part(path, f"/{ds.name.lstrip('/')}"):
                self._check_within_file(ds, f"/{ds.name.lstrip('/')}")
        with _part(path, f"/{fmt.INDEX}"):
            index = {col: ds[:n] for col, ds in index_ds.items()}
            sums = sums_ds[:n] if sums_ds is not None else None
        with _part(path, f"/{fmt.METRICS}"):
            self._metric_rows = {col: ds[:rounds] for col, ds in metric_ds.items()}
        self._load_clients()
        self._load_ground_truth()

        bad = np.zeros(n, dtype=bool)
        round_of_row: np.ndarray | None = None
        self._damaged_metric_rounds = np.zeros(rounds, dtype=bool)
        self._damaged_globals: set[int] = set()
        if self.has_checksums:
            round_of_row = self._check_rounds(index, sums, n, rounds, bad)
        self._check_chunks(datasets, n, sums, bad)
        self._check_globals(rounds)
        self.damaged_rows: np.ndarray = np.flatnonzero(bad)
        if round_of_row is not None:
            self.damaged_rounds: list[int] = sorted({int(r) for r in round_of_row[bad]})
        else:
            self.damaged_rounds = sorted({int(r) for r in index["server_round"][bad]})
        good = ~bad
        self._phys = np.flatnonzero(good) if bad.any() else None
        self.index: dict[str, np.ndarray] = {col: values[good] for col, values in index.items()}
        self.n_updates = int(good.sum())
        self._check_index()
        if bad.any():
            message = (f"{path} has {len(self.damaged_rows)} damaged update rows of {n} "
                       f"(rows {_listing(self.damaged_rows)}; rounds {_listing(self.damaged_rounds)})")
            if self.on_damage == "raise":
                raise DamagedRecordingError(f"{message}; run `fedaudit verify {path}` for details.")
            warnings.warn(DamagedRowsWarning(f"{message}; they are left out."), stacklevel=4)

    def _check_architecture(self) -> None:
        arch = self.architecture
        ok = isinstance(arch, list) and arch and all(
            isinstance(a, dict) and isinstance(a.get("name"), str) and isinstance(a.get("layer"), str)
            and isinstance(a.get("param"), str) and a["name"] == f"{a['layer']}.{a['param']}"
            and isinstance(a.get("shape"), list) and all(isinstance(d, int) and d >= 0 for d in a["shape"])
            for a in arch
        )
        if not ok or len({a["name"] for a in arch}) != len(arch):
            raise _fail(self.path, "/run/architecture", "is not a list of distinct {name, layer, param, shape} entries")

    def _update_datasets(self) -> dict[str, h5py.Dataset]:
        out = {}
        for a in self.architecture:
            name = f"{fmt.UPDATES}/{a['layer']}/{a['param']}"
            ds = self._column(name, "f", ndim=1 + len(a["shape"]))
            if ds.dtype.str not in fmt.DTYPES.values() or tuple(ds.shape[1:]) != tuple(a["shape"]):
                raise _fail(self.path, f"/{name}", f"has dtype {ds.dtype} and shape {ds.shape}, but the architecture "
                                                   f"declares float32 or float16 rows of {tuple(a['shape'])}")
            out[a["name"]] = ds
        return out

    def _check_within_file(self, ds: h5py.Dataset, part: str) -> None:
        """A small dataset cut off by truncation would read as zeros: refuse it."""
        offset = ds.id.get_offset()
        if offset is not None:
            if offset + ds.id.get_storage_size() > self._file_size:
                raise _fail(self.path, part, "lies past the end of the file (the file is truncated)")
            return
        ends: list[int] = []
        if ds.chunks is not None and ds.shape and ds.shape[0]:
            ds.id.chunk_iter(lambda info: ends.append(info.byte_offset + info.size))
        if ends and max(ends) > self._file_size:
            raise _fail(self.path, part, "lies past the end of the file (the file is truncated)")

    def _load_clients(self) -> None:
        self._node(fmt.CLIENTS, h5py.Group)
        kinds = {"client_id": "iu", "corpus": "OSU", "n_train": "iu", "n_val": "iu"}
        clients: dict[str, np.ndarray] = {}
        for col, k in kinds.items():
            ds = self._column(f"{fmt.CLIENTS}/{col}", k)
            with _part(self.path, f"/{fmt.CLIENTS}/{col}"):
                self._check_within_file(ds, f"/{fmt.CLIENTS}/{col}")
                raw = ds[()]
                self._sealed(ds, raw, f"/{fmt.CLIENTS}/{col}")
                clients[col] = ds.asstr()[()] if col == "corpus" else raw
        if len({len(v) for v in clients.values()}) != 1:
            raise _fail(self.path, f"/{fmt.CLIENTS}", "has columns of different lengths")
        if len(np.unique(clients["client_id"])) != len(clients["client_id"]):
            raise _fail(self.path, f"/{fmt.CLIENTS}/client_id", "lists a client twice")
        self.clients: dict[str, np.ndarray] = clients

    def _load_ground_truth(self) -> None:
        self._ground_truth: dict[str, np.ndarray] = {}
        gt = self._node(fmt.GROUND_TRUTH, h5py.Group)  # a recording without ground truth has it empty
        if self.verify and self.has_checksums:
            stored = gt.attrs.get(CHECKSUM_ATTR)
            if stored is None or int(np.asarray(stored).reshape(-1)[0]) != attrs_digest(gt.attrs):
                raise DamagedRecordingError(f"{self.path} is damaged: the attributes of /{fmt.GROUND_TRUTH} fail "
                                            "their checksum.")
            declared = json.loads(str(gt.attrs["columns"]))
            if sorted(gt) != sorted(declared):
                raise _fail(self.path, f"/{fmt.GROUND_TRUTH}", f"holds {sorted(gt)}, but was written with {declared}")
        for key in gt:
            ds = self._column(f"{fmt.GROUND_TRUTH}/{key}", "OSU")
            with _part(self.path, f"/{fmt.GROUND_TRUTH}/{key}"):
                self._check_within_file(ds, f"/{fmt.GROUND_TRUTH}/{key}")
                raw = ds[()]
            self._sealed(ds, raw, f"/{fmt.GROUND_TRUTH}/{key}")
            if len(raw) != len(self.client_ids):
                raise _fail(self.path, f"/{fmt.GROUND_TRUTH}/{key}",
                            f"has {len(raw)} entries for {len(self.client_ids)} clients")
            with _part(self.path, f"/{fmt.GROUND_TRUTH}/{key}"):
                self._ground_truth[key] = ds.asstr()[()]

    def _check_rounds(
        self, index: dict[str, np.ndarray], sums: np.ndarray | None, n: int, rounds: int, bad: np.ndarray
    ) -> np.ndarray:
        """Verify each round's checksum; mark the rows of damaged rounds. Returns the round of every row."""
        end_ds = self._column(fmt.ROUND_END, "i")
        sum_ds = self._column(fmt.ROUND_CHECKSUM, "u")
        glob_ds = self._column(fmt.ROUND_GLOBALS_CHECKSUM, "u", ndim=2) if fmt.ROUND_GLOBALS_CHECKSUM in self._f else None
        for ds in (end_ds, sum_ds, *([glob_ds] if glob_ds is not None else [])):
            if ds.shape[0] < rounds:
                raise _fail(self.path, f"/{ds.name.lstrip('/')}", f"holds {ds.shape[0]} rounds, fewer than the "
                                                                  f"{rounds} /run/rounds_completed declares")
            self._check_within_file(ds, f"/{ds.name.lstrip('/')}")
        end = end_ds[:rounds]
        starts = np.r_[0, end[:-1]] if rounds else np.zeros(0, dtype=np.int64)
        if rounds and (np.any(end < starts) or end[-1] != n) or (not rounds and n):
            raise _fail(self.path, f"/{fmt.ROUND_END} and /run/updates_committed",
                        f"disagree ({n} rows committed, rounds end at row {int(end[-1]) if rounds else 0})")
        round_of_row = np.repeat(np.arange(rounds), end - starts)
        self._round_end = end
        if not self.verify:
            return round_of_row
        stored = sum_ds[:rounds]
        glob = glob_ds[:rounds] if glob_ds is not None else None
        names = sorted(self._metric_rows)
        assert sums is not None
        for r in range(rounds):
            s, e = int(starts[r]), int(end[r])
            metrics = {k: float(self._metric_rows[k][r]) for k in names}
            rows = {col: index[col][s:e] for col in fmt.INDEX_COLUMNS}
            expected = round_checksum(rows, sums[s:e], e, metrics, glob[r] if glob is not None else None)
            if expected != int(stored[r]):
                bad[s:e] = True
                self._damaged_metric_rounds[r] = True
                if glob is not None:
                    self._damaged_globals.add(r)
        return round_of_row

    def _chunk_map(self, ds: h5py.Dataset) -> tuple[np.ndarray, np.ndarray]:
        """File offset and size of each row's chunk (-1 where a row has none)."""
        offsets = np.full(ds.shape[0], -1, dtype=np.int64)
        sizes = np.zeros(ds.shape[0], dtype=np.int64)

        def visit(info: Any) -> None:
            row = info.chunk_offset[0]
            if 0 <= row < len(offsets):
                offsets[row], sizes[row] = info.byte_offset, info.size

        if ds.shape[0]:
            ds.id.chunk_iter(visit)
        return offsets, sizes

    def _check_chunks(self, datasets: dict[str, h5py.Dataset], n: int, sums: np.ndarray | None, bad: np.ndarray) -> None:
        """Rows whose chunk is missing, cut off by truncation, or (with checksums) fails its checksum."""
        check = self.verify and sums is not None
        with self._mapped() as view:
            for j, (name, ds) in enumerate(datasets.items()):
                with _part(self.path, f"/{fmt.UPDATES}/{name.replace('.', '/')}"):
                    plain = ds.id.get_create_plist().get_nfilters() == 0
                    offsets, sizes = self._chunk_map(ds)
                    offsets, sizes = offsets[:n], sizes[:n]
                    missing = (offsets < 0) | (offsets + sizes > self._file_size)
                    if plain:
                        missing |= sizes != ds.dtype.itemsize * math.prod(ds.shape[1:])
                    bad |= missing
                    if not check:
                        continue
                    for row in np.flatnonzero(~bad):
                        if plain and view is not None:
                            o = int(offsets[row])
                            h = digest(view[o : o + int(sizes[row])])
                        else:
                            h = digest(np.ascontiguousarray(ds[int(row)]))
                        if h != int(sums[row, j]):
                            bad[row] = True

    def _check_globals(self, rounds: int) -> None:
        if fmt.GLOBALS not in self._f or not (self.verify and self.has_checksums):
            return
        if fmt.ROUND_GLOBALS_CHECKSUM not in self._f:
            raise _fail(self.path, f"/{fmt.ROUND_GLOBALS_CHECKSUM}", "is missing")
        sums = self._f[fmt.ROUND_GLOBALS_CHECKSUM][:rounds]
        with self._mapped() as view:
            for j, name in enumerate(self.parameter_names):
                ds = self._dataset(name, fmt.GLOBALS)
                with _part(self.path, f"/{fmt.GLOBALS}/{name.replace('.', '/')}"):
                    offsets, sizes = self._chunk_map(ds)
                    for r in range(min(rounds, ds.shape[0])):
                        o, size = int(offsets[r]), int(sizes[r])
                        if o < 0 or o + size > self._file_size:
                            self._damaged_globals.add(r)
                        elif view is not None and digest(view[o : o + size]) != int(sums[r, j]):
                            self._damaged_globals.add(r)

    @contextlib.contextmanager
    def _mapped(self) -> Iterator[memoryview | None]:
        """The file mapped read-only: chunks are hashed where they lie, without a copy."""
        if not self._file_size:
            yield None
            return
        with open(self.path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            try:
                yield view
            finally:
                view.release()

    def _check_index(self) -> None:
        """The served index rows must name known clients, known kinds and recorded rounds."""
        idx, path = self.index, self.path
        unknown = ~np.isin(idx["client_id"], self.client_ids)
        if unknown.any():
            row = int(np.flatnonzero(unknown)[0])
            raise _fail(path, f"/{fmt.INDEX}/client_id", f"names client {int(idx['client_id'][row])} (served row "
                                                         f"{row}), which is not in the client table")
        if np.any(idx["kind"] >= len(fmt.KINDS)):
            raise _fail(path, f"/{fmt.INDEX}/kind", f"holds a kind other than 0..{len(fmt.KINDS) - 1}")
        rounds = idx["server_round"]
        if rounds.size and (rounds.min() < 0 or np.any(np.diff(rounds) < 0)):
            raise _fail(path, f"/{fmt.INDEX}/server_round", "is not a non-decreasing list of round numbers >= 0")
        known = self._metric_rows.get("server_round")
        if known is not None and rounds.size:
            valid = known[~self._damaged_metric_rounds]
            outside = ~np.isin(rounds, valid)
            if outside.any():
                raise _fail(path, f"/{fmt.INDEX}/server_round",
                            f"holds round {int(rounds[np.flatnonzero(outside)[0]])}, which /metrics/server_round "
                            f"does not record")
        for col in ("num_samples", "local_steps", "bytes_sent"):
            if np.any(idx[col] < 0):
                raise _fail(path, f"/{fmt.INDEX}/{col}", "holds a negative count")

    # -- facts -------------------------------------------------------------
    @property
    def complete(self) -> bool:
        return self.status == fmt.STATUS_COMPLETE

    @property
    def result(self) -> dict[str, Any]:
        with _part(self.path, "/run/result"):
            value = self._json("run/result")
        if value is not None and not isinstance(value, dict):
            raise _fail(self.path, "/run/result", "is not a JSON object")
        return value or {}

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
        return fmt.GLOBALS in self._f

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def metrics(self) -> dict[str, np.ndarray]:
        """Per-round metrics of the global model (every column the run declared), completed rounds only.

        Rounds whose checksum failed read as NaN.
        """
        out = {col: values.astype(np.float64) for col, values in self._metric_rows.items()}
        if self._damaged_metric_rounds.any():
            for values in out.values():
                values[self._damaged_metric_rounds] = np.nan
        return out

    def ground_truth(self) -> dict[str, np.ndarray]:
        """Evaluation-only private attributes (``gender``, ``speaker_id``) per client.

        An attack must never use these to fit or predict, only to score. A
        recording without ground truth (a real deployment) gives ``{}``.
        """
        return dict(self._ground_truth)

    def privacy(self) -> list[PrivacySpent]:
        """The privacy each DP mechanism of the run claims to have spent (empty without DP)."""
        if fmt.PRIVACY in self._f:
            with _part(self.path, f"/{fmt.PRIVACY}"):
                return [self._privacy_group(name, g) for name, g in self._f[fmt.PRIVACY].items()]
        accountant = str((self.config.get("defense_spec") or {}).get("accountant", "rdp"))
        with _part(self.path, "the privacy spent in /run/result"):
            return _privacy_from_v1_0(self.result, accountant)

    def _privacy_group(self, name: str, g: h5py.Group) -> PrivacySpent:
        part = f"/{fmt.PRIVACY}/{name}"
        if not isinstance(g, h5py.Group):
            raise _fail(self.path, part, "is not a group")
        if self.verify and self.has_checksums:
            stored = g.attrs.get(CHECKSUM_ATTR)
            if stored is None or int(stored) != attrs_digest(g.attrs):
                raise DamagedRecordingError(f"{self.path} is damaged: the attributes of {part} fail their checksum.")
        ids = self.client_ids
        values = {}
        for key in (fmt.PRIVACY_EPSILON, fmt.PRIVACY_ROUNDS_JOINED):
            ds = self._column(f"{fmt.PRIVACY}/{name}/{key}", "fiu")
            raw = ds[()]
            self._sealed(ds, raw, f"{part}/{key}")
            if len(raw) != len(ids):
                raise _fail(self.path, f"{part}/{key}", f"has {len(raw)} entries for {len(ids)} clients")
            values[key] = raw
        eps, joined = values[fmt.PRIVACY_EPSILON], values[fmt.PRIVACY_ROUNDS_JOINED]

        def optional(key: str) -> float | None:
            value = float(g.attrs[key])
            return None if math.isnan(value) else value

        return PrivacySpent(
            mechanism=name, level=str(g.attrs["level"]), delta=float(g.attrs["delta"]),  # type: ignore[arg-type]
            epsilon_per_client={int(c): float(e) for c, e in zip(ids, eps, strict=True) if not math.isnan(e)},
            accountant=str(g.attrs["accountant"]), noise_multiplier=optional("noise_multiplier"),
            epsilon_aggregate=optional("epsilon_aggregate"),
            rounds_joined={int(c): int(n) for c, n in zip(ids, joined, strict=True) if n > 0},
        )

    # -- arrays ------------------------------------------------------------
    def _dataset(self, name: str, group: str = fmt.UPDATES) -> h5py.Dataset:
        layer, param = split_param(name)
        if name not in self.parameter_names:
            raise InvalidParameterError(f"{self.path} has no parameter {name!r}; it has {self.parameter_names}.")
        try:
            ds = self._f[group][layer][param]
        except KeyError:
            raise RecordingError(f"{self.path} is damaged: /{group}/{layer}/{param} is missing.") from None
        if not isinstance(ds, h5py.Dataset):
            raise RecordingError(f"{self.path} is damaged: /{group}/{layer}/{param} is not a dataset.")
        return ds

    def param(
        self, name: str, rows: slice | Sequence[int] | np.ndarray | None = None, *, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Updates of one parameter (``"fc1.weight"``), all served rows or the given ones.

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
        file_rows = self._phys[rows] if self._phys is not None else rows
        with _part(self.path, f"/{fmt.UPDATES}/{name.replace('.', '/')}"):
            for start, stop, dst in _runs(file_rows):  # contiguous runs, never strided reads
                ds.read_direct(out, np.s_[start:stop], np.s_[dst : dst + stop - start])
        return out

    def layer(self, layer: str, rows: slice | Sequence[int] | np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``{"weight": ..., "bias": ...}`` updates of one layer."""
        names = [a["name"] for a in self.architecture if a["layer"] == layer]
        if not names:
            raise InvalidParameterError(f"{self.path} has no layer {layer!r}; its layers are {self.layers}.")
        return {split_param(n)[1]: self.param(n, rows) for n in names}

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
        if server_round in self._damaged_globals:
            raise DamagedRecordingError(f"{self.path} is damaged: the global weights of round {server_round} fail "
                                        "their checksum.")
        out = {}
        for n in self.parameter_names:
            ds = self._dataset(n, fmt.GLOBALS)
            if ds.shape[1:] != self.shape(n) or server_round >= ds.shape[0]:
                raise _fail(self.path, f"/{fmt.GLOBALS}/{n.replace('.', '/')}", "does not hold that round")
            with _part(self.path, f"/{fmt.GLOBALS}/{n.replace('.', '/')}"):
                out[n] = ds[server_round]
        return out

    def initial_weights(self) -> dict[str, np.ndarray]:
        """The global model before round 0 (what the server sent first)."""
        if fmt.INITIAL_WEIGHTS not in self._f:
            raise RecordingError(f"{self.path} holds no initial weights.")
        out = {}
        for n in self.parameter_names:
            ds = self._dataset(n, fmt.INITIAL_WEIGHTS)
            part = f"/{fmt.INITIAL_WEIGHTS}/{n.replace('.', '/')}"
            with _part(self.path, part):
                value = ds[()]
            if value.shape != self.shape(n):
                raise _fail(self.path, part, f"has shape {value.shape}, not {self.shape(n)}")
            self._sealed(ds, value, part)
            out[n] = value
        return out

    def iter_rows(self, name: str, *, batch: int = 64) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_row, block)`` of one parameter in contiguous blocks."""
        for start in range(0, self.n_updates, batch):
            yield start, self.param(name, slice(start, min(start + batch, self.n_updates)))


# -- verification of a whole file -------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Verification:
    """What :func:`verify_recording` found in one file."""

    path: str
    encoding_version: str
    checksums: bool
    complete: bool
    rows: int
    rounds: int
    damaged_rows: tuple[int, ...] = ()
    damaged_rounds: tuple[int, ...] = ()
    damaged_globals: tuple[int, ...] = ()
    damaged_parts: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not (self.damaged_rows or self.damaged_globals or self.damaged_parts)

    def summary(self) -> str:
        """One sentence."""
        if self.ok:
            what = ("every checksum matches" if self.checksums
                    else f"no checksums in format {self.encoding_version}; the layout and counters are sound")
            return f"{self.path}: {self.rows} update rows in {self.rounds} rounds; {what}."
        bits = []
        if self.damaged_rows:
            bits.append(f"{len(self.damaged_rows)} of {self.rows} update rows are damaged (rows "
                        f"{_listing(self.damaged_rows)}; rounds {_listing(self.damaged_rounds)})")
        if self.damaged_globals:
            bits.append(f"the global weights of rounds {_listing(self.damaged_globals)} are damaged")
        if self.damaged_parts:
            bits.append(f"{', '.join(self.damaged_parts)} fail their checksums")
        return f"{self.path}: " + "; ".join(bits) + "."

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "encoding_version": self.encoding_version, "checksums": self.checksums,
                "complete": self.complete, "rows": self.rows, "rounds": self.rounds, "ok": self.ok,
                "damaged_rows": list(self.damaged_rows), "damaged_rounds": list(self.damaged_rounds),
                "damaged_globals": list(self.damaged_globals), "damaged_parts": list(self.damaged_parts),
                "notes": list(self.notes)}


def verify_recording(path: str | os.PathLike[str]) -> Verification:
    """Check a whole recording: its layout, counters and every checksum.

    Raises
    ------
    RecordingError
        For a structural problem, and :class:`~fedaudit.exceptions.DamagedRecordingError`
        when a part the file cannot be read without (configuration, architecture,
        client table, ground truth) fails its checksum.
    """
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DamagedRowsWarning)
        store = UpdateStore.open(path, verify=True, on_damage="exclude", warn_incomplete=False)
    with store:
        parts: list[str] = []
        for part, check in (("/run/result", lambda: store.result), (f"/{fmt.PRIVACY}", store.privacy),
                            (f"/{fmt.INITIAL_WEIGHTS}", store.initial_weights)):
            if part != "/run/result" and part.lstrip("/") not in store._f:
                continue
            try:
                check()
            except DamagedRecordingError:
                parts.append(part)
        notes = [] if store.has_checksums else [f"no checksums in format {store.encoding_version}"]
        if not store.complete:
            notes.append(f"incomplete: the run stopped after {store.rounds_completed} rounds")
        return Verification(
            path=str(path), encoding_version=store.encoding_version, checksums=store.has_checksums,
            complete=store.complete, rows=store.n_updates + len(store.damaged_rows), rounds=store.rounds_completed,
            damaged_rows=tuple(int(r) for r in store.damaged_rows), damaged_rounds=tuple(store.damaged_rounds),
            damaged_globals=tuple(sorted(store._damaged_globals)), damaged_parts=tuple(parts), notes=tuple(notes),
        )


def _kinds(dtype: str) -> str:
    return np.dtype(dtype).kind + ("iu" if np.dtype(dtype).kind in "iu" else "")


def _listing(values: Sequence[int] | np.ndarray, limit: int = 10) -> str:
    """``"3, 4, 9"`` or ``"3, 4, ... (12 in all)"``: short enough for one sentence."""
    values = [int(v) for v in values]
    if len(values) <= limit:
        return ", ".join(map(str, values))
    return ", ".join(map(str, values[:limit])) + f", ... ({len(values)} in all)"


def _runs(rows: np.ndarray) -> Iterator[tuple[int, int, int]]:
    """Split row numbers into contiguous ascending runs: (start, stop, position in output)."""
    if rows.size == 0:
        return
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.r_[0, breaks]
    stops = np.r_[breaks, rows.size]
    for s, e in zip(starts, stops, strict=True):
        yield int(rows[s]), int(rows[e - 1]) + 1, int(s)


def _privacy_from_v1_0(result: dict[str, Any], accountant: str) -> list[PrivacySpent]:
    """Format 1.0.0 kept the privacy spent in the run result under ``privacy_<mechanism>``."""
    out = []
    if "privacy_udp" in result:
        p = result["privacy_udp"]
        out.append(PrivacySpent(
            mechanism="udp", level="user", delta=float(p["delta"]), accountant=accountant,
            epsilon_per_client={int(k): float(v) for k, v in p["epsilon_per_client"].items()},
            noise_multiplier=float(p["noise_multiplier"]), epsilon_aggregate=p.get("epsilon_amplified"),
        ))
    if "privacy_dp_sgd" in result:
        p = result["privacy_dp_sgd"]
        out.append(PrivacySpent(
            mechanism="dp-sgd", level="sample", delta=float(p["delta"]), accountant=accountant,
            epsilon_per_client={int(k): float(v) for k, v in p["epsilon_per_client"].items()},
            noise_multiplier=float(p["noise_multiplier"]),
        ))
    if "privacy_ldp" in result:
        p = result["privacy_ldp"]
        joined = {int(k): int(v) for k, v in p["rounds_joined"].items()}
        out.append(PrivacySpent(
            mechanism="ldp", level="release", delta=float(p["delta"]), accountant="analytic",
            epsilon_per_client={k: float(p["epsilon_per_round"]) for k in joined}, rounds_joined=joined,
        ))
    return out
