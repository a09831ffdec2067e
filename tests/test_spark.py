"""The Spark engine gives what the polars engine gives, on real Parquet weeks in local mode.

Every test compares :class:`SparkSource` (``local[2]``, several tasks per pass) with
:class:`PolarsSource` over the same files: the reference is the polars engine itself, so a
summary that merges wrongly across tasks, a dropped column or a time-zone shift shows up as a
difference. Skipped only when pyspark or Java is missing (``make test`` installs both).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shadowlab import schema as S
from shadowlab.engine import Aggregation, PolarsSource, as_source

pytest.importorskip("pyspark", reason="pyspark is not installed: pip install 'shadowlab[spark]'")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("Java is not installed (Spark needs a JDK 17+)", allow_module_level=True)

import sys

from conftest import WEEK_START, make_labels, make_pairs
from pyspark import cloudpickle

from shadowlab.engines.spark import (
    SparkSource,
    _read_columns,
    read_labels,
    read_pairs,
    spark_session,
)
from shadowlab.logs import LogValidationError, scan_labels, scan_pairs

pytestmark = pytest.mark.spark

# The summaries below live in this test module, which Spark's Python workers cannot import:
# ship them by value (functions of installed modules, like shadowlab's, go by reference).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROWS = 36_000
COUNTRIES = ["de", "fr", "us"]


@pytest.fixture(scope="session")
def spark():
    session = spark_session(
        "local[2]",
        # Small files into many tasks, so that every pass really merges several partials.
        config={
            "spark.sql.files.maxPartitionBytes": "256k",
            "spark.sql.files.openCostInBytes": "1",
            "spark.default.parallelism": "2",
        },
    )
    yield session
    session.stop()


def _write_days(frame: pl.DataFrame, root: Path, files_per_day: int = 2) -> None:
    """Hive layout pairs/date=YYYY-MM-DD/part-*.parquet, as PairLogWriter writes it."""
    day = pl.col(S.TS).dt.date().alias("date")
    for (date,), part in frame.with_columns(day).partition_by("date", as_dict=True).items():
        folder = root / f"date={date}"
        folder.mkdir(parents=True)
        table = part.drop("date").to_arrow()
        table = table.cast(S.arrow_pair_schema({"country": pa.string()}))
        for i, piece in enumerate(np.array_split(np.arange(table.num_rows), files_per_day)):
            pq.write_table(table.take(piece), folder / f"part-{i:05d}.parquet")


@pytest.fixture(scope="session")
def week(tmp_path_factory) -> Path:
    rng = np.random.default_rng(20261125)
    primary = rng.beta(2, 5, ROWS)
    candidate = np.clip(primary + rng.normal(0.03, 0.05, ROWS), 0, 1)
    primary[::101] = np.nan  # failures: null score with an error message
    candidate[::89] = np.nan
    root = tmp_path_factory.mktemp("spark-week")
    frame = make_pairs(
        primary,
        candidate,
        seconds=np.sort(rng.uniform(0, 7 * 86400 - 1, ROWS)),
        audit=rng.random(ROWS) < 0.03,
        audit_rate=0.03,
        served=np.where(rng.random(ROWS) < 0.05, S.CANDIDATE, S.PRIMARY).tolist(),
        country=rng.choice(COUNTRIES, ROWS).tolist(),
    )
    _write_days(frame, root / "pairs")
    flagged = frame.filter(pl.col(S.PRIMARY_SCORE) > 0.5)[S.REQUEST_ID].to_list()
    labels = make_labels(flagged, rng.integers(0, 2, len(flagged)).tolist(), delay_hours=3.0)
    (root / "labels").mkdir()
    pq.write_table(labels.to_arrow().cast(S.arrow_label_schema()), root / "labels" / "l.parquet")
    return root


@pytest.fixture(scope="session")
def spark_pairs(spark, week):
    return read_pairs(spark, week / "pairs").cache()


@pytest.fixture(scope="session")
def polars_pairs(week) -> pl.LazyFrame:
    return scan_pairs(week / "pairs")


def _day() -> pl.Expr:
    return pl.col(S.TS).dt.date().alias("day")


def _bin(column: str, bins: int = 4096) -> pl.Expr:
    return (pl.col(column) * bins).floor().cast(pl.Int32).clip(0, bins - 1).alias("bin")


AGGREGATIONS = {
    "counts by key": Aggregation(
        lambda lf: lf.group_by(S.SERVED, "country", _day()).agg(
            pl.len().alias("n"), pl.col(S.AUDIT).sum().alias("audited")
        ),
        keys=(S.SERVED, "country", "day"),
        reduce={"n": "sum", "audited": "sum"},
    ),
    "fine histogram": Aggregation(
        lambda lf: (
            lf.select(_day(), _bin(S.CANDIDATE_SCORE))
            .drop_nulls()
            .group_by("day", "bin")
            .agg(pl.len().alias("n"))
        ),
        keys=("day", "bin"),
        reduce={"n": "sum"},
    ),
    "hourly trigger counts": Aggregation(
        lambda lf: lf.group_by(pl.col(S.TS).dt.truncate("1h").alias("hour")).agg(
            (pl.col(S.PRIMARY_SCORE) >= 0.5).sum().alias("v1"),
            (pl.col(S.CANDIDATE_SCORE) >= 0.5).sum().alias("v2"),
            pl.col(S.PRIMARY_ERROR).is_not_null().sum().alias("v1_failed"),
        ),
        keys=("hour",),
        reduce={"v1": "sum", "v2": "sum", "v1_failed": "sum"},
    ),
    "min and max": Aggregation(
        lambda lf: lf.select(
            pl.col(S.PRIMARY_SCORE).min().alias("p_min"),
            pl.col(S.PRIMARY_SCORE).max().alias("p_max"),
            pl.col(S.CANDIDATE_SCORE).min().alias("c_min"),
            pl.col(S.TS).min().alias("first"),
            pl.col(S.TS).max().alias("last"),
            pl.len().alias("rows"),
        ),
        reduce={
            "p_min": "min",
            "p_max": "max",
            "c_min": "min",
            "first": "min",
            "last": "max",
            "rows": "sum",
        },
    ),
}


@pytest.mark.parametrize("name", list(AGGREGATIONS))
@pytest.mark.parametrize("rows_per_chunk", [1_000_000, 1_500])
def test_aggregate_equals_polars(name, rows_per_chunk, spark_pairs, polars_pairs):
    agg = AGGREGATIONS[name]
    got = SparkSource(spark_pairs, rows_per_chunk=rows_per_chunk).aggregate(agg)
    want = PolarsSource(polars_pairs).aggregate(agg)
    assert want.height > 0
    assert got.schema == want.schema
    assert got.equals(want)


def test_several_tasks_really_merge(spark_pairs):
    # Guards the test set-up itself: one task would make every parity test above trivial.
    assert spark_pairs.rdd.getNumPartitions() >= 4


def test_week_totals_are_the_rows_written(spark_pairs):
    got = SparkSource(spark_pairs).aggregate(AGGREGATIONS["min and max"])
    assert got["rows"].item() == ROWS
    assert WEEK_START <= got["first"].item() < WEEK_START + dt.timedelta(minutes=5)


def test_float_sums_within_rounding(spark_pairs, polars_pairs):
    agg = Aggregation(
        lambda lf: lf.group_by("country").agg(pl.col(S.CANDIDATE_SCORE).sum().alias("s")),
        keys=("country",),
        reduce={"s": "sum"},
    )
    got = SparkSource(spark_pairs).aggregate(agg)
    want = PolarsSource(polars_pairs).aggregate(agg)
    assert got["country"].to_list() == want["country"].to_list() == COUNTRIES
    np.testing.assert_allclose(got["s"].to_numpy(), want["s"].to_numpy(), rtol=1e-12)


def test_empty_frame_gives_the_polars_empty_summary(spark_pairs, polars_pairs):
    none = pl.lit(False)
    for agg in AGGREGATIONS.values():
        got = SparkSource(spark_pairs.limit(0)).aggregate(agg)
        want = PolarsSource(polars_pairs.filter(none)).aggregate(agg)
        assert got.equals(want)
    assert SparkSource(spark_pairs.limit(0)).aggregate(AGGREGATIONS["min and max"])[
        "rows"
    ].to_list() == [0]


def test_session_time_zone_does_not_shift_days(spark, spark_pairs, polars_pairs):
    # Spark hands timestamps to Arrow in the session zone; tasks convert back to UTC.
    agg = AGGREGATIONS["hourly trigger counts"]
    want = PolarsSource(polars_pairs).aggregate(agg)
    before = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "Pacific/Kiritimati")  # UTC+14
    try:
        got = SparkSource(spark_pairs).aggregate(agg)
    finally:
        spark.conf.set("spark.sql.session.timeZone", before)
    assert got.equals(want)


def test_pull_equals_polars_filter(spark_pairs, polars_pairs):
    predicate = pl.col(S.CANDIDATE_SCORE).is_between(0.30, 0.31) | (
        pl.col(S.AUDIT) & pl.col(S.PRIMARY_SCORE).is_null()
    )
    columns = [S.REQUEST_ID, S.CANDIDATE_SCORE, S.TS]
    got = SparkSource(spark_pairs, rows_per_chunk=2_000).pull(predicate, columns)
    want = PolarsSource(polars_pairs).pull(predicate, columns)
    assert 100 < want.height < 2_000
    assert got.schema == want.schema
    assert got.sort(S.REQUEST_ID).equals(want.sort(S.REQUEST_ID))


def test_pull_without_matches_is_an_empty_typed_frame(spark_pairs, polars_pairs):
    predicate = pl.col(S.PRIMARY_SCORE) > 2
    got = SparkSource(spark_pairs).pull(predicate, [S.REQUEST_ID, S.PRIMARY_SCORE])
    want = PolarsSource(polars_pairs).pull(predicate, [S.REQUEST_ID, S.PRIMARY_SCORE])
    assert got.height == 0
    assert got.schema == want.schema


def test_collect_schema_equals_scan_pairs(spark_pairs, polars_pairs):
    assert SparkSource(spark_pairs).collect_schema() == polars_pairs.collect_schema()


def test_as_source_dispatches_a_spark_frame(spark_pairs):
    source = as_source(spark_pairs)
    assert isinstance(source, SparkSource)
    assert source.engine == "spark"


def test_only_the_columns_a_summary_reads_are_selected():
    schema = pl.Schema(S.PAIR_SCHEMA)
    assert _read_columns(AGGREGATIONS["fine histogram"].build, schema) == [
        S.TS,
        S.CANDIDATE_SCORE,
    ]
    assert _read_columns(lambda lf: lf.select(pl.len()), schema) != []
    # A query polars cannot prune (it reads every column) keeps them all.
    everything = _read_columns(lambda lf: lf.select(pl.all().null_count()), schema)
    assert everything == list(schema)


def test_nonfinite_scores_become_failures_as_in_scan_pairs(spark, tmp_path):
    frame = make_pairs([0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8])
    table = frame.to_arrow().cast(S.arrow_pair_schema())
    scores = pa.array([0.1, float("nan"), float("inf"), 0.4])
    table = table.set_column(table.schema.get_field_index(S.PRIMARY_SCORE), S.PRIMARY_SCORE, scores)
    (tmp_path / "date=2026-11-02").mkdir()
    pq.write_table(table, tmp_path / "date=2026-11-02" / "part-0.parquet")
    cols = [S.REQUEST_ID, S.PRIMARY_SCORE, S.PRIMARY_ERROR]
    got = SparkSource(read_pairs(spark, tmp_path)).pull(pl.lit(True), cols).sort(S.REQUEST_ID)
    want = scan_pairs(tmp_path).select(cols).collect().sort(S.REQUEST_ID)
    assert got.equals(want)
    assert got[S.PRIMARY_ERROR].to_list()[1:3] == ["NonFiniteScore: nan", "NonFiniteScore: inf"]


def test_read_pairs_names_a_missing_column_and_its_nearest(spark, tmp_path):
    frame = make_pairs([0.1], [0.2]).rename({S.CANDIDATE_SCORE: "candidate_scores"})
    frame.write_parquet(tmp_path / "part-0.parquet")
    with pytest.raises(
        LogValidationError, match=r"no column 'candidate_score'.*'candidate_scores'"
    ):
        read_pairs(spark, tmp_path)


def test_read_pairs_rejects_a_wrong_type_and_naive_timestamps(spark, tmp_path):
    bad = make_pairs([0.1], [0.2]).with_columns(pl.col(S.PRIMARY_SCORE).cast(pl.String))
    bad.write_parquet(tmp_path / "a" / "part-0.parquet", mkdir=True)
    with pytest.raises(LogValidationError, match="'primary_score' has Spark type string"):
        read_pairs(spark, tmp_path / "a")
    naive = make_pairs([0.1], [0.2]).with_columns(pl.col(S.TS).dt.replace_time_zone(None))
    naive.write_parquet(tmp_path / "b" / "part-0.parquet", mkdir=True)
    with pytest.raises(LogValidationError, match="naive timestamps"):
        read_pairs(spark, tmp_path / "b")


def test_read_pairs_rejects_duplicate_ids_and_changing_models(spark, tmp_path):
    dup = make_pairs([0.1, 0.2], [0.3, 0.4], request_ids=["r1", "r1"])
    dup.write_parquet(tmp_path / "a" / "part-0.parquet", mkdir=True)
    with pytest.raises(LogValidationError, match="1 duplicate rows out of 2"):
        read_pairs(spark, tmp_path / "a")
    make_pairs([0.1], [0.2], request_ids=["x"]).write_parquet(
        tmp_path / "b" / "p0.parquet", mkdir=True
    )
    make_pairs([0.1], [0.2], request_ids=["y"], candidate_model="fraud:3.0.0").write_parquet(
        tmp_path / "b" / "p1.parquet"
    )
    with pytest.raises(LogValidationError, match="Model ids change"):
        read_pairs(spark, tmp_path / "b")


def test_read_pairs_missing_path(spark, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_pairs(spark, tmp_path / "nowhere")


def test_read_labels_matches_scan_labels(spark, week):
    labels = read_labels(spark, week / "labels")
    agg = Aggregation(
        lambda lf: lf.group_by(S.LABEL, S.SOURCE).agg(
            pl.len().alias("n"), pl.col(S.LABEL_TS).max().alias("last")
        ),
        keys=(S.LABEL, S.SOURCE),
        reduce={"n": "sum", "last": "max"},
    )
    got = SparkSource(labels).aggregate(agg)
    assert got.equals(PolarsSource(scan_labels(week / "labels")).aggregate(agg))
    assert got["last"].max() == WEEK_START + dt.timedelta(hours=3)


def test_read_labels_rejects_a_label_outside_0_1(spark, tmp_path):
    labels = make_labels(["r1", "r2"], [0, 1]).with_columns(pl.Series(S.LABEL, [0, 2], pl.Int8))
    labels.write_parquet(tmp_path / "l.parquet")
    with pytest.raises(LogValidationError, match=r"holds \['2'\], expected 0 or 1"):
        read_labels(spark, tmp_path)


def test_rows_per_chunk_is_checked(spark_pairs):
    with pytest.raises(ValueError, match="The 'rows_per_chunk' parameter of SparkSource must be"):
        SparkSource(spark_pairs, rows_per_chunk=0)
