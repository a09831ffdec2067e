"""The gate: every check of the shadow stage, one fail-closed verdict.

:func:`run_gate` reads a week of pair logs (and labels, and v2's offline reference scores), runs
the checks the :class:`~shadowlab.policy.GatePolicy` asks for and returns a frozen
:class:`GateVerdict`. Each check gives a :class:`CheckResult` with a status

* ``PASS`` — within the policy's limit;
* ``WARN`` — outside the limit of a check whose severity is ``"warn"`` (reported, not fatal);
* ``FAIL`` — outside the limit of a check whose severity is ``"fail"``;
* ``INCONCLUSIVE`` — the check could not be computed (too little data, a missing input, an
  analysis that is not available or raised). Fail closed: an INCONCLUSIVE check fails the gate
  unless its policy section sets ``allow_inconclusive = true``.

The verdict is ``PASS`` (sign +1) only when no check fails and no disallowed check is
inconclusive; otherwise ``FAIL`` (a check failed) or ``INCONCLUSIVE`` (nothing failed but the
evidence is missing), both with sign −1.

The gate is deterministic: the same inputs and policy give the same predicate apart from its
``created`` time (every random choice is seeded from ``policy.seed``; the gate's own passes are
integer counts).

Reads of the week: the labelled and audited pairs are pulled once (counts, accuracy and
feedback share them); after the threshold is chosen, one read computes the counts, trigger
parity's flags per day and segment and the load replay's per-interval arrivals together
(:func:`shadowlab.engine.fuse`; each summary is exactly what its own pass gives); the other
analyses make their own passes. The labelled pull runs on a thread beside the threshold's
calibration (neither needs the other), and the checks run two at a time on threads
(:data:`CHECK_WORKERS`): polars releases the GIL while it reads and numpy while it computes, so
one step's numpy work fills the core another's pass leaves idle (50 M pairs on 2 cores,
in-process: 30.2-30.8 s one step at a time, 24.8-27.5 s with both; peak RSS +0.4 GB). Results
are listed in :data:`CHECKS` order and are the same as one at a time (tested): each step reads
the shared context and writes only its own fields and results.

Checks and the analyses they read
---------------------------------
==================  ==========================================================================
enough_data         rows, days covered, labelled rows, audit rows (the counts)
production_health   v2 error / null-score rates and coverage overall, per segment and per
                    segment-day; latency p99 vs a limit and vs v1 (ratio or slack in ms),
                    overall and per segment (the counts, one latency-histogram pass)
outputs             :func:`shadowlab.drift.compare_scores`: v2 against its reference, per day;
                    v2 against v1 on the same requests (reported)
trigger_parity      v2's trigger rate over v1's at the chosen thresholds, overall, per day, per
                    segment (flag counts); ``calibrate`` uses
                    :func:`shadowlab.thresholds.calibrate_threshold`
load                :func:`shadowlab.load.simulate_load`: SLA-breach share, peak backlog
accuracy            :func:`shadowlab.thresholds.operating_point_metrics`
feedback            :func:`shadowlab.feedback.feedback_diagnostics`
==================  ==========================================================================

References
----------
.. [1] N. Siddiqi, *Credit Risk Scorecards*, Wiley, 2006 (PSI rules of thumb: 0.1 / 0.25).
.. [2] D. Sculley et al., "Hidden Technical Debt in Machine Learning Systems", NeurIPS 2015.
.. [3] H. Lakkaraju et al., "The Selective Labels Problem", KDD 2017.
"""

from __future__ import annotations

import datetime as dt
import importlib
import math
import textwrap
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from shadowlab import schema as S
from shadowlab.engine import (
    Aggregation,
    Source,
    as_source,
    frame_facts,
    fuse,
    grouped_sums,
    project,
)
from shadowlab.logs import id_probe
from shadowlab.policy import GatePolicy

__all__ = [
    "CHECKS",
    "FAIL",
    "INCONCLUSIVE",
    "PASS",
    "WARN",
    "CheckResult",
    "GateVerdict",
    "run_gate",
]

PASS = "PASS"
WARN = "WARN"
FAIL = "FAIL"
INCONCLUSIVE = "INCONCLUSIVE"

CHECKS = (
    "enough_data",
    "production_health",
    "outputs",
    "trigger_parity",
    "load",
    "accuracy",
    "feedback",
)
"""Check names in the order they run and print (policy sections ``[checks.<name>]``)."""

_DAY = "__day"
_NULL_SEGMENT = "(null)"
# Latency histogram: log-spaced bins of ratio 1.01, so a p99 read at a bin's upper edge is at most
# 1% above the exact order statistic (never below: the gate errs on the side of failing).
_LAT_RATIO = 1.01
_LAT_FLOOR_MS = 1e-3


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


def _json_safe(value: Any) -> Any:
    """Recursively turn numpy/polars scalars, dates, tuples and NaN into JSON-safe values."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_json_safe(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | str):
        return value
    if hasattr(value, "to_dict"):
        return _json_safe(value.to_dict())
    return str(value)


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one check.

    Attributes
    ----------
    name : str
        One of :data:`CHECKS`.
    status : {'PASS', 'WARN', 'FAIL', 'INCONCLUSIVE'}
    value : float or None
        The headline measured value (e.g. the worst trigger-rate ratio).
    limit : float, list or None
        The policy's limit for ``value`` (a ``[low, high]`` band for ratios).
    sentence : str
        One plain sentence: what was measured, against what, and where it went wrong.
    details : dict
        JSON-safe breakdown (per day, per segment, the analyses' figures).
    severity : {'fail', 'warn'}
    allow_inconclusive : bool
        Whether the policy lets this check be INCONCLUSIVE without failing the gate.
    """

    name: str
    status: str
    value: float | None
    limit: Any
    sentence: str
    details: dict = field(default_factory=dict, repr=False)
    severity: str = "fail"
    allow_inconclusive: bool = False

    @property
    def blocking(self) -> bool:
        """True when this result stops the gate from passing."""
        return self.status == FAIL or (self.status == INCONCLUSIVE and not self.allow_inconclusive)

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(
            {
                "name": self.name,
                "status": self.status,
                "value": self.value,
                "limit": self.limit,
                "sentence": self.sentence,
                "severity": self.severity,
                "allow_inconclusive": self.allow_inconclusive,
                "details": self.details,
            }
        )


