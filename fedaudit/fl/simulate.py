"""FedSGD and FedAvg simulation on a feature table.

Implementation based on McMahan et al., "Communication-efficient learning of
deep networks from decentralized data" (AISTATS 2017), in the setting of Feng
et al., "Attribute inference attack of speech emotion recognition in federated
learning settings" (Interspeech 2022).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from fedaudit.config import FLConfig, clients_per_round
from fedaudit.data.clients import ClientData, FederatedSplit, split_clients
from fedaudit.data.normalize import normalize_features
from fedaudit.data.table import FeatureTable
from fedaudit.exceptions import InvalidParameterError
from fedaudit.models import build_model, parameter_shapes
from fedaudit.hooks import ClientInfo, Hook, RoundEnd, RoundStart, RunEnd, RunStart
from fedaudit.metrics.basic import accuracy, class_scores, macro_f1, uar
from fedaudit.types import (
    EMOTIONS,
    CanarySource,
    ClientTrainer,
    ClientUpdate,
    DefensePieces,
    Participation,
    PrivacySpent,
)

__all__ = ["METRIC_NAMES", "RoundMetrics", "SimulationResult", "build_run_model", "pseudo_gradient", "simulate"]

logger = logging.getLogger(__name__)

# Rows per forward pass when evaluating frame inputs (sorted by length).
_EVAL_CHUNK = 128

#: Per-round metrics the simulator reports to its hooks (and the recorder stores).
METRIC_NAMES: tuple[str, ...] = ("val_uar", "val_acc", "test_uar", "test_acc", "test_f1", "train_loss", "n_clients")


@dataclass(frozen=True, kw_only=True)
class RoundMetrics:
    """Utility of the global model after one round."""

    server_round: int
    val_uar: float
    val_acc: float
    test_uar: float
    test_acc: float
    train_loss: float
    n_clients: int
    test_f1: float = float("nan")  #: macro F1 on the test speakers

    def as_mapping(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in METRIC_NAMES}


@dataclass(frozen=True, kw_only=True, eq=False)
class SimulationResult:
    """Outcome of a run: utility per round and the best round by validation UAR.

    ``test_scores`` holds the best round's accuracy, UAR, and precision, recall
    and F1 per emotion and macro-averaged on the held-out test speakers
    (:func:`fedaudit.metrics.class_scores`).
    """

    config: FLConfig
    history: list[RoundMetrics]
    best_round: int
    best_weights: dict[str, np.ndarray]
    final_weights: dict[str, np.ndarray]
    split: FederatedSplit
    privacy: tuple[PrivacySpent, ...] = ()
    defense_report: dict[str, Any] = field(default_factory=dict)
    test_scores: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> RoundMetrics:
        return self.history[self.best_round]

    def summary(self) -> dict[str, Any]:
        b = self.best
        return {
            "best_round": self.best_round,
            "val_uar": b.val_uar,
            "val_acc": b.val_acc,
            "test_uar": b.test_uar,
            "test_acc": b.test_acc,
            "test_precision": self.test_scores.get("precision_macro", float("nan")),
            "test_recall": self.test_scores.get("recall_macro", float("nan")),
            "test_f1": self.test_scores.get("f1_macro", float("nan")),
            "test_per_class": self.test_scores.get("per_class", {}),
            "rounds": len(self.history),
            "n_clients": len(self.split.clients),
            "test_speakers": len(self.split.test_speakers),
        }


def pseudo_gradient(
    global_weights: Mapping[str, np.ndarray], local_weights: Mapping[str, np.ndarray], *, lr: float, local_steps: int
) -> dict[str, np.ndarray]:
    """FedAvg pseudo-gradient ``(theta_global - theta_local) / (lr * U)``.

    ``U`` is the number of local optimiser steps (local epochs x mini-batches
    per epoch). For plain SGD it is the mean of the local mini-batch gradients.
    """
    return ClientUpdate.pseudo_gradient(global_weights, local_weights, lr=lr, local_steps=local_steps)


def build_run_model(config: FLConfig, table: FeatureTable) -> nn.Module:
    """The model of ``config`` for the features of ``table`` (its width, and its frame shape if any)."""
    return build_model(config.model, table.n_features, hidden=config.hidden, dropout=config.dropout,
                       n_classes=config.n_classes, frame_shape=table.frame_shape)


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {".".join(n.split(".")[-2:]): p for n, p in model.named_parameters()}


def _snapshot(params: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {n: p.detach().numpy().copy() for n, p in params.items()}


class _Federation:
    """State of one simulated run (model, data tensors, random generators)."""

    def __init__(
        self, config: FLConfig, table: FeatureTable, split: FederatedSplit, trainer: ClientTrainer | None = None
    ) -> None:
        self.config = config
        self.trainer = trainer
        self.split = split
        self.x = torch.from_numpy(np.ascontiguousarray(table.x, dtype=np.float32))
        self.lengths = None if table.lengths is None else np.asarray(table.lengths)
        label = {e: i for i, e in enumerate(EMOTIONS)}
        self.y = torch.from_numpy(np.array([label[e] for e in table.emotion], dtype=np.int64))
        self.model = build_run_model(config, table)
        self.params = _params(self.model)
        self.worker = build_run_model(config, table)
        self.worker_params = _params(self.worker)
        self.loss_fn = nn.CrossEntropyLoss()
        self.batch_rng = np.random.default_rng([config.seed, 2])
        self.val_rows = torch.from_numpy(np.concatenate([c.val_rows for c in split.clients]))
        self.test_rows = torch.from_numpy(split.test_rows)

    # -- client side -------------------------------------------------------
    def fedsgd_update(self, client: ClientData, server_round: int) -> tuple[ClientUpdate, float]:
        cfg = self.config
        n = min(cfg.batch_size, len(client.train_rows))
        rows = torch.from_numpy(self.batch_rng.choice(client.train_rows, size=n, replace=False))
        if self.trainer is not None:
            arrays = self.trainer.gradient(self.model, self.x[rows], self.y[rows])
            loss_value = float(self.trainer.last_loss)
        else:
            self.model.train()
            self.model.zero_grad(set_to_none=True)
            loss = self.loss_fn(self.model(self.x[rows]), self.y[rows])
            loss.backward()
            arrays = {name: p.grad.detach().numpy().copy() for name, p in self.params.items()}
            loss_value = float(loss.item())
        update = ClientUpdate(
            server_round=server_round, client_id=client.client_id, kind="gradient", arrays=arrays,
            num_samples=n, local_steps=1, lr=cfg.client_lr,
        )
        return update, loss_value

    def fedavg_update(
        self, client: ClientData, server_round: int, global_np: Mapping[str, np.ndarray]
    ) -> tuple[ClientUpdate, float]:
        cfg = self.config
        with torch.no_grad():
            for name, p in self.worker_params.items():
                p.copy_(self.params[name])
        train_rows = client.train_rows
        batches = []
        for _ in range(cfg.local_epochs):
            order = self.batch_rng.permutation(train_rows)
            for start in range(0, len(order), cfg.batch_size):
                rows = torch.from_numpy(order[start : start + cfg.batch_size])
                batches.append((self.x[rows], self.y[rows]))
        if self.trainer is not None:
            mean_loss, steps = self.trainer.train(self.worker, batches, optimizer=cfg.optimizer, lr=cfg.client_lr)
            losses = [mean_loss]
        else:
            opt_cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.SGD
            optimizer = opt_cls(self.worker.parameters(), lr=cfg.client_lr)
            self.worker.train()
            steps, losses = 0, []
            for xb, yb in batches:
                optimizer.zero_grad(set_to_none=True)
                loss = self.loss_fn(self.worker(xb), yb)
                loss.backward()
                optimizer.step()
                steps += 1
                losses.append(float(loss.item()))
        local_np = _snapshot(self.worker_params)
        arrays = pseudo_gradient(global_np, local_np, lr=cfg.client_lr, local_steps=steps)
        update = ClientUpdate(
            server_round=server_round, client_id=client.client_id, kind="pseudo_gradient", arrays=arrays,
            num_samples=len(train_rows) * cfg.local_epochs, local_steps=steps, lr=cfg.client_lr,
            global_weights=global_np, local_weights=local_np,
        )
        return update, float(np.mean(losses))

    # -- server side -------------------------------------------------------
    def apply(self, updates: Sequence[ClientUpdate]) -> None:
        """theta <- theta - sum_k w_k lr_k U_k update_k, w_k proportional to sample counts.

        For untouched FedAvg updates this is the weighted mean of the local
        weights; for FedSGD it is one SGD step on the weighted mean gradient.
        """
        total = float(sum(u.num_samples for u in updates))
        with torch.no_grad():
            for name, p in self.params.items():
                delta = np.zeros(p.shape, dtype=np.float64)
                for u in updates:
                    delta += (u.num_samples / total) * u.lr * u.local_steps * np.asarray(u.arrays[name], np.float64)
                p.sub_(torch.from_numpy(delta.astype(np.float32)))

    def apply_mean(self, mean_delta: Mapping[str, np.ndarray]) -> None:
        """theta <- theta - mean_delta, for a mean of model deltas aggregated by the server's own rule."""
        with torch.no_grad():
            for name, p in self.params.items():
                p.sub_(torch.from_numpy(np.asarray(mean_delta[name], np.float64).astype(np.float32)))

    def predict(self, rows: torch.Tensor) -> np.ndarray:
        """Predicted classes of ``rows`` by the global model (evaluation mode).

        Frame inputs go through in chunks of similar length (sorted by valid
        frames), so that a sequence model runs over few padding frames: each
        chunk is cut after its longest row. Predictions are in ``rows`` order.
        """
        self.model.eval()
        with torch.no_grad():
            if self.lengths is None or len(rows) <= _EVAL_CHUNK:
                return self.model(self.x[rows]).argmax(dim=1).numpy()
            order = np.argsort(self.lengths[rows.numpy()], kind="stable")
            pred = np.empty(len(rows), dtype=np.int64)
            for start in range(0, len(order), _EVAL_CHUNK):
                idx = order[start : start + _EVAL_CHUNK]
                pred[idx] = self.model(self.x[rows[torch.from_numpy(idx)]]).argmax(dim=1).numpy()
            return pred

    def evaluate(self, rows: torch.Tensor) -> tuple[float, float]:
        if len(rows) == 0:
            return float("nan"), float("nan")
        pred = self.predict(rows)
        truth = self.y[rows].numpy()
        return uar(truth, pred), accuracy(truth, pred)

    def evaluate_test(self) -> tuple[float, float, float, np.ndarray]:
        """UAR, accuracy and macro F1 on the test rows, and the predictions."""
        rows = self.test_rows
        if len(rows) == 0:
            return float("nan"), float("nan"), float("nan"), np.zeros(0, dtype=np.int64)
        pred = self.predict(rows)
        truth = self.y[rows].numpy()
        return uar(truth, pred), accuracy(truth, pred), macro_f1(truth, pred), pred


