"""Run the tasks of an audit plan: in a local process pool, or as Ray tasks.

Each task (a recording or an attack) runs in a worker from its JSON-ready
specification and writes its result into the content-addressed cache; the
scheduler submits a task once the tasks it depends on are finished. Seeds come
from the specifications only, so the results are the same, bit for bit,
whichever executor runs them and in whatever order.

Progress events, passed to the ``progress`` callback of :func:`run_tasks`:
``("plan", {"total", "cached"})``, ``("start", {"key", "label", "total"})``,
``("advance", {"key", "completed"})`` (rounds of a recording; local executor
only), ``("done", {"key", "label", "cached"})``.
"""

from __future__ import annotations

import logging
import math
import os
import queue as queue_mod
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fedaudit.audit.cache import ResultCache
from fedaudit.exceptions import FedAuditError, InvalidParameterError

__all__ = ["EXECUTORS", "TaskError", "execute_task", "run_tasks"]

logger = logging.getLogger(__name__)


class TaskError(FedAuditError, RuntimeError):
    """A task of an audit failed for a reason that is not one of fedaudit's own errors."""

    exit_code = 1

EXECUTORS: tuple[str, ...] = ("local", "ray")

ProgressFn = Callable[[str, Mapping[str, Any]], None]


# -- work done in a worker ------------------------------------------------------------------------
def execute_task(kind: str, key: str, spec: Mapping[str, Any], cache_root: str, ticks: Any = None) -> dict[str, Any]:
    """Run one task and store its result in the cache; returns the result (a JSON-ready dict)."""
    cache = ResultCache(cache_root)
    finished = cache.get("recordings" if kind == "recording" else "attacks", key)
    if finished is not None:
        return finished
    if kind == "recording":
        return _record(key, spec, cache, ticks)
    if kind == "attack":
        return _attack(key, spec, cache)
    raise InvalidParameterError(f"Unknown task kind {kind!r}.")


def _feature_table(corpora: list[str], roots: list[str], feature_set: str) -> Any:
    from fedaudit.data.sources import load_features
    from fedaudit.settings import Settings

    return load_features(corpora, roots=roots, feature_set=feature_set, cache_dir=Settings().cache_dir, n_jobs=1)


def _record(key: str, spec: Mapping[str, Any], cache: ResultCache, ticks: Any) -> dict[str, Any]:
    from fedaudit.audit.record import record_run
    from fedaudit.config import FLConfig, clients_per_round
    from fedaudit.hooks import BaseHook
    from fedaudit.record import UpdateStore

    class _Tick(BaseHook):
        def on_round_end(self, event: Any) -> None:
            if ticks is not None:
                ticks.put(("advance", key, event.server_round + 1))

    table = _feature_table(list(spec["corpora"]), list(spec["roots"]), spec["feature_set"])
    config = FLConfig.from_dict(dict(spec["config"]))
    path = cache.path("recordings", key, ".h5")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        defenses: list[Any] = []
        if spec["defenses"]:
            from fedaudit.defenses import defenses_from_options

            defenses = list(defenses_from_options(list(spec["defenses"]), dict(spec["options"])))
        t0 = time.perf_counter()
        result = record_run(config, table, partial, defenses=defenses, dtype=spec["dtype"], overwrite=True,
                            hooks=[_Tick()], data_info={"role": spec["role"]})
        wall = time.perf_counter() - t0
    from fedaudit.exceptions import FedAuditWarning

    notes = sorted({str(w.message) for w in caught if issubclass(w.category, FedAuditWarning)})
    os.replace(partial, path)
    # Just written and closed by this task: its costs are read without a second checksum pass over it.
    with UpdateStore.open(path, verify=False) as store:
        index = store.index
        rounds = max(1, store.rounds_completed)
        plain = sum(math.prod(store.shape(n)) for n in store.parameter_names) * 4
        enc = index["encrypt_seconds"][~_isnan(index["encrypt_seconds"])]
        dec = index["decrypt_seconds"][~_isnan(index["decrypt_seconds"])]
        cost = {
            "bytes_per_round": float(index["bytes_sent"].sum()) / rounds,
            "plain_bytes_per_round": plain * store.n_updates / rounds,
            "encrypt_seconds": float(enc.mean()) if enc.size else None,
            "decrypt_seconds": float(dec.mean()) if dec.size else None,
            "wall_seconds": wall,
        }
        summary = result.summary()
        out = {
            "role": spec["role"], "path": str(path), "n_clients": int(summary["n_clients"]),
            "clients_per_round": clients_per_round(config.client_fraction, int(summary["n_clients"])),
            "rounds": int(summary["rounds"]), "n_features": int(table.n_features), "n_updates": store.n_updates,
            "utility": {"test_uar": summary["test_uar"], "test_acc": summary["test_acc"],
                        "val_uar": summary["val_uar"], "best_round": summary["best_round"]},
            "privacy": [p.to_dict() for p in result.privacy],
            "defense_settings": dict(store.config.get("defenses", {"names": []})),
            "cost": cost, "warnings": notes, "size_bytes": store.size_bytes,
        }
    return cache.put("recordings", key, out)


