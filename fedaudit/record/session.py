"""Record any federated loop: a context manager that checks each update and feeds the :class:`Recorder`.

A plain PyTorch loop, a Flower strategy or a Flower client mod tells the
session what each client sent (a gradient, or the weights it got and the
weights it sent back) and when each round ends. The session checks every
update against the declared model before anything reaches the file, so a bad
update is a clear error (or a counted warning) and never a half-written round.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

import numpy as np

from fedaudit.config import FLConfig
from fedaudit.exceptions import InvalidParameterError, RecordingError, SkippedUpdateWarning
from fedaudit.hooks import ClientInfo, RoundEnd, RoundStart, RunEnd, RunStart
from fedaudit.record.recorder import Recorder
from fedaudit.types import ClientUpdate, PrivacySpent

if TYPE_CHECKING:
    from torch import nn

__all__ = ["MIRRORED_SETTINGS", "RecordingSession", "SkippedUpdateWarning", "parameter_shapes_of"]

#: Settings of a run that ``fedaudit shadow`` needs to mirror it (FLConfig fields but fold and seed).
MIRRORED_SETTINGS: tuple[str, ...] = tuple(f.name for f in fields(FLConfig) if f.name not in ("fold", "seed"))

_EMPTY: Mapping[str, Any] = MappingProxyType({})

OnInvalid = Literal["raise", "warn"]


def _short_name(name: str) -> str:
    # "layers.fc1.weight" -> "fc1.weight", as fedaudit's simulator names parameters
    return ".".join(name.split(".")[-2:])


def parameter_shapes_of(
    model_or_shapes: nn.Module | Mapping[str, Sequence[int]], *, shorten: bool = False
) -> dict[str, tuple[int, ...]]:
    """Parameter name to shape, in model order, from a torch model or a mapping.

    A model's parameter ``"layers.fc1.weight"`` is recorded as ``"fc1.weight"``
    (its last two parts, as fedaudit's simulator names them) when those short
    names are unique, else under its full name. A mapping keeps its names
    unless ``shorten`` (for names read off a state dict).
    """
    if hasattr(model_or_shapes, "named_parameters"):
        named = [(n, tuple(int(d) for d in p.shape)) for n, p in model_or_shapes.named_parameters()]
        shorten = True
    elif isinstance(model_or_shapes, Mapping):
        named = [(str(n), tuple(int(d) for d in s)) for n, s in model_or_shapes.items()]
    else:
        named = None
    if named is not None:
        short = [_short_name(n) for n, _ in named]
        names = short if shorten and len(set(short)) == len(short) else [n for n, _ in named]
        return {name: shape for name, (_, shape) in zip(names, named, strict=True)}
    raise InvalidParameterError(
        "A recording session needs a torch model (with named_parameters) or a mapping of parameter name to "
        f"shape. Got {type(model_or_shapes).__name__}."
    )


def _as_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)


class RecordingSession:
    """Record a federated run from any training loop into an HDF5 recording.

    Declare the model (layer names and shapes), the run's hyper-parameters and
    its clients; then, per round, record each client's update as a gradient
    (:meth:`record_gradient`) or as the global weights it received and the
    local weights it sent back (:meth:`record_weights`, which stores the
    pseudo-gradient ``(theta_global - theta_local) / (lr * U)``), and close the
    round (:meth:`end_round`). It wraps :class:`~fedaudit.record.Recorder`, so
    the file is crash-safe in the same way: every ended round is flushed, and a
    loop that dies leaves a readable, incomplete recording of its ended rounds.
    Leaving the ``with`` block normally marks the recording complete.

    Parameters
    ----------
    path
        Output ``.h5``; must not exist unless ``overwrite``.
    model_or_shapes
        The torch model (its ``named_parameters`` give names and shapes, torch is
        used only through it) or a mapping of parameter name to shape, in model
        order, input layer first.
    config
        The run's hyper-parameters, JSON-ready: ``algorithm``, ``lr``,
        ``local_epochs``, ``batch_size``, ``rounds``, ``client_fraction``, ...
        (the keys of :class:`~fedaudit.config.FLConfig`). The settings of
        :data:`MIRRORED_SETTINGS` it lacks are listed under ``"not_recorded"`` in
        the recording's configuration: what ``fedaudit shadow`` cannot mirror.
    clients
        Every client that may take part: their number (ids ``0..n-1``), their
        ids, or :class:`~fedaudit.hooks.ClientInfo` rows. An update from a client
        outside this table is an error.
    attributes
        Client id to private ground truth (``{"gender": "F"}``), stored apart as
        evaluation-only (attacks read it only to score); merged into ``clients``.
    data
        Description of the data (``feature_set``, ``n_features``, corpora).
    metric_names
        Per-round metrics :meth:`end_round` will be given (``"val_uar"``, ...).
    initial_weights
        The global model before round 0; by default the model's weights when a
        model is given.
    on_invalid
        ``"raise"`` (default): an update with NaN or inf, or a second update of
        a client in one round, raises :class:`~fedaudit.exceptions.RecordingError`.
        ``"warn"``: it is left out, counted in :attr:`skipped` and warned about
        (:class:`SkippedUpdateWarning`). Updates that do not match the declared
        model always raise.
    dtype, store_globals, overwrite, background, depth
        As for :class:`~fedaudit.record.Recorder`.

    Examples
    --------
    >>> with RecordingSession("run.h5", model, config={"algorithm": "fedavg", "lr": 0.01},
    ...                       clients=4) as session:  # doctest: +SKIP
    ...     session.record_weights(0, 0, global_weights, local_weights, lr=0.01, local_steps=5, num_samples=40)
    ...     session.end_round(0)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        model_or_shapes: nn.Module | Mapping[str, Sequence[int]],
        *,
        config: Mapping[str, Any],
        clients: int | Sequence[int | ClientInfo],
        attributes: Mapping[int, Mapping[str, str]] | None = None,
        data: Mapping[str, Any] | None = None,
        metric_names: Sequence[str] = (),
        initial_weights: Mapping[str, Any] | None = None,
        on_invalid: OnInvalid = "raise",
        dtype: str = "float32",
        store_globals: bool = False,
        overwrite: bool = False,
        background: bool = True,
        depth: int = 4,
    ) -> None:
        if on_invalid not in ("raise", "warn"):
            raise InvalidParameterError(
                f"The 'on_invalid' parameter of RecordingSession must be 'raise' or 'warn'. Got {on_invalid!r} instead."
            )
        self.shapes = parameter_shapes_of(model_or_shapes)
        if not self.shapes:
            raise InvalidParameterError("A recording session needs at least one parameter; the model declares none.")
        self.path = Path(path)
        self.on_invalid = on_invalid
        self.store_globals = store_globals
        self.config = dict(config)
        self.clients = self._client_table(clients, attributes or {})
        self._known = {c.client_id for c in self.clients}
        if initial_weights is None and hasattr(model_or_shapes, "named_parameters"):
            initial_weights = dict(zip(self.shapes, (_as_numpy(p).copy() for p in model_or_shapes.parameters()),
                                       strict=True))
        init = self.checked_arrays(initial_weights, what="the initial weights") if initial_weights is not None else None
        self.not_recorded = [k for k in MIRRORED_SETTINGS if k not in self.config]
        recorded_config = {**self.config, "not_recorded": list(self.not_recorded)}
        self.skipped: Counter[str] = Counter()
        self.dropped: Counter[int] = Counter()  # client id -> rounds it was selected for and sent nothing
        self.n_updates = 0
        self.rounds_ended = 0
        self._round: int | None = None
        self._last_round: int | None = None
        self._selected: tuple[int, ...] = ()
        self._global: dict[str, np.ndarray] | None = None
        self._pending: list[ClientUpdate] = []
        self._seen: set[int] = set()
        self._closed = False
        self._recorder = Recorder(self.path, dtype=dtype, store_globals=store_globals, overwrite=overwrite,
                                  background=background, depth=depth)
        self._recorder.on_run_start(RunStart(
            config=recorded_config, parameter_shapes=self.shapes, clients=self.clients, initial_weights=init,
            data=dict(data or _EMPTY), metric_names=list(metric_names),
        ))

    # -- declarations ------------------------------------------------------
    @staticmethod
    def _client_table(
        clients: int | Sequence[int | ClientInfo], attributes: Mapping[int, Mapping[str, str]]
    ) -> list[ClientInfo]:
        if isinstance(clients, bool) or clients is None:
            raise InvalidParameterError(
                f"The 'clients' parameter of RecordingSession must be a number of clients, a list of client ids or "
                f"of ClientInfo. Got {clients!r}."
            )
        if isinstance(clients, int | np.integer):
            rows: list[int | ClientInfo] = list(range(int(clients)))
        else:
            rows = list(clients)
        table = [c if isinstance(c, ClientInfo) else ClientInfo(client_id=int(c)) for c in rows]
        ids = [c.client_id for c in table]
        if len(set(ids)) != len(ids):
            repeated = sorted({i for i in ids if ids.count(i) > 1})
            raise InvalidParameterError(f"The clients of a recording session list clients {repeated} twice.")
        if any(i < 0 for i in ids):
            raise InvalidParameterError(f"Client ids must be integers >= 0. Got {sorted(i for i in ids if i < 0)}.")
        unknown = sorted(set(attributes) - set(ids))
        if unknown:
            raise InvalidParameterError(f"Attributes were given for clients {unknown}, which are not in the client table.")
        return [
            replace(c, attributes={**dict(c.attributes), **{k: str(v) for k, v in attributes.get(c.client_id, {}).items()}})
            for c in table
        ]

    @property
    def open_round(self) -> int | None:
        """The round updates are being recorded for, or ``None`` between rounds."""
        return self._round

    # -- rounds --------------------------------------------------------------
    def start_round(
        self, server_round: int, *, client_ids: Sequence[int] = (), global_weights: Mapping[str, Any] | None = None
    ) -> None:
        """Open a round (optional: the first update of a round opens it).

        ``client_ids`` are the clients selected: one that sends nothing before
        :meth:`end_round` is counted as dropped out (:attr:`dropped`).
        ``global_weights`` are the weights sent; they are stored when
        ``store_globals`` is set, and are the default ``global_weights`` of
        :meth:`record_weights`.
        """
        self._check_open()
        if self._round is not None:
            raise RecordingError(
                f"Round {server_round} cannot start while round {self._round} is open; end round {self._round} first."
            )
        self._check_next(server_round)
        unknown = sorted(set(map(int, client_ids)) - self._known)
        if unknown:
            raise RecordingError(f"Round {server_round} selects clients {unknown}, which are not in the client table.")
        self._round = server_round
        self._selected = tuple(int(c) for c in client_ids)
        self._global = self.checked_arrays(global_weights, what=f"the global weights of round {server_round}") \
            if global_weights is not None else None

    def end_round(self, server_round: int, metrics: Mapping[str, float] | None = None) -> None:
        """Close a round: its checked updates are written and flushed together."""
        self._check_open()
        if self._round is None:
            self._check_next(server_round)
        elif server_round != self._round:
            raise RecordingError(f"end_round({server_round}) was called while round {self._round} is open.")
        if self.store_globals and self._global is None:
            raise RecordingError(
                f"The recording {self.path} stores global weights, but round {server_round} was not started with "
                "them; call start_round(server_round, global_weights=...) first."
            )
        dropped = [c for c in self._selected if c not in self._seen]
        for cid in dropped:
            self.dropped[cid] += 1
        if dropped:
            warnings.warn(
                f"Clients {dropped} were selected for round {server_round} but sent no update; "
                f"the round is recorded with the {len(self._pending)} updates that arrived.",
                SkippedUpdateWarning, stacklevel=2,
            )
        updates, self._pending = self._pending, []
        self._recorder.on_round_start(RoundStart(server_round=server_round, client_ids=list(self._selected),
                                                 global_weights=self._global))
        for update in updates:
            self._recorder.on_client_update(update)
        self._recorder.on_round_end(RoundEnd(server_round=server_round, n_clients=len(updates),
                                             metrics=dict(metrics or _EMPTY)))
        self.n_updates += len(updates)
        self.rounds_ended += 1
        self._last_round, self._round = server_round, None
        self._selected, self._seen, self._global = (), set(), None

    # -- updates ---------------------------------------------------------------
    def record_gradient(
        self, client_id: int, server_round: int, grads: Mapping[str, Any] | Sequence[Any], num_samples: int, *,
        lr: float | None = None, local_steps: int = 1, **wire: Any,
    ) -> ClientUpdate | None:
        """Record a gradient (FedSGD) a client sent; ``grads`` by parameter name, or a list in model order.

        ``lr`` defaults to ``config["lr"]``. ``wire`` sets the cost fields of
        :class:`~fedaudit.types.ClientUpdate` (``bytes_sent``, ...). Returns the
        recorded update, or ``None`` when it was left out (``on_invalid="warn"``).
        """
        where = f"client {client_id} in round {server_round}"
        arrays = self.checked_arrays(grads, what=f"the gradient of {where}")
        update = ClientUpdate(
            server_round=server_round, client_id=client_id, kind="gradient", arrays=arrays,
            num_samples=self._count(num_samples, "num_samples", where), local_steps=self._count(local_steps, "local_steps", where),
            lr=self._lr(lr, where), **wire,
        )
        return self.record_update(update)

    def record_weights(
        self, client_id: int, server_round: int, global_weights: Mapping[str, Any] | Sequence[Any] | None,
        local_weights: Mapping[str, Any] | Sequence[Any], *, lr: float | None = None, local_steps: int,
        num_samples: int, **wire: Any,
    ) -> ClientUpdate | None:
        """Record a FedAvg reply: the client got ``global_weights`` and sent back ``local_weights``.

        The recording stores the pseudo-gradient ``(global - local) / (lr * local_steps)``
        (:meth:`~fedaudit.types.ClientUpdate.pseudo_gradient`). ``global_weights``
        may be ``None`` when :meth:`start_round` was given them. ``lr`` defaults
        to ``config["lr"]``. Returns the recorded update, or ``None`` when it was
        left out (``on_invalid="warn"``).
        """
        where = f"client {client_id} in round {server_round}"
        if global_weights is None:
            if self._global is None or self._round != server_round:
                raise RecordingError(
                    f"The update of {where} came without the global weights it started from; pass global_weights "
                    "or give them to start_round."
                )
            glob = self._global
        else:
            glob = self.checked_arrays(global_weights, what=f"the global weights sent to {where}")
        local = self.checked_arrays(local_weights, what=f"the local weights of {where}")
        lr_value = self._lr(lr, where)
        steps = self._count(local_steps, "local_steps", where)
        update = ClientUpdate.from_weights(
            server_round=server_round, client_id=client_id, global_weights=glob, local_weights=local, lr=lr_value,
            local_steps=steps, num_samples=self._count(num_samples, "num_samples", where), **wire,
        )
        return self.record_update(update)

    def record_update(self, update: ClientUpdate) -> ClientUpdate | None:
        """Record a ready-made :class:`~fedaudit.types.ClientUpdate` (checked like the others)."""
        self._check_open()
        where = f"client {update.client_id} in round {update.server_round}"
        if update.client_id not in self._known:
            raise RecordingError(f"The update of {where} comes from a client that is not in the client table.")
        if self._round is None:
            self._check_next(update.server_round)
            self._round = update.server_round
        elif update.server_round != self._round:
            raise RecordingError(
                f"The update of {where} arrived while round {self._round} is open; end round {self._round} first "
                "(rounds are recorded in order, each once)."
            )
        arrays = self.checked_arrays(update.arrays, what=f"the update of {where}")
        for name, arr in arrays.items():
            if not np.isfinite(arr).all():
                bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
                return self._invalid("non_finite", f"The update of {where} holds {bad} NaN or infinite values in "
                                                   f"parameter {name!r}.")
        if update.client_id in self._seen:
            return self._invalid("repeated", f"Client {update.client_id} already sent an update in round "
                                             f"{update.server_round}; a client sends one update per round.")
        update = update if arrays is update.arrays else update.with_arrays(arrays)
        self._seen.add(update.client_id)
        self._pending.append(update)
        return update

    # -- checks ----------------------------------------------------------------
    def checked_arrays(self, values: Mapping[str, Any] | Sequence[Any], *, what: str) -> dict[str, np.ndarray]:
        """Arrays by recorded parameter name (from a mapping, or a list in model order), checked against the model.

        Raises :class:`~fedaudit.exceptions.RecordingError` naming the parameter
        that is missing, extra, of another shape or not numeric.
        """
        if isinstance(values, Mapping):
            given = dict(values)
            if set(given) != set(self.shapes):  # a model's own names ("layers.fc1.weight") are accepted too
                by_short = {_short_name(k): v for k, v in given.items()}
                if len(by_short) == len(given) and set(by_short) == set(self.shapes):
                    given = by_short
            missing = [n for n in self.shapes if n not in given]
            extra = sorted(set(given) - set(self.shapes))
            if missing:
                raise RecordingError(f"{what.capitalize()} lacks parameter {missing[0]!r} of the declared model"
                                     + (f" (and {len(missing) - 1} more)." if len(missing) > 1 else "."))
            if extra:
                raise RecordingError(f"{what.capitalize()} holds parameter {extra[0]!r}, which the declared model "
                                     f"does not have (it has {list(self.shapes)}).")
            ordered = [given[n] for n in self.shapes]
        else:
            ordered = list(values)
            if len(ordered) != len(self.shapes):
                raise RecordingError(f"{what.capitalize()} holds {len(ordered)} arrays; the declared model has "
                                     f"{len(self.shapes)} parameters ({list(self.shapes)}).")
        out: dict[str, np.ndarray] = {}
        for (name, shape), value in zip(self.shapes.items(), ordered, strict=True):
            arr = _as_numpy(value)
            if arr.shape != shape:
                raise RecordingError(f"{what.capitalize()} gives parameter {name!r} the shape {arr.shape}; the "
                                     f"declared model has {shape}.")
            if arr.dtype.kind not in "fiu":
                raise RecordingError(f"{what.capitalize()} gives parameter {name!r} values of type {arr.dtype}; "
                                     "expected numbers.")
            out[name] = arr
        return out

    def _lr(self, lr: float | None, where: str) -> float:
        value = self.config.get("lr") if lr is None else lr
        if value is None:
            raise RecordingError(f"The update of {where} has no learning rate: pass lr, or put 'lr' in the config.")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            raise RecordingError(f"The update of {where} has learning rate {value!r}; expected a finite float > 0.")
        return float(value)

    @staticmethod
    def _count(value: Any, name: str, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < (1 if name == "local_steps" else 0):
            low = 1 if name == "local_steps" else 0
            raise RecordingError(f"The update of {where} has {name} {value!r}; expected an integer >= {low}.")
        return int(value)

    def _check_next(self, server_round: int) -> None:
        if isinstance(server_round, bool) or not isinstance(server_round, int | np.integer) or server_round < 0:
            raise RecordingError(f"Round numbers must be integers >= 0. Got {server_round!r}.")
        if self._last_round is not None and server_round <= self._last_round:
            raise RecordingError(
                f"Round {server_round} comes after round {self._last_round} was recorded; rounds are recorded in "
                "increasing order, each once."
            )

    def _invalid(self, reason: str, message: str) -> None:
        if self.on_invalid == "raise":
            raise RecordingError(message)
        self.skipped[reason] += 1
        warnings.warn(f"{message} It is left out of {self.path} ({sum(self.skipped.values())} so far).",
                      SkippedUpdateWarning, stacklevel=3)
        return None

    def _check_open(self) -> None:
        if self._closed:
            raise RecordingError(f"The recording session of {self.path} is closed.")

    # -- end -------------------------------------------------------------------
    def finish(self, result: Mapping[str, Any] | None = None, privacy: Sequence[PrivacySpent] = ()) -> None:
        """Mark the recording complete with the run's result (done on leaving the ``with`` block).

        A round still open is an error: end it, or leave it out by raising.
        """
        self._check_open()
        if self._round is not None:
            raise RecordingError(
                f"Round {self._round} is still open ({len(self._pending)} updates); call end_round({self._round}) "
                "before the recording ends."
            )
        summary = {
            "rounds": self.rounds_ended, "updates": self.n_updates,
            "skipped_updates": dict(self.skipped), "dropped_out": {str(k): v for k, v in sorted(self.dropped.items())},
        }
        self._recorder.on_run_end(RunEnd(result={**summary, **dict(result or _EMPTY)}, privacy=privacy))
        self.close()

    def close(self) -> None:
        """Close the file; without :meth:`finish` it stays incomplete, holding every ended round."""
        if not self._closed:
            self._closed = True
            self._pending = []
            self._recorder.__exit__(None, None, None)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None and not self._closed:
            try:
                self.finish()
            finally:
                self.close()
        else:
            self.close()  # the open round is dropped; every ended round stays readable
