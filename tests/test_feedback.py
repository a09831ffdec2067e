"""Tests of shadowlab.feedback: hand-computed cases, edge cases, and a coverage study on
selective labels simulated from a known truth."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import WEEK_START, make_labels, make_pairs
from scipy import stats

from shadowlab import schema as S
from shadowlab.feedback import (
    AuditPlan,
    FeedbackReport,
    _psi,
    audit_rate_needed,
    feedback_diagnostics,
)

Z95 = float(stats.norm.ppf(0.975))


# --------------------------------------------------------------------------------------------
# A ten-request week computed by hand
# --------------------------------------------------------------------------------------------
#   id  v1   v2   audit  labels                      region
#   r0  .9   .9   -      review 1                    both flag
#   r1  .9   .9   -      review 0                    both flag
#   r2  .9   .1   -      review 0                    v1 only
#   r3  .1   .9   yes    audit 1                     v2 only, audited
#   r4  .1   .9   -      chargeback 1                v2 only
#   r5  .1   .9   -      (none)                      v2 only
#   r6  .1   .1   yes    audit 0                     neither
#   r7  .1   .1   -      (none)                      neither
#   r8  .1   .1   -      chargeback 1                neither
#   r9  .1   .1   yes    audit 0                     neither
# audit_rate 0.5 everywhere; request i at WEEK_START + i hours.

P = [0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
C = [0.9, 0.9, 0.1, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1]
AUDIT = [False, False, False, True, False, False, True, False, False, True]
AS_OF = WEEK_START + dt.timedelta(days=30)


def _ts(i: int) -> dt.datetime:
    return WEEK_START + dt.timedelta(hours=i)


def hand_pairs(**kw: object) -> pl.DataFrame:
    return make_pairs(
        P, C, seconds=[3600 * i for i in range(10)], audit=AUDIT, audit_rate=0.5, **kw
    )


def hand_labels() -> pl.DataFrame:
    rows = [
        ("r0", 1, "review", 2.0),
        ("r1", 0, "review", 2.0),
        ("r2", 0, "review", 2.0),
        ("r3", 1, "audit", 5.0),
        ("r4", 1, "chargeback", 240.0),
        ("r6", 0, "audit", 5.0),
        ("r8", 1, "chargeback", 240.0),
        ("r9", 0, "audit", 5.0),
    ]
    ids = [r[0] for r in rows]
    return make_labels(
        ids,
        [r[1] for r in rows],
        source=[r[2] for r in rows],
        delay_hours=[r[3] for r in rows],
        ts=[_ts(int(i[1:])) for i in ids],
    )


@pytest.fixture
def hand() -> FeedbackReport:
    return feedback_diagnostics(hand_pairs(), hand_labels(), 0.5, 0.5, as_of=AS_OF)


def test_crosstab_by_hand(hand: FeedbackReport) -> None:
    ct = {(r["primary_flag"], r["candidate_flag"]): r for r in hand.crosstab.iter_rows(named=True)}
    nn = ct[(False, False)]  # r6 r7 r8 r9
    assert (nn["requests"], nn["audited"], nn["positives"]) == (4, 2, 1)
    assert nn["labelled_share"] == pytest.approx(3 / 4)
    assert (nn["review_share"], nn["audit_share"], nn["chargeback_share"]) == (0.0, 0.5, 0.25)
    assert nn["positive_rate"] == pytest.approx(1 / 3)
    ny = ct[(False, True)]  # r3 r4 r5
    assert (ny["requests"], ny["audited"], ny["positives"]) == (3, 1, 2)
    assert ny["labelled_share"] == pytest.approx(2 / 3)
    assert ny["positive_rate"] == 1.0
    assert ct[(True, False)]["positive_rate"] == 0.0
    assert ct[(True, True)]["positive_rate"] == 0.5
    assert ct[(True, True)]["review_share"] == 1.0
    assert sum(r["share"] for r in ct.values()) == pytest.approx(1.0)
    assert hand.requests == 10


def test_inclusive_false_does_not_flag_a_score_at_the_threshold(hand: FeedbackReport) -> None:
    # every score is 0.1 or 0.9: at thresholds 0.9, >= flags as 0.5 does and > flags nothing
    def cells(rep: FeedbackReport) -> dict:
        return {
            (r["primary_flag"], r["candidate_flag"]): r["requests"]
            for r in rep.crosstab.iter_rows(named=True)
            if r["requests"]
        }

    args = (hand_pairs(), hand_labels(), 0.9, 0.9)
    ge = feedback_diagnostics(*args, as_of=AS_OF)
    gt = feedback_diagnostics(*args, as_of=AS_OF, inclusive=False)
    assert cells(ge) == cells(hand) == {(False, False): 4, (False, True): 3, (True, False): 1,
                                        (True, True): 2}  # fmt: skip
    assert cells(gt) == {(False, False): 10}
    assert gt.to_dict()["primary_threshold"] == 0.9  # reported as given
    with pytest.raises(ValueError, match="'inclusive' parameter of feedback_diagnostics"):
        feedback_diagnostics(*args, inclusive=1)


def test_risk_mass_and_bounds_by_hand(hand: FeedbackReport) -> None:
    # v2 flags r0 r1 r3 r4 r5; v1 did not flag and audit did not draw r4 r5 -> 2/5.
    assert hand.unlabelled_risk_mass == pytest.approx(0.4)
    assert hand.risk_mass_chargebacked == pytest.approx(0.5)  # r4 of {r4, r5}
    p = hand.candidate_precision
    # labelled v2 flags: r0=1 r1=0 r3=1 r4=1, unlabelled r5: naive 3/4, Manski [3/5, 4/5]
    assert (p.naive, p.lower, p.upper) == pytest.approx((0.75, 0.6, 0.8))
    r = hand.candidate_recall
    # positives outside v2's flags: r8 (labelled), unlabelled outside: r7.
    # naive 3/(3+1); Manski [3/(3+1+1), (3+1)/(3+1+1)]
    assert (r.naive, r.lower, r.upper) == pytest.approx((0.75, 0.6, 0.8))
    # v1: flags r0 r1 r2, all reviewed: precision 1/3 exactly, no uncertainty
    q = hand.primary_precision
    assert (q.naive, q.lower, q.upper, q.estimate, q.ci_low, q.ci_high) == pytest.approx(
        (1 / 3,) * 6
    )


def test_design_estimate_by_hand(hand: FeedbackReport) -> None:
    p = hand.candidate_precision
    # Reviewed stratum {r0, r1}: fully labelled, p_A = 1/2 with no sampling error.
    # Audit stratum {r3, r4, r5}: only r3 drawn (w = 1/0.5 = 2), p_B = 1; the chargeback on r4
    # is not used (outcome-dependent). Estimate (2 * 1/2 + 3 * 1) / 5 = 0.8.
    assert p.estimate == pytest.approx(0.8)
    assert p.audit_labels == 1
    # The MOVER lower limit (0.405, below) lies under the Manski lower bound 0.6: projected.
    assert (p.ci_low, p.ci_high) == pytest.approx((0.6, 0.8))


def test_design_interval_by_hand_wilson_mover() -> None:
    # Without r4's chargeback the Manski bounds are [2/5, 4/5] and the interval is unclipped.
    labels = hand_labels().filter(pl.col(S.REQUEST_ID) != "r4")
    p = feedback_diagnostics(hand_pairs(), labels, 0.5, 0.5, as_of=AS_OF).candidate_precision
    assert (p.lower, p.upper, p.estimate) == pytest.approx((0.4, 0.8, 0.8))
    # Effective sample (Σw)² / Σw(w-1) = 4 / 2 = 2. Wilson (1927) lower limit at x = n:
    # 1 / (1 + z²/n); upper limit 1. MOVER (Zou & Donner 2008) over the strata
    # {reviewed: 2 requests, p = 1/2 exactly; audit-only: 3 requests, p = 1}:
    # lower = (2 * 1/2 + 3 * l_B) / 5 = 0.4054, upper = (1 + 3) / 5.
    l_b = 1 / (1 + Z95**2 / 2)
    assert p.ci_low == pytest.approx((1 + 3 * l_b) / 5)
    assert p.ci_high == pytest.approx(0.8)


def test_wilson_matches_statsmodels_formula() -> None:
    # Wilson interval for 7/20 at 95%: textbook values 0.1812, 0.5671 (Newcombe 1998, method 3
    # gives 0.1812-0.5671 for 7/20 with z = 1.96).
    from shadowlab.feedback import _wilson

    lo, hi = _wilson(7 / 20, 20, 1.959964)
    assert (lo, hi) == pytest.approx((0.1812, 0.5671), abs=1e-4)
    assert _wilson(0.3, math.inf, 1.96) == (0.3, 0.3)


def test_label_delays_by_hand(hand: FeedbackReport) -> None:
    d = {r["source"]: r for r in hand.label_delays.iter_rows(named=True)}
    assert d["review"]["labels"] == 3 and d["review"]["mean_hours"] == pytest.approx(2.0)
    assert d["audit"]["labels"] == 3 and d["audit"]["max_hours"] == pytest.approx(5.0)
    assert d["chargeback"]["mean_hours"] == pytest.approx(240.0)
    # quantiles are read off the histogram (bin [4, 6) h holds 5 h) but never exceed the max
    assert 4.0 <= d["audit"]["p50_hours"] <= 5.0
    assert hand.label_counts == {
        "label_rows": 8,
        "after_as_of": 0,
        "duplicates": 0,
        "conflicting": 0,
        "other_sources": 0,
        "labelled_requests": 8,
        "matched": 8,
        "unknown_ids": 0,
    }


def test_repr_and_to_dict_are_readable_and_json_safe(hand: FeedbackReport) -> None:
    text = repr(hand)
    assert "unlabelled risk mass: 40.0%" in text
    assert "candidate precision: naive 75.0%, bounds [60.0%, 80.0%]" in text
    out = hand.to_dict()
    json.dumps(out, allow_nan=False)
    assert out["unlabelled_risk_mass"] == pytest.approx(0.4)
    assert out["crosstab"][0]["primary_flag"] is False
    assert "n0 = z²" in out["audit_plan"]["explain"]


# --------------------------------------------------------------------------------------------
# Edge cases
# --------------------------------------------------------------------------------------------


def test_no_audit_slice_gives_bounds_only() -> None:
    pairs = make_pairs(P, C, seconds=[3600 * i for i in range(10)])
    rep = feedback_diagnostics(pairs, hand_labels().filter(pl.col(S.SOURCE) != "audit"), 0.5, 0.5)
    p = rep.candidate_precision
    assert math.isnan(p.estimate) and "bounds only" in p.note
    assert not math.isnan(p.lower) and not math.isnan(p.upper)
    assert any("no audit slice" in w for w in rep.warnings)
    # no audit: r3 is unreviewed too, so the risk mass is 3/5
    assert rep.unlabelled_risk_mass == pytest.approx(0.6)
    # the plan still tells how many audits would be needed (planning value 0.5)
    assert rep.audit_plan.expected_precision == 0.5
    assert rep.audit_plan.current_rate == 0.0
    assert "bounds only" in repr(rep)


@pytest.mark.parametrize("labels", [None, "empty"])
def test_no_labels_at_all(labels: object) -> None:
    lab = pl.DataFrame(schema=S.LABEL_SCHEMA) if labels == "empty" else None
    rep = feedback_diagnostics(hand_pairs(), lab, 0.5, 0.5)
    p = rep.candidate_precision
    assert math.isnan(p.naive)
    assert (p.lower, p.upper) == (0.0, 1.0)
    assert (rep.candidate_recall.lower, rep.candidate_recall.upper) == (0.0, 1.0)
    assert any("no labels at all" in w for w in rep.warnings)
    assert rep.label_delays.height == 0
    # as_of defaults to the end of the last logged hour
    assert rep.as_of == WEEK_START + dt.timedelta(hours=10)
    json.dumps(rep.to_dict(), allow_nan=False)


def test_unknown_ids_and_duplicates_are_counted_latest_wins() -> None:
    extra = make_labels(
        ["ghost", "r1", "r1"],
        [1, 1, 0],
        source=["review", "chargeback", "review"],
        delay_hours=[3.0, 100.0, 1.0],
        ts=[_ts(0), _ts(1), _ts(1)],
    )
    lab = pl.concat([hand_labels(), extra])
    rep = feedback_diagnostics(hand_pairs(), lab, 0.5, 0.5, as_of=AS_OF)
    c = rep.label_counts
    # r1 now has review 0 (2 h), review 0 (1 h), chargeback 1 (100 h): two extra rows.
    assert (c["label_rows"], c["duplicates"], c["conflicting"]) == (11, 2, 1)
    assert (c["unknown_ids"], c["matched"]) == (1, 8)
    assert any("not in the pairs" in w for w in rep.warnings)
    assert any("latest label" in w for w in rep.warnings)
    # the chargeback on r1 is the latest: r1 counts as positive in the naive figure (4/4) ...
    assert rep.candidate_precision.naive == pytest.approx(1.0)
    # ... but the design estimate keeps r1's review label (0): unchanged 0.8
    assert rep.candidate_precision.estimate == pytest.approx(0.8)


def test_as_of_drops_later_labels() -> None:
    as_of = WEEK_START + dt.timedelta(days=5)  # before both chargebacks (240 h)
    rep = feedback_diagnostics(hand_pairs(), hand_labels(), 0.5, 0.5, as_of=as_of.isoformat())
    assert rep.label_counts["after_as_of"] == 2
    assert rep.as_of == as_of
    assert rep.candidate_precision.naive == pytest.approx(2 / 3)  # r0, r1, r3
    assert any("after as_of" in w for w in rep.warnings)


def test_maturity_right_censoring() -> None:
    # One request per day at noon; chargebacks arrive 50 h later. At as_of = day 7 noon the
    # requests of days 5 and 6 cannot have their chargeback yet (ages 47.5 h and 23.5 h, hour
    # midpoints), the others have it. The observed delays (all 50 h) sit in the [48, 60) h
    # bin, so F(47.5) = F(23.5) = 0 and F(71.5) = 1: pending 1 for the last two days, 0 before.
    n = 7
    pairs = make_pairs([0.1] * n, [0.1] * n, seconds=[86400 * i + 43200 for i in range(n)])
    lab = make_labels(
        [f"r{i}" for i in range(n)],
        [1] * n,
        source="chargeback",
        delay_hours=50.0,
        ts=[WEEK_START + dt.timedelta(days=i, hours=12) for i in range(n)],
    )
    as_of = WEEK_START + dt.timedelta(days=7, hours=12)
    rep = feedback_diagnostics(pairs, lab, 0.5, 0.5, as_of=as_of)
    assert rep.label_counts["after_as_of"] == 2
    m = rep.maturity
    assert m["pending_chargeback"].to_list() == [0, 0, 0, 0, 0, 1, 1]
    assert rep.immature_days == (dt.date(2026, 11, 7), dt.date(2026, 11, 8))
    assert rep.immature_share == pytest.approx(2 / 7)
    assert any("immature days" in w for w in rep.warnings)


def test_canary_arms_use_the_served_models_flag() -> None:
    served = [S.PRIMARY, S.CANDIDATE] * 5
    pairs = hand_pairs(served=served, traffic_pct=0.5)
    rep = feedback_diagnostics(pairs, hand_labels(), 0.5, 0.5, as_of=AS_OF)
    assert rep.arms is not None
    arms = {r["served"]: r for r in rep.arms.iter_rows(named=True)}
    # primary arm r0 r2 r4 r6 r8: v1 flags r0 r2 -> review rate 2/5; labels on r0 r2 r4 r6 r8
    assert arms[S.PRIMARY]["review_rate"] == pytest.approx(2 / 5)
    assert arms[S.PRIMARY]["label_rate"] == pytest.approx(1.0)
    assert arms[S.PRIMARY]["positive_rate"] == pytest.approx(3 / 5)
    # candidate arm r1 r3 r5 r7 r9: v2 flags r1 r3 r5 -> review rate 3/5; labels r1 r3 r9
    assert arms[S.CANDIDATE]["review_rate"] == pytest.approx(3 / 5)
    assert arms[S.CANDIDATE]["label_rate"] == pytest.approx(3 / 5)
    assert arms[S.CANDIDATE]["positive_rate"] == pytest.approx(1 / 3)
    # no canary -> no arms table
    assert feedback_diagnostics(hand_pairs(), hand_labels(), 0.5, 0.5).arms is None


def test_training_sets_and_composition_by_hand(hand: FeedbackReport) -> None:
    ts = {r["policy"]: r for r in hand.training_sets.iter_rows(named=True)}
    # v1 policy: v1 flags r0 r1 r2 + audit r3 r6 r9 = 6 requests, positives r0 r3 -> 2/6
    assert (ts["primary"]["size"], ts["primary"]["labelled"]) == (6, 6)
    assert ts["primary"]["positive_rate"] == pytest.approx(2 / 6)
    # v2 policy: r0 r1 r3 r4 r5 + r6 r9 = 7; seen (v1 or audit): r0 r1 r3 r6 r9, positives 2;
    # unseen r4 r5 get the audit rate on "v2 flags, v1 does not" (r3: 1) -> (2 + 2) / 7
    assert ts["candidate"]["size"] == 7
    assert ts["candidate"]["positive_rate"] == pytest.approx(4 / 7)
    assert ts["candidate"]["positive_rate_low"] == pytest.approx(3 / 7)  # r0 r3 r4
    assert ts["candidate"]["positive_rate_high"] == pytest.approx(4 / 7)  # all but r1 r6 r9
    comp = {r["feature"]: r["psi"] for r in hand.composition.iter_rows(named=True)}
    # candidate_score bins (10 bins): v1 set r0 r1 (bin 9), r2 r6 r9 (bin 1), r3 (bin 9)
    # -> shares {1: 3/6, 9: 3/6}; v2 set r0 r1 r3 r4 r5 (bin 9), r6 r9 (bin 1) -> {1: 2/7, 9: 5/7}
    e, a = np.array([3 / 6, 3 / 6]), np.array([2 / 7, 5 / 7])
    assert comp["candidate_score"] == pytest.approx(float(np.sum((e - a) * np.log(e / a))))


def test_local_psi_matches_drift_psi() -> None:
    drift = pytest.importorskip("shadowlab.drift")
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 6, 400), rng.integers(1, 8, 300)  # y has bins x never fills
    edges = np.arange(-0.5, 8.5)
    ref = drift.psi(x.astype(float), y.astype(float), bins=list(edges), binning="edges")
    ex = np.histogram(x, edges)[0].astype(float)
    ac = np.histogram(y, edges)[0].astype(float)
    assert _psi(ex, ac) == pytest.approx(ref.statistic, rel=1e-12)


def test_lazy_and_parquet_inputs_agree(tmp_path, hand: FeedbackReport) -> None:
    hand_pairs().write_parquet(tmp_path / "pairs.parquet")
    hand_labels().write_parquet(tmp_path / "labels.parquet")
    lazy = feedback_diagnostics(hand_pairs().lazy(), hand_labels().lazy(), 0.5, 0.5, as_of=AS_OF)
    assert lazy.to_dict() == hand.to_dict()
    pytest.importorskip("shadowlab.logs")
    disk = feedback_diagnostics(
        str(tmp_path / "pairs.parquet"), str(tmp_path / "labels.parquet"), 0.5, 0.5, as_of=AS_OF
    )
    assert disk.to_dict() == hand.to_dict()


# --------------------------------------------------------------------------------------------
# Parameter and data errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"primary_threshold": "x"},
            "The 'primary_threshold' parameter of feedback_diagnostics "
            "must be a finite float. Got 'x' instead.",
        ),
        ({"candidate_threshold": math.nan}, "The 'candidate_threshold' parameter"),
        (
            {"confidence": 1.0},
            "The 'confidence' parameter of feedback_diagnostics must be a "
            "float in the range (0, 1). Got 1.0 instead.",
        ),
        ({"margin": 0.0}, "The 'margin' parameter of feedback_diagnostics"),
        (
            {"score_bins": 1},
            "The 'score_bins' parameter of feedback_diagnostics must be an int "
            ">= 2. Got 1 instead.",
        ),
        ({"max_pending": 2}, "The 'max_pending' parameter"),
        ({"as_of": "yesterday"}, "The 'as_of' parameter"),
        ({"segments": "country"}, "The 'segments' parameter"),
        ({"labels": 3}, "The 'labels' parameter"),
    ],
)
def test_feedback_parameter_errors(kwargs: dict, message: str) -> None:
    args = {
        "pairs": hand_pairs(),
        "labels": hand_labels(),
        "primary_threshold": 0.5,
        "candidate_threshold": 0.5,
    }
    args.update(kwargs)
    with pytest.raises(ValueError) as err:
        feedback_diagnostics(**args)
    assert message in str(err.value)


def test_data_errors_name_the_column_and_fix() -> None:
    with pytest.raises(ValueError, match=r"no column 'audit'.*Fix"):
        feedback_diagnostics(hand_pairs().drop(S.AUDIT), hand_labels(), 0.5, 0.5)
    with pytest.raises(ValueError, match=r"no column 'label'.*Did you mean 'labl'"):
        feedback_diagnostics(hand_pairs(), hand_labels().rename({"label": "labl"}), 0.5, 0.5)
    bad = hand_labels().with_columns(pl.lit(2, dtype=pl.Int8).alias(S.LABEL))
    with pytest.raises(ValueError, match="expected 0 or 1"):
        feedback_diagnostics(hand_pairs(), bad, 0.5, 0.5)
    with pytest.raises(ValueError, match="no column 'channel'"):
        feedback_diagnostics(hand_pairs(), hand_labels(), 0.5, 0.5, segments=["channel"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"region_size": -1},
            "The 'region_size' parameter of audit_rate_needed must be an int >= 0. Got -1 instead.",
        ),
        ({"margin": 0.7}, "The 'margin' parameter of audit_rate_needed"),
        ({"confidence": 0}, "The 'confidence' parameter of audit_rate_needed"),
        ({"expected_precision": 1.5}, "The 'expected_precision' parameter"),
        ({"label_response": 0}, "The 'label_response' parameter"),
        ({"current_rate": 2.0}, "The 'current_rate' parameter"),
        ({"total_requests": -5}, "The 'total_requests' parameter"),
    ],
)
def test_audit_rate_needed_parameter_errors(kwargs: dict, message: str) -> None:
    args = {"region_size": 1000}
    args.update(kwargs)
    with pytest.raises(ValueError) as err:
        audit_rate_needed(**args)
    assert message in str(err.value)


# --------------------------------------------------------------------------------------------
# The power calculation
# --------------------------------------------------------------------------------------------


def test_audit_rate_needed_by_hand() -> None:
    # Cochran (1977) 4.1-4.2: n0 = 1.96² · 0.3 · 0.7 / 0.05² = 322.7; n = n0 / (1 + n0/10000)
    # = 312.6 -> 313 labels; 80% of audits come back labelled -> ceil(313 / 0.8) = 392 audits.
    plan = audit_rate_needed(
        10_000,
        margin=0.05,
        expected_precision=0.3,
        label_response=0.8,
        current_rate=0.01,
        total_requests=1_000_000,
    )
    n0 = Z95**2 * 0.21 / 0.0025
    assert plan.required_labels == math.ceil(n0 / (1 + n0 / 10_000)) == 313
    assert plan.required_audits == 392
    assert plan.rate == pytest.approx(0.0392)
    assert plan.weeks_at_current_rate == pytest.approx(3.92)
    assert isinstance(plan, AuditPlan)
    assert "392 audits" in repr(plan) and "uniform audit 39,200 reviews" in plan.explain()
    # worst case p = 0.5, infinite population: the classic 385 (z² / (4 m²) = 384.1)
    assert audit_rate_needed(10**12).required_labels == 385
    # a tiny region: cannot need more labels than it has
    assert audit_rate_needed(50).required_labels <= 50


def test_audit_plan_meets_its_margin_by_simulation() -> None:
    # Draw the planned audits from a region with the planning precision and check that the
    # Wilson half-width (with the finite-population correction the estimator applies,
    # n_eff = n / (1 - n/N)) comes out at the margin (up to the randomness of the draw).
    plan = audit_rate_needed(20_000, margin=0.03, expected_precision=0.4)
    rng = np.random.default_rng(7)
    from shadowlab.feedback import _wilson

    widths = []
    for _ in range(200):
        x = rng.binomial(plan.required_labels, 0.4)
        n = plan.required_labels
        lo, hi = _wilson(x / n, n / (1 - n / plan.region_size), Z95)
        widths.append((hi - lo) / 2)
    assert 0.03 * 0.97 <= np.median(widths) <= 0.03 * 1.01


# --------------------------------------------------------------------------------------------
# Coverage study on selective labels simulated from a known truth
# --------------------------------------------------------------------------------------------


def simulate_selective(
    n: int,
    seed: int,
    *,
    base: float = 0.02,
    audit_rate: float = 0.02,
    chargeback_share: float = 0.6,
    candidate_offset: float = 2.3,
) -> tuple[pl.DataFrame, pl.DataFrame, np.ndarray, np.ndarray]:
    """A week with the selection of a real fraud system: reviews where v1 flags (threshold
    0.5), an audit slice, chargebacks for part of the unreviewed fraud. v2 has less score noise
    (better ranking) but a lower offset, so it flags about twice as many requests as v1 (the
    trigger-shift story). Returns pairs, labels, truth and v2's flags."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < base).astype(np.int8)
    latent = rng.normal(0, 1, n) + 2.2 * y
    p1 = 1 / (1 + np.exp(-(latent + rng.normal(0, 0.8, n) - 3.0)))
    p2 = 1 / (1 + np.exp(-(latent + rng.normal(0, 0.5, n) - candidate_offset)))
    secs = np.sort(rng.uniform(0, 7 * 86400, n))
    ts = np.datetime64("2026-11-02T00:00:00", "us") + (secs * 1e6).astype("timedelta64[us]")
    audit = rng.random(n) < audit_rate
    f1 = p1 >= 0.5
    ids = pl.int_range(n, eager=True).cast(pl.String)
    pairs = pl.DataFrame(
        {
            S.TS: pl.Series(ts).dt.replace_time_zone("UTC"),
            S.REQUEST_ID: ids,
            S.PRIMARY_MODEL: "fraud:1.0.0",
            S.CANDIDATE_MODEL: "fraud:2.0.0",
            S.SERVED: S.PRIMARY,
            S.TRAFFIC_PCT: 0.0,
            S.PRIMARY_SCORE: p1,
            S.CANDIDATE_SCORE: p2,
            S.PRIMARY_ERROR: None,
            S.CANDIDATE_ERROR: None,
            S.PRIMARY_LATENCY: 1.0,
            S.CANDIDATE_LATENCY: 2.0,
            S.AUDIT: audit,
            S.AUDIT_RATE: audit_rate,
            "country": rng.choice(["US", "DE", "FR"], n),
        }
    ).with_columns(pl.col(c).cast(t) for c, t in S.PAIR_SCHEMA.items())
    chargeback = (y == 1) & ~f1 & ~audit & (rng.random(n) < chargeback_share)
    parts = []
    for mask, source, delay in (
        (f1, "review", rng.exponential(6, n)),
        (audit & ~f1, "audit", rng.exponential(12, n)),
        (chargeback, "chargeback", 24 * rng.uniform(3, 30, n)),
    ):
        idx = np.flatnonzero(mask)
        parts.append(
            pl.DataFrame(
                {
                    S.REQUEST_ID: ids.gather(idx),
                    S.LABEL: y[idx],
                    S.LABEL_TS: pl.Series(ts[idx] + (delay[idx] * 3.6e9).astype("timedelta64[us]")),
                    S.SOURCE: source,
                }
            )
        )
    labels = pl.concat(parts).with_columns(
        pl.col(S.LABEL).cast(pl.Int8), pl.col(S.LABEL_TS).dt.replace_time_zone("UTC")
    )
    return pairs, labels, y, p2 >= 0.5


