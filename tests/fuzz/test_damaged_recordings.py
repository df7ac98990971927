"""Damaged recordings, systematically: every command ends in one sentence or serves the undamaged numbers.

A small recording (and one left by a killed run, still marked open for SWMR
writing) is damaged in many ways: truncated at several offsets, bytes flipped
in the metadata, the data, the index and the JSON, groups, datasets and
attributes deleted, types changed, counters made absurd, versions made bad.
Each damaged file goes through `fedaudit inspect`, `fedaudit verify` and a read
of every row through UpdateStore, in a subprocess with a timeout. Each must
either exit non-zero with one sentence and no traceback, or exit zero with the
numbers of the undamaged file; rows it leaves out must come with a warning.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from fedaudit.audit import record_run
from fedaudit.config import FLConfig
from fedaudit.record._h5 import write_json
from tests.conftest import make_table

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 60  # seconds; the hangs this guards against lasted 20+ minutes
ENV = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}

Damage = Callable[[Path], None]

_KILLED_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import numpy as np
    from fedaudit.hooks import ClientInfo
    from fedaudit.record import UpdateWriter
    from fedaudit.types import ClientUpdate

    rng = np.random.default_rng(0)
    shapes = {"fc1.weight": (16, 12), "fc1.bias": (16,), "fc2.weight": (4, 16), "fc2.bias": (4,)}
    w = UpdateWriter(sys.argv[1], config={"rounds": 9}, parameter_shapes=shapes, metric_names=["val_uar"],
                     clients=[ClientInfo(client_id=c, corpus="x", n_train=5, attributes={"gender": "FM"[c % 2]})
                              for c in range(4)])
    for r in range(4):
        for c in (r % 4, (r + 1) % 4):
            w.add(ClientUpdate(server_round=r, client_id=c, kind="gradient", num_samples=5, local_steps=1, lr=0.1,
                               arrays={n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}))
        w.commit_round(metrics={"val_uar": 0.5 + r / 10})
    os._exit(0)  # as if killed: the file stays marked open for SWMR writing
    """
)


# -- building the files ---------------------------------------------------------
@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzz")
    done = root / "complete.h5"
    record_run(FLConfig(rounds=4, client_fraction=0.3, seed=1), make_table(), done, store_globals=True)
    killed = root / "killed.h5"
    subprocess.run([sys.executable, "-c", _KILLED_SCRIPT, str(killed)], cwd=REPO, env=ENV, check=True, timeout=TIMEOUT)
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(killed, "r", locking=False)  # the reader must take the SWMR path for it
    return {"complete": done, "killed": killed}


def probe(*paths: Path) -> list[dict]:
    """Reports of every file, from one subprocess; each file may take at most TIMEOUT seconds."""
    res = subprocess.run([sys.executable, "-m", "tests.fuzz._probe", *map(str, paths)], cwd=REPO, env=ENV,
                         capture_output=True, text=True, timeout=TIMEOUT * len(paths))
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
    reports = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(reports) == len(paths)
    return reports


@pytest.fixture(scope="module")
def baseline(base: dict[str, Path]) -> dict[str, dict]:
    out = {}
    for (name, path), report in zip(base.items(), probe(*base.values()), strict=True):
        for action in ("inspect", "verify", "read"):
            assert report[action]["rc"] == 0, report[action]
        out[name] = report
    return out


# -- the damage -------------------------------------------------------------------
def _raw_ranges(path: Path) -> list[tuple[int, int, int, str]]:
    """(start, stop, stop of the bytes in use, dataset) of the raw data of every dataset: what is not metadata."""
    out: list[tuple[int, int, int, str]] = []
    with h5py.File(path, "r", locking=False, swmr=True) as f:
        def visit(name: str, obj: object) -> None:
            if not isinstance(obj, h5py.Dataset):
                return
            offset = obj.id.get_offset()
            if offset is not None:
                size = obj.id.get_storage_size()
                out.append((offset, offset + size, offset + size, name))
            elif obj.chunks is not None and obj.shape and obj.shape[0]:
                row_bytes = obj.dtype.itemsize * int(np.prod(obj.chunks[1:]))

                def add(i: object) -> None:
                    rows = min(obj.chunks[0], obj.shape[0] - i.chunk_offset[0])
                    out.append((i.byte_offset, i.byte_offset + i.size, i.byte_offset + rows * row_bytes, name))
                obj.id.chunk_iter(add)
        f.visititems(visit)
    return sorted(out)


