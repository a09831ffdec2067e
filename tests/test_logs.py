"""PairLogWriter and the validating readers: real files, real subprocesses."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from conftest import WEEK_START, make_labels, make_pairs

from shadowlab import schema as S
from shadowlab.cli import main as cli_main
from shadowlab.logs import (
    DuplicateRequestsWarning,
    LogValidationError,
    PairLogWriter,
    list_log_files,
    scan_labels,
    scan_pairs,
    summarize_logs,
)

HERE = Path(__file__).parent


def big_frame(n: int, *, start: int = 0, days: int = 7) -> pl.DataFrame:
    """A schema-conformant frame of ``n`` rows built without Python loops over rows."""
    i = pl.int_range(start, start + n, eager=True, dtype=pl.Int64)
    step_us = days * 86_400_000_000 // max(n, 1)
    rng = np.random.default_rng(7)
    start_us = int(WEEK_START.timestamp() * 1_000_000)
    return pl.DataFrame(
        {
            S.TS: (start_us + (i - start) * step_us).cast(pl.Datetime("us", "UTC")),
            S.REQUEST_ID: "r" + i.cast(pl.String),
            S.PRIMARY_MODEL: pl.repeat("fraud:1.0.0", n, eager=True),
            S.CANDIDATE_MODEL: pl.repeat("fraud:2.0.0", n, eager=True),
            S.SERVED: pl.Series(np.where(rng.random(n) < 0.1, S.CANDIDATE, S.PRIMARY)),
            S.TRAFFIC_PCT: pl.repeat(0.1, n, eager=True),
            S.PRIMARY_SCORE: rng.random(n),
            S.CANDIDATE_SCORE: rng.random(n),
            S.PRIMARY_ERROR: pl.repeat(None, n, eager=True, dtype=pl.String),
            S.CANDIDATE_ERROR: pl.repeat(None, n, eager=True, dtype=pl.String),
            S.PRIMARY_LATENCY: rng.random(n) * 5,
            S.CANDIDATE_LATENCY: rng.random(n) * 5,
            S.AUDIT: pl.Series(rng.random(n) < 0.01),
            S.AUDIT_RATE: pl.repeat(0.01, n, eager=True),
            "country": pl.Series(rng.choice(["DE", "FR", "US"], n)),
        }
    )


def write_file(frame: pl.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)
    return path


# ------------------------------------------------------------------------------------------
# Writer
# ------------------------------------------------------------------------------------------


def test_round_trip_partitions_metadata_and_context(tmp_path: Path) -> None:
    df = make_pairs([0.1, 0.2, 0.3], [0.4, 0.5, 0.6], seconds=[10, 86_400 + 5, 86_400 + 9],
                    country=["DE", "FR", "US"])  # fmt: skip
    with PairLogWriter(tmp_path, max_rows=1_000) as log:
        log.write_batch(df.head(2))
        log.write(df.row(2, named=True))
        assert log.buffered == 3
        assert list(tmp_path.rglob("*.parquet")) == []  # nothing visible before a flush
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert [f.split("/")[0] for f in files] == ["date=2026-11-02", "date=2026-11-03"]
    assert all(f.split("/")[1].startswith("part-") for f in files)
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    for f in tmp_path.rglob("*.parquet"):
        meta = pq.ParquetFile(f).schema_arrow.metadata
        assert meta[S.METADATA_KEY] == b"1"
    out = scan_pairs(tmp_path).collect().sort(S.REQUEST_ID)
    assert out.columns == [*S.PAIR_SCHEMA, "country"]
    assert out.equals(df.sort(S.REQUEST_ID))


def test_writer_parquet_layout_codecs_and_encodings(tmp_path: Path) -> None:
    # parquet_write_options: LZ4 for the float columns (read 2.5x faster than zstd), delta + LZ4
    # for timestamps, zstd for strings, dictionaries for repetitive strings and bools only.
    df = make_pairs([0.1, 0.2, 0.3], [0.4, 0.5, 0.6], seconds=[1, 2, 3], country=["DE", "FR", "US"])
    with PairLogWriter(tmp_path) as log:
        log.write_batch(df)
    (f,) = tmp_path.rglob("*.parquet")
    rg = pq.ParquetFile(f).metadata.row_group(0)
    chunks = {rg.column(i).path_in_schema: rg.column(i) for i in range(rg.num_columns)}
    codec = {name: c.compression for name, c in chunks.items()}
    floats = [S.PRIMARY_SCORE, S.CANDIDATE_SCORE, S.PRIMARY_LATENCY, S.CANDIDATE_LATENCY]
    assert {codec[c] for c in floats} == {"LZ4"}  # pyarrow's name of LZ4_RAW
    assert codec[S.TS] == "LZ4" and "DELTA_BINARY_PACKED" in chunks[S.TS].encodings
    assert codec[S.REQUEST_ID] == codec["country"] == codec[S.SERVED] == "ZSTD"
    assert "RLE_DICTIONARY" in chunks["country"].encodings
    assert "RLE_DICTIONARY" not in chunks[S.REQUEST_ID].encodings
    assert "RLE_DICTIONARY" not in chunks[S.PRIMARY_SCORE].encodings
    assert scan_pairs(tmp_path).collect().equals(df)


def test_rows_out_of_day_order_are_partitioned(tmp_path: Path) -> None:
    df = make_pairs([0.1, 0.2, 0.3, 0.4], [0.5] * 4, seconds=[86_400, 5, 86_401, 6])
    with PairLogWriter(tmp_path) as log:
        log.write_batch(df)
    by_day = {p.parent.name: pq.read_table(p)[S.REQUEST_ID].to_pylist()
              for p in tmp_path.rglob("*.parquet")}  # fmt: skip
    assert by_day == {"date=2026-11-02": ["r1", "r3"], "date=2026-11-03": ["r0", "r2"]}


def test_flush_by_row_count(tmp_path: Path) -> None:
    df = big_frame(250, days=1)
    log = PairLogWriter(tmp_path, max_rows=100, max_seconds=3600)
    for k in range(0, 250, 50):
        log.write_batch(df.slice(k, 50))
    assert log.rows_flushed == 200 and log.buffered == 50
    assert scan_pairs(tmp_path).select(pl.len()).collect().item() == 200
    log.close()
    assert log.rows_flushed == 250
    with pytest.raises(ValueError, match="closed"):
        log.write_batch(df)


def test_flush_by_seconds_without_further_writes(tmp_path: Path) -> None:
    with PairLogWriter(tmp_path, max_rows=10_000, max_seconds=0.2) as log:
        log.write_batch(big_frame(5, days=1))
        deadline = time.monotonic() + 20
        while log.rows_flushed < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert log.rows_flushed == 5  # the background flusher wrote it, nobody called flush()
        assert scan_pairs(tmp_path).select(pl.len()).collect().item() == 5


def test_flush_at_interpreter_exit(tmp_path: Path) -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[2]);"
        "from _writer_child import frame; from shadowlab.logs import PairLogWriter;"
        "w = PairLogWriter(sys.argv[1], max_rows=10_000, max_seconds=3600);"
        "w.write_batch(frame(0, 123))"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path), str(HERE)], check=True, timeout=60)
    assert scan_pairs(tmp_path).select(pl.len()).collect().item() == 123


def test_sigkill_loses_only_the_unflushed_buffer(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, str(HERE / "_writer_child.py"), str(tmp_path), "block"],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            report = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert report == {"flushed": 3_000, "buffered": 500}
    for f in list_log_files(tmp_path):
        pq.read_table(f)  # every visible file is complete
    out = scan_pairs(tmp_path).collect()
    assert out.height == report["flushed"]
    assert set(out[S.REQUEST_ID]) == {f"req-{k}" for k in range(3_000)}


def test_sigkill_mid_stream_leaves_only_complete_files(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, str(HERE / "_writer_child.py"), str(tmp_path), "stream"],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            seen = [int(proc.stdout.readline()) for _ in range(6)]  # type: ignore[union-attr]
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    files = list_log_files(tmp_path)
    rows = sum(pq.read_table(f).num_rows for f in files)  # raises on any partial file
    # Each flush is one file of exactly 250 rows; the process may have finished a few more
    # flushes between its last report and the kill, never a partial one.
    assert rows % 250 == 0 and rows >= seen[-1] >= 1_000
    assert rows == 250 * len(files)
    out = scan_pairs(tmp_path).collect()
    assert out.height == rows
    assert set(out[S.REQUEST_ID]) == {f"req-{k}" for k in range(rows)}


def test_writer_threads(tmp_path: Path) -> None:
    import threading

    df = big_frame(4_000, days=2)
    with PairLogWriter(tmp_path, max_rows=333) as log:
        chunks = [df.slice(k, 1_000) for k in range(0, 4_000, 1_000)]

        def work(chunk: pl.DataFrame) -> None:
            for row in chunk.head(200).iter_rows(named=True):
                log.write(row)
            log.write_batch(chunk.slice(200))

        threads = [threading.Thread(target=work, args=(c,)) for c in chunks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    out = scan_pairs(tmp_path).collect()
    assert out.height == 4_000
    assert out.sort(S.REQUEST_ID).equals(df.sort(S.REQUEST_ID))


def test_writer_rejects_bad_batches_and_parameters(tmp_path: Path) -> None:
    with PairLogWriter(tmp_path) as log:
        with pytest.raises(ValueError, match=r"lack column\(s\) \['audit_rate'\]"):
            log.write_batch(make_pairs([0.1], [0.2]).drop(S.AUDIT_RATE))
        naive = make_pairs([0.1], [0.2]).with_columns(pl.col(S.TS).dt.replace_time_zone(None))
        with pytest.raises(ValueError, match="'ts' holds naive timestamps"):
            log.write_batch(naive)
        with pytest.raises(ValueError, match=r"row lacks column\(s\) \['served'\]"):
            log.write({k: v for k, v in make_pairs([0.1], [0.2]).row(0, named=True).items()
                       if k != S.SERVED})  # fmt: skip
        no_ts = make_pairs([0.1], [0.2]).with_columns(
            pl.lit(None, pl.Datetime("us", "UTC")).alias(S.TS)
        )
        with pytest.raises(ValueError, match="column 'ts' has 1 null values"):
            log.write_batch(no_ts)
        log.write_batch(make_pairs([0.1], [0.2]).to_arrow())  # Arrow tables are accepted
    assert scan_pairs(tmp_path).collect().height == 1
    with pytest.raises(
        ValueError,
        match=r"The 'max_rows' parameter of PairLogWriter must be an int >= 1\. Got 0 instead\.",
    ):
        PairLogWriter(tmp_path, max_rows=0)
    with pytest.raises(ValueError, match="The 'max_seconds' parameter"):
        PairLogWriter(tmp_path, max_seconds=0)


def test_writer_id_names_files(tmp_path: Path) -> None:
    with PairLogWriter(tmp_path, writer_id="synth-7") as log:
        log.write_batch(make_pairs([0.1], [0.2]))
    assert [p.name for p in tmp_path.rglob("*.parquet")] == ["part-000000-synth-7.parquet"]
    with pytest.raises(ValueError, match="The 'writer_id' parameter of PairLogWriter must be"):
        PairLogWriter(tmp_path, writer_id="../x")


@pytest.mark.slow
def test_million_row_round_trip(tmp_path: Path) -> None:
    n = 1_000_000
    df = big_frame(n)
    with PairLogWriter(tmp_path, max_rows=400_000) as log:
        for k in range(0, n, 250_000):
            log.write_batch(df.slice(k, 250_000))
    assert log.rows_flushed == n
    pairs = scan_pairs(tmp_path)
    summary = summarize_logs(pairs)
    assert summary.rows == n and len(summary.days) == 7
    assert summary.served_candidate == int((df[S.SERVED] == S.CANDIDATE).sum())
    assert summary.audit_rows == int(df[S.AUDIT].sum())
    back = pairs.collect()
    assert back.schema == df.schema
    # files are read in day order and rows within a day in write order: the frame comes back
    # exactly as written
    assert back.equals(df)


# ------------------------------------------------------------------------------------------
# Sources
# ------------------------------------------------------------------------------------------


def test_sources_dir_glob_file_list_and_temp_files_skipped(tmp_path: Path) -> None:
    a = write_file(
        make_pairs([0.1], [0.2], request_ids=["a"]), tmp_path / "d" / "date=1" / "a.parquet"
    )
    b = write_file(
        make_pairs([0.3], [0.4], request_ids=["b"]), tmp_path / "d" / "date=2" / "b.parquet"
    )
    (tmp_path / "d" / "date=2" / ".part-000009-x.parquet.tmp").write_bytes(b"PAR1 half a file")
    (tmp_path / "d" / "_SUCCESS").write_text("")
    (tmp_path / "d" / "manifest.json").write_text("{}")

    def ids(src: object) -> list[str]:
        return scan_pairs(src).collect()[S.REQUEST_ID].sort().to_list()  # type: ignore[arg-type]

    assert ids(tmp_path / "d") == ["a", "b"]
    assert ids(str(tmp_path / "d" / "**" / "*.parquet")) == ["a", "b"]
    assert ids(str(tmp_path / "d" / "**" / "*.parquet*")) == ["a", "b"]  # glob skips .tmp
    assert ids(a) == ["a"]
    assert ids([a, b]) == ["a", "b"]
    assert ids([tmp_path / "d", a]) == ["a", "b"]  # de-duplicated
    with pytest.raises(FileNotFoundError, match="does not exist"):
        scan_pairs(tmp_path / "nope")


def test_type_normalisation_float32_ns_and_other_zone(tmp_path: Path) -> None:
    df = make_pairs([0.25], [0.5], country=["DE"]).with_columns(
        pl.col(S.PRIMARY_SCORE).cast(pl.Float32),
        pl.col(S.TS).cast(pl.Datetime("ns", "UTC")).dt.convert_time_zone("Europe/Berlin"),
        pl.col(S.SERVED).cast(pl.Categorical),
    )
    write_file(df, tmp_path / "x.parquet")
    write_file(
        make_pairs([0.75], [0.5], request_ids=["q"], channel=["web"]), tmp_path / "y.parquet"
    )
    out = scan_pairs(tmp_path).collect().sort(S.REQUEST_ID)
    assert dict(list(out.schema.items())[: len(S.PAIR_SCHEMA)]) == S.PAIR_SCHEMA
    assert out[S.TS][0] == WEEK_START
    assert out[S.PRIMARY_SCORE].to_list() == [0.75, 0.25]
    assert out["country"].to_list() == [None, "DE"]  # context missing in a file -> null
    assert out["channel"].to_list() == ["web", None]


# ------------------------------------------------------------------------------------------
# One test per bad-input class: the message names the file and the column
# ------------------------------------------------------------------------------------------


def test_missing_column_lists_columns_and_nearest_name(tmp_path: Path) -> None:
    good = write_file(make_pairs([0.1], [0.2]), tmp_path / "date=1" / "ok.parquet")
    bad = write_file(
        make_pairs([0.1], [0.2], request_ids=["z"]).rename({S.PRIMARY_SCORE: "primary_scor"}),
        tmp_path / "date=2" / "bad.parquet",
    )
    with pytest.raises(LogValidationError) as err:
        scan_pairs([good, bad])
    msg = str(err.value)
    assert str(bad) in msg and "'primary_score'" in msg
    assert "Did you mean 'primary_scor'" in msg and "Existing columns" in msg


def test_wrong_type(tmp_path: Path) -> None:
    bad = write_file(
        make_pairs([0.1], [0.2]).with_columns(pl.col(S.CANDIDATE_SCORE).cast(pl.String)),
        tmp_path / "bad.parquet",
    )
    with pytest.raises(LogValidationError, match="expected Float64") as err:
        scan_pairs(bad)
    assert str(bad) in str(err.value) and "'candidate_score'" in str(err.value)
    assert "cast(pl.Float64)" in str(err.value)


def test_null_request_ids_counted(tmp_path: Path) -> None:
    df = make_pairs([0.1, 0.2, 0.3], [0.1, 0.2, 0.3]).with_columns(
        pl.when(pl.col(S.REQUEST_ID) != "r1").then(pl.col(S.REQUEST_ID)).alias(S.REQUEST_ID)
    )
    bad = write_file(df, tmp_path / "nulls.parquet")
    with pytest.raises(LogValidationError, match="has 1 null values out of 3 rows") as err:
        scan_pairs(bad)
    assert str(bad) in str(err.value) and "'request_id'" in str(err.value)
    with pytest.warns(DuplicateRequestsWarning, match="dropped 1 rows with a null"):
        out = scan_pairs(bad, duplicates="keep-first").collect()
    assert out[S.REQUEST_ID].to_list() == ["r0", "r2"]


@pytest.mark.parametrize("statistics", [True, False])
def test_null_timestamps_named(tmp_path: Path, statistics: bool) -> None:
    # A pair without its request time cannot be put in a day, window or queue; found from the
    # Parquet statistics (or by reading the column when a writer left them out).
    df = make_pairs([0.1, 0.2, 0.3], [0.1, 0.2, 0.3]).with_columns(
        pl.when(pl.col(S.REQUEST_ID) != "r2").then(pl.col(S.TS)).alias(S.TS)
    )
    bad = tmp_path / "date=1" / "nulls.parquet"
    bad.parent.mkdir(parents=True)
    pq.write_table(df.to_arrow(), bad, write_statistics=statistics)
    with pytest.raises(LogValidationError, match="has 1 null values out of 3 rows") as err:
        scan_pairs(bad)
    assert str(bad) in str(err.value) and "'ts'" in str(err.value)


def test_duplicate_request_ids_error_or_keep_first(tmp_path: Path) -> None:
    a = write_file(make_pairs([0.1, 0.2], [0.3, 0.4]), tmp_path / "date=1" / "a.parquet")
    b = write_file(make_pairs([0.9, 0.8], [0.7, 0.6], request_ids=["r1", "r5"]),
                   tmp_path / "date=2" / "b.parquet")  # fmt: skip
    with pytest.raises(LogValidationError, match="has 1 duplicate rows out of 4") as err:
        scan_pairs(tmp_path)
    msg = str(err.value)
    assert str(a) in msg and str(b) in msg and "'request_id'" in msg and "'r1'" in msg
    with pytest.warns(DuplicateRequestsWarning, match="1 repeated 'request_id' rows of 4"):
        out = scan_pairs(tmp_path, duplicates="keep-first").collect()
    assert out.sort(S.REQUEST_ID)[S.PRIMARY_SCORE].to_list() == [0.1, 0.2, 0.8]  # first r1 kept
    with pytest.raises(ValueError, match=r"The 'duplicates' parameter of scan_pairs must be"):
        scan_pairs(tmp_path, duplicates="last")  # type: ignore[arg-type]


@pytest.mark.parametrize("simd", [True, False], ids=["numpy-sort", "polars-sort"])
def test_id_facts_are_the_same_with_either_sort(tmp_path: Path, monkeypatch, simd) -> None:
    from shadowlab import logs

    monkeypatch.setattr(logs, "_simd_sort", lambda: simd)
    ids = [f"r{i}" for i in range(5000)] + ["r17", "r4999", None]
    p = np.linspace(0, 1, len(ids))
    path = write_file(make_pairs(p, p, request_ids=ids), tmp_path / "a.parquet")
    frame, _ = logs._scan_files([path], S.PAIR_SCHEMA, "Pair-log")
    assert logs._data_facts(frame) == logs._Facts(5003, 1, 2, 0)


@pytest.mark.parametrize("simd", [True, False], ids=["numpy-sort", "polars-sort"])
@pytest.mark.parametrize("parallel_min", [2, 1 << 20], ids=["two-threads", "one-sort"])
def test_sort_has_repeats_matches_numpy_unique(monkeypatch, simd, parallel_min) -> None:
    # The reference is np.unique: a repeat exists iff fewer unique values than values. The
    # cases put the repeated pair inside the lower half, inside the upper half and across the
    # median (where the two-thread path's partition splits), and include none at all.
    from shadowlab import logs

    monkeypatch.setattr(logs, "_simd_sort", lambda: simd)
    monkeypatch.setattr(logs, "_PARALLEL_SORT_MIN", parallel_min)
    rng = np.random.default_rng(7)
    for n in (0, 1, 2, 3, 10, 1001):
        base = np.unique(rng.integers(0, 1 << 63, size=2 * n, dtype=np.uint64))[:n]
        assert len(base) == n
        cases = [base]
        if n >= 2:
            order = np.sort(base)
            for v in (order[0], order[n // 2 - 1], order[n // 2], order[-1]):
                cases.append(np.append(base, v))  # v twice: low, at the median, high
        for values in cases:
            values = rng.permutation(values)
            expected = len(np.unique(values)) < len(values)
            got = logs._sort_has_repeats(values.copy())
            assert got is expected, (n, simd, parallel_min)


@pytest.mark.parametrize(
    "values",
    [
        [0.1, 0.2, 0.3],
        [0.1, float("nan"), 0.3],
        [float("inf"), 0.2, None],
        [float("-inf"), float("inf"), 0.5],  # the sum is NaN
        [1e308, 1e308, 0.5],  # finite scores whose sum overflows: counted, not assumed bad
        [None, None, None],
    ],
)
def test_nonfinite_count_matches_numpy(values) -> None:
    # Reference: numpy's ~isfinite over the non-null values of both columns.
    from shadowlab import logs

    frame = pl.LazyFrame(
        {S.PRIMARY_SCORE: values, S.CANDIDATE_SCORE: list(reversed(values))},
        schema={S.PRIMARY_SCORE: pl.Float64, S.CANDIDATE_SCORE: pl.Float64},
    )
    x = np.array([v for v in values if v is not None], dtype=float)
    assert logs._nonfinite_count(frame) == 2 * int((~np.isfinite(x)).sum())


def test_id_check_is_cached_per_file_set_and_invalidated(tmp_path: Path) -> None:
    a = write_file(make_pairs([0.1, 0.2], [0.3, 0.4]), tmp_path / "date=1" / "a.parquet")
    assert scan_pairs(tmp_path).collect().height == 2
    assert scan_pairs(tmp_path).collect().height == 2  # cached pass, same answer
    write_file(make_pairs([0.5], [0.6], request_ids=["r0"]), tmp_path / "date=2" / "b.parquet")
    with pytest.raises(LogValidationError, match="1 duplicate rows"):
        scan_pairs(tmp_path)  # a new file is a new key
    (tmp_path / "date=2" / "b.parquet").unlink()
    scan_pairs(tmp_path)
    write_file(make_pairs([0.1, 0.2], [0.3, 0.4], request_ids=["x", "x"]), a)  # rewritten
    os.utime(a, ns=(a.stat().st_atime_ns, a.stat().st_mtime_ns + 10**9))
    with pytest.raises(LogValidationError, match="1 duplicate rows"):
        scan_pairs(tmp_path)


def test_naive_timestamps(tmp_path: Path) -> None:
    bad = write_file(
        make_pairs([0.1], [0.2]).with_columns(pl.col(S.TS).dt.replace_time_zone(None)),
        tmp_path / "naive.parquet",
    )
    with pytest.raises(LogValidationError, match="naive timestamps") as err:
        scan_pairs(bad)
    assert str(bad) in str(err.value) and "'ts'" in str(err.value)
    assert "replace_time_zone('UTC')" in str(err.value)


def test_nan_and_inf_scores_become_counted_failures(tmp_path: Path) -> None:
    df = make_pairs([0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]).with_columns(
        pl.Series(S.PRIMARY_SCORE, [float("nan"), 0.2, float("-inf"), 0.4]),
        pl.Series(S.CANDIDATE_SCORE, [0.5, float("inf"), 0.7, 0.8]),
    )
    path = write_file(df, tmp_path / "nan.parquet")
    out = scan_pairs(path).collect()
    assert out[S.PRIMARY_SCORE].to_list() == [None, 0.2, None, 0.4]
    assert out[S.CANDIDATE_SCORE].to_list() == [0.5, None, 0.7, 0.8]
    assert out[S.PRIMARY_ERROR].to_list() == [
        "NonFiniteScore: nan",
        None,
        "NonFiniteScore: -inf",
        None,
    ]
    assert out[S.CANDIDATE_ERROR].to_list() == [None, "NonFiniteScore: inf", None, None]
    s = summarize_logs(path)
    assert (s.primary_errors, s.primary_nonfinite, s.primary_null_scores) == (2, 2, 2)
    assert (s.candidate_errors, s.candidate_nonfinite) == (1, 1)


def test_one_nonfinite_file_rewrites_the_week_and_a_clean_week_keeps_pushdown(
    tmp_path: Path,
) -> None:
    clean = make_pairs([0.1, 0.2, 0.3], [0.5, 0.6, 0.7])
    write_file(clean, tmp_path / "a.parquet")
    plan = scan_pairs(tmp_path).filter(pl.col(S.CANDIDATE_SCORE) > 0.55).explain()
    # Without NaN/inf scores there is no rewrite, so the score filter reaches the Parquet scan
    # (polars prints it as the scan's SELECTION) instead of running after a with_columns.
    assert "WITH_COLUMNS" not in plan and "SELECTION" in plan, plan
    assert scan_pairs(tmp_path).filter(pl.col(S.CANDIDATE_SCORE) > 0.55).collect().height == 2
    bad = make_pairs([0.4], [0.8]).with_columns(
        pl.col(S.REQUEST_ID) + "-b", pl.Series(S.CANDIDATE_SCORE, [float("nan")])
    )
    write_file(bad, tmp_path / "b.parquet")
    out = scan_pairs(tmp_path).collect()  # the file set changed: a fresh check, not the cache
    assert out[S.CANDIDATE_SCORE].to_list() == [0.5, 0.6, 0.7, None]
    assert out[S.CANDIDATE_ERROR].to_list() == [None, None, None, "NonFiniteScore: nan"]


def test_model_ids_change_across_files(tmp_path: Path) -> None:
    a = write_file(make_pairs([0.1], [0.2], request_ids=["a"]), tmp_path / "date=1" / "a.parquet")
    b = write_file(make_pairs([0.1], [0.2], request_ids=["b"], candidate_model="fraud:2.1.0"),
                   tmp_path / "date=2" / "b.parquet")  # fmt: skip
    with pytest.raises(LogValidationError, match="Model ids change across files") as err:
        scan_pairs(tmp_path)
    msg = str(err.value)
    assert str(a) in msg and str(b) in msg and "'candidate_model'" in msg and "fraud:2.1.0" in msg


def test_model_ids_change_within_file(tmp_path: Path) -> None:
    df = pl.concat([make_pairs([0.1], [0.2], request_ids=["a"]),
                    make_pairs([0.1], [0.2], request_ids=["b"], primary_model="fraud:0.9.0")])  # fmt: skip
    bad = write_file(df, tmp_path / "mixed.parquet")
    with pytest.raises(LogValidationError, match="changes within the file") as err:
        scan_pairs(bad)
    assert str(bad) in str(err.value) and "'primary_model'" in str(err.value)
    # without Parquet statistics the ids are read from the two columns instead
    nostats = tmp_path / "nostats" / "m.parquet"
    nostats.parent.mkdir()
    pq.write_table(df.to_arrow(), nostats, write_statistics=False)
    with pytest.raises(LogValidationError, match="changes within the file"):
        scan_pairs(nostats)


def test_empty_source(tmp_path: Path) -> None:
    (tmp_path / "logs" / "date=2026-11-02").mkdir(parents=True)
    (tmp_path / "logs" / "date=2026-11-02" / ".part-000000-ab.parquet.tmp").write_bytes(b"x")
    with pytest.raises(LogValidationError, match="Empty source") as err:
        scan_pairs(tmp_path / "logs")
    assert str(tmp_path / "logs") in str(err.value) and "1 temporary or hidden" in str(err.value)
    with pytest.raises(LogValidationError, match="Empty source"):
        scan_pairs(str(tmp_path / "logs" / "*.parquet"))
    with pytest.raises(LogValidationError, match="Empty source"):
        scan_pairs([])


def test_truncated_and_non_parquet_files(tmp_path: Path) -> None:
    good = write_file(make_pairs([0.1] * 50, [0.2] * 50), tmp_path / "good.parquet")
    data = good.read_bytes()
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(LogValidationError, match="not a readable Parquet file") as err:
        scan_pairs([good, cut])
    assert str(cut) in str(err.value) and "truncated" in str(err.value)
    csv = tmp_path / "csv.parquet"
    csv.write_text("ts,request_id\n2026-11-02,r0\n")
    with pytest.raises(LogValidationError, match="not a readable Parquet file") as err:
        scan_pairs(csv)
    assert str(csv) in str(err.value)
    empty = tmp_path / "zero.parquet"
    empty.write_bytes(b"")
    with pytest.raises(LogValidationError, match="0 bytes"):
        scan_pairs(empty)


def test_readers_never_modify_inputs(tmp_path: Path) -> None:
    with PairLogWriter(tmp_path / "p") as log:
        log.write_batch(make_pairs([0.1, float("nan")], [0.2, 0.3]).vstack(
            make_pairs([0.5], [0.6], request_ids=["r0"])))  # fmt: skip
    write_file(make_labels(["r0"], [1]), tmp_path / "l" / "labels.parquet")

    def state() -> dict[str, tuple[str, int]]:
        return {
            str(p): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(tmp_path.rglob("*"))
            if p.is_file()
        }

    before = state()
    with pytest.warns(DuplicateRequestsWarning):
        scan_pairs(tmp_path / "p", duplicates="keep-first").collect()
    with pytest.raises(LogValidationError):
        scan_pairs(tmp_path / "p")
    scan_labels(tmp_path / "l").collect()
    assert state() == before


# ------------------------------------------------------------------------------------------
# Labels
# ------------------------------------------------------------------------------------------


def test_scan_labels_round_trip_and_errors(tmp_path: Path) -> None:
    lab = make_labels(["r0", "r1", "r1"], [1, 0, 1], source=["review", "review", "chargeback"])
    write_file(lab, tmp_path / "ok" / "labels.parquet")
    out = scan_labels(tmp_path / "ok").collect()
    assert out.schema == pl.Schema(S.LABEL_SCHEMA)
    assert out.equals(lab)  # repeated ids allowed: a review and later a chargeback

    bad = write_file(lab.with_columns(pl.Series(S.LABEL, [1, 2, 0], dtype=pl.Int8)),
                     tmp_path / "two" / "labels.parquet")  # fmt: skip
    with pytest.raises(LogValidationError, match="expected 0 or 1") as err:
        scan_labels(bad)
    assert str(bad) in str(err.value) and "'label'" in str(err.value)

    naive = write_file(lab.with_columns(pl.col(S.LABEL_TS).dt.replace_time_zone(None)),
                       tmp_path / "naive" / "labels.parquet")  # fmt: skip
    with pytest.raises(LogValidationError, match="naive timestamps") as err:
        scan_labels(naive)
    assert str(naive) in str(err.value) and "'label_ts'" in str(err.value)

    missing = write_file(lab.drop(S.SOURCE), tmp_path / "missing" / "labels.parquet")
    with pytest.raises(LogValidationError, match="has no column 'source'") as err:
        scan_labels(missing)
    assert str(missing) in str(err.value)

    nulls = write_file(lab.with_columns(pl.Series(S.REQUEST_ID, ["r0", None, "r1"])),
                       tmp_path / "nulls" / "labels.parquet")  # fmt: skip
    with pytest.raises(LogValidationError, match="1 null values") as err:
        scan_labels(nulls)
    assert str(nulls) in str(err.value) and "'request_id'" in str(err.value)

    wide = write_file(
        lab.with_columns(pl.col(S.LABEL).cast(pl.Int64)), tmp_path / "w" / "l.parquet"
    )
    assert scan_labels(wide).collect_schema()[S.LABEL] == pl.Int8


# ------------------------------------------------------------------------------------------
# Summary and CLI
# ------------------------------------------------------------------------------------------


def test_summarize_logs_counts_by_hand() -> None:
    df = make_pairs(
        [0.1, float("nan"), 0.3, 0.4, 0.5],
        [0.2, 0.3, float("nan"), 0.5, 0.6],
        seconds=[0, 10, 86_400, 86_401, 3 * 86_400],
        served=["primary", "primary", "candidate", "primary", "candidate"],
        audit=[True, False, False, True, False],
        audit_rate=0.4,
        traffic_pct=0.25,
    )
    s = summarize_logs(df)
    assert s.rows == 5
    assert s.days == ("2026-11-02", "2026-11-03", "2026-11-05")
    assert (s.primary_model, s.candidate_model) == ("fraud:1.0.0", "fraud:2.0.0")
    assert (s.served_primary, s.served_candidate, s.traffic_share) == (3, 2, 0.4)
    assert (s.primary_errors, s.candidate_errors, s.audit_rows) == (1, 1, 2)
    assert (s.traffic_pct_min, s.traffic_pct_max, s.audit_rate_max) == (0.25, 0.25, 0.4)
    assert s.by_day["rows"].to_list() == [2, 2, 1]
    assert s.first_ts == "2026-11-02T00:00:00+00:00"
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert "rows             5" in str(s) and "LogSummary(rows=5" in repr(s)


def test_summarize_empty_frame_is_json_safe() -> None:
    s = summarize_logs(make_pairs([], []))
    assert (s.rows, s.days, s.traffic_share) == (0, (), None)
    assert "rows             0" in str(s) and "traffic_pct n/a" in str(s)
    assert json.loads(json.dumps(s.to_dict(), allow_nan=False))["rows"] == 0


def test_cli_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with PairLogWriter(tmp_path / "p") as log:
        log.write_batch(make_pairs([0.1, 0.2, 0.3], [0.2, 0.3, 0.4]))
    out = tmp_path / "s.json"
    assert cli_main(["summary", str(tmp_path / "p"), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "rows             3" in printed and "fraud:2.0.0" in printed
    assert json.loads(out.read_text())["rows"] == 3
    assert cli_main(["summary", str(tmp_path / "p"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["served_primary"] == 3
    assert cli_main(["summary", str(tmp_path / "empty")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "e").mkdir()
    assert cli_main(["summary", str(tmp_path / "e")]) == 2
    assert "Empty source" in capsys.readouterr().err