def test_simulated_trigger_shift_is_what_it_claims() -> None:
    pairs, _, y, f2 = simulate_selective(50_000, 0)
    f1 = pairs[S.PRIMARY_SCORE].to_numpy() >= 0.5
    assert 1.6 <= f2.mean() / f1.mean() <= 2.6
    assert 0.015 <= y.mean() <= 0.025


def test_coverage_of_design_estimate_and_manski_bounds() -> None:
    """On 150 seeds: the interval of v2's precision covers the week's true precision at about
    the nominal 95% (accepted band [0.90, 0.99]: ±2.5 binomial standard errors of 150 draws is
    ±0.045), the Manski bounds contain it every time, and the naive all-label figure is biased
    upward (chargebacks reveal only fraud where v2 alone flags)."""
    seeds = range(150)
    cover_p = cover_r = 0
    naive_bias = []
    for seed in seeds:
        pairs, labels, y, f2 = simulate_selective(30_000, 1000 + seed)
        rep = feedback_diagnostics(pairs, labels, 0.5, 0.5, segments=[])
        truth_p = float(y[f2].mean())
        truth_r = float(y[f2].sum() / y.sum())
        p, r = rep.candidate_precision, rep.candidate_recall
        assert p.lower <= truth_p <= p.upper
        assert r.lower <= truth_r <= r.upper
        cover_p += p.ci_low <= truth_p <= p.ci_high
        cover_r += r.ci_low <= truth_r <= r.ci_high
        naive_bias.append(p.naive - truth_p)
    coverage_p = cover_p / len(seeds)
    assert 0.90 <= coverage_p <= 0.99, coverage_p
    # the recall interval is a conservative rectangle: at least nominal
    assert cover_r / len(seeds) >= 0.90, cover_r / len(seeds)
    assert np.mean(naive_bias) > 0.15 and np.mean(np.asarray(naive_bias) > 0) > 0.95


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def test_cli_prints_and_writes_json(tmp_path, capsys) -> None:
    pytest.importorskip("shadowlab.logs")
    from shadowlab.cli import main

    hand_pairs().write_parquet(tmp_path / "pairs.parquet")
    hand_labels().write_parquet(tmp_path / "labels.parquet")
    out = tmp_path / "out" / "feedback.json"
    code = main(
        [
            "feedback",
            str(tmp_path / "pairs.parquet"),
            "--labels",
            str(tmp_path / "labels.parquet"),
            "--primary-threshold",
            "0.5",
            "--candidate-threshold",
            "0.5",
            "--as-of",
            AS_OF.isoformat(),
            "--json",
            str(out),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "unlabelled risk mass: 40.0%" in text and "Audit plan: n0" in text
    data = json.loads(out.read_text())
    assert data["candidate_precision"]["estimate"] == pytest.approx(0.8)
    bad = main(
        [
            "feedback",
            str(tmp_path / "pairs.parquet"),
            "--primary-threshold",
            "0.5",
            "--candidate-threshold",
            "0.5",
            "--confidence",
            "2",
        ]
    )
    assert bad == 2
    assert "The 'confidence' parameter" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# The synthetic week (issue 3): truth from truth.parquet
# --------------------------------------------------------------------------------------------

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "samples" / "trigger-shift"


def _check_against_truth(pairs_path: Path, labels_path: Path, truth_path: Path, t1: float) -> None:
    truth = pl.read_parquet(truth_path)
    scores = (
        pl.scan_parquet(pairs_path / "**" / "*.parquet", hive_partitioning=False)
        .select(S.REQUEST_ID, S.CANDIDATE_SCORE)
        .collect()
        .join(truth, on=S.REQUEST_ID)
    )
    flags = (scores[S.CANDIDATE_SCORE] >= t1).fill_null(False)
    fraud = scores["is_fraud"]
    true_p = float(fraud.filter(flags).mean())  # type: ignore[arg-type]
    true_r = float(fraud.filter(flags).sum() / fraud.sum())
    # v2 judged at v1's production threshold: the trigger-shift story (about twice the flags)
    rep = feedback_diagnostics(pairs_path, labels_path, t1, t1, confidence=0.999)
    p, r = rep.candidate_precision, rep.candidate_recall
    assert p.lower <= true_p <= p.upper
    assert r.lower <= true_r <= r.upper
    # 99.9% interval: a false failure has probability 0.1% for a given week
    assert p.ci_low <= true_p <= p.ci_high, (p, true_p)
    # the naive all-label precision is biased upward: chargebacks reveal only the fraud among
    # v2's extra flags, reviews never see its false positives
    assert p.naive - true_p > 0.05, (p.naive, true_p)
    assert rep.unlabelled_risk_mass > 0.3


@pytest.mark.skipif(not (SAMPLE / "truth.parquet").exists(), reason="bundled sample week absent")
def test_bundled_trigger_shift_week_against_truth() -> None:
    manifest = json.loads((SAMPLE / "manifest.json").read_text())
    _check_against_truth(
        SAMPLE / "pairs", SAMPLE / "labels", SAMPLE / "truth.parquet", manifest["primary_threshold"]
    )


@pytest.mark.slow
def test_simulate_week_trigger_shift_against_truth(tmp_path: Path) -> None:
    synth = pytest.importorskip("shadowlab.synth")
    week = synth.simulate_week(tmp_path / "week", scenario="trigger-shift", rows=20_000, seed=2)
    _check_against_truth(week.pairs_dir, week.labels_dir, week.truth_path, week.primary_threshold)


class _SplitSource:
    """A Source that runs every summary on three slices and merges the partials, as an engine
    with three partitions would (the issue-11 mergeability contract)."""

    engine = "split"

    def __init__(self, frame: pl.DataFrame) -> None:
        self.frame = frame

    def aggregate(self, agg):
        from shadowlab.engine import merge_partials

        n = self.frame.height
        cuts = [0, n // 3, 2 * n // 3, n]
        parts = [
            agg.build(self.frame.slice(a, b - a).lazy()).collect()
            for a, b in itertools.pairwise(cuts)
        ]
        return merge_partials(parts, agg)

    def pull(self, predicate, columns):
        return self.frame.filter(predicate).select(columns)

    def collect_schema(self):
        return self.frame.schema


def test_partitioned_summaries_merge_to_the_same_report() -> None:
    pairs, labels, _, _ = simulate_selective(20_000, 11)
    whole = feedback_diagnostics(pairs, labels, 0.5, 0.5).to_dict()
    split = feedback_diagnostics(_SplitSource(pairs), labels, 0.5, 0.5).to_dict()
    assert split["crosstab"] == whole["crosstab"]
    assert split["label_delays"] == whole["label_delays"]  # integer-microsecond sums: exact
    assert split["maturity"] == whole["maturity"]
    assert split["composition"] == whole["composition"]
    for key in ("candidate_precision", "candidate_recall", "primary_precision"):
        for field, value in whole[key].items():
            assert split[key][field] == (
                pytest.approx(value, rel=1e-12) if isinstance(value, float) else value
            ), (key, field)


@pytest.mark.spark
@pytest.mark.slow
@pytest.mark.skipif(not (SAMPLE / "truth.parquet").exists(), reason="bundled sample week absent")
def test_spark_engine_gives_the_same_report() -> None:
    pytest.importorskip("pyspark")
    import shutil as _shutil

    if _shutil.which("java") is None:
        pytest.skip("Java is not installed")
    from shadowlab.engines.spark import read_labels, read_pairs, spark_session

    t1 = json.loads((SAMPLE / "manifest.json").read_text())["primary_threshold"]
    spark = spark_session(
        "local[2]",
        config={"spark.sql.files.maxPartitionBytes": "1m", "spark.sql.files.openCostInBytes": "1"},
    )
    try:
        on_spark = feedback_diagnostics(
            read_pairs(spark, str(SAMPLE / "pairs")),
            read_labels(spark, str(SAMPLE / "labels")),
            t1,
            t1,
        )
    finally:
        spark.stop()
    on_polars = feedback_diagnostics(SAMPLE / "pairs", SAMPLE / "labels", t1, t1)
    assert on_spark.to_dict() == on_polars.to_dict()


# --------------------------------------------------------------------------------------------
# The cell summary without a join of the whole week
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("unit", ["us", "ns", "ms"])
@pytest.mark.parametrize("tz", [None, "UTC", "Asia/Kolkata", "America/New_York"])
def test_integer_hour_key_equals_truncate(unit: str, tz: str | None) -> None:
    from shadowlab.feedback import _hour_from_key, _hour_key

    rng = np.random.default_rng(0)
    # before and after 1970 (floor, not truncation toward zero), in every unit and zone
    us = rng.integers(-4 * 10**15, 4 * 10**15, 500)
    ts = pl.Series(S.TS, us).cast(pl.Datetime("us")).dt.cast_time_unit(unit)  # type: ignore[arg-type]
    if tz:
        ts = ts.dt.replace_time_zone("UTC").dt.convert_time_zone(tz)
    frame = ts.to_frame()
    want = frame.select(pl.col(S.TS).dt.truncate("1h").alias("hour"))
    got = frame.select(_hour_key(ts.dtype).alias("hour")).select(
        _hour_from_key(ts.dtype).alias("hour")
    )
    assert got.schema == want.schema
    assert got.equals(want)


class _LeakyPullSource(_SplitSource):
    """Pulls every labelled/audited row plus a third of the others, as 64-bit hash collisions
    of request ids would (in the extreme)."""

    def pull(self, predicate, columns):
        extra = pl.int_range(pl.len()) % 3 == 0
        return self.frame.filter(predicate | extra).select(columns)


def test_extra_pulled_rows_do_not_change_the_report() -> None:
    pairs, labels, _, _ = simulate_selective(20_000, 12)
    exact = feedback_diagnostics(_SplitSource(pairs), labels, 0.5, 0.5).to_dict()
    leaky = feedback_diagnostics(_LeakyPullSource(pairs), labels, 0.5, 0.5).to_dict()
    assert leaky == exact


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])
def test_counts_and_composition_fold_equals_build(rng, zone):
    # PolarsSource folds the streamed chunks (numpy counts, the composition's build on the
    # review-set rows); Spark may run build. However the rows are chunked, the merged summary
    # is the same: hours out of order, a half-hour zone, null ts and null traffic shares.
    from shadowlab.engine import merge_partials
    from shadowlab.feedback import _counts_and_composition

    n = 2000
    p = rng.uniform(0, 1, n)
    p[rng.choice(n, 30)] = np.nan
    df = make_pairs(
        p,
        rng.uniform(0, 1, n),
        seconds=rng.permutation(np.linspace(0, 7 * 86400 - 1, n)),
        audit=rng.random(n) < 0.05,
        audit_rate=0.05,
        traffic_pct=5.0,
        served=rng.choice(["primary", "candidate"], n).tolist(),
        country=rng.choice(["US", "DE", None], n).tolist(),
    ).with_columns(
        pl.col("ts").dt.convert_time_zone(zone),
        pl.when(pl.int_range(pl.len()) % 101 == 3)
        .then(None)
        .otherwise(pl.col("traffic_pct"))
        .alias("traffic_pct"),
    )
    df = df.with_columns(
        pl.when(pl.int_range(pl.len()) == 11).then(None).otherwise(pl.col("ts")).alias("ts")
    )
    agg = _counts_and_composition(0.5, 0.6, df.schema["ts"], ["country"], 10)
    want = merge_partials([agg.build(df.lazy()).collect()], agg)
    prepared = agg.prepare(df.lazy()).collect()
    for size in (1, 89, n):
        chunks = [prepared.slice(o, size) for o in range(0, n, size)]
        assert merge_partials([agg.fold(chunks)], agg).equals(want), size


@pytest.mark.skipif(not (SAMPLE / "truth.parquet").exists(), reason="bundled sample week absent")
def test_given_pulled_pairs_replace_the_pull() -> None:
    # The gate pulls the audited and labelled pairs once and hands them over; any superset of
    # those rows in scan order (here: the whole week) gives the report the own pull gives.
    from shadowlab.logs import scan_labels, scan_pairs

    t1 = json.loads((SAMPLE / "manifest.json").read_text())["primary_threshold"]
    pairs, labels = scan_pairs(SAMPLE / "pairs"), scan_labels(SAMPLE / "labels")
    own = feedback_diagnostics(pairs, labels, t1, t1 * 1.5)
    given = feedback_diagnostics(pairs, labels, t1, t1 * 1.5, pulled_pairs=pairs.collect())
    assert given.to_dict() == own.to_dict()
    with pytest.raises(ValueError, match=r"pulled_pairs lacks column\(s\) \['audit_rate'\]"):
        feedback_diagnostics(
            pairs, labels, t1, t1 * 1.5, pulled_pairs=pairs.collect().drop("audit_rate")
        )
