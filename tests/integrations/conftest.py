"""Real Flower simulations shared by the integration tests.

Ray takes about 20 s to start, so each simulation runs once per test session:
under pytest-xdist the first worker that needs it runs it behind a file lock
and the others read its recordings.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flwr", reason="needs pip install 'fedaudit[flower]'")
from filelock import FileLock, Timeout  # noqa: E402  (Ray depends on it)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "flower"

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray's workers unpickle the apps by module name: the example as `app`, the test apps from the repository.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(EXAMPLE), str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
)


def example_app() -> Any:
    """The example Flower app, imported as Ray's workers import it (module ``app``)."""
    if str(EXAMPLE) not in sys.path:
        sys.path.insert(0, str(EXAMPLE))
    return importlib.import_module("app")


def shared(
    tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], dict[str, Any]], *, wait: bool = True
) -> dict[str, Any] | None:
    """Run ``make(folder)`` once per test session (across xdist workers); returns its JSON-ready result.

    With ``wait=False``, returns ``None`` at once when another worker is running it.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder = root / f"shared-{name}"
    done = folder / "result.json"
    try:
        with FileLock(str(root / f"{name}.lock"), timeout=-1 if wait else 0):
            if not done.exists():
                folder.mkdir(exist_ok=True)
                result = make(folder)
                done.write_text(json.dumps(result))
    except Timeout:
        return None
    return json.loads(done.read_text())


def flower_run_make(folder: Path) -> dict[str, Any]:
    """The example app, 10 clients x 20 rounds, recorded by the strategy wrapper and by the client mod."""
    server, client = folder / "server.h5", folder / "clients.h5"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE / "app.py"), "--clients", "10", "--rounds", "20", "--hidden", "64", "32",
         "--out", str(server), "--client-out", str(client), "--num-cpus", "1"],
        capture_output=True, text=True, timeout=600, env=os.environ.copy(),
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return {"server": str(server), "clients": str(client)}


SERVER_CLIP = 0.05  # bound on the norm of a client's model delta (global - local), server side
LOCAL_CLIP, EPSILON, DELTA = 0.08, 10.0, 1e-5  # LocalDpMod: clip the delta, then add Gaussian noise


def stacked_run(folder: Path) -> dict[str, Any]:
    from flwr.clientapp.mod import LocalDpMod
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

    from fedaudit.integrations.flower import RecordingMod, RecordingStrategy, merge_client_recordings

    example = example_app()
    setup = example.Setup(clients=4, rounds=3, hidden=(16,), dropout=(0.0,))
    options = example.recording_options(setup)
    paths = {k: folder / f"{k}.h5" for k in ("server_inside", "server_outside", "mod_inner", "mod_outer")}

    def wrap(inner: Any) -> Any:  # RecordingStrategy(DP(RecordingStrategy(FedAvg)))
        dp = DifferentialPrivacyServerSideFixedClipping(inner, noise_multiplier=0.5, clipping_norm=SERVER_CLIP,
                                                        num_sampled_clients=setup.clients)
        return RecordingStrategy(dp, paths["server_outside"], run_config=setup.flower_run_config(),
                                 client_id_key="partition-id", **options)

    spools = {"mod_outer": folder / "spool_outer", "mod_inner": folder / "spool_inner"}
    mods = [RecordingMod(spools["mod_outer"]), LocalDpMod(LOCAL_CLIP, LOCAL_CLIP, EPSILON, DELTA),
            RecordingMod(spools["mod_inner"])]
    example.simulate(example.server_app(setup, out=paths["server_inside"], wrap=wrap),
                     example.client_app(setup, mods=mods), setup.clients, num_cpus=1)
    for key, spool in spools.items():
        merge_client_recordings(spool, paths[key], config=options["config"], clients=options["clients"])
    return {k: str(v) for k, v in paths.items()}


def secagg_run(folder: Path) -> dict[str, Any]:
    from flwr.simulation import run_simulation

    from tests.integrations._apps import secagg_apps

    errors: list[BaseException] = []
    server, client = secagg_apps(folder / "secagg.h5", n_clients=3, errors=errors)
    try:
        run_simulation(server_app=server, client_app=client, num_supernodes=3,
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                       "init_args": {"num_cpus": 1, "include_dashboard": False}})
    except Exception:  # noqa: BLE001, S110 - the server's error is read from `errors`
        pass
    return {"path": str(folder / "secagg.h5"), "errors": [(type(e).__name__, str(e)) for e in errors]}



#: Every shared simulation, in the order a free worker starts them.
SIMULATIONS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "flower-run": flower_run_make, "flower-stacked": stacked_run, "flower-secagg": secagg_run,
}


@pytest.fixture(scope="session", autouse=True)
def _start_simulations(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Each xdist worker runs the simulations no other worker has started, so they run side by side."""
    for name, make in SIMULATIONS.items():
        shared(tmp_path_factory, name, make, wait=False)


@pytest.fixture(scope="session")
def flower_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return shared(tmp_path_factory, "flower-run", flower_run_make)
