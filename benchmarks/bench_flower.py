"""Benchmark: recording overhead inside a Flower simulation.

The example app (``examples/flower/app.py``: the SER MLP on the demo corpus,
FedAvg) runs in one Flower simulation, one Ray session. Its ServerApp runs the
same seeded training several times: unrecorded (Flower's ``FedAvg``) and
recorded (``RecordingStrategy(FedAvg)`` writing an HDF5 file), interleaved (the
order alternates from one pair to the next), after one warm-up run that pays
for the Ray actors' start-up. The figure is the median of the per-pair ratios
recorded / unrecorded of the strategy's wall time (``Strategy.start``), with
their spread. Target: at most 1.10.

Usage::

    .venv/bin/python benchmarks/bench_flower.py --clients 10 --rounds 20 --repeats 5 --json /tmp/bench_flower.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "flower"
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Ray's workers unpickle the ClientApp by reference to the example module: make it importable there as `app`.
os.environ["PYTHONPATH"] = os.pathsep.join([str(EXAMPLE), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
sys.path.insert(0, str(EXAMPLE))


def _timed(fn: Any, sink: list[float]) -> Any:
    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            sink.append(time.perf_counter() - t0)

    return timed


def measure(setup: Any, *, repeats: int, out_dir: Path, num_cpus: int | None, args_background: bool = False) -> dict[str, Any]:
    import app as example
    from flwr.app import ArrayRecord, ConfigRecord, Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

    from fedaudit.integrations.flower import RecordingStrategy

    times: dict[str, list[float]] = {"plain": [], "recorded": []}
    in_recorder: list[float] = []  # seconds spent in the wrapper's own work, per call
    sizes: list[int] = []
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        fed = example.federation(setup)
        initial = ArrayRecord(example.build_model(setup, fed["n_features"]).state_dict())
        train_config = ConfigRecord({"lr": setup.lr, "local-epochs": setup.local_epochs,
                                     "batch-size": setup.batch_size})

        def one(arm: str, rounds: int, k: int) -> float:
            strategy: Any = FedAvg(fraction_train=setup.client_fraction, fraction_evaluate=0.0,
                                   min_available_nodes=setup.clients)
            if arm == "recorded":
                path = out_dir / f"run{k}.h5"
                strategy = RecordingStrategy(strategy, path, run_config=setup.flower_run_config(),
                                             client_id_key="partition-id", background=args_background, **example.recording_options(setup))
                view = strategy._view
                for name in ("sent", "received"):
                    setattr(view, name, _timed(getattr(view, name), in_recorder))
            t0 = time.perf_counter()
            strategy.start(grid=grid, initial_arrays=initial, num_rounds=rounds, train_config=train_config)
            elapsed = time.perf_counter() - t0
            if arm == "recorded":
                sizes.append(path.stat().st_size)
                path.unlink()
            return elapsed

        one("plain", 2, -1)  # warm-up: the Ray actors start and load the data
        for k in range(repeats):
            order = ("plain", "recorded") if k % 2 == 0 else ("recorded", "plain")
            for arm in order:
                times[arm].append(one(arm, setup.rounds, k))

    example.simulate(server, example.client_app(setup), setup.clients, num_cpus=num_cpus)
    ratios = [r / p for r, p in zip(times["recorded"], times["plain"], strict=True)]
    return {
        "plain_s": times["plain"], "recorded_s": times["recorded"], "ratios": ratios,
        "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
        "plain_median_s": statistics.median(times["plain"]), "recorded_median_s": statistics.median(times["recorded"]),
        "file_bytes": sizes[0] if sizes else None,
        "recorder_s_per_run": sum(in_recorder) / max(1, repeats),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--num-cpus", type=int, help="CPUs Ray may use (default: all)")
    parser.add_argument("--out-dir", type=Path, help="scratch folder for the recordings (default: a temp dir)")
    parser.add_argument("--background", action="store_true", help="write from a child process")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args(argv)

    import app as example

    dropout = (0.2, *([0.0] * (len(args.hidden) - 1)))
    setup = example.Setup(clients=args.clients, rounds=args.rounds, hidden=tuple(args.hidden), dropout=dropout)
    with tempfile.TemporaryDirectory(prefix="bench-flower-") as tmp:
        out_dir = args.out_dir or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        result = measure(setup, repeats=args.repeats, out_dir=out_dir, num_cpus=args.num_cpus,
                         args_background=args.background)
    import flwr
    import ray

    result.update({
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "python": platform.python_version(),
        "flwr": flwr.__version__, "ray": ray.__version__, "clients": args.clients, "rounds": args.rounds,
        "hidden": args.hidden, "repeats": args.repeats, "load_average": os.getloadavg()[0],
    })
    print(f"Flower, {args.clients} clients x {args.rounds} rounds, hidden {args.hidden}, {args.repeats} pairs")
    print(f"  unrecorded {result['plain_median_s']:.2f} s, recorded {result['recorded_median_s']:.2f} s "
          f"(median), recording {result['file_bytes'] / 1e6:.1f} MB")
    print(f"  time in the recording wrapper: {result['recorder_s_per_run']:.2f} s per recorded run")
    verdict = "met" if result["ratio_median"] <= 1.10 else "missed"
    print(f"  ratio {result['ratio_median']:.3f} ({result['ratio_min']:.3f}..{result['ratio_max']:.3f}); "
          f"target <= 1.10: {verdict}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
