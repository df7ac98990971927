"""Run `fedaudit inspect --json`, `fedaudit verify --json` and a full UpdateStore read on each file.

Used by the fuzz tests in a subprocess with a timeout: prints one JSON object
with, per action, the exit code, stdout and stderr (an exception escaping a
command is reported as a traceback, which the tests refuse).
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback
import warnings

import numpy as np
import xxhash


def run_cli(args: list[str]) -> dict[str, object]:
    from fedaudit.cli.main import app

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            app(args, prog_name="fedaudit")
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        except BaseException:  # noqa: BLE001 - what the test must never see
            err.write(traceback.format_exc())
            code = 99
    return {"rc": code, "out": out.getvalue(), "err": err.getvalue()}


def read_all(path: str) -> dict[str, object]:
    from fedaudit.exceptions import FedAuditError
    from fedaudit.record import UpdateStore

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            store = UpdateStore.open(path)
            with store:
                total = store.n_updates + len(store.damaged_rows)
                served = np.setdiff1d(np.arange(total), store.damaged_rows)
                arrays = {name: store.param(name) for name in store.parameter_names}
                rows = {}
                for i, phys in enumerate(served.tolist()):
                    h = xxhash.xxh3_64()
                    for name in store.parameter_names:
                        h.update(np.ascontiguousarray(arrays[name][i]).tobytes())
                    for col in sorted(store.index):
                        h.update(np.asarray(store.index[col][i]).tobytes())
                    rows[str(phys)] = h.hexdigest()
                metrics = {k: [None if np.isnan(v) else float(v) for v in vals] for k, vals in store.metrics().items()}
                facts = {"config": store.config, "clients": {k: v.tolist() for k, v in store.clients.items()},
                         "ground_truth": {k: v.tolist() for k, v in store.ground_truth().items()},
                         "metrics": metrics, "complete": store.complete, "rounds": store.rounds_completed}
        return {"rc": 0, "rows": rows, "facts": facts, "damaged_rows": store.damaged_rows.tolist(),
                "warnings": [f"{w.category.__name__}: {w.message}" for w in caught]}
    except FedAuditError as err:
        return {"rc": err.exit_code, "err": f"error: {err}"}
    except BaseException:  # noqa: BLE001
        return {"rc": 99, "err": traceback.format_exc()}


def main(paths: list[str]) -> None:
    """One JSON report per file, one line each (several files share one interpreter start)."""
    for path in paths:
        report = {"inspect": run_cli(["inspect", path, "--json"]), "verify": run_cli(["verify", path, "--json"]),
                  "read": read_all(path)}
        sys.stdout.write(json.dumps(report) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
