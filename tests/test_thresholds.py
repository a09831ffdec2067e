"""calibrate_threshold against a brute force over every candidate threshold, numpy.quantile,
scipy's binomial/Wilson references and direct counts."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
from conftest import make_pairs
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from shadowlab import thresholds as T
from shadowlab.thresholds import Capacity, calibrate_threshold, wilson_interval


def brute_force(c: np.ndarray, m: float, side: str, inclusive: bool) -> tuple[float, int]:
    """Try every observed score (and the two out-of-range thresholds) as the threshold."""
    distinct = np.unique(c)
    if inclusive:
        cands = [*distinct.tolist(), float(np.nextafter(c.max(), np.inf))]
        counts = [int(np.sum(c >= t)) for t in cands]
    else:
        cands = [float(np.nextafter(c.min(), -np.inf)), *distinct.tolist()]
        counts = [int(np.sum(c > t)) for t in cands]
    below = max(a for a in counts if a <= m)
    above = min(a for a in counts if a >= m)
    if side == "at_most":
        a = below
    elif side == "at_least":
        a = above
    else:
        a = above if (above - m) < (m - below) else below
    return cands[counts.index(a)], a


def test_brute_force_with_ties_every_side_and_rule(rng):
    for trial in range(6):
        n = int(rng.integers(5, 60))
        c = np.round(rng.uniform(0, 1, n), 1)  # heavy ties
        p = rng.uniform(0, 1, n)
        df = make_pairs(p, c)
        for inclusive in (True, False):
            for side in ("nearest", "at_most", "at_least"):
                rate = float(rng.uniform(0, 1))
                res = calibrate_threshold(df, 0.5, target=rate, side=side, inclusive=inclusive)
                t, a = brute_force(c, rate * n, side, inclusive)
                assert res.threshold == t, (trial, side, inclusive, rate)
                assert res.candidate_count == a
                flagged = np.sum(c >= res.threshold) if inclusive else np.sum(c > res.threshold)
                assert flagged == a
                assert res.rate_below * n <= rate * n + 1e-9 <= res.rate_above * n + 2e-9


def test_match_target_brute_force(rng):
    n = 300
    p = rng.uniform(0, 1, n)
    c = np.round(p**1.5 + rng.normal(0, 0.05, n), 2)
    res = calibrate_threshold(make_pairs(p, c), 0.8)
    k1 = int(np.sum(p >= 0.8))
    assert res.primary_count == k1
    t, a = brute_force(c, k1, "nearest", True)
    assert (res.threshold, res.candidate_count) == (t, a)
    # naive rate: v2 at v1's threshold, counted directly
    assert res.naive_candidate_rate == np.sum(c >= 0.8) / n
    assert res.naive_ratio == pytest.approx(np.sum(c >= 0.8) / k1)


def test_all_equal_scores():
    c = np.full(10, 0.7)
    df = make_pairs(np.linspace(0, 1, 10), c)
    res = calibrate_threshold(df, 0.5, target=0.3)  # achievable: 0 or 10 -> nearest is 0
    assert res.candidate_count == 0
    assert res.threshold == np.nextafter(0.7, 1.0)
    assert (res.rate_below, res.rate_above) == (0.0, 1.0)
    assert res.threshold_above == 0.7
    res = calibrate_threshold(df, 0.5, target=0.6)
    assert res.candidate_count == 10 and res.threshold == 0.7
    res = calibrate_threshold(df, 0.5, target=0.5)  # equidistant: the lower rate wins
    assert res.candidate_count == 0
    # a tied bin is resolved from min/max: nothing pulled
    assert res.passes[1]["rows_moved"] == 0


def test_target_zero_and_one(rng):
    c = rng.uniform(0, 1, 50)
    df = make_pairs(rng.uniform(0, 1, 50), c)
    zero = calibrate_threshold(df, 0.5, target=0.0)
    assert zero.candidate_count == 0 and zero.threshold == np.nextafter(c.max(), np.inf)
    assert any("next float above the maximum" in note for note in zero.notes)
    one = calibrate_threshold(df, 0.5, target=1.0)
    assert one.candidate_count == 50 and one.threshold == c.min()
    one_ex = calibrate_threshold(df, 0.5, target=1.0, inclusive=False)
    assert one_ex.candidate_count == 50 and one_ex.threshold == np.nextafter(c.min(), -np.inf)
    zero_ex = calibrate_threshold(df, 0.5, target=0.0, inclusive=False)
    assert zero_ex.candidate_count == 0 and zero_ex.threshold == c.max()


def test_failed_scores_are_excluded_and_counted(rng):
    p = rng.uniform(0, 1, 40)
    c = rng.uniform(0, 1, 40)
    p[[1, 2]] = np.nan
    c[[2, 5, 9]] = np.nan
    res = calibrate_threshold(make_pairs(p, c), 0.5)
    ok = ~np.isnan(p) & ~np.isnan(c)
    assert (res.n_rows, res.n_pairs, res.n_excluded) == (40, 36, 4)
    assert (res.n_primary_failed, res.n_candidate_failed) == (2, 3)
    assert res.primary_count == np.sum(p[ok] >= 0.5)
    assert res.threshold == brute_force(c[ok], res.primary_count, "nearest", True)[0]


def test_quantile_parity_on_large_data_with_zoom(monkeypatch):
    rng = np.random.default_rng(7)
    n = 400_000
    p = rng.beta(0.6, 6, n)
    c = rng.normal(-6, 2, n)  # logit-like: mostly outside [0, 1], lands in the under/overflow bins
    df = pl.DataFrame(
        {"ts": np.zeros(n, "datetime64[us]"), "primary_score": p, "candidate_score": c}
    )
    df = df.with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
    monkeypatch.setattr(T, "_MAX_PULL", 20_000)
    res = calibrate_threshold(df, 0.3)
    k = int(np.sum(p >= 0.3))
    # the k-th largest score: numpy's 'higher' quantile at (n - k) / (n - 1) is sorted[n - k]
    expect = np.quantile(c, (n - k) / (n - 1), method="higher")
    assert expect == np.sort(c)[n - k]
    assert res.threshold == expect  # continuous scores: every count is achievable
    assert res.candidate_count == k
    kinds = [pp["kind"] for pp in res.passes]
    assert "zoom histogram" in kinds
    pulled = next(pp["rows_moved"] for pp in res.passes if pp["kind"] == "refinement pull")
    assert 0 < pulled <= 4 * 20_000  # only the critical cells travel, not the week
    # CI bounds are the order statistics at the binomial ranks (Conover 1999, sec. 3.2)
    lo, hi = res.threshold_ci_ranks
    srt = np.sort(c)
    assert res.threshold_ci == (srt[lo - 1], srt[hi - 1])


def test_quantile_parity_in_unit_interval(rng):
    n = 200_000
    p = rng.beta(0.5, 8, n)
    c = np.clip(p + rng.normal(0, 0.03, n), 0, 1)
    df = pl.DataFrame(
        {"ts": np.zeros(n, "datetime64[us]"), "primary_score": p, "candidate_score": c}
    )
    df = df.with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
    for rate in (0.001, 0.02, 0.25):
        res = calibrate_threshold(df, 0.5, target=rate)
        k = round(rate * n)
        assert res.threshold == np.quantile(c, (n - k) / (n - 1), method="higher")
        pulled = sum(pp["rows_moved"] for pp in res.passes if "pull" in pp["kind"])
        assert pulled < n / 10  # only the critical 1/64-wide bins travel


def test_threshold_ci_coverage_ranks():
    # P(l <= B <= u - 1) >= confidence with B ~ Binomial(n, q): the interval's definition.
    for n, q in [(100, 0.9), (1000, 0.97), (37, 0.5)]:
        lo, hi = T._order_statistic_ranks(n, q, 0.95)
        cover = stats.binom.cdf(hi - 1, n, q) - stats.binom.cdf(lo - 1, n, q)
        assert cover >= 0.95
        # and it is the shortest such from the ppf construction: shrinking either end loses it
        assert stats.binom.cdf(hi - 2, n, q) - stats.binom.cdf(lo - 1, n, q) < 0.975 + 1e-12
    # n=100, q=0.9: ranks 84 and 96 (tabulated in Conover 1999, Table A3 gives 84/96 for 0.95)
    assert T._order_statistic_ranks(100, 0.9, 0.95) == (84, 96)


def test_wilson_matches_scipy():
    for k, n in [(0, 10), (3, 10), (50, 1000), (10, 10)]:
        ref = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
        got = wilson_interval(k, n, 0.95)
        assert got == pytest.approx((ref.low, ref.high), abs=1e-12)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_stability_agreement_and_segments(rng):
    n = 7 * 24 * 10
    seconds = np.arange(n) * (7 * 86400 / n)
    p = rng.uniform(0, 1, n)
    c = np.where(seconds < 86400, p * 1.1, p * 0.97)  # day 1 runs hot
    country = rng.choice(["US", "DE", "FR"], n).tolist()
    df = make_pairs(p, c, seconds=seconds, country=country)
    res = calibrate_threshold(df, 0.8, by="country")
    t = res.threshold
    v1, v2 = p >= 0.8, c >= t
    assert res.agreement == {
        "both": int(np.sum(v1 & v2)),
        "primary_only": int(np.sum(v1 & ~v2)),
        "candidate_only": int(np.sum(~v1 & v2)),
        "neither": int(np.sum(~v1 & ~v2)),
    }
    day = (seconds // 86400).astype(int)
    expect = [np.sum(v2[day == d]) / np.sum(v1[day == d]) - 1 for d in range(7)]
    assert res.by_day["rel_deviation"].to_list() == pytest.approx(expect)
    assert res.max_daily_rel_deviation == pytest.approx(max(abs(e) for e in expect))
    assert res.by_day["rel_deviation"][0] > 0.1  # the hot day is visible
    hour = ((seconds % 86400) // 3600).astype(int)
    assert res.by_hour["candidate_rate"].to_list() == pytest.approx(
        [np.mean(v2[hour == h]) for h in range(24)]
    )
    seg = res.segments.sort("country")
    arr = np.array(country)
    for row in seg.iter_rows(named=True):
        m = arr == row["country"]
        assert row["primary_rate"] == pytest.approx(np.mean(v1[m]))
        assert row["candidate_rate"] == pytest.approx(np.mean(v2[m]))
        assert row["ratio"] == pytest.approx(np.mean(v2[m]) / np.mean(v1[m]))


def test_per_segment_thresholds_and_empty_segment(rng):
    n = 120
    p = rng.uniform(0, 1, n)
    c = np.round(rng.uniform(0, 1, n), 2)
    country = np.array(["US"] * 50 + ["DE"] * 60 + ["XX"] * 10)
    c[country == "XX"] = np.nan  # a segment where every candidate score failed
    df = make_pairs(p, c, country=country.tolist())
    res = calibrate_threshold(df, 0.7, by=["country"], per_segment=True)
    seg = {r["country"]: r for r in res.segments.iter_rows(named=True)}
    for name in ("US", "DE"):
        m = country == name
        t, a = brute_force(c[m], int(np.sum(p[m] >= 0.7)), "nearest", True)
        assert seg[name]["segment_threshold"] == t
        assert seg[name]["segment_rate"] == a / m.sum()
    assert seg["XX"]["pairs"] == 0 and seg["XX"]["excluded"] == 10
    assert math.isnan(seg["XX"]["primary_rate"]) and seg["XX"]["segment_threshold"] is None
    assert any("no valid pair" in note for note in res.notes)
    json.dumps(res.to_dict())  # JSON-safe with NaN rates


def test_capacity_target(rng):
    n = 700  # 100 per day over 7 days
    c = rng.uniform(0, 1, n)
    df = make_pairs(rng.uniform(0, 1, n), c)
    res = calibrate_threshold(df, 0.9, target=Capacity(per_day=5))
    assert res.target_rate == pytest.approx(5 / 100)
    assert res.candidate_count == 35 and res.threshold == np.sort(c)[::-1][34]
    with pytest.raises(ValueError, match="exceeds the logged volume"):
        calibrate_threshold(df, 0.9, target=Capacity(per_day=101))


@settings(max_examples=40, deadline=None)
@given(
    scores=st.lists(
        st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5, 0.9, 1.0, 1.5]), min_size=1, max_size=30
    ),
    rate=st.floats(0.0, 1.0),
    inclusive=st.booleans(),
)
def test_property_achieved_rate_is_closest_achievable(scores, rate, inclusive):
    c = np.array(scores)
    n = c.size
    res = calibrate_threshold(make_pairs(np.zeros(n), c), 0.5, target=rate, inclusive=inclusive)
    achievable = {0, *[int(np.sum(c >= v)) for v in c]}
    best = min(abs(a - rate * n) for a in achievable)
    assert abs(res.candidate_count - rate * n) == pytest.approx(best, abs=1e-9)
    flagged = np.sum(c >= res.threshold) if inclusive else np.sum(c > res.threshold)
    assert flagged == res.candidate_count
    assert res.rate_below <= res.candidate_rate <= res.rate_above


def test_repr_and_to_dict(rng):
    res = calibrate_threshold(make_pairs(rng.uniform(0, 1, 50), rng.uniform(0, 1, 50)), 0.5)
    text = repr(res)
    assert "ThresholdCalibration(threshold=" in text and "naive v2 rate" in text
    d = json.loads(json.dumps(res.to_dict()))
    assert d["threshold"] == res.threshold and len(d["by_day"]) == 7
    assert d["passes"][0]["kind"] == "histogram"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"primary_threshold": "x"}, "The 'primary_threshold' parameter of calibrate_threshold"),
        ({"target": 1.5}, "The 'target' parameter of calibrate_threshold must be"),
        ({"target": "same"}, "The 'target' parameter of calibrate_threshold must be"),
        ({"side": "up"}, "The 'side' parameter of calibrate_threshold must be a str among"),
        ({"inclusive": 1}, "The 'inclusive' parameter of calibrate_threshold must be a bool"),
        ({"confidence": 1.0}, "The 'confidence' parameter of calibrate_threshold must be"),
        ({"by": 3}, "The 'by' parameter of calibrate_threshold must be"),
        ({"per_segment": True}, "The 'per_segment' parameter of calibrate_threshold needs 'by'"),
        ({"per_segment": "yes"}, "The 'per_segment' parameter of calibrate_threshold must be"),
    ],
)
def test_parameter_errors(kwargs, message):
    df = make_pairs([0.1, 0.2], [0.3, 0.4])
    args = {"primary_threshold": 0.5, **kwargs}
    t1 = args.pop("primary_threshold")
    with pytest.raises(ValueError, match=message):
        calibrate_threshold(df, t1, **args)


def test_data_errors():
    with pytest.raises(ValueError, match=r"no column 'contry'.*Did you mean 'country'"):
        calibrate_threshold(make_pairs([0.1], [0.2], country=["US"]), 0.5, by="contry")
    with pytest.raises(ValueError, match="no row where both scores are finite"):
        calibrate_threshold(make_pairs([np.nan], [0.2]), 0.5)
    with pytest.raises(ValueError, match="Input pairs is empty"):
        calibrate_threshold(make_pairs([], []), 0.5)
    with pytest.raises(ValueError, match="The 'per_day' parameter of Capacity"):
        Capacity(per_day=-1)


def test_cli_calibrate(tmp_path, rng, capsys):
    from shadowlab.cli import main

    n = 700
    p = rng.uniform(0, 1, n)
    c = np.round(rng.uniform(0, 1, n), 3)
    path = tmp_path / "pairs.parquet"
    make_pairs(p, c, country=rng.choice(["US", "DE"], n).tolist()).write_parquet(path)
    out = tmp_path / "cal.json"
    code = main(
        [
            "calibrate",
            str(path),
            "--primary-threshold",
            "0.9",
            "--by",
            "country",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "ThresholdCalibration(threshold=" in text and "Segments" in text
    got = json.loads(out.read_text())["calibration"]
    assert got["threshold"] == brute_force(c, int(np.sum(p >= 0.9)), "nearest", True)[0]
    assert main(["calibrate", str(path), "--primary-threshold", "0.9", "--target", "x"]) == 2
    assert main(["calibrate", str(path), "--primary-threshold", "0.9", "--per-segment"]) == 2
    assert (
        main(["calibrate", str(path), "--primary-threshold", "0.9", "--target", "capacity:5"]) == 0
    )
    assert "capacity=5/day" in capsys.readouterr().out


def test_nan_and_inf_in_a_raw_frame_count_as_failures(rng):
    # scan_pairs turns NaN/inf into nulls; a frame built by hand may still hold them
    p = rng.uniform(0, 1, 30)
    c = rng.uniform(0, 1, 30)
    df = make_pairs(p, c).with_columns(
        pl.when(pl.int_range(pl.len()) == 3)
        .then(float("nan"))
        .otherwise(pl.col("primary_score"))
        .alias("primary_score"),
        pl.when(pl.int_range(pl.len()) == 4)
        .then(float("inf"))
        .otherwise(pl.col("candidate_score"))
        .alias("candidate_score"),
    )
    res = calibrate_threshold(df, 0.5)
    keep = np.ones(30, bool)
    keep[[3, 4]] = False
    assert (res.n_excluded, res.n_primary_failed, res.n_candidate_failed) == (2, 1, 1)
    assert res.primary_count == np.sum(p[keep] >= 0.5)
    assert res.threshold == brute_force(c[keep], res.primary_count, "nearest", True)[0]


# --- the compiled first pass (_fold.c's hour histogram) against the polars group-by ---------

needs_lib = pytest.mark.skipif(not T._native.available(), reason="shadowlab/_fold.so not built")


def _hard_frame(rng, n: int = 30_000) -> pl.DataFrame:
    """Scores on and beside every first-pass bin edge and v1's threshold, specials, nulls; a
    timestamp column crossing 1970 off the hour, with nulls; segments with nulls."""
    edges = np.arange(-1, T._BINS + 2) / T._BINS
    special = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1.0, 0.5, 5e-324, 2.0, -3.0, 1e308]
    pool = np.concatenate(
        [edges, np.nextafter(edges, 2), np.nextafter(edges, -2), special, rng.random(200)]
    )
    p = rng.choice(pool, n)
    c = rng.choice(pool, n)
    us = np.sort(rng.integers(-30 * 3_600_000_000, 200 * 3_600_000_000, n)) + 1_234
    frame = pl.DataFrame(
        {
            "ts": pl.Series(us, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
            "primary_score": p,
            "candidate_score": c,
            "country": rng.choice(["US", "DE", "FR", "", "BR"], n),
            "tier": rng.integers(0, 3, n),
        }
    )
    nulls = rng.random((4, n)) < 0.02
    return frame.with_columns(
        pl.when(~pl.Series(nulls[0])).then(pl.col("ts")).alias("ts"),
        pl.when(~pl.Series(nulls[1])).then(pl.col("primary_score")).alias("primary_score"),
        pl.when(~pl.Series(nulls[2])).then(pl.col("candidate_score")).alias("candidate_score"),
        pl.when(~pl.Series(nulls[3])).then(pl.col("country")).alias("country"),
    )


def _first_pass(frame: pl.DataFrame, by, t1, inclusive, chunk: int | None = None):
    from shadowlab.engine import merge_partials

    agg = T._hist_agg(
        T._bin0(T._clean("candidate_score")) + 1, T._BINS + 2, by, t1, inclusive,
        schema=frame.schema,
    )  # fmt: skip
    assert agg.fold is not None
    prepared = agg.prepare(frame.lazy()).collect()
    chunks = prepared.iter_slices(chunk) if chunk else [prepared]
    return (
        merge_partials([agg.fold(chunks)], agg),
        merge_partials([agg.build(frame.lazy()).collect()], agg),
    )


@needs_lib
@pytest.mark.parametrize("by", [[], ["country"], ["country", "tier"]])
@pytest.mark.parametrize("inclusive", [True, False])
def test_compiled_first_pass_equals_the_group_by(rng, by, inclusive):
    """Cell for cell, in one chunk and in uneven chunks, at a threshold on a bin edge and off it:
    the build (polars' group-by, what Spark runs) is the reference."""
    frame = _hard_frame(rng)
    for t1 in (0.5, 0.3 + 1e-9):
        for chunk in (None, 977):
            got, want = _first_pass(frame, by, t1, inclusive, chunk)
            assert got.schema == want.schema
            assert got.equals(want, null_equal=True), (by, t1, chunk)
            assert int(got["n"].sum()) == frame.height
            assert got["_k"].null_count() > 0  # the null timestamps' cells are there


@needs_lib
def test_compiled_first_pass_with_many_segments_equals_the_group_by(rng):
    # 300 segments: the segment table (64 slots at first) and the block table grow several
    # times while rows come in, in chunks
    frame = _hard_frame(rng).with_columns(
        pl.Series("country", [f"c{i}" for i in rng.integers(0, 300, 30_000)])
    )
    got, want = _first_pass(frame, ["country"], 0.5, True, chunk=977)
    assert want["country"].n_unique() == 300
    assert got.equals(want, null_equal=True)


@needs_lib
def test_compiled_first_pass_gives_the_same_calibration(rng, monkeypatch):
    n = 20_000
    p, c = rng.beta(2, 5, n), rng.beta(2, 4, n)
    df = make_pairs(p, c, country=rng.choice(["US", "DE", "FR"], n).tolist())
    fast = calibrate_threshold(df, 0.6, by="country")
    monkeypatch.setattr(T._native, "_LIB", None)  # no library: the group-by
    slow = calibrate_threshold(df, 0.6, by="country")
    assert fast.to_dict() == slow.to_dict()


@needs_lib
@pytest.mark.parametrize("error", ["SegmentCollision", "TooSparse"])
def test_compiled_first_pass_falls_back_to_the_group_by(rng, monkeypatch, error):
    n = 5_000
    df = make_pairs(rng.random(n), rng.random(n), country=rng.choice(["US", "DE"], n).tolist())
    want = calibrate_threshold(df, 0.5, by="country").to_dict()

    def add(self, *args):
        raise getattr(T._native, error)("forced")

    monkeypatch.setattr(T._native.HourHistogram, "add", add)
    assert calibrate_threshold(df, 0.5, by="country").to_dict() == want


@needs_lib
def test_hour_histogram_reports_a_hash_collision_and_its_bound():
    from shadowlab import _native

    us = np.zeros(4, np.int64)
    s = np.array([0.1, 0.2, 0.3, 0.4])
    seg = np.array([7, 7, 9, 7], np.uint64)
    hist = _native.HourHistogram(0.5, True, T._BINS + 2, float(T._BINS))
    codes, first = hist.add(us, s, s, seg, seg.copy())
    assert codes.tolist() == [0, 0, 1, 0] and first.tolist() == [0, 2]
    with pytest.raises(_native.SegmentCollision):  # segment 7's second hash changes
        hist.add(us, s, s, seg, np.array([7, 8, 9, 7], np.uint64))
    small = _native.HourHistogram(0.5, True, T._BINS + 2, float(T._BINS), max_cells=200)
    with pytest.raises(_native.TooSparse):  # two (hour, segment) blocks of 133 cells
        small.add(us, s, s, seg, seg)