@dataclass(frozen=True, slots=True)
class GateVerdict:
    """The gate's decision with everything it rests on.

    Attributes
    ----------
    verdict : {'PASS', 'FAIL', 'INCONCLUSIVE'}
    sign : int
        +1 for PASS, −1 otherwise.
    checks : tuple of CheckResult
        In the order of :data:`CHECKS`; checks whose severity is ``"off"`` are left out and named
        in ``skipped``.
    thresholds : dict
        ``primary``, ``candidate``, ``candidate_source`` (``"policy"``, ``"calibrate"``) and
        ``inclusive``.
    models : dict
        Model ids seen in the logs: ``{"primary": [...], "candidate": [...]}``.
    window : dict
        First and last timestamp, rows, days.
    policy : dict
        The policy as applied (after command-line overrides).
    shadowlab_version, created : str
        ``created`` is the only field that differs between two runs on the same inputs.
    skipped : tuple of str
    """

    verdict: str
    sign: int
    checks: tuple[CheckResult, ...]
    thresholds: dict = field(repr=False)
    models: dict = field(repr=False)
    window: dict = field(repr=False)
    policy: dict = field(repr=False)
    shadowlab_version: str = field(repr=False)
    created: str = field(repr=False)
    skipped: tuple[str, ...] = field(default=(), repr=False)

    def __repr__(self) -> str:
        parts = ", ".join(f"{c.name}={c.status}" for c in self.checks)
        return f"GateVerdict({self.verdict}, sign={self.sign:+d}: {parts})"

    def check(self, name: str) -> CheckResult:
        """The result of check ``name``."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(
            f"No check {name!r} in this verdict; it has {[c.name for c in self.checks]}."
        )

    def predicate(self) -> dict[str, Any]:
        """The in-toto predicate: JSON-safe, deterministic apart from ``created``."""
        return _json_safe(
            {
                "verdict": self.verdict,
                "sign": self.sign,
                "checks": [c.to_dict() for c in self.checks],
                "skipped": list(self.skipped),
                "thresholds": self.thresholds,
                "models": self.models,
                "window": self.window,
                "policy": self.policy,
                "shadowlab_version": self.shadowlab_version,
                "created": self.created,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        return self.predicate()

    def summary(self, width: int = 96) -> str:
        """A one-screen table of the checks, the verdict last."""
        t = self.thresholds
        lines = [
            f"shadowlab gate  {', '.join(self.models.get('primary', []))} -> "
            f"{', '.join(self.models.get('candidate', []))}",
            f"window {str(self.window.get('start', '?'))[:19]} .. "
            f"{str(self.window.get('end', '?'))[:19]}  "
            f"rows {self.window.get('rows', 0):,}  days {self.window.get('days', 0)}",
            f"thresholds  v1 {_fmt(t.get('primary'))}  v2 {_fmt(t.get('candidate'))} "
            f"({t.get('candidate_source')})",
            "",
            f"{'check':<18} {'status':<13} {'value':>10} {'limit':>14}",
        ]
        for c in self.checks:
            lines.append(f"{c.name:<18} {c.status:<13} {_fmt(c.value):>10} {_fmt(c.limit):>14}")
            wrapped = textwrap.wrap(c.sentence, width=width - 4)
            if len(wrapped) > 3:
                wrapped = [*wrapped[:2], wrapped[2][: width - 8] + " …"]
            lines.extend("    " + w for w in wrapped)
        for name in self.skipped:
            lines.append(f"{name:<18} {'off':<13}")
        lines.append("")
        reason = ""
        blocking = [c.name for c in self.checks if c.blocking]
        if blocking:
            reason = f"  (blocking: {', '.join(blocking)})"
        lines.append(f"VERDICT: {self.verdict} ({self.sign:+d}){reason}")
        return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e12:
            return f"{int(v):,}"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


# --------------------------------------------------------------------------------------------
# Context shared by the checks
# --------------------------------------------------------------------------------------------


class _Inconclusive(Exception):
    """Raised inside a check when it cannot be computed; becomes an INCONCLUSIVE result."""


@dataclass
class _Context:
    source: Source
    labels: pl.DataFrame | None
    reference: pl.DataFrame | None
    policy: GatePolicy
    segments: list[str]
    primary_threshold: float
    candidate_threshold: float | None = None
    candidate_source: str = "policy"
    calibration: Any = None
    calibration_error: str | None = None
    counts: pl.DataFrame | None = None  # keyed by day, segments, model ids
    seed: int = 0
    cache: dict = field(default_factory=dict)

    def flags(self, model: str) -> pl.Expr:
        t = self.primary_threshold if model == S.PRIMARY else self.candidate_threshold
        col = pl.col(S.score_column(model))
        inclusive = self.policy.thresholds.inclusive
        return (col >= t) if inclusive else (col > t)


def _segment_keys(segments: Sequence[str]) -> list[pl.Expr]:
    return [pl.col(s).cast(pl.String).fill_null(_NULL_SEGMENT).alias(s) for s in segments]


_US_PER_DAY = 86_400_000_000


def _utc_day_key() -> pl.Expr:
    """The UTC day as an integer (days since 1970-01-01): integer arithmetic on the physical
    timestamp, several times cheaper per row than ``dt.date()``; :func:`_as_date` turns the small
    aggregated key back into a date."""
    return (pl.col(S.TS).dt.epoch("us") // _US_PER_DAY).alias(_DAY)


def _as_date(frame: pl.LazyFrame) -> pl.LazyFrame:
    return frame.with_columns(pl.col(_DAY).cast(pl.Int32).cast(pl.Date))


_COUNT_KEYS = ("rows", "scored", "c_error", "p_error", "c_null", "p_null", "audit")
_LABEL_COUNTS = ("labelled", "audit_labelled")


def _model_columns(models: tuple[str, str] | None) -> list[pl.Expr]:
    """The two model-id columns: read from the rows, or constants when the logs' validation
    already established the one pair (:func:`shadowlab.logs.scan_pairs`; reading the two
    string columns costs ~0.5 s of a counting pass at 50 M pairs)."""
    if models is None:
        return [pl.col(S.PRIMARY_MODEL), pl.col(S.CANDIDATE_MODEL)]
    return [
        pl.lit(models[0], pl.String).alias(S.PRIMARY_MODEL),
        pl.lit(models[1], pl.String).alias(S.CANDIDATE_MODEL),
    ]


def _day_segment_keys(segments: Sequence[str]) -> dict[str, pl.Expr]:
    """Group keys (UTC day number, segments), identical in every summary that
    :func:`shadowlab.engine.fuse` joins."""
    return {_DAY: _utc_day_key(), **{e.meta.output_name(): e for e in _segment_keys(segments)}}


def _count_aggregation(
    segments: Sequence[str], models: tuple[str, str] | None = None
) -> Aggregation:
    """The counts keyed by (UTC day number, segments[, model ids]); :func:`_finish_counts`
    dates the days and (with ``models`` known, then not read) adds the model-id columns; the
    label counts come from :func:`_labelled_counts`."""
    p, c = pl.col(S.PRIMARY_SCORE), pl.col(S.CANDIDATE_SCORE)
    keys = _day_segment_keys(segments)
    if models is None:
        keys.update({S.PRIMARY_MODEL: pl.col(S.PRIMARY_MODEL)})
        keys.update({S.CANDIDATE_MODEL: pl.col(S.CANDIDATE_MODEL)})
    i64 = pl.Int64
    return grouped_sums(
        keys,
        {
            "rows": None,
            "scored": (p.is_not_null() & c.is_not_null()).cast(i64),
            "c_error": pl.col(S.CANDIDATE_ERROR).is_not_null().cast(i64),
            "p_error": pl.col(S.PRIMARY_ERROR).is_not_null().cast(i64),
            "c_null": c.is_null().cast(i64),
            "p_null": p.is_null().cast(i64),
            "audit": pl.col(S.AUDIT).fill_null(False).cast(i64),
        },
        mins={"ts_min": pl.col(S.TS)},
        maxs={"ts_max": pl.col(S.TS)},
    )


def _finish_counts(counts: pl.DataFrame, models: tuple[str, str] | None) -> pl.DataFrame:
    """Dated days and, when they were not read, the model-id columns (the column order is
    :func:`_labelled_counts`' to set)."""
    if counts.height == 0:
        return counts
    if models is not None:
        counts = counts.with_columns(_model_columns(models))
    return _as_date(counts.lazy()).collect()


_LABELLED_PAIR_COLUMNS = (
    S.REQUEST_ID,
    S.PRIMARY_SCORE,
    S.CANDIDATE_SCORE,
    S.AUDIT,
    S.AUDIT_RATE,
)
"""Columns of the labelled pairs kept for the accuracy check (what its own pull would fetch)."""


_FEEDBACK_PAIR_COLUMNS = (S.SERVED, S.TRAFFIC_PCT)
"""Further columns the feedback check reads from the same pull (its audited and labelled rows)."""


def _pull_labelled(
    source: Source,
    label_ids: pl.Series,
    segments: Sequence[str],
    models: tuple[str, str] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``(labelled, pulled)``: one pull of the audited pairs and of the pairs whose request id
    has a label, by a 64-bit hash of the id (:func:`shadowlab.logs.id_probe`), in scan order;
    ``labelled`` keeps the rows whose id is exactly a label's (an exact string test on the few
    pulled rows drops the rare hash collision). The counts and the accuracy check read
    ``labelled``; the feedback check reads ``pulled`` (its own pull would select the same rows)."""
    ids = [S.PRIMARY_MODEL, S.CANDIDATE_MODEL] if models is None else []
    wanted = [S.TS, *segments, *ids, *_LABELLED_PAIR_COLUMNS, *_FEEDBACK_PAIR_COLUMNS]
    cols = list(dict.fromkeys(wanted))
    pulled = source.pull(pl.col(S.AUDIT).fill_null(False) | id_probe(label_ids), cols)
    if models is not None:
        pulled = pulled.with_columns(_model_columns(models))
    labelled = pulled.filter(pl.col(S.REQUEST_ID).is_in(label_ids.implode()).fill_null(False))
    return labelled, pulled


def _labelled_counts(
    counts: pl.DataFrame, labelled: pl.DataFrame | None, segments: Sequence[str]
) -> pl.DataFrame:
    """``counts`` (the merged :func:`_count_aggregation`) with ``labelled`` and
    ``audit_labelled``: the labelled pairs (:func:`_pull_labelled`) counted per key."""
    if counts.height == 0:
        return counts
    keys = [_DAY, *segments, S.PRIMARY_MODEL, S.CANDIDATE_MODEL]
    order = [*keys, *_COUNT_KEYS, *_LABEL_COUNTS, "ts_min", "ts_max"]
    if labelled is None:
        zero = [pl.lit(0, dtype=pl.Int64).alias(c) for c in _LABEL_COUNTS]
        return counts.with_columns(zero).select(order)
    per_key = _as_date(
        labelled.lazy()
        .with_columns(_utc_day_key(), *_segment_keys(segments))
        .group_by(keys)
        .agg(
            pl.len().cast(pl.Int64).alias("labelled"),
            pl.col(S.AUDIT).fill_null(False).sum().cast(pl.Int64).alias("audit_labelled"),
        )
    ).collect()
    return (
        counts.join(per_key, on=keys, how="left", nulls_equal=True, maintain_order="left")
        .with_columns(pl.col(list(_LABEL_COUNTS)).fill_null(0))
        .select(order)
    )


def _latency_aggregation(segments: Sequence[str]) -> Aggregation:
    """Latency histograms of both models per segment: rows per ``(*segments, "__k")`` with
    ``__k = 2 * bin + model`` (model 0 v1, 1 v2; bin ``floor(log(max(ms, floor)) / log(1.01))``,
    i.e. bins 1 % wide). One integer key: a string model column in the group-by keys cost
    ~25 % more at 50 M pairs. :func:`_latency_bins` splits the key."""
    keys = (*segments, "__k")
    log_ratio = math.log(_LAT_RATIO)

    def binned(col: str, model: int, lf: pl.LazyFrame) -> pl.LazyFrame:
        lat = pl.col(col)
        bin_ = (lat.clip(lower_bound=_LAT_FLOOR_MS).log() / log_ratio).floor().cast(pl.Int64)
        return (
            lf.filter(lat.is_not_null() & lat.is_finite())
            .select(*_segment_keys(segments), (bin_ * 2 + model).alias("__k"))
            .group_by(list(keys))
            .agg(pl.len().cast(pl.Int64).alias("n"))
        )

    def build(lf: pl.LazyFrame) -> pl.LazyFrame:
        return pl.concat([binned(S.PRIMARY_LATENCY, 0, lf), binned(S.CANDIDATE_LATENCY, 1, lf)])

    return Aggregation(build=build, keys=keys, reduce={"n": "sum"})


def _latency_bins(lat: pl.DataFrame) -> pl.DataFrame:
    """:func:`_latency_aggregation`'s rows with ``__model`` (``'primary'``/``'candidate'``) and
    ``__bin`` in place of the key (floor division: bins below 1 ms are negative)."""
    if lat.height == 0:
        return lat
    bin_ = pl.col("__k") // 2
    model = (
        pl.when(pl.col("__k") - 2 * bin_ == 0)
        .then(pl.lit(S.PRIMARY))
        .otherwise(pl.lit(S.CANDIDATE))
    )
    return lat.with_columns(model.alias("__model"), bin_.alias("__bin")).drop("__k")


def _trigger_aggregation(ctx: _Context) -> Aggregation:
    """Rows with both scores and each model's flags per (UTC day number, segments)."""
    both = pl.col(S.PRIMARY_SCORE).is_not_null() & pl.col(S.CANDIDATE_SCORE).is_not_null()
    return grouped_sums(
        _day_segment_keys(ctx.segments),
        {
            "n": None,
            "p_flags": ctx.flags(S.PRIMARY).cast(pl.Int64),
            "c_flags": ctx.flags(S.CANDIDATE).cast(pl.Int64),
        },
        where=both,
    )


def _load_replay_aggregation(ctx: _Context, t2: float) -> Aggregation:
    """The one pass of the load check's :func:`shadowlab.load.simulate_load` call."""
    from shadowlab.load import load_aggregation

    return load_aggregation(
        {"v1": (S.PRIMARY, ctx.primary_threshold), "v2": (S.CANDIDATE, t2)},
        interval=ctx.policy.review.interval,
        baseline="v1",
        inclusive=ctx.policy.thresholds.inclusive,
    )


@dataclass(frozen=True)
class _Prefetched:
    """A source whose listed aggregations were already computed (in one fused read)."""

    source: Source
    results: Mapping[str, pl.DataFrame]
    engine: str = "prefetched"

    def aggregate(self, agg: Aggregation) -> pl.DataFrame:
        if agg.spec is not None and (hit := self.results.get(agg.spec.signature())) is not None:
            return hit
        return self.source.aggregate(agg)

    def pull(self, predicate: pl.Expr, columns: Sequence[str]) -> pl.DataFrame:
        return self.source.pull(predicate, columns)

    def collect_schema(self) -> Mapping[str, Any]:
        return self.source.collect_schema()


def _one_read(ctx: _Context) -> None:
    """The counts, and with a v2 threshold trigger parity's flags per (day, segment) and the
    load replay's per-interval arrivals, from one read of the pairs
    (:func:`shadowlab.engine.fuse`) instead of three. ``ctx.counts`` gets the counts; the two
    checks find their summaries in ``ctx.cache``, identical to what their own passes give."""
    models = frame_facts(ctx.source).get("models")
    aggs = [_count_aggregation(ctx.segments, models)]
    checks = ctx.policy.checks
    wanted = (checks.trigger_parity.severity, checks.load.severity)
    if ctx.candidate_threshold is not None and "off" not in wanted:
        aggs += [_trigger_aggregation(ctx), _load_replay_aggregation(ctx, ctx.candidate_threshold)]
    try:
        fused = ctx.source.aggregate(fuse(aggs))
    except Exception:  # the counts alone, raising what is wrong; each check runs its own pass
        fused, aggs = None, aggs[:1]
    counts = project(fused, aggs, 0) if fused is not None else ctx.source.aggregate(aggs[0])
    ctx.counts = _labelled_counts(
        _finish_counts(counts, models), ctx.cache.pop("labelled_for_counts", None), ctx.segments
    )
    if fused is not None and len(aggs) > 1:
        ctx.cache["prefetched"] = {
            agg.spec.signature(): project(fused, aggs, i)  # type: ignore[union-attr]
            for i, agg in enumerate(aggs[1:], start=1)
        }


def _p99(bins: np.ndarray, counts: np.ndarray, q: float = 0.99) -> float | None:
    """Upper edge of the histogram bin holding the ``q`` order statistic (<= 1% high)."""
    total = int(counts.sum())
    if total == 0:
        return None
    order = np.argsort(bins)
    cum = np.cumsum(counts[order])
    k = math.ceil(q * total)  # rank of the q-quantile (inverted-CDF definition)
    idx = int(np.searchsorted(cum, k))
    return float(_LAT_RATIO ** (bins[order][idx] + 1))


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def _result(
    ctx: _Context,
    name: str,
    breached: bool,
    value: Any,
    limit: Any,
    sentence: str,
    details: dict,
) -> CheckResult:
    pol = ctx.policy.check_policy(name)
    status = PASS
    if breached:
        status = FAIL if pol.severity == "fail" else WARN
    return CheckResult(
        name, status, value, limit, sentence, details, pol.severity, pol.allow_inconclusive
    )


def _check_enough_data(ctx: _Context) -> CheckResult:
    pol = ctx.policy.checks.enough_data
    counts = ctx.counts
    rows = int(counts["rows"].sum()) if counts.height else 0
    scored = int(counts["scored"].sum()) if counts.height else 0
    days = int(counts.filter(pl.col("rows") > 0)[_DAY].n_unique()) if counts.height else 0
    labelled = int(counts["labelled"].sum()) if counts.height else 0
    audit = int(counts["audit"].sum()) if counts.height else 0
    measured = {"scored_rows": scored, "days": days, "labelled": labelled, "audit": audit}
    minimum = {
        "scored_rows": pol.min_rows,
        "days": pol.min_days,
        "labelled": pol.min_labelled,
        "audit": pol.min_audit,
    }
    if ctx.labels is None:
        measured["labelled"] = None
    short = [k for k in minimum if measured[k] is None or measured[k] < minimum[k]]
    details = {"rows": rows, "measured": measured, "minimum": minimum, "short": short}
    if short:
        what = ", ".join(
            f"{k} {'none (no labels given)' if measured[k] is None else format(measured[k], ',')}"
            f" < {minimum[k]:,}"
            for k in short
        )
        return CheckResult(
            "enough_data",
            INCONCLUSIVE,
            float(scored),
            float(pol.min_rows),
            f"Too little evidence to decide: {what}.",
            details,
            pol.severity,
            pol.allow_inconclusive,
        )
    return _result(
        ctx,
        "enough_data",
        False,
        float(scored),
        float(pol.min_rows),
        f"{scored:,} scored pairs over {days} days, {labelled:,} labelled, "
        f"{audit:,} in the audit slice.",
        details,
    )


_HEALTH_LABELS = {
    "error_rate": "v2 error rate",
    "null_rate": "v2 null-score rate",
    "coverage": "coverage",
    "candidate_latency_p99_ms": "v2 latency p99 (ms)",
    "latency_vs_primary": "v2 latency p99 vs v1",
}


def _check_production_health(ctx: _Context) -> CheckResult:
    pol = ctx.policy.checks.production_health
    counts = ctx.counts
    if counts.height == 0:
        raise _Inconclusive("the logs hold no rows")
    lat = _latency_bins(ctx.source.aggregate(_latency_aggregation(ctx.segments)))
    sums = ["rows", "scored", "c_error", "p_error", "c_null", "p_null"]

    def measure(frame: pl.DataFrame, latf: pl.DataFrame) -> dict[str, Any]:
        tot = {k: int(frame[k].sum()) for k in sums}
        n = tot["rows"]
        out: dict[str, Any] = {
            "rows": n,
            "error_rate": tot["c_error"] / n if n else None,
            "null_rate": tot["c_null"] / n if n else None,
            "coverage": tot["scored"] / n if n else None,
            "primary_error_rate": tot["p_error"] / n if n else None,
        }
        for model in (S.PRIMARY, S.CANDIDATE):
            m = latf.filter(pl.col("__model") == model) if latf.height else latf
            out[f"{model}_latency_p99_ms"] = (
                _p99(m["__bin"].to_numpy(), m["n"].to_numpy()) if m.height else None
            )
        p, c = out["primary_latency_p99_ms"], out["candidate_latency_p99_ms"]
        out["latency_p99_ratio"] = c / p if (c is not None and p) else None
        # v2 may be slower than v1 by the ratio, or by the slack in ms, whichever is larger
        out["latency_vs_primary"] = (
            None
            if c is None or p is None
            else c - max(pol.max_latency_p99_ratio * p, p + pol.latency_slack_ms)
        )
        return out

    limits = {
        "error_rate": ("max", pol.max_error_rate),
        "null_rate": ("max", pol.max_null_rate),
        "coverage": ("min", pol.min_coverage),
        "candidate_latency_p99_ms": ("max", pol.max_latency_p99_ms),
        "latency_vs_primary": ("max", 0.0),
    }

    def judge(m: dict[str, Any]) -> tuple[list[str], list[str]]:
        bad, unknown = [], []
        for key, (kind, lim) in limits.items():
            v = m[key]
            if v is None:
                unknown.append(key)
            elif (kind == "max" and v > lim) or (kind == "min" and v < lim):
                bad.append(key)
        return bad, unknown

    def say(key: str, m: dict[str, Any]) -> str:
        if key == "latency_vs_primary":
            return (
                f"v2 latency p99 {_fmt(m['candidate_latency_p99_ms'])} ms vs v1 "
                f"{_fmt(m['primary_latency_p99_ms'])} ms"
            )
        v = m[key]
        shown = _fmt(v) if key == "candidate_latency_p99_ms" else _pct(v)
        kind, lim = limits[key]
        lim_s = _fmt(lim) if key == "candidate_latency_p99_ms" else _pct(lim)
        return f"{_HEALTH_LABELS[key]} {shown} ({'>' if kind == 'max' else '<'} {lim_s})"

    overall = measure(counts, lat)
    bad_all, unknown_all = judge(overall)
    failures = [f"overall {say(k, overall)}" for k in bad_all]
    segments: dict[str, dict[str, Any]] = {}
    cell_failures: list[tuple[float, str]] = []
    rate_keys = ("error_rate", "null_rate", "coverage")

    def note(where: str, m: dict[str, Any], bad: list[str]) -> None:
        # a breach already visible overall is not repeated for every segment and day
        new = [k for k in bad if k not in bad_all]
        if new:
            severity = max(m["error_rate"] or 0.0, m["null_rate"] or 0.0)
            cell_failures.append((-severity, f"{where}: " + ", ".join(say(k, m) for k in new)))

    for seg in ctx.segments:
        for (value,), part in counts.group_by([seg]):
            lpart = lat.filter(pl.col(seg) == value) if lat.height else lat
            m = measure(part, lpart)
            judged = m["rows"] >= pol.min_segment_rows
            bad = judge(m)[0] if judged else []
            m.update(judged=judged, breaches=bad)
            segments[f"{seg}={value}"] = m
            note(f"{seg}={value}", m, bad)
    # Rates per day and per segment-day too: a failure for two days of one country is not
    # averaged away over the week (latency stays per segment: its histogram has no day key).
    cells: dict[str, dict[str, Any]] = {}
    for keys in [[_DAY]] + [[seg, _DAY] for seg in ctx.segments]:
        for key_values, part in counts.group_by(keys):
            m = measure(part, lat.clear())
            if m["rows"] < pol.min_segment_rows:
                continue
            bad = [k for k in judge(m)[0] if k in rate_keys]
            where = " on ".join(
                str(v) if k == _DAY else f"{k}={v}" for k, v in zip(keys, key_values, strict=True)
            )
            if bad:
                cells[where] = {k: m[k] for k in ("rows", *rate_keys)} | {"breaches": bad}
                if where.split(" on ")[0] not in {f.split(":")[0] for _, f in cell_failures}:
                    note(where, m, bad)
    segments = dict(sorted(segments.items()))
    cell_failures.sort()
    for i, (sev, text) in enumerate(cell_failures):
        where = text.split(":")[0]
        days = sorted(w.split(" on ")[1] for w in cells if w.startswith(where + " on "))
        if days and " on " not in where:
            cell_failures[i] = (sev, f"{text} [breaching on {', '.join(days[:4])}]")
    failures += [f for _, f in cell_failures[:4]]
    if len(cell_failures) > 4:
        failures.append(f"+{len(cell_failures) - 4} more")
    judged_segments = [s for s in segments.values() if s["judged"]]
    worst = max([overall["error_rate"] or 0.0] + [s["error_rate"] or 0.0 for s in judged_segments])
    details = {
        "overall": overall,
        "segments": segments,
        "breaching_days": dict(sorted(cells.items())),
        "limits": {
            "max_error_rate": pol.max_error_rate,
            "max_null_rate": pol.max_null_rate,
            "min_coverage": pol.min_coverage,
            "max_latency_p99_ms": pol.max_latency_p99_ms,
            "max_latency_p99_ratio": pol.max_latency_p99_ratio,
            "latency_slack_ms": pol.latency_slack_ms,
            "min_segment_rows": pol.min_segment_rows,
        },
        "latency_p99_note": "upper edge of a log-spaced histogram bin: at most 1% above exact",
    }
    if failures:
        return _result(
            ctx,
            "production_health",
            True,
            worst,
            pol.max_error_rate,
            "v2 unhealthy: " + "; ".join(failures) + ".",
            details,
        )
    if unknown_all:
        raise _Inconclusive(
            "cannot compute "
            + ", ".join(_HEALTH_LABELS[k] for k in unknown_all)
            + " (no values in the logs)"
        )
    seg_note = f" and in each of {len(judged_segments)} judged segments" if ctx.segments else ""
    return _result(
        ctx,
        "production_health",
        False,
        worst,
        pol.max_error_rate,
        f"v2 error rate {_pct(overall['error_rate'])}, coverage "
        f"{_pct(overall['coverage'])}, latency p99 "
        f"{_fmt(overall['candidate_latency_p99_ms'])} ms (v1 "
        f"{_fmt(overall['primary_latency_p99_ms'])} ms): within limits "
        f"overall{seg_note}.",
        details,
    )


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.3g}%"


