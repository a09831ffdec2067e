"""Benchmark of shadowlab.load: fluid replay of a big week, the stochastic recursion, SimPy.

Usage::

    python benchmarks/bench_load.py --rows 1e7            # fluid over a cached 10 M-row week
    python benchmarks/bench_load.py --rows 1e6 --simpy    # also time a SimPy M/M/c model

Three measurements:

1. ``simulate_load`` in fluid mode over a Parquet week from :mod:`weeks` (three policies: v1, v2 at
   v1's threshold, v2 at the threshold matching v1's trigger count), wall time split into the
   aggregation pass and the whole call;
2. the stochastic FIFO recursion alone, per arrival, with constant staffing (heap) and with an
   hour-of-week schedule (numpy argmin over reviewers);
3. when ``simpy`` is importable (not a dependency), the same M/M/c arrivals and service times run
   through a textbook SimPy process model, with the mean wait of both to show they agree.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from weeks import PRIMARY_THRESHOLD, write_week  # noqa: E402

from shadowlab import schema as S  # noqa: E402
from shadowlab.engine import as_source  # noqa: E402
from shadowlab.load import (  # noqa: E402
    ReviewCapacity,
    _Clock,
    _fifo_constant,
    _fifo_schedule,
    load_aggregation,
    simulate_load,
)


def _simpy_waits(arrival: np.ndarray, service: np.ndarray, c: int) -> np.ndarray:
    import simpy

    env = simpy.Environment()
    team = simpy.Resource(env, capacity=c)
    waits = np.empty(arrival.size)

    def item(i: int):
        with team.request() as req:
            yield req
            waits[i] = env.now - arrival[i]
            yield env.timeout(service[i])

    def source():
        for i, t in enumerate(arrival):
            yield env.timeout(t - env.now)
            env.process(item(i))

    env.process(source())
    env.run()
    return waits


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=float, default=1e7)
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "shadowlab-bench"))
    ap.add_argument("--arrivals", type=int, default=200_000)
    ap.add_argument("--simpy", action="store_true")
    args = ap.parse_args()

    week = write_week(Path(args.cache), int(args.rows))
    paths = sorted(str(p) for p in (week / "pairs").rglob("*.parquet"))
    lf = pl.scan_parquet(paths)
    t1 = PRIMARY_THRESHOLD
    v1_flags = lf.select((pl.col(S.PRIMARY_SCORE) >= t1).sum()).collect().item()
    t2 = float(
        lf.select(pl.col(S.CANDIDATE_SCORE).top_k(v1_flags).min()).collect().item()
    )  # v2's threshold with v1's trigger count (what shadowlab.thresholds computes)
    policies = {
        "v1": ("primary", t1),
        "v2 naive": ("candidate", t1),
        "v2 calibrated": ("candidate", t2),
    }
    t = time.perf_counter()
    as_source(lf).aggregate(load_aggregation(policies))
    agg_s = time.perf_counter() - t
    t = time.perf_counter()
    rep = simulate_load(lf, policies, ReviewCapacity(None, 10.0))
    fluid_s = time.perf_counter() - t
    rows = rep.rows
    print(f"fluid: {rows:,} rows, aggregation pass {agg_s:.2f} s, simulate_load {fluid_s:.2f} s")
    print(f"  {rep.capacity_note}")
    with pl.Config(tbl_cols=12, tbl_width_chars=160, float_precision=2):
        print(
            rep.summary.select(
                "policy",
                "arrivals",
                "utilisation",
                "p95_wait_minutes",
                "sla_breach_share",
                "peak_backlog",
                "reviewers_needed",
            )
        )
    print("  " + rep.headline())

    rng = np.random.default_rng(0)
    n = args.arrivals
    lam, s, c = 1.0, 2.5, 3
    arrival = np.cumsum(rng.exponential(1 / lam, n))
    service = rng.exponential(s, n)
    t = time.perf_counter()
    w_heap = _fifo_constant(arrival, service, c) - arrival
    heap_s = time.perf_counter() - t
    clock = _Clock(1793577600.0, np.full(168, c))
    t = time.perf_counter()
    w_sched = _fifo_schedule(arrival, service, np.full(168, c), clock) - arrival
    sched_s = time.perf_counter() - t
    print(
        f"stochastic recursion, {n:,} arrivals, c={c}: heap {1e6 * heap_s / n:.2f} us/arrival, "
        f"schedule {1e6 * sched_s / n:.2f} us/arrival; mean wait {w_heap.mean():.4f} / "
        f"{w_sched.mean():.4f} min"
    )
    if args.simpy:
        try:
            t = time.perf_counter()
            w_simpy = _simpy_waits(arrival, service, c)
            simpy_s = time.perf_counter() - t
            print(
                f"simpy: {1e6 * simpy_s / n:.2f} us/arrival, mean wait {w_simpy.mean():.4f} min "
                f"(max |diff| vs heap {np.abs(w_simpy - w_heap).max():.2e})"
            )
        except ModuleNotFoundError:
            print("simpy: not installed")


if __name__ == "__main__":
    main()
