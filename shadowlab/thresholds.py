"""The v2 threshold that keeps v1's trigger rate: exact, with uncertainty, stability and segments.

"At what threshold does the candidate flag as often as the primary does today?" The answer is an
order statistic of the candidate's scores. :func:`calibrate_threshold` computes it exactly with the
mergeable-summary contract of :mod:`shadowlab.engine`:

1. **histogram pass** -- one mergeable summary keyed by (UTC hour, v1 flag at its threshold,
   candidate-score bin, segment columns) with the count, min, max and the candidate's flags at
   v1's threshold per key. The bins are coarse (64 on [0, 1] plus an underflow and an overflow
   bin); the hour / flag / segment keys are what make the stability tables, the segments and
   the agreement table exact without another pass. When a critical bin holds more than
   ``_MAX_PULL`` rows and is not a single tied value, a **zoom pass** re-bins just that bin
   (256 sub-bins, same keys). On a polars source the first histogram is folded by the
   compiled library (``_fold.c``: dense cells per hour and segment) instead of polars' hash
   group-by, with the same cells (tested); Spark and a build without the library group-by;
2. **refinement pull** -- only the rows inside the bins that contain the needed ranks (the selected
   rank, its neighbour and the two ranks of the confidence interval) are fetched, with their
   hour, v1 flag and segment; bins holding one tied value are resolved from their min/max
   without pulling anything. The finish is local and exact: the threshold is an observed score,
   and the candidate's flags per hour and segment at that threshold are the counts of the bins
   above it plus the pulled rows at or above it.

The result records each pass and the rows it moved (:attr:`ThresholdCalibration.passes`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl

from shadowlab import _native
from shadowlab import schema as S
from shadowlab.engine import Aggregation, Source, as_source

__all__ = ["Capacity", "ThresholdCalibration", "calibrate_threshold", "wilson_interval"]

_BINS = 64
"""First-pass bins on [0, 1]; a power of two so that ``score * _BINS`` and the bins are exact.
Coarse on purpose: the first pass is also keyed by hour, v1 flag and segment (the stability
tables come from it), and the refinement pull resolves the critical bin exactly."""
_SUB_BINS = 256
"""Sub-bins of a zoom pass over one oversized critical bin."""
_HOUR_US = 3_600_000_000
_MAX_PULL = 2_000_000
"""A critical bin with more rows than this (and more than one distinct value) is zoomed first."""
_MAX_ZOOM = 8

Side = Literal["nearest", "at_most", "at_least"]
_SIDES = ("nearest", "at_most", "at_least")


@dataclass(frozen=True, slots=True)
class Capacity:
    """A review capacity: how many flagged requests per day the team can handle.

    Turned into a target trigger rate by dividing by the logged volume per day: valid pairs divided
    by the number of distinct UTC calendar days present in the logs.
    """

    per_day: float

    def __post_init__(self) -> None:
        if not (isinstance(self.per_day, int | float) and math.isfinite(self.per_day)) or (
            self.per_day < 0
        ):
            raise ValueError(
                "The 'per_day' parameter of Capacity must be a finite number >= 0. "
                f"Got {self.per_day!r} instead."
            )


@dataclass(frozen=True, slots=True)
class ThresholdCalibration:
    """Result of :func:`calibrate_threshold`.

    Attributes
    ----------
    threshold : float
        The candidate threshold. With ``inclusive=True`` it is the ``a``-th largest candidate score,
        where ``a`` is the selected achievable flag count, so exactly ``a`` pairs have
        ``score >= threshold``; with ``inclusive=False`` it is the ``(a+1)``-th largest, so exactly
        ``a`` have ``score > threshold``. For ``a = 0`` (inclusive) it is the next float above the
        maximum score, for ``a = n`` (exclusive) the next float below the minimum.
    primary_threshold, inclusive, side, confidence : as passed.
    target : str
        What was asked for: ``"match"``, ``"rate=…"`` or ``"capacity=…/day"``.
    target_rate : float
        The target trigger rate over valid pairs.
    n_rows, n_pairs, n_excluded, n_primary_failed, n_candidate_failed : int
        All rows, rows where both scores are finite (the denominator of every rate), rows excluded
        and, among those, rows where each model failed (null, NaN or infinite score).
    primary_count, primary_rate : int, float
        v1 flags at ``primary_threshold``.
    candidate_count, candidate_rate : int, float
        v2 flags at ``threshold`` (the achieved rate).
    rate_below, threshold_below, rate_above, threshold_above : float
        The two achievable rates around the target (equal when the target is achievable) and their
        thresholds.
    naive_candidate_rate : float
        v2 at v1's threshold -- what happens if the threshold is simply copied.
    naive_ratio, rate_ratio : float
        ``naive_candidate_rate / primary_rate`` and ``candidate_rate / primary_rate``.
    threshold_ci : (float, float)
        Distribution-free order-statistic interval for the population quantile at
        ``1 - target_rate`` (``-inf``/``inf`` where the sample is too small for that side).
    threshold_ci_ranks : (int, int)
        The ascending ranks ``l`` and ``u`` of that interval.
    candidate_rate_ci : (float, float)
        Wilson score interval for the achieved rate.
    agreement : dict
        ``both``, ``primary_only``, ``candidate_only``, ``neither``: the 2x2 counts of (v1 flags at
        ``primary_threshold``, v2 flags at ``threshold``).
    by_day, by_hour : polars.DataFrame
        Per UTC day and per hour of day: ``pairs``, ``primary_rate``, ``candidate_rate`` (at the
        week's threshold) and ``rel_deviation = candidate_rate / primary_rate - 1``.
    max_daily_rel_deviation : float
        Largest ``|rel_deviation|`` over days.
    segments : polars.DataFrame or None
        With ``by``: per segment ``pairs``, ``excluded``, ``primary_rate``, ``candidate_rate`` at the
        global threshold, ``ratio``, ``naive_candidate_rate``; with ``per_segment=True`` also the
        segment's own ``segment_threshold`` and ``segment_rate``.
    passes : tuple of dict
        Each pass over the data: ``kind`` and ``rows_moved``.
    notes : tuple of str
        Plain-language notes (degenerate targets, exclusions, unbounded intervals).
    """

    threshold: float
    primary_threshold: float
    target: str
    target_rate: float
    side: str
    inclusive: bool
    confidence: float
    n_rows: int
    n_pairs: int
    n_excluded: int
    n_primary_failed: int
    n_candidate_failed: int
    primary_count: int
    primary_rate: float
    candidate_count: int
    candidate_rate: float
    rate_below: float
    threshold_below: float
    rate_above: float
    threshold_above: float
    naive_candidate_rate: float
    naive_ratio: float
    rate_ratio: float
    threshold_ci: tuple[float, float]
    threshold_ci_ranks: tuple[int, int]
    candidate_rate_ci: tuple[float, float]
    agreement: dict[str, int]
    by_day: pl.DataFrame
    by_hour: pl.DataFrame
    max_daily_rel_deviation: float
    segments: pl.DataFrame | None = None
    passes: tuple[dict[str, Any], ...] = ()
    notes: tuple[str, ...] = field(default=())

    def __repr__(self) -> str:
        rule = ">=" if self.inclusive else ">"
        lines = [
            f"ThresholdCalibration(threshold={self.threshold:.6g}, rule='score {rule} t', "
            f"target={self.target!r}, side={self.side!r})",
            f"  pairs={self.n_pairs} (excluded {self.n_excluded} of {self.n_rows})",
            f"  v1 rate={self.primary_rate:.4%} at {self.primary_threshold:.6g}; "
            f"v2 rate={self.candidate_rate:.4%} (ratio {self.rate_ratio:.3f}; "
            f"achievable {self.rate_below:.4%} / {self.rate_above:.4%})",
            f"  naive v2 rate at v1's threshold={self.naive_candidate_rate:.4%} "
            f"(ratio {self.naive_ratio:.3f})",
            f"  threshold {self.confidence:.0%} CI=[{self.threshold_ci[0]:.6g}, "
            f"{self.threshold_ci[1]:.6g}]; rate CI=[{self.candidate_rate_ci[0]:.4%}, "
            f"{self.candidate_rate_ci[1]:.4%}]",
            f"  max daily rel. deviation={self.max_daily_rel_deviation:.3f}; agreement={self.agreement}",
        ]
        if self.segments is not None:
            lines.append(f"  segments={self.segments.height}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: tables as lists of rows, non-finite floats as ``None``."""
        return _result_to_dict(self)


def _result_to_dict(result: Any) -> dict[str, Any]:
    """A frozen result dataclass as a JSON-safe dict (polars tables as lists of rows)."""
    out: dict[str, Any] = {}
    for name in result.__dataclass_fields__:
        value = getattr(result, name)
        if isinstance(value, pl.DataFrame):
            value = value.to_dicts()
        out[name] = _json_safe(value)
    return out


def _json_safe(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def wilson_interval(count: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``count / n``.

    Returns ``(nan, nan)`` when ``n == 0``.

    References
    ----------
    .. [1] E. B. Wilson, "Probable inference, the law of succession, and statistical inference",
           JASA 22 (1927) 209-212.
    .. [2] A. Agresti and B. A. Coull, "Approximate is better than 'exact' for interval estimation
           of binomial proportions", The American Statistician 52 (1998) 119-126.
    """
    if n <= 0:
        return (math.nan, math.nan)
    z = _norm_ppf(0.5 + confidence / 2)
    p = count / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _order_statistic_ranks(n: int, q: float, confidence: float) -> tuple[int, int]:
    """Ascending ranks ``(l, u)`` with ``P(X_(l) <= xi_q <= X_(u)) >= confidence``.

    ``l = F^-1(alpha/2)`` and ``u = F^-1(1 - alpha/2) + 1`` with ``F`` the Binomial(n, q) cdf
    (scipy's ``ppf``: the smallest x with ``F(x) >= p``); then ``P(l <= B <= u - 1) >= 1 - alpha``.
    ``l < 1`` or ``u > n`` mean that side is unbounded at this sample size.
    """
    alpha = 1 - confidence
    lo = int(_binom_ppf(alpha / 2, n, q))
    hi = int(_binom_ppf(1 - alpha / 2, n, q)) + 1
    return lo, hi


# scipy.stats costs ~0.6 s to import (all its distributions); the two functions used here are
# scipy.special ufuncs (~0.25 s), the very ones scipy.stats evaluates, so the values are the same.


def _norm_ppf(p: float) -> float:
    """``scipy.stats.norm.ppf(p)``: that method is ``scipy.special.ndtri`` (times 1, plus 0)."""
    from scipy.special import ndtri

    return float(ndtri(p))


def _binom_ppf(p: float, n: int, q: float) -> float:
    """``scipy.stats.binom.ppf(p, n, q)`` for ``0 < p < 1``.

    For ``0 < p < 1`` and valid ``(n, q)`` scipy's ``binom.ppf`` returns its ``_ppf``, the
    ``scipy.special`` ufunc ``_binom_ppf`` (Boost's quantile, rounded up to an integer). That
    ufunc is private, so an older or newer scipy without it falls back to ``scipy.stats``.
    """
    try:
        from scipy.special._ufuncs import _binom_ppf as ppf
    except ImportError:  # pragma: no cover - depends on the scipy version
        from scipy import stats

        return float(stats.binom.ppf(p, n, q))
    return float(ppf(p, n, q))


# -- the exact order-statistic machinery ---------------------------------------------------------


def _finite(col: str) -> pl.Expr:
    return pl.col(col).is_finite().fill_null(False)


def _valid() -> pl.Expr:
    return _finite(S.PRIMARY_SCORE) & _finite(S.CANDIDATE_SCORE)


def _flag(col: str, threshold: float, inclusive: bool) -> pl.Expr:
    return pl.col(col) >= threshold if inclusive else pl.col(col) > threshold


def _clean(col: str) -> pl.Expr:
    # NaN and infinite scores are failures, like nulls (scan_pairs already nulls them).
    return pl.when(pl.col(col).is_finite()).then(pl.col(col))


def _bin0(x: pl.Expr) -> pl.Expr:
    # floor(x * 2**k) is exact and monotone: bins [j/2**k, (j+1)/2**k), -1 below 0, _BINS for >= 1.
    return (x * float(_BINS)).floor().clip(-1.0, float(_BINS)).cast(pl.Int64)


def _subbin(x: pl.Expr, lo: float, hi: float) -> pl.Expr:
    # Monotone in x (each floating operation is), so sub-bins stay ordered; lo -> 0, hi -> last.
    return (
        ((x - lo) / (hi - lo) * float(_SUB_BINS))
        .floor()
        .clip(0.0, float(_SUB_BINS - 1))
        .cast(pl.Int64)
    )


def _hour() -> pl.Expr:
    return pl.col(S.TS).dt.epoch("us") // _HOUR_US


def _hist_agg(
    bin_expr: pl.Expr,
    n_bins: int,
    by: list[str],
    t1: float,
    inclusive: bool,
    pred: pl.Expr | None = None,
    schema: Any = None,
) -> Aggregation:
    """Histogram of the candidate score per (hour, v1 flag, bin, *by) in one packed int key.

    ``bin_expr`` maps the cleaned candidate score to ``0 .. n_bins - 1``. Rows where either score
    failed get bin slot ``-1`` (their min/max/naive are meaningless and dropped by the finish).
    Given the frame's ``schema``, the first pass's histogram (``_bin0(...) + 1``, no ``pred``)
    gets the compiled fold as its fast path (:func:`_hist_fold`) when the columns allow it.
    """
    c = _clean(S.CANDIDATE_SCORE)
    p = _clean(S.PRIMARY_SCORE)
    flag1 = (p >= t1) if inclusive else (p > t1)
    inner = (flag1.cast(pl.Int64) * n_bins + bin_expr).fill_null(-1)
    key = _hour() * (2 * n_bins + 1) + inner + 1
    naive = (c >= t1) if inclusive else (c > t1)

    def build(lf: pl.LazyFrame) -> pl.LazyFrame:
        if pred is not None:
            lf = lf.filter(pred)
        return lf.group_by(key.alias("_k"), *by).agg(
            pl.len().cast(pl.Int64).alias("n"),
            c.min().alias("vmin"),
            c.max().alias("vmax"),
            naive.cast(pl.Int64).sum().alias("naive"),
        )

    fast = (
        _foldable(schema)
        and pred is None
        and n_bins == _BINS + 2
        and bin_expr.meta.eq(_bin0(_clean(S.CANDIDATE_SCORE)) + 1)
    )
    prepare, fold = _hist_fold(by, t1, inclusive, schema) if fast else (None, None)
    return Aggregation(
        build,
        keys=("_k", *by),
        reduce={"n": "sum", "vmin": "min", "vmax": "max", "naive": "sum"},
        prepare=prepare,
        fold=fold,
    )


def _foldable(schema: Any) -> bool:
    """Whether the compiled first-pass fold applies: the library is built, and the timestamp
    is a datetime and both scores are Float64 (the summary's types are then the build's)."""
    if schema is None or not _native.available():
        return False
    ts = schema.get(S.TS)
    return (
        isinstance(ts, pl.Datetime)
        and schema.get(S.PRIMARY_SCORE) == pl.Float64
        and schema.get(S.CANDIDATE_SCORE) == pl.Float64
    )


def _hist_fold(by: list[str], t1: float, inclusive: bool, schema: Any) -> tuple[Any, Any]:
    """The first pass's histogram folded by ``_fold.c`` (prepare, fold).

    Same summary as the build's group-by, cell for cell (``tests/test_thresholds.py``): the
    kernel repeats the key's integer steps and the bin's IEEE operations. The segment columns
    travel as two 64-bit hashes with different seeds: the first numbers the segments, the
    second must agree on every row (:class:`shadowlab._native.SegmentCollision` otherwise; the
    caller then runs the build). At 50 M pairs by country: the build's hash group-by over (key,
    country) 2.4-3.4 s (reading its four columns alone 1.3 s).
    """

    def seg(seed: int) -> pl.Expr:
        if not by:
            return pl.lit(0, pl.UInt64)
        return (pl.col(by[0]) if len(by) == 1 else pl.struct(by)).hash(seed=seed)

    def prepare(lf: pl.LazyFrame) -> pl.LazyFrame:
        return lf.select(
            pl.col(S.TS).dt.epoch("us").fill_null(_native.NULL_US).alias("__us"),
            pl.col(S.PRIMARY_SCORE).fill_null(math.nan).alias("__p"),
            pl.col(S.CANDIDATE_SCORE).fill_null(math.nan).alias("__c"),
            seg(0).alias("__g"),
            seg(1).alias("__h"),
            *by,
        )

    def fold(chunks: Any) -> pl.DataFrame:
        hist = _native.HourHistogram(t1, inclusive, _BINS + 2, float(_BINS))
        values: list[pl.DataFrame] = []  # the segment values, by number
        try:
            for chunk in chunks:
                if chunk.height == 0:
                    continue
                _, first = hist.add(
                    *(chunk[c].to_numpy() for c in ("__us", "__p", "__c", "__g", "__h"))
                )
                if by and len(first):
                    values.append(chunk.select(by)[first])
            cells = hist.cells()
        finally:
            hist.close()
        if len(cells["n"]) == 0:
            return pl.DataFrame()
        out = pl.DataFrame(
            {
                "_k": cells["key"],
                "__null_ts": cells["null_ts"].astype(bool),
                "n": cells["n"],
                "vmin": cells["vmin"],
                "vmax": cells["vmax"],
                "naive": cells["naive"],
            }
        ).select(
            pl.when(~pl.col("__null_ts")).then(pl.col("_k")).alias("_k"),
            "n",
            pl.when(pl.col("vmin") < math.inf).then(pl.col("vmin")).alias("vmin"),
            pl.when(pl.col("vmax") > -math.inf).then(pl.col("vmax")).alias("vmax"),
            "naive",
        )
        if by:
            segs = pl.concat(values)[cells["code"]]
            out = pl.concat([out.select("_k"), segs, out.drop("_k")], how="horizontal")
        return out

    return prepare, fold


def _decode(hist: pl.DataFrame, n_bins: int) -> pl.DataFrame:
    """Unpack ``_k`` into ``_hour``, ``_f`` (v1 flag) and ``_bin`` (null: a failed score)."""
    m = 2 * n_bins + 1
    inner = pl.col("_k") % m - 1
    return hist.with_columns(
        (pl.col("_k") // m).alias("_hour"),
        pl.when(inner >= 0).then(inner // n_bins).alias("_f"),
        pl.when(inner >= 0).then(inner % n_bins).alias("_bin"),
    ).drop("_k")


class _Cells:
    """Histogram cells of the candidate score, ascending by value, counted per group.

    Two groupings share the cells: *selection* groups (``count``, ``vmin``, ``vmax``; column
    ``G - 1`` is the whole data, columns ``0 .. G - 2`` are segments when a threshold per segment
    is asked for) and *breakdown* groups (``bd``: one column per (hour, v1 flag, *by) present),
    from which flags per day, hour, segment and the agreement table follow at any threshold.
    Cells are strictly ordered: every value of a cell exceeds every value of the cells before it.
    """

    def __init__(self, preds, count, vmin, vmax, bd, hkeys: pl.DataFrame):
        self.preds: list[pl.Expr] = preds
        self.count: np.ndarray = count
        self.vmin: np.ndarray = vmin
        self.vmax: np.ndarray = vmax
        self.bd: np.ndarray = bd
        self.hkeys = hkeys
        self.level = [0] * len(preds)
        self.values: dict[tuple[int, int], np.ndarray] = {}
        self.pulled: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def locate(self, g: int, r: int) -> tuple[int, int]:
        """Cell holding the descending rank ``r`` (1-based) of group ``g``; rows in cells above."""
        above = np.cumsum(self.count[::-1, g])
        j = int(np.searchsorted(above, r, side="left"))
        i = self.count.shape[0] - 1 - j
        return i, int(above[j] - self.count[i, g])

    def constant(self, i: int, g: int) -> bool:
        return bool(self.vmin[i, g] == self.vmax[i, g])

    def value(self, g: int, r: int) -> float:
        i, above = self.locate(g, r)
        if self.constant(i, g):
            return float(self.vmin[i, g])
        return float(self.values[(i, g)][r - above - 1])

    def cell_of(self, g: int, v: float) -> int:
        hit = np.flatnonzero(
            (self.count[:, g] > 0) & (self.vmin[:, g] <= v) & (v <= self.vmax[:, g])
        )
        if hit.size != 1:
            raise AssertionError(f"value {v} is not an observed score of exactly one cell")
        return int(hit[0])

    def count_ge(self, g: int, v: float, strict: bool = False) -> int:
        i = self.cell_of(g, v)
        above = int(self.count[i + 1 :, g].sum())
        if self.constant(i, g):
            inside = 0 if strict else int(self.count[i, g])
        else:
            vals = self.values[(i, g)]
            inside = int(np.count_nonzero(vals > v if strict else vals >= v))
        return above + inside

    def next_above(self, g: int, v: float) -> float | None:
        i = self.cell_of(g, v)
        if not self.constant(i, g):
            vals = self.values[(i, g)]
            bigger = vals[vals > v]
            if bigger.size:
                return float(bigger.min())
        nxt = np.flatnonzero(self.count[i + 1 :, g] > 0)
        return float(self.vmin[i + 1 + nxt[0], g]) if nxt.size else None

    def next_below(self, g: int, v: float) -> float | None:
        i = self.cell_of(g, v)
        if not self.constant(i, g):
            vals = self.values[(i, g)]
            smaller = vals[vals < v]
            if smaller.size:
                return float(smaller.max())
        prev = np.flatnonzero(self.count[:i, g] > 0)
        return float(self.vmax[prev[-1], g]) if prev.size else None

    def flags_by_group(self, t: float, inclusive: bool) -> np.ndarray:
        """Candidate flags at ``t`` per breakdown group, exact (pulled rows where needed)."""
        nz = self.count[:, -1] > 0
        lo, hi = self.vmin[:, -1], self.vmax[:, -1]
        hit = np.flatnonzero(nz & (lo <= t) & (t <= hi))
        if hit.size == 0:  # t falls between cells (or outside all of them)
            return self.bd[nz & (lo > t)].sum(axis=0)
        j = int(hit[0])
        out = self.bd[j + 1 :].sum(axis=0)
        if j in self.pulled:
            vals, h = self.pulled[j]
            m = vals >= t if inclusive else vals > t
            return out + np.bincount(h[m], minlength=self.bd.shape[1])
        if (inclusive and t <= lo[j]) or (not inclusive and t < lo[j]):
            return out + self.bd[j]
        if (not inclusive and t >= hi[j]) or (inclusive and t > hi[j]):
            return out
        raise AssertionError(f"threshold {t} inside an unpulled cell")  # pragma: no cover


def _index(frame: pl.DataFrame, keys: pl.DataFrame, on: list[str]) -> np.ndarray:
    """Row position in ``keys`` of each row of ``frame`` (matching ``on``, nulls equal)."""
    if not on:
        return np.zeros(frame.height, dtype=np.int64)
    idx = keys.select(on).with_row_index("_g")
    joined = frame.select(on).with_row_index("_r").join(idx, on=on, how="left", nulls_equal=True)
    return joined.sort("_r")["_g"].to_numpy().astype(np.int64)


_HKEYS = ["_hour", "_f"]


def _matrices(valid: pl.DataFrame, seg_keys: list[str], segments, hkeys: pl.DataFrame, by):
    """(bins, count, vmin, vmax, bd) from decoded valid histogram rows."""
    bins = np.unique(valid["_bin"].to_numpy())
    n_seg = 0 if segments is None else segments.height
    G, C, H = n_seg + 1, bins.size, hkeys.height
    count = np.zeros((C, G), dtype=np.int64)
    vmin = np.full((C, G), np.inf)
    vmax = np.full((C, G), -np.inf)
    bd = np.zeros((C, H), dtype=np.int64)
    ci = np.searchsorted(bins, valid["_bin"].to_numpy())
    cnt = valid["n"].to_numpy().astype(np.int64)
    mn = valid["vmin"].to_numpy().astype(float)
    mx = valid["vmax"].to_numpy().astype(float)
    cols = [np.full(valid.height, G - 1)]
    if n_seg:
        cols.append(_index(valid, segments, seg_keys))
    for gi in cols:
        np.add.at(count, (ci, gi), cnt)
        np.minimum.at(vmin, (ci, gi), mn)
        np.maximum.at(vmax, (ci, gi), mx)
    np.add.at(bd, (ci, _index(valid, hkeys, [*_HKEYS, *by])), cnt)
    return bins, count, vmin, vmax, bd


def _refine(
    source: Source,
    cells: _Cells,
    queries: dict[int, list[int]],
    by: list[str],
    seg_keys: list[str],
    segments: pl.DataFrame | None,
    t1: float,
    inclusive: bool,
    passes: list[dict[str, Any]],
) -> None:
    """Zoom oversized critical cells, then pull the rows of the critical cells (one pass)."""
    c = _clean(S.CANDIDATE_SCORE)
    valid = _valid()
    while True:
        crit = {cells.locate(g, r)[0] for g, ranks in queries.items() for r in ranks}
        zoom = [
            i
            for i in sorted(crit)
            if cells.count[i, -1] > _MAX_PULL
            and cells.vmin[i, -1] < cells.vmax[i, -1]
            and cells.level[i] < _MAX_ZOOM
            and math.isfinite(float(cells.vmax[i, -1] - cells.vmin[i, -1]))
        ]
        if not zoom:
            break
        i = zoom[-1]
        lo, hi = float(cells.vmin[i, -1]), float(cells.vmax[i, -1])
        sub = _subbin(c, lo, hi)
        agg = _hist_agg(sub, _SUB_BINS, by, t1, inclusive, pred=valid & cells.preds[i])
        hist = _decode(source.aggregate(agg), _SUB_BINS)
        passes.append({"kind": "zoom histogram", "rows_moved": hist.height})
        bins, count, vmin, vmax, bd = _matrices(hist, seg_keys, segments, cells.hkeys, by)
        new_preds = [cells.preds[i] & (sub == int(k)) for k in bins]
        cells.preds[i : i + 1] = new_preds
        cells.level[i : i + 1] = [cells.level[i] + 1] * len(new_preds)
        cells.count = np.concatenate([cells.count[:i], count, cells.count[i + 1 :]])
        cells.vmin = np.concatenate([cells.vmin[:i], vmin, cells.vmin[i + 1 :]])
        cells.vmax = np.concatenate([cells.vmax[:i], vmax, cells.vmax[i + 1 :]])
        cells.bd = np.concatenate([cells.bd[:i], bd, cells.bd[i + 1 :]])
    need: set[int] = set()
    for g, ranks in queries.items():
        for r in ranks:
            i, _ = cells.locate(g, r)
            if not cells.constant(i, g):
                need.add(i)
    if not need:
        passes.append({"kind": "refinement pull (not needed: tied bins)", "rows_moved": 0})
        return
    order = sorted(need)
    # Cells are disjoint and ordered, so "in cell i" is "between the cell's observed min and max":
    # plain comparisons, cheaper than re-binning every row and easy for any engine to push down.
    # The predicate reads the candidate column only; the few pulled rows whose primary score
    # failed are dropped here (at 50 M rows this saves ~10 % of the pass's CPU).
    cc = pl.col(S.CANDIDATE_SCORE)
    ranges = [cc.is_between(float(cells.vmin[i, -1]), float(cells.vmax[i, -1])) for i in order]
    cols = list(dict.fromkeys([S.CANDIDATE_SCORE, S.PRIMARY_SCORE, S.TS, *by]))
    pulled = source.pull(pl.any_horizontal(ranges), cols)
    passes.append({"kind": "refinement pull", "rows_moved": pulled.height})
    pulled = pulled.filter(_finite(S.PRIMARY_SCORE))
    f1 = pl.col(S.PRIMARY_SCORE) >= t1 if inclusive else pl.col(S.PRIMARY_SCORE) > t1
    pulled = pulled.with_columns(_hour().alias("_hour"), f1.cast(pl.Int64).alias("_f"))
    G = cells.count.shape[1]
    for i, in_cell in zip(order, ranges, strict=True):
        rows = pulled.filter(in_cell)
        vals = rows[S.CANDIDATE_SCORE].to_numpy()
        cells.pulled[i] = (vals, _index(rows, cells.hkeys, [*_HKEYS, *by]))
        gi = _index(rows, segments, seg_keys) if segments is not None else None
        for g in range(G):
            v = vals if g == G - 1 else vals[gi == g]
            cells.values[(i, g)] = np.sort(v)[::-1]


@dataclass(frozen=True, slots=True)
class _Selection:
    threshold: float
    count: int
    count_below: int
    count_above: int
    threshold_below: float
    threshold_above: float
    ci_ranks: tuple[int, int]
    ci: tuple[float, float]


def _snap(m: float) -> float:
    # A target like 0.3 * 10 = 3.0000000000000004 means 3 flags: snap float noise to the integer.
    r = round(m)
    return float(r) if abs(m - r) <= 1e-9 * max(1.0, abs(m)) else m


def _needed_ranks(n: int, m: float, q: float, confidence: float) -> list[int]:
    if n == 0:
        return []
    k, f = math.ceil(m), math.floor(m)
    lo, hi = _order_statistic_ranks(n, q, confidence)
    ranks = [r for r in (k, f + 1, n - lo + 1, n - hi + 1) if 1 <= r <= n]
    return sorted(set(ranks))


def _select(
    cells: _Cells, g: int, m: float, side: str, inclusive: bool, q: float, confidence: float
):
    n = int(cells.count[:, g].sum())
    k, f = math.ceil(m), math.floor(m)
    s_k = cells.value(g, k) if k >= 1 else None
    s_f1 = cells.value(g, f + 1) if f < n else None
    a_above = cells.count_ge(g, s_k) if s_k is not None else 0
    a_below = cells.count_ge(g, s_f1, strict=True) if s_f1 is not None else n
    nonzero = np.flatnonzero(cells.count[:, g] > 0)
    vmax_all = float(cells.vmax[nonzero[-1], g])
    vmin_all = float(cells.vmin[nonzero[0], g])

    def threshold_for(a: int, which: str) -> float:
        if inclusive:
            if a == 0:
                return float(np.nextafter(vmax_all, np.inf))
            if which == "above":
                return float(s_k)  # type: ignore[arg-type]
            if s_f1 is None:  # f == n: every pair, the minimum
                return vmin_all
            # the a_below-th largest is the smallest value strictly above s_{f+1}
            nxt = cells.next_above(g, s_f1)  # type: ignore[arg-type]
            return float(nxt)  # type: ignore[arg-type]
        if a == n:
            return float(np.nextafter(vmin_all, -np.inf))
        if which == "below":
            return float(s_f1)  # type: ignore[arg-type]
        if s_k is None:  # k == 0: nothing flagged, the maximum
            return vmax_all
        nxt = cells.next_below(g, s_k)
        return float(nxt) if nxt is not None else float(np.nextafter(vmin_all, -np.inf))

    t_below = threshold_for(a_below, "below")
    t_above = threshold_for(a_above, "above")
    if side == "at_most":
        pick = "below"
    elif side == "at_least":
        pick = "above"
    else:  # nearest; on an exact tie of distances the lower count (less review load) wins
        pick = "above" if (a_above - m) < (m - a_below) else "below"
    count = a_above if pick == "above" else a_below
    threshold = t_above if pick == "above" else t_below
    lo, hi = _order_statistic_ranks(n, q, confidence)
    ci_lo = cells.value(g, n - lo + 1) if 1 <= lo <= n else -math.inf
    ci_hi = cells.value(g, n - hi + 1) if 1 <= hi <= n else math.inf
    return _Selection(
        threshold, count, a_below, a_above, t_below, t_above, (lo, hi), (ci_lo, ci_hi)
    )


# -- public API ----------------------------------------------------------------------------------


def _calibrate_iv(
    source: Source, primary_threshold, target, by, side, inclusive, confidence, per_segment
) -> list[str]:
    if isinstance(primary_threshold, bool) or not isinstance(primary_threshold, int | float):
        raise ValueError(
            "The 'primary_threshold' parameter of calibrate_threshold must be a finite float. "
            f"Got {primary_threshold!r} instead."
        )
    if not math.isfinite(primary_threshold):
        raise ValueError(
            "The 'primary_threshold' parameter of calibrate_threshold must be a finite float. "
            f"Got {primary_threshold!r} instead."
        )
    ok_target = (
        target == "match"
        or isinstance(target, Capacity)
        or (
            isinstance(target, int | float)
            and not isinstance(target, bool)
            and 0.0 <= float(target) <= 1.0
        )
    )
    if not ok_target:
        raise ValueError(
            "The 'target' parameter of calibrate_threshold must be 'match', a rate in [0, 1] or a "
            f"Capacity(per_day=...). Got {target!r} instead."
        )
    if side not in _SIDES:
        raise ValueError(
            "The 'side' parameter of calibrate_threshold must be a str among "
            f"{{'nearest', 'at_most', 'at_least'}}. Got {side!r} instead."
        )
    if not isinstance(inclusive, bool):
        raise ValueError(
            "The 'inclusive' parameter of calibrate_threshold must be a bool. "
            f"Got {inclusive!r} instead."
        )
    if not (isinstance(confidence, float) and 0.0 < confidence < 1.0):
        raise ValueError(
            "The 'confidence' parameter of calibrate_threshold must be a float in (0, 1). "
            f"Got {confidence!r} instead."
        )
    if not isinstance(per_segment, bool):
        raise ValueError(
            "The 'per_segment' parameter of calibrate_threshold must be a bool. "
            f"Got {per_segment!r} instead."
        )
    if by is None:
        by_list: list[str] = []
    elif isinstance(by, str):
        by_list = [by]
    elif isinstance(by, Sequence) and all(isinstance(b, str) for b in by) and len(by) > 0:
        by_list = list(by)
    else:
        raise ValueError(
            "The 'by' parameter of calibrate_threshold must be None, a column name or a non-empty "
            f"list of column names. Got {by!r} instead."
        )
    if per_segment and not by_list:
        raise ValueError(
            "The 'per_segment' parameter of calibrate_threshold needs 'by': pass by=[...] to get "
            "one threshold per segment."
        )
    columns = list(source.collect_schema())
    for col in [S.TS, S.PRIMARY_SCORE, S.CANDIDATE_SCORE, *by_list]:
        if col not in columns:
            import difflib

            close = difflib.get_close_matches(col, columns, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"Input pairs has no column {col!r}; columns are {columns}.{hint}")
    return by_list


def calibrate_threshold(
    pairs: Any,
    primary_threshold: float,
    *,
    target: str | float | Capacity = "match",
    by: str | Sequence[str] | None = None,
    side: Side = "nearest",
    inclusive: bool = True,
    confidence: float = 0.95,
    per_segment: bool = False,
) -> ThresholdCalibration:
    """Find the candidate threshold whose trigger rate matches a target, exactly.

    Parameters
    ----------
    pairs : LazyFrame, DataFrame, path, glob, list of paths or Spark DataFrame
        Pair logs (anything :func:`shadowlab.engine.as_source` accepts). Rows where either score is
        null, NaN or infinite are excluded and counted.
    primary_threshold : float
        v1's production threshold.
    target : {'match'}, float or Capacity, default 'match'
        ``'match'``: v1's trigger rate at ``primary_threshold`` on the same requests; a float: a
        trigger rate in [0, 1]; ``Capacity(per_day=x)``: ``x`` divided by the valid pairs per UTC
        day in the logs.
    by : str or list of str, optional
        Segment columns (e.g. ``'country'``): per-segment v1 rate, v2 rate at the global threshold
        and their ratio.
    side : {'nearest', 'at_most', 'at_least'}, default 'nearest'
        With ties only some rates are achievable: pick the achievable rate nearest the target (a
        tie in distance goes to the lower rate), the largest not above it, or the smallest not
        below it.
    inclusive : bool, default True
        Trigger rule for both models: ``score >= threshold`` (True) or ``score > threshold``.
    confidence : float, default 0.95
        Level of the threshold and rate intervals.
    per_segment : bool, default False
        Also compute one threshold per segment of ``by`` (each segment's own target).

    Returns
    -------
    ThresholdCalibration

    Notes
    -----
    The threshold is an exact order statistic of the candidate's valid scores, identical to trying
    every observed score as a threshold (see the tests' brute force). Achievable flag counts are
    ``0`` and the ends of each tie group of the sorted scores; the target count is
    ``target_rate * n_pairs``.

    The threshold interval is the distribution-free order-statistic confidence interval for the
    ``1 - target_rate`` quantile [1]_ [2]_: ascending ranks ``l = F^{-1}(alpha/2)``,
    ``u = F^{-1}(1 - alpha/2) + 1`` of Binomial(n, 1 - target_rate), coverage ``>= confidence``.
    It treats the target rate as fixed (for ``'match'`` it does not propagate the uncertainty of
    v1's own rate). The rate interval is Wilson's score interval [3]_ for ``count / n_pairs``.

    Passes: one histogram pass (zoom passes only when a critical bin is both huge and not tied)
    and one refinement pull of the rows in the critical bins; when some rows failed, one more
    small pass counts which model failed. :attr:`ThresholdCalibration.passes` lists them with the
    rows each moved. A ``Capacity`` target counts days from the histogram's hours (distinct UTC
    calendar days with at least one valid pair).

    References
    ----------
    .. [1] W. J. Conover, *Practical Nonparametric Statistics*, 3rd ed., Wiley, 1999, sec. 3.2
           (confidence interval for a quantile).
    .. [2] G. J. Hahn and W. Q. Meeker, *Statistical Intervals*, Wiley, 1991, ch. 5.
    .. [3] E. B. Wilson, "Probable inference, the law of succession, and statistical inference",
           JASA 22 (1927) 209-212.

    Examples
    --------
    >>> import polars as pl
    >>> from shadowlab.thresholds import calibrate_threshold
    >>> res = calibrate_threshold(pairs, 0.8)  # doctest: +SKIP
    >>> res.threshold, res.candidate_rate  # doctest: +SKIP
    """
    source = as_source(pairs)
    by_list = _calibrate_iv(
        source, primary_threshold, target, by, side, inclusive, confidence, per_segment
    )
    t1 = float(primary_threshold)
    passes: list[dict[str, Any]] = []
    notes: list[str] = []
    seg_keys = by_list if per_segment else []

    # Pass 1: one mergeable histogram keyed by (hour, v1 flag, bin, *by): the threshold's order
    # statistics, v1's counts, the stability tables, segments and agreement all come from it.
    first = _hist_agg(
        _bin0(_clean(S.CANDIDATE_SCORE)) + 1,
        _BINS + 2,
        by_list,
        t1,
        inclusive,
        schema=source.collect_schema(),
    )
    try:
        hist_all = source.aggregate(first)
    except (_native.SegmentCollision, _native.TooSparse):  # the build's group-by instead
        hist_all = source.aggregate(Aggregation(first.build, first.keys, first.reduce))
    passes.append({"kind": "histogram", "rows_moved": hist_all.height})
    if hist_all.height == 0:
        raise ValueError("Input pairs is empty: calibrate_threshold needs at least one pair.")
    hist_all = _decode(hist_all, _BINS + 2)
    n_rows = int(hist_all["n"].sum())
    hist = hist_all.filter(pl.col("_bin").is_not_null())
    failed = hist_all.filter(pl.col("_bin").is_null())
    n = int(hist["n"].sum()) if hist.height else 0
    n_excluded = n_rows - n
    n_primary_failed = n_candidate_failed = 0
    if n_excluded:
        fails = source.aggregate(
            Aggregation(
                lambda lf: lf.select(
                    (~_finite(S.PRIMARY_SCORE)).cast(pl.Int64).sum().alias("p_bad"),
                    (~_finite(S.CANDIDATE_SCORE)).cast(pl.Int64).sum().alias("c_bad"),
                ),
                reduce={"p_bad": "sum", "c_bad": "sum"},
            )
        )
        passes.append({"kind": "failure counts", "rows_moved": fails.height})
        n_primary_failed, n_candidate_failed = (int(v) for v in fails.row(0))
        notes.append(f"{n_excluded} of {n_rows} rows excluded: a score failed (null/NaN/inf).")
    if n == 0:
        raise ValueError(
            f"Input pairs has no row where both scores are finite ({n_rows} rows, "
            f"{n_primary_failed} with a failed primary score, {n_candidate_failed} with a failed "
            "candidate score): nothing to calibrate."
        )
    primary_count = int(hist.filter(pl.col("_f") == 1)["n"].sum())

    segments: pl.DataFrame | None = None
    if seg_keys:
        segments = hist.select(seg_keys).unique().sort(seg_keys, nulls_last=True)
    hkeys = hist.select(*_HKEYS, *by_list).unique().sort([*_HKEYS, *by_list], nulls_last=True)

    # The target rate.
    if target == "match":
        target_label = "match"
        m_total = float(primary_count)
    elif isinstance(target, Capacity):
        days = hkeys.select((pl.col("_hour") // 24).alias("day")).unique()
        per_day_volume = n / days.height
        if target.per_day > per_day_volume:
            raise ValueError(
                f"Capacity(per_day={target.per_day}) exceeds the logged volume of "
                f"{per_day_volume:.1f} valid pairs per day over {days.height} days: every request "
                "would be flagged. Lower the capacity or pass target=1.0 explicitly."
            )
        target_label = f"capacity={target.per_day:g}/day"
        m_total = _snap(target.per_day * days.height)
    else:
        target_label = f"rate={float(target):g}"
        m_total = _snap(float(target) * n)
    target_rate = m_total / n

    # Cells and the per-group targets.
    bins, count, vmin, vmax, bd = _matrices(hist, seg_keys, segments, hkeys, by_list)
    c0 = _clean(S.CANDIDATE_SCORE)
    cells = _Cells([_bin0(c0) + 1 == int(k) for k in bins], count, vmin, vmax, bd, hkeys)
    G = count.shape[1]
    group_targets: dict[int, float] = {G - 1: m_total}
    if seg_keys:
        seg_v1 = _index(hist.filter(pl.col("_f") == 1), segments, seg_keys)
        v1_by_seg = np.bincount(
            seg_v1, weights=hist.filter(pl.col("_f") == 1)["n"].to_numpy(), minlength=G - 1
        )
    for g in range(G - 1):
        n_g = int(count[:, g].sum())
        if target == "match":
            group_targets[g] = float(v1_by_seg[g])
        else:
            group_targets[g] = _snap(target_rate * n_g)
    queries = {}
    for g, m in group_targets.items():
        n_g = int(cells.count[:, g].sum())
        q = 1.0 - (m / n_g if n_g else 0.0)
        queries[g] = _needed_ranks(n_g, m, q, confidence)

    # Pass 2: pull the rows of the critical bins only; finish exactly.
    _refine(source, cells, queries, by_list, seg_keys, segments, t1, inclusive, passes)
    sel = _select(cells, G - 1, m_total, side, inclusive, 1.0 - target_rate, confidence)
    if sel.count == 0 and inclusive:
        notes.append(
            "No observed score flags 0 pairs: threshold is the next float above the maximum."
        )
    if sel.count == n and not inclusive:
        notes.append(
            "Flagging every pair needs a threshold below the minimum: next float below it."
        )
    if sel.count_below != sel.count_above:
        notes.append(
            f"Target {m_total:g} flags is not achievable (ties): achievable {sel.count_below} "
            f"and {sel.count_above}; side={side!r} picked {sel.count}."
        )
    lo_r, hi_r = sel.ci_ranks
    if lo_r < 1 or hi_r > n:
        notes.append(
            "Too few pairs for a two-sided threshold interval at this rate: one side is unbounded."
        )
    seg_sel: dict[int, _Selection | None] = {}
    for g in range(G - 1):
        n_g = int(cells.count[:, g].sum())
        if n_g == 0:
            seg_sel[g] = None
            continue
        m_g = group_targets[g]
        seg_sel[g] = _select(cells, g, m_g, side, inclusive, 1.0 - m_g / n_g, confidence)

    # Breakdown at the chosen threshold from the histogram and the pulled rows (no extra pass).
    t2 = sel.threshold
    v2_h = cells.flags_by_group(t2, inclusive)
    per_h = hkeys.with_columns(
        pl.Series("pairs", cells.bd.sum(axis=0), dtype=pl.Int64),
        pl.Series("v2", v2_h, dtype=pl.Int64),
    ).join(
        hist.group_by(*_HKEYS, *by_list).agg(pl.col("naive").sum()),
        on=[*_HKEYS, *by_list],
        how="left",
        nulls_equal=True,
    )
    f = pl.col("_f") == 1
    breakdown = (
        per_h.group_by("_hour", *by_list)
        .agg(
            pl.col("pairs").sum(),
            pl.col("pairs").filter(f).sum().alias("v1"),
            pl.col("v2").sum(),
            pl.col("v2").filter(f).sum().alias("both"),
            pl.col("naive").sum(),
        )
        .join(
            failed.group_by("_hour", *by_list).agg(pl.col("n").sum().alias("_failed")),
            on=["_hour", *by_list],
            how="full",
            coalesce=True,
            nulls_equal=True,
        )
        .with_columns(pl.col("pairs", "v1", "v2", "both", "naive", "_failed").fill_null(0))
        .with_columns((pl.col("pairs") + pl.col("_failed")).alias("rows"))
        .drop("_failed")
    )

    tot = breakdown.select(pl.col("v1", "v2", "both", "naive").sum()).row(0, named=True)
    assert int(tot["v1"]) == primary_count  # same rule, same rows: the two passes must agree
    candidate_count = int(tot["v2"])
    if candidate_count != sel.count:
        raise AssertionError(
            f"breakdown counted {candidate_count} candidate flags, selection {sel.count}"
        )
    both = int(tot["both"])
    agreement = {
        "both": both,
        "primary_only": primary_count - both,
        "candidate_only": candidate_count - both,
        "neither": n - primary_count - candidate_count + both,
    }
    primary_rate = primary_count / n
    candidate_rate = candidate_count / n
    naive_rate = int(tot["naive"]) / n

    def rates(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
        return (
            frame.group_by(keys)
            .agg(pl.col("rows", "pairs", "v1", "v2", "naive").sum())
            .sort(keys, nulls_last=True)
            .select(
                *keys,
                "pairs",
                (pl.col("v1") / pl.col("pairs")).alias("primary_rate"),
                (pl.col("v2") / pl.col("pairs")).alias("candidate_rate"),
                (pl.col("v2") / pl.col("v1") - 1.0).alias("rel_deviation"),
                (pl.col("rows") - pl.col("pairs")).alias("excluded"),
                (pl.col("naive") / pl.col("pairs")).alias("naive_candidate_rate"),
            )
        )

    hours = breakdown.with_columns(
        (pl.col("_hour") * 3600 * 1_000_000).cast(pl.Datetime("us", "UTC")).alias("_ts")
    ).with_columns(pl.col("_ts").dt.date().alias("day"), pl.col("_ts").dt.hour().alias("hour"))
    by_day = rates(hours, ["day"]).drop("excluded", "naive_candidate_rate")
    by_hour = rates(hours, ["hour"]).drop("excluded", "naive_candidate_rate")
    devs = by_day["rel_deviation"].to_numpy()
    max_dev = float(np.max(np.abs(devs))) if devs.size else math.nan
    if np.isinf(max_dev) or np.isnan(devs).any():
        notes.append("On some day v1 flagged nothing: relative deviation undefined (inf/NaN).")

    seg_table: pl.DataFrame | None = None
    if by_list:
        seg_table = rates(hours, by_list).select(
            *by_list,
            "pairs",
            "excluded",
            "primary_rate",
            "candidate_rate",
            (pl.col("candidate_rate") / pl.col("primary_rate")).alias("ratio"),
            "naive_candidate_rate",
        )
        if per_segment and segments is not None:
            own = segments.with_columns(
                pl.Series(
                    "segment_threshold",
                    [s.threshold if s else math.nan for s in (seg_sel[g] for g in range(G - 1))],
                    dtype=pl.Float64,
                ),
                pl.Series(
                    "segment_rate",
                    [
                        s.count / int(cells.count[:, g].sum()) if s else math.nan
                        for g, s in ((g, seg_sel[g]) for g in range(G - 1))
                    ],
                    dtype=pl.Float64,
                ),
            )
            seg_table = seg_table.join(own, on=by_list, how="left", nulls_equal=True)
        empty = seg_table.filter(pl.col("pairs") == 0)
        if empty.height:
            notes.append(
                f"{empty.height} segment(s) have no valid pair (every score failed): rates are NaN."
            )

    return ThresholdCalibration(
        threshold=sel.threshold,
        primary_threshold=t1,
        target=target_label,
        target_rate=target_rate,
        side=side,
        inclusive=inclusive,
        confidence=confidence,
        n_rows=n_rows,
        n_pairs=n,
        n_excluded=n_excluded,
        n_primary_failed=n_primary_failed,
        n_candidate_failed=n_candidate_failed,
        primary_count=primary_count,
        primary_rate=primary_rate,
        candidate_count=candidate_count,
        candidate_rate=candidate_rate,
        rate_below=sel.count_below / n,
        threshold_below=sel.threshold_below,
        rate_above=sel.count_above / n,
        threshold_above=sel.threshold_above,
        naive_candidate_rate=naive_rate,
        naive_ratio=naive_rate / primary_rate if primary_rate else math.nan,
        rate_ratio=candidate_rate / primary_rate if primary_rate else math.nan,
        threshold_ci=sel.ci,
        threshold_ci_ranks=sel.ci_ranks,
        candidate_rate_ci=wilson_interval(candidate_count, n, confidence),
        agreement=agreement,
        by_day=by_day,
        by_hour=by_hour,
        max_daily_rel_deviation=max_dev,
        segments=seg_table,
        passes=tuple(passes),
        notes=tuple(notes),
    )
