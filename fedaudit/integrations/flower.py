"""Record Flower runs: a strategy wrapper (the server's view) and a client mod (each client's view).

:class:`RecordingStrategy` wraps a Message API strategy (``flwr.serverapp.strategy``)
and :class:`LegacyRecordingStrategy` a legacy one (``flwr.server.strategy``), the
way Flower's own differential-privacy wrappers do: every method is forwarded to
the wrapped strategy. The wrapper remembers the global arrays it sends in
``configure_train`` / ``configure_fit`` and records each reply in
``aggregate_train`` / ``aggregate_fit`` before handing the replies on: what an
honest-but-curious server sees. Where it sits in a stack of wrappers decides
what it sees (``docs/flower.md``).

:class:`RecordingMod` records on the client side, for deployments where the
server only sees an aggregate (secure aggregation). Client mods run in the
clients' processes, so each update is written to a spool folder as one file,
atomically, and :func:`merge_client_recordings` turns the folder into one
recording afterwards.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Self

import numpy as np

try:
    import flwr
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord
    from flwr.common import Code, parameters_to_ndarrays
    from flwr.server.strategy import Strategy as LegacyStrategy
    from flwr.serverapp import Grid
    from flwr.serverapp.strategy import Strategy as MessageStrategy
except ImportError as err:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "fedaudit.integrations.flower needs Flower with its simulation engine: pip install 'fedaudit[flower]'"
    ) from err

from fedaudit.config import FLConfig
from fedaudit.exceptions import InvalidParameterError, RecordingError
from fedaudit.hooks import ClientInfo
from fedaudit.record.session import RecordingSession, parameter_shapes_of
from fedaudit.types import ClientUpdate

if TYPE_CHECKING:
    from flwr.common import EvaluateIns, EvaluateRes, FitIns, FitRes, Parameters, Scalar
    from flwr.server.client_manager import ClientManager
    from flwr.server.client_proxy import ClientProxy
    from flwr.serverapp.strategy import Result
    from torch import nn

__all__ = [
    "FLOWER_SETTINGS",
    "LegacyRecordingStrategy",
    "RecordingMod",
    "RecordingStrategy",
    "SecureAggregationError",
    "merge_client_recordings",
]

#: Flower run-config and train-config keys, and the fedaudit setting each one gives.
FLOWER_SETTINGS: Mapping[str, str] = MappingProxyType({
    "num-server-rounds": "rounds", "fraction-train": "client_fraction", "fraction-fit": "client_fraction",
    "batch-size": "batch_size", "local-epochs": "local_epochs", "lr": "lr", "learning-rate": "lr",
    "optimizer": "optimizer",
})
_FLCONFIG = {f.name for f in fields(FLConfig)}
#: Reply metrics a client may report, read before any configuration.
LR_KEY, STEPS_KEY, EXAMPLES_KEY = "lr", "local-steps", "num-examples"
_SPOOL_SUFFIX = ".npz"


class SecureAggregationError(RecordingError):
    """Every reply of a round carries the same arrays: the server sees only the aggregate."""


def _settings(mapping: Mapping[str, Any] | None) -> dict[str, Any]:
    """fedaudit settings (FLConfig names) found in a Flower configuration."""
    out: dict[str, Any] = {}
    for key, value in dict(mapping or {}).items():
        name = FLOWER_SETTINGS.get(key, key.replace("-", "_"))
        if name in _FLCONFIG:
            out[name] = value
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return None
    return float(value)


def _hyper(metrics: Mapping[str, Any], train_config: Mapping[str, Any], settings: Mapping[str, Any], *,
           lr: float | None, local_steps: int | None, where: str) -> tuple[float, int, int]:
    """Learning rate, local steps and sample count of one reply.

    Learning rate: the reply's ``lr`` metric, else the train config's, else the
    run's settings, else ``lr``. Local steps: the reply's ``local-steps``, else
    ``local_steps``, else ``local_epochs x ceil(num-examples / batch_size)``.
    """
    n = _number(metrics.get(EXAMPLES_KEY))
    if n is None or n < 0:
        raise RecordingError(f"The reply of {where} reports no {EXAMPLES_KEY!r} metric; Flower clients report "
                             "their number of training examples under it.")
    cfg = {**dict(settings), **_settings(train_config)}
    rate = _number(metrics.get(LR_KEY))
    rate = rate if rate is not None else _number(cfg.get("lr")) if cfg.get("lr") is not None else lr
    if rate is None:
        raise RecordingError(f"The learning rate of {where} is unknown: report an {LR_KEY!r} metric, put 'lr' in the "
                             "run or train config, or give lr= to the recorder.")
    steps = _number(metrics.get(STEPS_KEY))
    if steps is None and local_steps is not None:
        steps = float(local_steps)
    if steps is None and cfg.get("batch_size") and cfg.get("local_epochs"):
        steps = float(int(cfg["local_epochs"]) * math.ceil(n / int(cfg["batch_size"])))
    if steps is None:
        raise RecordingError(f"The local steps of {where} are unknown: report a {STEPS_KEY!r} metric, give "
                             "local_steps=, or put 'local-epochs' and 'batch-size' in the run or train config.")
    return float(rate), int(steps), int(n)


def _numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in record.items()}


def _one_record(records: Mapping[str, Any], key: str | None, what: str) -> Any:
    if key is not None and key in records:
        return records[key]
    if len(records) != 1:
        raise RecordingError(f"{what} holds {len(records)} array records {sorted(records)}; cannot tell which is "
                             "the model.")
    return next(iter(records.values()))


def _first_metrics(msg: Message) -> dict[str, Any]:
    records = msg.content.metric_records
    return dict(next(iter(records.values()))) if records else {}


def _first_config(msg: Message) -> dict[str, Any]:
    records = msg.content.config_records
    return dict(next(iter(records.values()))) if records else {}


def _chain(strategy: Any) -> list[str]:
    """Class names from this strategy inwards (``["RecordingStrategy", "DifferentialPrivacy...", "FedAvg"]``)."""
    names, seen = [], set()
    while strategy is not None and id(strategy) not in seen:
        seen.add(id(strategy))
        names.append(type(strategy).__name__)
        strategy = getattr(strategy, "strategy", None)
    return names


def _node_id(value: Any) -> int | str:
    try:
        return int(value)
    except (TypeError, ValueError):
        return str(value)


class _ServerView:
    """What both strategy wrappers share: the session, the node-to-client map, the hyper-parameters."""

    def __init__(
        self, path: str | os.PathLike[str], *, model_or_shapes: nn.Module | Mapping[str, Sequence[int]] | None,
        config: Mapping[str, Any] | None, run_config: Mapping[str, Any] | None,
        clients: int | Sequence[int | ClientInfo] | None, attributes: Mapping[int, Mapping[str, str]] | None,
        client_id_key: str | None, lr: float | None, local_steps: int | None, data: Mapping[str, Any] | None,
        session_options: Mapping[str, Any],
    ) -> None:
        self.path = Path(path)
        self.shapes = parameter_shapes_of(model_or_shapes) if model_or_shapes is not None else None
        self.user_config = dict(config or {})
        self.run_config = dict(run_config or {})
        self.clients, self.attributes, self.client_id_key = clients, attributes, client_id_key
        self.lr, self.local_steps, self.data = lr, local_steps, dict(data or {})
        self.session_options = dict(session_options)
        self.session: RecordingSession | None = None
        self.settings: dict[str, Any] = {}
        self.planned_rounds: int | None = None
        self.node_client: dict[int | str, int] = {}
        self._node_rank: dict[int | str, int] = {}
        self._sent: dict[int, tuple[dict[str, np.ndarray], dict[str, Any]]] = {}
        self.finished = False

    # -- configure -----------------------------------------------------------
    def sent(self, flower_round: int, arrays: Mapping[str, np.ndarray] | Sequence[np.ndarray],
             train_config: Mapping[str, Any], selected: Sequence[int | str], all_nodes: Iterable[Any],
             strategy: Any) -> None:
        if self.finished:
            return
        if self.session is None:
            self._start(arrays, train_config, all_nodes, strategy)
        assert self.session is not None
        server_round = flower_round - 1
        if self.session.open_round is not None:  # a round that was configured but never aggregated
            self.session.end_round(self.session.open_round)
        glob = self.session.checked_arrays(self._named(arrays), what=f"the global arrays of Flower round {flower_round}")
        self._sent = {server_round: (glob, dict(train_config))}
        known = [self.node_client[n] for n in map(_node_id, selected) if n in self.node_client]
        self.session.start_round(server_round, client_ids=known, global_weights=glob)

    def _start(self, arrays: Mapping[str, np.ndarray] | Sequence[np.ndarray], train_config: Mapping[str, Any],
               all_nodes: Iterable[Any], strategy: Any) -> None:
        if self.shapes is None:
            if not isinstance(arrays, Mapping):
                raise InvalidParameterError(
                    "Flower's legacy Parameters carry no parameter names: give model_or_shapes (the torch model, "
                    "or parameter name to shape in model order) to the recording strategy."
                )
            self.shapes = parameter_shapes_of({k: np.shape(v) for k, v in arrays.items()}, shorten=True)
        nodes = sorted(map(_node_id, all_nodes), key=lambda n: (isinstance(n, str), n))
        self._node_rank = {n: i for i, n in enumerate(nodes)}
        if self.client_id_key is None:
            self.node_client = dict(self._node_rank)
        clients = self.clients if self.clients is not None else len(nodes)
        sources: dict[str, str] = {}
        resolved: dict[str, Any] = {"algorithm": "fedavg"}
        sources["algorithm"] = "replies are weights (FedAvg-style)"
        fraction = next((getattr(s, a) for s in _walk(strategy) for a in ("fraction_train", "fraction_fit")
                         if isinstance(getattr(s, a, None), int | float)), None)
        layers = [("strategy", {"client_fraction": fraction} if fraction is not None else {}),
                  ("strategy.start", {"rounds": self.planned_rounds} if self.planned_rounds else {}),
                  ("train config", _settings(train_config)), ("run config", _settings(self.run_config)),
                  ("given", dict(self.user_config))]
        for source, values in layers:
            for key, value in values.items():
                resolved[key] = value
                sources[key] = source
        if self.lr is not None and "lr" not in resolved:
            resolved["lr"], sources["lr"] = self.lr, "given"
        self.settings = {k: v for k, v in resolved.items() if k in _FLCONFIG}
        if self.settings.get("rounds") is not None:
            self.planned_rounds = int(self.settings["rounds"])
        config = {
            **resolved, "sources": sources,
            "flower": {"flwr_version": flwr.__version__, "strategy_chain": _chain(strategy), "view": "server",
                       "client_id": self.client_id_key or "rank of the node id", "n_nodes": len(nodes)},
        }
        self.session = RecordingSession(self.path, self.shapes, config=config, clients=clients,
                                        attributes=self.attributes, data=self.data, **self.session_options)

    def _named(self, arrays: Mapping[str, np.ndarray] | Sequence[np.ndarray]) -> Mapping[str, Any] | list[Any]:
        if isinstance(arrays, Mapping):
            assert self.shapes is not None
            names = set(self.shapes)
            if set(arrays) == names or {".".join(k.split(".")[-2:]) for k in arrays} == names:
                return arrays
            return list(arrays.values())  # positional (e.g. keys "0", "1", ...)
        return list(arrays)

    # -- aggregate -------------------------------------------------------------
    def received(self, flower_round: int, replies: Sequence[tuple[Any, Any, Mapping[str, Any]]]) -> None:
        """Record one round's replies: ``(node id, arrays, metrics)`` each."""
        if self.finished or self.session is None:
            return
        server_round = flower_round - 1
        if server_round not in self._sent:
            raise RecordingError(f"Flower round {flower_round} is aggregated, but the recorder never saw it "
                                 "configured; wrap the strategy before the run starts.")
        glob, train_config = self._sent.pop(server_round)
        session = self.session
        local = [session.checked_arrays(self._named(arrays), what=f"the reply of node {node} in Flower round {flower_round}")
                 for node, arrays, _ in replies]
        if len(local) >= 2 and all(all(np.array_equal(a[n], local[0][n]) for n in a) for a in local[1:]):
            session.close()
            self.finished = True
            raise SecureAggregationError(
                f"All {len(local)} replies of Flower round {flower_round} carry identical arrays: the server sees "
                "only their aggregate (Flower's SecAgg+ workflow writes it into every reply before the strategy "
                f"runs), so recording them would store {len(local)} copies of the aggregate as client updates. "
                f"Nothing of this round was written to {self.path}. Record on the clients instead: "
                "fedaudit.integrations.flower.RecordingMod (docs/flower.md)."
            )
        ids = [self._client_of(_node_id(node), metrics, flower_round) for node, _, metrics in replies]
        for k in sorted(range(len(ids)), key=ids.__getitem__):  # client id order, as fedaudit's simulator
            (node, _, metrics), weights, cid = replies[k], local[k], ids[k]
            where = f"client {cid} (node {node}) in Flower round {flower_round}"
            lr, steps, n = _hyper(metrics, train_config, self.settings, lr=self.lr, local_steps=self.local_steps,
                                  where=where)
            session.record_weights(cid, server_round, glob, weights, lr=lr, local_steps=steps, num_samples=n)
        session.end_round(server_round)
        if self.planned_rounds is not None and flower_round >= self.planned_rounds:
            self.close(finish=True)

    def _client_of(self, node: int | str, metrics: Mapping[str, Any], flower_round: int) -> int:
        key = self.client_id_key
        if key is not None and key in metrics:
            cid = int(metrics[key])
            self.node_client[node] = cid
            return cid
        if node in self.node_client:
            return self.node_client[node]
        if key is not None:
            raise RecordingError(f"The reply of node {node} in Flower round {flower_round} lacks the {key!r} metric "
                                 "that names its client; report it from the ClientApp, or use client_id_key=None "
                                 "to number clients by node id.")
        raise RecordingError(f"Node {node} replied in Flower round {flower_round} but was not connected when the run "
                             "started; the recording's client table has no row for it.")

    def close(self, *, finish: bool) -> None:
        if self.session is not None and not self.finished:
            self.finished = True
            if finish:
                self.session.finish(result={"node_to_client": {str(k): v for k, v in self.node_client.items()}})
            else:
                self.session.close()


