"""Mergeable summaries: the one code path every analysis runs on, on polars or on Spark.

Each statistic in shadowlab is split in two:

* a **summary**: a partition-level aggregation written as a polars function
  ``LazyFrame -> LazyFrame`` whose output rows can be merged across partitions by grouping on
  ``keys`` and reducing every other column with an associative, commutative operation
  (``sum``, ``min`` or ``max``). Counts, fine histograms, per-interval trigger counts and
  cross-tabs all have this shape;
* a **finish**: plain local code over the merged summary (a small polars DataFrame).

Where a statistic is an order statistic (a calibrated threshold, the KS statistic), a histogram
summary locates the critical bins and :meth:`Source.pull` fetches only the rows inside them for an
exact local finish.

On one machine :class:`PolarsSource` runs the summary over the whole lazy frame in one streaming
pass (or, when the aggregation offers the optional ``prepare``/``fold`` fast path, folds the
streamed chunks with it, e.g. with ``np.bincount``) and merges that single partial with the same
:func:`merge_partials`; the Spark engine
(``shadowlab.engines.spark``) runs the same summary inside each task over Arrow batches and merges
the partials on the driver. One implementation of each statistic, two engines.

Summaries of frames whose data is fixed by a fingerprint (those of
:func:`shadowlab.logs.scan_pairs`: its options and every file's path, size and modification
time) can be reused within a process with :func:`aggregate_memo`, so a second statistic of the
same columns of the same logs does not read them again.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import polars as pl

__all__ = [
    "Aggregation",
    "GroupedSums",
    "PolarsSource",
    "Source",
    "aggregate_memo",
    "as_source",
    "clear_memo",
    "frame_facts",
    "fuse",
    "grouped_sums",
    "merge_partials",
    "project",
    "register_stable_frame",
]

Reduce = Literal["sum", "min", "max"]

_REDUCERS: dict[str, Callable[[pl.Expr], pl.Expr]] = {
    "sum": lambda e: e.sum(),
    "min": lambda e: e.min(),
    "max": lambda e: e.max(),
}


@dataclass(frozen=True, slots=True)
class Aggregation:
    """A partition-level summary and how its partials merge.

    Parameters
    ----------
    build : callable
        ``LazyFrame -> LazyFrame``; applied to one partition (or the whole data) it returns the
        partial summary: one row per value of ``keys`` (or a single row when ``keys`` is empty).
    keys : tuple of str
        Group columns of the partial summary.
    reduce : mapping of str to {'sum', 'min', 'max'}
        How each non-key column merges across partials.
    prepare, fold : callable, optional
        An optional fast path, used together: ``prepare`` (``LazyFrame -> LazyFrame``, row-wise
        expressions only) and ``fold`` (iterable of ``DataFrame`` chunks of the prepared frame
        -> partial summary). ``fold(chunks of prepare(lf))`` must return the same partial as
        ``build(lf)`` (same columns and rows, any row order; float sums up to rounding). It lets
        an engine that streams batches fold them with numpy (e.g. ``np.bincount``) instead of a
        hash group-by. Engines that do not know it run ``build``; both give the same summary.
    """

    build: Callable[[pl.LazyFrame], pl.LazyFrame]
    keys: tuple[str, ...] = ()
    reduce: Mapping[str, Reduce] = field(default_factory=dict)
    prepare: Callable[[pl.LazyFrame], pl.LazyFrame] | None = None
    fold: Callable[[Iterable[pl.DataFrame]], pl.DataFrame] | None = None
    spec: GroupedSums | None = None


@dataclass(frozen=True, slots=True)
class GroupedSums:
    """The declarative form of the commonest summary: per group of ``keys``, the sum (or the
    minimum, or the maximum) of row-wise expressions over the rows where ``where`` holds.

    Build one with :func:`grouped_sums`. Being declarative, several of them can be computed in
    one read of the data (:func:`fuse`) and each recovered exactly (:func:`project`).
    """

    keys: tuple[tuple[str, pl.Expr], ...]
    columns: tuple[tuple[str, pl.Expr | None, Reduce], ...]  # None: row count (sum only)
    where: pl.Expr | None = None

    def signature(self) -> str:
        """The exact definition (every expression serialised): equal signatures, equal sums."""

        def ser(e: pl.Expr | None) -> str:
            return "-" if e is None else e.meta.serialize(format="json")

        parts = [f"{n}={ser(e)}" for n, e in self.keys]
        parts += ["|", *(f"{n}:{how}={ser(e)}" for n, e, how in self.columns)]
        return "\n".join([*parts, "|", ser(self.where)])


def _row_count(where: pl.Expr | None) -> pl.Expr:
    """Int64 count of the rows ``where`` admits (all rows without it)."""
    x = pl.len() if where is None else where.cast(pl.Int64).sum()
    return x.cast(pl.Int64)


def _column_exprs(spec: GroupedSums, where: pl.Expr | None, prefix: str = "") -> list[pl.Expr]:
    out = []
    for name, e, how in spec.columns:
        if e is None:
            out.append(_row_count(where).alias(prefix + name))
            continue
        # when/then (null elsewhere, which the reductions skip) is far cheaper than a filter
        x = e if where is None else pl.when(where).then(e)
        out.append(_REDUCERS[how](x).alias(prefix + name))
    return out


def grouped_sums(
    keys: Mapping[str, pl.Expr],
    sums: Mapping[str, pl.Expr | None],
    where: pl.Expr | None = None,
    *,
    mins: Mapping[str, pl.Expr] | None = None,
    maxs: Mapping[str, pl.Expr] | None = None,
) -> Aggregation:
    """An :class:`Aggregation` of sums per group, with its declarative :class:`GroupedSums`.

    Parameters
    ----------
    keys : mapping of str to polars Expr
        Group columns and the row-wise expressions that compute them.
    sums : mapping of str to polars Expr or None
        Output columns: the sum of each row-wise expression, or (``None``) the row count as
        Int64. Sums of integers merge exactly.
    where : polars Expr, optional
        Only rows where it is true count; groups without such a row are absent.
    mins, maxs : mapping of str to polars Expr, optional
        Further output columns: the minimum (maximum) of each row-wise expression.

    Returns
    -------
    Aggregation
        Keyed by ``keys``, columns in the order sums, mins, maxs; ``spec`` set.
    """
    cols: list[tuple[str, pl.Expr | None, Reduce]] = [(n, e, "sum") for n, e in sums.items()]
    cols += [(n, e, "min") for n, e in (mins or {}).items()]
    cols += [(n, e, "max") for n, e in (maxs or {}).items()]
    spec = GroupedSums(tuple(keys.items()), tuple(cols), where)

    def build(lf: pl.LazyFrame) -> pl.LazyFrame:
        frame = lf if where is None else lf.filter(where)
        if not spec.keys:  # one row, zeros when no row counts
            return frame.select(_column_exprs(spec, None))
        return frame.group_by([e.alias(n) for n, e in spec.keys]).agg(_column_exprs(spec, None))

    return Aggregation(
        build=build,
        keys=tuple(keys),
        reduce={n: how for n, _, how in spec.columns},
        spec=spec,
    )


_HITS = "__rows"


def fuse(aggs: Sequence[Aggregation]) -> Aggregation:
    """One aggregation computing every :func:`grouped_sums` of ``aggs`` in a single read.

    It groups by the union of their keys (a key name must have the same expression in all);
    aggregation ``i``'s columns are prefixed ``"{i}:"``, with a row count ``"{i}:__rows"`` of
    the rows its ``where`` admits. :func:`project` recovers each one exactly. The union of keys
    should stay small: a key of one that is a function of another's (a day and the 5-minute
    interval holding it) adds no groups.
    """
    keys: dict[str, pl.Expr] = {}
    exprs: list[pl.Expr] = []
    reduce: dict[str, Reduce] = {}
    for i, agg in enumerate(aggs):
        if agg.spec is None:
            raise ValueError("fuse() needs aggregations made by grouped_sums().")
        for name, e in agg.spec.keys:
            seen = keys.setdefault(name, e)
            if not seen.meta.eq(e):
                raise ValueError(f"fuse(): key {name!r} has two different expressions.")
        where = agg.spec.where
        exprs += _column_exprs(agg.spec, where, f"{i}:")
        exprs.append(_row_count(where).alias(f"{i}:{_HITS}"))
        reduce.update({f"{i}:{n}": how for n, _, how in agg.spec.columns})
        reduce[f"{i}:{_HITS}"] = "sum"

    def build(lf: pl.LazyFrame) -> pl.LazyFrame:
        if not keys:
            return lf.select(exprs)
        return lf.group_by([e.alias(n) for n, e in keys.items()]).agg(exprs)

    return Aggregation(build=build, keys=tuple(keys), reduce=reduce)


def project(fused: pl.DataFrame, aggs: Sequence[Aggregation], i: int) -> pl.DataFrame:
    """Aggregation ``i`` of ``aggs`` from the merged result of ``fuse(aggs)``: the frame
    ``merge_partials`` gives for it alone (same rows, columns, types and order)."""
    spec = aggs[i].spec
    assert spec is not None
    keys = [n for n, _ in spec.keys]
    if fused.height == 0:
        return pl.DataFrame()
    cols = [_REDUCERS[how](pl.col(f"{i}:{n}")).alias(n) for n, _, how in spec.columns]
    if not keys:  # like its own build: one row, zeros when no row counts
        return fused.select(cols)
    hits = pl.col(f"{i}:{_HITS}").sum().alias(_HITS)
    out = fused.lazy().group_by(keys).agg(*cols, hits).filter(pl.col(_HITS) > 0).drop(_HITS)
    return out.sort(keys).collect()


def merge_partials(partials: Iterable[pl.DataFrame], agg: Aggregation) -> pl.DataFrame:
    """Merge partial summaries of ``agg`` into one, sorted by its keys.

    The merge is associative and commutative, so any partitioning of the data gives the same
    result as the whole (for ``sum`` over integers exactly; over floats up to rounding).
    """
    parts = [p for p in partials if p.height > 0]
    if not parts:
        return pl.DataFrame()
    frame = pl.concat(parts, how="vertical_relaxed").lazy()
    exprs = [_REDUCERS[how](pl.col(col)).alias(col) for col, how in agg.reduce.items()]
    if agg.keys:
        # lazily: the eager group_by + sort took ~3x as long (776 k histogram rows: 1.6 s/0.5 s)
        return frame.group_by(list(agg.keys)).agg(exprs).sort(list(agg.keys)).collect()
    return frame.select(exprs).collect()


@runtime_checkable
class Source(Protocol):
    """Where pair rows live: a polars LazyFrame here, a Spark DataFrame in the Spark engine."""

    engine: str

    def aggregate(self, agg: Aggregation) -> pl.DataFrame:
        """Run ``agg`` over every partition and return the merged summary."""
        ...

    def pull(self, predicate: pl.Expr, columns: Sequence[str]) -> pl.DataFrame:
        """Return the rows matching ``predicate`` (a refinement pass), only ``columns``."""
        ...

    def collect_schema(self) -> Mapping[str, Any]:
        """Column names and types."""
        ...


@dataclass(frozen=True, slots=True)
class PolarsSource:
    """A lazy polars frame as a :class:`Source`; every pass is one streaming ``collect``."""

    frame: pl.LazyFrame
    engine: str = "polars"

    def aggregate(self, agg: Aggregation) -> pl.DataFrame:
        if agg.prepare is not None and agg.fold is not None:
            # In scan order: a fold's float sums then add up in the same order on every run
            # (with maintain_order=False the chunk order varied between runs, at no speed gain)
            chunks = agg.prepare(self.frame).collect_batches(
                engine="streaming", maintain_order=True
            )
            return merge_partials([agg.fold(chunks)], agg)
        partial = agg.build(self.frame).collect(engine="streaming")
        return merge_partials([partial], agg)

    def pull(self, predicate: pl.Expr, columns: Sequence[str]) -> pl.DataFrame:
        return self.frame.filter(predicate).select(list(columns)).collect(engine="streaming")

    def collect_schema(self) -> Mapping[str, Any]:
        return self.frame.collect_schema()


# Summaries of frames whose data cannot change while their fingerprint stays the same (those of
# :func:`shadowlab.logs.scan_pairs`: a fingerprint of its options and of every file's path, size
# and modification time), kept for the process so that a second statistic of the same columns
# (``ks_2samp`` then ``psi`` in a notebook) does not read the week again.
_STABLE: dict[int, tuple[weakref.ref[pl.LazyFrame], Callable[[], Hashable], dict[str, Any]]] = {}
_MEMO: OrderedDict[tuple[Hashable, Hashable], Any] = OrderedDict()
_MEMO_SIZE = 32  # entries, and at most _MEMO_BYTES of summaries
_MEMO_BYTES = 256 << 20
_MEMO_LOCK = threading.Lock()


def register_stable_frame(
    frame: pl.LazyFrame, fingerprint: Callable[[], Hashable], **facts: Any
) -> None:
    """Declare that ``frame``'s data is determined by ``fingerprint()`` (evaluated at each use).

    Frames with equal fingerprints must hold the same rows in the same order; a changed input
    must change the fingerprint. :func:`aggregate_memo` then reuses summaries across calls.
    ``facts`` are what the registrar established about every row (e.g. ``models``, the one
    pair of model ids of the files); :func:`frame_facts` returns them.
    """
    key = id(frame)

    def forget(_: object, key: int = key) -> None:
        with _MEMO_LOCK:
            entry = _STABLE.get(key)
            if entry is not None and entry[0]() is None:
                del _STABLE[key]

    with _MEMO_LOCK:
        _STABLE[key] = (weakref.ref(frame, forget), fingerprint, dict(facts))


def _stable_entry(source: Source) -> tuple[Any, ...] | None:
    if not isinstance(source, PolarsSource):
        return None
    with _MEMO_LOCK:
        entry = _STABLE.get(id(source.frame))
    if entry is None or entry[0]() is not source.frame:
        return None
    return entry


def _fingerprint(source: Source) -> Hashable | None:
    entry = _stable_entry(source)
    return None if entry is None else entry[1]()


def memoised(source: Source) -> bool:
    """True when summaries of ``source`` are kept across calls (a registered stable frame)."""
    return _fingerprint(source) is not None


def frame_facts(source: Source) -> Mapping[str, Any]:
    """What :func:`register_stable_frame` recorded about ``source``'s rows (empty if nothing)."""
    entry = _stable_entry(source)
    return {} if entry is None else dict(entry[2])


