"""No silent loss: killed parents, killed or paused writers, signals and racing --force runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from fedaudit.exceptions import IncompleteRecordingWarning
from fedaudit.record import UpdateStore

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
SHM = Path("/dev/shm")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals and /dev/shm of Linux")

_RUN = textwrap.dedent(
    """
    import multiprocessing as mp, sys, time
    import typer
    from fedaudit.cli._common import error_boundary
    from fedaudit.config import FLConfig
    from fedaudit.hooks import BaseHook
    from fedaudit.audit import record_run
    from tests.conftest import make_table

    path, pause, rounds, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])

    class Report(BaseHook):
        def on_round_end(self, event):
            if event.server_round == 0:
                child = [p for p in mp.active_children() if p.name == "fedaudit-recorder"][0]
                print("child", child.pid, flush=True)
            print("handed", event.server_round, flush=True)
            time.sleep(pause)

    try:
        with error_boundary():  # what every command runs in
            record_run(FLConfig(rounds=rounds, client_fraction=0.3, seed=seed), make_table(n_features=300), path,
                       hooks=[Report()], overwrite=True)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    """
)


def _run(path: Path, *, pause: float = 0.0, rounds: int = 3000, seed: int = 0, **kwargs: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _RUN, str(path), str(pause), str(rounds), str(seed)], cwd=REPO,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _child_and_rounds(proc: subprocess.Popen, rounds: int) -> int:
    """The writer's pid, once the run has handed ``rounds`` rounds to it."""
    child = int(proc.stdout.readline().split()[1])
    for _ in range(rounds):
        assert proc.stdout.readline().startswith("handed")
    return child


def _shm_names() -> set[str]:
    """POSIX shared-memory segments of multiprocessing (``psm_*``) and any named after fedaudit."""
    return {p.name for p in SHM.iterdir() if p.name.startswith("psm_") or "fedaudit" in p.name} if SHM.is_dir() else set()


def _wait_gone(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} did not exit")


def _no_new_segments(before: set[str], timeout: float = 5) -> None:
    """Segments of other tests running at the same time come and go; ours must not stay."""
    deadline = time.monotonic() + timeout
    while (left := _shm_names() - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"shared memory left in /dev/shm: {sorted(left)}"


def _open(path: Path) -> UpdateStore:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IncompleteRecordingWarning)
        return UpdateStore.open(path)


def test_paused_writer_commits_every_round_it_was_handed_after_the_parent_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "slow.h5"
    before = _shm_names()
    proc = _run(path)
    child = int(proc.stdout.readline().split()[1])
    os.kill(child, signal.SIGSTOP)  # the writer lags: rounds pile up in the pipe and the slots
    handed = []
    os.set_blocking(proc.stdout.fileno(), False)
    deadline = time.monotonic() + 30
    quiet_since = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - quiet_since < 1.0:
        line = proc.stdout.readline()
        if line.startswith("handed"):
            handed.append(int(line.split()[1]))
            quiet_since = time.monotonic()
        else:
            time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # the parent dies with rounds still queued for the paused writer
    proc.wait()
    os.kill(child, signal.SIGCONT)
    _wait_gone(child)
    stderr = proc.stderr.read()
    assert len(handed) >= 3, "the parent never handed rounds to the paused writer"
    with _open(path) as store:
        assert not store.complete
        assert store.rounds_completed >= len(handed), (store.rounds_completed, handed)
        assert set(range(len(handed))) <= set(store.index["server_round"].tolist())
        assert np.isfinite(store.param("fc1.weight")).all()
        assert len(store.damaged_rows) == 0
    assert "leaked" not in stderr and "Traceback" not in stderr, stderr
    _no_new_segments(before)


def test_killing_the_process_group_leaves_no_shared_memory(tmp_path: Path) -> None:
    path = tmp_path / "group.h5"
    before = _shm_names()
    proc = _run(path, pause=0.01, start_new_session=True)
    _child_and_rounds(proc, 5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.2)
    _no_new_segments(before)
    with _open(path) as store:
        assert store.rounds_completed >= 1 and len(store.damaged_rows) == 0


def _one_sentence(stderr: str, start: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr and len(lines) == 1 and lines[0].startswith(start), stderr
    return lines[0]


def test_sigterm_closes_the_recording_and_exits_143_with_one_sentence(tmp_path: Path) -> None:
    out = tmp_path / "term.h5"
    proc = _run(out, pause=0.01)
    _child_and_rounds(proc, 3)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143
    _one_sentence(stderr, "terminated")
    with _open(out) as store:
        assert not store.complete and store.rounds_completed >= 3 and len(store.damaged_rows) == 0


def test_killing_the_writer_alone_is_one_sentence(tmp_path: Path) -> None:
    out = tmp_path / "orphan.h5"
    proc = _run(out, pause=0.01)
    os.kill(_child_and_rounds(proc, 3), signal.SIGKILL)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1
    line = _one_sentence(stderr, "error:")
    assert "recording process stopped unexpectedly (killed by SIGKILL)" in line
    with _open(out) as store:  # what the writer had committed when it died (on a loaded machine, maybe nothing)
        assert store.n_updates == len(store.index["server_round"]) and len(store.damaged_rows) == 0


def test_two_forced_runs_to_one_output_never_both_succeed(tmp_path: Path) -> None:
    """What two `fedaudit record --force --out X` at once do: record_run(..., overwrite=True) in two processes."""
    out = tmp_path / "race.h5"
    out.write_bytes(b"an older recording")
    runs = [_run(out, pause=0.02, rounds=100, seed=seed) for seed in (1, 2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in runs]
    codes = [code for code, _ in results]
    assert sorted(codes) == [0, 1], results
    loser = results[codes.index(1)][1]
    assert "Another run is writing" in _one_sentence(loser, "error:")
    with UpdateStore.open(out) as store:
        assert store.complete and store.rounds_completed == 100 and store.config["seed"] == [1, 2][codes.index(0)]
    assert not (tmp_path / ".race.h5.lock").exists()
