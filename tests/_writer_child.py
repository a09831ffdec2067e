"""Subprocess helper for test_logs: write pair rows, report flushes, wait to be killed.

Usage: python _writer_child.py ROOT MODE
  MODE "block":  write 3_500 rows in batches of 100 with max_rows=1_000 (three flushes), print
                 the writer's counters as one JSON line, then sleep until killed.
  MODE "stream": write rows one by one with max_rows=250 forever, printing the cumulative
                 flushed count after every flush.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time

import polars as pl

from shadowlab import schema as S
from shadowlab.logs import PairLogWriter

T0 = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)


def frame(start: int, n: int) -> pl.DataFrame:
    i = pl.int_range(start, start + n, eager=True)
    return pl.DataFrame(
        {
            S.TS: pl.Series([T0 + dt.timedelta(seconds=k) for k in range(start, start + n)]),
            S.REQUEST_ID: ("req-" + i.cast(pl.String)),
            S.PRIMARY_MODEL: ["fraud:1.0.0"] * n,
            S.CANDIDATE_MODEL: ["fraud:2.0.0"] * n,
            S.SERVED: [S.PRIMARY] * n,
            S.TRAFFIC_PCT: [0.0] * n,
            S.PRIMARY_SCORE: (i % 97) / 97.0,
            S.CANDIDATE_SCORE: (i % 89) / 89.0,
            S.PRIMARY_ERROR: [None] * n,
            S.CANDIDATE_ERROR: [None] * n,
            S.PRIMARY_LATENCY: [1.0] * n,
            S.CANDIDATE_LATENCY: [2.0] * n,
            S.AUDIT: [False] * n,
            S.AUDIT_RATE: [0.0] * n,
        },
        schema_overrides=S.PAIR_SCHEMA,
    )


def main() -> None:
    root, mode = sys.argv[1], sys.argv[2]
    if mode == "block":
        writer = PairLogWriter(root, max_rows=1_000, max_seconds=3600)
        for start in range(0, 3_500, 100):
            writer.write_batch(frame(start, 100))
        print(json.dumps({"flushed": writer.rows_flushed, "buffered": writer.buffered}))
        sys.stdout.flush()
        time.sleep(3600)
    elif mode == "stream":
        writer = PairLogWriter(root, max_rows=250, max_seconds=3600)
        k = 0
        while True:
            rows = frame(k, 50).to_dicts()
            for row in rows:
                writer.write(row)
            k += 50
            if k % 250 == 0:
                print(writer.rows_flushed)
                sys.stdout.flush()
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