def _ratio(c: int, p: int) -> float | None:
    if p == 0:
        return 1.0 if c == 0 else math.inf
    return c / p


def _distance(ratio: float) -> float:
    """How far a rate ratio is from parity, symmetric in over- and under-flagging."""
    return abs(math.log(ratio)) if 0 < ratio < math.inf else math.inf


def _check_trigger_parity(ctx: _Context) -> CheckResult:
    pol = ctx.policy.checks.trigger_parity
    _need_candidate_threshold(ctx)
    t = _source(ctx).aggregate(_trigger_aggregation(ctx))
    if t.height:
        t = _as_date(t.lazy()).collect()
    if t.height == 0 or int(t["n"].sum()) == 0:
        raise _Inconclusive("no request has both scores")
    n, pf, cf = (int(t[k].sum()) for k in ("n", "p_flags", "c_flags"))
    ratio = _ratio(cf, pf)
    overall = {"n": n, "primary_rate": pf / n, "candidate_rate": cf / n, "ratio": ratio}
    failures: list[str] = []
    lo, hi = pol.band
    if not lo <= ratio <= hi:
        failures.append(
            f"overall v2 flags {_pct(overall['candidate_rate'])} vs v1 "
            f"{_pct(overall['primary_rate'])} (ratio {_fmt(ratio)}, band [{lo}, {hi}])"
        )

    def cells(key: str, band: tuple[float, float]) -> dict[str, dict[str, Any]]:
        out = {}
        g = t.group_by(key).agg(pl.col("n", "p_flags", "c_flags").sum()).sort(key)
        for row in g.iter_rows(named=True):
            r = _ratio(row["c_flags"], row["p_flags"])
            out[str(row[key])] = {
                "n": row["n"],
                "primary_rate": row["p_flags"] / row["n"],
                "candidate_rate": row["c_flags"] / row["n"],
                "primary_flags": row["p_flags"],
                "candidate_flags": row["c_flags"],
                "ratio": r,
                # too few flags on both sides: the ratio is noise, reported but not judged
                "judged": max(row["p_flags"], row["c_flags"]) >= pol.min_flags,
                "within": band[0] <= r <= band[1],
            }
        return out

    def outside(cellmap: dict[str, dict[str, Any]]) -> list[str]:
        bad = [k for k, m in cellmap.items() if m["judged"] and not m["within"]]
        return sorted(bad, key=lambda k: -_distance(cellmap[k]["ratio"]))

    per_day = cells(_DAY, pol.day_band)
    per_segment = {seg: cells(seg, pol.segment_band) for seg in ctx.segments}
    if pol.per_day and (bad := outside(per_day)):
        failures.append(
            f"{len(bad)} of {len(per_day)} days outside {list(pol.day_band)} ("
            + ", ".join(f"{d} {_fmt(per_day[d]['ratio'])}" for d in bad[:3])
            + (", …" if len(bad) > 3 else "")
            + ")"
        )
    if pol.per_segment:
        for seg, cellmap in per_segment.items():
            if bad := outside(cellmap):
                failures.append(
                    f"{seg} outside {list(pol.segment_band)}: "
                    + ", ".join(
                        f"{v} {_fmt(cellmap[v]['ratio'])} ({cellmap[v]['primary_flags']} -> "
                        f"{cellmap[v]['candidate_flags']} flags)"
                        for v in bad[:3]
                    )
                    + (f" (+{len(bad) - 3} more)" if len(bad) > 3 else "")
                )
    judged = [m for m in per_day.values() if m["judged"]]
    judged += [m for cm in per_segment.values() for m in cm.values() if m["judged"]]
    details = {
        "primary_threshold": ctx.primary_threshold,
        "candidate_threshold": ctx.candidate_threshold,
        "candidate_source": ctx.candidate_source,
        "overall": overall,
        "worst_judged_ratio": max((m["ratio"] for m in judged), key=_distance, default=None),
        "per_day": per_day,
        "per_segment": per_segment,
        "band": list(pol.band),
        "day_band": list(pol.day_band) if pol.per_day else None,
        "segment_band": list(pol.segment_band) if pol.per_segment else None,
        "min_flags": pol.min_flags,
    }
    if ctx.calibration is not None:
        details["calibration"] = _json_safe(ctx.calibration)
    if failures:
        return _result(
            ctx,
            "trigger_parity",
            True,
            ratio,
            list(pol.band),
            "Trigger rate off: " + "; ".join(failures) + ".",
            details,
        )
    scope = " and ".join(
        w for w, on in (("day", pol.per_day), ("segment", pol.per_segment and ctx.segments)) if on
    )
    return _result(
        ctx,
        "trigger_parity",
        False,
        ratio,
        list(pol.band),
        f"v2 flags {_pct(overall['candidate_rate'])} vs v1 "
        f"{_pct(overall['primary_rate'])} (ratio {_fmt(ratio)})"
        + (f"; every judged {scope} within its band." if scope else "."),
        details,
    )