def _walk(strategy: Any) -> list[Any]:
    out, seen = [], set()
    while strategy is not None and id(strategy) not in seen:
        seen.add(id(strategy))
        out.append(strategy)
        strategy = getattr(strategy, "strategy", None)
    return out


class _Forwarding:
    """Attribute access falls through to the wrapped strategy (``weighted_by_key``, ``fraction_train``, ...)."""

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("strategy")
        if inner is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(inner, name)

    def _wrap(self, strategy: Any, view: _ServerView) -> None:
        self.strategy = strategy
        self._view = view

    def __repr__(self) -> str:
        return f"Recording Strategy Wrapper ({self._view.path})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close(finish=exc_type is None)

    def close(self, *, finish: bool = True) -> None:
        """End the recording (complete with ``finish``); it also ends by itself after the planned last round."""
        self._view.close(finish=finish)

    @property
    def session(self) -> RecordingSession | None:
        """The recording session, once the first round was configured."""
        return self._view.session


_WRAPPER_DOC = """
    Parameters
    ----------
    strategy
        The strategy to record (it may itself be a wrapper).
    path
        Output ``.h5``; must not exist unless ``overwrite``.
    model_or_shapes
        The torch model or parameter name to shape; by default the names and
        shapes of the first global arrays.
    config
        Hyper-parameters of the run (FLConfig names: ``lr``, ``local_epochs``,
        ``batch_size``, ``hidden``, ``normalization``, ...). They win over those
        read from the Flower run config, the train config and the strategy.
    run_config
        The Flower run config (``context.run_config``), read for
        ``num-server-rounds``, ``fraction-train``, ``local-epochs``,
        ``batch-size``, ``lr``.
    clients
        The client table (number, ids or :class:`~fedaudit.hooks.ClientInfo`);
        by default one client per node connected when the run starts.
    attributes
        Client id to ground truth, stored as evaluation-only.
    client_id_key
        Reply metric that names the client (``"partition-id"``); ``None``
        numbers clients by the rank of their node id.
    lr, local_steps
        Used when neither the replies nor the configuration give them.
    data
        Description of the data (``feature_set``, ``n_features``).
    overwrite, on_invalid
        As for :class:`~fedaudit.record.session.RecordingSession`.
    background
        Write from a child process. Off by default: the server runs in a
        process with gRPC and Ray threads, which a forked child must not
        inherit; a round's updates are written in the server's thread instead.
"""


