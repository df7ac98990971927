"""An UpdateWriter in a child process, fed through shared memory.

Training and writing then run on two cores: the simulator only copies each
round's arrays into a shared-memory slot (about 0.06 ms per MB) and sends a
small message; the child writes and flushes the round and acknowledges the
slot. The recording is at most ``depth`` rounds behind the simulation. If the
parent dies, the child still commits every round it was sent, then closes the
file (marked incomplete).
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Mapping, Sequence
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np

from fedaudit.exceptions import OutputExistsError, RecordingError
from fedaudit.types import ClientUpdate, PrivacySpent

__all__ = ["ProcessWriter"]


def _layout(arrays: list[tuple[str, np.ndarray]]) -> tuple[list[tuple[str, tuple[int, ...], str, int]], int]:
    out, offset = [], 0
    for key, arr in arrays:
        out.append((key, tuple(arr.shape), arr.dtype.str, offset))
        offset += -(-arr.nbytes // 64) * 64  # 64-byte aligned
    return out, offset


def _child(conn: Any, parent_end: Any, path: str, writer_kwargs: dict[str, Any]) -> None:
    parent_end.close()  # or EOF would never come when the parent dies
    from fedaudit.record.writer import UpdateWriter

    try:
        writer = UpdateWriter(Path(path), **writer_kwargs)
    except BaseException as err:  # noqa: BLE001 - reported to the parent as one sentence
        conn.send(("error", type(err).__name__, str(err)))
        return
    conn.send(("ready",))
    segments: dict[str, shared_memory.SharedMemory] = {}
    try:
        while True:
            try:
                msg = conn.recv()
            except EOFError:
                # Parent gone: everything it sent is committed; the file stays incomplete.
                for seg in segments.values():
                    try:
                        seg.unlink()
                    except FileNotFoundError:
                        pass
                break
            if msg[0] == "round":
                _, name, layout, updates, metrics = msg
                seg = segments.get(name)
                if seg is None:
                    seg = segments[name] = _attach(name)
                arrays = {key: np.ndarray(shape, dtype=np.dtype(dt), buffer=seg.buf, offset=off)
                          for key, shape, dt, off in layout}
                try:
                    for i, meta in enumerate(updates):
                        writer.add(ClientUpdate(arrays={p: arrays[f"u{i}:{p}"] for p in writer.shapes}, **meta))
                    glob = {p: arrays[f"g:{p}"] for p in writer.shapes} if f"g:{next(iter(writer.shapes))}" in arrays else None
                    writer.commit_round(global_weights=glob, metrics=metrics)
                finally:
                    del arrays
                conn.send(("ack", name))
            elif msg[0] == "drop":  # the parent replaced a slot too small for a round
                seg = segments.pop(msg[1], None)
                if seg is not None:
                    seg.close()
            elif msg[0] == "finish":
                writer.finish(msg[1], [PrivacySpent.from_dict(p) for p in msg[2]])
                conn.send(("done",))
                break
    except BaseException as err:  # noqa: BLE001
        try:
            conn.send(("error", type(err).__name__, str(err)))
        except (BrokenPipeError, OSError):
            pass
    finally:
        writer.close()
        for seg in segments.values():
            try:
                seg.close()
            except BufferError:
                pass


def _attach(name: str) -> shared_memory.SharedMemory:
    """Attach to the parent's segment without the child's resource tracker owning it."""
    try:
        return shared_memory.SharedMemory(name=name, track=False)  # type: ignore[call-arg]  # Python >= 3.13
    except TypeError:
        # Forked child: it shares the parent's resource tracker, which already knows the name.
        return shared_memory.SharedMemory(name=name)


class ProcessWriter:
    """Parent side: owns the shared-memory slots and talks to the child writer."""

    def __init__(self, path: Path, writer_kwargs: dict[str, Any], *, depth: int = 2) -> None:
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()  # the child shares it, instead of starting one that unlinks our slots
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
    def _recv(self) -> tuple[Any, ...]:
        try:
            return self._conn.recv()
        except EOFError:
            code = self._proc.exitcode
            raise RecordingError(f"The recording process stopped unexpectedly (exit code {code}).") from None

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
        while self._conn.poll():
            self._handle(self._recv())
        while block_until_free and len(self._busy) >= self._depth:
            self._handle(self._recv())

    def _segment(self, size: int) -> shared_memory.SharedMemory:
        self._drain(block_until_free=True)
        while self._free:
            seg = self._free.pop()
            if seg.size >= size:
                return seg
            self._conn.send(("drop", seg.name))
            seg.close()
            seg.unlink()
        return shared_memory.SharedMemory(create=True, size=max(size, 1))

    # -- API --------------------------------------------------------------------
    def commit_round(
        self, updates: list[ClientUpdate], global_weights: Mapping[str, np.ndarray] | None,
        metrics: Mapping[str, float], shapes: Mapping[str, tuple[int, ...]], dtype: str,
    ) -> None:
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
        self._conn.send(("round", seg.name, layout, metas, dict(metrics)))

    def finish(self, result: Mapping[str, Any], privacy: Sequence[PrivacySpent] = ()) -> None:
        self._conn.send(("finish", dict(result), [p.to_dict() for p in privacy]))
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
        try:
            self._conn.close()
        except OSError:
            pass
        if kill and self._proc.is_alive():
            self._proc.terminate()
        self._proc.join(timeout=None if not kill else 10)
        for seg in [*self._free, *self._busy.values()]:
            seg.close()
            try:
                seg.unlink()
            except FileNotFoundError:
                pass
        self._free, self._busy = [], {}
