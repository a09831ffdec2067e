"""Shared test builders: schema-conformant pair and label frames from plain arrays."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import polars as pl
import pytest

from shadowlab import schema as S

WEEK_START = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)  # a Monday


def make_pairs(
    primary_score: Sequence[float] | np.ndarray,
    candidate_score: Sequence[float] | np.ndarray,
    *,
    ts: Sequence[dt.datetime] | None = None,
    seconds: Sequence[float] | np.ndarray | None = None,
    audit: Sequence[bool] | np.ndarray | None = None,
    audit_rate: float = 0.0,
    traffic_pct: float = 0.0,
    served: Sequence[str] | None = None,
    request_ids: Sequence[str] | None = None,
    primary_model: str = "fraud:1.0.0",
    candidate_model: str = "fraud:2.0.0",
    **context: Sequence[object],
) -> pl.DataFrame:
    """A pair-log frame in schema v1. ``seconds`` are offsets from WEEK_START (default: spread
    evenly over 7 days). A NaN score is stored as null with an error message, as the router does."""
    p = np.asarray(primary_score, dtype=float)
    c = np.asarray(candidate_score, dtype=float)
    n = len(p)
    if ts is None:
        if seconds is None:
            seconds = np.linspace(0, 7 * 86400 - 1, n) if n else np.array([])
        ts = [WEEK_START + dt.timedelta(seconds=float(s)) for s in seconds]
    frame = pl.DataFrame(
        {
            S.TS: pl.Series(ts, dtype=pl.Datetime("us", "UTC")),
            S.REQUEST_ID: list(request_ids)
            if request_ids is not None
            else [f"r{i}" for i in range(n)],
            S.PRIMARY_MODEL: [primary_model] * n,
            S.CANDIDATE_MODEL: [candidate_model] * n,
            S.SERVED: list(served) if served is not None else [S.PRIMARY] * n,
            S.TRAFFIC_PCT: [traffic_pct] * n,
            S.PRIMARY_SCORE: [None if np.isnan(v) else float(v) for v in p],
            S.CANDIDATE_SCORE: [None if np.isnan(v) else float(v) for v in c],
            S.PRIMARY_ERROR: [("ValueError: nan" if np.isnan(v) else None) for v in p],
            S.CANDIDATE_ERROR: [("ValueError: nan" if np.isnan(v) else None) for v in c],
            S.PRIMARY_LATENCY: [1.0] * n,
            S.CANDIDATE_LATENCY: [2.0] * n,
            S.AUDIT: list(audit) if audit is not None else [False] * n,
            S.AUDIT_RATE: [audit_rate] * n,
        },
        schema=S.PAIR_SCHEMA,
    )
    if context:
        frame = frame.with_columns(pl.Series(k, list(v)) for k, v in context.items())
    return frame


def make_labels(
    request_ids: Sequence[str],
    labels: Sequence[int],
    *,
    source: str | Sequence[str] = "review",
    delay_hours: float | Sequence[float] = 2.0,
    ts: Sequence[dt.datetime] | None = None,
) -> pl.DataFrame:
    """A label frame in schema v1; label_ts is ``ts`` (default WEEK_START) plus ``delay_hours``."""
    n = len(request_ids)
    sources = [source] * n if isinstance(source, str) else list(source)
    delays = [delay_hours] * n if np.isscalar(delay_hours) else list(delay_hours)  # type: ignore[arg-type]
    base = list(ts) if ts is not None else [WEEK_START] * n
    return pl.DataFrame(
        {
            S.REQUEST_ID: list(request_ids),
            S.LABEL: list(labels),
            S.LABEL_TS: [
                b + dt.timedelta(hours=float(d)) for b, d in zip(base, delays, strict=True)
            ],
            S.SOURCE: sources,
        },
        schema=S.LABEL_SCHEMA,
    )


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261125)