class RecordingStrategy(_Forwarding, MessageStrategy):
    """Record what the server receives in a Flower run of a Message API strategy.

    Built like ``DifferentialPrivacyServerSideFixedClipping``: it wraps a
    strategy and forwards every method. Each reply is recorded as the
    pseudo-gradient ``(global - local) / (lr * local_steps)`` before the
    wrapped strategy aggregates it. Flower round ``r`` is recorded as round
    ``r - 1`` (fedaudit counts from 0). The recording ends when the planned
    last round is recorded, when :meth:`start` returns, or on :meth:`close`.
    """ + _WRAPPER_DOC + """
    Raises
    ------
    SecureAggregationError
        If every reply of a round carries the same arrays (SecAgg+).

    Examples
    --------
    >>> strategy = RecordingStrategy(FedAvg(fraction_train=0.5), "run.h5",
    ...                              config={"lr": 0.01, "local_epochs": 1})  # doctest: +SKIP
    >>> strategy.start(grid=grid, initial_arrays=arrays, num_rounds=20)  # doctest: +SKIP
    """

    def __init__(
        self, strategy: MessageStrategy, path: str | os.PathLike[str], *,
        model_or_shapes: nn.Module | Mapping[str, Sequence[int]] | None = None, config: Mapping[str, Any] | None = None,
        run_config: Mapping[str, Any] | None = None, clients: int | Sequence[int | ClientInfo] | None = None,
        attributes: Mapping[int, Mapping[str, str]] | None = None, client_id_key: str | None = None,
        lr: float | None = None, local_steps: int | None = None, data: Mapping[str, Any] | None = None,
        overwrite: bool = False, on_invalid: str = "raise", background: bool = False,
    ) -> None:
        super().__init__()
        self._wrap(strategy, _ServerView(
            path, model_or_shapes=model_or_shapes, config=config, run_config=run_config, clients=clients,
            attributes=attributes, client_id_key=client_id_key, lr=lr, local_steps=local_steps, data=data,
            session_options={"overwrite": overwrite, "on_invalid": on_invalid, "background": background},
        ))

    def summary(self) -> None:
        self.strategy.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        train_config = {**dict(config), **(_first_config(messages[0]) if messages else {})}
        self._view.sent(server_round, _numpy(arrays), train_config, [m.metadata.dst_node_id for m in messages],
                        grid.get_node_ids(), self)
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        key = getattr(self, "arrayrecord_key", None)
        ok = [r for r in replies if not r.has_error() and r.content.array_records]
        self._view.received(server_round, [
            (r.metadata.src_node_id, _numpy(_one_record(r.content.array_records, key, "A reply")), _first_metrics(r))
            for r in ok
        ])
        return self.strategy.aggregate_train(server_round, replies)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3, *args: Any, **kwargs: Any) -> Result:
        """Run the strategy (Flower's loop, calling this wrapper), then end the recording."""
        if self._view.session is None:
            self._view.planned_rounds = num_rounds
        try:
            result = super().start(grid, initial_arrays, num_rounds, *args, **kwargs)
        except BaseException:
            self.close(finish=False)
            raise
        self.close(finish=True)
        return result


