"""Score-distribution comparison: KS, PSI, Wasserstein-1, Jensen–Shannon and quantiles, exact.

Every statistic here runs on the mergeable-summary contract of :mod:`shadowlab.engine`, for numpy
arrays and a week of Parquet logs alike, in two or three passes over the data:

1. **fine-histogram pass** (:class:`~shadowlab.engine.Aggregation`, reduce ``sum/min/max``): for
   each sample, on a fine grid, the count, minimum and maximum of each non-empty bin (and the sum
   of offsets from the bin's left edge when Wasserstein is wanted); nulls/NaN in their own bin,
   so sizes, missing counts and ranges come with it (on a polars source the chunks are folded
   into dense arrays by a small C kernel or by numpy, see ``_hist_fold``; on Spark the same
   summary is a polars group-by per task). Scores usually lie in [0, 1], so that grid is tried
   first: the *dyadic* grid (``_DyadicGrid``, 94 210 bins), whose bins narrow towards 0 and 1 in
   proportion to the distance from them, as fraud-like scores crowd there (at 10 M pairs by
   day it halved compare_scores' exact pull against ``2**16`` equal-width bins). Values outside
   [0, 1] (or a range much narrower than it) cost one more pass on the observed [min, max],
   with ``2**16`` equal-width bins;
2. **zoom pass**, for KS on large data only: when the bins that can hold the largest ECDF gap
   hold more than :data:`ZOOM_ROWS` rows and more than :data:`ZOOM_SHARE` of all rows (or more
   than the pull budget), those bins are histogrammed again, split into up to 1024 cells
   each, and the candidates are re-derived on the cells;
3. **refinement pull** (:meth:`~shadowlab.engine.Source.pull`): only the rows inside the bins
   where the answer can still be (where the two empirical CDFs can reach their largest gap,
   where they can cross for Wasserstein, where a quantile or a PSI cut point lies). A bin whose
   values are all equal (``min == max``) is never pulled. On polars the pull is one streaming
   read whose rows are kept by a lookup of their bin ids (``_Run._scan_pull``: exact, at the
   same cost for any number of bins); on Spark it is a predicate of value ranges.

The finish is local and exact: the KS statistic is bit-identical to :func:`scipy.stats.ks_2samp`,
the p-value is computed by the same scipy routines from the same ``(D, n1, n2)``, quantiles use
numpy's default (``'linear'``) interpolation, PSI counts are exact. When the KS/Wasserstein
refinement would pull more than ``max_pull_rows`` rows, the statistic falls back to the binned
value with a proven bound on its error (``statistic_error_bound``), reported next to it. Each
result states ``passes`` and ``rows_pulled``.

On logs opened with :func:`shadowlab.logs.scan_pairs` (or given as a path) the fine histogram
is kept for the process, keyed by the columns, groups and grid and by every file's path, size
and modification time (:func:`shadowlab.engine.aggregate_memo`): ``ks_2samp`` then ``psi`` of
the same two columns read the week's histogram once, and the second call's ``passes`` counts
only its pull. The values a pull fetched are kept the same way, and a pull fetches along the
bins that ``psi`` (10 quantile bins, either direction) and :data:`DEFAULT_QUANTILES` of the
same samples would read (``_Run._ahead``; not counted in ``rows_pulled``): after ``ks_2samp``,
``psi`` and ``quantile_table`` of the same columns usually read nothing. A changed file is a
different key.

References
----------
.. [1] Kolmogorov, A. N. (1933). Sulla determinazione empirica di una legge di distribuzione.
       Giornale dell'Istituto Italiano degli Attuari, 4, 83-91.
.. [2] Smirnov, N. (1948). Table for estimating the goodness of fit of empirical distributions.
       Annals of Mathematical Statistics, 19(2), 279-281.
.. [3] SciPy 1.17, ``scipy.stats.ks_2samp`` (``scipy/stats/_stats_py.py``).
.. [4] Siddiqi, N. (2006). Credit Risk Scorecards: Developing and Implementing Intelligent Credit
       Scoring. Wiley. (Population Stability Index.)
.. [5] Yurdakul, B. (2018). Statistical Properties of Population Stability Index. PhD thesis,
       Western Michigan University.
.. [6] Lin, J. (1991). Divergence measures based on the Shannon entropy. IEEE Transactions on
       Information Theory, 37(1), 145-151.
.. [6] Evidently 0.7.23, ``evidently/legacy/calculations/stattests/psi.py`` and ``utils.py``.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from shadowlab import _native
from shadowlab import schema as S
from shadowlab.engine import (
    Aggregation,
    PolarsSource,
    Source,
    aggregate_memo,
    as_source,
    memoised,
    merge_partials,
    recall,
    remember,
)

__all__ = [
    "DEFAULT_QUANTILES",
    "DegenerateInputWarning",
    "DistributionComparison",
    "JensenShannonResult",
    "KSExactFallbackWarning",
    "KSResult",
    "PSIResult",
    "QuantileTable",
    "ScoreSketch",
    "TwoSampleComparison",
    "WassersteinResult",
    "compare_distributions",
    "compare_scores",
    "jensen_shannon",
    "ks_2samp",
    "psi",
    "quantile_table",
    "wasserstein_distance",
]

FINE_BINS: int = 1 << 16
"""Bins of the equal-width fine grid (scores outside [0, 1]; [0, 1] uses ``_DyadicGrid``)."""

DEFAULT_MAX_PULL_ROWS: int = 5_000_000
"""Default memory budget of the refinement pull, in rows (about 80 MB of float64 + bin ids)."""

DEFAULT_QUANTILES: tuple[float, ...] = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999)

_TOL = 1e-12  # slack when comparing float ECDF bounds, so a tie never drops a candidate bin


class KSExactFallbackWarning(RuntimeWarning):
    """The exact KS p-value could not be computed; scipy's asymptotic one is used (as scipy does)."""


class DegenerateInputWarning(RuntimeWarning):
    """A statistic is undefined for the data (e.g. a constant sample); the result is NaN."""


# --------------------------------------------------------------------------------------------
# parameter and input validation
# --------------------------------------------------------------------------------------------


def _param_error(name: str, func: str, expected: str, got: Any) -> ValueError:
    return ValueError(f"The '{name}' parameter of {func} must be {expected}. Got {got!r} instead.")