def _source(ctx: _Context) -> Source:
    """The pairs, with the summaries :func:`_one_read` computed ahead."""
    done = ctx.cache.get("prefetched")
    return _Prefetched(ctx.source, done) if done else ctx.source


def _need_candidate_threshold(ctx: _Context) -> float:
    if ctx.candidate_threshold is None:
        raise _Inconclusive(ctx.calibration_error or "v2's threshold could not be determined")
    return ctx.candidate_threshold


def _need(module: str, name: str) -> Any:
    fn = _optional(module, name)
    if fn is None:
        raise _Inconclusive(f"{module}.{name} is not available in this shadowlab build")
    return fn


def _check_load(ctx: _Context) -> CheckResult:
    pol = ctx.policy.checks.load
    t2 = _need_candidate_threshold(ctx)
    simulate_load = _need("shadowlab.load", "simulate_load")
    review_capacity = _need("shadowlab.load", "ReviewCapacity")
    r = ctx.policy.review
    capacity = review_capacity(
        reviewers=r.reviewers,
        mean_service_minutes=r.mean_service_minutes,
        target_utilisation=r.target_utilisation,
    )
    report = simulate_load(
        _source(ctx),
        {"v1": (S.PRIMARY, ctx.primary_threshold), "v2": (S.CANDIDATE, t2)},
        capacity,
        sla=dt.timedelta(minutes=r.sla_minutes),
        interval=r.interval,
        seed=ctx.seed,
        mode="fluid",
        baseline="v1",
        inclusive=ctx.policy.thresholds.inclusive,
    )
    rows = {row["policy"]: row for row in report.summary.iter_rows(named=True)}
    v1, v2 = rows["v1"], rows["v2"]
    for key in ("sla_breach_share", "peak_backlog"):
        for row in (v1, v2):
            if row.get(key) is None or not math.isfinite(row[key]):
                raise _Inconclusive(f"simulate_load gave no {key} (no reviews replayed?)")
    reviewers = float(np.mean(report.capacity.schedule))
    # A backlog of less than one item per reviewer on duty is no backlog: floor the baseline there
    # so a v1 queue that never waits does not turn v2's handful of waiting items into a ratio of ∞.
    floor = max(reviewers, 1.0)
    breach_increase = v2["sla_breach_share"] - v1["sla_breach_share"]
    backlog_ratio = v2["peak_backlog"] / max(v1["peak_backlog"], floor)
    failures = []
    if breach_increase > pol.max_sla_breach_increase:
        failures.append(
            f"SLA breaches {_pct(v1['sla_breach_share'])} under v1 -> "
            f"{_pct(v2['sla_breach_share'])} under v2"
        )
    if backlog_ratio > pol.max_peak_backlog_ratio:
        failures.append(
            f"peak backlog {v1['peak_backlog']:.0f} -> {v2['peak_backlog']:.0f} items "
            f"(x{backlog_ratio:.2f} of max(v1's, {floor:.0f} on duty))"
        )
    keep = (
        "policy",
        "threshold",
        "arrivals",
        "utilisation",
        "mean_wait_minutes",
        "p95_wait_minutes",
        "p99_wait_minutes",
        "peak_backlog",
        "peak_at",
        "sla_breach_share",
        "time_to_drain_minutes",
        "reviewers_needed",
    )
    details = {
        "summary": [{k: row.get(k) for k in keep} for row in rows.values()],
        "capacity": report.capacity.to_dict(),
        "capacity_note": report.capacity_note,
        "sla_minutes": r.sla_minutes,
        "sla_breach_increase": breach_increase,
        "peak_backlog_ratio": backlog_ratio,
        "backlog_floor_items": floor,
        "headline": report.headline(),
    }
    if failures:
        return _result(
            ctx,
            "load",
            True,
            breach_increase,
            pol.max_sla_breach_increase,
            "Review queue overloaded by v2: " + "; ".join(failures) + ".",
            details,
        )
    return _result(
        ctx,
        "load",
        False,
        breach_increase,
        pol.max_sla_breach_increase,
        f"Review queue like v1's: SLA breaches {_pct(v1['sla_breach_share'])} -> "
        f"{_pct(v2['sla_breach_share'])}, peak backlog {v1['peak_backlog']:.0f} -> "
        f"{v2['peak_backlog']:.0f} items ({reviewers:.3g} reviewer(s) on duty).",
        details,
    )


