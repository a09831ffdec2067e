"""operating_point_metrics against sklearn.metrics / sklearn.calibration and hand formulas; the
label-free estimate against known truth."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import make_labels, make_pairs
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, precision_score, recall_score, roc_auc_score

from shadowlab import accuracy as A
from shadowlab.accuracy import (
    SELECTIVE_LABELS_WARNING,
    expected_calibration_error,
    operating_point_metrics,
    reliability_curve,
)


def world(rng, n=6000, audit_rate=0.1, power=1.0):
    """Scores whose truth is known: y ~ Bernoulli(prob); v1 ~ prob, v2 = prob**power (monotone)."""
    prob = rng.beta(0.4, 6, n)
    y = (rng.uniform(size=n) < prob).astype(int)
    p = np.clip(prob + rng.normal(0, 0.02, n), 0, 1)
    c = prob**power
    audit = rng.uniform(size=n) < audit_rate
    return prob, y, p, c, audit


def labelled_week(rng, **kw):
    prob, y, p, c, audit = world(rng, **kw)
    t1, t2 = float(np.quantile(p, 0.95)), float(np.quantile(c, 0.95))
    df = make_pairs(p, c, audit=audit, audit_rate=kw.get("audit_rate", 0.1))
    idx = np.flatnonzero((p >= t1) | audit)  # reviews where v1 flagged, plus the audit slice
    labels = make_labels([f"r{i}" for i in idx], y[idx].tolist())
    return df, labels, (prob, y, p, c, audit), t1, t2, idx


def test_point_metrics_match_sklearn(rng):
    df, labels, (_, y, p, c, audit), t1, t2, idx = labelled_week(rng)
    res = operating_point_metrics(df, labels, t1, t2, n_boot=20)
    yl = y[idx]
    for model, s, t in (("primary", p, t1), ("candidate", c, t2)):
        sl = s[idx]
        est = {m: res.metric("all_labels", model, m)[0] for m in ("precision", "recall")}
        assert est["precision"] == pytest.approx(precision_score(yl, sl >= t))
        assert est["recall"] == pytest.approx(recall_score(yl, sl >= t))
        assert res.metric("all_labels", model, "average_precision")[0] == pytest.approx(
            average_precision_score(yl, sl)
        )
        assert res.metric("all_labels", model, "roc_auc")[0] == pytest.approx(roc_auc_score(yl, sl))
        # audit slice, Horvitz–Thompson weights 1/audit_rate (constant here, so = unweighted)
        a = audit
        assert res.metric("audit", model, "precision")[0] == pytest.approx(
            precision_score(y[a], s[a] >= t, sample_weight=np.full(a.sum(), 10.0))
        )
    diff = res.metric("audit", "difference", "average_precision")[0]
    assert diff == pytest.approx(
        average_precision_score(y[audit], c[audit]) - average_precision_score(y[audit], p[audit])
    )
    assert res.n_labelled == idx.size and res.n_audit_labelled == audit.sum()
    fr = res.flag_rates.row(0, named=True)
    assert fr["flags"] == np.sum(p >= t1) and fr["labelled_share"] == 1.0  # v1's flags all reviewed
    assert res.flag_rates.row(1, named=True)["labelled_share"] < 1.0  # v2's are not
    assert res.warning == SELECTIVE_LABELS_WARNING and "biased" in res.warning


def test_ht_weights_with_varying_audit_rate(rng):
    n = 3000
    p = rng.uniform(0, 1, n)
    y = (rng.uniform(size=n) < p).astype(int)
    audit = rng.uniform(size=n) < 0.3
    df = make_pairs(p, p, audit=audit)
    rates = np.where(np.arange(n) < n // 2, 0.1, 0.4)
    df = df.with_columns(pl.Series("audit_rate", rates))
    labels = make_labels([f"r{i}" for i in np.flatnonzero(audit)], y[audit].tolist())
    res = operating_point_metrics(df, labels, 0.7, 0.7, n_boot=20)
    w = 1 / rates[audit]
    f = p[audit] >= 0.7
    expect = np.sum(w * y[audit] * f) / np.sum(w * f)
    assert res.metric("audit", "primary", "precision")[0] == pytest.approx(expect)
    assert res.metric("audit", "primary", "average_precision")[0] == pytest.approx(
        average_precision_score(y[audit], p[audit], sample_weight=w)
    )


def test_weighted_ranked_metrics_equal_sklearn_and_resampling(rng):
    s = np.round(rng.uniform(0, 1, 300), 2)  # ties
    y = (rng.uniform(size=300) < s).astype(int)
    counts = rng.integers(0, 4, 300).astype(float)
    ap, auc = A._Ranked(s, y).ap_auc(counts)
    assert ap == pytest.approx(average_precision_score(y, s, sample_weight=counts))
    assert auc == pytest.approx(roc_auc_score(y, s, sample_weight=counts))
    rep = np.repeat(np.arange(300), counts.astype(int))  # integer weights = repeated rows
    assert ap == pytest.approx(average_precision_score(y[rep], s[rep]))


def test_latest_label_wins_and_unmatched(rng):
    df = make_pairs([0.9, 0.1, 0.8, 0.2], [0.9, 0.1, 0.8, 0.2], audit=[True] * 4, audit_rate=0.5)
    t0 = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
    labels = make_labels(
        ["r0", "r0", "r1", "r2", "r3", "zz"],
        [0, 1, 0, 1, 0, 1],
        source=["review", "chargeback", "audit", "review", "audit", "review"],
        delay_hours=[1, 400, 1, 1, 1, 1],
        ts=[t0] * 6,
    )
    res = operating_point_metrics(df, labels, 0.5, 0.5, n_boot=10)
    # r0's later chargeback (1) overrides the review (0): both flags are true positives
    assert res.metric("audit", "primary", "precision")[0] == 1.0
    assert res.n_unmatched_labels == 1 and res.n_labelled == 4
    assert any("not among the valid pairs" in n for n in res.notes)


def test_bootstrap_is_seeded_and_brackets(rng):
    df, labels, _, t1, t2, _ = labelled_week(rng, n=3000)
    a = operating_point_metrics(df, labels, t1, t2, seed=5, n_boot=40)
    b = operating_point_metrics(df, labels, t1, t2, seed=5, n_boot=40)
    c = operating_point_metrics(df, labels, t1, t2, seed=6, n_boot=40)
    assert a.metrics.equals(b.metrics)
    assert not a.metrics.equals(c.metrics)
    for row in a.metrics.filter(pl.col("model") != "difference").iter_rows(named=True):
        if math.isfinite(row["ci_low"]):
            assert (
                row["ci_low"] <= row["estimate"] + 1e-9 and row["estimate"] <= row["ci_high"] + 1e-9
            )


@pytest.mark.parametrize("strategy", ["quantile", "uniform"])
def test_reliability_curve_matches_sklearn(rng, strategy):
    s = rng.beta(0.5, 3, 2000)
    y = (rng.uniform(size=2000) < s).astype(int)
    prob_true, prob_pred = calibration_curve(y, s, n_bins=8, strategy=strategy)
    curve = reliability_curve(y, s, n_bins=8, strategy=strategy)
    np.testing.assert_allclose(curve["observed_rate"].to_numpy(), prob_true)
    np.testing.assert_allclose(curve["mean_score"].to_numpy(), prob_pred)
    # ECE by its definition sum_b n_b/N |obs_b - mean_b| (Guo et al. 2017, eq. 3)
    w = curve["weight"].to_numpy()
    expect = np.sum(w * np.abs(prob_true - prob_pred)) / 2000
    assert expected_calibration_error(y, s, n_bins=8, strategy=strategy) == pytest.approx(expect)
    assert math.isnan(expected_calibration_error(np.array([]), np.array([])))


def test_label_free_estimate_calibrated_vs_miscalibrated(rng):
    n = 40_000
    _, y, p, c, audit = world(rng, n=n, power=0.35)  # v2 = prob**0.35: badly overconfident
    t1, t2 = float(np.quantile(p, 0.97)), float(np.quantile(c, 0.97))
    df = make_pairs(p, c, audit=audit, audit_rate=0.1)
    idx = np.flatnonzero((p >= t1) | audit)
    labels = make_labels([f"r{i}" for i in idx], y[idx].tolist())
    m = 20_000  # an offline holdout from the same world
    prob_r = rng.beta(0.4, 6, m)
    y_r = (rng.uniform(size=m) < prob_r).astype(int)
    ref = pl.DataFrame(
        {
            "model": ["primary"] * m + ["candidate"] * m,
            "score": np.r_[np.clip(prob_r + rng.normal(0, 0.02, m), 0, 1), prob_r**0.35],
            "label": np.r_[y_r, y_r],
        }
    )
    true_prec = y[c >= t2].mean()
    true_rec = y[c >= t2].sum() / y.sum()
    raw = operating_point_metrics(df, labels, t1, t2, reference=ref, n_boot=10)
    est = {r["model"]: r for r in raw.estimate.iter_rows(named=True)}
    assert est["primary"]["status"] == "calibrated" and est["primary"]["trusted"]
    assert est["candidate"]["status"] == "miscalibrated" and not est["candidate"]["trusted"]
    assert "expected from the scores" in est["candidate"]["reason"]
    assert abs(est["candidate"]["expected_precision"] - true_prec) > 0.2  # raw scores mislead
    # the v1 estimate (calibrated scores) is close to the truth of this very week
    assert est["primary"]["expected_precision"] == pytest.approx(y[p >= t1].mean(), abs=0.04)
    fixed = operating_point_metrics(df, labels, t1, t2, reference=ref, n_boot=10, recalibrate=True)
    est = {r["model"]: r for r in fixed.estimate.iter_rows(named=True)}
    assert est["candidate"]["probabilities"] == "isotonic" and est["candidate"]["trusted"]
    assert est["candidate"]["expected_precision"] == pytest.approx(true_prec, abs=0.04)
    assert est["candidate"]["expected_recall"] == pytest.approx(true_rec, abs=0.05)
    assert est["candidate"]["expected_flags"] == np.sum(c >= t2)
    # reference AP comparison: sklearn on the holdout rows
    refrow = fixed.reference.filter(pl.col("model") == "candidate").row(0, named=True)
    assert refrow["reference_ap"] == pytest.approx(average_precision_score(y_r, prob_r**0.35))
    assert refrow["production_slice"] == "audit"
    cal = fixed.calibration.filter(
        (pl.col("data") == "audit") & (pl.col("model") == "candidate")
    ).sort("probabilities")
    assert cal["ece"][0] < cal["ece"][1]  # isotonic beats raw out of sample
    json.dumps(fixed.to_dict())
    assert "label-free candidate (isotonic)" in repr(fixed)


def test_one_class_slice_gives_nan_and_a_note(rng):
    df = make_pairs([0.9, 0.2, 0.7], [0.8, 0.1, 0.6], audit=[True, True, False], audit_rate=0.5)
    labels = make_labels(["r0", "r1", "r2"], [0, 0, 1])
    res = operating_point_metrics(df, labels, 0.5, 0.5, n_boot=10)
    assert math.isnan(res.metric("audit", "primary", "average_precision")[0])
    assert any("only one class" in n for n in res.notes)
    assert not res.estimate["trusted"].any()  # no positive in the audit slice to check against


SAMPLE = Path(__file__).resolve().parents[1] / "data" / "samples" / "trigger-shift"


@pytest.fixture(scope="module")
def simulated_week(tmp_path_factory) -> Path:
    """The bundled sample week when present, else a small freshly simulated one (slow: the
    generator trains both models, ~50 s of CPU)."""
    if (SAMPLE / "manifest.json").exists():
        return SAMPLE
    synth = pytest.importorskip("shadowlab.synth")
    if not hasattr(synth, "simulate_week"):
        pytest.skip("shadowlab.synth.simulate_week has not landed yet")
    week = tmp_path_factory.mktemp("sim") / "week"
    synth.simulate_week(week, scenario="trigger-shift", rows=60_000, seed=3)
    return week


@pytest.mark.slow
def test_label_free_estimate_on_simulated_week(simulated_week):
    from shadowlab.logs import scan_labels, scan_pairs
    from shadowlab.thresholds import calibrate_threshold

    week = simulated_week
    manifest = json.loads((week / "manifest.json").read_text())
    t1 = float(manifest["primary_threshold"])
    pairs = scan_pairs(week / "pairs")
    cal = calibrate_threshold(pairs, t1)
    args = (pairs, scan_labels(week / "labels"), t1, cal.threshold)
    raw = operating_point_metrics(*args, reference=week / "reference.parquet", n_boot=20)
    # v2's scores went through a post-hoc recalibration (a = 0.8): the raw estimate is flagged
    assert raw.estimate.filter(pl.col("model") == "candidate")["status"][0] == "miscalibrated"
    res = operating_point_metrics(
        *args, reference=week / "reference.parquet", recalibrate=True, n_boot=20
    )
    truth = pl.read_parquet(week / "truth.parquet").select("request_id", "is_fraud")
    scored = pairs.select("request_id", "primary_score", "candidate_score").collect()
    joined = scored.join(truth, on="request_id").drop_nulls()
    y = joined["is_fraud"].to_numpy()
    for row in res.estimate.iter_rows(named=True):
        assert row["probabilities"] == "isotonic"
        s = joined[f"{row['model']}_score"].to_numpy()
        flagged = s >= row["threshold"]
        # the label-free estimate against ground truth (seed 3, 60k rows: v1 precision 0.176,
        # recall 0.433, v2 0.276 / 0.679; estimated 0.189 / 0.449 and 0.275 / 0.698)
        assert row["expected_precision"] == pytest.approx(y[flagged].mean(), abs=0.05), row
        assert row["expected_recall"] == pytest.approx(y[flagged].sum() / y.sum(), abs=0.06), row


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"primary_threshold": math.nan}, "The 'primary_threshold' parameter of operating_point"),
        ({"candidate_threshold": "0.5"}, "The 'candidate_threshold' parameter of operating_point"),
        ({"seed": 1.5}, "The 'seed' parameter of operating_point_metrics must be an int"),
        ({"n_boot": 3}, "The 'n_boot' parameter of operating_point_metrics must be an int >= 10"),
        ({"confidence": 2.0}, "The 'confidence' parameter of operating_point_metrics"),
        ({"inclusive": "yes"}, "The 'inclusive' parameter of operating_point_metrics"),
        ({"recalibrate": True}, "The 'recalibrate' parameter of operating_point_metrics needs"),
        ({"n_bins": 1}, "The 'n_bins' parameter of operating_point_metrics must be an int >= 2"),
        ({"strategy": "kmeans"}, "The 'strategy' parameter of operating_point_metrics"),
        ({"ece_limit": 0}, "The 'ece_limit' parameter of operating_point_metrics"),
        ({"labels": 5}, "The 'labels' parameter of operating_point_metrics"),
    ],
)
def test_parameter_errors(kwargs, message):
    df = make_pairs([0.1, 0.9], [0.2, 0.8])
    args = {
        "labels": make_labels(["r0", "r1"], [0, 1]),
        "primary_threshold": 0.5,
        "candidate_threshold": 0.5,
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        operating_point_metrics(
            df,
            args.pop("labels"),
            args.pop("primary_threshold"),
            args.pop("candidate_threshold"),
            **args,
        )


def test_data_errors():
    df = make_pairs([0.1, 0.9], [0.2, 0.8])
    bad_ref = pl.DataFrame({"model": ["v2"], "score": [0.1], "label": [0]})
    with pytest.raises(ValueError, match="reference column 'model' holds"):
        operating_point_metrics(df, make_labels(["r0"], [0]), 0.5, 0.5, reference=bad_ref)
    with pytest.raises(ValueError, match="Input reference has no column 'label'"):
        operating_point_metrics(
            df, make_labels(["r0"], [0]), 0.5, 0.5, reference=bad_ref.drop("label")
        )
    with pytest.raises(ValueError, match="Input labels has no column 'label_ts'"):
        operating_point_metrics(df, make_labels(["r0"], [0]).drop("label_ts"), 0.5, 0.5)


@pytest.mark.parametrize("inclusive", [True, False])
def test_compressed_bootstrap_matches_row_bootstrap(rng, monkeypatch, inclusive):
    n = 20_000
    _, y, p, c, _ = world(rng, n=n)
    p, c = np.round(p, 3), np.round(c, 3)  # ties, so '>=' and '>' differ
    w = np.where(rng.uniform(size=n) < 0.5, 10.0, 20.0)  # two audit rates
    thresholds = {"primary": float(np.quantile(p, 0.95)), "candidate": float(np.quantile(c, 0.95))}
    scores = {"primary": p, "candidate": c}
    got = A._compressed_bootstrap(
        y.astype(float), scores, w, thresholds, inclusive, 400, np.random.default_rng(1)
    )
    for m in ("primary", "candidate"):
        flag = scores[m] >= thresholds[m] if inclusive else scores[m] > thresholds[m]
        # precision, recall, flag rate only depend on the cells: the binned point is exact
        np.testing.assert_allclose(got[f"_point_{m}"][:3], A._point_metrics(y, flag, w), rtol=1e-12)
    # and the whole slice agrees with the row-level bootstrap on interval widths
    frame = pl.DataFrame({"label": y, "primary_score": p, "candidate_score": c})
    args = (frame, w, thresholds, inclusive, 300, np.random.default_rng(2), 0.95, [])
    exact = pl.DataFrame(A._slice_metrics("audit", *args))
    monkeypatch.setattr(A, "_EXACT_BOOT_ROWS", 1000)
    fast = pl.DataFrame(A._slice_metrics("audit", *args))
    assert fast["estimate"].to_list() == exact["estimate"].to_list()
    width = lambda f: (f["ci_high"] - f["ci_low"]).to_numpy()  # noqa: E731
    np.testing.assert_allclose(width(fast), width(exact), rtol=0.25, atol=0.004)


def test_descending_order_is_sklearns_stable_descending_permutation(rng):
    # sklearn's array-API argsort(descending=True, stable=True), written with numpy: ties in
    # input order; -0.0 ties with 0.0; NaN first
    def reference(s):
        return s.size - 1 - np.flip(np.argsort(np.flip(s), kind="stable"))

    cases = [
        np.round(rng.random(300_000), 3),
        rng.random(1000),
        np.array([0.0, -0.0, 1.0, np.nan, 0.0, -0.0, np.nan, 1.0, 0.5, -np.inf, np.inf]),
        np.array([0.5]),
        np.array([], float),
    ]
    for s in cases:
        got = A._descending_order(s)
        assert got.dtype == np.int64
        assert np.array_equal(got, reference(s))


@pytest.mark.parametrize("weighted", [False, True])
def test_one_sort_ap_auc_equal_sklearn_bit_for_bit(rng, weighted):
    # ties (rounded scores), varying weights, and slices ranked by restricting one order
    for n in (2, 3, 50, 4000):
        s = np.round(rng.beta(0.5, 3, n), 3)
        y = (rng.uniform(size=n) < s).astype(float)
        y[:2] = (0.0, 1.0)
        w = rng.choice([1.0, 2.5, 10.0, 1 / 0.03], n) if weighted else None
        order = A._descending_order(s)
        assert np.array_equal(order, np.argsort(-s, kind="stable"))
        ap, auc = A._ap_auc(y, s, w, order)
        assert ap == average_precision_score(y, s, sample_weight=w)
        assert auc == roc_auc_score(y, s, sample_weight=w)
        keep = rng.uniform(size=n) < 0.4
        keep[:2] = True
        sub = A._restrict_order(order, keep)
        assert np.array_equal(sub, A._descending_order(s[keep]))
        ws = None if w is None else w[keep]
        ap, auc = A._ap_auc(y[keep], s[keep], ws, sub)
        assert ap == average_precision_score(y[keep], s[keep], sample_weight=ws)
        assert auc == roc_auc_score(y[keep], s[keep], sample_weight=ws)


def test_ranking_metrics_fall_back_to_sklearn_on_unusual_input(rng):
    s = rng.uniform(size=200)
    y = (rng.uniform(size=200) < s).astype(float)
    w = rng.uniform(size=200)
    w[:5] = 0.0  # sklearn drops zero-weight rows
    got = A._ranking_metrics(y, s, w, None)
    assert got == (
        average_precision_score(y, s, sample_weight=w),
        roc_auc_score(y, s, sample_weight=w),
    )


def test_given_labelled_pairs_replace_the_pull(rng):
    # run_gate hands over the labelled pairs it pulled for its counts; same result as pulling
    df, labels, _, t1, t2, _ = labelled_week(rng, n=3000)
    df = df.with_columns(
        pl.when(pl.int_range(pl.len()) % 97 == 0)
        .then(None)
        .otherwise(pl.col("candidate_score"))
        .alias("candidate_score")
    )
    pulled = operating_point_metrics(df, labels, t1, t2, seed=3, n_boot=30)
    ids = labels["request_id"].implode()
    given = df.filter(pl.col("request_id").is_in(ids))  # invalid rows too: dropped inside
    res = operating_point_metrics(df, labels, t1, t2, seed=3, n_boot=30, labelled_pairs=given)
    assert res.metrics.equals(pulled.metrics)
    assert res.calibration.equals(pulled.calibration)
    assert res.flag_rates.equals(pulled.flag_rates)
    assert (res.n_labelled, res.n_audit_labelled) == (pulled.n_labelled, pulled.n_audit_labelled)
    assert res.passes[1]["rows_moved"] == 0
    with pytest.raises(ValueError, match="no column 'audit_rate'"):
        operating_point_metrics(df, labels, t1, t2, labelled_pairs=given.drop("audit_rate"))
