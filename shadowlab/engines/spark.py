"""Apache Spark engine: the mergeable summaries of :mod:`shadowlab.engine` on a Spark DataFrame.

:class:`SparkSource` implements the :class:`~shadowlab.engine.Source` protocol, so every public
function of shadowlab that goes through :func:`~shadowlab.engine.as_source` accepts a Spark
DataFrame of pairs and returns the same result object it returns for a polars LazyFrame.

How a pass runs
---------------
``aggregate(agg)`` is **one Spark job, no shuffle**:

1. *Column pruning on the driver.* ``agg.build`` is applied to an empty polars IO source with the
   frame's schema; polars' own projection pushdown reports which columns the summary reads, and
   only those are selected from the Spark DataFrame (so Parquet reads only those column chunks).
2. *Summary in each task.* ``DataFrame.mapInArrow`` hands each task its Arrow record batches;
   the task buffers them into polars frames of at most ``rows_per_chunk`` rows, runs
   ``agg.build`` on each chunk and merges the chunk partials with
   :func:`~shadowlab.engine.merge_partials` (or, for an aggregation with the optional
   ``prepare``/``fold`` fast path, folds the prepared chunks, as the polars engine does). The task's partial leaves as **one Arrow IPC blob**
   in a single ``binary`` column.
3. *Merge on the driver.* The blobs are collected (one per non-empty task: a summary's size,
   never the rows) and merged with the same :func:`~shadowlab.engine.merge_partials`.

Why a binary IPC column rather than a typed output schema derived from ``agg.build`` on an
empty frame: a partial summary keeps its exact polars dtypes (``pl.len()`` is ``UInt32``,
which Spark has no type for; categoricals, lists, structs and durations map lossily or not at
all), so the merged summary is the very frame the polars engine returns, dtype for dtype; and
no summary's output is forced through an empty-frame schema probe, which some expressions
type differently on zero rows. The cost is nothing measurable: a partial is a few kilobytes.

``pull(predicate, columns)`` runs the polars ``filter`` inside the tasks too, so any polars
expression works as a refinement predicate, and only matching rows (of ``columns``) reach the
driver. Their order is the order of Spark's partitions, not file order: callers that need an
order sort (the order statistics in shadowlab always do).

Time zones: Spark hands timestamps to Arrow in the session time zone. Each task converts every
time-zone-aware column to UTC before the summary runs, so per-day and per-hour summaries bin
exactly as on the polars path whatever ``spark.sql.session.timeZone`` is.

References
----------
.. [1] Apache Spark, ``DataFrame.mapInArrow``:
       https://spark.apache.org/docs/latest/api/python/reference/pyspark.sql/api/pyspark.sql.DataFrame.mapInArrow.html
.. [2] Apache Arrow IPC streaming format:
       https://arrow.apache.org/docs/format/Columnar.html#ipc-streaming-format
"""

from __future__ import annotations

import difflib
import io
import itertools
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

from shadowlab import schema as S
from shadowlab.engine import Aggregation, PolarsSource, merge_partials

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["SparkSource", "collect_labels", "read_labels", "read_pairs", "spark_session"]

_BLOB = "partial"
_BLOB_SCHEMA = pa.schema([pa.field(_BLOB, pa.binary())])
_BLOB_DDL = f"{_BLOB} binary"


# --------------------------------------------------------------------------------------------
# Work done inside a Spark task (module-level so that cloudpickle ships it by reference).


def _to_polars(batches: list[pa.RecordBatch], names: list[str]) -> pl.DataFrame:
    """Arrow batches from Spark -> one polars frame with the real column ``names``, in UTC."""
    frame = pl.from_arrow(pa.Table.from_batches(batches).rename_columns(names))
    assert isinstance(frame, pl.DataFrame)
    return _utc(frame)


def _utc(frame: pl.DataFrame) -> pl.DataFrame:
    conv = [
        pl.col(name).dt.convert_time_zone("UTC")
        for name, dtype in frame.schema.items()
        if isinstance(dtype, pl.Datetime) and dtype.time_zone not in (None, "UTC")
    ]
    return frame.with_columns(conv) if conv else frame


