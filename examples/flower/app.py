"""Train the SER MLP on the demo corpus with Flower's simulation engine, and record every update.

    python examples/flower/app.py --clients 10 --rounds 20 --out recorded_updates/flower.h5 \
        --client-out recorded_updates/flower_clients.h5

The server side is Flower's ``FedAvg`` wrapped in fedaudit's ``RecordingStrategy``
(what the server receives goes to ``--out``); with ``--client-out`` every client
also runs fedaudit's ``RecordingMod`` (what each client sends, merged into one
file at the end). Audit the recordings with the unchanged commands:

    fedaudit inspect recorded_updates/flower.h5
    fedaudit shadow --like recorded_updates/flower.h5 --runs 3 --out-dir recorded_updates/shadow_flower
    fedaudit attack recorded_updates/flower.h5 --attack stats --shadow recorded_updates/shadow_flower
    fedaudit attack recorded_updates/flower.h5 --attack inversion --public-corpus demo-shadow

Needs ``pip install 'fedaudit[flower]'``. Set ``FLWR_TELEMETRY_ENABLED=0`` on a
machine without network.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@dataclass(frozen=True, kw_only=True)
class Setup:
    """One federated setup, in fedaudit's own terms (FLConfig fields), so `fedaudit shadow` can mirror it."""

    clients: int = 10
    rounds: int = 20
    client_fraction: float = 1.0
    batch_size: int = 20
    lr: float = 0.0005
    local_epochs: int = 1
    optimizer: str = "adam"
    hidden: tuple[int, ...] = (256, 128)
    dropout: tuple[float, ...] = (0.2, 0.0)
    n_folds: int = 5
    fold: int = 0
    val_fraction: float = 0.2
    seed: int = 0

    def flower_run_config(self) -> dict[str, Any]:
        """What a Flower app keeps in its run config (``[tool.flwr.app.config]``)."""
        return {"num-server-rounds": self.rounds, "fraction-train": self.client_fraction,
                "local-epochs": self.local_epochs, "batch-size": self.batch_size, "lr": self.lr}

    def fedaudit_config(self) -> dict[str, Any]:
        """The settings Flower's run config does not hold (the model, the data split, the optimiser)."""
        return {"model": "mlp", "hidden": list(self.hidden), "dropout": list(self.dropout), "n_classes": 4,
                "optimizer": self.optimizer, "normalization": "global", "clients_per_speaker": 1,
                "n_folds": self.n_folds, "fold": self.fold, "val_fraction": self.val_fraction, "seed": self.seed}


@functools.lru_cache(maxsize=4)
def federation(setup: Setup) -> dict[str, Any]:
    """The demo corpus split as fedaudit splits it, normalised as fedaudit does, cut to ``setup.clients`` clients.

    Clients alternate female and male speakers of the training folds; client
    ``i`` is Flower's partition ``i``. Features are standardised with the
    statistics of the kept clients' utterances (``normalization = "global"``).
    """
    from fedaudit.data import load_demo, normalize_features, split_clients
    from fedaudit.types import EMOTIONS

    table = load_demo("demo-private")
    split = split_clients(table, n_folds=setup.n_folds, fold=setup.fold, val_fraction=setup.val_fraction,
                          seed=setup.seed)
    by_gender = [[c for c in split.clients if c.gender == g] for g in ("F", "M")]
    order = [c for pair in zip(*by_gender, strict=False) for c in pair]
    if setup.clients > len(order):
        raise SystemExit(f"The demo corpus gives {len(order)} gender-balanced clients; asked for {setup.clients}.")
    kept = order[: setup.clients]
    rows = np.concatenate([np.concatenate([c.train_rows, c.val_rows]) for c in kept])
    mask = np.zeros(len(table), dtype=bool)
    mask[rows] = True
    table = normalize_features(table, method="global", train_mask=mask)
    label = {e: i for i, e in enumerate(EMOTIONS)}
    return {
        "x": np.ascontiguousarray(table.x, dtype=np.float32),
        "y": np.array([label[e] for e in table.emotion], dtype=np.int64),
        "clients": kept, "n_features": table.n_features,
    }


def build_model(setup: Setup, n_features: int) -> Any:
    import torch

    from fedaudit.models import MLP

    torch.manual_seed(setup.seed)
    return MLP(n_features, hidden=setup.hidden, dropout=setup.dropout, n_classes=4)


def client_app(setup: Setup, *, mods: Sequence[Any] = ()) -> Any:
    """A ClientApp training the MLP locally, as fedaudit's simulator does (epochs of shuffled mini-batches)."""
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp(mods=list(mods))

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        import torch

        torch.set_num_threads(1)
        fed = federation(setup)
        pid = int(context.node_config["partition-id"])
        client = fed["clients"][pid]
        config = msg.content["config"]
        flower_round = int(config["server-round"])
        model = build_model(setup, fed["n_features"])
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        opt_cls = torch.optim.Adam if setup.optimizer == "adam" else torch.optim.SGD
        optimizer = opt_cls(model.parameters(), lr=float(config["lr"]))
        rng = np.random.default_rng([setup.seed, pid, flower_round])
        x, y = torch.from_numpy(fed["x"]), torch.from_numpy(fed["y"])
        model.train()
        steps, losses = 0, []
        for _ in range(int(config["local-epochs"])):
            order = rng.permutation(client.train_rows)
            for start in range(0, len(order), int(config["batch-size"])):
                rows = torch.from_numpy(order[start : start + int(config["batch-size"])])
                optimizer.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(model(x[rows]), y[rows])
                loss.backward()
                optimizer.step()
                steps += 1
                losses.append(float(loss.item()))
        metrics = MetricRecord({"num-examples": len(client.train_rows), "local-steps": steps,
                                "lr": float(config["lr"]), "partition-id": pid, "train-loss": float(np.mean(losses))})
        return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}), reply_to=msg)

    return app


