"""The engine's declarative sums: one read for several summaries, each recovered exactly."""

from __future__ import annotations

import polars as pl
import pytest

from shadowlab.engine import Aggregation, PolarsSource, fuse, grouped_sums, merge_partials, project


@pytest.fixture
def frame(rng) -> pl.DataFrame:
    n = 5_000
    return pl.DataFrame(
        {
            "t": rng.integers(0, 10_000, n),
            "seg": rng.choice(["a", "b", None], n),
            "x": rng.integers(-5, 50, n),
            "y": rng.random(n),
            "gap": rng.random(n) < 0.1,
        }
    ).with_columns(pl.when(pl.col("gap")).then(None).otherwise(pl.col("x")).alias("x"))


def _aggs():
    hour = pl.col("t") // 100
    by_hour = grouped_sums(
        {"hour": hour, "seg": pl.col("seg")},
        {"n": None, "big": (pl.col("x") > 40).cast(pl.Int64), "x": pl.col("x")},
        where=pl.col("y") > 0.3,
    )
    by_block = grouped_sums(
        {"block": pl.col("t") // 1000},
        {"rows": None, "x": pl.col("x")},
        mins={"t_min": pl.col("t")},
        maxs={"y_max": pl.col("y"), "x_max": pl.col("x")},
    )
    # a filter no row of a group passes: the group is absent, as in its own pass
    rare = grouped_sums({"hour": hour}, {"n": None}, where=pl.col("y") > 0.999)
    total = grouped_sums(
        {}, {"n": None, "x": pl.col("x")}, where=pl.col("y") < 0.0, mins={"t": pl.col("t")}
    )
    return [by_hour, by_block, rare, total]


def test_grouped_sums_equal_a_hand_written_group_by(frame):
    got = PolarsSource(frame.lazy()).aggregate(_aggs()[0])
    want = (
        frame.filter(pl.col("y") > 0.3)
        .group_by((pl.col("t") // 100).alias("hour"), "seg")
        .agg(
            pl.len().cast(pl.Int64).alias("n"),
            (pl.col("x") > 40).cast(pl.Int64).sum().alias("big"),
            pl.col("x").sum(),
        )
        .sort("hour", "seg")
    )
    assert got.equals(want)
    assert int(got["n"].sum()) == frame.filter(pl.col("y") > 0.3).height


def test_one_fused_read_gives_each_summary_exactly(frame):
    aggs = _aggs()
    source = PolarsSource(frame.lazy())
    fused = source.aggregate(fuse(aggs))
    for i, agg in enumerate(aggs):
        alone = source.aggregate(agg)
        assert project(fused, aggs, i).equals(alone), i
    # partials of chunks merge like the whole (the contract every engine relies on)
    halves = [fuse(aggs).build(frame.slice(k, 2_500).lazy()).collect() for k in (0, 2_500)]
    merged = merge_partials(halves, fuse(aggs))
    for i, agg in enumerate(aggs):
        assert project(merged, aggs, i).equals(source.aggregate(agg)), i
    # the keyless sum with no admitted row is one row of zeros, as its own pass gives
    assert project(fused, aggs, 3).rows() == [(0, 0, None)]
    block = project(fused, aggs, 1)
    assert block.columns == ["block", "rows", "x", "t_min", "y_max", "x_max"]
    want = frame.group_by((pl.col("t") // 1000).alias("block")).agg(pl.col("t").min()).sort("block")
    assert block["t_min"].to_list() == want["t"].to_list()
    assert project(fused, aggs, 2).height < 100


def test_fuse_refuses_a_key_name_with_two_meanings():
    a = grouped_sums({"k": pl.col("t") // 10}, {"n": None})
    b = grouped_sums({"k": pl.col("t") // 20}, {"n": None})
    with pytest.raises(ValueError, match="key 'k' has two different expressions"):
        fuse([a, b])
    with pytest.raises(ValueError, match="grouped_sums"):
        fuse([a, Aggregation(build=lambda lf: lf)])
