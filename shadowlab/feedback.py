"""Feedback-loop diagnostics: what selective labels can and cannot say about the candidate.

A fraud model decides which transactions are reviewed, and reviews make the labels it is
retrained on. In a shadow week the labels therefore exist where v1 (the served model) flagged,
in the audit slice (a random sample drawn with a logged probability ``audit_rate``) and, late,
where a chargeback arrived. Accuracy read naively off those labels is biased: the requests only
v2 flags are unlabelled unless the audit slice drew them or a chargeback (which only ever says
"fraud") arrived. :func:`feedback_diagnostics` makes this visible and quantifies it:

1. the decision cross-tab (v1 flags × v2 flags) with label coverage by source and the observed
   positive rate per cell;
2. ``unlabelled_risk_mass``: the share of v2's flags that v1 did not flag and the audit slice did
   not draw;
3. worst/best-case (Manski) bounds on precision and recall when unlabelled outcomes could be
   anything, next to the design-based (Horvitz–Thompson/Hájek) estimate from reviews + audit
   slice with a confidence interval, and the naive all-label figure for contrast;
4. label maturity: the delay distribution per label source and, per day, the expected share of
   labels still in flight at ``as_of`` (right-censoring);
5. retraining drift: the labelled set each policy would produce, compared by size, positive rate
   and score/segment composition (PSI);
6. canary arms: label and positive rates by served arm when ``traffic_pct > 0``;
7. what to do: the audit rate needed to pin v2's precision on the disagreement region down to
   ``±margin`` (:func:`audit_rate_needed`).

Passes and data moved (issue 11)
--------------------------------
Labels are small (a few percent of the week): they are collected once, cut at ``as_of`` and
reduced to one row per request id (latest label wins). The week's pairs are never joined with
them as a whole; they are read in one streaming :class:`~shadowlab.engine.Aggregation` pass
and one refinement pull:

1. *counts and review-set composition* (one pass, :func:`_counts_and_composition`; no join):
   requests per ``(flags, hour)`` (flags pack v1 flag, v2 flag, audit drawn and served arm;
   the hour is integer arithmetic on the physical timestamp), 16 rows at most per logged
   hour; and the requests that v1 or v2 flags or the audit draws, counted per
   flags × (feature, value) for both models' score bins and every segment (unpivoted);
2. *pull*: the labelled or audited requests only (membership on 64-bit id hashes), eight
   columns. Locally they are left-joined with the label table once; that gives their full cell
   codes (label sources present, final label, design label) and weights ``1/audit_rate``, and
   the joint label-delay histogram. The rest of each ``(flags, hour)`` count is unlabelled and
   unaudited, so it forms the cell with no label bits and zero weight: every cell holds
   exactly the requests a left join of all pairs would have put there.

Memory is constant in the passes; what grows is the label table and the pulled rows, both
proportional to the number of labels. Everything else is a local finish on summaries of at
most a few thousand rows. The first pass reads the scores once for both summaries: its
``prepare``/``fold`` fast path counts each streamed chunk with ``np.bincount`` and summarises
only the review-set rows (a few percent) with the composition's group-by, so the week is never
buffered (a single polars plan with two outputs from one scan buffered it between its
consumers). At 50 M pairs this pass takes ~5.4 s of CPU where the two separate passes took
~6.5 s. (Folding the composition into the pull saved ~8% CPU for ~30% more peak memory at
50 M pairs; it was left out.)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from shadowlab import schema as S
from shadowlab.engine import Aggregation, as_source, merge_partials

__all__ = [
    "AuditPlan",
    "FeedbackReport",
    "MetricBounds",
    "audit_rate_needed",
    "feedback_diagnostics",
]

# Tie convention for "latest label wins": a later label_ts wins; at equal label_ts the source
# later in this order wins (a chargeback overrides a same-instant review), then a positive label.
_SOURCE_RANK: dict[str, int] = {"review": 0, "audit": 1, "chargeback": 2}
_DESIGN_SOURCES = ("review", "audit")  # labels whose existence the design, not the outcome, decides

# Label-delay histogram edges in hours: fine in the first day (reviews), then days to months
# (chargebacks). Quantiles read off it are interpolated inside a bin, so their error is at most
# one bin width; the mean and the maximum are exact.
_DELAY_EDGES_H: tuple[float, ...] = (
    *(0.0, 0.25, 0.5, 1, 2, 3, 4, 6, 8, 10, 12, 15, 18, 21, 24, 30, 36, 42, 48, 60, 72, 84, 96),
    *(24.0 * d for d in (5, 6, 7, 8, 9, 10, 12, 14, 17, 21, 24, 28, 35, 42, 49, 60, 75, 90)),
    *(24.0 * d for d in (120, 180, 365)),
)

_PSI_EPS = 1e-4  # share of an empty bin in the PSI, as shadowlab.drift.psi (its eps default)

# Column names of the joined frame and of the summary (private to this module).
_V1, _V2, _AUD, _SERVED, _HOUR = "v1", "v2", "audit", "served", "hour"
_HAS = {s: f"has_{s}" for s in S.LABEL_SOURCES}
_FINAL, _DESIGN, _FINAL_SRC = "final_label", "design_label", "final_source"
_N_LABELS = "n_labels"
_PART, _SRC, _DBIN, _BIN, _VALUE = "part", "delay_source", "delay_bin", "bin", "value"
_N, _W, _WW = "n", "w", "ww"
_CODE, _FLAGS = "code", "flags"


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


def _fmt(x: float | None, pct: bool = True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{100 * x:.1f}%" if pct else f"{x:.3g}"


def _json(value: Any) -> Any:
    """Make ``value`` JSON-safe: NaN/inf -> None, dates -> ISO strings, frames -> row lists."""
    if isinstance(value, pl.DataFrame):
        return [_json(row) for row in value.to_dicts()]
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        v = float(value)
        return v if math.isfinite(v) else None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return value.to_dict()  # type: ignore[attr-defined]
    return value


@dataclass(frozen=True, slots=True)
class MetricBounds:
    """One accuracy metric of one model, read three ways off selective labels.

    Attributes
    ----------
    metric : {'precision', 'recall'}
    model : {'primary', 'candidate'}
    naive : float
        The metric computed on whatever labels exist (any source), as a dashboard would.
        Biased under selective labels; shown for contrast.
    lower, upper : float
        Worst- and best-case (Manski) bounds: every unlabelled request set to the outcome that
        minimises / maximises the metric. Always contain the true value if the labels are right.
    estimate : float
        Design-based estimate from review labels (where the served model flagged, inclusion
        probability 1) and the audit slice (Hájek-weighted by the logged ``audit_rate``); NaN
        when the audit slice cannot cover a region the metric needs.
    ci_low, ci_high : float
        Confidence interval of ``estimate`` at ``confidence`` (see ``method``).
    audit_labels : int
        Audited, design-labelled requests in the region only the audit slice can see.
    method : str
        How the interval was built.
    note : str
        Why the estimate is missing or fragile, else empty.
    """

    metric: str
    model: str
    naive: float
    lower: float
    upper: float
    estimate: float
    ci_low: float
    ci_high: float
    confidence: float
    audit_labels: int
    method: str
    note: str = ""

    def __repr__(self) -> str:
        est = (
            f"estimate {_fmt(self.estimate)} [{_fmt(self.ci_low)}, {_fmt(self.ci_high)}] "
            f"({100 * self.confidence:g}% CI, {self.audit_labels} audit labels)"
            if not math.isnan(self.estimate)
            else f"estimate n/a ({self.note})"
        )
        return (
            f"{self.model} {self.metric}: naive {_fmt(self.naive)}, bounds "
            f"[{_fmt(self.lower)}, {_fmt(self.upper)}], {est}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _json(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclass(frozen=True, slots=True)
class AuditPlan:
    """The audit needed to estimate a proportion on a region to ``±margin`` (a power calculation).

    Attributes
    ----------
    region_size : int
        Requests per week in the region (v2 flags, v1 does not).
    margin, confidence : float
        Target half-width of the confidence interval and its level.
    expected_precision : float
        Planning value of the proportion (0.5 when nothing better is known: the worst case).
    label_response : float
        Share of audited requests whose label arrives (maturity, lost reviews).
    required_labels : int
        ``n = n0 / (1 + n0 / N)`` with ``n0 = z² p (1 - p) / margin²`` (Cochran 1977, 4.1-4.2).
    required_audits : int
        ``ceil(required_labels / label_response)``.
    rate : float
        Audit rate that draws ``required_audits`` from one week's region: ``required_audits / N``
        (uniform audit and an audit targeted at the region need the same rate; the uniform one
        reviews ``rate × total_requests``, the targeted one ``rate × N`` requests).
    current_rate : float or None
        The logged audit rate, for comparison.
    weeks_at_current_rate : float or None
        Weeks of audit at ``current_rate`` to collect ``required_audits``.
    total_requests : int or None
        Week's requests, for the cost of a uniform audit.
    """

    region_size: int
    margin: float
    confidence: float
    expected_precision: float
    label_response: float
    required_labels: int
    required_audits: int
    rate: float
    current_rate: float | None = None
    weeks_at_current_rate: float | None = None
    total_requests: int | None = None

    @property
    def z(self) -> float:
        return _z(self.confidence)

    def explain(self) -> str:
        """The calculation, with the numbers, as one paragraph."""
        p, m, n = self.expected_precision, self.margin, self.region_size
        n0 = self.z**2 * p * (1 - p) / m**2
        parts = [
            f"n0 = z²·p(1-p)/m² = {self.z:.3f}²·{p:.3f}·{1 - p:.3f}/{m:g}² = {n0:.1f}",
            f"n = n0/(1 + n0/N) with N = {n} -> {self.required_labels} labels",
            f"/ label response {self.label_response:.2f} -> {self.required_audits} audits",
            f"rate = {self.required_audits}/{n} = {_fmt(self.rate)}"
            + (" (more than the whole region: needs several weeks)" if self.rate > 1 else ""),
        ]
        if self.current_rate is not None:
            parts.append(
                f"current audit rate {_fmt(self.current_rate)}"
                + (
                    f", reaching it in {self.weeks_at_current_rate:.1f} weeks"
                    if self.weeks_at_current_rate is not None
                    and math.isfinite(self.weeks_at_current_rate)
                    else ""
                )
            )
        if self.total_requests:
            parts.append(
                f"cost per week: uniform audit {self.rate * self.total_requests:,.0f} reviews, "
                f"audit targeted at the region {min(self.rate, 1) * n:,.0f}"
            )
        return "; ".join(parts)

    def __repr__(self) -> str:
        return (
            f"AuditPlan(±{self.margin:g} at {100 * self.confidence:g}%: "
            f"{self.required_audits} audits of {self.region_size} region requests, "
            f"rate {_fmt(self.rate)})"
        )

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: _json(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out["explain"] = self.explain()
        return out


@dataclass(frozen=True, slots=True)
class FeedbackReport:
    """Result of :func:`feedback_diagnostics`.

    Attributes
    ----------
    primary_threshold, candidate_threshold : float
        Trigger rule ``score >= threshold`` (a failed call, null score, never flags).
    as_of : datetime.datetime
        Labels with ``label_ts > as_of`` were ignored; maturity is judged at this instant.
    confidence : float
        Level of every interval.
    requests : int
        Pairs read.
    crosstab : polars.DataFrame
        One row per (``primary_flag``, ``candidate_flag``): ``requests``, ``share``,
        ``audited`` (drawn by the audit slice), ``labelled_share`` (any label),
        ``review_share``, ``audit_share``, ``chargeback_share`` (has a label of that source),
        ``positives``, ``positive_rate`` (final label = 1 among labelled; biased by design).
    unlabelled_risk_mass : float
        Share of v2's flags that v1 did not flag and the audit slice did not draw. Their outcome
        is known only through late chargebacks (which only ever reveal fraud).
    risk_mass_chargebacked : float
        Share of those requests that nevertheless carry a chargeback label by ``as_of``.
    candidate_precision, candidate_recall, primary_precision, primary_recall : MetricBounds
        Naive figure, Manski bounds and design-based estimate with interval.
    label_delays : polars.DataFrame
        Per label source: ``labels``, ``mean_hours``, ``p50_hours``, ``p90_hours``,
        ``p99_hours``, ``max_hours`` (delay ``label_ts - ts``; quantiles from a histogram).
    maturity : polars.DataFrame
        Per UTC day: ``requests``, ``labelled_share``, ``pending_<source>`` (expected share of
        that day's eventual labels of the source not yet arrived at ``as_of``), ``pending``
        (the largest of them) and ``immature`` (``pending > max_pending``).
    immature_share : float
        Request-weighted mean of ``pending`` over the week.
    immature_days : tuple of datetime.date
    training_sets : polars.DataFrame
        The labelled set each policy would produce (``primary`` = v1 flags + audit,
        ``candidate`` = v2 flags + audit): ``size``, ``labelled``, ``positive_rate`` (estimate:
        the part today's policy reviews or audits at its observed rate, the rest at the audit
        slice's rate where this model flags and v1 does not; projected onto the bounds),
        ``positive_rate_low`` / ``positive_rate_high`` (Manski bounds) and
        ``naive_positive_rate`` (among the labels that exist).
    composition : polars.DataFrame
        ``feature`` (``primary_score``, ``candidate_score`` or a segment column) and its ``psi``
        between the two policies' sets (higher = further apart).
    composition_bins : polars.DataFrame
        ``feature``, ``bin`` and each policy's share in it.
    arms : polars.DataFrame or None
        Per served arm when any ``traffic_pct > 0``: ``requests``, ``review_rate`` (served model
        flagged), ``label_rate``, ``positive_rate``, ``audit_share``, ``chargeback_share``.
    audit_plan : AuditPlan
        What audit rate would estimate v2's precision on the disagreement region to ``±margin``.
    label_counts : dict
        ``label_rows``, ``after_as_of`` (ignored), ``duplicates`` (extra labels of a request;
        latest wins), ``conflicting`` (requests whose labels disagree), ``unknown_ids`` (labelled
        requests absent from the pairs), ``matched`` (requests with a label), ``other_sources``.
    warnings : tuple of str
        Everything the reader must know before trusting a number here.
    """

    primary_threshold: float
    candidate_threshold: float
    as_of: dt.datetime
    confidence: float
    requests: int
    crosstab: pl.DataFrame
    unlabelled_risk_mass: float
    risk_mass_chargebacked: float
    candidate_precision: MetricBounds
    candidate_recall: MetricBounds
    primary_precision: MetricBounds
    primary_recall: MetricBounds
    label_delays: pl.DataFrame
    maturity: pl.DataFrame
    immature_share: float
    immature_days: tuple[dt.date, ...]
    training_sets: pl.DataFrame
    composition: pl.DataFrame
    composition_bins: pl.DataFrame
    arms: pl.DataFrame | None
    audit_plan: AuditPlan
    label_counts: dict[str, int]
    warnings: tuple[str, ...]

    def __repr__(self) -> str:
        lines = [
            f"FeedbackReport(as_of={self.as_of.isoformat()}, requests={self.requests:,}, "
            f"thresholds v1 {self.primary_threshold:g} / v2 {self.candidate_threshold:g})",
            f"  unlabelled risk mass: {_fmt(self.unlabelled_risk_mass)} of v2's flags "
            f"(chargebacked so far: {_fmt(self.risk_mass_chargebacked)})",
            f"  {self.candidate_precision!r}",
            f"  {self.candidate_recall!r}",
            f"  {self.primary_precision!r}",
            f"  immature share: {_fmt(self.immature_share)}; immature days: "
            + (", ".join(d.isoformat() for d in self.immature_days) or "none"),
        ]
        for row in self.training_sets.iter_rows(named=True):
            lines.append(
                f"  training set under {row['policy']}: {row['size']:,} requests, positive rate "
                f"{_fmt(row['positive_rate'])} [{_fmt(row['positive_rate_low'])}, "
                f"{_fmt(row['positive_rate_high'])}]"
            )
        if self.composition.height:
            psis = ", ".join(
                f"{r['feature']} {r['psi']:.3f}" for r in self.composition.iter_rows(named=True)
            )
            lines.append(f"  composition PSI (v1 set vs v2 set): {psis}")
        lines.append(f"  {self.audit_plan!r}")
        c = self.label_counts
        lines.append(
            f"  labels: {c['label_rows']:,} rows, {c['duplicates']:,} duplicates (latest wins), "
            f"{c['unknown_ids']:,} for unknown request ids, {c['after_as_of']:,} after as_of"
        )
        lines.extend(f"  warning: {w}" for w in self.warnings)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _json(getattr(self, f.name)) for f in dataclasses.fields(self)}


# --------------------------------------------------------------------------------------------
# Interval helpers
# --------------------------------------------------------------------------------------------


def _z(confidence: float) -> float:
    """``scipy.stats.norm.ppf(0.5 + confidence / 2)``: that method is ``scipy.special.ndtri``
    (times 1, plus 0), imported here alone (scipy.stats costs ~0.6 s to import)."""
    from scipy.special import ndtri

    return float(ndtri(0.5 + confidence / 2))


def _wilson(p: float, n_eff: float, z: float) -> tuple[float, float]:
    """Wilson score interval for a proportion ``p`` observed on ``n_eff`` (effective) trials.

    ``n_eff = inf`` (the whole stratum observed) gives the point ``(p, p)``.
    References: Wilson (1927), JASA 22:209-212.
    """
    if math.isnan(p) or n_eff <= 0:
        return (math.nan, math.nan)
    if math.isinf(n_eff):
        return (p, p)
    z2n = z * z / n_eff
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(p * (1 - p) / n_eff + z2n / (4 * n_eff))
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True, slots=True)
class _Stratum:
    """A stratum's size, Hájek proportion and Wilson interval (positives as counts)."""

    size: float
    p: float
    low: float
    high: float
    labels: int

    @property
    def total(self) -> float:
        return 0.0 if self.size == 0 else self.size * self.p

    @property
    def total_low(self) -> float:
        return 0.0 if self.size == 0 else self.size * self.low

    @property
    def total_high(self) -> float:
        return 0.0 if self.size == 0 else self.size * self.high


def _mover_sum(strata: Sequence[_Stratum]) -> tuple[float, float, float]:
    """MOVER limits of a sum of independent stratum totals (Zou & Donner 2008)."""
    est = sum(s.total for s in strata)
    lo = est - math.sqrt(sum((s.total - s.total_low) ** 2 for s in strata))
    hi = est + math.sqrt(sum((s.total_high - s.total) ** 2 for s in strata))
    return est, lo, hi


# --------------------------------------------------------------------------------------------
# Parameter and input validation
# --------------------------------------------------------------------------------------------


def _param_error(name: str, fn: str, what: str, got: Any) -> ValueError:
    return ValueError(f"The {name!r} parameter of {fn} must be {what}. Got {got!r} instead.")


def _real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))