def _chunks(
    batches: Iterator[pa.RecordBatch], names: list[str], rows: int
) -> Iterator[pl.DataFrame]:
    """Regroup a task's record batches into polars frames of about ``rows`` rows."""
    buffer: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        buffer.append(batch)
        held += batch.num_rows
        if held >= rows:
            yield _to_polars(buffer, names)
            buffer, held = [], 0
    if buffer:
        yield _to_polars(buffer, names)


def _blob(frame: pl.DataFrame) -> pa.RecordBatch:
    sink = io.BytesIO()
    frame.write_ipc_stream(sink)
    column = pa.array([sink.getvalue()], pa.binary())
    return pa.RecordBatch.from_arrays([column], schema=_BLOB_SCHEMA)


def _unblob(blob: bytes | bytearray) -> pl.DataFrame:
    return pl.read_ipc_stream(io.BytesIO(bytes(blob)))


def _aggregate_task(
    agg: Aggregation, names: list[str], rows: int
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    prepare, fold = agg.prepare, agg.fold

    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        chunks = _chunks(batches, names, rows)
        if prepare is not None and fold is not None:
            # The contract's fast path, as the polars engine takes it: row-wise ``prepare`` per
            # chunk, one ``fold`` over the task's chunks.
            first = next(chunks, None)
            if first is None:
                return
            prepared = (prepare(c.lazy()).collect() for c in itertools.chain([first], chunks))
            yield _blob(fold(prepared))
            return
        partials = [agg.build(chunk.lazy()).collect() for chunk in chunks]
        if not partials:
            return
        partial = partials[0] if len(partials) == 1 else merge_partials(partials, agg)
        yield _blob(partial)

    return task


def _pull_task(
    predicate: pl.Expr, columns: list[str], names: list[str], rows: int
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for chunk in _chunks(batches, names, rows):
            hit = chunk.lazy().filter(predicate).select(columns).collect()
            if hit.height:
                yield _blob(hit)

    return task


# --------------------------------------------------------------------------------------------
# Driver side.


def _read_columns(query: Callable[[pl.LazyFrame], pl.LazyFrame], schema: pl.Schema) -> list[str]:
    """Columns ``query`` reads, as polars' projection pushdown sees them (all on doubt)."""
    from polars.io.plugins import register_io_source

    asked: list[list[str] | None] = []

    def source(
        with_columns: list[str] | None, predicate: Any, n_rows: int | None, batch_size: int | None
    ) -> Iterator[pl.DataFrame]:
        asked.append(with_columns)
        empty = pl.DataFrame(schema=schema)
        yield empty.select(with_columns) if with_columns is not None else empty

    try:
        query(register_io_source(source, schema=schema)).collect()
    except Exception:  # a query that fails on zero rows still runs on Spark; read everything
        return list(schema)
    if not asked or any(cols is None for cols in asked):
        return list(schema)
    wanted = {c for cols in asked for c in cols if c in schema}  # type: ignore[union-attr]
    # Keep at least one column so that Spark still hands the task its row count.
    return [c for c in schema if c in wanted] or list(schema)[:1]


@dataclass(frozen=True, slots=True)
class SparkSource:
    """A Spark DataFrame as a :class:`~shadowlab.engine.Source`.

    Parameters
    ----------
    frame : pyspark.sql.DataFrame
        Pair rows (or label rows); typically from :func:`read_pairs`.
    rows_per_chunk : int, default 1_000_000
        Inside a task, Arrow batches are regrouped into polars frames of about this many rows
        before the summary runs; it bounds a task's memory (about ``rows_per_chunk`` times the
        width of the columns the summary reads) and amortises polars' per-query cost.

    Notes
    -----
    Each :meth:`aggregate` and :meth:`pull` is one Spark job with no shuffle: it reads the
    columns the summary needs once and moves one partial summary per task (or the matching rows,
    for :meth:`pull`) to the driver. Spark DataFrames are lazy: cache the frame
    (``frame.cache()``) when several passes should not each re-read Parquet.
    """

    frame: DataFrame
    rows_per_chunk: int = 1_000_000
    engine: str = "spark"

    def __post_init__(self) -> None:
        if not isinstance(self.rows_per_chunk, int) or self.rows_per_chunk < 1:
            raise ValueError(
                "The 'rows_per_chunk' parameter of SparkSource must be an int >= 1. "
                f"Got {self.rows_per_chunk!r} instead."
            )

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        # A summary's ``build`` closure may capture the source it runs on; Spark pickles that
        # closure for the tasks, where a DataFrame cannot go. Tasks never use the source, so it
        # travels as an inert stand-in.
        return (_DriverOnly, ())

    def collect_schema(self) -> pl.Schema:
        """Column names and polars types, as each task sees them (time zones in UTC)."""
        return _polars_schema(self.frame.schema)

    def aggregate(self, agg: Aggregation) -> pl.DataFrame:
        """Run the summary in every task and merge the partials on the driver.

        A task runs ``agg.build`` on each chunk and merges the chunk partials, or, when the
        aggregation has the ``prepare``/``fold`` fast path, folds its prepared chunks, exactly as
        :class:`~shadowlab.engine.PolarsSource` does on one machine.
        """
        schema = self.collect_schema()
        fast = agg.prepare is not None and agg.fold is not None
        columns = _read_columns(agg.prepare if fast else agg.build, schema)  # type: ignore[arg-type]
        task = _aggregate_task(agg, columns, self.rows_per_chunk)
        blobs = _select(self.frame, columns).mapInArrow(task, _BLOB_DDL).collect()
        partials = [_unblob(row[0]) for row in blobs]
        if not partials:
            # No rows at all: the summary of an empty frame, exactly as the polars engine gives it.
            return PolarsSource(pl.LazyFrame(schema=schema)).aggregate(agg)
        return merge_partials(partials, agg)

    def pull(self, predicate: pl.Expr, columns: Sequence[str]) -> pl.DataFrame:
        """Rows matching the polars ``predicate``, only ``columns``; filtered inside the tasks."""
        schema = self.collect_schema()
        cols = list(columns)

        def query(lf: pl.LazyFrame) -> pl.LazyFrame:
            return lf.filter(predicate).select(cols)

        read = _read_columns(query, schema)
        empty = query(pl.LazyFrame(schema=schema)).collect()  # also checks the column names
        task = _pull_task(predicate, cols, read, self.rows_per_chunk)
        blobs = _select(self.frame, read).mapInArrow(task, _BLOB_DDL).collect()
        if not blobs:
            return empty
        return pl.concat([_unblob(row[0]) for row in blobs], how="vertical_relaxed")


def _quoted(name: str) -> Any:
    """A Spark column by its exact name (a dot in a context column's name is not a struct path)."""
    from pyspark.sql import functions as F

    return F.col("`" + name.replace("`", "``") + "`")


def _select(frame: Any, columns: Sequence[str]) -> Any:
    """``frame.select`` by exact names, renamed ``_0, _1, ...`` for the trip through Arrow.

    A dot in a context column's name is not a struct path (hence the backticks), and
    ``mapInArrow`` itself resolves its input columns by unquoted name, which fails on such names
    (pyspark 4.3); the tasks restore the real names (:func:`_to_polars`).
    """
    return frame.select(*[_quoted(c).alias(f"_{i}") for i, c in enumerate(columns)])


class _DriverOnly:
    """What a :class:`SparkSource` becomes when pickled into a task: unusable there."""

    engine = "spark"

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(
            f"SparkSource.{name} was called inside a Spark task; a source runs passes from the "
            "driver only. Build functions must not use the source they run on."
        )


def _polars_schema(spark_schema: Any) -> pl.Schema:
    """Spark StructType -> the polars schema a task sees after :func:`_to_polars`."""
    from pyspark.sql.pandas.types import to_arrow_schema

    try:
        arrow = to_arrow_schema(spark_schema, timezone="UTC")
    except TypeError:  # pyspark 3.5 has neither keyword; it always uses UTC
        arrow = to_arrow_schema(spark_schema)
    frame = pl.from_arrow(arrow.empty_table())
    assert isinstance(frame, pl.DataFrame)
    return _utc(frame).schema


# --------------------------------------------------------------------------------------------
# Session and readers.


def spark_session(
    master: str = "local[2]",
    *,
    app_name: str = "shadowlab",
    driver_memory: str | None = None,
    config: Mapping[str, str] | None = None,
) -> SparkSession:
    """Get or create a SparkSession with settings shadowlab relies on.

    Parameters
    ----------
    master : str, default 'local[2]'
        Spark master URL (``local[N]``, ``spark://host:7077``, ``yarn``, ...).
    app_name : str, default 'shadowlab'
        Application name shown in the Spark UI.
    driver_memory : str, optional
        ``spark.driver.memory`` (e.g. ``'4g'``); only takes effect when this call starts the JVM.
    config : mapping of str to str, optional
        Further Spark settings; they override the defaults below.

    Returns
    -------
    pyspark.sql.SparkSession

    Raises
    ------
    ModuleNotFoundError
        When pyspark is not installed.
    RuntimeError
        When no Java is found (neither ``JAVA_HOME`` nor ``java`` on ``PATH``).

    Notes
    -----
    Defaults: session time zone UTC (pair timestamps are UTC), Arrow enabled, Arrow batches of
    100 000 rows, 8 shuffle partitions (shadowlab's passes do not shuffle; the setting keeps
    ad-hoc queries on a laptop from starting 200 tasks), no console progress bar. For a
    ``local`` master the Python workers run this very interpreter (``PYSPARK_PYTHON`` is set
    to :data:`sys.executable`) and the driver binds to 127.0.0.1; on a cluster the executors'
    Python and network come from the cluster's own configuration and shadowlab must be
    installed there (see ``docs/scale-out.md``).
    """
    try:
        from pyspark.sql import SparkSession
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "The Spark engine needs pyspark: pip install 'shadowlab[spark]' (and Java 17+)."
        ) from exc
    if not os.environ.get("JAVA_HOME") and shutil.which("java") is None:
        raise RuntimeError(
            "The Spark engine needs Java 17+ and none was found (no JAVA_HOME, no java on PATH). "
            "Install it (Debian/Ubuntu: apt-get install openjdk-17-jre-headless) or set JAVA_HOME."
        )
    settings: dict[str, str] = {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": "100000",
        "spark.sql.shuffle.partitions": "8",
        "spark.ui.showConsoleProgress": "false",
    }
    if master.startswith("local"):
        os.environ["PYSPARK_PYTHON"] = sys.executable
        os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        settings.update(
            {
                "spark.pyspark.python": sys.executable,
                "spark.driver.host": "127.0.0.1",
                "spark.driver.bindAddress": "127.0.0.1",
                "spark.ui.enabled": "false",
            }
        )
    if driver_memory is not None:
        settings["spark.driver.memory"] = driver_memory
    settings.update(config or {})
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


_SPARK_TYPES = {
    # polars schema type -> (Spark SQL cast type, its typeName, typeNames accepted and cast)
    "String": ("string", "string", {"string", "varchar", "char"}),
    "Float64": ("double", "double", {"double", "float", "decimal"}),
    "Boolean": ("boolean", "boolean", {"boolean"}),
    "Int8": ("tinyint", "byte", {"byte", "short", "integer", "long"}),
    "Datetime": ("timestamp", "timestamp", {"timestamp"}),
}


def _spark_kind(field: Any) -> str:
    return field.dataType.typeName().split("(")[0]


def _conform(frame: Any, required: Mapping[str, pl.DataType], what: str, where: str) -> Any:
    """Check the required columns (as :func:`shadowlab.logs.scan_pairs` does) and cast them."""
    from pyspark.sql import functions as F

    from shadowlab.logs import LogValidationError

    fields = {f.name: f for f in frame.schema.fields}
    casts = {}
    for name, dtype in required.items():
        if name not in fields:
            near = difflib.get_close_matches(name, list(fields), n=1, cutoff=0.5)
            hint = f" Did you mean {near[0]!r}? Rename it to {name!r}." if near else ""
            raise LogValidationError(
                f"{what} at {where} have no column {name!r}.{hint} Existing columns: "
                f"{list(fields)}. Fix: write the files with shadowlab.schema's {what.lower()} "
                "schema (PairLogWriter does) or add the column."
            )
        target, target_name, accepted = _SPARK_TYPES[type(dtype).__name__]
        kind = _spark_kind(fields[name])
        if kind == "timestamp_ntz":
            raise LogValidationError(
                f"{what} at {where}: column {name!r} holds naive timestamps (no time zone), so "
                "their instant is ambiguous. Fix: write them as UTC-adjusted timestamps "
                f"(pl.col({name!r}).dt.replace_time_zone('UTC') before writing)."
            )
        if kind == "void" and name in _NULL_OK:
            casts[name] = F.col(name).cast(target)
            continue
        if kind not in accepted:
            raise LogValidationError(
                f"{what} at {where}: column {name!r} has Spark type "
                f"{fields[name].dataType.simpleString()}, expected {dtype}. Fix: rewrite it "
                "with the type of shadowlab.schema."
            )
        if kind != target_name:
            casts[name] = F.col(name).cast(target)
    return frame.withColumns(casts) if casts else frame


_NULL_OK = {S.PRIMARY_SCORE, S.CANDIDATE_SCORE, S.PRIMARY_ERROR, S.CANDIDATE_ERROR}


def _nonfinite(frame: Any) -> Any:
    """NaN/inf scores -> null with a ``NonFiniteScore`` error, exactly as ``scan_pairs`` does."""
    from pyspark.sql import functions as F

    from shadowlab.logs import NONFINITE_ERROR

    out = {}
    pairs = ((S.PRIMARY_SCORE, S.PRIMARY_ERROR), (S.CANDIDATE_SCORE, S.CANDIDATE_ERROR))
    for score, error in pairs:
        s = F.col(score)
        inf = (s == F.lit(float("inf"))) | (s == F.lit(float("-inf")))
        bad = F.isnan(s) | inf
        text = (
            F.when(F.isnan(s), F.lit(f"{NONFINITE_ERROR}: nan"))
            .when(s > 0, F.lit(f"{NONFINITE_ERROR}: inf"))
            .otherwise(F.lit(f"{NONFINITE_ERROR}: -inf"))
        )
        out[score] = F.when(bad, F.lit(None).cast("double")).otherwise(s)
        out[error] = F.when(bad & F.col(error).isNull(), text).otherwise(F.col(error))
    return frame.withColumns(out)


def _load(spark: SparkSession, path: Any, what: str) -> tuple[Any, str]:
    paths = [os.fspath(p) for p in path] if isinstance(path, list | tuple) else [os.fspath(path)]
    where = ", ".join(repr(p) for p in paths[:3]) + (" …" if len(paths) > 3 else "")
    if not paths:
        raise ValueError(f"read_{what.lower()} got an empty list of paths; pass a directory.")
    reader = spark.read.option("recursiveFileLookup", "true").option("pathGlobFilter", "*.parquet")
    try:
        frame = reader.parquet(*paths)
    except Exception as exc:
        text = str(exc)
        if "PATH_NOT_FOUND" in text or "does not exist" in text:
            raise FileNotFoundError(f"{what} source {where} does not exist.") from exc
        if "UNABLE_TO_INFER_SCHEMA" in text:
            from shadowlab.logs import LogValidationError

            raise LogValidationError(
                f"Empty source: no Parquet files found in {where}. Fix: point at the directory "
                "the PairLogWriter wrote (it holds date=YYYY-MM-DD/ folders)."
            ) from exc
        raise
    return frame, where


def read_pairs(
    spark: SparkSession, path: str | os.PathLike[str] | Sequence[Any], *, check_ids: bool = True
) -> DataFrame:
    """Read pair logs (``pairs/date=YYYY-MM-DD/part-*.parquet``) as a Spark DataFrame.

    The Spark counterpart of :func:`shadowlab.logs.scan_pairs`: the same columns, types and
    checks, so every analysis gives the same result on either.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
        From :func:`spark_session` or the cluster's own session.
    path : str, path-like or list of them
        The ``pairs`` directory, searched recursively for ``*.parquet`` (any URI Spark reads:
        local, ``s3a://``, ``abfss://``, ``dbfs:/``), or a list of directories or files.
    check_ids : bool, default True
        Check for null and duplicate ``request_id`` values (one distinct-count job, see Notes).
        ``False`` skips only that check (the model-id checks still run, without the shuffle),
        for lakes whose writer already guarantees one row per request.

    Returns
    -------
    pyspark.sql.DataFrame
        The columns of :data:`shadowlab.schema.PAIR_SCHEMA` with their exact types, then the
        context columns. As with ``scan_pairs``, the hive ``date`` folder is not a column
        (derive days from ``ts``), and NaN or infinite scores are null with
        ``"NonFiniteScore: nan"`` (or ``inf``) in the model's error column.

    Raises
    ------
    shadowlab.logs.LogValidationError
        Missing column (naming the nearest one), wrong type, naive timestamps, model ids that
        are null or change across the week, and null or duplicate ``request_id`` values.
    FileNotFoundError
        When nothing exists at ``path``.

    Notes
    -----
    Schema checks read the Parquet footers only. The id and model checks are one Spark job
    over ``request_id``, ``primary_model`` and ``candidate_model`` (a distinct count of 64-bit
    id hashes, i.e. one shuffle of 8 bytes per row; the exact count of the id strings runs only
    when hashes repeat); at a billion rows that is the costliest part of reading, and it runs
    before any analysis so that a double-logged partition cannot double count pairs. Unlike
    ``scan_pairs`` there is no ``duplicates='keep-first'``: Spark has no file order to keep
    first by; deduplicate upstream.
    """
    from pyspark.sql import functions as F

    from shadowlab.logs import LogValidationError

    frame, where = _load(spark, path, "Pair-log")
    frame = _nonfinite(_conform(frame, S.PAIR_SCHEMA, "Pair logs", where))
    order = list(S.PAIR_SCHEMA) + [c for c in frame.columns if c not in S.PAIR_SCHEMA]
    frame = frame.select(*[_quoted(c) for c in order])
    if not isinstance(check_ids, bool):
        raise ValueError(
            f"The 'check_ids' parameter of read_pairs must be a bool. Got {check_ids!r} instead."
        )
    rid = F.col(S.REQUEST_ID)
    # As scan_pairs: distinct 64-bit hashes first (8-byte keys shuffle far cheaper than the id
    # strings); all distinct proves no duplicates, and only otherwise the exact count runs.
    hashed = F.when(rid.isNotNull(), F.xxhash64(rid))
    row = frame.agg(
        F.count(F.lit(1)).alias("n"),
        F.count(rid).alias("ids"),
        (F.countDistinct(hashed) if check_ids else F.count(rid)).alias("distinct"),
        F.collect_set(S.PRIMARY_MODEL).alias("primary"),
        F.collect_set(S.CANDIDATE_MODEL).alias("candidate"),
        F.count(
            F.when(F.col(S.PRIMARY_MODEL).isNull() | F.col(S.CANDIDATE_MODEL).isNull(), 1)
        ).alias("null_models"),
    ).first()
    n, ids, distinct = int(row["n"]), int(row["ids"]), int(row["distinct"])
    if distinct < ids:  # a hash collision or a real duplicate: count exactly
        distinct = int(frame.agg(F.countDistinct(rid)).first()[0])
    if row["null_models"]:
        raise LogValidationError(
            f"Pair logs at {where}: {row['null_models']} rows have a null model id. Fix: every "
            "row must name the model (e.g. 'fraud:1.0.0'); re-export those files."
        )
    for column in (S.PRIMARY, S.CANDIDATE):
        values = sorted(row[column])
        if len(values) > 1:
            raise LogValidationError(
                f"Model ids change within the pair logs at {where}: column "
                f"{column + '_model'!r} holds {values[:5]}. One shadow comparison is one model "
                "pair. Fix: read each model pair's files separately."
            )
    if check_ids and ids < n:
        raise LogValidationError(
            f"Pair-log column {S.REQUEST_ID!r} has {n - ids} null values out of {n} rows (at "
            f"{where}). Every request needs an id to join labels. Fix: repair the logger or "
            "drop those rows upstream."
        )
    if distinct < ids:
        raise LogValidationError(
            f"Pair-log column {S.REQUEST_ID!r} has {ids - distinct} duplicate rows out of {n} "
            f"(at {where}). A request must be logged once, or the two models' pairs are double "
            "counted. Fix: remove the repeated files (a re-run or a copied partition?)."
        )
    return frame


def read_labels(spark: SparkSession, path: str | os.PathLike[str] | Sequence[Any]) -> DataFrame:
    """Read label files as a Spark DataFrame, checked like :func:`shadowlab.logs.scan_labels`.

    Same parameters as :func:`read_pairs`. Returns the columns of
    :data:`shadowlab.schema.LABEL_SCHEMA` with their exact types, then any further columns;
    raises :class:`shadowlab.logs.LogValidationError` for a missing column, a wrong type, naive
    ``label_ts``, null request ids or a label outside {0, 1}.
    """
    from pyspark.sql import functions as F

    from shadowlab.logs import LogValidationError

    frame, where = _load(spark, path, "Label")
    frame = _conform(frame, S.LABEL_SCHEMA, "Labels", where)
    order = list(S.LABEL_SCHEMA) + [c for c in frame.columns if c not in S.LABEL_SCHEMA]
    frame = frame.select(*[_quoted(c) for c in order])
    label = F.col(S.LABEL)
    row = frame.agg(
        F.count(F.when(F.col(S.REQUEST_ID).isNull(), 1)).alias("null_ids"),
        F.collect_set(F.when(label.isNull() | ~label.isin(0, 1), label.cast("string"))).alias(
            "bad"
        ),
        F.count(F.when(label.isNull(), 1)).alias("null_labels"),
    ).first()
    if row["null_ids"]:
        raise LogValidationError(
            f"Label column {S.REQUEST_ID!r} has {row['null_ids']} null values (at {where}). Fix: "
            "a label must name the request it belongs to; drop or repair those rows."
        )
    bad = sorted(row["bad"]) + (["null"] if row["null_labels"] else [])
    if bad:
        raise LogValidationError(
            f"Labels at {where}: column {S.LABEL!r} holds {bad[:5]}, expected 0 or 1 with no "
            "nulls. Fix: map the outcome to 1 = fraud, 0 = legitimate and drop unlabelled rows."
        )
    return frame


def collect_labels(frame: DataFrame) -> pl.DataFrame:
    """Bring a Spark label table to the driver as a polars frame in the label schema.

    Labels are a few percent of a week (reviews of flagged requests, the audit slice,
    chargebacks), and the label-based analyses (:func:`shadowlab.feedback.feedback_diagnostics`,
    the gate's accuracy checks) join them into their summaries as a small in-memory table, so
    they take a polars frame. This is one Spark job that moves every label row (its four schema
    columns) to the driver; at 3 % of a billion pairs that is about 30 M rows, ~1.5 GB.

    Parameters
    ----------
    frame : pyspark.sql.DataFrame
        From :func:`read_labels`.

    Returns
    -------
    polars.DataFrame
        Columns of :data:`shadowlab.schema.LABEL_SCHEMA`, sorted by ``request_id`` and
        ``label_ts`` (Spark returns rows in partition order; the sort makes the result
        deterministic).
    """
    columns = list(S.LABEL_SCHEMA)
    rows = SparkSource(frame).pull(pl.lit(True), columns)
    return rows.sort(S.REQUEST_ID, S.LABEL_TS, maintain_order=True)