def _check_choice(name: str, func: str, value: Any, choices: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in choices:
        expected = "a str among {" + ", ".join(repr(c) for c in choices) + "}"
        raise _param_error(name, func, expected, value)


def _check_int(name: str, func: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise _param_error(name, func, f"an int >= {low}", value)


@dataclass(frozen=True, slots=True)
class _Sample:
    """One sample: a column of a source, optionally restricted to one group of its group keys."""

    src: int
    column: str
    group: tuple[Any, ...] = ()
    label: str = field(default="", compare=False)


@dataclass(slots=True)
class _Input:
    source: Source
    columns: list[str]
    groups: list[tuple[str, pl.Expr]] = field(default_factory=list)  # name -> expr
    raw_group_columns: list[str] = field(default_factory=list)
    pullable: bool = True
    shared: bool = False  # plain columns of the caller's ``data``: other columns may join it


def _as_sample_input(
    value: Any, name: str, func: str, data: Any
) -> tuple[_Input, str] | ScoreSketch:
    """Normalise one of the two inputs to (input, column) or a stored sketch."""
    if isinstance(value, ScoreSketch):
        return value
    if isinstance(value, str | pl.Expr):
        if data is None:
            raise ValueError(
                f"Input {name} of {func} is a column ({value!r}) but no 'data' was given; pass "
                "data=<LazyFrame, DataFrame, path or Source> holding that column."
            )
        expr = pl.col(value) if isinstance(value, str) else value
        if isinstance(data, pl.DataFrame | pl.LazyFrame):
            lf = data.lazy()
            names = lf.collect_schema().names()
            out = expr.meta.output_name(raise_if_undetermined=False) or f"__{name}"
            if isinstance(value, str) or (expr.meta.is_column() and out in names):
                _check_column(out, names, name, func)
                return _Input(PolarsSource(lf), [out], shared=True), out
            col = f"__{name}"
            return _Input(PolarsSource(lf.select(expr.alias(col))), [col]), col
        source = as_source(data)
        if not (isinstance(value, str) or expr.meta.is_column()):
            raise ValueError(
                f"Input {name} of {func}: on a {source.engine} source only plain columns are "
                f"supported; got the expression {value!r}. Pass a column name."
            )
        col = value if isinstance(value, str) else expr.meta.output_name()
        _check_column(col, list(source.collect_schema()), name, func)
        return _Input(source, [col], shared=True), col
    if isinstance(value, pl.Series):
        series = value
    else:
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"Input {name} of {func} must be numeric (array, polars Series or column); "
                f"got {type(value).__name__}."
            ) from exc
        if arr.ndim != 1:
            raise ValueError(
                f"Input {name} of {func} must be one-dimensional; got shape {arr.shape}."
            )
        series = pl.Series(name, arr)
    if not series.dtype.is_numeric():
        raise ValueError(f"Input {name} of {func} must be numeric; got dtype {series.dtype}.")
    frame = pl.DataFrame({"x": series.cast(pl.Float64)})
    return _Input(PolarsSource(frame.lazy()), ["x"]), "x"


def _check_column(col: str, names: Sequence[str], name: str, func: str) -> None:
    if col not in names:
        import difflib

        near = difflib.get_close_matches(col, names, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ValueError(
            f"Input {name} of {func}: column {col!r} not found; columns are {list(names)}.{hint}"
        )


def _valid(x: pl.Expr) -> pl.Expr:
    return x.is_not_null() & x.is_not_nan()


# --------------------------------------------------------------------------------------------
# grid and the two aggregation passes
# --------------------------------------------------------------------------------------------


def _runs(bins: set[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(sorted bins, run starts, run ends)``: the runs of adjacent bins in ``bins``."""
    ks = np.asarray(sorted(bins), dtype=np.int64)
    breaks = np.flatnonzero(np.diff(ks) > 1)
    return ks, np.r_[ks[0], ks[breaks + 1]], np.r_[ks[breaks], ks[-1]]


BIN_BLOCK: int = 1 << 16
"""Values binned at a time by the numpy ``bin_np`` of the grids: a block's temporaries stay in
the core's cache (here 5-6 ns a value in blocks of 64 Ki against ~16 ns over a 1 M-row chunk)."""


def _bin_ids(grid: _Grid | _DyadicGrid, x: np.ndarray, shift: int) -> np.ndarray:
    """The grid's bin ids of ``x`` plus ``shift``: by the compiled kernel when it is built (the
    same ids), else by the grid's numpy ``_bin_block``, :data:`BIN_BLOCK` values at a time."""
    if _native.available():
        return _native.bin_ids(grid.native, x, shift)
    if len(x) <= BIN_BLOCK:
        return grid._bin_block(x, shift)
    out = np.empty(len(x), np.int64)
    for i in range(0, len(x), BIN_BLOCK):
        out[i : i + BIN_BLOCK] = grid._bin_block(x[i : i + BIN_BLOCK], shift)
    return out


def _mark_outside(
    k: np.ndarray, x: np.ndarray, lo: float, hi: float, bins: int, shift: int
) -> np.ndarray:
    """``k`` with the edge ids set where ``x`` is below ``lo`` (-1), above ``hi`` (``bins``)
    or NaN (:data:`MISSING_BIN`), all plus ``shift``; ``k`` is changed in place."""
    # min/max are NaN when a NaN is present: then (or when out of range) set the edge ids
    if x.size and not (x.min() >= lo and x.max() <= hi):
        k[x < lo] = -1 + shift
        k[x > hi] = bins + shift
        k[np.isnan(x)] = MISSING_BIN + shift
    return k


@dataclass(frozen=True, slots=True)
class _Grid:
    lo: float
    hi: float
    bins: int = FINE_BINS

    @property
    def width(self) -> float:
        return (self.hi - self.lo) / self.bins if self.hi > self.lo else 1.0

    def bin(self, x: pl.Expr) -> pl.Expr:
        """Bin id: 0..bins-1 inside [lo, hi], -1 below, ``bins`` above. Monotone in x."""
        scale = self.bins / (self.hi - self.lo) if self.hi > self.lo else 0.0
        inner = ((x - self.lo) * scale).floor().clip(0, self.bins - 1).cast(pl.Int32)
        return (
            pl.when(x < self.lo)
            .then(pl.lit(-1, pl.Int32))
            .when(x > self.hi)
            .then(pl.lit(self.bins, pl.Int32))
            .otherwise(inner)
        )

    def covering(self, x: pl.Expr, bins: set[int], max_ranges: int = 16) -> pl.Expr:
        """A cheap predicate true for every value in ``bins`` (possibly a superset).

        A few runs of adjacent bins become value intervals widened by 1/1000 of a bin (the floor
        in :meth:`bin` may round across an edge); more runs become one hash lookup of the bin id
        (without the when/then of :meth:`bin`: a value at ``hi`` may also match bin ``bins``).
        The caller keeps only the wanted bins after the pull.
        """
        ks, starts, ends = _runs(bins)
        if len(starts) > max_ranges:
            scale = self.bins / (self.hi - self.lo) if self.hi > self.lo else 0.0
            # non-strict: NaN rows (excluded by the caller's validity test, which polars does
            # not short-circuit) must not fail the cast
            raw = ((x - self.lo) * scale).floor().clip(-1, self.bins).cast(pl.Int32, strict=False)
            wanted = set(ks.tolist())
            if self.bins - 1 in wanted:
                wanted.add(self.bins)
            return raw.is_in(sorted(wanted))
        pad = self.width * 1e-3
        pred = pl.lit(False)
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            lo = -math.inf if a <= 0 else self.lo + a * self.width - pad
            hi = math.inf if b >= self.bins - 1 else self.lo + (b + 1) * self.width + pad
            pred = pred | ((x >= lo) & (x <= hi))
        return pred

    def cell(self, x: pl.Expr, k: pl.Expr, m: int) -> pl.Expr:
        """Zoom cell id ``k * m + j``: sub-bin ``j`` of ``m`` equal parts of bin ``k``."""
        sub = ((x - self.left(k)) * (m / self.width)).floor().clip(0, m - 1).cast(pl.Int64)
        return k.cast(pl.Int64) * m + sub

    def left(self, k: pl.Expr) -> pl.Expr:
        return self.lo + k.clip(0, self.bins).cast(pl.Float64) * self.width

    def bin_np(self, x: np.ndarray, shift: int = 0) -> np.ndarray:
        """:meth:`bin` in numpy, plus ``shift``; NaN (a null) -> :data:`MISSING_BIN`.

        The same IEEE operations in the same order, so the ids are identical to :meth:`bin`'s.
        """
        return _bin_ids(self, x, shift)

    def _bin_block(self, x: np.ndarray, shift: int) -> np.ndarray:
        scale = self.bins / (self.hi - self.lo) if self.hi > self.lo else 0.0
        with np.errstate(invalid="ignore", over="ignore"):
            inner = np.floor((x - self.lo) * scale)
            np.clip(inner, 0, self.bins - 1, out=inner)
            k = inner.astype(np.int64)
        if shift:
            k += shift
        return _mark_outside(k, x, self.lo, self.hi, self.bins, shift)

    def left_np(self, k: np.ndarray) -> np.ndarray:
        return self.lo + np.clip(k, 0, self.bins).astype(np.float64) * self.width

    @property
    def native(self) -> tuple[int, int, int, float, float, int]:
        """The grid as the compiled kernel takes it (see :mod:`shadowlab._native`)."""
        return (1, 0, 0, self.lo, self.hi, self.bins)

    @property
    def spec(self) -> tuple[Any, ...]:
        """``(lo, hi, bins)``: what :func:`_grid_from_spec` rebuilds the grid from."""
        return (self.lo, self.hi, self.bins)

    def to_dict(self) -> dict[str, Any]:
        return {"lo": self.lo, "hi": self.hi, "bins": self.bins}


@dataclass(frozen=True, slots=True)
class _DyadicGrid:
    """The default grid of scores in [0, 1]: bins that narrow towards 0 and 1 like the scores do.

    Each half is cut into binades of the distance to the nearer end, ``u = min(x, 1 - x)``
    (``1 - x`` is exact for ``x`` in [0.5, 1], Sterbenz's lemma [8]_): ``u`` in
    ``[2**e, 2**(e + 1))`` for ``e = -exponents .. -2``, each binade in ``2**mantissa_bits`` equal
    bins, plus one bin for ``u < 2**-exponents``. Near 0.5 a bin is ``2**-(mantissa_bits + 2)``
    wide; at 0.01 it is ~128x narrower, and its width stays a fixed share of ``u`` down to the
    tail (``6e-8`` by default). Fraud-like scores crowd near 0, where an equal-width grid puts
    tens of thousands of rows of a day into one bin; here a bin holds a similar share of the rows
    wherever the density is log-uniform, so far fewer rows need a refinement pull.

    Bin ids: ``0 .. bins - 1`` in [0, 1], -1 below, ``bins`` above, monotone in ``x``. Lower half
    bins are ``[left, right)``, upper half bins ``(left, right]`` (mirrored), and the bin holding
    0.5 is closed on both sides. numpy reads the ids off the IEEE-754 bits of ``u`` (exponent
    and leading mantissa bits, one shift); polars, which cannot reinterpret a float's bits, finds
    the same exponent from ``log2`` corrected by exact comparisons with powers of two, and the
    mantissa bits by exact scaling: the ids are equal (tested at and beside every edge).

    References
    ----------
    .. [8] Sterbenz, P. H. (1974). Floating-Point Computation. Prentice-Hall. (``a - b`` is
           exact when ``b / 2 <= a <= 2 b``.)
    .. [9] IEEE Std 754-2019, Standard for Floating-Point Arithmetic (binary64 layout).
    """

    exponents: int = 24
    mantissa_bits: int = 11

    @property
    def lo(self) -> float:
        return 0.0

    @property
    def hi(self) -> float:
        return 1.0

    @property
    def half(self) -> int:
        """Bins of [0, 0.5] (the last one is shared with the upper half's first value, 0.5)."""
        return (self.exponents - 1) * (1 << self.mantissa_bits) + 1

    @property
    def bins(self) -> int:
        return 2 * self.half

    @property
    def spec(self) -> tuple[Any, ...]:
        """``(0.0, 1.0, bins, 'dyadic', exponents, mantissa_bits)`` (see :func:`_grid_from_spec`)."""
        return (0.0, 1.0, self.bins, "dyadic", self.exponents, self.mantissa_bits)

    @property
    def native(self) -> tuple[int, int, int, float, float, int]:
        """The grid as the compiled kernel takes it (see :mod:`shadowlab._native`)."""
        return (0, self.exponents, self.mantissa_bits, 0.0, 1.0, self.bins)

    # -- the half-key of u = min(x, 1 - x): 0 for the tail, 1 .. half for [2**-E, 0.5] ----------
    def _pow2(self, e: pl.Expr) -> pl.Expr:
        lo = -self.exponents - 2
        # non-strict: a NaN (its row is dropped by the caller's validity test, which polars
        # does not short-circuit) gives a null power instead of failing the cast
        return (
            e.clip(lo, 0)
            .cast(pl.Int32, strict=False)
            .replace_strict(
                list(range(lo, 1)),
                [math.ldexp(1.0, i) for i in range(lo, 1)],
                default=None,
                return_dtype=pl.Float64,
            )
        )

    def _ukey(self, u: pl.Expr) -> pl.Expr:
        E, kk = self.exponents, 1 << self.mantissa_bits
        e0 = u.log(2).floor().clip(-E - 1, -1)
        p0 = self._pow2(e0)
        e = e0 - (u < p0).cast(pl.Float64) + (u >= 2.0 * p0).cast(pl.Float64)
        p = self._pow2(e)
        sub = ((u / p - 1.0) * kk).floor()
        key = (e + E) * kk + sub + 1.0
        return pl.when(u >= math.ldexp(1.0, -E)).then(key).otherwise(0.0)

    def bin(self, x: pl.Expr) -> pl.Expr:
        """Bin id: 0..bins-1 inside [0, 1], -1 below, ``bins`` above. Monotone in x."""
        lower = x < 0.5
        k = self._ukey(pl.when(lower).then(x).otherwise(1.0 - x))
        inner = pl.when(lower).then(k).otherwise(2 * self.half - 1 - k).cast(pl.Int32)
        return (
            pl.when(x < 0.0)
            .then(pl.lit(-1, pl.Int32))
            .when(x > 1.0)
            .then(pl.lit(self.bins, pl.Int32))
            .otherwise(inner)
        )

    def bin_np(self, x: np.ndarray, shift: int = 0) -> np.ndarray:
        """:meth:`bin` in numpy, plus ``shift``; NaN (a null) -> :data:`MISSING_BIN`.

        Branch-free integer steps (``np.where`` cost ~3 ns a value here, these ~0.3 each): the
        bits of ``min(x, 1 - x)`` as integers (ordered as the floats are, both being >= 0 in
        [0, 1]), the half-key, then ``key`` below 0.5 and ``2 * half - 1 - key`` from 0.5 up as
        ``key ^ m + (2 * half) & m`` with ``m`` all ones on the upper half.
        """
        return _bin_ids(self, x, shift)

    def _bin_block(self, x: np.ndarray, shift: int) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            y = 1.0 - x
        k = np.minimum(x.view(np.int64), y.view(np.int64))
        k >>= 52 - self.mantissa_bits
        k -= ((1023 - self.exponents) << self.mantissa_bits) - 1
        np.maximum(k, 0, out=k)
        m = (x >= 0.5).view(np.int8).astype(np.int64)
        np.negative(m, out=m)
        k ^= m
        m &= 2 * self.half
        k += m
        if shift:
            k += shift
        return _mark_outside(k, x, 0.0, 1.0, self.bins, shift)

    # -- edges -------------------------------------------------------------------------------
    def _uleft_np(self, key: np.ndarray) -> np.ndarray:
        kk = 1 << self.mantissa_bits
        j = np.maximum(key - 1, 0)
        v = np.ldexp(1.0 + (j % kk) / kk, (j // kk - self.exponents).astype(np.int32))
        return np.where(key <= 0, 0.0, v)

    def left_np(self, k: np.ndarray) -> np.ndarray:
        k = np.clip(np.asarray(k, np.int64), 0, self.bins)
        h = self.half
        return np.where(k < h, self._uleft_np(k), 1.0 - self._uleft_np(2 * h - k))

    def _uleft(self, key: pl.Expr) -> pl.Expr:
        kk = 1 << self.mantissa_bits
        j = (key - 1).clip(0)
        v = (1.0 + (j % kk).cast(pl.Float64) / kk) * self._pow2(j // kk - self.exponents)
        return pl.when(key <= 0).then(0.0).otherwise(v)

    def left(self, k: pl.Expr) -> pl.Expr:
        k = k.clip(0, self.bins).cast(pl.Int64)
        h = self.half
        return pl.when(k < h).then(self._uleft(k)).otherwise(1.0 - self._uleft(2 * h - k))

    def covering(self, x: pl.Expr, bins: set[int], max_ranges: int = 16) -> pl.Expr:
        """A predicate true for every value in ``bins`` (possibly a superset): runs of adjacent
        bins become closed value intervals between exact edges; beyond ``max_ranges`` runs, the
        runs across the narrowest gaps (in bins) are bridged into one interval."""
        _, starts, ends = _runs(bins)
        if len(starts) > max_ranges:
            # keep the widest gaps between runs and bridge the others: a few more rows, but
            # comparisons only (the polars form of the ids costs ~30 s over 50 M pairs)
            keep = np.sort(np.argsort(starts[1:] - ends[:-1], kind="stable")[-(max_ranges - 1) :])
            starts, ends = np.r_[starts[0], starts[keep + 1]], np.r_[ends[keep], ends[-1]]
        lefts, rights = self.left_np(starts), self.left_np(ends + 1)
        pred = pl.lit(False)
        for a, b, lo, hi in zip(starts.tolist(), ends.tolist(), lefts, rights, strict=True):
            lo = -math.inf if a <= 0 else float(lo)
            hi = math.inf if b >= self.bins - 1 else float(hi)
            pred = pred | ((x >= lo) & (x <= hi))
        return pred

    def cell(self, x: pl.Expr, k: pl.Expr, m: int) -> pl.Expr:
        """Zoom cell id ``k * m + j``: sub-bin ``j`` of ``m`` equal parts of bin ``k``."""
        left = self.left(k)
        width = self.left(k + 1) - left
        sub = ((x - left) * (m / width)).floor().clip(0, m - 1).cast(pl.Int64)
        return k.cast(pl.Int64) * m + sub


def _grid_from_spec(spec: Sequence[Any]) -> _Grid | _DyadicGrid:
    """The grid a ``spec`` names (a sketch's ``grid``; sketches saved before the dyadic grid
    hold the uniform grid's ``(lo, hi, bins)``)."""
    if len(spec) == 3:
        lo, hi, bins = spec
        return _Grid(float(lo), float(hi), int(bins))
    if len(spec) == 6 and spec[3] == "dyadic":
        grid = _DyadicGrid(int(spec[4]), int(spec[5]))
        if grid.bins == int(spec[2]):
            return grid
    raise ValueError(f"Unknown fine-histogram grid {list(spec)!r} (a damaged sketch file?).")


MISSING_BIN = -2
"""Bin id of null/NaN rows in the fine histogram (counted, never pulled)."""


def _hist_pass(inp: _Input, grid: _Grid, with_sum: bool) -> tuple[pl.DataFrame, bool]:
    """Pass over ``inp``: per (group, sample, bin) count, [sum of offsets,] min, max; and
    whether the data was read (False: the same histogram of the same logs was in memory).

    Nulls and NaN land in :data:`MISSING_BIN`, values below/above the grid in bins -1 and
    ``grid.bins``, so one pass also gives each sample's size, missing count and range.
    """
    gnames = [g for g, _ in inp.groups]

    def build(lf: pl.LazyFrame) -> pl.LazyFrame:
        if inp.groups:
            lf = lf.with_columns(e.alias(g) for g, e in inp.groups)
        parts = []
        for c in inp.columns:
            x = pl.col("__x")
            aggs = [pl.len().cast(pl.Int64).alias("n")]
            if with_sum:
                aggs.append((x - grid.left(pl.col("bin"))).sum().alias("s"))
            aggs += [x.min().alias("mn"), x.max().alias("mx")]
            parts.append(
                lf.select(*gnames, pl.col(c).cast(pl.Float64).alias("__x"))
                .with_columns(
                    pl.when(_valid(x))
                    .then(grid.bin(x))
                    .otherwise(pl.lit(MISSING_BIN, pl.Int32))
                    .fill_null(MISSING_BIN)
                    .alias("bin")
                )
                .group_by(*gnames, "bin")
                .agg(aggs)
                .with_columns(pl.lit(c).alias("sample"))
            )
        return pl.concat(parts, how="vertical_relaxed")

    reduce: dict[str, Any] = {"n": "sum", "mn": "min", "mx": "max"}
    if with_sum:
        reduce["s"] = "sum"
    keys = (*gnames, "sample", "bin")
    prepare, fold = _hist_fold(inp.columns, grid, with_sum, inp.groups)
    agg = Aggregation(build, keys, reduce, prepare, fold)
    # the same columns, groups and grid of the same logs give the same histogram: a second
    # statistic (ks_2samp, then psi) reuses it instead of reading the week again
    memo = (
        "drift.fine_histogram",
        tuple(sorted(inp.columns)),
        tuple((g, e.meta.serialize(format="json")) for g, e in inp.groups),
        grid.spec,
        with_sum,
    )
    return aggregate_memo(inp.source, agg, memo)


def _group_parts(
    chunks: Iterable[pl.DataFrame], gnames: Sequence[str], schema: dict[str, Any]
) -> Iterator[tuple[tuple[Any, ...], pl.DataFrame]]:
    """``(group key, rows)`` of every non-empty chunk split by the values of ``gnames``; the key
    columns' types are recorded in ``schema`` (for :func:`_with_keys`) on the first chunk.

    Chunks of a day-partitioned week usually hold one window; that case is checked with a
    min/max per key column instead of a hash partition (~5 ms per 100 k-row chunk).
    """
    for chunk in chunks:
        if chunk.height == 0:
            continue
        if not gnames:
            yield (), chunk
            continue
        if not schema:
            schema.update((g, chunk.schema[g]) for g in gnames)
        cols = [chunk[g] for g in gnames]
        ordered = all(
            c.dtype.is_numeric() or c.dtype.is_temporal() or c.dtype == pl.String for c in cols
        )
        if ordered and all(c.null_count() == 0 and c.min() == c.max() for c in cols):
            yield tuple(c[0] for c in cols), chunk  # (key columns kept: unread, dropping costs)
            continue
        yield from chunk.partition_by(list(gnames), as_dict=True, include_key=False).items()


def _with_keys(
    frame: pl.DataFrame, key: tuple[Any, ...], schema: Mapping[str, Any]
) -> pl.DataFrame:
    """``frame`` with the group key columns (names and types from ``schema``) in front."""
    if not schema:
        return frame
    lits = [pl.lit(v, dtype=t).alias(g) for (g, t), v in zip(schema.items(), key, strict=True)]
    return frame.select(*lits, pl.all())


MAX_DENSE_GROUPS: int = 64
"""Groups (windows x segments) whose fine histograms the numpy fold keeps as dense arrays
(~2 MB per group and column); the summaries of further groups are kept sparse and merged."""


class _BinAcc:
    """Dense per-bin accumulators of one (group, column): count, offset sum, min, max."""

    __slots__ = ("mn", "mx", "n", "s")

    def __init__(self, size: int, with_sum: bool) -> None:
        self.n = np.zeros(size, np.int64)
        self.mn = np.full(size, np.inf)
        self.mx = np.full(size, -np.inf)
        self.s = np.zeros(size) if with_sum else None

    def add(self, grid: _Grid | _DyadicGrid, x: np.ndarray, lefts: np.ndarray) -> None:
        """Add the values ``x`` (NaN: missing) binned on ``grid``."""
        if _native.available():  # one loop: ~5x less CPU than the numpy steps below
            s = None if self.s is None else np.zeros(len(self.n))
            _native.fold(grid.native, x, self.n, self.mn, self.mx, s, lefts)
            if s is not None:  # a chunk's sums, then the total, as np.bincount's
                self.s += s
            return
        k = grid.bin_np(x, -MISSING_BIN)
        counts = np.bincount(k, minlength=len(self.n))
        self.n += counts
        if counts[0]:  # null/NaN rows (slot 0): their (unread) range and sum are set to 0
            x = np.where(k == 0, 0.0, x)
        # (numpy 2's ufunc.at fast path, ~3 ns a value, beats pre-filtering the values that
        # can move an extreme: gathering the running extremes costs more than it saves)
        np.minimum.at(self.mn, k, x)
        np.maximum.at(self.mx, k, x)
        if self.s is not None:
            self.s += np.bincount(k, weights=x - lefts[k], minlength=len(self.n))

    def frame(self, column: str, shift: int) -> pl.DataFrame:
        keep = np.flatnonzero(self.n)
        cols: dict[str, Any] = {
            "bin": pl.Series(keep - shift, dtype=pl.Int32),
            "n": pl.Series(self.n[keep], dtype=pl.Int64),
        }
        # the missing bin's range and sum are never read (NaN here, null in the group-by)
        real = keep != 0
        if self.s is not None:
            cols["s"] = pl.Series(np.where(real, self.s[keep], np.nan))
        cols["mn"] = pl.Series(np.where(real, self.mn[keep], np.nan))
        cols["mx"] = pl.Series(np.where(real, self.mx[keep], np.nan))
        cols["sample"] = pl.Series([column] * len(keep), dtype=pl.String)
        return pl.DataFrame(cols)


def _hist_fold(
    columns: Sequence[str],
    grid: _Grid,
    with_sum: bool,
    groups: Sequence[tuple[str, pl.Expr]] = (),
) -> tuple[
    Callable[[pl.LazyFrame], pl.LazyFrame], Callable[[Iterable[pl.DataFrame]], pl.DataFrame]
]:
    """The fast path of :func:`_hist_pass`: polars reads, a dense fold adds up.

    ``prepare`` selects the group keys and the columns (as Float64, nulls become NaN in numpy);
    ``fold`` splits each chunk by group (streamed chunks of a day-partitioned week usually hold
    one window) and adds each column's values to dense arrays of ``grid.bins + 3`` slots (count,
    minimum, maximum, offset sum; nulls/NaN in :data:`MISSING_BIN`): O(rows), no hashing. The
    compiled kernel (:mod:`shadowlab._native`) bins and adds each value in one loop; without it
    numpy bins with :meth:`_Grid.bin_np` (the IEEE operations of :meth:`_Grid.bin`, so the ids are
    identical) and adds with ``np.bincount`` and ``np.minimum.at`` / ``np.maximum.at``, with the
    same results. The first :data:`MAX_DENSE_GROUPS` groups stay dense; the summaries of further
    groups are kept sparse and merged as the build's are. Counts, minima and maxima equal the
    polars group-by's exactly; offset sums up to rounding. At 50 M pairs (two columns, no
    groups) the numpy fold took 2.8 s of CPU against 7.1 s for the group-by, the kernel ~0.4 s.
    """
    size = grid.bins + 3  # bin ids MISSING_BIN (-2) .. grid.bins, shifted by 2
    shift = -MISSING_BIN
    gnames = [g for g, _ in groups]
    names = [f"__x{i}" for i in range(len(columns))]
    merge = Aggregation(
        lambda lf: lf,
        (*gnames, "sample", "bin"),
        {"n": "sum", "mn": "min", "mx": "max", **({"s": "sum"} if with_sum else {})},
    )

    def prepare(lf: pl.LazyFrame) -> pl.LazyFrame:
        return lf.select(
            *(e.alias(g) for g, e in groups),
            *(pl.col(c).cast(pl.Float64).alias(n) for c, n in zip(columns, names, strict=True)),
        )

    def fold(chunks: Iterable[pl.DataFrame]) -> pl.DataFrame:
        lefts = grid.left_np(np.arange(size) - shift)  # left edge of each slot's bin
        dense: dict[tuple[Any, ...], list[_BinAcc]] = {}
        sparse: list[pl.DataFrame] = []
        gschema: dict[str, pl.DataType] = {}

        def frames(key: tuple[Any, ...], accs: list[_BinAcc]) -> list[pl.DataFrame]:
            out = [acc.frame(c, shift) for acc, c in zip(accs, columns, strict=True)]
            return [_with_keys(f, key, gschema) for f in out]

        for key, part in _group_parts(chunks, gnames, gschema):
            accs = dense.get(key)
            spill = accs is None and len(dense) >= MAX_DENSE_GROUPS
            if accs is None:
                accs = [_BinAcc(size, with_sum) for _ in columns]
                if not spill:
                    dense[key] = accs
            for acc, n in zip(accs, names, strict=True):
                x = part[n].to_numpy()  # nulls -> NaN
                acc.add(grid, x, lefts)
            if spill:
                sparse.extend(frames(key, accs))
                if len(sparse) >= 256:
                    sparse = [merge_partials(sparse, merge)]
        parts_out = [f for key, accs in dense.items() for f in frames(key, accs)]
        if not parts_out:
            return pl.DataFrame()
        whole = pl.concat(parts_out, how="vertical_relaxed")
        return merge_partials([whole, *sparse], merge) if sparse else whole

    return prepare, fold


@dataclass(frozen=True, slots=True)
class _Hist:
    """Sparse fine histogram of one sample: non-empty bins only, sorted."""

    bin: np.ndarray  # int64
    n: np.ndarray  # int64
    s: np.ndarray  # float64, sum of (x - left edge of bin)
    mn: np.ndarray
    mx: np.ndarray
    total: int
    missing: int

    @staticmethod
    def from_frame(frame: pl.DataFrame, missing: int) -> _Hist:
        frame = frame.filter(pl.col("bin") != MISSING_BIN).sort("bin")
        n = frame["n"].to_numpy().astype(np.int64)
        sums = frame["s"] if "s" in frame.columns else pl.Series([math.nan] * frame.height)
        return _Hist(
            frame["bin"].to_numpy().astype(np.int64),
            n,
            sums.to_numpy().astype(np.float64),
            frame["mn"].to_numpy().astype(np.float64),
            frame["mx"].to_numpy().astype(np.float64),
            int(n.sum()),
            int(missing),
        )

    def align(self, bins: np.ndarray) -> tuple[np.ndarray, ...]:
        """Counts, offset sums, min, max on ``bins`` (a superset of this histogram's bins)."""
        pos = np.searchsorted(bins, self.bin)
        n = np.zeros(len(bins), np.int64)
        s = np.zeros(len(bins))
        mn = np.full(len(bins), np.inf)
        mx = np.full(len(bins), -np.inf)
        n[pos], s[pos], mn[pos], mx[pos] = self.n, self.s, self.mn, self.mx
        return n, s, mn, mx

    def const_bins(self) -> set[int]:
        return set(self.bin[self.mn == self.mx].tolist())


# --------------------------------------------------------------------------------------------
# the shared engine: samples -> histograms -> needed bins -> one pull per source -> values
# --------------------------------------------------------------------------------------------


MAX_PULL_GROUPS: int = 32
"""Groups up to which the refinement pull's predicate is written per group (see
``_pull_predicate``)."""


def _pull_predicate(
    grid: Any,
    groups: Sequence[tuple[str, pl.Expr]],
    per_group: Mapping[tuple[Any, ...], Mapping[str, set[int]]],
) -> pl.Expr:
    """Rows of each group whose value lies in a bin wanted there (possibly a superset): a bin
    wanted on one day is not pulled for the other days. The same rows as the paired pass's
    ``collect`` (so a Spark pull moves what a polars one does). Beyond
    :data:`MAX_PULL_GROUPS` groups the predicate would grow too long to test on every row: each
    column's bins of all groups are pulled then (a superset; ``rows_pulled`` counts the wanted
    rows either way)."""
    if len(per_group) > MAX_PULL_GROUPS:
        union: dict[str, set[int]] = {}
        for per_col in per_group.values():
            for c, bins in per_col.items():
                union.setdefault(c, set()).update(bins)
        return _pull_predicate(grid, (), {(): union})
    pred = pl.lit(False)
    for key, per_col in per_group.items():
        cols = pl.lit(False)
        for c, bins in per_col.items():
            if bins:
                cols = cols | (_valid(pl.col(c)) & grid.covering(pl.col(c), bins))
        same = pl.lit(True)
        for (_, e), v in zip(groups, key, strict=True):
            same = same & (e.is_null() if v is None else e == pl.lit(v))
        pred = pred | (same & cols)
    return pred


class _Run:
    """Holds the inputs of one public call and runs its passes."""

    def __init__(self, func: str, max_pull_rows: int | None) -> None:
        self.func = func
        self.inputs: list[_Input] = []
        self._data: list[tuple[Any, int]] = []  # (data given by the caller, its input)
        self.sketches: dict[int, ScoreSketch] = {}
        self.max_pull_rows = DEFAULT_MAX_PULL_ROWS if max_pull_rows is None else max_pull_rows
        self.hists: dict[_Sample, _Hist] = {}
        self.values: dict[tuple[_Sample, int], np.ndarray] = {}
        self.cell_values: dict[tuple[_Sample, int], np.ndarray] = {}
        self.passes = 0
        self.rows_pulled = 0
        self.grid: _Grid | None = None
        self.ranges: dict[_Sample, tuple[int, int, float, float]] = {}

    def add(self, value: Any, name: str, data: Any) -> _Sample:
        got = _as_sample_input(value, name, self.func, data)
        if isinstance(got, ScoreSketch):
            idx = -1 - len(self.sketches)
            self.sketches[idx] = got
            return _Sample(idx, "sketch", (), name)
        inp, col = got
        if inp.shared:
            # two columns of the same data: one input, so every pass reads them together
            # (``data`` is held here, not in the input: summaries are pickled for Spark)
            for seen, i in self._data:
                if seen is data:
                    if col not in self.inputs[i].columns:
                        self.inputs[i].columns.append(col)
                    return _Sample(i, col, (), name)
            self._data.append((data, len(self.inputs)))
        self.inputs.append(inp)
        return _Sample(len(self.inputs) - 1, col, (), name)

    def add_input(self, inp: _Input) -> int:
        self.inputs.append(inp)
        return len(self.inputs) - 1

    # passes 1(-2): fine histograms --------------------------------------------------------
    def measure(self, with_sum: bool = False) -> None:
        """Fine-histogram pass over every input; sizes, missing counts and ranges come with it.

        Scores usually lie in [0, 1], so the first pass uses that grid; if some value falls
        outside it, or all values fill less than 1/16 of it, a second pass uses the observed
        [min, max]. A sketch fixes the grid (its own).
        """
        if self.sketches:
            sk = next(iter(self.sketches.values()))
            if any(s.grid != sk.grid for s in self.sketches.values()):
                raise ValueError(f"{self.func}: the sketches given were built on different grids.")
            grids = [_grid_from_spec(sk.grid)]
        else:
            grids = [_DyadicGrid(), None]
        for grid in grids:
            if grid is None:
                lo, hi = self._observed()
                if lo is None or (lo >= 0.0 and hi <= 1.0 and (hi - lo) >= 1 / 16):
                    break
                grid = _Grid(lo, hi)
            self.grid = grid
            self.hists, self.ranges = {}, {}
            read = False
            for i, inp in enumerate(self.inputs):
                frame, fresh = _hist_pass(inp, grid, with_sum)
                read |= fresh
                gnames = [g for g, _ in inp.groups]
                if frame.height == 0:
                    continue
                for key, part in frame.group_by([*gnames, "sample"], maintain_order=True):
                    group, col = tuple(key[:-1]), key[-1]
                    smp = _Sample(i, col, group)
                    miss = int(part.filter(pl.col("bin") == MISSING_BIN)["n"].sum())
                    h = _Hist.from_frame(part, miss)
                    self.hists[smp] = h
                    lo = float(h.mn.min()) if h.total else None
                    hi = float(h.mx.max()) if h.total else None
                    self.ranges[smp] = (h.total, miss, lo, hi)
            self.passes += int(read)
        for idx, sk in self.sketches.items():
            self.hists[_Sample(idx, "sketch")] = sk._hist()

    def _observed(self) -> tuple[float | None, float | None]:
        los = [r[2] for r in self.ranges.values() if r[0]]
        his = [r[3] for r in self.ranges.values() if r[0]]
        return (min(los), max(his)) if los else (None, None)

    def sample_range(self, s: _Sample) -> tuple[int, int]:
        if s.src < 0:
            sk = self.sketches[s.src]
            return sk.n, sk.n_missing
        n, miss, _, _ = self.ranges.get(s, (0, 0, None, None))
        return n, miss

    def require_nonempty(self, s: _Sample, name: str) -> None:
        n, miss = self.sample_range(s)
        if n == 0:
            extra = f" ({miss} null/NaN values were excluded)" if miss else ""
            raise ValueError(
                f"Input {name} of {self.func} is empty after excluding nulls and NaN{extra}; "
                "pass at least one finite score."
            )

    def hist(self, s: _Sample) -> _Hist:
        key = _Sample(s.src, s.column, s.group)
        if key in self.hists:
            return self.hists[key]
        n, miss = self.sample_range(s)
        z = np.zeros(0, np.int64)
        return _Hist(z, z, z.astype(float), z.astype(float), z.astype(float), n, miss)

    # pass 3 ------------------------------------------------------------------------------
    def pull(
        self,
        needs: Mapping[_Sample, set[int]],
        cells: Mapping[_Sample, set[int]] | None = None,
        zoom: int = 0,
        fetch: Callable[
            [int, Mapping[tuple[Any, ...], Mapping[str, set[int]]]], pl.DataFrame | None
        ]
        | None = None,
    ) -> None:
        """Fetch the values of every (sample, bin) in ``needs`` not yet known, one pull per source.

        ``cells`` asks for zoom cells (see :func:`_zoom_pass`, ``zoom`` sub-bins per bin) in the
        same pull; their values go to ``cell_values``. ``fetch(src, bins per group and column)`` may
        return a source's rows itself (a superset of the wanted rows, with the input's raw group
        columns and those columns), read in a pass that serves something else too; ``None``
        means pull them.
        """
        assert self.grid is not None
        by_src: dict[int, dict[_Sample, set[int]]] = {}
        for s, bins in needs.items():
            key = _Sample(s.src, s.column, s.group)
            if s.src < 0:
                continue
            h = self.hist(key)
            const = h.const_bins()
            todo = {b for b in bins if (key, b) not in self.values}
            for b in todo & const:
                self.values[(key, b)] = np.full(
                    int(h.n[np.searchsorted(h.bin, b)]), h.mn[np.searchsorted(h.bin, b)]
                )
            todo -= const
            todo &= set(h.bin.tolist())
            if todo:  # fetched by an earlier pull of the same logs?
                kept = recall(self.inputs[s.src].source, self._values_key(s.src))
                for b in list(todo):
                    v = kept.get((key.column, key.group, b))
                    if v is not None:
                        self.values[(key, b)] = v
                        todo.discard(b)
            if todo:
                by_src.setdefault(s.src, {}).setdefault(key, set()).update(todo)
        cell_src: dict[int, dict[_Sample, set[int]]] = {}
        for s, cs in (cells or {}).items():
            if cs and s.src >= 0:
                key = _Sample(s.src, s.column, s.group)
                cell_src.setdefault(s.src, {}).setdefault(key, set()).update(cs)
        pulled = False
        for src in sorted(set(by_src) | set(cell_src)):
            wanted = by_src.get(src, {})
            cwanted = cell_src.get(src, {})
            inp = self.inputs[src]
            gnames = [g for g, _ in inp.groups]
            per_group: dict[tuple[Any, ...], dict[str, set[int]]] = {}
            for s, bins in wanted.items():
                per_group.setdefault(s.group, {}).setdefault(s.column, set()).update(bins)
            for s, cs in cwanted.items():
                per_group.setdefault(s.group, {}).setdefault(s.column, set()).update(
                    c // zoom for c in cs
                )
            per_col: dict[str, set[int]] = {}
            for cols_bins in per_group.values():
                for c, bins in cols_bins.items():
                    per_col.setdefault(c, set()).update(bins)
            rows = fetch(src, per_group) if fetch is not None else None
            fetched = rows is not None
            ahead: dict[_Sample, set[int]] = {}
            if rows is None and self._scan_pullable(inp):
                ahead = self._ahead(src, wanted)
                scan_group = {g: {c: set(b) for c, b in pc.items()} for g, pc in per_group.items()}
                for s, bins in ahead.items():
                    scan_group.setdefault(s.group, {}).setdefault(s.column, set()).update(bins)
                    per_col.setdefault(s.column, set()).update(bins)
                rows = self._scan_pull(inp, scan_group, list(per_col))
                pulled = True
            if rows is None:
                pred = _pull_predicate(self.grid, inp.groups, per_group)
                cols = list(dict.fromkeys([*inp.raw_group_columns, *per_col]))
                rows = inp.source.pull(pred, cols)
                pulled = True
            if inp.groups:
                rows = rows.with_columns(e.alias(g) for g, e in inp.groups)
                # row positions of each group, computed once for all columns
                members = {
                    tuple(k): part["__row"].to_numpy()
                    for k, part in rows.select(gnames)
                    .with_row_index("__row")
                    .partition_by(gnames, as_dict=True, include_key=False)
                    .items()
                }
            else:
                members = {(): None}
            shift = -MISSING_BIN
            new: dict[tuple[str, tuple[Any, ...], int], np.ndarray] = {}
            # nulls -> NaN (MISSING_BIN, never wanted); each column binned once
            xs_of = {c: rows[c].cast(pl.Float64).to_numpy() for c in per_col}
            ids_of = {c: self.grid.bin_np(xs, shift) for c, xs in xs_of.items()}
            if fetched:  # exactly the rows with a wanted bin in their group
                self.rows_pulled += rows.height
            else:  # the predicate may bridge gaps between runs: count the rows it had to move
                self.rows_pulled += self._wanted_rows(rows.height, ids_of, members, per_group)
            for c in per_col:
                xs = xs_of[c]
                keep = self._want(per_col[c])[ids_of[c]]  # the rows this column needs
                for gkey, at in members.items():
                    sel = keep if at is None else at[keep[at]]
                    # one float sort per group (a two-key (group, x) sort was ~7x slower);
                    # bin ids are monotone in x: sorted by x is sorted by bin too
                    x = pl.Series(xs[sel]).sort().to_numpy()
                    x.flags.writeable = False  # its slices are kept in the memo: never changed
                    b = self.grid.bin_np(x)
                    s = _Sample(src, c, gkey)
                    if s in cwanted:
                        cells = self.grid.cell(pl.col("x"), pl.col("bin"), zoom).alias("cell")
                        cp = (
                            pl.DataFrame({"x": x, "bin": b})
                            .with_columns(cells)
                            .filter(pl.col("cell").is_in(sorted(cwanted[s])))
                            .sort("cell", "x")
                        )
                        cb, cx = cp["cell"].to_numpy(), cp["x"].to_numpy()
                        ks = np.fromiter(cwanted[s], np.int64, len(cwanted[s]))
                        los, his = np.searchsorted(cb, ks, "left"), np.searchsorted(cb, ks, "right")
                        for k, lo, hi in zip(ks.tolist(), los.tolist(), his.tolist(), strict=True):
                            self.cell_values[(s, k)] = cx[lo:hi]
                    want_s = wanted.get(s, set()) | ahead.get(s, set())
                    if not want_s:
                        continue
                    ks = np.fromiter(want_s, np.int64, len(want_s))
                    los, his = np.searchsorted(b, ks, "left"), np.searchsorted(b, ks, "right")
                    for k, lo, hi in zip(ks.tolist(), los.tolist(), his.tolist(), strict=True):
                        self.values[(s, k)] = x[lo:hi]
                        new[(s.column, s.group, k)] = x[lo:hi]
            remember(inp.source, self._values_key(src), new)
        self.passes += int(pulled)

    def _scan_pullable(self, inp: _Input) -> bool:
        """Whether :meth:`_scan_pull` reads ``inp`` (polars sources; others take a predicate)."""
        return isinstance(inp.source, PolarsSource)

    def _values_key(self, src: int) -> tuple[Any, ...]:
        """Memo key of the values pulled from input ``src`` (with :func:`recall`): its group
        expressions and the grid; entries are keyed by (column, group, bin)."""
        assert self.grid is not None
        groups = tuple((g, e.meta.serialize(format="json")) for g, e in self.inputs[src].groups)
        return ("drift.values", groups, self.grid.spec)

    def _ahead(self, src: int, wanted: Mapping[_Sample, set[int]]) -> dict[_Sample, set[int]]:
        """Bins to fetch along with ``wanted`` from a memoised source: those the usual next
        statistics of the same columns read, i.e. what ``psi`` (10 quantile bins) of each pair of
        its samples and :data:`DEFAULT_QUANTILES` of each sample would pull (~50 k rows at 50 M
        pairs: one read saved when ``psi`` or ``quantile_table`` follows ``ks_2samp``).
        Their rows are kept for later calls, not counted in ``rows_pulled``."""
        if not wanted or not memoised(self.inputs[src].source):
            return {}
        by_group: dict[tuple[Any, ...], list[_Sample]] = {}
        for s in self.hists:
            if s.src == src:
                by_group.setdefault(s.group, []).append(s)
        ahead: dict[_Sample, set[int]] = {}
        for samples in by_group.values():
            for a in samples:
                if not self.hist(a).total:
                    continue
                ahead.setdefault(a, set()).update(_quantile_needs(self.hist(a), DEFAULT_QUANTILES))
                for b in samples:
                    if b != a:
                        for smp, bins in _psi_plan(self, a, b, 10, "quantile")[1].items():
                            ahead.setdefault(smp, set()).update(bins)
        out = {}
        for smp, bins in ahead.items():
            h = self.hist(smp)
            bins = bins - h.const_bins() - wanted.get(smp, set())
            bins = {b for b in bins if (smp, b) not in self.values}
            if bins:
                out[smp] = bins
        return out

    def _scan_pull(
        self,
        inp: _Input,
        per_group: Mapping[tuple[Any, ...], Mapping[str, set[int]]],
        columns: Sequence[str],
    ) -> pl.DataFrame:
        """The rows of a polars source with a value in a bin wanted in its group, exactly (the
        rows of :func:`_pull_predicate` without its bridged gaps): one streaming read whose
        chunks are binned as the histogram fold bins them and kept by a lookup of the bin ids.

        A predicate of value ranges costs polars ~4 comparisons a row per range and column (at
        50 M pairs: 1.3 s with 16 ranges, 2.2 s with 40, against ~0.9 s for this read), and
        beyond 16 ranges the predicate bridged gaps, pulling rows nobody asked for.
        """
        assert self.grid is not None
        shift = -MISSING_BIN
        cols = list(dict.fromkeys([*inp.raw_group_columns, *columns]))
        keys = [f"__g{i}" for i in range(len(inp.groups))]
        frame = inp.source.frame.select(
            *cols, *(e.alias(k) for (_, e), k in zip(inp.groups, keys, strict=True))
        )
        wants = {
            gkey: [(c, self._want(bins)) for c, bins in per_col.items() if bins]
            for gkey, per_col in per_group.items()
        }
        kept = []
        chunks = frame.collect_batches(engine="streaming", maintain_order=True)
        for gkey, part in _group_parts(chunks, keys, {}):
            keep = None
            for c, want in wants.get(gkey, ()):
                hit = want[self.grid.bin_np(part[c].cast(pl.Float64).to_numpy(), shift)]
                keep = hit if keep is None else keep | hit
            if keep is not None and keep.any():
                kept.append(part.select(cols).filter(pl.Series(keep)))
        if not kept:
            return frame.select(cols).head(0).collect()
        return pl.concat(kept, rechunk=False)

    def _want(self, bins: set[int]) -> np.ndarray:
        """Lookup array over the shifted bin ids (slot ``k - MISSING_BIN``): True for ``bins``."""
        assert self.grid is not None
        want = np.zeros(self.grid.bins + 3, bool)
        want[np.fromiter(bins, np.int64, len(bins)) - MISSING_BIN] = True
        return want

    def _wanted_rows(
        self,
        height: int,
        ids_of: Mapping[str, np.ndarray],
        members: Mapping[tuple[Any, ...], np.ndarray | None],
        per_group: Mapping[tuple[Any, ...], Mapping[str, set[int]]],
    ) -> int:
        """Pulled rows (shifted bin ids ``ids_of`` per column) with a bin wanted in their group
        in some column (what the paired pass's collect keeps), so ``rows_pulled`` is the same
        whichever engine pulled."""
        hit = np.zeros(height, bool)
        for gkey, at in members.items():
            for c, bins in per_group.get(gkey, {}).items():
                want = self._want(bins)
                if at is None:
                    hit |= want[ids_of[c]]
                else:
                    hit[at] |= want[ids_of[c][at]]
        return int(hit.sum())

    def cost(
        self, needs: Mapping[_Sample, set[int]], done: Mapping[_Sample, set[int]] | None = None
    ) -> int:
        """Rows a pull of ``needs`` would move, beyond ``done`` (constant bins and sketches: 0)."""
        total = 0
        for s, bins in needs.items():
            key = _Sample(s.src, s.column, s.group)
            if s.src < 0 or not bins:
                continue
            if done and key in done:
                bins = bins - done[key]
                if not bins:
                    continue
            h = self.hist(key)
            sel = np.isin(h.bin, np.fromiter(bins, np.int64, len(bins))) & (h.mn != h.mx)
            total += int(h.n[sel].sum())
        return total

    def value(self, s: _Sample, k: int) -> np.ndarray | None:
        return self.values.get((_Sample(s.src, s.column, s.group), int(k)))

    def values_of(self, s: _Sample, ks: Iterable[int]) -> list[np.ndarray | None]:
        """:meth:`value` of each bin in ``ks`` (Python ints), one key built for all."""
        key, get = _Sample(s.src, s.column, s.group), self.values.get
        return [get((key, k)) for k in ks]


def _sorted_union(*arrays: np.ndarray) -> np.ndarray:
    """Sorted distinct values of already sorted arrays (``np.unique`` of their concatenation).

    A stable sort of concatenated sorted runs is a merge (timsort), O(n); ``np.unique`` hashes or
    sorts from scratch, which dominated the per-bin KS and Wasserstein finishes (~45 us a call).
    """
    u = np.concatenate(arrays)
    u.sort(kind="stable")
    if len(u) > 1:
        u = u[np.concatenate(([True], u[1:] != u[:-1]))]
    return u


def _merged_counts(
    a1: np.ndarray, a2: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For two sorted arrays: their distinct values ``x`` (:func:`_sorted_union`'s), how many
    values of each are ``<= x`` (``np.searchsorted(a, x, side="right")``) and whether ``x`` is
    in ``a1``. One stable argsort of the two runs is a merge (timsort), O(n); four binary
    searches of every point cost ~5x more (at 50 M pairs, 4.5 M pulled values: ~0.1 s against
    ~0.5 s)."""
    z = np.concatenate((a1, a2))
    if len(z) == 0:
        e = np.zeros(0, np.int64)
        return z, e, e, np.zeros(0, bool)
    order = np.argsort(z, kind="stable")
    merged = z[order]
    step = merged[1:] != merged[:-1]
    first = np.concatenate(([True], step))  # each run of equal values: first and last place
    last = np.concatenate((step, [True]))
    from1 = np.cumsum(order < len(a1))
    r1 = from1[last]
    r2 = np.flatnonzero(last) + 1 - r1
    in1 = np.diff(r1, prepend=0) > 0
    return merged[first], r1, r2, in1


def _merge_needs(*needs: Mapping[_Sample, set[int]]) -> dict[_Sample, set[int]]:
    out: dict[_Sample, set[int]] = {}
    for nd in needs:
        for s, b in nd.items():
            out.setdefault(_Sample(s.src, s.column, s.group), set()).update(b)
    return out


# --------------------------------------------------------------------------------------------
# Kolmogorov–Smirnov
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KSResult:
    """Two-sample Kolmogorov–Smirnov test result (fields as in scipy's ``KstestResult``).

    Attributes
    ----------
    statistic : float
        D: the largest gap between the two empirical CDFs (for ``alternative='less'``/``'greater'``
        the one-sided gap). Higher = further apart.
    pvalue : float
        p-value of ``alternative`` computed by scipy's routines from ``(statistic, n1, n2)``.
    statistic_location : float
        Value at which the gap is attained (scipy's choice among ties).
    statistic_sign : int
        +1 if the reference's ECDF is above the current's there, -1 otherwise.
    n_reference, n_current : int
        Sizes after excluding missing values; ``missing_reference``/``missing_current`` count them.
    alternative, method : str
        The hypotheses tested, and the method actually used (``'exact'`` or ``'asymp'``).
    exact_statistic : bool
        False when the refinement would exceed the memory budget and D is the binned value.
    statistic_error_bound : float
        True D lies in ``[statistic, statistic + statistic_error_bound]`` (0.0 when exact).
    passes, rows_pulled : int
        Passes over the data and rows moved by the refinement pull.
    """

    statistic: float
    pvalue: float
    statistic_location: float
    statistic_sign: int
    n_reference: int
    n_current: int
    missing_reference: int
    missing_current: int
    alternative: str
    method: str
    exact_statistic: bool = True
    statistic_error_bound: float = 0.0
    passes: int = 0
    rows_pulled: int = 0

    def __repr__(self) -> str:
        bound = "" if self.exact_statistic else f" (+<= {self.statistic_error_bound:.3g}, binned)"
        return (
            f"KSResult(statistic={self.statistic:.6g}{bound}, pvalue={self.pvalue:.6g}, "
            f"statistic_location={self.statistic_location:.6g}, "
            f"statistic_sign={self.statistic_sign}, n={self.n_reference}/{self.n_current}, "
            f"method={self.method!r})"
        )

    def to_dict(self) -> dict[str, Any]:
        return _json_safe({f: getattr(self, f) for f in self.__slots__})


def _ks_pvalue(
    d: float, n1: int, n2: int, alternative: str, method: str
) -> tuple[float, float, str]:
    """scipy 1.17's p-value step of ``ks_2samp``, from the statistic and the sample sizes.

    Mirrors ``scipy/stats/_stats_py.py::ks_2samp`` after the statistic is found, calling the same
    private routine ``_attempt_exact_2kssamp`` and ``scipy.stats.kstwo``; returns ``(d, p, method)``
    where ``d`` is rounded to ``h / lcm(n1, n2)`` by the exact method exactly as scipy does.
    """
    g = math.gcd(n1, n2)
    n1g, n2g = n1 // g, n2 // g
    mode = method
    if mode == "auto":
        mode = "exact" if max(n1, n2) <= 10000 else "asymp"
    elif mode == "exact" and n1g >= np.iinfo(np.int32).max / n2g:
        mode = "asymp"
        warnings.warn(
            f"Exact ks_2samp calculation not possible with samples sizes {n1} and {n2}. "
            "Switching to 'asymp'.",
            KSExactFallbackWarning,
            stacklevel=3,
        )
    prob = -np.inf
    if mode == "exact":
        from scipy.stats._stats_py import _attempt_exact_2kssamp

        success, d, prob = _attempt_exact_2kssamp(n1, n2, g, d, alternative)
        if not success:
            mode = "asymp"
            warnings.warn(
                "ks_2samp: Exact calculation unsuccessful. Switching to method=asymp.",
                KSExactFallbackWarning,
                stacklevel=3,
            )
    if mode == "asymp":
        m, n = sorted([float(n1), float(n2)], reverse=True)
        en = m * n / (m + n)
        if alternative == "two-sided":
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                # kstwo with n = 0 (n1 = n2 = 1) divides by zero; NaN is reported below
                warnings.simplefilter("ignore", RuntimeWarning)
                prob = _kstwo_sf(d, np.round(en))
        else:
            z = np.sqrt(en) * d
            expt = -2 * z**2 - 2 * z * (m + 2 * n) / np.sqrt(m * n * (m + n)) / 3.0
            prob = np.exp(expt)
    prob = float(np.clip(prob, 0, 1))
    if math.isnan(prob):
        warnings.warn(
            f"The KS p-value is undefined for sizes {n1} and {n2} with method={mode!r} "
            "(as in scipy); pvalue is NaN.",
            DegenerateInputWarning,
            stacklevel=3,
        )
    return float(d), prob, mode


def _kstwo_sf(d: float, n: float) -> float:
    """``scipy.stats.kstwo.sf(d, n)``, importing scipy.stats (~0.5-1 s) only when it is needed.

    For ``n > 140``, ``1/n < d < 0.5`` and ``n d < n - 1`` scipy's ``_kolmogn`` (Simard &
    L'Ecuyer's algorithm [7]_) answers the survival function by two shortcuts before any series
    is summed: ``0.0`` when ``n d**2 >= 370``, and the clipped Miller approximation
    ``2 * smirnov(n, d)`` (a ``scipy.special`` ufunc) when ``n d**2 >= 2.2``. The same tests, with
    the same floating-point operations, are made here, so a week of pairs (its statistics far
    beyond any critical value, or just above one) never imports scipy.stats; every other case
    calls ``kstwo.sf``.

    References
    ----------
    .. [7] Simard, R., L'Ecuyer, P. (2011). Computing the two-sided Kolmogorov-Smirnov
           distribution. Journal of Statistical Software, 39(11). (scipy 1.17,
           ``scipy/stats/_ksstats.py::_kolmogn``.)
    """
    t = n * d
    if n > 140 and n == int(n) and 0.0 < d < 0.5 and 1.0 < t < n - 1:
        if t * d >= 370.0:
            return 0.0
        if t * d >= 2.2:
            from scipy import special

            # kstwo.sf passes int(n) to _kolmogn, which clips 2 * smirnov(n, d) to [0, 1]
            return float(np.clip(2 * special.smirnov(int(n), d), 0.0, 1.0))
        if not (n <= 100000 and n * d**1.5 <= 1.4):
            # _kolmogn's last branch: 1 - the Pelz-Good CDF, clipped
            return float(np.clip(1.0 - _pelz_good_cdf(int(n), d), 0.0, 1.0))
    from scipy import stats

    return float(stats.kstwo.sf(d, n))


def _pelz_good_cdf(n: int, d: float) -> float:
    """Pelz & Good's asymptotic series for ``P(D_n <= d)``, as scipy 1.17 evaluates it.

    ``scipy/stats/_ksstats.py::_kolmogn_PelzGood`` with ``cdf=True``, step for step (the same
    operations on the same numpy types, so the value is scipy's to the bit; tested), for the
    case :func:`_kstwo_sf` sends here: ``n > 140``, ``0 < d < 0.5``, ``n d**2 < 2.2``.

    References
    ----------
    .. [1] Pelz, W., Good, I. J. (1976). Approximating the lower tail-areas of the Kolmogorov-
           Smirnov one-sample statistic. Journal of the Royal Statistical Society B, 38(2),
           152-156.
    .. [2] Simard, R., L'Ecuyer, P. (2011). Computing the two-sided Kolmogorov-Smirnov
           distribution. Journal of Statistical Software, 39(11).
    """
    x = np.array(d, dtype=np.float64)  # scipy's kolmogn hands its routines 0-d arrays
    pi2, pi4, pi6 = np.pi**2, np.pi**4, np.pi**6
    z = np.sqrt(n) * x
    z2, z3, z4, z6 = z**2, z**3, z**4, z**6
    qlog = -pi2 / 8 / z2
    if qlog < -708:
        return 0.0
    q = np.exp(qlog)
    k1a, k1b = -z2, pi2 / 4
    k2a = 6 * z6 + 2 * z4
    k2b = (2 * z4 - 5 * z2) * pi2 / 4
    k2c = pi4 * (1 - 2 * z2) / 16
    k3d = pi6 * (5 - 30 * z2) / 64
    k3c = pi4 * (-60 * z2 + 212 * z4) / 16
    k3b = pi2 * (135 * z4 - 96 * z6) / 4
    k3a = -30 * z6 - 90 * z**8
    terms = np.zeros(4)
    maxk = int(np.ceil(16 * z / np.pi))
    for k in range(maxk, 0, -1):  # Horner scheme over the odd m = 2k - 1
        m = 2 * k - 1
        m2, m4, m6 = m**2, m**4, m**6
        qpower = np.power(q, 8 * k)
        coeffs = np.array(
            [
                1.0,
                k1a + k1b * m2,
                k2a + k2b * m2 + k2c * m4,
                k3a + k3b * m2 + k3c * m4 + k3d * m6,
            ]
        )
        terms *= qpower
        terms += coeffs
    terms *= q
    terms *= np.sqrt(2 * np.pi)
    terms /= np.array([z, 6 * z4, 72 * z**7, 6480 * z**10])
    q = np.exp(-pi2 / 2 / z2)
    ks = np.arange(maxk, 0, -1)
    ks2 = ks**2
    sqrt3z = np.sqrt(3) * z
    kspi = np.pi * ks
    qpowers = q**ks2
    k2extra = np.sum(ks2 * qpowers)
    k2extra *= pi2 * np.sqrt(2 * np.pi) / (-36 * z3)
    terms[2] += k2extra
    k3extra = np.sum((sqrt3z + kspi) * (sqrt3z - kspi) * ks2 * qpowers)
    k3extra *= pi2 * np.sqrt(2 * np.pi) / (216 * z6)
    terms[3] += k3extra
    terms /= np.power(n * 1.0, np.arange(len(terms)) / 2.0)
    return float(sum(terms))


@dataclass(frozen=True, slots=True)
class _KSPlan:
    bins: np.ndarray
    c1: np.ndarray
    c2: np.ndarray
    before1: np.ndarray
    before2: np.ndarray
    edge: np.ndarray  # float gap at each bin's last value, as scipy computes it
    upper: np.ndarray  # upper bound of the + gap inside the bin
    lower: np.ndarray  # lower bound of the signed gap inside the bin
    plus: bool
    minus: bool
    cand_plus: np.ndarray
    cand_minus: np.ndarray
    n1: int
    n2: int
    mx: np.ndarray


def _ks_plan(h1: _Hist, h2: _Hist, alternative: str) -> _KSPlan:
    bins = _sorted_union(h1.bin, h2.bin)
    c1, _, _, mx1 = h1.align(bins)
    c2, _, _, mx2 = h2.align(bins)
    n1, n2 = h1.total, h2.total
    t1, t2 = np.cumsum(c1), np.cumsum(c2)
    b1, b2 = t1 - c1, t2 - c2
    edge = t1 / n1 - t2 / n2
    upper = t1 / n1 - b2 / n2
    lower = b1 / n1 - t2 / n2
    lp, lm = edge.max(), -edge.min()  # attained at data points
    up, um = upper.max(), -lower.min()  # bounds
    plus = alternative in ("two-sided", "greater") and not (
        alternative == "two-sided" and lm > up + _TOL
    )
    minus = alternative in ("two-sided", "less") and not (
        alternative == "two-sided" and lp >= um + _TOL
    )
    cand_plus = (upper >= lp - _TOL) if plus else np.zeros(len(bins), bool)
    cand_minus = (lower <= -lm + _TOL) if minus else np.zeros(len(bins), bool)
    return _KSPlan(
        bins,
        c1,
        c2,
        b1,
        b2,
        edge,
        upper,
        lower,
        plus,
        minus,
        cand_plus,
        cand_minus,
        n1,
        n2,
        np.maximum(mx1, mx2),
    )


def _ks_needs(plan: _KSPlan, s1: _Sample, s2: _Sample) -> dict[_Sample, set[int]]:
    cand = set(plan.bins[plan.cand_plus | plan.cand_minus].tolist())
    return {s1: set(cand), s2: set(cand)}


def _ks_finish(
    plan: _KSPlan, run: Any, s1: _Sample, s2: _Sample, alternative: str, exact: bool
) -> tuple[float, float, int, float, bool]:
    """(d, location, sign, error_bound, exact) from the plan and the pulled values."""
    n1, n2 = plan.n1, plan.n2
    if exact:
        # The candidate bins' values are disjoint increasing runs: merge them all at once; each
        # ECDF at a point is the count before its bin plus a searchsorted into the merged runs.
        idx = np.flatnonzero(plan.cand_plus | plan.cand_minus)
        vals1, vals2, firsts = [], [], []
        for j in idx.tolist():
            k = plan.bins[j]
            v1 = run.value(s1, k) if plan.c1[j] else np.zeros(0)
            v2 = run.value(s2, k) if plan.c2[j] else np.zeros(0)
            if v1 is None or v2 is None:
                exact = False
                break
            vals1.append(v1)
            vals2.append(v2)
            # each bin's smallest value starts its run of points
            firsts.append(min(v1[0] if len(v1) else math.inf, v2[0] if len(v2) else math.inf))
    if exact:
        a1 = np.concatenate(vals1) if vals1 else np.zeros(0)
        a2 = np.concatenate(vals2) if vals2 else np.zeros(0)
        len1 = np.fromiter((len(v) for v in vals1), np.int64, len(vals1))
        len2 = np.fromiter((len(v) for v in vals2), np.int64, len(vals2))
        off1, off2 = np.cumsum(len1) - len1, np.cumsum(len2) - len2
        x, r1, r2, a = _merged_counts(a1, a2)
        jj = np.searchsorted(np.asarray(firsts), x, side="right") - 1  # each point's bin
        c1 = plan.before1[idx][jj] - off1[jj] + r1
        c2 = plan.before2[idx][jj] - off2[jj] + r2
        g = c1 / n1 - c2 / n2

        def pick(mask: np.ndarray) -> float:
            # scipy takes argmax over concat(sorted(data1), sorted(data2)): the smallest value of
            # data1 attaining the extreme if any, else the smallest value of data2.
            in1 = mask & a
            return float(x[in1].min()) if in1.any() else float(x[mask].min())

        if plan.plus and len(g):
            gp = np.where(plan.cand_plus[idx][jj], g, -np.inf)
            max_s = float(gp.max())
            loc_max = pick(gp == max_s)
        else:
            max_s, loc_max = -np.inf, math.nan
        if plan.minus and len(g):
            gm = np.where(plan.cand_minus[idx][jj], g, np.inf)
            min_raw = float(gm.min())
            min_s = float(np.clip(-min_raw, 0, 1))
            loc_min = pick(gm == min_raw)
        else:
            min_s, loc_min = -np.inf, math.nan
        if alternative == "less" or (alternative == "two-sided" and min_s > max_s):
            return min_s, loc_min, -1, 0.0, True
        return max_s, loc_max, 1, 0.0, True
    # binned: D attained at a bin's last value; the true D is at most the bin bounds.
    jp = int(np.argmax(plan.edge))
    jm = int(np.argmin(plan.edge))
    max_s, min_s = float(plan.edge[jp]), float(np.clip(-plan.edge[jm], 0, 1))
    up, um = float(plan.upper.max()), float(np.clip(-plan.lower.min(), 0, 1))
    if alternative == "less" or (alternative == "two-sided" and min_s > max_s):
        bound = max(um, up if alternative == "two-sided" else 0.0) - min_s
        return min_s, float(plan.mx[jm]), -1, max(bound, 0.0), False
    bound = max(up, um if alternative == "two-sided" else 0.0) - max_s
    return max_s, float(plan.mx[jp]), 1, max(bound, 0.0), False


def _ks_iv(alternative: str, method: str, func: str = "ks_2samp") -> str:
    if isinstance(alternative, str):
        alternative = {"t": "two-sided", "g": "greater", "l": "less"}.get(
            alternative.lower()[:1], alternative
        )
    _check_choice("alternative", func, alternative, ("two-sided", "less", "greater"))
    _check_choice("method", func, method, ("auto", "exact", "asymp"))
    return alternative


def _two_samples(
    func: str,
    reference: Any,
    current: Any,
    data: Any,
    max_pull_rows: int | None,
    *,
    with_sum: bool = False,
) -> tuple[_Run, _Sample, _Sample]:
    """Register both inputs of a two-sample statistic, run the measuring (fine-histogram) pass
    and require both samples non-empty. Only the reference may be a :class:`ScoreSketch`."""
    run = _Run(func, max_pull_rows)
    s1 = run.add(reference, "reference", data)
    s2 = run.add(current, "current", data)
    if s2.src < 0:
        raise ValueError(f"Input current of {func} cannot be a ScoreSketch; pass the scores.")
    run.measure(with_sum=with_sum)
    run.require_nonempty(s1, "reference")
    run.require_nonempty(s2, "current")
    return run, s1, s2


def ks_2samp(
    reference: Any,
    current: Any,
    *,
    data: Any = None,
    alternative: str = "two-sided",
    method: str = "auto",
    max_pull_rows: int | None = None,
) -> KSResult:
    """Two-sample Kolmogorov–Smirnov test, identical to :func:`scipy.stats.ks_2samp`, at any size.

    Parameters
    ----------
    reference, current : array_like, polars Series, column name or ``pl.Expr``
        The two samples. A column name or expression is evaluated on ``data``. Nulls and NaN are
        excluded and counted. A :class:`ScoreSketch` may be given as ``reference`` (the statistic is
        then binned, with its error bound).
    data : LazyFrame, DataFrame, path/glob, or :class:`~shadowlab.engine.Source`, optional
        Where column inputs live (a week of logs is scanned, never collected).
    alternative : {'two-sided', 'less', 'greater'}
        As in scipy: 'less' tests whether the reference's CDF is below the current's somewhere
        (the statistic is the largest ``F_cur - F_ref``), 'greater' the reverse.
    method : {'auto', 'exact', 'asymp'}
        p-value method, as in scipy ('auto' is exact when both sizes are <= 10000).
    max_pull_rows : int, optional
        Memory budget of the refinement pull (default 5 000 000 rows). Above it the statistic is
        the binned value and ``statistic_error_bound`` bounds its error.

    Returns
    -------
    KSResult
        ``statistic``, ``pvalue``, ``statistic_location``, ``statistic_sign``, sizes and missing
        counts, ``method`` used, ``exact_statistic``, ``statistic_error_bound``, ``passes``,
        ``rows_pulled``.

    Notes
    -----
    The statistic is [1]_ [2]_ ``D = max_x |F_ref(x) - F_cur(x)|`` over every observed value, with
    scipy's tie convention (both ECDFs are right-continuous, evaluated with
    ``searchsorted(side='right')``). It is found exactly without sorting the data: a fine histogram
    bounds the gap inside every bin, and only the bins that can hold the maximum
    are pulled and sorted. The p-value step reproduces scipy 1.17's [3]_ and calls its routines
    (``scipy.stats._stats_py._attempt_exact_2kssamp``, ``scipy.stats.kstwo``), so for the same
    ``(D, n1, n2)`` it is the same number. When the exact p-value fails, a
    :class:`KSExactFallbackWarning` is raised where scipy raises its ``RuntimeWarning``.

    The p-value assumes independent samples; for the two scores of the same requests (shadow
    pairs) it is not valid — read D as an effect size.

    References
    ----------
    .. [1] Kolmogorov, A. N. (1933). Giornale dell'Istituto Italiano degli Attuari, 4, 83-91.
    .. [2] Smirnov, N. (1948). Annals of Mathematical Statistics, 19(2), 279-281.
    .. [3] SciPy 1.17, ``scipy/stats/_stats_py.py::ks_2samp``.

    Examples
    --------
    >>> import numpy as np
    >>> from shadowlab.drift import ks_2samp
    >>> ks_2samp(np.array([0.1, 0.2, 0.3]), np.array([0.25, 0.35, 0.4, 0.5]))
    KSResult(statistic=0.75, pvalue=0.228571, statistic_location=0.3, statistic_sign=1, n=3/4, method='exact')
    """
    func = "ks_2samp"
    alternative = _ks_iv(alternative, method)
    if max_pull_rows is not None:
        _check_int("max_pull_rows", func, max_pull_rows, 0)
    run, s1, s2 = _two_samples(func, reference, current, data, max_pull_rows)
    return _ks_compute(run, s1, s2, alternative, method)


ZOOM_ROWS: int = 500_000
"""Below this many rows in the KS candidate bins, they are pulled directly (no zoom pass)."""

ZOOM_SHARE: float = 1 / 16
"""A zoom pass is run when the KS candidate bins hold more than ``max(ZOOM_ROWS, ZOOM_SHARE *
(n_reference + n_current))`` rows, or more than the pull budget: a zoom pass reads every row
(about 25 ns a row and column), while a candidate row pulled and sorted costs about 0.5 us, so
below that share pulling directly is cheaper (at 50 M pairs: 0.9 M rows pulled, one pass less)."""

ZOOM_CELLS: int = 1 << 20
"""Upper bound on the number of zoom cells (candidate bins x sub-bins)."""


def _zoom_pass(
    run: _Run, samples: Sequence[_Sample], bins: set[int], m: int
) -> dict[_Sample, _Hist]:
    """Histogram of the candidate ``bins`` split in ``m`` sub-bins each (one more pass).

    Returns, for each sample, its histogram on *cells*: a non-candidate bin ``k`` is the single
    cell ``k * m``, a candidate bin is split into cells ``k * m + j``; cell order is value order,
    so the KS plan runs on it unchanged, with bounds ``m`` times tighter in the split bins.
    """
    assert run.grid is not None
    grid = run.grid
    cand = sorted(bins)
    out: dict[_Sample, _Hist] = {}
    by_src: dict[int, list[_Sample]] = {}
    for smp in samples:
        by_src.setdefault(smp.src, []).append(smp)
    for src, smps in by_src.items():
        inp = run.inputs[src]
        cols = sorted({smp.column for smp in smps})

        def build(lf: pl.LazyFrame, cols: list[str] = cols) -> pl.LazyFrame:
            parts = []
            for c in cols:
                x = pl.col("__x")
                parts.append(
                    lf.select(pl.col(c).cast(pl.Float64).alias("__x"))
                    .filter(_valid(x) & grid.covering(x, set(cand)))
                    .with_columns(grid.bin(x).alias("bin"))
                    .filter(pl.col("bin").is_in(cand))
                    .group_by(grid.cell(x, pl.col("bin"), m).alias("cell"))
                    .agg(
                        pl.len().cast(pl.Int64).alias("n"),
                        x.min().alias("mn"),
                        x.max().alias("mx"),
                    )
                    .with_columns(pl.lit(c).alias("sample"))
                )
            return pl.concat(parts, how="vertical_relaxed")

        agg = Aggregation(build, ("sample", "cell"), {"n": "sum", "mn": "min", "mx": "max"})
        frame = inp.source.aggregate(agg)
        for smp in smps:
            h = run.hist(smp)
            keep = ~np.isin(h.bin, np.asarray(cand, dtype=np.int64))
            z = frame.filter(pl.col("sample") == smp.column).sort("cell")
            cells = np.concatenate([h.bin[keep] * m, z["cell"].to_numpy().astype(np.int64)])
            order = np.argsort(cells, kind="stable")
            n = np.concatenate([h.n[keep], z["n"].to_numpy().astype(np.int64)])[order]
            mn = np.concatenate([h.mn[keep], z["mn"].to_numpy()])[order]
            mx = np.concatenate([h.mx[keep], z["mx"].to_numpy()])[order]
            out[smp] = _Hist(
                cells[order], n, np.full(len(n), math.nan), mn, mx, int(n.sum()), h.missing
            )
    run.passes += 1
    return out


@dataclass(frozen=True, slots=True)
class _CellView:
    """``value(sample, cell)`` for a KS plan on zoom cells."""

    run: _Run
    hists: Mapping[_Sample, _Hist]

    def value(self, s: _Sample, k: int) -> np.ndarray | None:
        key = _Sample(s.src, s.column, s.group)
        h = self.hists[key]
        j = int(np.searchsorted(h.bin, k))
        if j < len(h.bin) and h.bin[j] == k and h.mn[j] == h.mx[j]:
            return np.full(int(h.n[j]), h.mn[j])
        return self.run.cell_values.get((key, int(k)))


def _ks_zoom(
    run: _Run, plan: _KSPlan, s1: _Sample, s2: _Sample, alternative: str
) -> tuple[_KSPlan, _CellView, dict[_Sample, set[int]], int] | None:
    """Zoom into the KS candidate bins when pulling them would move too many rows."""
    needs = _ks_needs(plan, s1, s2)
    if s1.src < 0 or s2.src < 0 or s1.group or s2.group:
        return None
    cost = run.cost(needs)
    if cost <= ZOOM_ROWS:
        return None
    if cost <= run.max_pull_rows and cost <= ZOOM_SHARE * (plan.n1 + plan.n2):
        return None
    cand = needs[_Sample(s1.src, s1.column, s1.group)]
    m = int(max(2, min(1024, ZOOM_CELLS // max(len(cand), 1))))
    hists = _zoom_pass(run, [s1, s2], cand, m)
    h1, h2 = hists[_Sample(s1.src, s1.column)], hists[_Sample(s2.src, s2.column)]
    plan2 = _ks_plan(h1, h2, alternative)
    cells = set(plan2.bins[plan2.cand_plus | plan2.cand_minus].tolist())
    view = _CellView(run, hists)
    cell_needs: dict[_Sample, set[int]] = {}
    for smp, h in ((s1, h1), (s2, h2)):
        key = _Sample(smp.src, smp.column, smp.group)
        nonconst = set(h.bin[h.mn != h.mx].tolist())
        cell_needs.setdefault(key, set()).update(cells & nonconst)
    return plan2, view, cell_needs, m


def _cell_cost(hists: Mapping[_Sample, _Hist], cell_needs: Mapping[_Sample, set[int]]) -> int:
    total = 0
    for smp, cs in cell_needs.items():
        h = hists[smp]
        if cs:
            total += int(h.n[np.isin(h.bin, np.fromiter(cs, np.int64, len(cs)))].sum())
    return total


def _ks_compute(run: _Run, s1: _Sample, s2: _Sample, alternative: str, method: str) -> KSResult:
    h1, h2 = run.hist(s1), run.hist(s2)
    plan = _ks_plan(h1, h2, alternative)
    zoomed = _ks_zoom(run, plan, s1, s2, alternative)
    if zoomed is not None:
        plan2, view, cell_needs, m = zoomed
        exact = _cell_cost(view.hists, cell_needs) <= run.max_pull_rows
        if exact:
            run.pull({}, cell_needs, m)
        return _ks_from_plan(run, plan2, s1, s2, alternative, method, exact, view)
    needs = _ks_needs(plan, s1, s2)
    exact = s1.src >= 0 and s2.src >= 0 and run.cost(needs) <= run.max_pull_rows
    if exact:
        run.pull(needs)
    return _ks_from_plan(run, plan, s1, s2, alternative, method, exact)


def _ks_from_plan(
    run: _Run,
    plan: _KSPlan,
    s1: _Sample,
    s2: _Sample,
    alternative: str,
    method: str,
    exact: bool,
    values: Any = None,
    pvalue: bool = True,
) -> KSResult:
    """The KS result of a plan; with ``pvalue=False`` the p-value is NaN and, where scipy's
    method would be 'asymp', not computed (the exact method also rounds D, so it still runs)."""
    d, loc, sign, bound, exact = _ks_finish(
        plan, values if values is not None else run, s1, s2, alternative, exact
    )
    asymp = method == "asymp" or (method == "auto" and max(plan.n1, plan.n2) > 10000)
    p, used = math.nan, "asymp"
    if pvalue or not asymp:
        d, p, used = _ks_pvalue(d, plan.n1, plan.n2, alternative, method)
    if not pvalue:
        p = math.nan
    h1, h2 = run.hist(s1), run.hist(s2)
    return KSResult(
        statistic=d,
        pvalue=p,
        statistic_location=loc,
        statistic_sign=sign,
        n_reference=plan.n1,
        n_current=plan.n2,
        missing_reference=h1.missing,
        missing_current=h2.missing,
        alternative=alternative,
        method=used,
        exact_statistic=exact,
        statistic_error_bound=bound,
        passes=run.passes,
        rows_pulled=run.rows_pulled,
    )


# --------------------------------------------------------------------------------------------
# helpers: JSON
# --------------------------------------------------------------------------------------------


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, pl.DataFrame):
        return _json_safe(obj.to_dicts())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return obj


# --------------------------------------------------------------------------------------------
# order statistics (quantiles) from the histogram + pull
# --------------------------------------------------------------------------------------------


def _rank_bins(h: _Hist, ranks: np.ndarray) -> np.ndarray:
    """Positions (into ``h.bin``) of the bins holding the 0-based order statistics ``ranks``."""
    cum = np.cumsum(h.n)
    return np.searchsorted(cum, ranks, side="right")


def _linear_positions(n: int, q: float) -> tuple[int, int, float]:
    """numpy's 'linear' quantile: (previous index, next index, gamma) as numpy computes them."""
    virtual = (n - 1) * q
    if virtual >= n - 1:
        return n - 1, n - 1, 0.0
    if virtual < 0:
        return 0, 0, 0.0
    prev = int(np.floor(virtual))
    return prev, prev + 1, float(virtual - prev)


def _lerp(a: float, b: float, t: float) -> float:
    # numpy's _lerp, term for term (numpy/lib/_function_base_impl.py), so values are bit-equal.
    diff = b - a
    return float(b - diff * (1 - t)) if t >= 0.5 else float(a + diff * t)


def _quantile_needs(h: _Hist, qs: Sequence[float]) -> set[int]:
    if h.total == 0:
        return set()
    ranks = []
    for q in qs:
        p, n_, _ = _linear_positions(h.total, q)
        ranks += [p, n_]
    pos = _rank_bins(h, np.asarray(ranks))
    return set(h.bin[pos].tolist())


def _order_stat(run: _Run, s: _Sample, h: _Hist, rank: int) -> float:
    cum = np.cumsum(h.n)
    j = int(np.searchsorted(cum, rank, side="right"))
    if h.mn[j] == h.mx[j]:
        return float(h.mn[j])
    vals = run.value(s, int(h.bin[j]))
    if vals is None:
        raise RuntimeError("internal: order statistic requested from a bin that was not pulled")
    return float(vals[rank - (cum[j] - h.n[j])])


def _quantiles(run: _Run, s: _Sample, qs: Sequence[float]) -> list[float]:
    if s.src < 0:
        return [run.sketches[s.src].quantile(q) for q in qs]
    h = run.hist(s)
    if h.total == 0:
        return [math.nan] * len(qs)
    out = []
    for q in qs:
        p, n_, t = _linear_positions(h.total, q)
        out.append(_lerp(_order_stat(run, s, h, p), _order_stat(run, s, h, n_), t))
    return out


def _count_below(run: _Run, s: _Sample, h: _Hist, cuts: np.ndarray) -> np.ndarray:
    """Number of values of ``s`` strictly below each cut (exact)."""
    if s.src < 0:
        return run.sketches[s.src].count_below(cuts)
    assert run.grid is not None
    kb = run.grid.bin_np(np.asarray(cuts, np.float64))  # = grid.bin (tests/test_drift.py)
    cum = np.cumsum(h.n)
    out = np.zeros(len(cuts), np.int64)
    for i, (c, k) in enumerate(zip(cuts, kb, strict=True)):
        j = int(np.searchsorted(h.bin, k))
        before = int(cum[j - 1]) if j > 0 else 0
        if j < len(h.bin) and h.bin[j] == k:
            if h.mn[j] == h.mx[j]:
                out[i] = before + (int(h.n[j]) if h.mn[j] < c else 0)
            else:
                vals = run.value(s, int(k))
                if vals is None:
                    raise RuntimeError("internal: cut point in a bin that was not pulled")
                out[i] = before + int(np.searchsorted(vals, c, side="left"))
        else:
            out[i] = before
    return out


def _cut_bins(run: _Run, cuts: np.ndarray) -> set[int]:
    assert run.grid is not None
    if len(cuts) == 0:
        return set()
    return set(run.grid.bin_np(np.asarray(cuts, np.float64)).tolist())


@dataclass(frozen=True, slots=True)
class QuantileTable:
    """Quantiles of each side (numpy's default 'linear' interpolation), exact.

    Attributes
    ----------
    table : polars.DataFrame
        Columns ``quantile``, ``reference``, ``current``, ``difference`` (current - reference).
    n_reference, n_current : int
    """

    table: pl.DataFrame
    n_reference: int
    n_current: int

    def __repr__(self) -> str:
        rows = ", ".join(
            f"p{100 * q:g}: {r:.4g}->{c:.4g}"
            for q, r, c in self.table.select("quantile", "reference", "current").iter_rows()
        )
        return f"QuantileTable({rows})"

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(
            {"table": self.table, "n_reference": self.n_reference, "n_current": self.n_current}
        )


def _check_quantiles(qs: Any, func: str) -> tuple[float, ...]:
    try:
        out = tuple(float(q) for q in qs)
    except TypeError as exc:
        raise _param_error("quantiles", func, "a sequence of floats in [0, 1]", qs) from exc
    if not out or any(not (0.0 <= q <= 1.0) for q in out):
        raise _param_error("quantiles", func, "a non-empty sequence of floats in [0, 1]", qs)
    return out


def quantile_table(
    reference: Any,
    current: Any,
    *,
    data: Any = None,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
) -> QuantileTable:
    """Quantiles p1, p5, p25, p50, p75, p95, p99, p99.9 of both samples, equal to ``np.quantile``.

    Parameters
    ----------
    reference, current : array_like, polars Series, column name or ``pl.Expr``
        As in :func:`ks_2samp`; ``reference`` may be a :class:`ScoreSketch`.
    data : frame, path or Source, optional
        Where column inputs live.
    quantiles : sequence of float in [0, 1]
        Levels (default :data:`DEFAULT_QUANTILES`).

    Returns
    -------
    QuantileTable

    Notes
    -----
    Two passes find each order statistic's fine bin; a pull of those bins finishes exactly with
    numpy's 'linear' method (Hyndman & Fan type 7) [1]_.

    References
    ----------
    .. [1] Hyndman, R. J. & Fan, Y. (1996). Sample quantiles in statistical packages.
           The American Statistician, 50(4), 361-365.
    """
    func = "quantile_table"
    qs = _check_quantiles(quantiles, func)
    run = _Run(func, None)
    s1 = run.add(reference, "reference", data)
    s2 = run.add(current, "current", data)
    run.measure()
    run.require_nonempty(s1, "reference")
    run.require_nonempty(s2, "current")
    run.pull({s1: _quantile_needs(run.hist(s1), qs), s2: _quantile_needs(run.hist(s2), qs)})
    return _quantile_table(run, s1, s2, qs)


def _quantile_table(run: _Run, s1: _Sample, s2: _Sample, qs: Sequence[float]) -> QuantileTable:
    r, c = _quantiles(run, s1, qs), _quantiles(run, s2, qs)
    table = pl.DataFrame(
        {"quantile": list(qs), "reference": r, "current": c},
        schema={"quantile": pl.Float64, "reference": pl.Float64, "current": pl.Float64},
    ).with_columns((pl.col("current") - pl.col("reference")).alias("difference"))
    return QuantileTable(table, run.sample_range(s1)[0], run.sample_range(s2)[0])


# --------------------------------------------------------------------------------------------
# PSI and Jensen–Shannon
# --------------------------------------------------------------------------------------------

Binning = Literal["quantile", "uniform", "edges", "evidently"]


@dataclass(frozen=True, slots=True)
class PSIResult:
    """Population Stability Index and its per-bin table.

    Attributes
    ----------
    statistic : float
        PSI = sum((p_cur - p_ref) * ln(p_cur / p_ref)) over bins; 0 = same shares, higher = further
        apart. Rules of thumb [1]_: < 0.1 stable, 0.1-0.25 some shift, > 0.25 major shift.
    table : polars.DataFrame
        One row per bin: ``bin``, ``lower``, ``upper`` (bins are ``[lower, upper)``; the outer
        bounds are -inf/inf), ``n_reference``, ``n_current``, ``share_reference``,
        ``share_current`` (after the zero fill), ``contribution``.
    binning : str
    bins_requested : int
        Bins asked for; ``len(table)`` can be lower when quantile edges coincide (collapsed).
    eps : float
    n_reference, n_current : int
    jensen_shannon : float
        Jensen–Shannon distance (base 2, in [0, 1]) of the raw shares of the same bins.
    """

    statistic: float
    table: pl.DataFrame
    binning: str
    bins_requested: int
    eps: float
    n_reference: int
    n_current: int
    jensen_shannon: float
    passes: int = 0
    rows_pulled: int = 0

    def __repr__(self) -> str:
        return (
            f"PSIResult(statistic={self.statistic:.6g}, bins={self.table.height}"
            f"/{self.bins_requested}, binning={self.binning!r}, "
            f"n={self.n_reference}/{self.n_current}, jensen_shannon={self.jensen_shannon:.4g})"
        )

    def to_dict(self) -> dict[str, Any]:
        return _json_safe({f: getattr(self, f) for f in self.__slots__})


def _psi_iv(bins: Any, binning: Any, eps: Any, func: str) -> tuple[Any, str]:
    _check_choice("binning", func, binning, ("quantile", "uniform", "edges", "evidently"))
    if not isinstance(eps, float | int) or isinstance(eps, bool) or not (0 < eps < 1):
        raise _param_error("eps", func, "a float in (0, 1)", eps)
    if binning == "edges" or (bins is not None and not isinstance(bins, int | np.integer)):
        if binning != "edges":
            raise _param_error("bins", func, "an int >= 2 (or edges with binning='edges')", bins)
        try:
            edges = np.asarray(bins, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise _param_error("bins", func, "a sequence of increasing finite edges", bins) from exc
        if (
            edges.ndim != 1
            or len(edges) < 2
            or not np.all(np.isfinite(edges))
            or np.any(np.diff(edges) <= 0)
        ):
            raise _param_error(
                "bins", func, "a sequence of >= 2 strictly increasing finite edges", bins
            )
        return edges, binning
    if bins is None:
        return (None if binning == "evidently" else 10), binning
    _check_int("bins", func, bins, 2)
    return int(bins), binning


def _sturges_edges(lo: float, hi: float, n: int, bins: int | None) -> np.ndarray:
    """``np.histogram_bin_edges(data, bins='sturges' or bins)`` from (min, max, size) alone."""
    first, last = float(lo), float(hi)
    if first == last:
        first, last = first - 0.5, last + 0.5
    if bins is None:
        width = (float(hi) - float(lo)) / (np.log2(n) + 1.0)
        count = int(np.ceil((last - first) / width)) if width else 1
    else:
        count = bins
    return np.linspace(first, last, count + 1, endpoint=True)


def _fill_zero(shares: np.ndarray) -> np.ndarray:
    # Evidently 0.7.23 utils.get_binned_data(feel_zeroes=True), term for term.
    out = shares.copy()
    nz = out[out != 0]
    if len(nz) == 0:
        return out
    m = nz.min()
    np.place(out, out == 0, m / 10**6 if m <= 0.0001 else 0.0001)
    return out


def _psi_plan(
    run: _Run, s1: _Sample, s2: _Sample, bins: Any, binning: str
) -> tuple[str, dict[_Sample, set[int]], Any]:
    """Which bins to pull before the PSI finish; returns (mode, needs, state)."""
    h1, h2 = run.hist(s1), run.hist(s2)
    if binning == "quantile":
        if s1.src < 0:
            return (
                "cuts",
                {s2: _cut_bins(run, np.asarray(run.sketches[s1.src].psi_cuts(bins)))},
                None,
            )
        levels = [i / bins for i in range(1, bins)]
        need1 = _quantile_needs(h1, levels)
        # a cut lies between the two order statistics it interpolates: the current's bins from
        # the one holding the lower to the one holding the upper are the only ones it can fall in
        need2: set[int] = set()
        for q in levels:
            lo_r, hi_r, _ = _linear_positions(h1.total, q)
            lo_b, hi_b = h1.bin[_rank_bins(h1, np.asarray([lo_r, hi_r]))]
            a, b = np.searchsorted(h2.bin, [lo_b, hi_b + 1])
            need2.update(h2.bin[a:b].tolist())
        return "quantile", {s1: need1, s2: need2}, levels
    n1, _, lo1, hi1 = run.ranges[s1] if s1.src >= 0 else (0, 0, None, None)
    if s1.src < 0:
        raise ValueError(f"{run.func}: a ScoreSketch reference supports binning='quantile' only.")
    if binning == "uniform":
        cuts = np.linspace(lo1, hi1, bins + 1)[1:-1]
    elif binning == "edges":
        cuts = np.asarray(bins)[1:-1]
    else:  # evidently
        n2, _, lo2, hi2 = run.ranges[s2]
        if len(h1.bin) <= 20:
            distinct = _distinct_values(run, s1, h1)
            if distinct is not None and len(distinct) <= 20:
                return "categorical", {}, None
        cuts = _sturges_edges(min(lo1, lo2), max(hi1, hi2), n1 + n2, bins)[1:-1]
    cuts = np.asarray(cuts, dtype=np.float64)
    kb = _cut_bins(run, cuts)
    return "cuts", {s1: set(kb), s2: set(kb)}, cuts


def _distinct_values(run: _Run, s: _Sample, h: _Hist) -> np.ndarray | None:
    run.pull({s: set(h.bin.tolist())})
    vals = [run.value(s, int(k)) for k in h.bin]
    if any(v is None for v in vals):
        return None
    return np.unique(np.concatenate(vals))


def _value_counts(run: _Run, s: _Sample) -> pl.DataFrame:
    inp = run.inputs[s.src]
    gnames = [g for g, _ in inp.groups]

    def build(lf: pl.LazyFrame) -> pl.LazyFrame:
        if inp.groups:
            lf = lf.with_columns(e.alias(g) for g, e in inp.groups)
        x = pl.col(s.column)
        lf = lf.filter(_valid(x))
        for g, v in zip(gnames, s.group, strict=True):
            lf = lf.filter(pl.col(g) == v)
        return lf.group_by(x.alias("value")).agg(pl.len().cast(pl.Int64).alias("n"))

    return inp.source.aggregate(Aggregation(build, ("value",), {"n": "sum"}))


def _jensenshannon(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon distance in bits [6]_, as ``scipy.spatial.distance.jensenshannon(p, q,
    base=2)`` computes it (same steps; scipy.spatial costs ~0.3 s to import).

    ``sqrt((KL(p || m) + KL(q || m)) / 2)`` with ``m = (p + q) / 2`` after normalising ``p`` and
    ``q``; a zero share contributes 0 (``rel_entr``'s convention), and ``m > 0`` wherever
    ``p > 0`` or ``q > 0``.
    """
    p = p / np.sum(p)
    q = q / np.sum(q)
    m = (p + q) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        left = np.where(p > 0, p * np.log(p / m), 0.0)
        right = np.where(q > 0, q * np.log(q / m), 0.0)
    js = (np.sum(left) + np.sum(right)) / np.log(2.0)
    return float(np.sqrt(js / 2.0))


def _psi_finish(
    run: _Run, s1: _Sample, s2: _Sample, mode: str, state: Any, bins: Any, binning: str, eps: float
) -> PSIResult:
    h1, h2 = run.hist(s1), run.hist(s2)
    n1 = run.sample_range(s1)[0]
    n2 = run.sample_range(s2)[0]
    if mode == "categorical":
        a = _value_counts(run, s1).rename({"n": "n_reference"})
        b = _value_counts(run, s2).rename({"n": "n_current"})
        t = a.join(b, on="value", how="full", coalesce=True).fill_null(0).sort("value")
        c1 = t["n_reference"].to_numpy().astype(np.int64)
        c2 = t["n_current"].to_numpy().astype(np.int64)
        lower = t["value"].to_numpy().astype(np.float64)
        upper = lower.copy()
    else:
        if mode == "quantile":
            cuts = np.unique(np.asarray(_quantiles(run, s1, state), dtype=np.float64))
        elif s1.src < 0:
            cuts = np.asarray(run.sketches[s1.src].psi_cuts(bins), dtype=np.float64)
        else:
            cuts = state
        below1 = _count_below(run, s1, h1, cuts)
        below2 = _count_below(run, s2, h2, cuts)
        c1 = np.diff(np.concatenate([[0], below1, [n1]]))
        c2 = np.diff(np.concatenate([[0], below2, [n2]]))
        lower = np.concatenate([[-np.inf], cuts])
        upper = np.concatenate([cuts, [np.inf]])
        if binning in ("edges", "evidently") and len(cuts) >= 0:
            if binning == "edges":
                lower[0], upper[-1] = bins[0], bins[-1]
    raw1, raw2 = c1 / n1, c2 / n2
    if binning == "evidently":
        p1, p2 = _fill_zero(raw1), _fill_zero(raw2)
    else:
        p1, p2 = np.where(raw1 == 0, eps, raw1), np.where(raw2 == 0, eps, raw2)
    contrib = (p1 - p2) * np.log(p1 / p2)
    table = pl.DataFrame(
        {
            "bin": np.arange(len(c1), dtype=np.int64),
            "lower": lower,
            "upper": upper,
            "n_reference": c1,
            "n_current": c2,
            "share_reference": p1,
            "share_current": p2,
            "contribution": contrib,
        }
    )
    js = _jensenshannon(raw1, raw2) if n1 and n2 else math.nan
    if bins is None:
        requested = len(c1)
    elif isinstance(bins, np.ndarray):
        requested = len(bins) - 1
    else:
        requested = int(bins)
    return PSIResult(
        statistic=float(np.sum(contrib)),
        table=table,
        binning=binning,
        bins_requested=requested,
        eps=float(eps),
        n_reference=n1,
        n_current=n2,
        jensen_shannon=js,
        passes=run.passes,
        rows_pulled=run.rows_pulled,
    )


def psi(
    reference: Any,
    current: Any,
    *,
    data: Any = None,
    bins: int | Sequence[float] | None = None,
    binning: Binning = "quantile",
    eps: float = 1e-4,
) -> PSIResult:
    """Population Stability Index of ``current`` against ``reference``, with its per-bin table.

    Parameters
    ----------
    reference, current : array_like, polars Series, column name or ``pl.Expr``
        As in :func:`ks_2samp`; ``reference`` may be a :class:`ScoreSketch` (quantile binning).
    data : frame, path or Source, optional
        Where column inputs live.
    bins : int >= 2 or sequence of float, optional
        Number of bins (default 10; for ``binning='evidently'`` default Sturges' rule, as
        Evidently). Always honoured: unlike Evidently (issue #1400), a given count is used. With
        ``binning='edges'``: the bin edges; values outside them count in the end bins.
    binning : {'quantile', 'uniform', 'edges', 'evidently'}
        ``'quantile'``: cut points at the reference's ``i/bins`` quantiles (numpy 'linear'), the
        credit-risk convention [1]_; coinciding cut points are collapsed (fewer bins, reported).
        ``'uniform'``: equal-width over the reference's [min, max]. ``'evidently'``: reproduces
        Evidently 0.7.23's PSI [3]_: with more than 20 distinct reference values, equal-width edges
        ``np.histogram_bin_edges(concat(reference, current), 'sturges')`` (or ``bins``), else one
        bin per distinct value of either sample; Evidently's zero fill.
    eps : float in (0, 1)
        Share given to an empty bin (not used by ``'evidently'``, which has its own fill).

    Returns
    -------
    PSIResult

    Notes
    -----
    ``PSI = sum_i (p_ref,i - p_cur,i) * ln(p_ref,i / p_cur,i)`` [1]_ (symmetric Kullback–Leibler).
    Under the null of equal distributions with ``B`` bins, ``PSI * (1/n_ref + 1/n_cur)^-1`` is
    approximately chi-square with ``B - 1`` degrees of freedom [2]_, so PSI shrinks like ``B/n``
    and fixed thresholds mean different things at different sample sizes. Bins are
    ``[lower, upper)``. Counts are exact (fine histogram plus a pull of the bins holding cut points).

    References
    ----------
    .. [1] Siddiqi, N. (2006). Credit Risk Scorecards. Wiley.
    .. [2] Yurdakul, B. (2018). Statistical Properties of Population Stability Index.
           Western Michigan University.
    .. [3] Evidently 0.7.23, ``legacy/calculations/stattests/psi.py`` and ``utils.py``.
    """
    func = "psi"
    bins, binning = _psi_iv(bins, binning, eps, func)
    run, s1, s2 = _two_samples(func, reference, current, data, None)
    mode, needs, state = _psi_plan(run, s1, s2, bins, binning)
    run.pull(needs)
    return _psi_finish(run, s1, s2, mode, state, bins, binning, eps)


@dataclass(frozen=True, slots=True)
class JensenShannonResult:
    """Jensen–Shannon distance (base 2, in [0, 1]; higher = further apart) and its bins.

    Attributes
    ----------
    statistic : float
    table : polars.DataFrame
        ``bin``, ``lower``, ``upper``, raw ``share_reference`` and ``share_current``.
    n_reference, n_current : int
    """

    statistic: float
    table: pl.DataFrame
    n_reference: int
    n_current: int

    def __repr__(self) -> str:
        return (
            f"JensenShannonResult(statistic={self.statistic:.6g}, bins={self.table.height}, "
            f"n={self.n_reference}/{self.n_current})"
        )

    def to_dict(self) -> dict[str, Any]:
        return _json_safe({f: getattr(self, f) for f in self.__slots__})


def jensen_shannon(
    reference: Any,
    current: Any,
    *,
    data: Any = None,
    bins: int | Sequence[float] | None = None,
    binning: Binning = "quantile",
) -> JensenShannonResult:
    """Jensen–Shannon distance (base 2, in [0, 1]) between the two samples' shares on PSI's bins.

    Same bins as :func:`psi` with the same arguments; the shares are the raw ones (no zero fill),
    computed with :func:`scipy.spatial.distance.jensenshannon` [1]_.

    References
    ----------
    .. [1] Lin, J. (1991). Divergence measures based on the Shannon entropy. IEEE Transactions on
           Information Theory, 37(1), 145-151.
    """
    res = psi(reference, current, data=data, bins=bins, binning=binning)
    table = res.table.select(
        "bin",
        "lower",
        "upper",
        (pl.col("n_reference") / res.n_reference).alias("share_reference"),
        (pl.col("n_current") / res.n_current).alias("share_current"),
    )
    return JensenShannonResult(res.jensen_shannon, table, res.n_reference, res.n_current)


# --------------------------------------------------------------------------------------------
# Wasserstein-1
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WassersteinResult:
    """Wasserstein-1 (earth mover's) distance; ``error_bound`` is 0 when exact."""

    statistic: float
    n_reference: int
    n_current: int
    error_bound: float = 0.0
    passes: int = 0
    rows_pulled: int = 0

    def __repr__(self) -> str:
        b = "" if self.error_bound == 0 else f" ± {self.error_bound:.3g}"
        return (
            f"WassersteinResult(statistic={self.statistic:.6g}{b}, "
            f"n={self.n_reference}/{self.n_current})"
        )

    def to_dict(self) -> dict[str, Any]:
        return _json_safe({f: getattr(self, f) for f in self.__slots__})


@dataclass(frozen=True, slots=True)
class _WPlan:
    bins: np.ndarray
    start: np.ndarray
    end: np.ndarray
    b1: np.ndarray
    b2: np.ndarray
    i1: np.ndarray  # integral of F1 over [start, end)
    i2: np.ndarray
    cross: np.ndarray  # sign of F1 - F2 may change in the bin
    hi: np.ndarray  # max |F1 - F2| bound in the bin
    n1: int
    n2: int


def _w_plan(run: _Run, h1: _Hist, h2: _Hist) -> _WPlan:
    assert run.grid is not None
    bins = _sorted_union(h1.bin, h2.bin)
    c1, s1, mn1, mx1 = h1.align(bins)
    c2, s2, mn2, mx2 = h2.align(bins)
    n1, n2 = h1.total, h2.total
    start = np.minimum(mn1, mn2)
    end = np.append(start[1:], max(mx1[-1], mx2[-1]))
    ref = run.grid.left_np(bins)
    t1, t2 = np.cumsum(c1), np.cumsum(c2)
    b1, b2 = t1 - c1, t2 - c2
    length = end - start
    # integral of F over [start, end) = (before*L + sum over bin values of (end - x)) / n
    i1 = (b1 * length + (c1 * (end - ref) - s1)) / n1
    i2 = (b2 * length + (c2 * (end - ref) - s2)) / n2
    upper = t1 / n1 - b2 / n2
    lower = b1 / n1 - t2 / n2
    cross = (upper > 0) & (lower < 0)
    hi = np.maximum(np.abs(upper), np.abs(lower)) * length
    return _WPlan(bins, start, end, b1, b2, i1, i2, cross, hi, n1, n2)


def _w_finish(plan: _WPlan, run: _Run, s1: _Sample, s2: _Sample) -> tuple[float, float]:
    """W1 = integral of |F1 - F2|: closed form on bins where the sign cannot change, pieces
    between consecutive observed values inside the pulled crossing bins, binned otherwise.

    The crossing bins are integrated together: their values are disjoint, increasing runs, so
    one merge of all values (and bin ends) gives every piece, and each ECDF at a point is the
    count before its bin plus a ``searchsorted`` into the merged runs (no loop over bins).
    """
    total = float(np.sum(np.abs(plan.i1 - plan.i2)[~plan.cross]))
    bound = 0.0
    cnt1 = np.diff(np.append(plan.b1, plan.n1))  # rows of each sample in each bin
    cnt2 = np.diff(np.append(plan.b2, plan.n2))
    exact_j, vals1, vals2 = [], [], []
    cross = np.flatnonzero(plan.cross)
    ks = plan.bins[cross].tolist()
    empty = np.zeros(0)
    for j, v1, v2, c1, c2 in zip(
        cross.tolist(),
        run.values_of(s1, ks),
        run.values_of(s2, ks),
        cnt1[cross].tolist(),
        cnt2[cross].tolist(),
        strict=True,
    ):
        v1 = v1 if c1 else empty
        v2 = v2 if c2 else empty
        if v1 is None or v2 is None:
            est = abs(plan.i1[j] - plan.i2[j])
            total += est
            bound += plan.hi[j] - est
            continue
        exact_j.append(j)
        vals1.append(v1)
        vals2.append(v2)
    if not exact_j:
        return total, bound
    js = np.asarray(exact_j, np.int64)
    starts, ends = plan.start[js], plan.end[js]
    a1 = np.concatenate(vals1) if vals1 else np.zeros(0)
    a2 = np.concatenate(vals2) if vals2 else np.zeros(0)
    # rows of the pulled bins before each bin, within a1 / a2
    off1 = np.concatenate(([0], np.cumsum([len(v) for v in vals1])[:-1]))
    off2 = np.concatenate(([0], np.cumsum([len(v) for v in vals2])[:-1]))
    pts = _sorted_union(a1, a2, ends)
    left, width = pts[:-1], np.diff(pts)
    j = np.searchsorted(ends, left, side="right")  # the pulled bin a piece may start in
    inside = j < len(js)
    inside[inside] &= left[inside] >= starts[j[inside]]
    left, width, j = left[inside], width[inside], j[inside]
    f1 = (plan.b1[js][j] - off1[j] + np.searchsorted(a1, left, side="right")) / plan.n1
    f2 = (plan.b2[js][j] - off2[j] + np.searchsorted(a2, left, side="right")) / plan.n2
    total += float(np.sum(np.abs(f1 - f2) * width))
    return total, bound


def _w_needs(plan: _WPlan, s1: _Sample, s2: _Sample) -> dict[_Sample, set[int]]:
    cand = set(plan.bins[plan.cross].tolist())
    return {s1: set(cand), s2: set(cand)}


def wasserstein_distance(
    reference: Any, current: Any, *, data: Any = None, max_pull_rows: int | None = None
) -> WassersteinResult:
    """Wasserstein-1 distance, equal to :func:`scipy.stats.wasserstein_distance` (unweighted).

    Parameters
    ----------
    reference, current : array_like, polars Series, column name or ``pl.Expr``
        As in :func:`ks_2samp`.
    data : frame, path or Source, optional
    max_pull_rows : int, optional
        Budget of the refinement pull; above it the crossing bins are binned and
        ``error_bound`` bounds the error.

    Notes
    -----
    ``W1 = integral |F_ref(x) - F_cur(x)| dx`` [1]_. Inside a fine bin where the two ECDFs cannot
    cross, the integral follows from the bin's count and sum of values (mergeable); only bins where
    they may cross are pulled and integrated point by point as scipy does.

    References
    ----------
    .. [1] Ramdas, A., Garcia, N. & Cuturi, M. (2017). On Wasserstein two sample testing and
           related families of nonparametric tests. Entropy, 19(2), 47.
    """
    func = "wasserstein_distance"
    if max_pull_rows is not None:
        _check_int("max_pull_rows", func, max_pull_rows, 0)
    run = _Run(func, max_pull_rows)
    s1 = run.add(reference, "reference", data)
    s2 = run.add(current, "current", data)
    run.measure(with_sum=True)
    run.require_nonempty(s1, "reference")
    run.require_nonempty(s2, "current")
    plan = _w_plan(run, run.hist(s1), run.hist(s2))
    needs = _w_needs(plan, s1, s2)
    if run.cost(needs) <= run.max_pull_rows:
        run.pull(needs)
    w, bound = _w_finish(plan, run, s1, s2)
    return WassersteinResult(w, plan.n1, plan.n2, bound, run.passes, run.rows_pulled)


# --------------------------------------------------------------------------------------------
# a stored reference: fine histogram + exact quantiles
# --------------------------------------------------------------------------------------------

_SKETCH_LEVELS: tuple[float, ...] = tuple(k / 1000 for k in range(1, 1000))
_SKETCH_META = b"shadowlab.score_sketch"


@dataclass(frozen=True, slots=True, eq=False)
class ScoreSketch:
    """A reference score distribution kept as a summary instead of raw scores.

    Holds the fine histogram (the dyadic grid for scores in [0, 1], else ``2**16`` bins over the
    reference's [min, max]: count, sum of offsets, min and max per bin) and the exact quantiles at every level ``k/1000`` with the number of
    values strictly below each. Saved as one small Parquet file (:meth:`save` / :meth:`load`), so a
    team need not keep its evaluation set.

    What it gives exactly: quantiles at levels ``k/1000`` (so the quantile table and PSI with a bin
    count dividing 1000), counts and the Wasserstein integral where the ECDFs cannot cross.
    What it bounds: the KS statistic and Wasserstein inside crossing bins, reported with an error
    bound (values inside a bin are not kept).

    Attributes
    ----------
    grid : tuple
        The fine grid: ``(lo, hi, bins)`` (equal widths) or ``(0.0, 1.0, bins, 'dyadic',
        exponents, mantissa_bits)`` (see ``_DyadicGrid``).
    bins : polars.DataFrame
        ``bin``, ``n``, ``s``, ``mn``, ``mx`` of non-empty bins.
    levels, quantiles, below : tuple of float / int
    n, n_missing : int
    model : str or None
        Which model's scores (``'primary'``/``'candidate'``) when known.
    """

    grid: tuple[Any, ...]
    bins: pl.DataFrame
    levels: tuple[float, ...]
    quantiles: tuple[float, ...]
    below: tuple[int, ...]
    n: int
    n_missing: int
    model: str | None = None

    def __repr__(self) -> str:
        lo, hi, b = self.grid[:3]
        kind = f" {self.grid[3]}" if len(self.grid) > 3 else ""
        return (
            f"ScoreSketch(model={self.model!r}, n={self.n}, missing={self.n_missing}, "
            f"grid=[{lo:.6g}, {hi:.6g}] x {b}{kind}, non_empty_bins={self.bins.height})"
        )

    @classmethod
    def from_scores(cls, scores: Any, *, data: Any = None, model: str | None = None) -> ScoreSketch:
        """Summarise ``scores`` (array, Series, or a column of ``data``) in three passes."""
        run = _Run("ScoreSketch.from_scores", None)
        s = run.add(scores, "scores", data)
        if s.src < 0:
            return scores
        run.measure(with_sum=True)
        run.require_nonempty(s, "scores")
        h = run.hist(s)
        run.pull({s: _quantile_needs(h, _SKETCH_LEVELS)})
        qs = _quantiles(run, s, _SKETCH_LEVELS)
        # counts below each quantile value: its bin is one of the pulled (or constant) bins
        run.pull({s: _cut_bins(run, np.asarray(qs))})
        below = _count_below(run, s, h, np.asarray(qs))
        assert run.grid is not None
        frame = pl.DataFrame({"bin": h.bin, "n": h.n, "s": h.s, "mn": h.mn, "mx": h.mx})
        return cls(
            run.grid.spec,
            frame,
            _SKETCH_LEVELS,
            tuple(qs),
            tuple(int(b) for b in below),
            h.total,
            h.missing,
            model,
        )

    def _hist(self) -> _Hist:
        return _Hist.from_frame(self.bins, self.n_missing)

    def _level(self, q: float) -> int:
        i = round(q * 1000)
        if not (1 <= i <= 999) or abs(q * 1000 - i) > 1e-9:
            raise ValueError(
                f"A ScoreSketch keeps exact quantiles at levels k/1000 only; level {q!r} is not "
                "one. Pass raw reference scores for other levels or bin counts."
            )
        return i - 1

    def quantile(self, q: float) -> float:
        """Exact quantile (numpy 'linear') at a stored level ``k/1000``."""
        return self.quantiles[self._level(q)]

    def psi_cuts(self, bins: int) -> np.ndarray:
        """PSI quantile cut points for ``bins`` bins (``bins`` must divide 1000)."""
        if 1000 % bins:
            raise ValueError(
                f"A ScoreSketch reference supports PSI bin counts that divide 1000; got {bins}. "
                "Pass raw reference scores for other bin counts."
            )
        return np.unique(np.asarray([self.quantile(i / bins) for i in range(1, bins)]))

    def count_below(self, cuts: np.ndarray) -> np.ndarray:
        """Exact number of reference values strictly below each cut (a stored quantile value)."""
        q = np.asarray(self.quantiles)
        out = np.zeros(len(cuts), np.int64)
        for i, c in enumerate(cuts):
            hit = np.flatnonzero(q == c)
            if len(hit) == 0:
                raise ValueError(f"ScoreSketch: {c!r} is not a stored quantile value.")
            out[i] = self.below[hit[0]]
        return out

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(
            {
                "model": self.model,
                "n": self.n,
                "n_missing": self.n_missing,
                "grid": list(self.grid),
                "non_empty_bins": self.bins.height,
            }
        )

    def save(self, path: str | Path) -> Path:
        """Write the sketch as one Parquet file (bins as rows, the rest in key-value metadata)."""
        import pyarrow.parquet as pq

        meta = {
            "version": 1,
            "grid": list(self.grid),
            "levels": list(self.levels),
            "quantiles": list(self.quantiles),
            "below": list(self.below),
            "n": self.n,
            "n_missing": self.n_missing,
            "model": self.model,
        }
        table = self.bins.to_arrow()
        table = table.replace_schema_metadata({_SKETCH_META: json.dumps(meta).encode()})
        path = Path(path)
        pq.write_table(table, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ScoreSketch:
        """Read a sketch written by :meth:`save`."""
        import pyarrow.parquet as pq

        raw = (pq.read_schema(path).metadata or {}).get(_SKETCH_META)
        if raw is None:
            raise ValueError(
                f"{path} is not a ScoreSketch file (no {_SKETCH_META.decode()} metadata); "
                "write one with ScoreSketch.from_scores(...).save(path)."
            )
        table = pq.read_table(path)
        meta = json.loads(raw)
        frame = pl.from_arrow(table.replace_schema_metadata(None))
        assert isinstance(frame, pl.DataFrame)
        spec = tuple(meta["grid"])
        _grid_from_spec(spec)  # a grid this version knows
        return cls(
            spec,
            frame,
            tuple(meta["levels"]),
            tuple(meta["quantiles"]),
            tuple(meta["below"]),
            int(meta["n"]),
            int(meta["n_missing"]),
            meta.get("model"),
        )


# --------------------------------------------------------------------------------------------
# paired view: rank correlation and discordant pairs from a mergeable rank-cell cross-tab
# --------------------------------------------------------------------------------------------

RANK_CELLS: int = 256
"""Rank cells per score in the paired cross-tab (pass 4 of :func:`compare_scores`)."""


def _rank_cell_map(hists: Sequence[_Hist], cells: int) -> tuple[list[int], list[int]]:
    """Fine bin -> rank cell (by the pooled marginal's mid-rank), a monotone map."""
    if not hists:
        return [], []
    bins = np.concatenate([h.bin for h in hists])
    n = np.concatenate([h.n for h in hists])
    ub, inv = np.unique(bins, return_inverse=True)
    tot = np.bincount(inv, weights=n)
    cum = np.cumsum(tot)
    mid = cum - tot / 2
    cell = np.minimum((mid / cum[-1] * cells).astype(np.int64), cells - 1)
    return ub.tolist(), cell.tolist()


def _paired_stats(table: pl.DataFrame, cells: int) -> tuple[float, float, float, float]:
    """(spearman, discordant share estimate, lower, upper) from a (cp, cc, n) cross-tab."""
    m = np.zeros((cells, cells))
    m[table["cp"].to_numpy(), table["cc"].to_numpy()] = table["n"].to_numpy()
    n = m.sum()
    if n < 2:
        return math.nan, math.nan, math.nan, math.nan
    r, c = m.sum(1), m.sum(0)
    rr = np.cumsum(r) - r + (r + 1) / 2  # mid-ranks of the cells
    cr = np.cumsum(c) - c + (c + 1) / 2
    mean = (n + 1) / 2
    cov = np.sum(m * np.outer(rr - mean, cr - mean))
    vr, vc = np.sum(r * (rr - mean) ** 2), np.sum(c * (cr - mean) ** 2)
    if vr > 0 and vc > 0:
        rho = cov / math.sqrt(vr * vc)
    else:
        rho = math.nan
        warnings.warn(
            "Spearman correlation of the paired scores is undefined: one model's scores are "
            "constant in this window/segment; spearman is NaN.",
            DegenerateInputWarning,
            stacklevel=4,
        )
    below = np.vstack([m[::-1].cumsum(0)[::-1][1:], np.zeros((1, cells))])  # rows strictly after
    left = np.hstack([np.zeros((cells, 1)), below.cumsum(1)[:, :-1]])  # cols strictly before
    disc = float(np.sum(m * left))
    tied = float(np.sum(r * (r - 1)) / 2 + np.sum(c * (c - 1)) / 2 - np.sum(m * (m - 1)) / 2)
    pairs = n * (n - 1) / 2
    return float(rho), (disc + tied / 2) / pairs, disc / pairs, (disc + tied) / pairs


# --------------------------------------------------------------------------------------------
# compare_scores: every comparison on a week of pair logs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DistributionComparison:
    """Score-distribution comparisons of a shadow week, per window (and segment).

    Attributes
    ----------
    table : polars.DataFrame
        One row per (window, segment, comparison, model). ``comparison`` is
        ``'candidate_vs_primary'`` (paired: the two scores of the same requests),
        ``'vs_reference'`` (a model in production against its offline reference scores) or
        ``'vs_first_window'`` (a model's window against its first window). Effect sizes first —
        ``ks_statistic`` (with ``ks_statistic_error_bound``), ``psi``, ``wasserstein``,
        ``jensen_shannon``, and for the paired rows ``spearman`` and ``discordant_share`` (with
        lower/upper bounds) — then ``ks_pvalue`` and ``pvalue_valid`` (False for paired rows,
        whose ``ks_pvalue`` is null: the test assumes independent samples).
    quantiles : polars.DataFrame
        ``window`` (null for the reference), segment columns, ``model``, ``quantile``, ``value``.
    every, by : window length and segment columns
    passes, rows_pulled : int
        Passes over the logs and rows moved by the refinement pull.
    """

    table: pl.DataFrame
    quantiles: pl.DataFrame
    every: str | None
    by: tuple[str, ...]
    passes: int
    rows_pulled: int
    notes: tuple[str, ...] = ()

    def __repr__(self) -> str:
        worst = self.table.sort("ks_statistic", descending=True).head(1)
        top = ""
        if worst.height:
            row = worst.row(0, named=True)
            top = (
                f", max KS D={row['ks_statistic']:.4g} ({row['comparison']}, {row['model']}, "
                f"window {row['window']})"
            )
        return (
            f"DistributionComparison(rows={self.table.height}, every={self.every!r}, "
            f"by={list(self.by)}, passes={self.passes}, rows_pulled={self.rows_pulled}{top})"
        )

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(
            {
                "every": self.every,
                "by": list(self.by),
                "passes": self.passes,
                "rows_pulled": self.rows_pulled,
                "notes": list(self.notes),
                "table": self.table,
                "quantiles": self.quantiles,
            }
        )


def _reference_inputs(run: _Run, reference: Any) -> dict[str, _Sample]:
    """model -> reference sample, from a path, an array/Series/sketch (candidate) or a mapping."""
    func = run.func
    if reference is None:
        return {}
    if isinstance(reference, str | Path):
        path = Path(reference)
        if not path.exists():
            raise FileNotFoundError(
                f"Reference file {str(path)!r} of {func} does not exist; pass the path of a "
                "reference.parquet with columns 'model' and 'score', or the scores themselves."
            )
        if path.suffix == ".parquet":
            try:
                return {S.CANDIDATE: run.add(ScoreSketch.load(path), "reference", None)}
            except ValueError:
                pass
        lf = pl.scan_parquet(path)
        names = lf.collect_schema().names()
        for col in ("model", "score"):
            _check_column(col, names, "reference", func)
        inp = _Input(
            PolarsSource(lf.select("model", pl.col("score").cast(pl.Float64))),
            ["score"],
            [("model", pl.col("model"))],
            ["model"],
        )
        idx = run.add_input(inp)
        return {m: _Sample(idx, "score", (m,), f"reference[{m}]") for m in (S.PRIMARY, S.CANDIDATE)}
    if isinstance(reference, Mapping):
        out = {}
        for m, v in reference.items():
            if m not in (S.PRIMARY, S.CANDIDATE):
                raise ValueError(
                    f"The keys of 'reference' of {func} must be 'primary' or 'candidate'. "
                    f"Got {m!r} instead."
                )
            out[m] = run.add(v, f"reference[{m}]", None)
        return out
    model = reference.model if isinstance(reference, ScoreSketch) and reference.model else None
    return {model or S.CANDIDATE: run.add(reference, "reference", None)}


def compare_scores(
    pairs: Any,
    *,
    reference: Any = None,
    every: str | None = "1d",
    by: str | Sequence[str] | None = None,
    bins: int = 10,
    max_pull_rows: int | None = None,
) -> DistributionComparison:
    """Compare score distributions on shadow pair logs: v2 vs v1, vs reference, vs first window.

    Parameters
    ----------
    pairs : LazyFrame, DataFrame, path/glob/list, or Source
        Pair logs (schema v1); scanned in streaming passes, never collected whole.
    reference : path, array_like, Series, ScoreSketch, or mapping, optional
        Offline reference scores: a ``reference.parquet`` with columns ``model``
        (``'primary'``/``'candidate'``) and ``score``; a saved :class:`ScoreSketch` file; raw
        scores or a sketch (taken as the candidate's unless the sketch names its model); or a
        mapping ``{'primary': ..., 'candidate': ...}``.
    every : str or None
        Window length as a polars duration (``'1d'``, ``'6h'``); ``None`` for one window.
    by : str or sequence of str, optional
        Segment columns (e.g. ``'country'``); comparisons are made within each segment.
    bins : int >= 2
        PSI bins (reference quantiles).
    max_pull_rows : int, optional
        Memory budget of the refinement pull; above it, KS and Wasserstein of the remaining
        comparisons are binned with their error bounds.

    Returns
    -------
    DistributionComparison

    Notes
    -----
    **Paired rows are not two independent samples.** ``candidate_vs_primary`` compares the two
    models' scores of the *same* requests; the KS p-value assumes independence and is not a valid
    test there, so it is null (``pvalue_valid`` is False). Read D, PSI and Wasserstein as effect
    sizes, and the paired view: ``spearman`` (rank correlation of the two scores) and
    ``discordant_share`` (share of request pairs whose order the candidate reverses,
    (1 - Kendall's tau-a)/2 without ties). Both come from a mergeable cross-tab of the two scores' rank cells (256 per score, cells cut
    at the pooled marginal's quantiles, found from the fine histograms): Spearman is computed
    exactly on the cell-coarsened data (mid-ranks); the discordant share counts pairs in strictly
    ordered cells exactly and reports pairs sharing a cell row or column as the interval
    ``[discordant_share_lower, discordant_share_upper]`` (the estimate counts half of them).

    At millions of rows every p-value is ~0 for any visible difference; gates read effect sizes
    against limits and report p-values beside them.

    Passes: range, fine histogram (all windows, segments and both models at once), one
    refinement pull (only rows in critical bins), and the paired cross-tab.
    """
    func = "compare_scores"
    _check_int("bins", func, bins, 2)
    if max_pull_rows is not None:
        _check_int("max_pull_rows", func, max_pull_rows, 0)
    by_cols: tuple[str, ...] = () if by is None else ((by,) if isinstance(by, str) else tuple(by))
    if every is not None:
        if not isinstance(every, str):
            raise _param_error(
                "every", func, "a polars duration string such as '1d' or None", every
            )
        try:
            pl.select(pl.lit(0).cast(pl.Datetime("us", "UTC")).dt.truncate(every))
        except Exception as exc:
            raise _param_error(
                "every", func, "a polars duration string such as '1d'", every
            ) from exc
    source = as_source(pairs)
    names = list(source.collect_schema())
    for col in (S.TS, S.PRIMARY_SCORE, S.CANDIDATE_SCORE, *by_cols):
        _check_column(col, names, "pairs", func)
    window = pl.col(S.TS).dt.truncate(every) if every else pl.lit(None, pl.Datetime("us", "UTC"))
    groups = [("window", window), *((b, pl.col(b)) for b in by_cols)]
    run = _Run(func, max_pull_rows)
    pidx = run.add_input(
        _Input(source, [S.PRIMARY_SCORE, S.CANDIDATE_SCORE], groups, [S.TS, *by_cols])
    )
    refs = _reference_inputs(run, reference)
    run.measure(with_sum=True)
    notes: list[str] = []
    for m, s in refs.items():
        run.require_nonempty(s, f"reference[{m}]")
    if run.grid is None:
        raise ValueError(
            f"Input pairs of {func} has no finite primary or candidate score; nothing to compare."
        )
    col = {S.PRIMARY: S.PRIMARY_SCORE, S.CANDIDATE: S.CANDIDATE_SCORE}
    gkeys = sorted(
        {s.group for s in run.ranges if s.src == pidx},
        key=lambda g: tuple((v is None, v) for v in g),
    )
    first: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for g in gkeys:
        first.setdefault(g[1:], g)
    comps: list[tuple[tuple[Any, ...], str, str, _Sample, _Sample]] = []
    for g in gkeys:
        p, c = _Sample(pidx, S.PRIMARY_SCORE, g), _Sample(pidx, S.CANDIDATE_SCORE, g)
        comps.append((g, "candidate_vs_primary", S.CANDIDATE, p, c))
        for m in (S.PRIMARY, S.CANDIDATE):
            if m in refs:
                comps.append((g, "vs_reference", m, refs[m], _Sample(pidx, col[m], g)))
        if first[g[1:]] != g:
            for m in (S.PRIMARY, S.CANDIDATE):
                comps.append(
                    (
                        g,
                        "vs_first_window",
                        m,
                        _Sample(pidx, col[m], first[g[1:]]),
                        _Sample(pidx, col[m], g),
                    )
                )
    comps = [cmp for cmp in comps if run.hist(cmp[3]).total > 0 and run.hist(cmp[4]).total > 0]
    # plan every comparison, then one pull: quantile/PSI bins always, KS/W bins within budget
    plans = []
    base: dict[_Sample, set[int]] = {}
    qlevels = DEFAULT_QUANTILES
    for s in {*(cmp[3] for cmp in comps), *(cmp[4] for cmp in comps)}:
        if s.src >= 0:
            base = _merge_needs(base, {s: _quantile_needs(run.hist(s), qlevels)})
    for cmp in comps:
        _, _, _, s1, s2 = cmp
        mode, pneeds, state = _psi_plan(run, s1, s2, bins, "quantile")
        kplan = _ks_plan(run.hist(s1), run.hist(s2), "two-sided")
        wplan = _w_plan(run, run.hist(s1), run.hist(s2))
        base = _merge_needs(base, pneeds)
        plans.append((mode, state, kplan, wplan))
    budget_needs = dict(base)
    spent = run.cost(base)
    exact = []
    for cmp, (_, _, kplan, wplan) in zip(comps, plans, strict=True):
        s1, s2 = cmp[3], cmp[4]
        extra = _merge_needs(_ks_needs(kplan, s1, s2), _w_needs(wplan, s1, s2))
        ok = s1.src >= 0 and s2.src >= 0
        if ok:
            more = run.cost(extra, budget_needs)
            ok = spent + more <= run.max_pull_rows
        if ok:
            budget_needs = _merge_needs(budget_needs, extra)
            spent += more
        exact.append(ok)
    if not all(exact):
        notes.append(
            f"{exact.count(False)} comparison(s) have binned KS/Wasserstein (pull budget "
            f"{run.max_pull_rows} rows or a sketch reference); see ks_statistic_error_bound."
        )
    # the paired cross-tab (the last pass) reads the pairs anyway: on a polars source it also
    # hands over their pull rows, one read instead of two
    shared: list[dict[tuple[Any, ...], tuple[float, float, float, float]]] = []

    def fetch(
        src: int, per_group: Mapping[tuple[Any, ...], Mapping[str, set[int]]]
    ) -> pl.DataFrame | None:
        if src != pidx or not isinstance(source, PolarsSource):
            return None
        paired, rows = _paired_pass(run, pidx, gkeys, collect=per_group)
        shared.append(paired)
        return rows

    run.pull(budget_needs, fetch=fetch)
    paired = shared[0] if shared else _paired_pass(run, pidx, gkeys)[0]
    rows = []
    for cmp, (mode, state, kplan, wplan), ok in zip(comps, plans, exact, strict=True):
        g, kind, model, s1, s2 = cmp
        # a paired row's p-value would not be a valid test: it is left out (null), which also
        # spares scipy's exact one-sided sum (for up to 1e6 effective rows, ~1 us a term: ~0.7 s
        # a day at 10 M pairs a week)
        paired_row = kind == "candidate_vs_primary"
        ks = _ks_from_plan(run, kplan, s1, s2, "two-sided", "auto", ok, pvalue=not paired_row)
        pr = _psi_finish(run, s1, s2, mode, state, bins, "quantile", 1e-4)
        w, wb = _w_finish(wplan, run, s1, s2)
        rho = disc = lo = hi = None
        if kind == "candidate_vs_primary":
            rho, disc, lo, hi = paired.get(g, (math.nan,) * 4)
        rows.append(
            {
                "window": g[0],
                **{b: v for b, v in zip(by_cols, g[1:], strict=True)},
                "comparison": kind,
                "model": model,
                "n_reference": ks.n_reference,
                "n_current": ks.n_current,
                "ks_statistic": ks.statistic,
                "ks_statistic_error_bound": ks.statistic_error_bound,
                "psi": pr.statistic,
                "wasserstein": w,
                "wasserstein_error_bound": wb,
                "jensen_shannon": pr.jensen_shannon,
                "spearman": rho,
                "discordant_share": disc,
                "discordant_share_lower": lo,
                "discordant_share_upper": hi,
                "ks_pvalue": None if paired_row else ks.pvalue,
                "pvalue_valid": not paired_row,
                "ks_statistic_location": ks.statistic_location,
                "missing_reference": ks.missing_reference,
                "missing_current": ks.missing_current,
            }
        )
    schema = {
        "window": pl.Datetime("us", "UTC"),
        **{b: source.collect_schema()[b] for b in by_cols},
        "comparison": pl.String,
        "model": pl.String,
        "n_reference": pl.Int64,
        "n_current": pl.Int64,
        **{
            k: pl.Float64
            for k in (
                "ks_statistic",
                "ks_statistic_error_bound",
                "psi",
                "wasserstein",
                "wasserstein_error_bound",
                "jensen_shannon",
                "spearman",
                "discordant_share",
                "discordant_share_lower",
                "discordant_share_upper",
                "ks_pvalue",
            )
        },
        "pvalue_valid": pl.Boolean,
        "ks_statistic_location": pl.Float64,
        "missing_reference": pl.Int64,
        "missing_current": pl.Int64,
    }
    table = pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)
    qrows = []
    for g in gkeys:
        for m in (S.PRIMARY, S.CANDIDATE):
            s = _Sample(pidx, col[m], g)
            if run.hist(s).total:
                for q, v in zip(qlevels, _quantiles(run, s, qlevels), strict=True):
                    qrows.append((g[0], *g[1:], m, "production", q, v))
    for m, s in refs.items():
        for q, v in zip(qlevels, _quantiles(run, s, qlevels), strict=True):
            qrows.append((None, *([None] * len(by_cols)), m, "reference", q, v))
    qschema = {
        "window": pl.Datetime("us", "UTC"),
        **{b: source.collect_schema()[b] for b in by_cols},
        "model": pl.String,
        "source": pl.String,
        "quantile": pl.Float64,
        "value": pl.Float64,
    }
    quantiles = pl.DataFrame(qrows, schema=qschema, orient="row")
    return DistributionComparison(
        table, quantiles, every, by_cols, run.passes, run.rows_pulled, tuple(notes)
    )


def _paired_pass(
    run: _Run,
    pidx: int,
    gkeys: Sequence[tuple[Any, ...]],
    collect: Mapping[tuple[Any, ...], Mapping[str, set[int]]] | None = None,
) -> tuple[dict[tuple[Any, ...], tuple[float, float, float, float]], pl.DataFrame | None]:
    """Paired cross-tab statistics per group; with ``collect`` (bins wanted per group and score
    column, polars sources only) the same read also returns the rows of those bins, i.e. the
    refinement pull of the pairs (columns: the raw group columns and both scores)."""
    assert run.grid is not None
    inp = run.inputs[pidx]
    gnames = [g for g, _ in inp.groups]
    maps = {}
    for c in (S.PRIMARY_SCORE, S.CANDIDATE_SCORE):
        hs = [run.hist(_Sample(pidx, c, g)) for g in gkeys]
        maps[c] = _rank_cell_map([h for h in hs if h.total], RANK_CELLS)
    grid = run.grid
    # Fine bin -> rank cell as a join to a small lookup table: a ``replace_strict`` with ~65 k
    # entries costs ~2.7x the memory and ~1.6x the CPU per row in the streaming engine.
    lookups = {
        c: pl.LazyFrame(
            {f"__bin_{c}": maps[c][0], f"__cell_{c}": maps[c][1]},
            schema={f"__bin_{c}": pl.Int32, f"__cell_{c}": pl.Int32},
        )
        for c in (S.PRIMARY_SCORE, S.CANDIDATE_SCORE)
    }

    def build(lf: pl.LazyFrame) -> pl.LazyFrame:
        lf = lf.with_columns(e.alias(g) for g, e in inp.groups)
        both = _valid(pl.col(S.PRIMARY_SCORE)) & _valid(pl.col(S.CANDIDATE_SCORE))
        binned = lf.filter(both).select(
            *gnames,
            *(grid.bin(pl.col(c)).alias(f"__bin_{c}") for c in lookups),
        )
        for c, lookup in lookups.items():
            binned = binned.join(lookup, on=f"__bin_{c}", how="left")
        return binned.group_by(
            *gnames,
            pl.col(f"__cell_{S.PRIMARY_SCORE}").fill_null(0).alias("cp"),
            pl.col(f"__cell_{S.CANDIDATE_SCORE}").fill_null(0).alias("cc"),
        ).agg(pl.len().cast(pl.Int64).alias("n"))

    rows: list[pl.DataFrame] | None = None if collect is None else []
    prepare, fold = _paired_fold(grid, maps, inp.groups, collect, inp.raw_group_columns, rows)
    agg = Aggregation(build, (*gnames, "cp", "cc"), {"n": "sum"}, prepare, fold)
    # PolarsSource runs the fold (which then collects the rows); other engines run build
    fused = rows is not None and prepare is not None and isinstance(inp.source, PolarsSource)
    frame = inp.source.aggregate(agg)
    run.passes += 1
    out: dict[tuple[Any, ...], tuple[float, float, float, float]] = {}
    for key, part in frame.group_by(gnames, maintain_order=True) if frame.height else ():
        out[tuple(key)] = _paired_stats(part, RANK_CELLS)
    if not fused:
        return out, None
    cols = [*inp.raw_group_columns, S.PRIMARY_SCORE, S.CANDIDATE_SCORE]
    pulled = (
        pl.concat(rows) if rows else pl.DataFrame(schema=inp.source.collect_schema()).select(cols)
    )
    return out, pulled
    return out


def _paired_fold(
    grid: _Grid,
    maps: Mapping[str, tuple[list[int], list[int]]],
    groups: Sequence[tuple[str, pl.Expr]],
    collect: Mapping[tuple[Any, ...], Mapping[str, set[int]]] | None = None,
    raw: Sequence[str] = (),
    rows: list[pl.DataFrame] | None = None,
) -> tuple[
    Callable[[pl.LazyFrame], pl.LazyFrame], Callable[[Iterable[pl.DataFrame]], pl.DataFrame]
]:
    """The numpy fast path of the paired cross-tab: bin ids, a lookup array, ``np.bincount``.

    Same summary as the polars build (rows with both scores valid; a fine bin missing from the
    map is cell 0), counted on a dense ``RANK_CELLS**2`` array per group. At 50 M pairs by day
    the build's two joins and hash group-by took ~8 s; this fold reads the same columns once.
    With ``collect`` (bins wanted per group and score column) it also appends to ``rows`` every
    row of a group with a bin wanted there in either column: its ``raw`` columns and both scores.
    (A bin wanted on one day only is not pulled for the others: at 10 M pairs by day, wanting
    each column's bins in every group moved 7.4 M rows instead of 3.6 M.)
    """
    gnames = [g for g, _ in groups]
    shift = -MISSING_BIN
    cols = (S.PRIMARY_SCORE, S.CANDIDATE_SCORE)
    luts = []
    for c in cols:
        lut = np.zeros(grid.bins + 3, np.int64)
        bins, cells = maps[c]
        if bins:
            lut[np.asarray(bins, np.int64) + shift] = np.asarray(cells, np.int64)
        luts.append(lut)
    size = RANK_CELLS * RANK_CELLS

    wants: dict[tuple[Any, ...], np.ndarray] = {}
    for key, per_col in (collect or {}).items():
        want = np.zeros((len(cols), grid.bins + 3), bool)
        for i, c in enumerate(cols):
            bins = per_col.get(c, set())
            want[i, np.fromiter(bins, np.int64, len(bins)) + shift] = True
        if want.any():
            wants[key] = want
    keep_raw = list(raw) if collect is not None else []

    def prepare(lf: pl.LazyFrame) -> pl.LazyFrame:
        return lf.select(
            *(e.alias(g) for g, e in groups),
            *(pl.col(c).cast(pl.Float64).alias(f"__x{i}") for i, c in enumerate(cols)),
            *(pl.col(r).alias(f"__raw_{r}") for r in keep_raw),
        )

    def fold(chunks: Iterable[pl.DataFrame]) -> pl.DataFrame:
        acc: dict[tuple[Any, ...], np.ndarray] = {}
        gschema: dict[str, pl.DataType] = {}
        for key, part in _group_parts(chunks, gnames, gschema):
            kp = grid.bin_np(part["__x0"].to_numpy(), shift)  # nulls/NaN -> slot 0
            kc = grid.bin_np(part["__x1"].to_numpy(), shift)
            want = wants.get(key)
            if want is not None:
                hit = want[0][kp] | want[1][kc]
                if hit.any():
                    rows.append(  # type: ignore[union-attr]
                        part.filter(pl.Series(hit)).select(
                            *(pl.col(f"__raw_{r}").alias(r) for r in keep_raw),
                            *(pl.col(f"__x{i}").alias(c) for i, c in enumerate(cols)),
                        )
                    )
            both = (kp > 0) & (kc > 0)
            if not both.all():
                kp, kc = kp[both], kc[both]
            code = luts[0][kp] * RANK_CELLS
            code += luts[1][kc]
            counts = np.bincount(code, minlength=size)
            if key in acc:
                acc[key] += counts
            else:
                acc[key] = counts
        out = []
        for key, counts in acc.items():
            keep = np.flatnonzero(counts)
            frame = pl.DataFrame(
                {
                    "cp": pl.Series(keep // RANK_CELLS, dtype=pl.Int32),
                    "cc": pl.Series(keep % RANK_CELLS, dtype=pl.Int32),
                    "n": pl.Series(counts[keep], dtype=pl.Int64),
                }
            )
            out.append(_with_keys(frame, key, gschema))
        return pl.concat(out, how="vertical_relaxed") if out else pl.DataFrame()

    return prepare, fold


# --------------------------------------------------------------------------------------------
# all two-sample statistics at once (one histogram pass, one pull)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TwoSampleComparison:
    """KS, PSI, Wasserstein-1 and quantiles of two samples from one set of passes."""

    ks: KSResult
    psi: PSIResult
    wasserstein: WassersteinResult | None
    quantiles: QuantileTable
    passes: int
    rows_pulled: int

    def __repr__(self) -> str:
        w = "" if self.wasserstein is None else f", wasserstein={self.wasserstein.statistic:.4g}"
        return (
            f"TwoSampleComparison(ks_statistic={self.ks.statistic:.4g}, psi={self.psi.statistic:.4g}"
            f"{w}, ks_pvalue={self.ks.pvalue:.3g}, n={self.ks.n_reference}/{self.ks.n_current}, "
            f"passes={self.passes}, rows_pulled={self.rows_pulled})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ks": self.ks.to_dict(),
            "psi": self.psi.to_dict(),
            "wasserstein": None if self.wasserstein is None else self.wasserstein.to_dict(),
            "quantiles": self.quantiles.to_dict(),
            "passes": self.passes,
            "rows_pulled": self.rows_pulled,
        }


def compare_distributions(
    reference: Any,
    current: Any,
    *,
    data: Any = None,
    bins: int | Sequence[float] | None = None,
    binning: Binning = "quantile",
    eps: float = 1e-4,
    alternative: str = "two-sided",
    method: str = "auto",
    wasserstein: bool = True,
    quantiles: Sequence[float] = DEFAULT_QUANTILES,
    max_pull_rows: int | None = None,
) -> TwoSampleComparison:
    """:func:`ks_2samp`, :func:`psi`, :func:`wasserstein_distance` and :func:`quantile_table`
    of the same two samples, sharing one fine-histogram pass and one refinement pull.

    Parameters are those of the four functions (``wasserstein=False`` skips the Wasserstein
    distance and the per-bin sums it needs). Each statistic equals what its own function
    returns; use this when more than one is wanted on large data (half the passes of two calls).
    """
    func = "compare_distributions"
    alternative = _ks_iv(alternative, method, func)
    bins, binning = _psi_iv(bins, binning, eps, func)
    qs = _check_quantiles(quantiles, func)
    run, s1, s2 = _two_samples(func, reference, current, data, None, with_sum=wasserstein)
    h1, h2 = run.hist(s1), run.hist(s2)
    mode, pneeds, state = _psi_plan(run, s1, s2, bins, binning)
    base = _merge_needs(pneeds, {s2: _quantile_needs(h2, qs)})
    if s1.src >= 0:
        base = _merge_needs(base, {s1: _quantile_needs(h1, qs)})
    kplan = _ks_plan(h1, h2, alternative)
    zoomed = _ks_zoom(run, kplan, s1, s2, alternative)
    view, cell_needs, m = None, {}, 0
    if zoomed is not None:
        kplan, view, cell_needs, m = zoomed
        extra: dict[_Sample, set[int]] = {}
        more = _cell_cost(view.hists, cell_needs)
    else:
        extra = _ks_needs(kplan, s1, s2)
        more = 0
    wplan = _w_plan(run, h1, h2) if wasserstein else None
    if wplan is not None:
        extra = _merge_needs(extra, _w_needs(wplan, s1, s2))
    exact = s1.src >= 0 and run.cost(base) + run.cost(extra, base) + more <= run.max_pull_rows
    if exact:
        run.pull(_merge_needs(base, extra), cell_needs, m)
    else:
        run.pull(base)
    ks = _ks_from_plan(run, kplan, s1, s2, alternative, method, exact, view)
    pr = _psi_finish(run, s1, s2, mode, state, bins, binning, eps)
    wr = None
    if wplan is not None:
        w, wb = _w_finish(wplan, run, s1, s2)
        wr = WassersteinResult(w, wplan.n1, wplan.n2, wb, run.passes, run.rows_pulled)
    qt = _quantile_table(run, s1, s2, qs)
    return TwoSampleComparison(ks, pr, wr, qt, run.passes, run.rows_pulled)