def _open_unit(x: Any) -> bool:
    return _real(x) and 0 < float(x) < 1


def _as_of_iv(as_of: Any) -> dt.datetime | None:
    if as_of is None:
        return None
    if isinstance(as_of, str):
        try:
            as_of = dt.datetime.fromisoformat(as_of)
        except ValueError as exc:
            raise _param_error(
                "as_of", "feedback_diagnostics", "None, a datetime or an ISO-8601 string", as_of
            ) from exc
    elif isinstance(as_of, dt.date) and not isinstance(as_of, dt.datetime):
        as_of = dt.datetime.combine(as_of, dt.time(), tzinfo=dt.UTC)
    if not isinstance(as_of, dt.datetime):
        raise _param_error(
            "as_of", "feedback_diagnostics", "None, a datetime or an ISO-8601 string", as_of
        )
    # A naive instant is read as UTC, the zone every shadowlab timestamp is stored in.
    return as_of.replace(tzinfo=dt.UTC) if as_of.tzinfo is None else as_of.astimezone(dt.UTC)


def _feedback_iv(
    primary_threshold: Any,
    candidate_threshold: Any,
    confidence: Any,
    margin: Any,
    score_bins: Any,
    max_pending: Any,
) -> None:
    fn = "feedback_diagnostics"
    for name, val in (
        ("primary_threshold", primary_threshold),
        ("candidate_threshold", candidate_threshold),
    ):
        if not _real(val):
            raise _param_error(name, fn, "a finite float", val)
    if not _open_unit(confidence):
        raise _param_error("confidence", fn, "a float in the range (0, 1)", confidence)
    if not (_real(margin) and 0 < float(margin) <= 0.5):
        raise _param_error("margin", fn, "a float in the range (0, 0.5]", margin)
    if not (isinstance(score_bins, numbers.Integral) and not isinstance(score_bins, bool)):
        raise _param_error("score_bins", fn, "an int >= 2", score_bins)
    if score_bins < 2:
        raise _param_error("score_bins", fn, "an int >= 2", score_bins)
    if not (_real(max_pending) and 0 <= float(max_pending) <= 1):
        raise _param_error("max_pending", fn, "a float in the range [0, 1]", max_pending)


