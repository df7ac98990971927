"""Flower apps of the integration tests that the example app does not cover (SecAgg+, legacy strategies).

Ray's workers import this module by name, so the tests put the repository on their PYTHONPATH.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: The model of the SecAgg+ run: one small linear layer.
SHAPES = {"fc1.weight": (4, 3), "fc1.bias": (4,)}


def secagg_apps(out: Path, *, n_clients: int, errors: list[BaseException]) -> tuple[Any, Any]:
    """A legacy FedAvg under Flower's SecAgg+ workflow, recorded by LegacyRecordingStrategy."""
    from flwr.client import NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.clientapp import ClientApp
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

    from fedaudit.integrations.flower import LegacyRecordingStrategy

    class Client(NumPyClient):
        def __init__(self, pid: int) -> None:
            self.pid = pid

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
            return [p - 0.01 * (self.pid + 1) for p in parameters], 10, {}

    def client_fn(context: Context) -> Any:
        return Client(int(context.node_config["partition-id"])).to_client()

    client = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
    server = ServerApp()

    @server.main()
    def main(grid: Any, context: Context) -> None:
        strategy = LegacyRecordingStrategy(
            FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_available_clients=n_clients, min_fit_clients=n_clients,
                   initial_parameters=ndarrays_to_parameters([np.zeros(s, np.float32) for s in SHAPES.values()])),
            out, model_or_shapes=SHAPES, lr=0.1, local_steps=1, config={"rounds": 1},
        )
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=1), strategy=strategy)
        workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(num_shares=n_clients, reconstruction_threshold=2))
        try:
            workflow(grid, legacy)
        except BaseException as err:  # the test reads the error; Flower would log it and go on
            errors.append(err)
            raise

    return server, client
