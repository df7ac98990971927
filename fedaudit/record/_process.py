"""An UpdateWriter in a child process, fed through shared memory.

Training and writing then run on two cores: the simulator only copies each
round's arrays into a shared-memory slot (about 0.06 ms per MB) and sends a
small message; the child writes and flushes the round and acknowledges the
slot. The recording is at most ``depth`` rounds behind the simulation.

The child owns the file and the cleanup. It ignores SIGINT and SIGTERM (the
parent decides when to stop and closes the pipe), commits every round it was
sent even when the parent is gone (a failed acknowledgement does not stop it
from draining the pipe), then closes the file, marked incomplete unless the
run finished. It removes each shared-memory name as soon as it has mapped the
segment, so no name is left in ``/dev/shm`` whichever process dies; the
parent's resource tracker never owns the segments, so no leak warning is
printed either.
"""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing as mp
import os
import signal
from collections.abc import Mapping, Sequence
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np

from fedaudit.exceptions import OutputExistsError, RecordingError
from fedaudit.types import ClientUpdate, PrivacySpent

try:  # POSIX shared memory without the resource tracker
    import _posixshmem
except ImportError:  # pragma: no cover - Windows
    _posixshmem = None

__all__ = ["ProcessWriter"]


def _layout(arrays: list[tuple[str, np.ndarray]]) -> tuple[list[tuple[str, tuple[int, ...], str, int]], int]:
    out, offset = [], 0
    for key, arr in arrays:
        out.append((key, tuple(arr.shape), arr.dtype.str, offset))
        offset += -(-arr.nbytes // 64) * 64  # 64-byte aligned
    return out, offset


def _new_segment(size: int) -> shared_memory.SharedMemory:
    """A new slot that the resource tracker does not own (the child removes its name)."""
    try:
        return shared_memory.SharedMemory(create=True, size=size, track=False)  # type: ignore[call-arg]  # >= 3.13
    except TypeError:
        seg = shared_memory.SharedMemory(create=True, size=size)
        if _posixshmem is not None:
            from multiprocessing import resource_tracker

            resource_tracker.unregister(seg._name, "shared_memory")  # type: ignore[attr-defined]
        return seg


def _unlink(name: str) -> None:
    """Remove a segment's name (a no-op if it is gone already)."""
    if _posixshmem is None:  # pragma: no cover
        with contextlib.suppress(FileNotFoundError):
            shared_memory.SharedMemory(name=name).unlink()
        return
    with contextlib.suppress(FileNotFoundError):
        _posixshmem.shm_unlink("/" + name.lstrip("/"))


def _attach(name: str) -> Any:
    """Map the parent's segment, then remove its name: the mapping lives on, /dev/shm stays clean."""
    if _posixshmem is None:  # pragma: no cover
        return shared_memory.SharedMemory(name=name).buf
    fd = _posixshmem.shm_open("/" + name.lstrip("/"), os.O_RDWR, mode=0o600)
    try:
        mm = mmap.mmap(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    _unlink(name)
    return mm


def _child(conn: Any, parent_end: Any, path: str, writer_kwargs: dict[str, Any]) -> None:
    parent_end.close()  # or EOF would never come when the parent dies
    # The parent stops the run: Ctrl-C and SIGTERM to the process group must not cut the child short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from fedaudit.record.writer import UpdateWriter

    parent_gone = False

    def send(msg: tuple[Any, ...]) -> None:
        nonlocal parent_gone
        if not parent_gone:
            try:
                conn.send(msg)
            except OSError:  # the parent died: keep committing what it already sent
                parent_gone = True

    try:
        writer = UpdateWriter(Path(path), **writer_kwargs)
    except BaseException as err:  # noqa: BLE001 - reported to the parent as one sentence
        send(("error", type(err).__name__, str(err)))
        return
    send(("ready",))
    segments: dict[str, Any] = {}
    try:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break  # parent gone and the pipe drained: every round it sent is committed
            if msg[0] == "round":
                _, name, layout, updates, metrics = msg
                seg = segments.get(name)
                if seg is None:
                    seg = segments[name] = _attach(name)
                arrays = {key: np.ndarray(shape, dtype=np.dtype(dt), buffer=seg, offset=off)
                          for key, shape, dt, off in layout}
                try:
                    for i, meta in enumerate(updates):
                        writer.add(ClientUpdate(arrays={p: arrays[f"u{i}:{p}"] for p in writer.shapes}, **meta))
                    glob = {p: arrays[f"g:{p}"] for p in writer.shapes} if f"g:{next(iter(writer.shapes))}" in arrays else None
                    writer.commit_round(global_weights=glob, metrics=metrics)
                finally:
                    del arrays
                send(("ack", name))
            elif msg[0] == "drop":  # the parent replaced a slot too small for a round
                seg = segments.pop(msg[1], None)
                if seg is not None:
                    with contextlib.suppress(BufferError):
                        seg.close()
            elif msg[0] == "finish":
                writer.finish(msg[1], [PrivacySpent.from_dict(p) for p in msg[2]])
                send(("done",))
                break
    except BaseException as err:  # noqa: BLE001
        send(("error", type(err).__name__, str(err)))
    finally:
        writer.close()
        for name, seg in segments.items():
            _unlink(name)
            with contextlib.suppress(BufferError):
                seg.close()


class ProcessWriter:
    """Parent side: owns the shared-memory slots and talks to the child writer."""

    def __init__(self, path: Path, writer_kwargs: dict[str, Any], *, depth: int = 2) -> None:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self.path = Path(path)
        self._metric_names = ["server_round", *writer_kwargs.get("metric_names", ())]
        self._undeclared: set[str] = set()
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(target=_child, args=(child_conn, self._conn, str(path), writer_kwargs),
                                 name="fedaudit-recorder", daemon=True)
        self._proc.start()
        child_conn.close()
        self._depth = max(1, depth)
        self._free: list[shared_memory.SharedMemory] = []
        self._busy: dict[str, shared_memory.SharedMemory] = {}
        self._closed = False
        self.bytes_written = 0
        msg = self._recv()
        if msg[0] != "ready":
            self._fail(msg)

    # -- messages ---------------------------------------------------------------
    def _stopped(self) -> RecordingError:
        """The child is gone: say how, and what the file holds."""
        self._proc.join(timeout=5)
        code = self._proc.exitcode
        if code is not None and code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"exit code {code}"
        self.close(kill=True)
        return RecordingError(
            f"The recording process stopped unexpectedly ({how}); {self.path} keeps the rounds it had committed."
        )

    def _recv(self) -> tuple[Any, ...]:
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            raise self._stopped() from None

    def _send(self, msg: tuple[Any, ...]) -> None:
        try:
            self._conn.send(msg)
        except OSError:
            raise self._stopped() from None

    def _fail(self, msg: tuple[Any, ...]) -> None:
        self.close(kill=True)
        if msg[0] == "error":
            if msg[1] == OutputExistsError.__name__:
                raise OutputExistsError(msg[2])
            raise RecordingError(msg[2])
        raise RecordingError(f"Unexpected message from the recording process: {msg[0]!r}.")

    def _handle(self, msg: tuple[Any, ...]) -> None:
        if msg[0] == "ack":
            seg = self._busy.pop(msg[1])
            self._free.append(seg)
        else:
            self._fail(msg)

    def _drain(self, *, block_until_free: bool) -> None:
        try:
            while self._conn.poll():
                self._handle(self._recv())
        except OSError:
            raise self._stopped() from None
        while block_until_free and len(self._busy) >= self._depth:
            self._handle(self._recv())

    def _segment(self, size: int) -> shared_memory.SharedMemory:
        self._drain(block_until_free=True)
        while self._free:
            seg = self._free.pop()
            if seg.size >= size:
                return seg
            self._send(("drop", seg.name))
            seg.close()
            _unlink(seg.name)
        return _new_segment(max(size, 1))

    # -- API --------------------------------------------------------------------
    def commit_round(
        self, updates: list[ClientUpdate], global_weights: Mapping[str, np.ndarray] | None,
        metrics: Mapping[str, float], shapes: Mapping[str, tuple[int, ...]], dtype: str,
    ) -> None:
        if self._closed:
            raise RecordingError(f"The recording process of {self.path} is closed; no round can be added.")
        from fedaudit.record.writer import declared_metrics

        metrics = declared_metrics(metrics, self._metric_names, self._undeclared)  # warn here, not in the child
        arrays: list[tuple[str, np.ndarray]] = []
        metas = []
        for i, u in enumerate(updates):
            for p in shapes:
                arrays.append((f"u{i}:{p}", np.asarray(u.arrays[p], dtype=dtype)))
            metas.append({"server_round": u.server_round, "client_id": u.client_id, "kind": u.kind,
                          "num_samples": u.num_samples, "local_steps": u.local_steps, "lr": u.lr,
                          "bytes_sent": u.bytes_sent, "encrypt_seconds": u.encrypt_seconds,
                          "decrypt_seconds": u.decrypt_seconds})
        if global_weights is not None:
            for p in shapes:
                arrays.append((f"g:{p}", np.asarray(global_weights[p], dtype=np.float32)))
        layout, size = _layout(arrays)
        seg = self._segment(size)
        for (key, arr), (_, shape, dt, off) in zip(arrays, layout, strict=True):
            np.copyto(np.ndarray(shape, dtype=np.dtype(dt), buffer=seg.buf, offset=off), arr)
            self.bytes_written += arr.nbytes
        self._busy[seg.name] = seg
        self._send(("round", seg.name, layout, metas, dict(metrics)))

    def finish(self, result: Mapping[str, Any], privacy: Sequence[PrivacySpent] = ()) -> None:
        self._send(("finish", dict(result), [p.to_dict() for p in privacy]))
        while True:
            msg = self._recv()
            if msg[0] == "done":
                break
            self._handle(msg)
        self.close()

    def close(self, *, kill: bool = False) -> None:
        """Wait for the child to commit what it was sent (or stop it), then free the slots."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._conn.close()
        if kill and self._proc.is_alive():
            self._proc.kill()
        self._proc.join(timeout=None if not kill else 10)
        for seg in [*self._free, *self._busy.values()]:
            with contextlib.suppress(BufferError):
                seg.close()
            _unlink(seg.name)
        self._free, self._busy = [], {}
