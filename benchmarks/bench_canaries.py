"""What canary clients add to a recorded run's time, measured side by side in one process.

Records the same FedSGD run of the SER model on ``demo-private`` (UDP, seed 0) with
and without ``--canaries``-style canary clients, alternating the two ``--repeats``
times, and reports the median wall time of each, their ratio (target: at most 1.2),
and the audit of the canary run (claimed epsilon against the lower bounds).

Usage::

    python benchmarks/bench_canaries.py --rounds 200 --canaries 1000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

from fedaudit.audit import record_run
from fedaudit.config import FLConfig
from fedaudit.data.demo import load_demo
from fedaudit.defenses import defenses_from_options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--canaries", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--target-epsilon", type=float, default=10.0)
    parser.add_argument("--clip", type=float, default=1.0)
    args = parser.parse_args()

    table = load_demo("demo-private")
    config = FLConfig(algorithm="fedsgd", rounds=args.rounds, seed=0)
    defenses = defenses_from_options(["udp"], {"target_epsilon": args.target_epsilon, "clip": args.clip})
    times: dict[str, list[float]] = {"plain": [], "canaries": []}
    audit = None
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(limits=1):  # BLAS threads stall under load
        warm = FLConfig(algorithm="fedsgd", rounds=1, seed=0)
        record_run(warm, table, Path(tmp) / "warm.h5", defenses=defenses, canaries=4)
        for rep in range(args.repeats):
            for name, canaries in (("plain", None), ("canaries", args.canaries)):
                out = Path(tmp) / f"{name}_{rep}.h5"
                t0 = time.perf_counter()
                result = record_run(config, table, out, defenses=defenses, canaries=canaries)
                times[name].append(time.perf_counter() - t0)
                if canaries:
                    audit = result.defense_report["privacy_audit"]
                print(f"repeat {rep} {name}: {times[name][-1]:.1f} s", flush=True)
    plain, canary = statistics.median(times["plain"]), statistics.median(times["canaries"])
    assert audit is not None
    print(json.dumps({
        "rounds": args.rounds, "canaries": args.canaries, "repeats": args.repeats,
        "seconds_plain": times["plain"], "seconds_canaries": times["canaries"],
        "median_plain": plain, "median_canaries": canary, "ratio": canary / plain,
        "epsilon_claimed": audit["epsilon_claimed"], "epsilon_lower_bound": audit["epsilon_lower_bound"],
        "one_run": audit["bounds"]["one_run"]["epsilon"], "clopper_pearson": audit["bounds"]["clopper_pearson"]["epsilon"],
        "gdp_mu": audit["gdp"]["mu"], "gdp_epsilon": audit["gdp"]["epsilon"],
        "canaries_per_round": audit["canaries_per_round"],
    }, indent=1))


if __name__ == "__main__":
    main()
