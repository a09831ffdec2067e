"""Fast parametric shadow weeks for benchmarks: schema-v1 pair logs, labels and reference scores.

The synthetic-week generator (:mod:`shadowlab.synth`) trains real models and routes every request
through the router, which is what tests need but too slow to make 50 M rows for every benchmark
run. This module draws the same *shape* of week directly with numpy (daily volume profile, a
trigger-shift candidate, a 1 % audit slice, selective labels) and writes it with pyarrow in the
same hive layout and Parquet layout (:func:`shadowlab.logs.parquet_write_options`), in chunks, so
memory stays bounded at any size. Weeks are cached by row count and :data:`LAYOUT`.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shadowlab import schema as S
from shadowlab.logs import parquet_write_options

START = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
PRIMARY_THRESHOLD = 0.5
CHUNK = 2_000_000
LAYOUT = 3
"""Version of the files' layout, in the cache folder's name: a week cached before a change of
layout (1: every column zstd, 1 M-row groups; 2: float columns LZ4; 3: timestamps delta + LZ4)
is written again, not reused."""
COUNTRIES = np.array(["DE", "FR", "GB", "NL", "ES", "IT", "PL", "SE"])
CHANNELS = np.array(["web", "app", "pos"])
_HOURLY = np.array(
    [
        0.3,
        0.2,
        0.15,
        0.12,
        0.12,
        0.2,
        0.5,
        0.9,
        1.2,
        1.3,
        1.3,
        1.35,
        1.4,
        1.35,
        1.3,
        1.3,
        1.35,
        1.45,
        1.5,
        1.5,
        1.35,
        1.1,
        0.8,
        0.5,
    ]
)


def _scores(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latent risk -> fraud truth, a primary score and a sharper, shifted candidate score."""
    z = rng.normal(size=n)
    fraud = rng.random(n) < 1 / (1 + np.exp(-(2.2 * z - 6.2)))
    primary = 1 / (1 + np.exp(-(1.6 * z + 1.1 * rng.normal(size=n) - 3.6)))
    candidate = 1 / (1 + np.exp(-(1.9 * z + 0.7 * rng.normal(size=n) - 3.55)))
    return fraud, primary, candidate


def write_week(root: Path, rows: int, *, seed: int = 0) -> Path:
    """Write (or reuse) a week of ``rows`` pairs under ``root/rows-<n>-layout<LAYOUT>``; return that folder."""
    out = root / f"rows-{rows}-layout{LAYOUT}"
    if (out / "manifest.json").exists():
        return out
    rng = np.random.default_rng(seed)
    # Requests per day: weekends at 80 % of weekdays.
    day_weight = np.array([1, 1, 1, 1, 1, 0.8, 0.8])
    per_day = np.floor(rows * day_weight / day_weight.sum()).astype(np.int64)
    per_day[-1] += rows - per_day.sum()
    schema = S.arrow_pair_schema({"country": pa.string(), "channel": pa.string()})
    label_schema = S.arrow_label_schema()
    label_writer = None
    (out / "labels").mkdir(parents=True, exist_ok=True)
    first_id = 0
    for day, n_day in enumerate(per_day):
        day_dir = out / "pairs" / f"date={(START + dt.timedelta(days=day)).date()}"
        day_dir.mkdir(parents=True, exist_ok=True)
        for part, lo in enumerate(range(0, int(n_day), CHUNK)):
            n = int(min(CHUNK, n_day - lo))
            hour = rng.choice(24, size=n, p=_HOURLY / _HOURLY.sum())
            sec = np.sort(hour * 3600 + rng.random(n) * 3600)
            ts_us = int((START + dt.timedelta(days=day)).timestamp() * 1_000_000) + (
                sec * 1_000_000
            ).astype(np.int64)
            fraud, primary, candidate = _scores(rng, n)
            audit = rng.random(n) < 0.01
            ids = pc.binary_join_element_wise(
                "r", pc.cast(pa.array(np.arange(first_id, first_id + n)), pa.string()), ""
            )
            first_id += n
            table = pa.table(
                {
                    S.TS: pa.array(ts_us, pa.timestamp("us", "UTC")),
                    S.REQUEST_ID: ids,
                    S.PRIMARY_MODEL: pa.array(np.full(n, "fraud:1.4.0")),
                    S.CANDIDATE_MODEL: pa.array(np.full(n, "fraud:2.0.0")),
                    S.SERVED: pa.array(np.full(n, S.PRIMARY)),
                    S.TRAFFIC_PCT: pa.array(np.zeros(n)),
                    S.PRIMARY_SCORE: pa.array(primary),
                    S.CANDIDATE_SCORE: pa.array(candidate),
                    S.PRIMARY_ERROR: pa.nulls(n, pa.string()),
                    S.CANDIDATE_ERROR: pa.nulls(n, pa.string()),
                    S.PRIMARY_LATENCY: pa.array(rng.gamma(4.0, 2.0, n)),
                    S.CANDIDATE_LATENCY: pa.array(rng.gamma(4.0, 3.0, n)),
                    S.AUDIT: pa.array(audit),
                    S.AUDIT_RATE: pa.array(np.full(n, 0.01)),
                    "country": pa.array(COUNTRIES[rng.integers(0, len(COUNTRIES), n)]),
                    "channel": pa.array(CHANNELS[rng.integers(0, len(CHANNELS), n)]),
                },
                schema=schema,
            )
            # the layout PairLogWriter writes (codecs, dictionaries, row groups): its read
            # cost is what a team's own logs would cost
            pq.write_table(
                table, day_dir / f"part-{part:05d}.parquet", **parquet_write_options(table.schema)
            )
            # Selective labels: reviews for v1 flags and the audit slice, chargebacks for 60 %
            # of the unflagged fraud, days later.
            flagged = primary >= PRIMARY_THRESHOLD
            reviewed = flagged | audit
            charged = ~reviewed & fraud & (rng.random(n) < 0.6)
            keep = reviewed | charged
            delay_h = np.where(reviewed, rng.gamma(2.0, 3.0, n), rng.gamma(3.0, 72.0, n))
            source = np.where(audit, "audit", np.where(flagged, "review", "chargeback"))
            labels = pa.table(
                {
                    S.REQUEST_ID: ids.filter(pa.array(keep)),
                    S.LABEL: pa.array(fraud[keep].astype(np.int8)),
                    S.LABEL_TS: pa.array(
                        ts_us[keep] + (delay_h[keep] * 3.6e9).astype(np.int64),
                        pa.timestamp("us", "UTC"),
                    ),
                    S.SOURCE: pa.array(source[keep]),
                },
                schema=label_schema,
            )
            if label_writer is None:
                label_writer = pq.ParquetWriter(
                    out / "labels" / "labels.parquet", label_schema, compression="zstd"
                )
            label_writer.write_table(labels)
    if label_writer is not None:
        label_writer.close()
    fraud, primary, candidate = _scores(rng, 200_000)
    ref = pa.table(
        {
            "model": pa.array(np.repeat([S.PRIMARY, S.CANDIDATE], len(fraud))),
            "score": pa.array(np.concatenate([primary, candidate])),
            "label": pa.array(np.concatenate([fraud, fraud]).astype(np.int8)),
        }
    )
    pq.write_table(ref, out / "reference.parquet", **parquet_write_options(ref.schema))
    manifest = {
        "rows": rows,
        "seed": seed,
        "primary_threshold": PRIMARY_THRESHOLD,
        "generator": "benchmarks/weeks.py (parametric)",
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out