def _missing_column(what: str, column: str, names: Sequence[str], fix: str) -> ValueError:
    near = difflib.get_close_matches(column, list(names), n=1, cutoff=0.5)
    hint = f" Did you mean {near[0]!r}?" if near else ""
    return ValueError(f"{what} has no column {column!r} (columns: {list(names)}).{hint} Fix: {fix}")


_PAIR_COLUMNS = (
    S.TS,
    S.REQUEST_ID,
    S.SERVED,
    S.TRAFFIC_PCT,
    S.PRIMARY_SCORE,
    S.CANDIDATE_SCORE,
    S.AUDIT,
    S.AUDIT_RATE,
)


def _segments_iv(schema: Mapping[str, Any], segments: Sequence[str] | None) -> list[str]:
    names = list(schema)
    if segments is None:
        text = (pl.String, pl.Categorical, pl.Enum, pl.Boolean)
        return [c for c, t in schema.items() if c not in S.PAIR_SCHEMA and isinstance(t, text)]
    if isinstance(segments, str) or not all(isinstance(s, str) for s in segments):
        raise _param_error(
            "segments", "feedback_diagnostics", "None or a list of column names", segments
        )
    for s in segments:
        if s not in names:
            raise _missing_column("Pairs", s, names, "pass context columns that exist as segments.")
    return list(segments)


def _load_labels(labels: Any) -> pl.DataFrame:
    """Collect the label table (small: a few percent of the week) in the label schema."""
    if labels is None:
        return pl.DataFrame(schema=S.LABEL_SCHEMA)
    if isinstance(labels, pl.LazyFrame):
        frame = labels.collect()
    elif isinstance(labels, pl.DataFrame):
        frame = labels
    elif type(labels).__module__.startswith("pyspark."):
        from shadowlab.engines.spark import collect_labels

        frame = collect_labels(labels)
    elif isinstance(labels, str | os.PathLike) or (
        isinstance(labels, Sequence) and all(isinstance(x, str | os.PathLike) for x in labels)
    ):
        from shadowlab.logs import scan_labels

        frame = scan_labels(labels).collect()
    else:
        raise _param_error(
            "labels",
            "feedback_diagnostics",
            "a polars DataFrame/LazyFrame, a path, a glob or a list of paths, or None",
            type(labels).__name__,
        )
    for col in S.LABEL_SCHEMA:
        if col not in frame.columns:
            raise _missing_column(
                "Labels", col, frame.columns, f"labels need columns {list(S.LABEL_SCHEMA)}."
            )
    frame = frame.select(pl.col(c).cast(t) for c, t in S.LABEL_SCHEMA.items())
    if frame[S.REQUEST_ID].null_count():
        raise ValueError(
            f"Labels column {S.REQUEST_ID!r} has {frame[S.REQUEST_ID].null_count()} null values. "
            "Fix: a label must name the request it belongs to; drop or repair those rows."
        )
    bad = frame.filter(~pl.col(S.LABEL).is_in([0, 1]) | pl.col(S.LABEL).is_null())
    if bad.height:
        raise ValueError(
            f"Labels column {S.LABEL!r} holds {bad[S.LABEL].unique().to_list()[:5]}, expected 0 "
            "or 1 with no nulls. Fix: map the outcome to 1 = fraud, 0 = legitimate."
        )
    if frame[S.LABEL_TS].null_count():
        raise ValueError(
            f"Labels column {S.LABEL_TS!r} has null values. Fix: every label needs its arrival "
            "time (when the outcome became known)."
        )
    return frame


def _per_request(labels: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, int]]:
    """One row per labelled request: latest label, sources present, first arrival per source."""
    rank = pl.col(S.SOURCE).replace_strict(
        _SOURCE_RANK, default=len(_SOURCE_RANK), return_dtype=pl.Int8
    )
    ordered = labels.with_columns(rank.alias("_rank")).sort(
        [S.REQUEST_ID, S.LABEL_TS, "_rank", S.LABEL]
    )
    src = pl.col(S.SOURCE)
    design = src.is_in(list(_DESIGN_SOURCES))
    per = ordered.group_by(S.REQUEST_ID).agg(
        pl.col(S.LABEL).last().alias(_FINAL),
        src.last().alias(_FINAL_SRC),
        pl.col(S.LABEL).filter(design).last().alias(_DESIGN),
        pl.len().cast(pl.Int64).alias(_N_LABELS),
        pl.col(S.LABEL).n_unique().alias("_distinct"),
        *[(src == s).any().alias(_HAS[s]) for s in S.LABEL_SOURCES],
        *[pl.col(S.LABEL_TS).filter(src == s).min().alias(f"{s}_ts") for s in S.LABEL_SOURCES],
    )
    counts = {
        "duplicates": int(labels.height - per.height),
        "conflicting": int((per["_distinct"] > 1).sum()),
        "other_sources": int((~labels[S.SOURCE].is_in(list(S.LABEL_SOURCES))).sum()),
        "labelled_requests": int(per.height),
    }
    return per.drop("_distinct"), counts


# --------------------------------------------------------------------------------------------
# The one pass
# --------------------------------------------------------------------------------------------


# Bits of the cell code: v1 flags, v2 flags, audit drawn, served by the candidate, has a review /
# audit / chargeback label, then final label and design label (each 0 = none, 1 = "0", 2 = "1").
_BIT_V1, _BIT_V2, _BIT_AUDIT, _BIT_CANDIDATE = 1, 2, 4, 8
_BIT_HAS = {"review": 16, "audit": 32, "chargeback": 64}
_MUL_FINAL, _MUL_DESIGN = 128, 512


def _encode(v1: pl.Expr, v2: pl.Expr, audit: pl.Expr) -> pl.Expr:
    served = (pl.col(S.SERVED) == S.CANDIDATE).fill_null(False)
    return (
        v1.cast(pl.Int32) * _BIT_V1
        + v2.cast(pl.Int32) * _BIT_V2
        + audit.cast(pl.Int32) * _BIT_AUDIT
        + served.cast(pl.Int32) * _BIT_CANDIDATE
    )


def _encode_labels() -> pl.Expr:
    has = sum(
        (pl.col(_HAS[s]).fill_null(False).cast(pl.Int32) * bit for s, bit in _BIT_HAS.items()),
        start=pl.lit(0, dtype=pl.Int32),
    )
    final = (pl.col(_FINAL).cast(pl.Int32) + 1).fill_null(0) * _MUL_FINAL
    design = (pl.col(_DESIGN).cast(pl.Int32) + 1).fill_null(0) * _MUL_DESIGN
    return has + final + design


