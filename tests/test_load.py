"""Tests of shadowlab.load: fluid cases by hand, stochastic vs Erlang C, edge cases, the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
from conftest import make_pairs

from shadowlab import schema as S
from shadowlab.engine import as_source, merge_partials
from shadowlab.load import (
    LoadReport,
    ReviewCapacity,
    erlang_c,
    load_aggregation,
    simulate_load,
)

HOUR = 3600.0
V1 = {"v1": ("primary", 0.5)}


def _flagged(seconds, *, others=None):
    """Pairs where every row is flagged by v1 (primary 0.9) and by nothing else."""
    seconds = np.asarray(seconds, dtype=float)
    n = seconds.size
    return make_pairs(np.full(n, 0.9), np.full(n, 0.1), seconds=seconds)


def _row(report: LoadReport, policy: str) -> dict:
    return report.summary.filter(pl.col("policy") == policy).row(0, named=True)


# --- fluid mode: hand-computed cases -------------------------------------------------------


def test_fluid_constant_overload_by_hand():
    # One arrival every 5 minutes for 2 hours, one reviewer, 10-minute reviews: offered load 2.
    # Work arrives at 2 reviewer-min/min and leaves at 1, so D(t) = t. Item k arrives at 5k with
    # 10k reviewer-minutes ahead of it: it starts at 10k, wait 5k minutes.
    pairs = _flagged(np.arange(24) * 300.0)
    rep = simulate_load(pairs, V1, ReviewCapacity(1, 10.0), sla="1h")
    r = _row(rep, "v1")
    waits = 5.0 * np.arange(24)
    assert r["arrivals"] == 24
    assert r["utilisation"] == pytest.approx(2.0, rel=1e-12)  # 240 reviewer-min / 120 min
    assert r["mean_wait_minutes"] == pytest.approx(waits.mean(), rel=1e-12)  # 57.5
    assert r["p50_wait_minutes"] == pytest.approx(55.0, rel=1e-12)  # 12th of 24 (k = 11)
    assert r["p95_wait_minutes"] == pytest.approx(110.0, rel=1e-12)  # 23rd of 24 (k = 22)
    assert r["p99_wait_minutes"] == pytest.approx(115.0, rel=1e-12)
    assert r["prob_wait"] == pytest.approx(23 / 24)  # all but the first
    # time to decision = 5k + 10 > 60  <=>  k >= 11: 13 of 24
    assert r["sla_breach_share"] == pytest.approx(13 / 24)
    # backlog A - D = 2t - t peaks at t = 120 (120 reviewer-min = 12 items), then D = t + ...
    # drains when t = 240
    assert r["peak_backlog"] == pytest.approx(12.0, rel=1e-12)
    assert r["peak_at"].hour == 2 and r["peak_at"].minute == 0
    assert r["time_to_drain_minutes"] == pytest.approx(120.0, rel=1e-12)
    tl = rep.timeline
    assert tl["arrivals"].to_list() == [1] * 24
    assert tl["capacity_reviewer_minutes"].to_list() == pytest.approx([5.0] * 24)
    # backlog at the end of interval j: A = 10 (j+1), D = 5 (j+1) -> (j+1)/2 items
    assert tl["backlog"].to_list() == pytest.approx([(j + 1) / 2 for j in range(24)])
    assert tl["mean_wait_minutes"].to_list() == pytest.approx(list(waits))


def test_fluid_burst_then_drain_by_hand():
    # 12 arrivals in the first 5 minutes, 2 reviewers, 10-minute reviews: 120 reviewer-minutes
    # arrive over [0, 5] and leave at 2/min, D(t) = 2t until t = 60. Item k arrives at 5k/12
    # with 10k ahead: starts at 5k, wait 5k - 5k/12 = 55k/12.
    pairs = _flagged(np.linspace(0, 290, 12))
    rep = simulate_load(pairs, V1, ReviewCapacity(2, 10.0), sla="30m")
    r = _row(rep, "v1")
    waits = 55.0 * np.arange(12) / 12
    assert r["mean_wait_minutes"] == pytest.approx(waits.mean(), rel=1e-12)
    assert r["p99_wait_minutes"] == pytest.approx(waits[-1], rel=1e-12)
    # peak at t = 5: 120 - 10 = 110 reviewer-minutes = 11 items; empty at t = 60
    assert r["peak_backlog"] == pytest.approx(11.0, rel=1e-12)
    assert r["peak_at"].minute == 5
    assert r["time_to_drain_minutes"] == pytest.approx(55.0, rel=1e-12)
    # wait + 10 > 30 <=> 55k/12 > 20 <=> k >= 5: 7 of 12
    assert r["sla_breach_share"] == pytest.approx(7 / 12)
    assert r["utilisation"] == pytest.approx(120.0 / 10.0)  # one 5-minute interval, 2 reviewers


def test_fluid_zero_capacity_in_some_hours_waits_for_the_shift():
    # Nobody on duty Monday 00:00-01:00 UTC, one reviewer otherwise. An arrival at 00:10 waits
    # until 01:00 (50 minutes); one at 02:00 finds the reviewer free.
    schedule = [1] * 168
    schedule[0] = 0
    pairs = _flagged([600.0, 2 * HOUR])
    cap = ReviewCapacity(schedule, 10.0)
    rep = simulate_load(pairs, V1, cap, interval="1m", sla="4h")
    r = _row(rep, "v1")
    assert r["mean_wait_minutes"] == pytest.approx(25.0, rel=1e-12)
    assert r["p99_wait_minutes"] == pytest.approx(50.0, rel=1e-12)
    assert r["prob_wait"] == pytest.approx(0.5)
    # the timeline starts at the first logged interval (00:10): 50 minutes with nobody on duty
    tl = rep.timeline
    assert tl["interval_start"][0].minute == 10 and tl.height == 111
    assert tl["capacity_reviewer_minutes"][:50].sum() == 0.0
    assert tl["capacity_reviewer_minutes"][50:].to_list() == pytest.approx([1.0] * 61)
    sto = simulate_load(pairs, V1, cap, interval="1s", mode="stochastic", n_seeds=3)
    s = _row(sto, "v1")
    # same rule per item: the 00:10 arrival starts at 01:00 exactly
    assert s["p99_wait_minutes"] == pytest.approx(50.0, abs=1 / 60)
    assert s["prob_wait"] == pytest.approx(0.5)


def test_fluid_no_capacity_at_all_never_serves():
    pairs = _flagged([60.0, 120.0])
    rep = simulate_load(pairs, V1, ReviewCapacity([0] * 168, 10.0))
    r = _row(rep, "v1")
    assert math.isinf(r["mean_wait_minutes"]) and math.isinf(r["p50_wait_minutes"])
    assert r["sla_breach_share"] == 1.0
    assert math.isinf(r["utilisation"])
    assert math.isinf(r["time_to_drain_minutes"])
    assert json.dumps(rep.to_dict(), allow_nan=False)  # inf travels as "inf"


# --- stochastic mode against queueing theory -----------------------------------------------


def test_erlang_c_matches_textbook_formula():
    # Erlang C by its textbook sum (Kleinrock 1975, eq. 3.40; Gross & Harris §2.3):
    # C = [a^c/c! * c/(c-a)] / [sum_{k<c} a^k/k! + a^c/c! * c/(c-a)], Wq = C / (c mu - lambda)
    for lam, s, c in [(1.0, 2.5, 3), (10.0, 0.5, 6), (0.2, 4.0, 1)]:
        a = lam * s
        top = a**c / math.factorial(c) * c / (c - a)
        expected = top / (sum(a**k / math.factorial(k) for k in range(c)) + top)
        pw, wq = erlang_c(lam, s, c)
        assert pw == pytest.approx(expected, rel=1e-12)
        assert wq == pytest.approx(expected * s / (c - a), rel=1e-12)
    # M/M/1: P(wait) = rho, Wq = rho s / (1 - rho)
    assert erlang_c(0.2, 4.0, 1) == pytest.approx((0.8, 16.0), rel=1e-12)
    with pytest.raises(ValueError, match="The 'servers' parameter of erlang_c must be an int"):
        erlang_c(1.0, 3.0, 3)
    with pytest.raises(ValueError, match="The 'arrival_rate' parameter of erlang_c must be"):
        erlang_c(0.0, 3.0, 3)
    with pytest.raises(ValueError, match="The 'mean_service' parameter of erlang_c must be"):
        erlang_c(1.0, float("nan"), 3)


def test_stochastic_matches_erlang_c_on_poisson_arrivals():
    # M/M/3 with lambda = 1/min, mean service 2.5 min (a = 2.5, rho = 0.83): Erlang C gives
    # P(wait) = 0.70225, Wq = 3.5112 min. 30 000 Poisson arrivals (about 3 weeks), 8 seeds.
    rng = np.random.default_rng(7)
    seconds = np.cumsum(rng.exponential(60.0, 30_000))
    rep = simulate_load(
        _flagged(seconds), V1, ReviewCapacity(3, 2.5), mode="stochastic", n_seeds=8, seed=3
    )
    r = _row(rep, "v1")
    pw, wq = erlang_c(1.0, 2.5, 3)
    assert (pw, wq) == pytest.approx((0.702247, 3.511236), rel=1e-5)
    assert r["mean_wait_minutes_lo"] <= wq <= r["mean_wait_minutes_hi"]
    assert r["prob_wait_lo"] <= pw <= r["prob_wait_hi"]
    # the seeds re-draw times within each 5-minute interval and the service times, but the
    # counts are this one realisation: compare the mean with Erlang C at its arrival rate
    rate = 30_000 / (rep.timeline.height * 5.0)
    pw_hat, wq_hat = erlang_c(rate, 2.5, 3)
    assert r["mean_wait_minutes"] == pytest.approx(wq_hat, rel=0.05)
    assert r["prob_wait"] == pytest.approx(pw_hat, rel=0.02)
    assert r["utilisation"] == pytest.approx(rate * 2.5 / 3, rel=0.02)
    assert rep.seeds == tuple(range(3, 11))


def test_stochastic_schedule_recursion_equals_heap_for_constant_staffing():
    # The same 3 reviewers as a constant and as a 168-hour schedule: same seeds, same starts.
    rng = np.random.default_rng(11)
    pairs = _flagged(np.sort(rng.uniform(0, 2 * 86400, 2000)))
    kw = {"mode": "stochastic", "n_seeds": 2, "sla": "30m"}
    a = simulate_load(pairs, V1, ReviewCapacity(3, 3.0, service_cv=0.5), **kw).summary
    b = simulate_load(pairs, V1, ReviewCapacity([3] * 168, 3.0, service_cv=0.5), **kw).summary
    cols = ["mean_wait_minutes", "p95_wait_minutes", "prob_wait", "peak_backlog"]
    assert a.select(cols).row(0) == pytest.approx(b.select(cols).row(0), rel=1e-12)


def _reference_schedule_starts(arrival, service, schedule, t0_seconds):
    """Slow, obvious FIFO with a schedule: per arrival, every reviewer's earliest possible start
    (free time, pushed to the next on-duty instant), take the earliest."""
    n_srv = max(schedule)
    free = [0.0] * n_srv
    starts = []
    for t, x in zip(arrival, service, strict=True):
        best, best_k = math.inf, -1
        for k in range(n_srv):
            m = max(t, free[k])
            for _ in range(2 * 168 + 1):  # walk hour by hour until on duty
                hour = math.floor((t0_seconds + 60 * m) / 3600)
                if k < schedule[(hour + 72) % 168]:
                    break
                m = ((hour + 1) * 3600 - t0_seconds) / 60
            if m < best:
                best, best_k = m, k
        starts.append(best)
        free[best_k] = best + x
    return np.array(starts)


def test_schedule_recursion_matches_slow_reference():
    from shadowlab.load import _Clock, _fifo_schedule

    rng = np.random.default_rng(4)
    schedule = [int(v) for v in rng.integers(0, 4, 168)]
    t0 = 1793577600.0 + 1234.0  # not on an hour boundary
    arrival = np.sort(rng.uniform(0, 3 * 1440, 600))
    service = rng.exponential(40.0, 600)
    got = _fifo_schedule(arrival, service, np.array(schedule), _Clock(t0, np.array(schedule)))
    want = _reference_schedule_starts(arrival, service, schedule, t0)
    assert np.all(np.diff(got) >= 0)  # FIFO: starts in arrival order
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_stochastic_shift_ending_mid_review_finishes_it():
    # One reviewer on duty only Monday 00:00-01:00 UTC; deterministic 30-minute reviews
    # (cv = 0). The 00:50 arrival starts at once and runs into overtime; the 00:51 arrival
    # waits for next Monday 00:00: 168 h - 51 min.
    schedule = [0] * 168
    schedule[0] = 1
    pairs = _flagged([50 * 60.0, 51 * 60.0])
    rep = simulate_load(
        pairs,
        V1,
        ReviewCapacity(schedule, 30.0, service_cv=0.0),
        interval="1s",
        mode="stochastic",
        n_seeds=2,
    )
    r = _row(rep, "v1")
    assert r["p99_wait_minutes"] == pytest.approx(168 * 60 - 51, abs=1 / 60)
    assert r["p50_wait_minutes"] == 0.0


def test_service_time_shape():
    from shadowlab.load import _service_times

    rng = np.random.default_rng(0)
    x = _service_times(rng, 200_000, 6.0, 0.5)  # gamma, shape 4
    assert x.mean() == pytest.approx(6.0, rel=0.01)
    assert x.std() / x.mean() == pytest.approx(0.5, rel=0.02)
    assert np.all(_service_times(rng, 5, 6.0, 0.0) == 6.0)


# --- edge cases ----------------------------------------------------------------------------


def test_policy_that_flags_nothing_and_zero_arrivals():
    pairs = _flagged(np.arange(50) * 600.0)
    pol = {"v1": ("primary", 0.5), "v2 strict": ("candidate", 0.99)}
    for mode in ("fluid", "stochastic"):
        rep = simulate_load(pairs, pol, ReviewCapacity(1, 5.0), mode=mode, n_seeds=2)
        r = _row(rep, "v2 strict")
        assert r["arrivals"] == 0
        for col in ("utilisation", "mean_wait_minutes", "p95_wait_minutes", "prob_wait"):
            assert r[col] == 0.0
        assert r["peak_backlog"] == 0.0 and r["time_to_drain_minutes"] == 0.0
        assert r["reviewers_needed"] == 0.0
        assert rep.timeline.filter(pl.col("policy") == "v2 strict")["backlog"].sum() == 0.0
        assert "v2 strict: flags nothing" in rep.headline()
    # every policy flags nothing: still a report, all zeros
    rep = simulate_load(pairs, {"v2": ("candidate", 0.99)}, ReviewCapacity(2, 5.0))
    assert _row(rep, "v2")["sla_breach_share"] == 0.0


def test_huge_capacity_no_one_waits():
    rng = np.random.default_rng(5)
    pairs = _flagged(np.sort(rng.uniform(0, 86400, 3000)))
    for mode in ("fluid", "stochastic"):
        r = _row(simulate_load(pairs, V1, ReviewCapacity(500, 10.0), mode=mode), "v1")
        assert r["mean_wait_minutes"] == 0.0 and r["p99_wait_minutes"] == 0.0
        assert r["prob_wait"] == 0.0 and r["peak_backlog"] == 0.0
        assert r["sla_breach_share"] == 0.0


def test_empty_input_is_a_data_error():
    with pytest.raises(ValueError, match="no rows"):
        simulate_load(make_pairs([], []), V1, ReviewCapacity(1))


# --- decision rules and the aggregation pass -----------------------------------------------


def test_audit_rows_arrive_and_null_scores_fall_back_to_the_baseline():
    nan = float("nan")
    primary = [0.9, 0.1, 0.1, 0.9, nan, 0.1]
    candidate = [0.1, 0.9, 0.1, nan, 0.9, nan]
    audit = [False, False, True, False, False, False]
    pairs = make_pairs(primary, candidate, seconds=np.arange(6) * 60.0, audit=audit)
    pol = {"v1": ("primary", 0.5), "v2": ("candidate", 0.5)}
    r = simulate_load(pairs, pol, ReviewCapacity(10, 1.0)).summary
    # v1: rows 0, 3 by score, 2 by audit; row 4's primary is null and v1 is the baseline: no
    assert r["arrivals"].to_list() == [3, 4]
    # v2: rows 1, 4 by score, 2 by audit, row 3 (null) falls back to v1's decision (flag),
    # row 5 (null) falls back to v1's (no flag)
    assert r["null_scores"].to_list() == [1, 2]


def test_aggregation_merges_across_partitions():
    rng = np.random.default_rng(2)
    n = 4000
    pairs = make_pairs(
        rng.uniform(size=n),
        rng.uniform(size=n),
        seconds=np.sort(rng.uniform(0, 3 * 86400, n)),
        audit=rng.uniform(size=n) < 0.05,
    )
    pol = {"v1": ("primary", 0.8), "v2": ("candidate", 0.7)}
    agg = load_aggregation(pol, interval="15m")
    whole = as_source(pairs).aggregate(agg)
    parts = [agg.build(pairs.lazy().slice(i, 1000)).collect() for i in range(0, n, 1000)]
    assert merge_partials(parts, agg).equals(whole)
    # the counts are those of the rule applied row by row
    flags = pairs.select((pl.col(S.AUDIT) | (pl.col(S.CANDIDATE_SCORE) >= 0.7)).sum()).item()
    assert whole["arrivals_1"].sum() == flags
    assert whole["rows"].sum() == n


def test_inclusive_false_does_not_review_a_score_exactly_at_the_threshold():
    # 10 v2 scores exactly at 0.7, 5 above, 5 below, no audit: >= reviews 15, > reviews 5;
    # a null v2 score falls back to v1's rule, which follows the same convention
    c = [0.7] * 10 + [0.9] * 5 + [0.1] * 5 + [None]
    p = [0.1] * 20 + [0.5]
    pairs = make_pairs(p, np.array(c, dtype=float), seconds=np.linspace(0, 3600, 21))
    pol = {"v1": ("primary", 0.5), "v2": ("candidate", 0.7)}
    ge = simulate_load(pairs, pol, inclusive=True).summary
    gt = simulate_load(pairs, pol, inclusive=False).summary
    assert ge.filter(pl.col("policy") == "v2")["arrivals"].item() == 16  # 15 + fallback at 0.5
    assert gt.filter(pl.col("policy") == "v2")["arrivals"].item() == 5  # 0.5 > 0.5 is false
    assert gt.filter(pl.col("policy") == "v1")["arrivals"].item() == 0
    with pytest.raises(ValueError, match="'inclusive' parameter of simulate_load must be a bool"):
        simulate_load(pairs, pol, inclusive="no")


# --- staffing ------------------------------------------------------------------------------


def test_default_capacity_sizes_v1_at_85_percent():
    # 1000 v1 arrivals over 7 days of 5-minute intervals, 10-minute reviews:
    # work 10 000 reviewer-min over ~10 080 min -> 10 000 / (0.85 * window) -> 2 reviewers
    pairs = _flagged(np.linspace(0, 7 * 86400 - 1, 1000))
    rep = simulate_load(pairs, V1)
    window = 2016 * 5.0
    assert rep.capacity.reviewers == math.ceil(10_000 / (0.85 * window))
    assert "85%" in rep.capacity_note and "v1" in rep.capacity_note
    assert _row(rep, "v1")["utilisation"] <= 0.85
    given = simulate_load(pairs, V1, ReviewCapacity(4, 10.0))
    assert given.capacity_note == "given" and given.capacity.reviewers == 4


def test_reviewers_needed_solves_for_v1_performance():
    # v1: one arrival per 10 min, v2: 4 per 10 min; 5-minute reviews, one reviewer.
    # Fluid: v1 never waits (rho 0.5); v2 needs rho <= 1 at every instant -> 2 reviewers.
    sec = np.arange(0, 86400, 150.0)
    primary = np.where(np.arange(sec.size) % 4 == 0, 0.9, 0.1)
    pairs = make_pairs(primary, np.full(sec.size, 0.9), seconds=sec)
    pol = {"v1": ("primary", 0.5), "v2": ("candidate", 0.5)}
    rep = simulate_load(pairs, pol, ReviewCapacity(1, 5.0), interval="10m")
    v1, v2 = _row(rep, "v1"), _row(rep, "v2")
    assert v1["p95_wait_minutes"] == 0.0 and v1["reviewers_needed"] == 1.0
    assert v2["p95_wait_minutes"] > 0
    assert v2["reviewers_needed"] == 2.0 and v2["capacity_scale_needed"] == 2.0
    assert v2["reviewers_needed_vs_baseline"] == 2.0 and v2["arrivals_vs_baseline"] == 4.0
    # a schedule is scaled by k/20, rounded up per hour: doubling it is the smallest that works
    sched = ReviewCapacity([1] * 168, 5.0)
    r2 = _row(simulate_load(pairs, pol, sched, interval="10m"), "v2")
    assert r2["capacity_scale_needed"] == pytest.approx(2.0)


# --- the story on a trigger-shift week -----------------------------------------------------


def test_story_trigger_shift_week():
    # v2's scores sit higher: at v1's threshold it flags about twice as often; at its calibrated
    # threshold (the quantile matching v1's trigger rate) as often as v1.
    rng = np.random.default_rng(42)
    n = 40_000
    seconds = np.sort(rng.uniform(0, 7 * 86400, n))
    primary = rng.beta(1, 12, n)
    candidate = np.clip(primary * 1.35 + rng.normal(0, 0.01, n), 0, 1)
    t1 = float(np.quantile(primary, 0.98))
    t2 = float(np.quantile(candidate, 0.98))
    pairs = make_pairs(primary, candidate, seconds=seconds)
    pol = {"v1": ("primary", t1), "v2 naive": ("candidate", t1), "v2 calibrated": ("candidate", t2)}
    rep = simulate_load(pairs, pol, sla="4h")
    naive, calib, v1 = _row(rep, "v2 naive"), _row(rep, "v2 calibrated"), _row(rep, "v1")
    assert naive["arrivals_vs_baseline"] > 1.5
    assert calib["arrivals_vs_baseline"] == pytest.approx(1.0, abs=0.02)
    assert (
        naive["p95_wait_minutes"] > 24 * 60 and naive["reviewers_needed"] > v1["reviewers_needed"]
    )
    head = rep.headline()
    assert "v2 naive: backlog grows all week" in head
    assert "v2 calibrated: like v1" in head
    daily = rep.daily.filter(pl.col("policy") == "v2 naive")["backlog_end_of_day"].to_list()
    assert daily == sorted(daily) and daily[-1] > 100
    assert rep.daily.height == 3 * 7
    assert "v2 naive" in repr(rep)
    assert json.loads(json.dumps(rep.to_dict(), allow_nan=False))["headline"] == head
    sto = simulate_load(pairs, pol, sla="4h", mode="stochastic", n_seeds=2)
    assert sto.capacity == rep.capacity  # the same default sizing
    assert "v2 naive: backlog grows all week" in sto.headline()
    assert "v2 calibrated: like v1" in sto.headline()


# --- parameter errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "exact"}, "The 'mode' parameter of simulate_load must be one of"),
        ({"sla": "4 hours"}, "The 'sla' parameter of simulate_load must be a positive duration"),
        ({"interval": "0m"}, "The 'interval' parameter of simulate_load must be a positive"),
        ({"n_seeds": 1}, "The 'n_seeds' parameter of simulate_load must be an int >= 2. Got 1"),
        ({"seed": -1}, "The 'seed' parameter of simulate_load must be an int >= 0. Got -1"),
        ({"baseline": "v3"}, "The 'baseline' parameter of simulate_load must name one of"),
        ({"capacity": 3}, "The 'capacity' parameter of simulate_load must be a ReviewCapacity"),
        ({"policies": {}}, "The 'policies' parameter of simulate_load must be a non-empty"),
        ({"policies": {"x": ("v2", 0.5)}}, "The 'policies' parameter of simulate_load"),
    ],
)
def test_parameter_errors(kwargs, message):
    args = {"policies": V1, **kwargs}
    pairs = _flagged([1.0])
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        simulate_load(pairs, **args)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reviewers": -1}, "The 'reviewers' parameter of ReviewCapacity must be an int >= 0"),
        ({"reviewers": [1] * 24}, "The 'reviewers' parameter of ReviewCapacity"),
        ({"mean_service_minutes": 0}, "The 'mean_service_minutes' parameter of ReviewCapacity"),
        ({"service_cv": -0.5}, "The 'service_cv' parameter of ReviewCapacity must be a float"),
        ({"target_utilisation": 1.5}, "The 'target_utilisation' parameter of ReviewCapacity"),
    ],
)
def test_capacity_parameter_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ReviewCapacity(**kwargs)


def test_missing_column_names_the_nearest():
    pairs = _flagged([1.0]).rename({S.AUDIT: "audited"})
    with pytest.raises(ValueError, match=r"no column 'audit'.*Did you mean 'audited'"):
        simulate_load(pairs, V1, ReviewCapacity(1))


# --- CLI -----------------------------------------------------------------------------------


def test_cli_load(tmp_path, capsys):
    from shadowlab.cli import main

    rng = np.random.default_rng(1)
    n = 3000
    primary = rng.uniform(size=n)
    pairs = make_pairs(primary, primary**0.5, seconds=np.sort(rng.uniform(0, 2 * 86400, n)))
    path = tmp_path / "pairs.parquet"
    pairs.write_parquet(path)
    out = tmp_path / "load.json"
    code = main(
        [
            "load",
            str(path),
            "--primary-threshold",
            "0.9",
            "--candidate-threshold",
            str(0.9**0.5),
            "--service-minutes",
            "20",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "v2 naive" in text and "v2 calibrated" in text and "85%" in text
    data = json.loads(out.read_text())
    assert [r["policy"] for r in data["summary"]] == ["v1", "v2 naive", "v2 calibrated"]
    assert data["summary"][0]["arrivals"] == int((primary >= 0.9).sum())
    sched = tmp_path / "schedule.txt"
    sched.write_text(" ".join(["2"] * 168))
    assert (
        main(
            [
                "load",
                str(path),
                "--primary-threshold",
                "0.9",
                "--candidate-threshold",
                "0.95",
                "--reviewers",
                str(sched),
                "--mode",
                "stochastic",
                "--seeds",
                "2",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "load",
                str(path),
                "--primary-threshold",
                "0.9",
                "--candidate-threshold",
                "0.95",
                "--reviewers",
                "lots",
            ]
        )
        == 2
    )
    assert "--reviewers must be" in capsys.readouterr().err