def _local_weights(update: ClientUpdate) -> dict[str, np.ndarray] | None:
    if update.global_weights is None:
        return None
    scale = update.lr * update.local_steps
    return {n: (update.global_weights[n] - scale * a).astype(np.float32) for n, a in update.arrays.items()}


def simulate(
    config: FLConfig,
    table: FeatureTable,
    *,
    defenses: DefensePieces | None = None,
    hooks: Sequence[Hook] = (),
    data_info: Mapping[str, Any] | None = None,
    extra_config: Mapping[str, Any] | None = None,
    num_threads: int | None = 1,
    initial_weights: Mapping[str, np.ndarray] | None = None,
    canaries: CanarySource | None = None,
) -> SimulationResult:
    """Simulate federated training of the SER model on ``table``.

    Parameters
    ----------
    config
        The run configuration (algorithm, rounds, learning rate, split, seed, ...).
    table
        Extracted features of every utterance (not yet normalised).
    defenses
        What the run's defenses plug in (built by :func:`fedaudit.defenses.build_defenses`):
        client-side transforms applied in order to each update, a local trainer
        (DP-SGD), a server aggregator (secure aggregation), and accountants
        called at the end with who took part.
    hooks
        Observers (:mod:`fedaudit.hooks`) told about the run, each round and
        each client update (after the defenses: what crosses the wire).
    data_info
        Description of the data (corpus, feature set) for the run record.
    extra_config
        Further settings to record with the configuration.
    num_threads
        Torch intra-op threads during the run (restored afterwards). The
        default 1 suits batch-20 MLP steps, too small to split across cores;
        several threads contend badly when the machine is busy. ``None``
        keeps torch's setting.
    initial_weights
        Start from these weights (``{"fc1.weight": ...}``) instead of the
        seeded He initialisation, e.g. a target run's initial global model.
    canaries
        Canary clients auditing the run's privacy (:class:`fedaudit.privacy.CanaryClients`).
        Each round their updates go through the client transforms (with a random
        generator of their own) and the source sees them beside the real updates;
        they never reach the model, the hooks or the real clients' accounting. The
        audit goes into the run result under ``"privacy_audit"``. Without canaries
        the run is unchanged.

    Returns
    -------
    SimulationResult
        Utility per round, the best round by validation UAR and its weights,
        and the privacy each DP mechanism spent.
    """
    defenses = defenses or DefensePieces()
    split = split_clients(
        table, n_folds=config.n_folds, fold=config.fold, clients_per_speaker=config.clients_per_speaker,
        val_fraction=config.val_fraction, seed=config.seed,
    )
    train_mask = np.zeros(len(table), dtype=bool)
    train_mask[split.train_mask_rows] = True
    table = normalize_features(table, method=config.normalization, train_mask=train_mask)

    previous_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            fed = _Federation(config, table, split)
            if initial_weights is not None:
                _load_weights(fed.params, initial_weights)
            if defenses.client_trainer is not None:
                fed.trainer = defenses.client_trainer(fed.model)
            return _run(config, fed, split, defenses, hooks, data_info or {}, extra_config or {}, canaries)
    finally:
        torch.set_num_threads(previous_threads)