def _flip_at(path: Path, offset: int, mask: int = 0x5A) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        b = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([b[0] ^ mask]))


def flip_data(dataset: str, which: float) -> Damage:
    def damage(path: Path) -> None:
        ranges = [r for r in _raw_ranges(path) if r[3] == dataset]
        start, _, used, _ = ranges[min(int(which * len(ranges)), len(ranges) - 1)]
        _flip_at(path, start + (used - start) // 2)
    return damage


def flip_metadata(k: int, of: int) -> Damage:
    """Flip one byte in the k-th of ``of`` evenly spaced places outside all raw data."""
    def damage(path: Path) -> None:
        size = path.stat().st_size
        covered = np.zeros(size, dtype=bool)
        for start, stop, _, _ in _raw_ranges(path):
            covered[start:min(stop, size)] = True
        meta = np.flatnonzero(~covered)
        _flip_at(path, int(meta[int((k + 0.5) * len(meta) / of)]))
    return damage


def flip_random(seed: int) -> Damage:
    def damage(path: Path) -> None:
        rng = np.random.default_rng(seed)
        for offset in rng.integers(0, path.stat().st_size, size=3):
            _flip_at(path, int(offset), int(rng.integers(1, 256)))
    return damage


def truncate(fraction: float) -> Damage:
    def damage(path: Path) -> None:
        size = path.stat().st_size
        os.truncate(path, max(0, int(size * fraction)) if fraction < 1 else size - 1)
    return damage


def edit(fn: Callable[[h5py.File], None]) -> Damage:
    def damage(path: Path) -> None:
        with h5py.File(path, "r+", locking=False) as f:
            fn(f)
    return damage


def delete(name: str) -> Damage:
    return edit(lambda f: f.__delitem__(name))


def delete_attr(node: str, attr: str) -> Damage:
    return edit(lambda f: f[node].attrs.__delitem__(attr))


def set_attr(node: str, attr: str, value: object) -> Damage:
    return edit(lambda f: f[node].attrs.__setitem__(attr, value))


def replace(name: str, data: object) -> Damage:
    def fn(f: h5py.File) -> None:
        del f[name]
        f[name] = data
    return edit(fn)


def set_value(name: str, value: object) -> Damage:
    def fn(f: h5py.File) -> None:
        f[name][()] = value
    return edit(fn)


def rewrite_json(name: str, obj: object) -> Damage:
    """Valid JSON with a matching checksum, of the wrong shape: the structural checks must catch it."""
    def fn(f: h5py.File) -> None:
        group, _, leaf = name.rpartition("/")
        del f[name]
        write_json(f[group], leaf, obj)
    return edit(fn)


DAMAGE: dict[str, Damage] = {
    **{f"truncate-{int(q * 100)}": truncate(q) for q in (0.1, 0.5, 0.9, 0.99)},
    "truncate-last-byte": truncate(1.0),
    "flip-data-first-row": flip_data("updates/fc1/weight", 0.0),
    "flip-data-middle-row": flip_data("updates/fc2/weight", 0.5),
    "flip-data-last-row": flip_data("updates/fc1/bias", 1.0),
    "flip-index-client-id": flip_data("updates/index/client_id", 0.0),
    "flip-index-checksum": flip_data("updates/index/checksum", 0.0),
    "flip-metrics": flip_data("metrics/val_uar", 0.0),
    "flip-globals": flip_data("globals/fc1/weight", 0.5),
    "flip-config-json": flip_data("run/config", 0.0),
    "flip-result-json": flip_data("run/result", 0.0),
    "flip-clients": flip_data("clients/client_id", 0.0),
    "flip-initial-weights": flip_data("initial_weights/fc1/weight", 0.0),
    **{f"flip-metadata-{k}": flip_metadata(k, 8) for k in range(8)},
    **{f"flip-random-{seed}": flip_random(seed) for seed in range(3)},
    "delete-ground-truth": delete("ground_truth"),
    "delete-ground-truth-column": delete("ground_truth/gender"),
    "delete-clients": delete("clients"),
    "delete-index-column": delete("updates/index/client_id"),
    "delete-rounds": delete("rounds"),
    "delete-config": delete("run/config"),
    "delete-layer": delete("updates/fc1/weight"),
    "delete-metric": delete("metrics/val_uar"),
    "delete-version-attr": delete_attr("/", "encoding-version"),
    "delete-config-checksum": delete_attr("run/config", "checksum"),
    "wrong-type-status": replace("run/status", "complete"),
    "wrong-type-client-id": replace("clients/client_id", np.zeros(3, dtype=np.float32)),
    "wrong-type-index": replace("updates/index/server_round", np.zeros((2, 2), dtype=np.int64)),
    "wrong-type-architecture": rewrite_json("run/architecture", {"fc1": [1, 2]}),
    "wrong-type-version": set_attr("/", "encoding-version", 7),
    "absurd-updates-committed": set_value("run/updates_committed", 4_000_000_000),
    "negative-updates-committed": set_value("run/updates_committed", -1),
    "absurd-rounds-completed": set_value("run/rounds_completed", 10**6),
    "fewer-updates-committed": set_value("run/updates_committed", 3),
    "absurd-status": set_value("run/status", 7),
    "bad-version-x.y": set_attr("/", "encoding-version", "x.y"),
    "bad-version-2.0.0": set_attr("/", "encoding-version", "2.0.0"),
    "bad-version-short": set_attr("/", "encoding-version", "1.1"),
    "bad-version-bytes": set_attr("/", "encoding-version", np.void(b"\xff\xfe")),
}
#: The damage that also applies to a file a killed run left open (h5py cannot edit such a file).
KILLED = ["truncate-50", "truncate-90", "truncate-last-byte", "flip-data-first-row", "flip-data-last-row",
          "flip-index-client-id", "flip-metrics", "flip-clients", "flip-config-json",
          *[f"flip-metadata-{k}" for k in range(0, 8, 2)], "flip-random-0"]


def _sentences(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("warning:")]


def check(report: dict, base: dict, label: str) -> None:
    for action in ("inspect", "verify"):
        res = report[action]
        assert "Traceback" not in res["err"] + res["out"], f"{label} {action}: {res['err'][-2000:]}"
        if res["rc"] != 0:
            if action == "verify" and res["rc"] == 4 and res["out"].strip():
                assert json.loads(res["out"])["ok"] is False, f"{label}: verify exit 4 but ok"
                continue
            lines = _sentences(res["err"])
            assert len(lines) == 1 and lines[0].startswith(("error:", "damaged:")), f"{label} {action}: {res['err']!r}"
        elif action == "inspect":
            got, want = json.loads(res["out"]), json.loads(base["inspect"]["out"])
            for key in ("path", "size_bytes"):
                got.pop(key), want.pop(key)
            assert got == want or "warning:" in res["err"], f"{label}: inspect differs without a warning"
    read = report["read"]
    assert "Traceback" not in read.get("err", ""), f"{label} read: {read['err'][-2000:]}"
    if read["rc"] != 0:
        assert read["err"].startswith("error:") and "\n" not in read["err"].strip(), f"{label}: {read['err']!r}"
        return
    want = base["read"]
    for row, digest in read["rows"].items():  # never a different number for a row served
        assert want["rows"].get(row) == digest, f"{label}: row {row} served with different values"
    assert read["facts"]["config"] == want["facts"]["config"], f"{label}: config differs"
    assert read["facts"]["clients"] == want["facts"]["clients"], f"{label}: client table differs"
    assert read["facts"]["ground_truth"] in (want["facts"]["ground_truth"], {}), f"{label}: ground truth differs"
    warned = any("Warning" in w for w in read["warnings"])
    if read["rows"].keys() != want["rows"].keys() or read["facts"]["metrics"] != want["facts"]["metrics"]:
        assert warned, f"{label}: rows or metrics differ without a warning"
    if report["verify"]["rc"] == 0:  # verify passed: nothing may be missing
        assert read["rows"] == want["rows"], f"{label}: verify passed but rows differ"


def _run_group(source: Path, names: list[str], base: dict, tmp_path: Path, prefix: str = "") -> None:
    paths = []
    for name in names:
        path = tmp_path / name / "run.h5"
        path.parent.mkdir()
        shutil.copy(source, path)
        DAMAGE[name](path)
        paths.append(path)
    for name, report in zip(names, probe(*paths), strict=True):
        check(report, base, prefix + name)


#: Groups of damage run in one subprocess each (an interpreter start costs more than a probe).
GROUPS: dict[str, tuple[str, ...]] = {
    "truncated": ("truncate-",),
    "flipped-data": ("flip-data-", "flip-globals", "flip-initial-"),
    "flipped-tables": ("flip-index-", "flip-metrics", "flip-result-", "flip-clients", "flip-config-"),
    "flipped-metadata": ("flip-metadata-",),
    "flipped-anywhere": ("flip-random-",),
    "deleted": ("delete-",),
    "wrong-types-and-versions": ("wrong-", "bad-version-"),
    "counters": ("absurd-", "negative-", "fewer-"),
}


def test_every_damage_is_in_a_group() -> None:
    grouped = [n for n in DAMAGE if any(n.startswith(p) for ps in GROUPS.values() for p in ps)]
    assert sorted(grouped) == sorted(DAMAGE)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_damaged_complete_recording(base: dict[str, Path], baseline: dict[str, dict], tmp_path: Path,
                                    group: str) -> None:
    names = [n for n in sorted(DAMAGE) if n.startswith(GROUPS[group])]
    _run_group(base["complete"], names, baseline["complete"], tmp_path)


def test_damaged_recording_of_a_killed_run(base: dict[str, Path], baseline: dict[str, dict], tmp_path: Path) -> None:
    _run_group(base["killed"], KILLED, baseline["killed"], tmp_path, prefix="killed/")


def test_attack_on_damaged_recordings_is_a_warning_or_one_sentence(base: dict[str, Path], tmp_path: Path) -> None:
    """`fedaudit attack` leaves damaged rows out with a warning, and refuses an unreadable file in one sentence."""
    shadow = tmp_path / "shadow.h5"
    record_run(FLConfig(rounds=4, client_fraction=0.3, seed=2), make_table(seed=1), shadow)
    main = "from fedaudit.cli.main import app; app(prog_name='fedaudit')"
    for name, expect_ok in (("flip-data-first-row", True), ("truncate-50", False)):
        path = tmp_path / name / "run.h5"
        path.parent.mkdir()
        shutil.copy(base["complete"], path)
        DAMAGE[name](path)
        res = subprocess.run([sys.executable, "-c", main, "attack", str(path), "--attack", "stats", "--shadow",
                              str(shadow)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=TIMEOUT * 3)
        assert "Traceback" not in res.stderr + res.stdout, res.stderr[-3000:]
        if expect_ok:
            assert res.returncode == 0 and "warning:" in res.stderr and "damaged update rows" in res.stderr, res.stderr
        else:
            lines = _sentences(res.stderr)
            assert res.returncode != 0 and len(lines) == 1 and lines[0].startswith("error:"), res.stderr