class LegacyRecordingStrategy(_Forwarding, LegacyStrategy):
    """Record what the server receives in a Flower run of a legacy strategy (``configure_fit`` / ``aggregate_fit``).

    Legacy parameters carry no names, so ``model_or_shapes`` is required. The
    recording ends when the planned last round (``rounds`` in ``config``, or
    ``num-server-rounds`` in ``run_config``) is recorded, or on :meth:`close`
    (use it as a context manager).
    """ + _WRAPPER_DOC + """
    Raises
    ------
    SecureAggregationError
        If every reply of a round carries the same parameters: Flower's
        SecAgg+ workflow does that before calling ``aggregate_fit``.
    """

    def __init__(
        self, strategy: LegacyStrategy, path: str | os.PathLike[str], *,
        model_or_shapes: nn.Module | Mapping[str, Sequence[int]], config: Mapping[str, Any] | None = None,
        run_config: Mapping[str, Any] | None = None, clients: int | Sequence[int | ClientInfo] | None = None,
        attributes: Mapping[int, Mapping[str, str]] | None = None, client_id_key: str | None = None,
        lr: float | None = None, local_steps: int | None = None, data: Mapping[str, Any] | None = None,
        overwrite: bool = False, on_invalid: str = "raise", background: bool = False,
    ) -> None:
        super().__init__()
        self._wrap(strategy, _ServerView(
            path, model_or_shapes=model_or_shapes, config=config, run_config=run_config, clients=clients,
            attributes=attributes, client_id_key=client_id_key, lr=lr, local_steps=local_steps, data=data,
            session_options={"overwrite": overwrite, "on_invalid": on_invalid, "background": background},
        ))

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return self.strategy.initialize_parameters(client_manager)

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        instructions = self.strategy.configure_fit(server_round, parameters, client_manager)
        train_config = dict(instructions[0][1].config) if instructions else {}
        self._view.sent(server_round, parameters_to_ndarrays(parameters), train_config,
                        [proxy.cid for proxy, _ in instructions], client_manager.all().keys(), self)
        return instructions

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        ok = [(proxy, res) for proxy, res in results if res.status.code == Code.OK]
        self._view.received(server_round, [
            (proxy.cid, parameters_to_ndarrays(res.parameters), {**dict(res.metrics), EXAMPLES_KEY: res.num_examples})
            for proxy, res in ok
        ])
        return self.strategy.aggregate_fit(server_round, results, failures)

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        return self.strategy.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(
        self, server_round: int, results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        return self.strategy.aggregate_evaluate(server_round, results, failures)

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        return self.strategy.evaluate(server_round, parameters)


# -- client side -------------------------------------------------------------------
class RecordingMod:
    """Client mod ``(msg, context, call_next)`` that records each training reply of its client.

    It sees the arrays the client received and the arrays it sends back, at
    its place in the client's mod stack (``docs/flower.md``: before or after
    ``LocalDpMod``). Each update is written as one spool file
    ``round<r>_client<c>.npz`` into ``spool_dir``, to a temporary name then
    renamed, so concurrent clients (simulation actors, several machines on a
    shared folder) never interleave and a killed client never leaves half a
    file; :func:`merge_client_recordings` makes one recording of the folder.

    Parameters
    ----------
    spool_dir
        Folder of the spool files (created).
    lr, local_steps
        Used when neither the reply metrics (``lr``, ``local-steps``) nor the
        train config give them.
    local_epochs, batch_size
        Compute ``local_steps = local_epochs x ceil(num-examples / batch_size)``
        when nothing gives the steps.
    client_id_key
        Node config key that names the client (``"partition-id"`` in a
        simulation); the node id when absent.
    """

    def __init__(
        self, spool_dir: str | os.PathLike[str], *, lr: float | None = None, local_steps: int | None = None,
        local_epochs: int | None = None, batch_size: int | None = None, client_id_key: str = "partition-id",
    ) -> None:
        self.spool_dir = Path(spool_dir)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.lr, self.local_steps, self.client_id_key = lr, local_steps, client_id_key
        self.settings = {k: v for k, v in (("local_epochs", local_epochs), ("batch_size", batch_size), ("lr", lr))
                         if v is not None}

    def __call__(self, msg: Message, context: Context, call_next: Any) -> Message:
        if msg.metadata.message_type != MessageType.TRAIN or len(msg.content.array_records) != 1:
            return call_next(msg, context)
        key, record = next(iter(msg.content.array_records.items()))
        glob = _numpy(record)
        train_config = _first_config(msg)
        reply = call_next(msg, context)
        if reply.has_error() or not reply.content.array_records:
            return reply
        local = _numpy(_one_record(reply.content.array_records, key, "The reply"))
        metrics = _first_metrics(reply)
        cid = int(context.node_config.get(self.client_id_key, context.node_id))
        flower_round = int(train_config.get("server-round", msg.metadata.group_id or 0))
        where = f"client {cid} in Flower round {flower_round}"
        lr, steps, n = _hyper(metrics, train_config, self.settings, lr=self.lr, local_steps=self.local_steps, where=where)
        arrays = ClientUpdate.pseudo_gradient(glob, local, lr=lr, local_steps=steps)
        meta = {"flower_round": flower_round, "client_id": cid, "node_id": int(context.node_id), "lr": lr,
                "local_steps": steps, "num_samples": n, "names": list(arrays), "train_config": _jsonable(train_config)}
        _write_spool(self.spool_dir / f"round{flower_round:06d}_client{cid:06d}{_SPOOL_SUFFIX}", arrays, meta)
        return reply


def _jsonable(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if isinstance(v, str | int | float | bool)}


def _write_spool(path: Path, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, meta=np.frombuffer(json.dumps(dict(meta)).encode(), dtype=np.uint8),
                     **{f"a{i}": np.asarray(a, dtype=np.float32) for i, a in enumerate(arrays.values())})
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # atomic: readers see the whole file or none
    finally:
        tmp.unlink(missing_ok=True)


def _read_spool(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(bytes(f["meta"]).decode())
            arrays = {name: f[f"a{i}"] for i, name in enumerate(meta["names"])}
    except Exception as err:  # noqa: BLE001 - any unreadable spool file gets the same sentence
        raise RecordingError(f"The spool file {path} is unreadable ({err}); delete it or record that round again.") from None
    return meta, arrays


def merge_client_recordings(
    spool_dirs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
    model_or_shapes: nn.Module | Mapping[str, Sequence[int]] | None = None, config: Mapping[str, Any] | None = None,
    clients: int | Sequence[int | ClientInfo] | None = None, attributes: Mapping[int, Mapping[str, str]] | None = None,
    data: Mapping[str, Any] | None = None, overwrite: bool = False, on_invalid: str = "raise",
) -> Path:
    """Make one recording of the spool files :class:`RecordingMod` wrote (one folder, or one per machine).

    Updates are recorded round by round (Flower round ``r`` as round ``r - 1``),
    clients in id order, through a :class:`~fedaudit.record.session.RecordingSession`,
    so they are checked like any other. ``clients`` defaults to the ids found.

    Returns
    -------
    Path
        The recording.

    Raises
    ------
    RecordingError
        If the folders hold no spool file, or one is unreadable or inconsistent.
    """
    dirs = [spool_dirs] if isinstance(spool_dirs, str | os.PathLike) else list(spool_dirs)
    files = sorted(p for d in dirs for p in Path(d).glob(f"round*_client*{_SPOOL_SUFFIX}"))
    if not files:
        raise RecordingError(f"No spool files of RecordingMod in {', '.join(map(str, dirs))}.")
    entries = []
    for p in files:
        meta, arrays = _read_spool(p)
        entries.append((int(meta["flower_round"]), int(meta["client_id"]), p, meta))
    entries.sort(key=lambda e: (e[0], e[1]))
    shapes = model_or_shapes
    if shapes is None:
        _, first = _read_spool(entries[0][2])
        shapes = parameter_shapes_of({n: a.shape for n, a in first.items()}, shorten=True)
    ids = sorted({e[1] for e in entries})
    first_meta = entries[0][3]
    settings = {"algorithm": "fedavg", **_settings(first_meta.get("train_config")), **dict(config or {})}
    settings.setdefault("lr", first_meta["lr"])
    settings["flower"] = {"flwr_version": flwr.__version__, "view": "client (RecordingMod)",
                          "spool_files": len(entries)}
    with RecordingSession(out, shapes, config=settings, clients=clients if clients is not None else ids,
                          attributes=attributes, data=data, overwrite=overwrite, on_invalid=on_invalid) as session:
        current: int | None = None
        for flower_round, cid, path, meta in entries:
            if current is not None and flower_round != current:
                session.end_round(current - 1)
            current = flower_round
            _, arrays = _read_spool(path)
            session.record_update(ClientUpdate(
                server_round=flower_round - 1, client_id=cid, kind="pseudo_gradient", arrays=arrays,
                num_samples=int(meta["num_samples"]), local_steps=int(meta["local_steps"]), lr=float(meta["lr"]),
            ))
        if current is not None:
            session.end_round(current - 1)
    return Path(out)