def _run(
    config: FLConfig, fed: _Federation, split: FederatedSplit, defenses: DefensePieces,
    hooks: Sequence[Hook], data_info: Mapping[str, Any], extra_config: Mapping[str, Any],
    canaries: CanarySource | None = None,
) -> SimulationResult:
    clients = split.clients
    log: dict[str, list[int]] = {"client_id": [], "local_steps": [], "num_samples": [], "server_round": []}
    select_rng = np.random.default_rng([config.seed, 1])
    defense_rng = np.random.default_rng([config.seed, 3])
    canary_rng = np.random.default_rng([config.seed, 4])  # canary noise never shifts the real clients'
    n_select = clients_per_round(config.client_fraction, len(clients))
    transforms, aggregator = defenses.transforms, defenses.aggregator
    start = RunStart(
        config={**config.to_dict(), **extra_config},
        parameter_shapes=parameter_shapes(fed.model),
        clients=[
            ClientInfo(client_id=c.client_id, corpus=c.corpus, n_train=len(c.train_rows), n_val=len(c.val_rows),
                       attributes={"gender": c.gender, "speaker_id": c.speaker_id})
            for c in clients
        ],
        initial_weights=_snapshot(fed.params),
        data=dict(data_info),
        metric_names=METRIC_NAMES,
    )
    for hook in hooks:
        hook.on_run_start(start)

    history: list[RoundMetrics] = []
    best_round, best_uar, best_weights = 0, -math.inf, _snapshot(fed.params)
    best_pred: np.ndarray | None = None
    for server_round in range(config.rounds):
        selected = sorted(select_rng.choice(len(clients), size=n_select, replace=False).tolist())
        global_np = _snapshot(fed.params)
        for hook in hooks:
            hook.on_round_start(RoundStart(server_round=server_round, client_ids=selected, global_weights=global_np))
        updates, losses = [], []
        sent: list[ClientUpdate] = []  # after the transforms, before the aggregator: for the canaries
        for cid in selected:
            if config.algorithm == "fedsgd":
                update, loss = fed.fedsgd_update(clients[cid], server_round)
            else:
                update, loss = fed.fedavg_update(clients[cid], server_round, global_np)
            for transform in transforms:
                update = transform(update, defense_rng)
            if canaries is not None:
                sent.append(update)
            if aggregator is not None:
                update = aggregator.client_send(update)
            if update.global_weights is not None and (transforms or aggregator is not None):
                update = _with_local(update)
            updates.append(update)
            losses.append(loss)
        if canaries is not None:
            released = []
            for canary in canaries.round_canaries(server_round, sent[0]):
                for transform in transforms:
                    canary = transform(canary, canary_rng)
                released.append(canary)
            canaries.observe_round(server_round, clients=sent, canaries=released)
        if aggregator is not None:
            aggregate = aggregator.server_aggregate()
            fed.apply_mean(aggregate.mean_delta)
            if aggregate.decrypt_seconds is not None:
                updates = [replace(u, decrypt_seconds=aggregate.decrypt_seconds) for u in updates]
        else:
            fed.apply(updates)
        # Hooks hear of the round's updates once the server has them all.
        for update in updates:
            log["client_id"].append(update.client_id)
            log["local_steps"].append(update.local_steps)
            log["num_samples"].append(update.num_samples)
            log["server_round"].append(update.server_round)
            for hook in hooks:
                hook.on_client_update(update)
        val_uar, val_acc = fed.evaluate(fed.val_rows)
        test_uar, test_acc, test_f1, test_pred = fed.evaluate_test()
        metrics = RoundMetrics(
            server_round=server_round, val_uar=val_uar, val_acc=val_acc, test_uar=test_uar, test_acc=test_acc,
            test_f1=test_f1, train_loss=float(np.mean(losses)), n_clients=len(selected),
        )
        history.append(metrics)
        if val_uar > best_uar:
            best_round, best_uar, best_weights = server_round, val_uar, _snapshot(fed.params)
            best_pred = test_pred
        for hook in hooks:
            hook.on_round_end(RoundEnd(server_round=server_round, n_clients=len(selected),
                                       metrics=metrics.as_mapping()))

    participation = Participation(
        **{key: np.asarray(values, dtype=np.int64) for key, values in log.items()},
        n_train=np.array([len(c.train_rows) for c in clients]), batch_size=config.batch_size,
        rounds=config.rounds, n_selected=n_select, n_clients=len(clients),
    )
    privacy = tuple(account(participation) for account in defenses.accountants)
    report: dict[str, Any] = {}
    for summary in defenses.summaries:
        report.update(summary(participation))
    if canaries is not None:
        report["privacy_audit"] = dict(canaries.finish(defenses.accountants))
    result = SimulationResult(
        config=config, history=history, best_round=best_round, best_weights=best_weights,
        final_weights=_snapshot(fed.params), split=split, privacy=privacy, defense_report=report,
        test_scores={} if best_pred is None else class_scores(
            fed.y[fed.test_rows].numpy(), best_pred, class_names=EMOTIONS),
    )
    for hook in hooks:
        hook.on_run_end(RunEnd(result={**result.summary(), **report}, privacy=privacy))
    return result


def _load_weights(params: Mapping[str, torch.Tensor], weights: Mapping[str, np.ndarray]) -> None:
    missing = sorted(set(params) - set(weights))
    if missing:
        raise InvalidParameterError(f"The initial weights lack parameters {missing}.")
    with torch.no_grad():
        for name, p in params.items():
            w = np.asarray(weights[name], dtype=np.float32)
            if tuple(w.shape) != tuple(p.shape):
                raise InvalidParameterError(
                    f"The initial weights give {name} the shape {tuple(w.shape)}; the model has {tuple(p.shape)}."
                )
            p.copy_(torch.from_numpy(w))


def _with_local(update: ClientUpdate) -> ClientUpdate:
    return replace(update, local_weights=_local_weights(update))
