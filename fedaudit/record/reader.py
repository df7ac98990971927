"""Lazy reader of a recording (the layout is specified in ``docs/format.md``).

Every format version listed in :data:`~fedaudit.record.format.READABLE_VERSIONS`
is read; what an older minor version lacks is converted on read (format 1.0.0
kept the privacy spent in the run result, 1.1.0 keeps it in ``/privacy``).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import h5py
import numpy as np

from fedaudit.exceptions import FormatVersionError, IncompleteRecordingWarning, InvalidParameterError, RecordingError
from fedaudit.record import format as fmt
from fedaudit.record._h5 import read_json, split_param
from fedaudit.types import PrivacySpent

__all__ = ["UpdateStore"]


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
        self.encoding_version = str(f.attrs.get("encoding-version"))
        self.config: dict[str, Any] = read_json(f["run/config"])
        self.versions: dict[str, str] = read_json(f["run/versions"])
        self.architecture: list[dict[str, Any]] = read_json(f["run/architecture"])
        self.status = int(f["run/status"][()])
        self.rounds_completed = int(f["run/rounds_completed"][()])
        self.n_updates = int(f["run/updates_committed"][()])
        idx = f[fmt.INDEX]
        self.index: dict[str, np.ndarray] = {col: idx[col][: self.n_updates] for col in fmt.INDEX_COLUMNS}
        cl = f[fmt.CLIENTS]
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
            if kind != fmt.ENCODING_TYPE:
                raise FormatVersionError(
                    f"{path} is an HDF5 file but not a fedaudit recording (encoding-type {kind!r}, "
                    f"expected {fmt.ENCODING_TYPE!r})."
                )
            major = str(version).split(".")[0]
            if major != str(fmt.FORMAT_MAJOR):
                raise FormatVersionError(
                    f"{path} uses update format {version}, but this fedaudit reads {fmt.FORMAT_MAJOR}.x. "
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
    def create(cls, path: str | os.PathLike[str], **kwargs: Any) -> Any:
        """Create a new recording; see :class:`~fedaudit.record.UpdateWriter` for the arguments."""
        from fedaudit.record.writer import UpdateWriter

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
        return self.status == fmt.STATUS_COMPLETE

    @property
    def result(self) -> dict[str, Any]:
        return read_json(self._f["run/result"]) or {}

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
        """Per-round metrics of the global model (every column the run declared), completed rounds only."""
        met = self._f[fmt.METRICS]
        return {col: met[col][: self.rounds_completed] for col in met}

    def ground_truth(self) -> dict[str, np.ndarray]:
        """Evaluation-only private attributes (``gender``, ``speaker_id``) per client.

        An attack must never use these to fit or predict, only to score. A
        recording without ground truth (a real deployment) gives ``{}``.
        """
        if fmt.GROUND_TRUTH not in self._f:
            return {}
        gt = self._f[fmt.GROUND_TRUTH]
        return {key: gt[key].asstr()[()] for key in gt}

    def privacy(self) -> list[PrivacySpent]:
        """The privacy each DP mechanism of the run claims to have spent (empty without DP)."""
        if fmt.PRIVACY in self._f:
            return [self._privacy_group(name, g) for name, g in self._f[fmt.PRIVACY].items()]
        accountant = str((self.config.get("defense_spec") or {}).get("accountant", "rdp"))
        return _privacy_from_v1_0(self.result, accountant)

    def _privacy_group(self, name: str, g: h5py.Group) -> PrivacySpent:
        ids = self.client_ids
        eps = g[fmt.PRIVACY_EPSILON][()]
        joined = g[fmt.PRIVACY_ROUNDS_JOINED][()]

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
        return {n: self._dataset(n, fmt.GLOBALS)[server_round] for n in self.parameter_names}

    def initial_weights(self) -> dict[str, np.ndarray]:
        """The global model before round 0 (what the server sent first)."""
        if fmt.INITIAL_WEIGHTS not in self._f:
            raise RecordingError(f"{self.path} holds no initial weights.")
        return {n: self._dataset(n, fmt.INITIAL_WEIGHTS)[()] for n in self.parameter_names}

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