def _check_feedback(ctx: _Context) -> CheckResult:
    pol = ctx.policy.checks.feedback
    t2 = _need_candidate_threshold(ctx)
    feedback_diagnostics = _need("shadowlab.feedback", "feedback_diagnostics")
    if ctx.labels is None:
        raise _Inconclusive("no labels were given")
    rep = feedback_diagnostics(
        ctx.source,
        ctx.labels,
        ctx.primary_threshold,
        t2,
        confidence=ctx.policy.checks.accuracy.confidence,
        pulled_pairs=ctx.cache.pop("feedback_pairs", None),  # the gate's labelled pull
        inclusive=ctx.policy.thresholds.inclusive,
    )
    urm, imm = rep.unlabelled_risk_mass, rep.immature_share
    if urm is None or not math.isfinite(urm):
        raise _Inconclusive("v2 flags nothing, so its unlabelled-risk mass is undefined")
    details = {
        "unlabelled_risk_mass": urm,
        "risk_mass_chargebacked": rep.risk_mass_chargebacked,
        "immature_share": imm,
        "immature_days": list(rep.immature_days),
        "as_of": rep.as_of,
        "candidate_precision": rep.candidate_precision,
        "candidate_recall": rep.candidate_recall,
        "primary_precision": rep.primary_precision,
        "primary_recall": rep.primary_recall,
        "audit_plan": rep.audit_plan,
        "label_counts": rep.label_counts,
        "warnings": list(rep.warnings),
        "limits": {
            "max_unlabelled_risk_mass": pol.max_unlabelled_risk_mass,
            "max_immature_share": pol.max_immature_share,
        },
    }
    failures = []
    if urm > pol.max_unlabelled_risk_mass:
        failures.append(
            f"{_pct(urm)} of v2's flags would never be reviewed under today's policy "
            f"(limit {_pct(pol.max_unlabelled_risk_mass)})"
        )
    if imm is not None and imm > pol.max_immature_share:
        failures.append(
            f"{_pct(imm)} of the week's labels are still to come "
            f"(limit {_pct(pol.max_immature_share)})"
        )
    if failures:
        return _result(
            ctx,
            "feedback",
            True,
            urm,
            pol.max_unlabelled_risk_mass,
            "Labels cannot vouch for v2: " + "; ".join(failures) + ".",
            details,
        )
    return _result(
        ctx,
        "feedback",
        False,
        urm,
        pol.max_unlabelled_risk_mass,
        f"Unlabelled-risk mass {_pct(urm)} of v2's flags; {_pct(imm)} of labels still "
        f"to come ({len(rep.immature_days)} immature days).",
        details,
    )