def aggregate_memo(source: Source, agg: Aggregation, key: Hashable) -> tuple[pl.DataFrame, bool]:
    """``(source.aggregate(agg), read)``, reusing an earlier result for the same data and ``key``.

    ``key`` must determine the summary given the data (e.g. the statistic, its columns and its
    grid). Only frames registered with :func:`register_stable_frame` are memoised, in a
    least-recently-used store of at most 32 summaries and 256 MB; ``read`` is False when the
    result came from memory.
    """
    fp = _fingerprint(source)
    if fp is None:
        return source.aggregate(agg), True
    with _MEMO_LOCK:
        hit = _MEMO.get((fp, key))
        if hit is not None:
            _MEMO.move_to_end((fp, key))
            return hit, False
    result = source.aggregate(agg)
    _keep(fp, key, result)
    return result, True


def _nbytes(value: Any) -> int:
    if isinstance(value, pl.DataFrame):
        return int(value.estimated_size())
    return sum(int(v.nbytes) for v in value.values())  # a mapping of numpy arrays


def _keep(fp: Hashable, key: Hashable, value: Any) -> None:
    if _nbytes(value) > _MEMO_BYTES // 4:
        return
    with _MEMO_LOCK:
        _MEMO[(fp, key)] = value
        _MEMO.move_to_end((fp, key))
        while len(_MEMO) > _MEMO_SIZE or sum(_nbytes(v) for v in _MEMO.values()) > _MEMO_BYTES:
            _MEMO.popitem(last=False)