def recording_options(setup: Setup) -> dict[str, Any]:
    """What the recorder is told besides Flower's own configuration: settings, clients and their ground truth."""
    from fedaudit.hooks import ClientInfo

    fed = federation(setup)
    clients = [ClientInfo(client_id=i, corpus=c.corpus, n_train=len(c.train_rows), n_val=len(c.val_rows),
                          attributes={"gender": c.gender, "speaker_id": c.speaker_id})
               for i, c in enumerate(fed["clients"])]
    data = {"feature_set": "emobase", "n_features": fed["n_features"], "corpora": ["demo-private"],
            "n_speakers": len(clients), "role": "flower example"}
    return {"config": setup.fedaudit_config(), "clients": clients, "data": data}


def server_app(setup: Setup, *, out: Path | None, wrap: Any = None) -> Any:
    """A ServerApp running FedAvg for ``setup.rounds`` rounds, recorded to ``out`` (unrecorded when ``None``).

    ``wrap(strategy)`` may add further wrappers (Flower's DP wrappers) around the recorder.
    """
    from flwr.app import ArrayRecord, ConfigRecord, Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

    from fedaudit.integrations.flower import RecordingStrategy

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        fed = federation(setup)
        model = build_model(setup, fed["n_features"])
        strategy: Any = FedAvg(fraction_train=setup.client_fraction, fraction_evaluate=0.0,
                               min_available_nodes=setup.clients, min_train_nodes=1)
        run_config = {**setup.flower_run_config(), **dict(context.run_config)}
        if out is not None:
            strategy = RecordingStrategy(strategy, out, run_config=run_config, client_id_key="partition-id",
                                         **recording_options(setup))
        if wrap is not None:
            strategy = wrap(strategy)
        train_config = ConfigRecord({"lr": setup.lr, "local-epochs": setup.local_epochs,
                                     "batch-size": setup.batch_size})
        strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=setup.rounds,
                       train_config=train_config)

    return app


def simulate(server: Any, client: Any, n_clients: int, *, num_cpus: int | None = None) -> None:
    """Run Flower's simulation engine (Ray), one CPU per client actor, on ``num_cpus`` CPUs (default: all)."""
    from flwr.simulation import run_simulation

    backend: dict[str, Any] = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                               "init_args": {"include_dashboard": False}}
    if num_cpus is not None:
        backend["init_args"]["num_cpus"] = num_cpus
    run_simulation(server_app=server, client_app=client, num_supernodes=n_clients, backend_config=backend)


def run(setup: Setup, *, out: Path, client_out: Path | None = None, num_cpus: int | None = None) -> list[Path]:
    """Train and record ``setup``; returns the recordings written."""
    from fedaudit.integrations.flower import RecordingMod, merge_client_recordings

    spool = Path(tempfile.mkdtemp(prefix="fedaudit-spool-")) if client_out is not None else None
    mods = [RecordingMod(spool)] if spool is not None else []
    try:
        simulate(server_app(setup, out=out), client_app(setup, mods=mods), setup.clients, num_cpus=num_cpus)
        written = [out]
        if spool is not None and client_out is not None:
            options = recording_options(setup)
            merge_client_recordings(spool, client_out, config={**options["config"], "rounds": setup.rounds,
                                                               "client_fraction": setup.client_fraction},
                                    clients=options["clients"], data=options["data"])
            written.append(client_out)
    finally:
        if spool is not None:
            shutil.rmtree(spool, ignore_errors=True)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=10, help="Flower clients (supernodes), at most 32")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--fraction", type=float, default=1.0, help="share of clients trained each round")
    parser.add_argument("--lr", type=float, default=0.0005)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="recording of what the server receives")
    parser.add_argument("--client-out", type=Path, help="also record on the clients (RecordingMod) into this file")
    parser.add_argument("--num-cpus", type=int, help="CPUs Ray may use (default: all)")
    args = parser.parse_args(argv)
    dropout = (0.2, *([0.0] * (len(args.hidden) - 1)))
    setup = Setup(clients=args.clients, rounds=args.rounds, client_fraction=args.fraction, lr=args.lr,
                  local_epochs=args.local_epochs, batch_size=args.batch_size, hidden=tuple(args.hidden),
                  dropout=dropout, seed=args.seed)
    for path in run(setup, out=args.out, client_out=args.client_out, num_cpus=args.num_cpus):
        print(f"recorded {path}")
    return 0


if __name__ == "__main__":
    # Ray's workers unpickle the ClientApp by reference to this module: make it importable there as `app`.
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join([here, *filter(None, [os.environ.get("PYTHONPATH")])])
    import app

    sys.exit(app.main())