def _window_label(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time(0) else value.isoformat()
    return str(value)


def _check_outputs(ctx: _Context) -> CheckResult:
    pol = ctx.policy.checks.outputs
    compare_scores = _need("shadowlab.drift", "compare_scores")
    if ctx.reference is None:
        raise _Inconclusive(
            "no reference (offline eval) scores were given, so v2's production scores cannot be "
            "held against what was validated (--reference or the policy's reference)"
        )
    ref = {
        m: ctx.reference.filter(pl.col("model") == m)["score"].cast(pl.Float64).drop_nulls()
        for m in (S.PRIMARY, S.CANDIDATE)
    }
    ref = {m: v for m, v in ref.items() if v.len() > 0}
    if S.CANDIDATE not in ref:
        raise _Inconclusive("the reference holds no 'candidate' scores")
    cmp = compare_scores(ctx.source, reference=ref, every=pol.every)
    table = cmp.table
    cols = ["window", "ks_statistic", "psi", "ks_pvalue", "wasserstein"]

    def rows(comparison: str, model: str) -> list[dict[str, Any]]:
        part = table.filter((pl.col("comparison") == comparison) & (pl.col("model") == model))
        extra = [c for c in ("spearman", "discordant_share") if c in part.columns]
        keep = [c for c in cols + extra if c in part.columns]
        out = part.sort("window").select(keep).to_dicts()
        for r in out:
            r["window"] = _window_label(r["window"])
        return out

    v2_ref = rows("vs_reference", S.CANDIDATE)
    if not v2_ref:
        raise _Inconclusive("compare_scores returned no v2-versus-reference comparison")
    v1_ref = rows("vs_reference", S.PRIMARY)
    paired = rows("candidate_vs_primary", S.CANDIDATE)
    drift_v2 = rows("vs_first_window", S.CANDIDATE)
    drift_v1 = rows("vs_first_window", S.PRIMARY)
    bad = [r for r in v2_ref if r["psi"] > pol.max_psi or r["ks_statistic"] > pol.max_ks]
    worst = max(v2_ref, key=lambda r: r["psi"])
    details = {
        "candidate_vs_reference": v2_ref,
        "primary_vs_reference": v1_ref,
        "candidate_vs_primary": paired,
        "candidate_vs_first_window": drift_v2,
        "primary_vs_first_window": drift_v1,
        "limits": {"max_psi": pol.max_psi, "max_ks": pol.max_ks},
        "note": "PSI and KS D are effect sizes (higher = further apart); at a week's volume every "
        "p-value is ~0, so the limits apply to the effect sizes. v2 against v1 is paired (same "
        "requests) and only reported.",
        "notes": list(cmp.notes),
    }
    v1_worst = max((r["psi"] for r in v1_ref), default=None)
    v1_note = "" if v1_worst is None else f"; v1 vs its reference: max PSI {v1_worst:.3g}"
    if drift_v2:
        top2 = max(drift_v2, key=lambda r: r["psi"])
        v1_drift = max((r["psi"] for r in drift_v1), default=math.nan)
        v1_note += (
            f"; drift through the week: v2 max PSI {top2['psi']:.3g} against its first day "
            f"(on {top2['window']}), v1 {v1_drift:.3g}"
        )
    paired_note = ""
    if paired:
        psi_pair = max(r["psi"] for r in paired)
        paired_note = f"; v2 vs v1 on the same requests: max PSI {psi_pair:.3g} (reported)"
    if bad:
        days = ", ".join(
            f"{r['window']} PSI {r['psi']:.3g} KS {r['ks_statistic']:.3g}" for r in bad[:3]
        )
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        both = (
            " v1 moved as well, so the inputs changed, not only v2"
            if v1_worst is not None and v1_worst > pol.max_psi
            else ""
        )
        return _result(
            ctx,
            "outputs",
            True,
            worst["psi"],
            pol.max_psi,
            f"v2's scores left its reference on {len(bad)} of {len(v2_ref)} days: "
            f"{days}{more}{v1_note}.{both}",
            details,
        )
    return _result(
        ctx,
        "outputs",
        False,
        worst["psi"],
        pol.max_psi,
        f"v2's scores match its reference every day (max PSI {worst['psi']:.3g}, max "
        f"KS {max(r['ks_statistic'] for r in v2_ref):.3g}){v1_note}{paired_note}.",
        details,
    )


def _check_accuracy(ctx: _Context) -> CheckResult:
    pol = ctx.policy.checks.accuracy
    t2 = _need_candidate_threshold(ctx)
    operating_point_metrics = _need("shadowlab.accuracy", "operating_point_metrics")
    if ctx.labels is None:
        raise _Inconclusive("no labels were given")
    om = operating_point_metrics(
        ctx.source,
        ctx.labels,
        ctx.primary_threshold,
        t2,
        reference=ctx.reference,
        seed=ctx.seed,
        confidence=pol.confidence,
        inclusive=ctx.policy.thresholds.inclusive,
        labelled_pairs=ctx.cache.pop("labelled_pairs", None),  # freed for the later checks
    )
    slice_ = "audit" if pol.unbiased else "all_labels"
    figures: dict[str, Any] = {}
    failures: list[str] = []
    for metric, allowed in (("precision", pol.max_precision_drop), ("recall", pol.max_recall_drop)):
        try:
            v1 = om.metric(slice_, S.PRIMARY, metric)
            v2 = om.metric(slice_, S.CANDIDATE, metric)
            diff = om.metric(slice_, "difference", metric)
        except KeyError as exc:
            raise _Inconclusive(f"no {metric} on the {slice_} slice ({exc})") from exc
        if not all(math.isfinite(x) for x in (*v1, *v2, *diff)):
            raise _Inconclusive(
                f"{metric} on the {slice_} slice is undefined (no positives or no flags there)"
            )
        figures[metric] = {"primary": v1, "candidate": v2, "difference": diff, "allowed": allowed}
        # A drop counts only when the whole interval of v2 - v1 lies below -allowed.
        if diff[2] < -allowed:
            failures.append(
                f"{metric} {v2[0]:.3f} vs v1 {v1[0]:.3f} (difference {diff[0]:+.3f}, "
                f"interval [{diff[1]:+.3f}, {diff[2]:+.3f}] below -{allowed})"
            )
    ap_note = ""
    if om.reference is not None and om.reference.height:
        ref_rows = {r["model"]: r for r in om.reference.iter_rows(named=True)}
        r2 = ref_rows.get(S.CANDIDATE)
        if r2 is not None and r2.get("reference_ap") is not None:
            try:
                ap = om.metric(slice_, S.CANDIDATE, "average_precision")
            except KeyError:
                ap = (math.nan, math.nan, math.nan)
            figures["average_precision_vs_reference"] = {
                "reference_ap": r2["reference_ap"],
                "production_ap": ap,
                "allowed": pol.max_ap_drop_vs_reference,
            }
            if math.isfinite(ap[2]):
                ap_note = f"; AP {ap[0]:.3f} in production vs {r2['reference_ap']:.3f} offline"
                if r2["reference_ap"] - ap[2] > pol.max_ap_drop_vs_reference:
                    failures.append(
                        f"v2's production AP {ap[0]:.3f} (interval up to {ap[2]:.3f}) is more "
                        f"than {pol.max_ap_drop_vs_reference} below its offline "
                        f"{r2['reference_ap']:.3f}"
                    )
    details = {
        "slice": slice_,
        "figures": figures,
        "n_labelled": om.n_labelled,
        "n_audit_labelled": om.n_audit_labelled,
        "warning": om.warning,
        "metrics": om.metrics,
        "reference": om.reference,
        "estimate": om.estimate,
        "notes": list(om.notes),
    }
    p, r = figures["precision"], figures["recall"]
    # headline: the best case for v2 of its precision difference; a drop fails below -allowed
    value = p["difference"][2]
    where = "audit slice (unbiased)" if pol.unbiased else "all labels (biased toward v1)"
    if failures:
        return _result(
            ctx,
            "accuracy",
            True,
            value,
            -pol.max_precision_drop,
            f"v2 worse on the {where}: " + "; ".join(failures) + ".",
            details,
        )
    return _result(
        ctx,
        "accuracy",
        False,
        value,
        -pol.max_precision_drop,
        f"On the {where}: precision v2 {p['candidate'][0]:.3f} vs v1 "
        f"{p['primary'][0]:.3f} (v2-v1 in [{p['difference'][1]:+.3f}, "
        f"{p['difference'][2]:+.3f}]), recall {r['candidate'][0]:.3f} vs "
        f"{r['primary'][0]:.3f}{ap_note}; no drop beyond the limits.",
        details,
    )


def _optional(module: str, name: str) -> Any:
    """``module.name`` if it exists (the analyses land independently), else None."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        return None
    return getattr(mod, name, None)


_CHECK_FUNCTIONS: dict[str, Callable[[_Context], CheckResult]] = {
    "enough_data": _check_enough_data,
    "production_health": _check_production_health,
    "outputs": _check_outputs,
    "trigger_parity": _check_trigger_parity,
    "load": _check_load,
    "accuracy": _check_accuracy,
    "feedback": _check_feedback,
}


def _run_check(name: str, ctx: _Context) -> CheckResult:
    pol = ctx.policy.check_policy(name)
    try:
        return _CHECK_FUNCTIONS[name](ctx)
    except _Inconclusive as exc:
        why = str(exc)
    except Exception as exc:  # fail closed: an analysis that raises cannot vouch for v2
        why = f"the analysis raised {type(exc).__name__}: {exc}"
    why = why.rstrip(". ")
    return CheckResult(
        name,
        INCONCLUSIVE,
        None,
        None,
        f"Could not be computed: {why}.",
        {"error": why},
        pol.severity,
        pol.allow_inconclusive,
    )


CHECK_WORKERS = 2
"""Checks run side by side (threads): while one waits on a polars pass, another's numpy work
uses the idle core. Each check reads the shared context and writes only its own result.
``1`` runs every step (the labelled pull, the threshold, each check) one after the other."""


def _run_checks(
    names: Sequence[str], ctx: _Context, step: Callable[[str], None]
) -> list[CheckResult]:
    """Every check's result, in ``names`` order whatever order they finish in."""
    lock = threading.Lock()

    def run(name: str) -> CheckResult:
        with lock:
            step(name)
        return _run_check(name, ctx)

    if CHECK_WORKERS <= 1:
        return [run(n) for n in names]
    with ThreadPoolExecutor(CHECK_WORKERS, thread_name_prefix="shadowlab-check") as pool:
        return list(pool.map(run, names))


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def _read_labels(labels: Any) -> pl.DataFrame | None:
    if labels is None:
        return None
    if isinstance(labels, pl.DataFrame):
        frame = labels
    elif isinstance(labels, pl.LazyFrame):
        frame = labels.collect()
    else:
        from shadowlab.logs import scan_labels

        frame = scan_labels(labels).collect()
    missing = [c for c in S.LABEL_SCHEMA if c not in frame.columns]
    if missing:
        raise ValueError(
            f"The labels lack column(s) {missing}; they have {frame.columns}. Labels need "
            f"{list(S.LABEL_SCHEMA)}."
        )
    return frame


_REFERENCE_COLUMNS = {"model": pl.String, "score": pl.Float64, "label": pl.Int8}


def _read_reference(reference: Any) -> pl.DataFrame | None:
    if reference is None:
        return None
    if isinstance(reference, pl.DataFrame):
        frame = reference
    elif isinstance(reference, pl.LazyFrame):
        frame = reference.collect()
    else:
        path = Path(reference)
        if not path.is_file():
            raise FileNotFoundError(f"Reference file {str(path)!r} does not exist.")
        frame = pl.read_parquet(path)
    missing = [c for c in ("model", "score") if c not in frame.columns]
    if missing:
        raise ValueError(
            f"The reference lacks column(s) {missing}; it has {frame.columns}. A reference holds "
            "each model's offline eval scores: columns model ('primary'/'candidate'), score, label."
        )
    models = set(frame["model"].unique().to_list())
    if not models & {S.PRIMARY, S.CANDIDATE}:
        raise ValueError(
            f"The reference's 'model' column holds {sorted(models, key=str)}; expected 'primary' "
            "and/or 'candidate'."
        )
    return frame


def _resolve_segments(policy: GatePolicy, names: Sequence[str]) -> list[str]:
    if policy.segments is None:
        return ["country"] if "country" in names else []
    missing = [s for s in policy.segments if s not in names]
    if missing:
        import difflib

        hints = [difflib.get_close_matches(m, list(names), n=1) for m in missing]
        hint = "".join(f" Did you mean {h[0]!r}?" for h in hints if h)
        raise ValueError(
            f"The policy's segments {missing} are not columns of the pair logs.{hint} "
            f"Columns: {list(names)}."
        )
    return list(policy.segments)


def _label_ids(labels: pl.DataFrame | None) -> pl.Series | None:
    if labels is None:
        return None
    # as they are: the probe hashes them into a set, and is_in builds its own set (a unique()
    # of the 2.4 M label ids of a 50 M-pair week first cost ~0.8 s)
    return labels[S.REQUEST_ID]


def _pull_labels(ctx: _Context) -> None:
    """One pull of the labelled and audited pairs (:func:`_pull_labelled`), kept in
    ``ctx.cache`` for the counts, the accuracy check and the feedback check."""
    label_ids = _label_ids(ctx.labels)
    if label_ids is None:
        return
    models = frame_facts(ctx.source).get("models")
    labelled, pulled = _pull_labelled(ctx.source, label_ids, ctx.segments, models)
    ctx.cache["labelled_for_counts"] = labelled
    ctx.cache["labelled_pairs"] = labelled.select(_LABELLED_PAIR_COLUMNS)
    ctx.cache["feedback_pairs"] = pulled


def _choose_candidate_threshold(ctx: _Context) -> None:
    choice = ctx.policy.thresholds.candidate
    if choice != "calibrate":
        ctx.candidate_threshold = float(choice)
        ctx.candidate_source = "policy"
        return
    ctx.candidate_source = "calibrate"
    calibrate = _optional("shadowlab.thresholds", "calibrate_threshold")
    if calibrate is None:
        ctx.calibration_error = (
            "v2's threshold is 'calibrate' but shadowlab.thresholds.calibrate_threshold is not "
            "available"
        )
        return
    try:
        cal = calibrate(
            ctx.source,
            ctx.primary_threshold,
            inclusive=ctx.policy.thresholds.inclusive,
        )
    except Exception as exc:  # fail closed
        ctx.calibration_error = f"calibrate_threshold raised {type(exc).__name__}: {exc}"
        return
    ctx.calibration = cal
    ctx.candidate_threshold = float(cal.threshold)


def _real(value: Any) -> bool:
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _thresholds_iv(primary: Any, candidate: Any) -> tuple[float | None, float | str | None]:
    if primary is not None and not _real(primary):
        raise ValueError(
            "The 'primary_threshold' parameter of run_gate must be a finite float or None. "
            f"Got {primary!r} instead."
        )
    if candidate is not None and candidate != "calibrate" and not _real(candidate):
        raise ValueError(
            "The 'candidate_threshold' parameter of run_gate must be a finite float, "
            f"'calibrate' or None. Got {candidate!r} instead."
        )
    return (
        None if primary is None else float(primary),
        candidate if candidate is None or candidate == "calibrate" else float(candidate),
    )


def run_gate(
    pairs: Any,
    labels: Any = None,
    *,
    reference: Any = None,
    policy: GatePolicy | str | Path | None = None,
    primary_threshold: float | None = None,
    candidate_threshold: float | str | None = None,
    now: dt.datetime | None = None,
    progress: Callable[[str], None] | None = None,
) -> GateVerdict:
    """Run every check of the policy on a shadow week and return the verdict.

    Parameters
    ----------
    pairs : LazyFrame, DataFrame, path, glob, list or Spark DataFrame
        The pair logs (anything :func:`shadowlab.engine.as_source` accepts).
    labels : DataFrame, LazyFrame, path or None
        Labels (:data:`shadowlab.schema.LABEL_SCHEMA`); without them the label-based checks are
        INCONCLUSIVE.
    reference : DataFrame, path or None
        v2's (and v1's) offline eval scores, columns ``model``, ``score``, ``label``; defaults to
        the policy's ``reference``. Without one the ``outputs`` check is INCONCLUSIVE.
    policy : GatePolicy, path or None
        The policy; ``None`` uses the documented defaults (:class:`~shadowlab.policy.GatePolicy`).
    primary_threshold, candidate_threshold : float, 'calibrate' or None
        Override the policy's ``[thresholds]`` (the command line's ``--*-threshold``).
    now : datetime, optional
        The ``created`` time (default: now, UTC); the only non-deterministic field.
    progress : callable, optional
        Called with each step's name as it starts (the counting pass, the threshold, then every
        check), e.g. a :class:`shadowlab.progress.Progress` of ``len(CHECKS) + 2`` steps.

    Returns
    -------
    GateVerdict

    Raises
    ------
    ValueError
        When v1's threshold is given nowhere, a policy segment is not a column, or an input lacks
        a required column (bad input, exit code 2 in the CLI).
    """
    from shadowlab import __version__
    from shadowlab.policy import load_policy

    if policy is None or isinstance(policy, str | Path):
        policy = load_policy(policy)
    elif not isinstance(policy, GatePolicy):
        raise ValueError(
            "The 'policy' parameter of run_gate must be a GatePolicy, a path or None. "
            f"Got {type(policy).__name__} instead."
        )
    primary_threshold, candidate_threshold = _thresholds_iv(primary_threshold, candidate_threshold)
    policy = policy.with_thresholds(primary=primary_threshold, candidate=candidate_threshold)
    if policy.thresholds.primary is None:
        raise ValueError(
            "v1's production threshold is missing: set [thresholds] primary in the policy or pass "
            "--primary-threshold."
        )
    source = as_source(pairs)
    names = list(source.collect_schema().keys())
    missing = [c for c in S.PAIR_SCHEMA if c not in names]
    if missing:
        raise ValueError(f"The pair logs lack column(s) {missing}; they have {names}.")
    labels_frame = _read_labels(labels)
    if reference is None:
        reference = policy.reference_path()
    reference_frame = _read_reference(reference)
    segments = _resolve_segments(policy, names)
    ctx = _Context(
        source=source,
        labels=labels_frame,
        reference=reference_frame,
        policy=policy,
        segments=segments,
        primary_threshold=float(policy.thresholds.primary),
        seed=policy.seed,
    )
    step = progress or (lambda name: None)
    step("counting")
    if CHECK_WORKERS > 1:  # the labelled pull and the threshold need nothing of each other
        with ThreadPoolExecutor(1, thread_name_prefix="shadowlab-labels") as pool:
            pulled = pool.submit(_pull_labels, ctx)
            step("threshold")
            _choose_candidate_threshold(ctx)
            pulled.result()
    else:
        _pull_labels(ctx)
        step("threshold")
        _choose_candidate_threshold(ctx)
    _one_read(ctx)
    skipped = [n for n in CHECKS if ctx.policy.check_policy(n).severity == "off"]
    for name in skipped:  # every check is a progress step, as when they ran in turn
        step(name)
    results = _run_checks([n for n in CHECKS if n not in skipped], ctx, step)
    if any(r.status == FAIL for r in results):
        verdict = FAIL
    elif any(r.blocking for r in results):
        verdict = INCONCLUSIVE
    else:
        verdict = PASS
    counts = ctx.counts
    models = {
        S.PRIMARY: sorted(counts[S.PRIMARY_MODEL].drop_nulls().unique().to_list())
        if counts.height
        else [],
        S.CANDIDATE: sorted(counts[S.CANDIDATE_MODEL].drop_nulls().unique().to_list())
        if counts.height
        else [],
    }
    window = {
        "start": counts["ts_min"].min() if counts.height else None,
        "end": counts["ts_max"].max() if counts.height else None,
        "rows": int(counts["rows"].sum()) if counts.height else 0,
        "days": int(counts[_DAY].n_unique()) if counts.height else 0,
        "segments": segments,
    }
    created = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).isoformat(timespec="seconds")
    return GateVerdict(
        verdict=verdict,
        sign=1 if verdict == PASS else -1,
        checks=tuple(results),
        thresholds={
            "primary": ctx.primary_threshold,
            "candidate": ctx.candidate_threshold,
            "candidate_source": ctx.candidate_source,
            "inclusive": policy.thresholds.inclusive,
        },
        models=models,
        window=_json_safe(window),
        policy=policy.to_dict(),
        shadowlab_version=__version__,
        created=created,
        skipped=tuple(skipped),
    )