def recall(source: Source, key: Hashable) -> Mapping[Hashable, Any]:
    """What :func:`remember` kept under ``key`` for ``source``'s data (empty if nothing)."""
    fp = _fingerprint(source)
    if fp is None:
        return {}
    with _MEMO_LOCK:
        hit = _MEMO.get((fp, key))
        if hit is None:
            return {}
        _MEMO.move_to_end((fp, key))
        return hit


def remember(source: Source, key: Hashable, values: Mapping[Hashable, Any]) -> None:
    """Keep ``values`` (numpy arrays) of ``source``'s data under ``key``, added to those kept
    before, in the store of :func:`aggregate_memo` (its bounds apply; unregistered frames keep
    nothing). Used for the raw values a refinement pull fetched."""
    fp = _fingerprint(source)
    if fp is None or not values:
        return
    with _MEMO_LOCK:
        merged = {**_MEMO.get((fp, key), {}), **values}
    _keep(fp, key, merged)


def clear_memo() -> None:
    """Forget every summary kept by :func:`aggregate_memo` (frees their memory)."""
    with _MEMO_LOCK:
        _MEMO.clear()


def as_source(pairs: Any) -> Source:
    """Turn what a public function was given into a :class:`Source`.

    Accepts a :class:`Source`, a polars LazyFrame or DataFrame, a Spark DataFrame (when pyspark is
    installed), or anything :func:`shadowlab.logs.scan_pairs` accepts (a path, glob or list).
    """
    if isinstance(pairs, Source) and not isinstance(pairs, pl.LazyFrame | pl.DataFrame):
        return pairs
    if isinstance(pairs, pl.LazyFrame):
        return PolarsSource(pairs)
    if isinstance(pairs, pl.DataFrame):
        return PolarsSource(pairs.lazy())
    if type(pairs).__module__.startswith("pyspark."):
        from shadowlab.engines.spark import SparkSource

        return SparkSource(pairs)
    from shadowlab.logs import scan_pairs

    return PolarsSource(scan_pairs(pairs))
