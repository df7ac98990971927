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
from filelock import FileLock  # noqa: E402  (Ray depends on it)

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


def shared(tmp_path_factory: pytest.TempPathFactory, name: str, make: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Run ``make(folder)`` once per test session (across xdist workers); returns its JSON-ready result."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder = root / f"shared-{name}"
    done = folder / "result.json"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            folder.mkdir(exist_ok=True)
            result = make(folder)
            done.write_text(json.dumps(result))
    return json.loads(done.read_text())


@pytest.fixture(scope="session")
def flower_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The example app, 10 clients x 20 rounds, recorded by the strategy wrapper and by the client mod."""

    def make(folder: Path) -> dict[str, Any]:
        server, client = folder / "server.h5", folder / "clients.h5"
        proc = subprocess.run(
            [sys.executable, str(EXAMPLE / "app.py"), "--clients", "10", "--rounds", "20", "--hidden", "64", "32",
             "--out", str(server), "--client-out", str(client)],
            capture_output=True, text=True, timeout=600, env=os.environ.copy(),
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        return {"server": str(server), "clients": str(client), "stdout": proc.stdout}

    return shared(tmp_path_factory, "flower-run", make)