def _decode(summary: pl.DataFrame) -> pl.DataFrame:
    """Expand the cell code back into named columns (finish side, on the small summary)."""
    c = pl.col(_CODE)

    def bit(b: int) -> pl.Expr:
        return ((c // b) % 2) == 1

    def label(mul: int) -> pl.Expr:
        v = (c // mul) % 4
        return pl.when(v == 0).then(None).otherwise(v - 1).cast(pl.Int8)

    return summary.with_columns(
        bit(_BIT_V1).alias(_V1),
        bit(_BIT_V2).alias(_V2),
        bit(_BIT_AUDIT).alias(_AUD),
        pl.when(bit(_BIT_CANDIDATE))
        .then(pl.lit(S.CANDIDATE))
        .otherwise(pl.lit(S.PRIMARY))
        .alias(_SERVED),
        *[bit(b).alias(_HAS[s]) for s, b in _BIT_HAS.items()],
        label(_MUL_FINAL).alias(_FINAL),
        label(_MUL_DESIGN).alias(_DESIGN),
    )


_US_PER_HOUR = 3_600_000_000


def _hour_key(ts_dtype: Any) -> pl.Expr:
    """Start of the request's hour in integer microseconds since the epoch (the group key).

    For UTC (the schema's zone) and naive timestamps this is integer arithmetic on the
    physical value, ``floor(epoch_us / 1 h) * 1 h``, equal to ``dt.truncate('1h')`` and
    cheaper; other zones (whose offset need not be a whole hour) truncate in local time.
    """
    tz = getattr(ts_dtype, "time_zone", None)
    if tz in (None, "UTC"):
        return (pl.col(S.TS).dt.epoch("us") // _US_PER_HOUR) * _US_PER_HOUR
    return pl.col(S.TS).dt.truncate("1h").dt.epoch("us")


def _hour_from_key(ts_dtype: Any) -> pl.Expr:
    """The hour key back in the dtype of ``ts`` (finish side, on the small summary)."""
    hour = pl.from_epoch(pl.col(_HOUR), time_unit="us")
    tz = getattr(ts_dtype, "time_zone", None)
    if tz is not None:
        hour = hour.dt.replace_time_zone("UTC").dt.convert_time_zone(tz)
    unit = getattr(ts_dtype, "time_unit", None)
    return hour.dt.cast_time_unit(unit) if unit and unit != "us" else hour


def _flags(t1: float, t2: float) -> pl.Expr:
    """Low bits of the cell code: v1 flags, v2 flags, audit drawn, served by the candidate."""
    v1 = (pl.col(S.PRIMARY_SCORE) >= t1).fill_null(False)
    v2 = (pl.col(S.CANDIDATE_SCORE) >= t2).fill_null(False)
    return _encode(v1, v2, pl.col(S.AUDIT).fill_null(False))


# The cell summary: one row per (code, hour); ``w``/``ww`` are the audit weights 1/audit_rate
# and their squares (zero outside the audit slice).
_CELL_REDUCE: dict[str, Any] = {
    _N: "sum",
    _W: "sum",
    _WW: "sum",
    "audit_without_rate": "sum",
    "traffic_pct": "max",
}
_CELL_KEYS = (_CODE, _HOUR)
# Pair columns of the refinement pull (labelled or audited requests): every required column.
_PULL_COLUMNS = _PAIR_COLUMNS


def _count_aggregation(t1: float, t2: float, ts_dtype: Any) -> Aggregation:
    """Requests per ``(flags, hour)`` over the whole week: no join, five pair columns read.

    The label bits of the cell code are added locally for the pulled labelled and audited
    requests (:func:`_pulled_cells`); every other request has none and weight zero.
    """
    hour = _hour_key(ts_dtype)

    def build(lf: pl.LazyFrame) -> pl.LazyFrame:
        return (
            lf.select(
                _flags(t1, t2).alias(_FLAGS),
                hour.alias(_HOUR),
                pl.col(S.TRAFFIC_PCT).cast(pl.Float64).alias("traffic_pct"),
            )
            .group_by(_FLAGS, _HOUR)
            .agg(pl.len().cast(pl.Int64).alias(_N), pl.col("traffic_pct").max())
        )

    reduce: dict[str, Any] = {_N: "sum", "traffic_pct": "max"}
    return Aggregation(build=build, keys=(_FLAGS, _HOUR), reduce=reduce)  # type: ignore[arg-type]


def _pull_predicate(per_request: pl.DataFrame) -> pl.Expr:
    """Rows the cells need one by one: a label, or drawn by the audit slice (weights).

    Membership is tested on 64-bit hashes of the ids (a u64 set probes faster than a string
    set). A collision can only pull an extra unlabelled request: the exact left join on the id
    gives it no label bits, and as unaudited its cell is the same ``(flags, hour)`` cell the
    rest of the week lands in, so the summary is unchanged.
    """
    audit = pl.col(S.AUDIT).fill_null(False)
    if per_request.height == 0:
        return audit
    from shadowlab.logs import id_probe

    return audit | id_probe(per_request[S.REQUEST_ID])


def _pulled_summaries(
    rows: pl.DataFrame, per_request: pl.DataFrame, t1: float, t2: float, ts_dtype: Any
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Cells (label bits, weights) and label-delay histogram of the pulled rows (every labelled
    or audited request): one local left join with the per-request label table feeding two
    group-bys (a few percent of the week)."""
    rate = pl.col(S.AUDIT_RATE)
    audit = pl.col(S.AUDIT).fill_null(False)
    weight = pl.when(audit & (rate > 0)).then(1.0 / rate).otherwise(0.0)
    joined = rows.lazy().join(
        per_request.drop(_FINAL_SRC, _N_LABELS).lazy(), on=S.REQUEST_ID, how="left"
    )
    cells = (
        joined.with_columns(weight.alias(_W))
        .select(
            (_flags(t1, t2) + _encode_labels()).alias(_CODE),
            _hour_key(ts_dtype).alias(_HOUR),
            _W,
            (pl.col(_W) * pl.col(_W)).alias(_WW),
            (audit & ~(rate > 0).fill_null(False)).cast(pl.Int64).alias("audit_without_rate"),
            pl.col(S.TRAFFIC_PCT).cast(pl.Float64).alias("traffic_pct"),
        )
        .group_by(*_CELL_KEYS)
        .agg(
            pl.len().cast(pl.Int64).alias(_N),
            pl.col(_W).sum(),
            pl.col(_WW).sum(),
            pl.col("audit_without_rate").sum(),
            pl.col("traffic_pct").max(),
        )
    )
    cells_df, delays_df = pl.collect_all([cells, _delay_summary(joined)])
    return cells_df, delays_df


def _cells(
    totals: pl.DataFrame,
    rows: pl.DataFrame,
    pulled: pl.DataFrame,
    t1: float,
    t2: float,
    ts_dtype: Any,
) -> pl.DataFrame:
    """The cell summary: pulled requests' cells plus, per ``(flags, hour)``, the rest of the
    week (``totals`` minus the pulled count) with no label bits and zero weight.

    Every labelled or audited request is pulled, so the rest is unaudited and unlabelled: each
    cell holds exactly the requests it held when every pair was joined with the labels (an
    unlabelled request pulled by a hash collision lands in the same cell as the rest and is
    summed with it, counts only). Integer columns are exact; the weight sums run over the same
    requests as before.
    """
    if totals.height == 0:
        return pl.DataFrame()
    pulled_counts = (
        rows.lazy()
        .group_by(_flags(t1, t2).alias(_FLAGS), _hour_key(ts_dtype).alias(_HOUR))
        .agg(pl.len().cast(pl.Int64).alias("_pulled"))
        .collect()
    )
    rest = (
        totals.join(pulled_counts, on=[_FLAGS, _HOUR], how="left")
        .select(
            pl.col(_FLAGS).cast(pl.Int32).alias(_CODE),
            pl.col(_HOUR),
            (pl.col(_N) - pl.col("_pulled").fill_null(0)).alias(_N),
            pl.lit(0.0).alias(_W),
            pl.lit(0.0).alias(_WW),
            pl.lit(0, dtype=pl.Int64).alias("audit_without_rate"),
            pl.col("traffic_pct"),
        )
        .filter(pl.col(_N) > 0)
    )
    agg = Aggregation(build=lambda lf: lf, keys=_CELL_KEYS, reduce=_CELL_REDUCE)
    return merge_partials([rest, pulled.select(rest.columns)], agg)


def _delay_summary(joined: pl.LazyFrame) -> pl.LazyFrame:
    """Label delays (``label_ts - ts``) per source, as a histogram keyed by the three sources'
    bins jointly; ``joined`` holds the pulled requests with their first arrival per source
    (null where the request has no label of that source)."""
    edge_series = pl.Series("edges", _DELAY_EDGES_H[1:], dtype=pl.Float64)

    def delay_us(s: str) -> pl.Expr:
        return (pl.col(f"{s}_ts") - pl.col(S.TS)).dt.total_microseconds()

    cols = []
    for s in S.LABEL_SOURCES:
        d = pl.col(f"d_{s}") / 3.6e9  # hours
        # number of edges <= d (a binary search, not one comparison per edge)
        idx = pl.lit(edge_series).search_sorted(d, side="right")
        b = pl.when(d.is_null()).then(None).when(d < 0).then(-1).otherwise(idx)
        cols.append(b.cast(pl.Int32).alias(f"bin_{s}"))
    keys = [f"bin_{s}" for s in S.LABEL_SOURCES]
    # Delays are summed in integer microseconds: the same mean, bit for bit, however the rows
    # are split.
    return (
        joined.filter(pl.col(_FINAL).is_not_null())
        .select(*[delay_us(s).alias(f"d_{s}") for s in S.LABEL_SOURCES])
        .with_columns(cols)
        .group_by(*keys)
        .agg(
            pl.len().cast(pl.Int64).alias(_N),
            *[pl.col(f"d_{s}").sum().alias(f"sum_{s}") for s in S.LABEL_SOURCES],
            *[pl.col(f"d_{s}").max().alias(f"max_{s}") for s in S.LABEL_SOURCES],
        )
        .sort(keys)
    )


def _delay_parts(joint: pl.DataFrame) -> pl.DataFrame:
    """Marginal delay histogram of each source from the joint one."""
    parts = []
    for s in S.LABEL_SOURCES:
        if joint.height == 0:
            continue
        part = (
            joint.filter(pl.col(f"bin_{s}").is_not_null())
            .group_by(pl.col(f"bin_{s}").alias(_DBIN))
            .agg(
                pl.col(_N).sum(),
                pl.col(f"sum_{s}").sum().alias("delay_sum"),  # microseconds (Int64)
                pl.col(f"max_{s}").max().alias("delay_max"),
            )
            .with_columns(pl.lit("delay").alias(_PART), pl.lit(s).alias(_SRC))
        )
        parts.append(part)
    return pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame()


def _composition_aggregation(
    t1: float, t2: float, segments: Sequence[str], score_bins: int
) -> Aggregation:
    """Review-set composition (v1 flags, v2 flags or audit drawn): counts per flags and
    ``(feature, value)``, where the features are both models' score bins and every segment,
    unpivoted so that the summary grows with the sum, not the product, of their cardinalities.
    Needs no labels, so no join."""
    features = {f"score:{S.PRIMARY_SCORE}": "f_0", f"score:{S.CANDIDATE_SCORE}": "f_1"}
    features.update({f"segment:{c}": f"f_{i + 2}" for i, c in enumerate(segments)})
    names = {v: k for k, v in features.items()}

    def bins(model: str) -> pl.Expr:
        col = pl.col(S.score_column(model))
        return (col * score_bins).floor().clip(0, score_bins - 1).cast(pl.Int32).cast(pl.String)

    def build(lf: pl.LazyFrame) -> pl.LazyFrame:
        v1 = (pl.col(S.PRIMARY_SCORE) >= t1).fill_null(False)
        v2 = (pl.col(S.CANDIDATE_SCORE) >= t2).fill_null(False)
        audit = pl.col(S.AUDIT).fill_null(False)
        # Filter first: only the review set's rows have their bins and segments computed.
        return (
            lf.filter(v1 | v2 | audit)
            .select(
                (_encode(v1, v2, audit) % 8).alias(_CODE),
                bins(S.PRIMARY).alias("f_0"),
                bins(S.CANDIDATE).alias("f_1"),
                *[pl.col(c).cast(pl.String).alias(f"f_{i + 2}") for i, c in enumerate(segments)],
            )
            .unpivot(index=_CODE, variable_name="feature", value_name=_BIN)
            .group_by(_CODE, "feature", _BIN)
            .agg(pl.len().cast(pl.Int64).alias(_N))
            .with_columns(pl.col("feature").replace_strict(names, return_dtype=pl.String))
        )

    return Aggregation(build=build, keys=(_CODE, "feature", _BIN), reduce={_N: "sum"})


_PASS = "summary"  # which summary a row of the combined pass belongs to
_REVIEW_BATCH = 1_000_000
_COUNTS, _COMPOSITION = "counts", "composition"


def _counts_and_composition(
    t1: float, t2: float, ts_dtype: Any, segments: Sequence[str], score_bins: int
) -> Aggregation:
    """One pass for :func:`_count_aggregation` and :func:`_composition_aggregation`.

    Both read the scores and the audit flag; one pass reads them once. ``build`` is the two
    summaries side by side (``summary`` tells them apart); the ``prepare``/``fold`` fast path
    selects the columns once, counts each chunk per ``(flags, hour)`` with ``np.bincount``
    (``np.fmax.at`` for the traffic share) and runs the composition's own ``build`` on the
    chunk's review-set rows only (a few percent). Its partial equals ``build``'s: the same keys,
    counts and maxima (a chunk whose hours are not whole UTC hours apart, or null, is grouped
    by polars).
    """
    counts = _count_aggregation(t1, t2, ts_dtype)
    comp = _composition_aggregation(t1, t2, segments, score_bins)
    keys = (_PASS, _FLAGS, _HOUR, _CODE, "feature", _BIN)
    reduce: dict[str, Any] = {_N: "sum", "traffic_pct": "max"}

    def build(lf: pl.LazyFrame) -> pl.LazyFrame:
        return pl.concat(
            [
                counts.build(lf).with_columns(pl.lit(_COUNTS).alias(_PASS)),
                comp.build(lf).with_columns(pl.lit(_COMPOSITION).alias(_PASS)),
            ],
            how="diagonal_relaxed",
        )

    utc = getattr(ts_dtype, "time_zone", None) in (None, "UTC")
    raw = list(dict.fromkeys([S.PRIMARY_SCORE, S.CANDIDATE_SCORE, S.AUDIT, S.SERVED, *segments]))

    def prepare(lf: pl.LazyFrame) -> pl.LazyFrame:
        return lf.select(
            _flags(t1, t2).alias("__flags"),
            _hour_key(ts_dtype).alias("__hour"),
            pl.col(S.TRAFFIC_PCT).cast(pl.Float64).alias("__traffic"),
            *raw,
        )

    def fold(chunks: Iterable[pl.DataFrame]) -> pl.DataFrame:
        n = np.zeros((0, 16), np.int64)  # (hour - h0) / 1 h, flags
        top = np.zeros((0, 16))
        h0, phase = 0, None
        parts: list[pl.DataFrame] = []
        review: list[pl.DataFrame] = []  # review-set rows, summarised in batches of ~1 M
        buffered = 0
        for chunk in chunks:
            if chunk.height == 0:
                continue
            rows = chunk.filter(pl.col("__flags") % 8 != 0)
            review.append(rows)
            buffered += rows.height
            if buffered >= _REVIEW_BATCH:
                parts.append(comp.build(pl.concat(review).lazy()).collect())
                review, buffered = [], 0
            hour = chunk["__hour"]
            h = hour.to_numpy() if not hour.null_count() else None
            if h is not None:
                lo, hi = int(h.min()), int(h.max())
                # UTC keys are whole hours; other zones' need not be (half-hour offsets)
                same = utc or (
                    phase in (None, lo % _US_PER_HOUR) and not ((h - lo) % _US_PER_HOUR).any()
                )
            if h is None or not same:  # polars' group-by, as build does
                parts.append(
                    chunk.group_by(pl.col("__flags").alias(_FLAGS), pl.col("__hour").alias(_HOUR))
                    .agg(
                        pl.len().cast(pl.Int64).alias(_N),
                        pl.col("__traffic").max().alias("traffic_pct"),
                    )
                    .with_columns(pl.lit(_COUNTS).alias(_PASS))
                )
                continue
            phase = lo % _US_PER_HOUR
            lo_h, hi_h = lo // _US_PER_HOUR, hi // _US_PER_HOUR
            if n.shape[0] == 0:
                h0 = lo_h
            start, stop = min(h0, lo_h), max(h0 + n.shape[0], hi_h + 1)
            if (start, stop - start) != (h0, n.shape[0]):
                grown_n = np.zeros((stop - start, 16), np.int64)
                grown_t = np.full((stop - start, 16), np.nan)
                grown_n[h0 - start : h0 - start + n.shape[0]] = n
                grown_t[h0 - start : h0 - start + n.shape[0]] = top
                n, top, h0 = grown_n, grown_t, start
            key = (h // _US_PER_HOUR - h0) * 16 + chunk["__flags"].to_numpy()
            n += np.bincount(key, minlength=n.size).reshape(n.shape)
            np.fmax.at(top.reshape(-1), key, chunk["__traffic"].to_numpy())  # nulls are NaN
        if buffered:
            parts.append(comp.build(pl.concat(review).lazy()).collect())
        hh, ff = np.nonzero(n)
        table = pl.DataFrame(
            {
                _FLAGS: pl.Series(ff, dtype=pl.Int32),
                _HOUR: pl.Series((hh + h0) * _US_PER_HOUR + (phase or 0), dtype=pl.Int64),
                _N: pl.Series(n[hh, ff], dtype=pl.Int64),
                "traffic_pct": pl.Series(top[hh, ff], dtype=pl.Float64).fill_nan(None),
                _PASS: pl.Series([_COUNTS] * hh.size, dtype=pl.String),
                # the composition's keys, as in build's output even with no review-set row
                _CODE: pl.Series([None] * hh.size, dtype=pl.Int32),
                "feature": pl.Series([None] * hh.size, dtype=pl.String),
                _BIN: pl.Series([None] * hh.size, dtype=pl.String),
            }
        )
        comp_parts = [
            p.with_columns(pl.lit(_COMPOSITION).alias(_PASS)) for p in parts if _CODE in p.columns
        ]
        count_parts = [p for p in parts if _CODE not in p.columns]
        return pl.concat([table, *count_parts, *comp_parts], how="diagonal_relaxed")

    return Aggregation(build, keys, reduce, prepare, fold)  # type: ignore[arg-type]


def _composition_parts(summary: pl.DataFrame) -> pl.DataFrame:
    """The composition summary in the long format of the finish (``part`` = feature)."""
    if summary.height == 0:
        return pl.DataFrame()
    return summary.rename({"feature": _PART})


# --------------------------------------------------------------------------------------------
# Finish
# --------------------------------------------------------------------------------------------


def _sum(frame: pl.DataFrame, expr: pl.Expr | None = None, col: str = _N) -> float:
    f = frame if expr is None else frame.filter(expr)
    return float(f[col].sum()) if f.height else 0.0


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def _stratum_full(cells: pl.DataFrame, region: pl.Expr, z: float) -> _Stratum:
    """A stratum where every request is reviewed (inclusion probability 1): missing design
    labels are in flight (assumed missing at random); finite-population correction."""
    r = cells.filter(region)
    size = _sum(r)
    lab = r.filter(pl.col(_DESIGN).is_not_null())
    m, pos = _sum(lab), _sum(lab, pl.col(_DESIGN) == 1)
    p = _ratio(pos, m)
    n_eff = math.inf if m >= size else m / (1 - m / size) if size else 0.0
    lo, hi = _wilson(p, n_eff, z) if m else (math.nan, math.nan)
    return _Stratum(size, p, lo, hi, int(m))


def _stratum_audit(cells: pl.DataFrame, region: pl.Expr, z: float) -> _Stratum:
    """A stratum only the audit slice sees: Hájek ratio with weights 1/audit_rate and a Wilson
    interval on the effective sample ``(Σw)² / Σ w(w-1)`` (Poisson-sampling variance with
    finite-population correction; equals ``n / (1 - π)`` at a constant rate π)."""
    r = cells.filter(region)
    size = _sum(r)
    lab = r.filter(pl.col(_AUD) & pl.col(_DESIGN).is_not_null() & (pl.col(_W) > 0))
    sw, sww = _sum(lab, col=_W), _sum(lab, col=_WW)
    pos_w = _sum(lab, pl.col(_DESIGN) == 1, col=_W)
    p = _ratio(pos_w, sw)
    denom = sww - sw
    n_eff = math.inf if denom <= 1e-12 * max(sw, 1.0) else sw * sw / denom
    lo, hi = _wilson(p, n_eff, z) if sw > 0 else (math.nan, math.nan)
    return _Stratum(size, p, lo, hi, int(_sum(lab)))


def _metric_bounds(cells: pl.DataFrame, model: str, confidence: float) -> tuple[MetricBounds, ...]:
    z = _z(confidence)
    flag = pl.col(_V1) if model == S.PRIMARY else pl.col(_V2)
    reviewed = pl.col("reviewed")
    final = pl.col(_FINAL)
    # --- naive and Manski -------------------------------------------------------------------
    n_flag = _sum(cells, flag)
    k1 = _sum(cells, flag & (final == 1))
    k0 = _sum(cells, flag & (final == 0))
    u = n_flag - k1 - k0
    o1 = _sum(cells, ~flag & (final == 1))
    o0 = _sum(cells, ~flag & (final == 0))
    ou = _sum(cells, ~flag) - o1 - o0
    naive_p = _ratio(k1, k1 + k0)
    naive_r = _ratio(k1, k1 + o1)
    p_lo, p_hi = _ratio(k1, n_flag), _ratio(k1 + u, n_flag)
    r_lo, r_hi = _ratio(k1, k1 + o1 + ou), _ratio(k1 + u, k1 + u + o1)
    # --- design-based ------------------------------------------------------------------------
    a = _stratum_full(cells, flag & reviewed, z)
    b = _stratum_audit(cells, flag & ~reviewed, z)
    c = _stratum_full(cells, ~flag & reviewed, z)
    d = _stratum_audit(cells, ~flag & ~reviewed, z)
    method = (
        "stratified Hájek: reviewed requests (inclusion 1) + audit slice weighted 1/audit_rate; "
        "Wilson interval per stratum on its effective sample, combined by MOVER"
    )
    note_p = note_r = ""

    def usable(s: _Stratum) -> bool:
        return s.size == 0 or not math.isnan(s.p)

    if usable(a) and usable(b) and n_flag > 0:
        x, x_lo, x_hi = _mover_sum([a, b])
        est_p, ci_p = x / n_flag, (max(0.0, x_lo / n_flag), min(1.0, x_hi / n_flag))
    else:
        est_p, ci_p = math.nan, (math.nan, math.nan)
        note_p = _why(a, b, n_flag, "flags")
    if usable(a) and usable(b) and usable(c) and usable(d):
        x, x_lo, x_hi = _mover_sum([a, b])
        y, y_lo, y_hi = _mover_sum([c, d])
        est_r = _ratio(x, x + y)
        # Recall is increasing in X and decreasing in Y: the conservative rectangle of the two
        # MOVER intervals bounds it.
        ci_r = (_ratio(x_lo, x_lo + y_hi), _ratio(x_hi, x_hi + y_lo))
        if d.labels and d.p == 0:
            note_r = "the audit slice saw no positive outside the flags: recall is fragile"
    else:
        est_r, ci_r = math.nan, (math.nan, math.nan)
        note_r = _why(a, b, n_flag, "flags") or _why(c, d, n_flag, "non-flags")
    # The Manski bounds hold with certainty (if the labels are right), so projecting the
    # estimate and its interval onto them loses no coverage and removes impossible values.
    est_p, ci_p = _project(est_p, ci_p, p_lo, p_hi)
    est_r, ci_r = _project(est_r, ci_r, r_lo, r_hi)
    prec = MetricBounds(
        "precision",
        model,
        naive_p,
        p_lo,
        p_hi,
        est_p,
        *ci_p,
        confidence,
        b.labels,
        method,
        note_p,
    )
    rec = MetricBounds(
        "recall",
        model,
        naive_r,
        r_lo,
        r_hi,
        est_r,
        *ci_r,
        confidence,
        b.labels + d.labels,
        method + "; recall interval: conservative rectangle of the flagged and unflagged "
        "positive totals",
        note_r,
    )
    return prec, rec


def _project(
    est: float, ci: tuple[float, float], lo: float, hi: float
) -> tuple[float, tuple[float, float]]:
    if math.isnan(est) or math.isnan(lo) or math.isnan(hi):
        return est, ci
    return min(max(est, lo), hi), (min(max(ci[0], lo), hi), min(max(ci[1], lo), hi))


def _why(reviewed: _Stratum, audited: _Stratum, n_flag: float, what: str) -> str:
    if n_flag == 0:
        return "the model flagged nothing"
    if audited.size and math.isnan(audited.p):
        return (
            f"no audit slice labels among the unreviewed {what} ({audited.size:,.0f} requests): "
            "bounds only"
        )
    if reviewed.size and math.isnan(reviewed.p):
        return f"no review labels among the reviewed {what}: bounds only"
    return ""


def _crosstab(cells: pl.DataFrame) -> pl.DataFrame:
    total = max(int(cells[_N].sum()), 1) if cells.height else 1
    n = pl.col(_N)
    has_label = pl.col(_FINAL).is_not_null()
    out = cells.group_by(
        pl.col(_V1).alias("primary_flag"), pl.col(_V2).alias("candidate_flag")
    ).agg(
        n.sum().alias("requests"),
        n.filter(pl.col(_AUD)).sum().alias("audited"),
        n.filter(has_label).sum().alias("labelled"),
        *[n.filter(pl.col(_HAS[s])).sum().alias(f"{s}_labelled") for s in S.LABEL_SOURCES],
        n.filter(pl.col(_FINAL) == 1).sum().alias("positives"),
    )
    grid = pl.DataFrame(
        {"primary_flag": [False, False, True, True], "candidate_flag": [False, True, False, True]}
    )
    out = grid.join(out, on=["primary_flag", "candidate_flag"], how="left").fill_null(0)
    req = pl.col("requests")
    return out.select(
        "primary_flag",
        "candidate_flag",
        req,
        (req / total).alias("share"),
        "audited",
        (pl.col("labelled") / req).alias("labelled_share"),
        *[(pl.col(f"{s}_labelled") / req).alias(f"{s}_share") for s in S.LABEL_SOURCES],
        "positives",
        (pl.col("positives") / pl.col("labelled")).alias("positive_rate"),
    ).with_columns(pl.selectors.float().fill_nan(None))


def _delay_cdf(counts: np.ndarray) -> np.ndarray:
    """CDF at each histogram edge (index 0 = edge 0 h) from counts per bin."""
    total = counts.sum()
    return np.concatenate([[0.0], np.cumsum(counts) / total]) if total else np.zeros(0)


def _cdf_at(cdf: np.ndarray, hours: np.ndarray) -> np.ndarray:
    edges = np.asarray(_DELAY_EDGES_H)
    return np.interp(hours, edges, cdf, left=0.0, right=1.0)


def _quantile(cdf: np.ndarray, q: float) -> float:
    edges = np.asarray(_DELAY_EDGES_H)
    i = int(np.searchsorted(cdf, q, side="left"))
    if i == 0:
        return 0.0
    if i >= len(cdf):
        return float(edges[-1])
    lo, hi = cdf[i - 1], cdf[i]
    return float(edges[i - 1] + (edges[i] - edges[i - 1]) * (q - lo) / (hi - lo))


def _label_delays(summary: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, np.ndarray]]:
    d = summary.filter(pl.col(_PART) == "delay")
    rows, cdfs = [], {}
    nbins = len(_DELAY_EDGES_H) - 1
    for s in S.LABEL_SOURCES:
        ds = d.filter(pl.col(_SRC) == s)
        n = int(ds[_N].sum()) if ds.height else 0
        if n == 0:
            continue
        ok = ds.filter(pl.col(_DBIN) >= 0)
        counts = np.zeros(nbins)
        idx = np.minimum(ok[_DBIN].to_numpy(), nbins - 1)
        np.add.at(counts, idx, ok[_N].to_numpy())
        cdf = _delay_cdf(counts)
        cdfs[s] = cdf
        dmax = int(ds["delay_max"].max()) / 3.6e9  # type: ignore[arg-type]
        rows.append(
            {
                "source": s,
                "labels": n,
                "negative_delays": int(ds.filter(pl.col(_DBIN) < 0)[_N].sum()),
                "mean_hours": int(ds["delay_sum"].sum()) / n / 3.6e9,
                # interpolated inside a bin; never past the exact maximum
                **{
                    f"p{q}_hours": min(_quantile(cdf, q / 100), dmax) if len(cdf) else math.nan
                    for q in (50, 90, 99)
                },
                "max_hours": dmax,
            }
        )
    schema = {
        "source": pl.String,
        "labels": pl.Int64,
        "negative_delays": pl.Int64,
        **{
            k: pl.Float64
            for k in ("mean_hours", "p50_hours", "p90_hours", "p99_hours", "max_hours")
        },
    }
    return pl.DataFrame(rows, schema=schema), cdfs


def _maturity(
    cells: pl.DataFrame, cdfs: dict[str, np.ndarray], as_of: dt.datetime, max_pending: float
) -> pl.DataFrame:
    hours = (
        cells.group_by(_HOUR)
        .agg(
            pl.col(_N).sum().alias("requests"),
            pl.col(_N).filter(pl.col(_FINAL).is_not_null()).sum().alias("labelled"),
        )
        .sort(_HOUR)
    )
    # Age at as_of of the hour's midpoint (error at most 30 minutes).
    age = (
        pl.lit(as_of) - (pl.col(_HOUR) + pl.duration(minutes=30))
    ).dt.total_microseconds() / 3.6e9
    hours = hours.with_columns(age.alias("age_hours"))
    a = hours["age_hours"].to_numpy()
    pend = {}
    for s, cdf in cdfs.items():
        pend[f"pending_{s}"] = np.where(a <= 0, 1.0, 1.0 - _cdf_at(cdf, np.maximum(a, 0)))
    hours = hours.with_columns(pl.Series(k, v) for k, v in pend.items())
    pcols = list(pend)
    w = pl.col("requests")
    days = (
        hours.group_by(pl.col(_HOUR).dt.date().alias("day"))
        .agg(
            w.sum().alias("requests"),
            (pl.col("labelled").sum() / w.sum()).alias("labelled_share"),
            *[((pl.col(c) * w).sum() / w.sum()).alias(c) for c in pcols],
        )
        .sort("day")
    )
    pending = pl.max_horizontal(pcols) if pcols else pl.lit(0.0)
    return days.with_columns(pending.alias("pending")).with_columns(
        (pl.col("pending") > max_pending).alias("immature")
    )


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI over bin counts, the convention of :func:`shadowlab.drift.psi`: shares, an empty bin
    gets share ``1e-4``, ``PSI = Σ (e - a) ln(e / a)`` (Siddiqi 2006; Yurdakul 2018)."""
    if expected.sum() == 0 or actual.sum() == 0:
        return math.nan
    e, a = expected / expected.sum(), actual / actual.sum()
    e, a = np.where(e == 0, _PSI_EPS, e), np.where(a == 0, _PSI_EPS, a)
    return float(np.sum((e - a) * np.log(e / a)))


def _composition(summary: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    comp = summary.filter(
        pl.col(_PART).str.starts_with("score:") | pl.col(_PART).str.starts_with("segment:")
    )
    if comp.height == 0:
        return (
            pl.DataFrame(schema={"feature": pl.String, "psi": pl.Float64}),
            pl.DataFrame(
                schema={
                    "feature": pl.String,
                    "bin": pl.String,
                    "primary_policy_share": pl.Float64,
                    "candidate_policy_share": pl.Float64,
                }
            ),
        )
    n = pl.col(_N)
    bins = (
        comp.with_columns(
            pl.col(_PART).str.split_exact(":", 1).struct.field("field_1").alias("feature"),
            pl.col(_BIN).fill_null("missing").alias("bin"),
        )
        .group_by("feature", "bin")
        .agg(
            n.filter(pl.col(_V1) | pl.col(_AUD)).sum().alias("primary_policy"),
            n.filter(pl.col(_V2) | pl.col(_AUD)).sum().alias("candidate_policy"),
        )
        .sort("feature", "bin")
    )
    rows = []
    for (feature,), g in bins.group_by("feature", maintain_order=True):
        rows.append(
            {
                "feature": feature,
                "psi": _psi(g["primary_policy"].to_numpy(), g["candidate_policy"].to_numpy()),
            }
        )
    shares = bins.with_columns(
        (pl.col("primary_policy") / pl.col("primary_policy").sum().over("feature")).alias(
            "primary_policy_share"
        ),
        (pl.col("candidate_policy") / pl.col("candidate_policy").sum().over("feature")).alias(
            "candidate_policy_share"
        ),
    ).select("feature", "bin", "primary_policy_share", "candidate_policy_share")
    return pl.DataFrame(rows, schema={"feature": pl.String, "psi": pl.Float64}), shares


def _training_sets(cells: pl.DataFrame, confidence: float) -> pl.DataFrame:
    z = _z(confidence)
    v1, v2, aud, final = pl.col(_V1), pl.col(_V2), pl.col(_AUD), pl.col(_FINAL)
    rows = []
    for policy, flag in ((S.PRIMARY, v1), (S.CANDIDATE, v2)):
        in_set = flag | aud
        size = _sum(cells, in_set)
        labelled = _sum(cells, in_set & final.is_not_null())
        pos = _sum(cells, in_set & (final == 1))
        neg = _sum(cells, in_set & (final == 0))
        # Estimate: requests today's policy reviews or audits carry their labels (in-flight ones
        # assumed missing at random); the rest of the set (flagged only by this policy, not
        # audited) gets the audit slice's rate on "this model flags, v1 does not".
        seen = in_set & (v1 | aud)
        known = _stratum_full(cells, seen, z)
        unseen_size = _sum(cells, in_set & ~(v1 | aud))
        region = _stratum_audit(cells, flag & ~v1, z) if unseen_size else None
        if unseen_size and (region is None or math.isnan(region.p)):
            est = math.nan
        else:
            p_unseen = region.p if region is not None else 0.0
            known_total = 0.0 if known.size == 0 else known.size * _nan0(known.p)
            est = _ratio(known_total + unseen_size * p_unseen, size)
        low, high = _ratio(pos, size), _ratio(size - neg, size)
        est, _ = _project(est, (est, est), low, high)
        rows.append(
            {
                "policy": policy,
                "size": int(size),
                "labelled": int(labelled),
                "positive_rate": est,
                "positive_rate_low": low,
                "positive_rate_high": high,
                "naive_positive_rate": _ratio(pos, pos + neg),
            }
        )
    return pl.DataFrame(rows)


def _nan0(x: float) -> float:
    return 0.0 if math.isnan(x) else x


def _arms(cells: pl.DataFrame) -> pl.DataFrame:
    n = pl.col(_N)
    return (
        cells.group_by(pl.col(_SERVED).alias("served"))
        .agg(
            n.sum().alias("requests"),
            (n.filter(pl.col("reviewed")).sum() / n.sum()).alias("review_rate"),
            (n.filter(pl.col(_FINAL).is_not_null()).sum() / n.sum()).alias("label_rate"),
            (
                n.filter(pl.col(_FINAL) == 1).sum() / n.filter(pl.col(_FINAL).is_not_null()).sum()
            ).alias("positive_rate"),
            (n.filter(pl.col(_HAS["audit"])).sum() / n.sum()).alias("audit_share"),
            (n.filter(pl.col(_HAS["chargeback"])).sum() / n.sum()).alias("chargeback_share"),
        )
        .sort("served")
        .with_columns(pl.selectors.float().fill_nan(None))
    )


# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------


def audit_rate_needed(
    region_size: int,
    *,
    margin: float = 0.05,
    confidence: float = 0.95,
    expected_precision: float = 0.5,
    label_response: float = 1.0,
    current_rate: float | None = None,
    total_requests: int | None = None,
) -> AuditPlan:
    """Audit rate needed to estimate a proportion on a region to ``±margin``.

    Parameters
    ----------
    region_size : int
        Requests per week in the region (for the gate: v2 flags, v1 does not).
    margin : float, default 0.05
        Target half-width of the interval, in (0, 0.5].
    confidence : float, default 0.95
        Interval level, in (0, 1).
    expected_precision : float, default 0.5
        Planning value of the proportion, in [0, 1]; 0.5 is the worst case. Values at 0 or 1
        are moved to 0.01/0.99 so that the plan never asks for zero labels.
    label_response : float, default 1.0
        Share of audited requests whose label arrives, in (0, 1].
    current_rate : float, optional
        Today's audit rate, to state how many weeks it needs.
    total_requests : int, optional
        Requests per week, to state the cost of a uniform audit.

    Returns
    -------
    AuditPlan

    Notes
    -----
    Simple random sampling of a proportion with finite-population correction (Cochran 1977,
    eqs. 4.1-4.2): ``n0 = z² p (1 - p) / margin²`` and ``n = n0 / (1 + n0 / N)``, where
    ``z`` is the normal quantile at ``(1 + confidence) / 2``. Audit draws are Bernoulli with the
    rate, so the count is random; the rate is the one whose expected count meets ``n``.

    References
    ----------
    .. [1] Cochran, W. G. (1977). Sampling Techniques, 3rd ed., Wiley, ch. 4.

    Examples
    --------
    >>> audit_rate_needed(10_000, margin=0.05, expected_precision=0.3)
    AuditPlan(±0.05 at 95%: 313 audits of 10000 region requests, rate 3.1%)
    """
    fn = "audit_rate_needed"
    if not (isinstance(region_size, numbers.Integral) and not isinstance(region_size, bool)):
        raise _param_error("region_size", fn, "an int >= 0", region_size)
    if region_size < 0:
        raise _param_error("region_size", fn, "an int >= 0", region_size)
    if not (_real(margin) and 0 < margin <= 0.5):
        raise _param_error("margin", fn, "a float in the range (0, 0.5]", margin)
    if not _open_unit(confidence):
        raise _param_error("confidence", fn, "a float in the range (0, 1)", confidence)
    if not (_real(expected_precision) and 0 <= expected_precision <= 1):
        raise _param_error(
            "expected_precision", fn, "a float in the range [0, 1]", expected_precision
        )
    if not (_real(label_response) and 0 < label_response <= 1):
        raise _param_error("label_response", fn, "a float in the range (0, 1]", label_response)
    if current_rate is not None and not (_real(current_rate) and 0 <= current_rate <= 1):
        raise _param_error("current_rate", fn, "None or a float in the range [0, 1]", current_rate)
    if total_requests is not None and not (
        isinstance(total_requests, numbers.Integral) and total_requests >= 0
    ):
        raise _param_error("total_requests", fn, "None or an int >= 0", total_requests)
    p = min(max(float(expected_precision), 0.01), 0.99)
    z = _z(confidence)
    n0 = z * z * p * (1 - p) / (margin * margin)
    n = n0 / (1 + n0 / region_size) if region_size else n0
    required = math.ceil(n - 1e-9)
    audits = math.ceil(required / label_response - 1e-9)
    rate = audits / region_size if region_size else math.inf
    weeks = None
    if current_rate is not None:
        weeks = audits / (current_rate * region_size) if current_rate and region_size else math.inf
    return AuditPlan(
        region_size=int(region_size),
        margin=float(margin),
        confidence=float(confidence),
        expected_precision=p,
        label_response=float(label_response),
        required_labels=required,
        required_audits=audits,
        rate=rate,
        current_rate=None if current_rate is None else float(current_rate),
        weeks_at_current_rate=weeks,
        total_requests=None if total_requests is None else int(total_requests),
    )


def feedback_diagnostics(
    pairs: Any,
    labels: Any,
    primary_threshold: float,
    candidate_threshold: float,
    *,
    as_of: dt.datetime | str | None = None,
    confidence: float = 0.95,
    margin: float = 0.05,
    segments: Sequence[str] | None = None,
    score_bins: int = 10,
    max_pending: float = 0.05,
    pulled_pairs: pl.DataFrame | None = None,
    inclusive: bool = True,
) -> FeedbackReport:
    """What selective labels can and cannot say about v2, and what v2 would do to its labels.

    Parameters
    ----------
    pairs : LazyFrame, DataFrame, path, glob, list of paths or Spark DataFrame
        The shadow week's pair logs (anything :func:`shadowlab.engine.as_source` accepts).
    labels : LazyFrame, DataFrame, path, glob, list of paths, Spark DataFrame or None
        Label rows (``request_id``, ``label``, ``label_ts``, ``source``). Collected to this
        process (a Spark table via :func:`shadowlab.engines.spark.collect_labels`): labels are
        a few percent of the week. ``None`` means no labels at all.
    primary_threshold, candidate_threshold : float
        Production thresholds; a model flags a request when ``score >= threshold`` (``>`` with
        ``inclusive=False``).
    as_of : datetime, ISO-8601 string or None, default None
        The instant the analysis pretends to run at: labels with ``label_ts > as_of`` are
        ignored and maturity is judged here. ``None``: the latest ``label_ts`` (or the end of
        the last logged hour when there are no labels). Naive values are read as UTC.
    confidence : float, default 0.95
        Level of every interval and of the audit plan.
    margin : float, default 0.05
        Target half-width for the audit plan (``±margin`` on v2's precision where v2 flags and
        v1 does not).
    segments : list of str or None, default None
        Context columns whose composition is compared between the two policies' labelled sets.
        ``None``: every string, categorical or boolean context column.
    score_bins : int, default 10
        Equal-width bins on [0, 1] (scores outside are clipped) for the score composition PSI.
    max_pending : float, default 0.05
        A day is immature when more than this share of its eventual labels (of any source) is
        expected to be still in flight at ``as_of``.
    pulled_pairs : DataFrame, optional
        Rows of ``pairs`` the caller already pulled that include every audited request and
        every request with a label (e.g. the gate's one pull of ``audit | id_probe(label ids)``),
        in scan order, with the pair columns ts, request_id, served, traffic_pct, both scores,
        audit and audit_rate. The pull is then skipped and these rows are filtered as it would
        have filtered the pairs, so the report is the same.

    Returns
    -------
    FeedbackReport

    Notes
    -----
    *Labels.* Labels after ``as_of`` are dropped; then each request keeps its latest label
    (ties: later source in review < audit < chargeback, then the positive one). Duplicates,
    conflicting labels and labels whose request id is not in the pairs are counted in
    ``label_counts`` and warned about, never dropped silently. Request ids are assumed unique
    in the pairs (:func:`shadowlab.logs.scan_pairs` checks).

    *Selection.* A request is *reviewed* when the served model flagged it (v1 in pure shadow;
    v2 for canary rows served by the candidate; any ``served`` value other than
    ``'candidate'`` counts as the primary arm). Review and audit labels exist by design;
    chargebacks exist because the outcome was fraud, so they are used only in the naive figures
    and in the bounds, never in the estimate.

    *Bounds.* Manski (1989, 2003) worst/best case: for precision ``[k1/N, (k1+u)/N]`` where
    ``N`` are the model's flags, ``k1`` its labelled positives and ``u`` its unlabelled flags;
    for recall ``[k1/(k1+o1+ou), (k1+u)/(k1+u+o1)]`` with ``o1``/``ou`` the labelled positives
    and unlabelled requests outside the flags. They hold whatever the selection was, if the
    labels are right (Lakkaraju et al. 2017 on why selective labels need this).

    *Estimate.* The flags split into a reviewed stratum (inclusion probability 1, labels in
    flight treated as missing at random; Wilson interval with finite-population correction)
    and an unreviewed stratum the audit slice samples with the logged ``audit_rate``
    (Horvitz–Thompson weights ``1/audit_rate``, Hájek ratio, Wilson interval on the effective
    sample ``(Σw)²/Σw(w-1)``). Precision is the size-weighted sum of the two stratum rates; its
    interval combines the stratum intervals by MOVER (Zou & Donner 2008). Estimate and interval
    are finally intersected with the Manski bounds, which hold with certainty. Recall divides the
    flagged positive total by the flagged plus unflagged totals (the latter from reviews of the
    other model's flags and the audit slice of the rest); its interval is the conservative
    rectangle of the two MOVER intervals.

    *Maturity.* ``F_s`` is the empirical delay distribution (``label_ts - ts``) of source
    ``s``. For a request of age ``a`` at ``as_of`` the probability that a label of source ``s``
    it will eventually get has not arrived yet is ``1 - F_s(a)``; ``pending_<s>`` averages it
    over the day's requests (hour midpoints). ``F_s`` is itself read off labels that have
    arrived, so long delays are under-represented and the pending shares are lower bounds.

    *Retraining drift.* Policy ``primary`` would label v1's flags and the audit slice, policy
    ``candidate`` v2's flags and the audit slice. Sizes and compositions are exact (scores and
    segments are logged for every request); the candidate set's positive rate is estimated
    (reviewed/audited part observed, v2-only part from the audit slice) and bounded.

    References
    ----------
    .. [1] Horvitz, D. G. and Thompson, D. J. (1952). A generalization of sampling without
           replacement from a finite universe. JASA 47(260):663-685.
    .. [2] Manski, C. F. (1989). Anatomy of the selection problem. J. Human Resources
           24(3):343-360; Manski, C. F. (2003). Partial Identification of Probability
           Distributions. Springer.
    .. [3] Lakkaraju, H., Kleinberg, J., Leskovec, J., Ludwig, J. and Mullainathan, S. (2017).
           The selective labels problem. KDD '17, 275-284.
    .. [4] Zou, G. Y. and Donner, A. (2008). Construction of confidence limits about effect
           measures: a general approach. Statistics in Medicine 27(10):1693-1702.
    .. [5] Wilson, E. B. (1927). Probable inference, the law of succession, and statistical
           inference. JASA 22(158):209-212.
    .. [6] Sculley, D. et al. (2015). Hidden technical debt in machine learning systems.
           NeurIPS 28.
    .. [7] Cochran, W. G. (1977). Sampling Techniques, 3rd ed. Wiley.
    """
    _feedback_iv(
        primary_threshold, candidate_threshold, confidence, margin, score_bins, max_pending
    )
    if not isinstance(inclusive, bool):
        raise ValueError(
            "The 'inclusive' parameter of feedback_diagnostics must be a bool. "
            f"Got {inclusive!r} instead."
        )
    as_of_dt = _as_of_iv(as_of)
    source = as_source(pairs)
    schema = source.collect_schema()
    names = list(schema)
    for col in _PAIR_COLUMNS:
        if col not in names:
            raise _missing_column("Pairs", col, names, "pass pair logs in schema v1.")
    segs = _segments_iv(schema, segments)

    label_rows = _load_labels(labels)
    counts: dict[str, int] = {"label_rows": int(label_rows.height)}
    if as_of_dt is None and label_rows.height:
        as_of_dt = label_rows[S.LABEL_TS].max()  # type: ignore[assignment]
    if as_of_dt is not None:
        late = label_rows.filter(pl.col(S.LABEL_TS) > as_of_dt)
        counts["after_as_of"] = int(late.height)
        label_rows = label_rows.filter(pl.col(S.LABEL_TS) <= as_of_dt)
    else:
        counts["after_as_of"] = 0
    per_request, label_counts = _per_request(label_rows)
    counts.update(label_counts)

    t1, t2 = float(primary_threshold), float(candidate_threshold)
    if not inclusive:
        # On float64 scores "score > t" is exactly "score >= the next float above t": every
        # flag below keeps its one >= rule (float32 columns compare as float64, also exact).
        t1, t2 = float(np.nextafter(t1, np.inf)), float(np.nextafter(t2, np.inf))
    ts_dtype = schema[S.TS]
    # Labels are a few percent of the week: rather than joining every pair with them, one
    # pass counts requests per (flags, hour) with no join and, in the same pass, the review-set
    # composition (no labels needed); one pull fetches the labelled and audited requests (the
    # only ones whose cells carry label bits or weights), and the cells and label delays of
    # those are finished locally.
    both = source.aggregate(_counts_and_composition(t1, t2, ts_dtype, segs, score_bins))
    totals = comp_summary = pl.DataFrame()
    if both.height:
        totals = both.filter(pl.col(_PASS) == _COUNTS).select(_FLAGS, _HOUR, _N, "traffic_pct")
        comp = both.filter(pl.col(_PASS) == _COMPOSITION)
        comp_summary = comp.select(_CODE, "feature", _BIN, _N)
    if pulled_pairs is None:
        rows = source.pull(_pull_predicate(per_request), _PULL_COLUMNS)
    else:
        missing = [c for c in _PULL_COLUMNS if c not in pulled_pairs.columns]
        if missing:
            raise ValueError(
                f"feedback_diagnostics: pulled_pairs lacks column(s) {missing}; it needs "
                f"{list(_PULL_COLUMNS)}."
            )
        rows = pulled_pairs.filter(_pull_predicate(per_request)).select(_PULL_COLUMNS)
    pulled, delay_summary = _pulled_summaries(rows, per_request, t1, t2, ts_dtype)
    cells_summary = _cells(totals, rows, pulled, t1, t2, ts_dtype)
    if cells_summary.height:
        cells_summary = cells_summary.with_columns(_hour_from_key(ts_dtype).alias(_HOUR))
    if delay_summary.height == 0:
        delay_summary = pl.DataFrame()
    del rows
    summary = pl.concat(
        [
            cells_summary.with_columns(pl.lit("cell").alias(_PART)),
            _delay_parts(delay_summary),
            _composition_parts(comp_summary),
        ],
        how="diagonal_relaxed",
    )
    for col, dtype in (
        (_SRC, pl.String),
        (_DBIN, pl.Int32),
        (_BIN, pl.String),
        ("delay_sum", pl.Int64),
        ("delay_max", pl.Int64),
    ):
        if col not in summary.columns:
            summary = summary.with_columns(pl.lit(None, dtype=dtype).alias(col))
    if cells_summary.height:
        summary = _decode(summary)
    if summary.height == 0:
        raise ValueError(
            "Pairs are empty: there is nothing to diagnose. Fix: pass a non-empty week."
        )
    cells = summary.filter(pl.col(_PART) == "cell").with_columns(
        (
            ((pl.col(_SERVED) == S.CANDIDATE) & pl.col(_V2))
            | ((pl.col(_SERVED) != S.CANDIDATE) & pl.col(_V1))
        ).alias("reviewed")
    )
    requests = int(cells[_N].sum())
    if as_of_dt is None:
        as_of_dt = cells[_HOUR].max() + dt.timedelta(hours=1)  # type: ignore[operator]
    assert as_of_dt is not None

    matched = int(_sum(cells, pl.col(_FINAL).is_not_null()))
    counts["matched"] = matched
    counts["unknown_ids"] = max(counts["labelled_requests"] - matched, 0)

    warns: list[str] = []
    if label_rows.height == 0:
        warns.append(
            "no labels at all (by as_of): accuracy is unknown; bounds span everything possible"
        )
    if counts["unknown_ids"]:
        warns.append(
            f"{counts['unknown_ids']:,} labelled request ids are not in the pairs (labels for "
            "another week or a join-key mismatch); they are counted here and ignored"
        )
    if counts["duplicates"]:
        warns.append(
            f"{counts['duplicates']:,} duplicate labels ({counts['conflicting']:,} requests with "
            "disagreeing labels): the latest label of each request wins"
        )
    if counts["after_as_of"]:
        warns.append(f"{counts['after_as_of']:,} labels arrived after as_of and were ignored")
    if counts["other_sources"]:
        warns.append(
            f"{counts['other_sources']:,} labels have a source outside {list(S.LABEL_SOURCES)}: "
            "used in the naive figures and bounds, never in the estimate"
        )
    if matched > counts["labelled_requests"]:
        warns.append("some request ids repeat in the pairs: label counts are inflated")
    no_rate = int(cells["audit_without_rate"].sum())
    if no_rate:
        warns.append(
            f"{no_rate:,} audited requests have no positive audit_rate: they cannot be weighted "
            "and are left out of the estimate"
        )

    crosstab = _crosstab(cells)
    v2 = _sum(cells, pl.col(_V2))
    risk = pl.col(_V2) & ~pl.col(_V1) & ~pl.col(_AUD)
    risk_n = _sum(cells, risk)
    risk_mass = _ratio(risk_n, v2)
    risk_cb = _ratio(_sum(cells, risk & pl.col(_HAS["chargeback"])), risk_n)

    cand_p, cand_r = _metric_bounds(cells, S.CANDIDATE, confidence)
    prim_p, prim_r = _metric_bounds(cells, S.PRIMARY, confidence)
    audited = _sum(cells, pl.col(_AUD))
    if audited == 0:
        warns.append(
            "no audit slice in these logs: v2's accuracy where v1 did not flag is unobservable "
            "by design; only the bounds are reported"
        )
    for m in (cand_p, cand_r):
        if m.note and audited:
            warns.append(f"{m.model} {m.metric}: {m.note}")

    delays, cdfs = _label_delays(summary)
    maturity = _maturity(cells, cdfs, as_of_dt, float(max_pending))
    immature_days = tuple(maturity.filter(pl.col("immature"))["day"].to_list())
    immature_share = _ratio(
        float((maturity["pending"] * maturity["requests"]).sum()), float(maturity["requests"].sum())
    )
    if immature_days:
        warns.append(
            f"accuracy is read partly off immature days ({', '.join(d.isoformat() for d in immature_days)}): "
            f"more than {100 * max_pending:g}% of their labels are expected to arrive after as_of, "
            "so their positive rates are understated"
        )
    if cells[_HOUR].max() >= as_of_dt:  # type: ignore[operator]
        warns.append("some requests are later than as_of: none of their labels can have arrived")

    composition, composition_bins = _composition(summary)
    training = _training_sets(cells, confidence)

    max_traffic = cells["traffic_pct"].max()
    canary = (max_traffic is not None and float(max_traffic) > 0) or bool(  # type: ignore[arg-type]
        (cells[_SERVED] == S.CANDIDATE).any()
    )
    arms = _arms(cells) if canary else None

    # The plan targets v2's precision where v2 flags and v1 does not.
    region = pl.col(_V2) & ~pl.col(_V1)
    region_size = int(_sum(cells, region))
    b = _stratum_audit(cells, region, _z(confidence))
    drawn = _sum(cells, region & pl.col(_AUD))
    response = _ratio(b.labels, drawn) if drawn else 1.0
    rates = cells.filter(pl.col(_AUD))
    current_rate = (
        float(_sum(rates) / _sum(rates, col=_W)) if audited and _sum(rates, col=_W) else None
    )
    plan = audit_rate_needed(
        region_size,
        margin=margin,
        confidence=confidence,
        expected_precision=0.5 if math.isnan(b.p) else b.p,
        label_response=response if response and response > 0 else 1.0,
        current_rate=current_rate if current_rate is not None else (0.0 if not audited else None),
        total_requests=requests,
    )
    return FeedbackReport(
        primary_threshold=float(primary_threshold),
        candidate_threshold=float(candidate_threshold),
        as_of=as_of_dt,
        confidence=float(confidence),
        requests=requests,
        crosstab=crosstab,
        unlabelled_risk_mass=risk_mass,
        risk_mass_chargebacked=risk_cb,
        candidate_precision=cand_p,
        candidate_recall=cand_r,
        primary_precision=prim_p,
        primary_recall=prim_r,
        label_delays=delays,
        maturity=maturity,
        immature_share=immature_share,
        immature_days=immature_days,
        training_sets=training,
        composition=composition,
        composition_bins=composition_bins,
        arms=arms,
        audit_plan=plan,
        label_counts=counts,
        warnings=tuple(warns),
    )