def _isnan(values: Any) -> Any:
    import numpy as np

    return np.isnan(values)


def _result(r: Any) -> dict[str, Any]:
    d = r.to_dict()
    d.pop("clients", None)
    return d


def _attack(key: str, spec: Mapping[str, Any], cache: ResultCache) -> dict[str, Any]:
    from fedaudit.audit.attack import fit_attack, layer_leakage, score_attack

    target = cache.path("recordings", spec["target"], ".h5")
    shadows = [cache.path("recordings", k, ".h5") for k in spec["shadows"]]
    public = None
    if spec.get("public_corpora"):
        public = _feature_table(list(spec["public_corpora"]), list(spec.get("roots", [])), spec["feature_set"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        attack, card = fit_attack(spec["attack"], shadows=shadows, public=public, target=target,
                                  seed=int(spec["seed"]), options=dict(spec["options"]))
        per_layer = layer_leakage(attack, target, repeats=int(spec["repeats"]), seed=int(spec["seed"]))
        counts = [n if n == "all" else int(n) for n in spec["n_updates"]]
        report = score_attack(attack, target, n_updates=counts, repeats=int(spec["repeats"]),
                              seed=int(spec["seed"]), card=card)
        significance, speaker_notes = _significance(attack, spec, shadows, target, per_layer)
    from fedaudit.exceptions import FedAuditWarning

    notes = sorted({str(w.message) for w in caught if issubclass(w.category, FedAuditWarning)}) + speaker_notes
    out = {
        "attack": spec["attack"], "attacker": spec["attacker"], "shadow_defenses": list(spec["shadow_defenses"]),
        "layers": {name: _result(r) for name, r in per_layer.items()},
        "n_updates": {name: _result(r) for name, r in report.results.items()},
        "fit_seconds": float(card.get("fit_seconds", float("nan"))), "score_seconds": report.score_seconds,
        "warnings": notes,
    }
    if significance is not None:
        out["significance"] = significance
    return cache.put("attacks", key, out)


def _significance(attack: Any, spec: Mapping[str, Any], shadows: list[Path], target: Path,
                  per_layer: Mapping[str, Any]) -> tuple[dict[str, Any] | None, list[str]]:
    """The permutation test of the best single-update ASR over layers (``spec["permutations"]`` refits),
    and the warnings on the shadow speakers; ``(None, [])`` for an attack without shadow runs."""
    if not shadows:
        return None, []
    from fedaudit.audit.attack import shadow_speaker_warnings
    from fedaudit.audit.significance import best_layer_statistic, permutation_test, shadow_speakers
    from fedaudit.record import UpdateStore

    stores = [UpdateStore.open(p, warn_incomplete=False) for p in shadows]
    try:
        _, genders = shadow_speakers(stores)
        notes = shadow_speaker_warnings(genders.tolist())
        n = int(spec.get("permutations") or 0)
        if not n or not attack.needs_shadow:
            return None, notes
        with UpdateStore.open(target, warn_incomplete=False) as store:
            statistic = best_layer_statistic(repeats=int(spec["repeats"]), seed=int(spec["seed"]))
            try:
                test = permutation_test(attack, shadows=stores, target=store, statistic=statistic, n_permutations=n,
                                        seed=int(spec["seed"]),
                                        observed={"best": max(r.asr for r in per_layer.values())},
                                        statistic_name="best single-update ASR over layers")["best"]
            except InvalidParameterError as err:  # no gender-free relabelling of these speakers: say so, go on
                return None, [*notes, str(err)]
        return test.to_dict(), notes
    finally:
        for s in stores:
            s.close()


# -- scheduling -----------------------------------------------------------------------------------
def run_tasks(plan: Any, cache: ResultCache, *, executor: str = "local", jobs: int = 2, address: str | None = None,
              progress: ProgressFn | None = None) -> dict[str, dict[str, Any]]:
    """Run every task of ``plan`` not already in ``cache``; returns ``{key: result}`` for all of them."""
    if executor not in EXECUTORS:
        raise InvalidParameterError(f"Unknown executor {executor!r}; choose one of {list(EXECUTORS)}.")
    if not isinstance(jobs, int) or jobs < 1:
        raise InvalidParameterError(f"jobs must be an integer >= 1. Got {jobs!r}.")
    emit = progress or (lambda event, data: None)
    done: dict[str, dict[str, Any]] = {}
    todo = []
    for task in plan.tasks:
        finished = cache.get("recordings" if task.kind == "recording" else "attacks", task.key)
        if finished is not None and (task.kind != "recording" or Path(finished.get("path", "")).is_file()):
            done[task.key] = finished
        else:
            todo.append(task)
    emit("plan", {"total": len(plan.tasks), "cached": len(done)})
    for task in plan.tasks:
        if task.key in done:
            emit("done", {"key": task.key, "label": task.label, "cached": True})
    if todo:
        runner = _run_local if executor == "local" else _run_ray
        runner(todo, done, cache, jobs=jobs, address=address, emit=emit)
    return done


def _total(task: Any) -> int | None:
    return int(task.spec["config"]["rounds"]) if task.kind == "recording" else None


def _ready(todo: list[Any], done: Mapping[str, Any], running: set[str], slots: int) -> list[Any]:
    """Tasks to start now: at most ``slots``, attacks first (their results come sooner), then in plan order."""
    ready = [t for t in todo if t.key not in running and t.key not in done and all(d in done for d in t.deps)]
    ready.sort(key=lambda t: t.kind != "attack")
    return ready[: max(0, slots)]


def _run_local(todo: list[Any], done: dict[str, Any], cache: ResultCache, *, jobs: int, address: str | None,
               emit: ProgressFn) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    if address is not None:
        raise InvalidParameterError("--address applies to the ray executor only.")
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        ticks = manager.Queue()
        pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx)
        futures: dict[Any, Any] = {}
        try:
            while True:
                for task in _ready(todo, done, {t.key for t in futures.values()}, jobs - len(futures)):
                    futures[pool.submit(execute_task, task.kind, task.key, task.spec, str(cache.root), ticks)] = task
                    emit("start", {"key": task.key, "label": task.label, "total": _total(task)})
                if not futures:
                    break
                finished, _ = wait(list(futures), timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(ticks, emit)
                for future in finished:
                    task = futures.pop(future)
                    done[task.key] = _result_of(task, future.result)
                    emit("done", {"key": task.key, "label": task.label, "cached": False})
        except BaseException:
            # Stop the workers before the progress queue goes away; unfinished tasks leave no cache entry.
            processes = list((getattr(pool, "_processes", None) or {}).values())
            pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.terminate()
            raise
        pool.shutdown(wait=True)
        _drain(ticks, emit)


def _result_of(task: Any, get: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """A task's result; its failure becomes one sentence (fedaudit's own errors pass unchanged)."""
    try:
        return get()
    except FedAuditError:
        raise
    except Exception as err:  # noqa: BLE001 - the full traceback goes to the log, the user gets a sentence
        logger.debug("task %s failed", task.label, exc_info=True)
        raise TaskError(
            f"The task '{task.label}' failed ({type(err).__name__}: {err}); every finished task is kept in the "
            "cache, so the same command resumes after the cause is fixed."
        ) from None


def _drain(ticks: Any, emit: ProgressFn) -> None:
    while True:
        try:
            _, key, completed = ticks.get_nowait()
        except (queue_mod.Empty, EOFError, OSError):
            return
        emit("advance", {"key": key, "completed": completed})


def _ray_get(ray: Any, ref: Any) -> dict[str, Any]:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, FedAuditError):  # the task's own sentence, without Ray's traceback around it
            raise cause from None
        raise RuntimeError(f"{type(cause).__name__}: {cause}" if cause is not None else str(err)) from None


def _run_ray(todo: list[Any], done: dict[str, Any], cache: ResultCache, *, jobs: int, address: str | None,
             emit: ProgressFn) -> None:
    try:
        import ray
    except ImportError as err:
        raise ImportError("The ray executor needs Ray: pip install 'fedaudit[ray]'.") from err
    started_here = not ray.is_initialized()
    if started_here:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if address is None:
            ray.init(num_cpus=jobs, include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    try:
        # One CPU per task: the simulator trains on one thread (its recorder writes from one more process).
        remote = ray.remote(num_cpus=1, max_retries=0)(execute_task)
        refs: dict[Any, Any] = {}
        capacity = jobs if address is None else max(jobs, int(ray.cluster_resources().get("CPU", jobs)))
        while True:
            for task in _ready(todo, done, {t.key for t in refs.values()}, capacity - len(refs)):
                refs[remote.remote(task.kind, task.key, task.spec, str(cache.root), None)] = task
                emit("start", {"key": task.key, "label": task.label, "total": _total(task)})
            if not refs:
                break
            finished, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
            for ref in finished:
                task = refs.pop(ref)
                done[task.key] = _result_of(task, lambda ref=ref: _ray_get(ray, ref))
                emit("done", {"key": task.key, "label": task.label, "cached": False})
    finally:
        if started_here:
            ray.shutdown()
