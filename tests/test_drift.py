"""Tests of shadowlab.drift against scipy, numpy, a slow reference PSI and the evidently package.

Every expected number comes from the reference named in the test (scipy.stats.ks_2samp,
scipy.stats.wasserstein_distance, np.quantile, scipy.spatial.distance.jensenshannon,
scipy.stats.spearmanr/kendalltau, Evidently 0.7.23's own PSI and KS tests).
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import json
import math
import warnings

import numpy as np
import polars as pl
import pytest
import scipy.stats as st
from conftest import make_pairs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst
from scipy.spatial.distance import jensenshannon

import shadowlab.drift as drift
from shadowlab import schema as S
from shadowlab.drift import (
    DegenerateInputWarning,
    DistributionComparison,
    KSExactFallbackWarning,
    ScoreSketch,
    compare_distributions,
    compare_scores,
    jensen_shannon,
    ks_2samp,
    psi,
    quantile_table,
    wasserstein_distance,
)
from shadowlab.engine import PolarsSource, clear_memo
from shadowlab.logs import scan_pairs


def _scipy_ks(a, b, alternative="two-sided", method="auto"):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = st.ks_2samp(a, b, alternative=alternative, method=method)
    return res, any("Switching to" in str(w.message) for w in caught)


def _ours_ks(a, b, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = ks_2samp(a, b, **kw)
    return res, any(issubclass(w.category, KSExactFallbackWarning) for w in caught)


def _assert_ks_equal(ours, ref):
    assert ours.statistic == float(ref.statistic)
    if np.isnan(ref.pvalue):  # scipy: asymp with n1 = n2 = 1 (kstwo with n = 0)
        assert np.isnan(ours.pvalue)
    elif ref.pvalue == 0:
        assert ours.pvalue == 0
    else:
        assert ours.pvalue == pytest.approx(float(ref.pvalue), rel=1e-9, abs=0)
    assert ours.statistic_location == float(ref.statistic_location)
    assert ours.statistic_sign == int(ref.statistic_sign)


# ------------------------------------------------------------------------------------------
# KS: property tests against scipy
# ------------------------------------------------------------------------------------------

samples = hst.lists(
    hst.one_of(
        hst.integers(-3, 3).map(float),  # heavy ties
        hst.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    a=samples,
    b=samples,
    alternative=hst.sampled_from(["two-sided", "less", "greater"]),
    method=hst.sampled_from(["auto", "exact", "asymp"]),
)
def test_ks_matches_scipy_property(a, b, alternative, method):
    ref, ref_warned = _scipy_ks(a, b, alternative, method)
    ours, warned = _ours_ks(np.array(a), np.array(b), alternative=alternative, method=method)
    _assert_ks_equal(ours, ref)
    assert warned == ref_warned
    assert ours.exact_statistic and ours.statistic_error_bound == 0.0


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([0.5], [0.5]),  # one element each, equal
        ([0.1], [0.9]),  # one element each
        ([0.3] * 5, [0.3] * 7),  # constant, identical
        ([0.3] * 5, [0.4] * 7),  # constant, disjoint
        ([1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 1.0]),
    ],
)
@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
def test_ks_edge_cases_match_scipy(a, b, alternative):
    ref, _ = _scipy_ks(a, b, alternative)
    ours, _ = _ours_ks(a, b, alternative=alternative)
    _assert_ks_equal(ours, ref)


def test_ks_large_with_ties_uses_refinement_and_matches_scipy(rng):
    # 30 000 + 25 000 values rounded to 4 decimals: many ties, asymptotic p-value ('auto')
    a = np.round(rng.beta(2, 5, 30_000), 4)
    b = np.round(rng.beta(2.1, 5, 25_000), 4)
    for alternative in ("two-sided", "less", "greater"):
        ours = ks_2samp(a, b, alternative=alternative)
        _assert_ks_equal(ours, st.ks_2samp(a, b, alternative=alternative))
    c = rng.beta(3, 7, 40_000)
    d = rng.beta(3.1, 7, 35_000)
    ours = ks_2samp(c, d)
    _assert_ks_equal(ours, st.ks_2samp(c, d))
    assert ours.rows_pulled > 0  # the refinement pull ran and finished exactly
    assert ours.rows_pulled < (len(c) + len(d)) / 10
    assert ours.passes == 2


def test_ks_undefined_pvalue_is_nan_with_named_warning():
    ref, _ = _scipy_ks([0.2], [0.7], method="asymp")
    assert np.isnan(ref.pvalue)
    with pytest.warns(DegenerateInputWarning, match="p-value"):
        ours = ks_2samp([0.2], [0.7], method="asymp")
    _assert_ks_equal(ours, ref)


def test_ks_exact_method_fallback_warns_like_scipy():
    # lcm(n1, n2) beyond int32: scipy switches exact -> asymp with a RuntimeWarning
    a = np.linspace(0, 1, 50_000)
    b = np.linspace(0.01, 1.01, 50_001)
    ref, ref_warned = _scipy_ks(a, b, method="exact")
    with pytest.warns(KSExactFallbackWarning):
        ours = ks_2samp(a, b, method="exact")
    assert ref_warned
    _assert_ks_equal(ours, ref)
    assert ours.method == "asymp"


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ks_binned_fallback_bound_holds(seed):
    rng = np.random.default_rng(seed)
    a = rng.beta(2, 5, 20_000)
    b = rng.beta(2, 5 + 0.2 * seed, 15_000)
    true = st.ks_2samp(a, b)
    res = ks_2samp(a, b, max_pull_rows=0)
    assert not res.exact_statistic
    assert res.rows_pulled == 0
    assert res.statistic <= float(true.statistic) <= res.statistic + res.statistic_error_bound
    assert 0 <= res.statistic_error_bound < 1e-3  # 2**16 bins: the bound is small
    # the exact path with a budget gives scipy's number
    _assert_ks_equal(ks_2samp(a, b), true)


def test_ks_nulls_and_nan_are_excluded_and_counted():
    a = pl.Series([0.1, None, 0.4, float("nan"), 0.7])
    b = np.array([0.2, np.nan, 0.5, 0.9])
    res = ks_2samp(a, b)
    _assert_ks_equal(res, st.ks_2samp([0.1, 0.4, 0.7], [0.2, 0.5, 0.9]))
    assert (res.missing_reference, res.missing_current) == (2, 1)
    assert (res.n_reference, res.n_current) == (3, 3)


def test_ks_empty_input_raises_clear_error():
    with pytest.raises(ValueError, match="Input reference of ks_2samp is empty"):
        ks_2samp([], [1.0])
    with pytest.raises(ValueError, match=r"Input current of ks_2samp is empty.*2 null/NaN"):
        ks_2samp([1.0], [np.nan, np.nan])


def test_ks_on_lazy_columns_and_parquet(tmp_path, rng):
    p, c = rng.beta(2, 5, 5000), rng.beta(2.3, 5, 5000)
    frame = make_pairs(p, c)
    ref = st.ks_2samp(p, c)
    _assert_ks_equal(ks_2samp(S.PRIMARY_SCORE, S.CANDIDATE_SCORE, data=frame.lazy()), ref)
    _assert_ks_equal(ks_2samp(pl.col(S.PRIMARY_SCORE), pl.col(S.CANDIDATE_SCORE), data=frame), ref)
    # an expression is evaluated on the frame
    res = ks_2samp(pl.col(S.PRIMARY_SCORE) * 2, pl.col(S.CANDIDATE_SCORE) * 2, data=frame)
    _assert_ks_equal(res, st.ks_2samp(p * 2, c * 2))
    path = tmp_path / "scores.parquet"
    frame.select(S.PRIMARY_SCORE, S.CANDIDATE_SCORE).write_parquet(path)
    _assert_ks_equal(ks_2samp(S.PRIMARY_SCORE, S.CANDIDATE_SCORE, data=pl.scan_parquet(path)), ref)
    with pytest.raises(ValueError, match=r"column 'primary_scor' not found.*'primary_score'"):
        ks_2samp("primary_scor", S.CANDIDATE_SCORE, data=frame)
    with pytest.raises(ValueError, match="no 'data' was given"):
        ks_2samp("primary_score", "candidate_score")


def test_second_statistic_of_the_same_logs_reuses_the_histogram_until_a_file_changes(tmp_path, rng):
    p, c = rng.beta(0.5, 20, 4000), rng.beta(0.6, 20, 4000)
    path = tmp_path / "pairs.parquet"
    make_pairs(p, c).write_parquet(path)
    lf = scan_pairs(path)
    ks = ks_2samp(S.PRIMARY_SCORE, S.CANDIDATE_SCORE, data=lf)
    _assert_ks_equal(ks, st.ks_2samp(p, c))
    # 4 000 fraud-like scores (most below 0.05) in the dyadic grid's 94 210 fine bins, which
    # narrow towards 0: the histogram pins every value, no pull is needed
    assert ks.passes == 1
    # psi of the same columns of the same logs: the histogram comes from memory, the pull of
    # the bins holding its cut points reads
    got = psi(S.PRIMARY_SCORE, S.CANDIDATE_SCORE, data=lf)
    fresh = psi(p, c)  # arrays: nothing to reuse
    assert (got.passes, fresh.passes) == (1, 2) and got.statistic == fresh.statistic
    # a fresh scan of the same unchanged files is the same data, and the values the first
    # psi pulled are kept with its histogram: nothing is read
    again_psi = psi(S.PRIMARY_SCORE, S.CANDIDATE_SCORE, data=scan_pairs(path))
    assert (again_psi.passes, again_psi.rows_pulled) == (0, 0)
    assert again_psi.statistic == fresh.statistic
    # the file is replaced (new size and mtime): a scan of it is other data, measured again
    make_pairs(p[:3000], c[:3000] * 0.5).write_parquet(path)
    again = ks_2samp(S.PRIMARY_SCORE, S.CANDIDATE_SCORE, data=scan_pairs(path))
    assert again.n_reference == 3000  # not the 4 000 rows measured before
    _assert_ks_equal(again, st.ks_2samp(p[:3000], c[:3000] * 0.5))


def test_a_pull_fetches_the_bins_psi_and_quantiles_read_next(tmp_path, rng, monkeypatch):
    # 150 000 uniform scores: ~13 rows a fine bin near 0.5, so ks_2samp needs a refinement pull
    p, c = rng.random(150_000), rng.random(150_000) ** 1.05
    path = tmp_path / "pairs.parquet"
    make_pairs(p, c).write_parquet(path)
    clear_memo()
    lf = scan_pairs(path)
    ks = ks_2samp(S.PRIMARY_SCORE, S.CANDIDATE_SCORE, data=lf)
    _assert_ks_equal(ks, st.ks_2samp(p, c))
    assert ks.passes == 2 and ks.rows_pulled > 0
    # the bins fetched along are not counted: the same rows_pulled as on a frame kept nowhere
    plain = ks_2samp(S.PRIMARY_SCORE, S.CANDIDATE_SCORE, data=pl.read_parquet(path))
    assert plain.rows_pulled == ks.rows_pulled
    # psi's cut points and the default quantiles' bins came with ks_2samp's pull: no read
    got = psi(S.PRIMARY_SCORE, S.CANDIDATE_SCORE, data=lf)
    assert (got.passes, got.rows_pulled) == (0, 0)
    assert got.statistic == psi(p, c).statistic
    with monkeypatch.context() as m:  # (a quantile table does not report its passes)
        m.setattr(drift._Run, "_scan_pull", lambda *a: pytest.fail("quantile_table read"))
        table = quantile_table(S.PRIMARY_SCORE, S.CANDIDATE_SCORE, data=lf)
    assert table.table.equals(quantile_table(p, c).table)
    # the reverse direction's cut points too (psi of the candidate against the primary)
    rev = psi(S.CANDIDATE_SCORE, S.PRIMARY_SCORE, data=lf)
    assert rev.passes == 0 and rev.statistic == psi(c, p).statistic


def test_ks_scores_outside_unit_interval(rng):
    # the first pass guesses a [0, 1] grid; values outside it trigger a pass on the real range
    a, b = rng.normal(50, 10, 3000), rng.normal(52, 10, 4000)
    res = ks_2samp(a, b)
    _assert_ks_equal(res, st.ks_2samp(a, b))
    assert res.passes >= 2


# ------------------------------------------------------------------------------------------
# PSI
# ------------------------------------------------------------------------------------------


def _slow_psi(ref, cur, cuts, eps=1e-4):
    """Obviously-correct PSI: bins [cut_i, cut_i+1) with outer bins to -inf/inf."""
    c1 = np.array([np.sum((ref >= lo) & (ref < hi)) for lo, hi in _intervals(cuts)])
    c2 = np.array([np.sum((cur >= lo) & (cur < hi)) for lo, hi in _intervals(cuts)])
    p1, p2 = c1 / len(ref), c2 / len(cur)
    p1, p2 = np.where(p1 == 0, eps, p1), np.where(p2 == 0, eps, p2)
    return float(np.sum((p1 - p2) * np.log(p1 / p2))), c1, c2


def _intervals(cuts):
    edges = [-np.inf, *cuts, np.inf]
    return list(itertools.pairwise(edges))


@pytest.mark.parametrize("bins", [2, 5, 10, 13])
def test_psi_quantile_matches_slow_reference(rng, bins):
    ref, cur = rng.beta(2, 5, 20_000), rng.beta(2.4, 5, 15_000)
    cuts = np.unique(np.quantile(ref, np.arange(1, bins) / bins))
    expected, c1, c2 = _slow_psi(ref, cur, cuts)
    res = psi(ref, cur, bins=bins)
    assert res.statistic == pytest.approx(expected, rel=1e-12)
    assert res.table["n_reference"].to_list() == c1.tolist()
    assert res.table["n_current"].to_list() == c2.tolist()
    assert res.table.height == bins == res.bins_requested
    assert res.table["contribution"].sum() == pytest.approx(res.statistic, rel=1e-12)


@settings(max_examples=30, deadline=None)
@given(a=samples, b=samples, bins=hst.integers(2, 12))
def test_psi_quantile_matches_slow_reference_property(a, b, bins):
    ref, cur = np.array(a), np.array(b)
    cuts = np.unique(np.quantile(ref, np.arange(1, bins) / bins))
    expected, c1, c2 = _slow_psi(ref, cur, cuts)
    res = psi(ref, cur, bins=bins)
    assert res.statistic == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert res.table["n_reference"].to_list() == c1.tolist()
    assert res.table["n_current"].to_list() == c2.tolist()


def test_psi_quantile_collapses_duplicate_edges():
    ref = np.array([0.0] * 60 + list(np.linspace(0.1, 1, 40)))
    cur = np.linspace(0, 1, 50)
    cuts = np.unique(np.quantile(ref, np.arange(1, 10) / 10))
    expected, _, _ = _slow_psi(ref, cur, cuts)
    res = psi(ref, cur, bins=10)
    assert res.table.height == len(cuts) + 1 < 10
    assert res.bins_requested == 10
    assert res.statistic == pytest.approx(expected, rel=1e-12)


def test_psi_uniform_and_explicit_edges(rng):
    ref, cur = rng.normal(0.5, 0.1, 5000), rng.normal(0.55, 0.1, 6000)
    cuts = np.linspace(ref.min(), ref.max(), 8 + 1)[1:-1]
    assert psi(ref, cur, bins=8, binning="uniform").statistic == pytest.approx(
        _slow_psi(ref, cur, cuts)[0], rel=1e-12
    )
    edges = [0.0, 0.3, 0.45, 0.5, 0.6, 1.0]
    res = psi(ref, cur, bins=edges, binning="edges")
    assert res.statistic == pytest.approx(_slow_psi(ref, cur, edges[1:-1])[0], rel=1e-12)
    assert res.table.height == 5
    assert res.table["lower"][0] == 0.0 and res.table["upper"][-1] == 1.0


def test_psi_eps_is_used_for_empty_bins():
    ref = np.linspace(0, 1, 100)
    cur = np.full(50, 0.05)  # all current values in the first decile
    for eps in (1e-4, 1e-2):
        expected, _, c2 = _slow_psi(ref, cur, np.quantile(ref, np.arange(1, 10) / 10), eps)
        assert (c2 == 0).sum() == 9
        assert psi(ref, cur, eps=eps).statistic == pytest.approx(expected, rel=1e-12)


def test_jensen_shannon_on_psi_bins(rng):
    ref, cur = rng.beta(2, 5, 4000), rng.beta(2.5, 5, 3000)
    cuts = np.quantile(ref, np.arange(1, 10) / 10)
    _, c1, c2 = _slow_psi(ref, cur, cuts)
    expected = jensenshannon(c1 / len(ref), c2 / len(cur), base=2)
    res = jensen_shannon(ref, cur)
    assert res.statistic == pytest.approx(expected, rel=1e-12)
    assert res.table["share_reference"].to_list() == pytest.approx((c1 / len(ref)).tolist())
    json.dumps(res.to_dict(), allow_nan=False)
    assert psi(ref, cur).jensen_shannon == pytest.approx(expected, rel=1e-12)


# Evidently: the package itself is the reference (dev extra). It needs pandas<3.
evidently_psi = pytest.importorskip(
    "evidently.legacy.calculations.stattests.psi",
    reason="evidently 0.7.23 (dev extra, needs pandas<3) is not importable",
)


def _evidently(a, b):
    import pandas as pd
    from evidently.legacy.calculations.stattests.ks_stattest import _ks_stat_test
    from evidently.legacy.core import ColumnType

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = evidently_psi._psi(pd.Series(a), pd.Series(b), ColumnType.Numerical, 0.1)[0]
        k = _ks_stat_test(pd.Series(a), pd.Series(b), ColumnType.Numerical, 0.05)[0]
    return float(p), float(k)


@pytest.mark.parametrize(
    "case",
    ["beta", "shifted", "few_distinct", "integers_many", "tiny", "disjoint"],
)
def test_psi_evidently_mode_and_ks_match_evidently_package(case):
    rng = np.random.default_rng(7)
    a, b = {
        "beta": (rng.beta(2, 5, 5000), rng.beta(2.3, 5, 7000)),
        "shifted": (rng.normal(0, 1, 800), rng.normal(0.8, 1.3, 600)),
        "few_distinct": (rng.integers(0, 5, 1000) / 4, rng.integers(0, 7, 800) / 4),
        "integers_many": (rng.integers(0, 40, 900) * 1.0, rng.integers(5, 50, 700) * 1.0),
        "tiny": (rng.normal(size=30), rng.normal(3, size=40)),
        "disjoint": (rng.uniform(0, 0.4, 3000), rng.uniform(0.6, 1, 2000)),
    }[case]
    ev_psi, ev_ks = _evidently(a, b)
    assert psi(a, b, binning="evidently").statistic == pytest.approx(ev_psi, rel=1e-9)
    assert ks_2samp(a, b).pvalue == pytest.approx(ev_ks, rel=1e-9, abs=1e-300)


def test_psi_evidently_mode_honours_bins(rng):
    # Evidently ignores n_bins for numeric columns (its issue #1400); we use the count given.
    a, b = rng.beta(2, 5, 3000), rng.beta(2, 5, 3000)
    assert psi(a, b, binning="evidently").table.height == int(np.ceil(np.log2(6000) + 1))
    assert psi(a, b, binning="evidently", bins=7).table.height == 7
    edges = np.histogram_bin_edges(np.concatenate([a, b]), bins=7)
    ca, cb = np.histogram(a, edges)[0] / 3000, np.histogram(b, edges)[0] / 3000
    assert psi(a, b, binning="evidently", bins=7).statistic == pytest.approx(
        float(np.sum((ca - cb) * np.log(ca / cb))), rel=1e-12
    )


# ------------------------------------------------------------------------------------------
# Wasserstein, quantiles
# ------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(a=samples, b=samples)
def test_wasserstein_matches_scipy_property(a, b):
    expected = st.wasserstein_distance(a, b)
    res = wasserstein_distance(np.array(a), np.array(b))
    assert res.statistic == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert res.error_bound == 0


def test_wasserstein_large_matches_scipy(rng):
    a, b = rng.beta(2, 5, 50_000), rng.beta(2, 5.1, 40_000)
    assert wasserstein_distance(a, b).statistic == pytest.approx(
        st.wasserstein_distance(a, b), rel=1e-9
    )
    binned = wasserstein_distance(a, b, max_pull_rows=0)
    exact = st.wasserstein_distance(a, b)
    assert abs(binned.statistic - exact) <= binned.error_bound + 1e-15


@settings(max_examples=40, deadline=None)
@given(a=samples, b=samples)
def test_quantile_table_matches_numpy_property(a, b):
    levels = (0.0, 0.01, 0.25, 0.5, 0.77, 0.999, 1.0)
    res = quantile_table(np.array(a), np.array(b), quantiles=levels)
    assert res.table["reference"].to_list() == np.quantile(a, levels).tolist()
    assert res.table["current"].to_list() == np.quantile(b, levels).tolist()


def test_quantile_table_default_levels(rng):
    a, b = rng.beta(2, 5, 30_000), rng.beta(2, 4, 20_000)
    res = quantile_table(a, b)
    levels = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999]
    assert res.table["quantile"].to_list() == levels
    assert res.table["reference"].to_list() == np.quantile(a, levels).tolist()
    assert res.table["current"].to_list() == np.quantile(b, levels).tolist()


def test_compare_distributions_equals_the_single_functions(rng):
    a, b = rng.beta(2, 5, 30_000), rng.beta(2.2, 5, 25_000)
    res = compare_distributions(a, b)
    _assert_ks_equal(res.ks, st.ks_2samp(a, b))
    assert res.psi.statistic == psi(a, b).statistic
    assert res.wasserstein.statistic == pytest.approx(st.wasserstein_distance(a, b), rel=1e-9)
    assert res.quantiles.table.equals(quantile_table(a, b).table)
    assert res.passes == 2
    json.dumps(res.to_dict(), allow_nan=False)


# ------------------------------------------------------------------------------------------
# ScoreSketch: a stored reference
# ------------------------------------------------------------------------------------------


def test_sketch_roundtrip_and_statistics(tmp_path, rng):
    ref, cur = rng.beta(2, 5, 40_000), rng.beta(2.2, 5, 30_000)
    sketch = ScoreSketch.from_scores(ref, model="candidate")
    path = sketch.save(tmp_path / "ref.sketch.parquet")
    loaded = ScoreSketch.load(path)
    assert loaded.n == 40_000 and loaded.model == "candidate"
    assert loaded.bins.equals(sketch.bins)
    # exact: quantiles at k/1000 and quantile-binned PSI with a bin count dividing 1000
    assert loaded.quantile(0.25) == np.quantile(ref, 0.25)
    assert quantile_table(loaded, cur).table["reference"].to_list() == pytest.approx(
        np.quantile(ref, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999]).tolist(), rel=1e-15
    )
    for bins in (10, 20):
        assert psi(loaded, cur, bins=bins).statistic == pytest.approx(
            psi(ref, cur, bins=bins).statistic, rel=1e-12
        )
    # bounded: KS (values inside a bin are not kept)
    ks = ks_2samp(loaded, cur)
    true = float(st.ks_2samp(ref, cur).statistic)
    assert not ks.exact_statistic
    assert ks.statistic <= true <= ks.statistic + ks.statistic_error_bound
    with pytest.raises(ValueError, match="divide 1000"):
        psi(loaded, cur, bins=7)
    bad = tmp_path / "plain.parquet"
    pl.DataFrame({"x": [1.0]}).write_parquet(bad)
    with pytest.raises(ValueError, match="not a ScoreSketch file"):
        ScoreSketch.load(bad)


# ------------------------------------------------------------------------------------------
# compare_scores on pair logs
# ------------------------------------------------------------------------------------------


@pytest.fixture
def week(rng):
    n = 6000
    p = rng.beta(2, 6, n)
    c = np.clip(p * 1.1 + rng.normal(0, 0.03, n), 0, 1)
    p[::500] = np.nan  # a few primary failures
    country = rng.choice(["DE", "FR"], n)
    seconds = np.sort(rng.uniform(0, 3 * 86400, n))  # three days
    return make_pairs(p, c, seconds=seconds, country=country), p, c, country, seconds


def test_compare_scores_rows_match_single_statistics(week, rng):
    frame, p, c, country, seconds = week
    ref_scores = rng.beta(2, 6, 3000)
    res = compare_scores(frame, reference={"candidate": ref_scores}, every="1d", by="country")
    assert isinstance(res, DistributionComparison)
    t = res.table
    assert set(t["comparison"]) == {"candidate_vs_primary", "vs_reference", "vs_first_window"}
    day = (seconds // 86400).astype(int)
    # day 1, FR: each comparison equals the stand-alone function on the same subset
    m1 = (day == 1) & (country == "FR")
    m0 = (day == 0) & (country == "FR")
    p1, c1 = p[m1 & ~np.isnan(p)], c[m1]
    row = t.filter(
        (pl.col("window").dt.day() == 3) & (pl.col("country") == "FR")
    )  # WEEK_START is Nov 2; day index 1 is Nov 3
    paired = row.filter(pl.col("comparison") == "candidate_vs_primary").row(0, named=True)
    assert paired["ks_statistic"] == float(st.ks_2samp(p1, c1).statistic)
    assert paired["psi"] == pytest.approx(psi(p1, c1).statistic, rel=1e-12)
    assert paired["wasserstein"] == pytest.approx(st.wasserstein_distance(p1, c1), rel=1e-9)
    assert paired["pvalue_valid"] is False and paired["ks_pvalue"] is None
    assert paired["missing_reference"] == int(np.isnan(p[m1]).sum())
    vs_ref = row.filter(pl.col("comparison") == "vs_reference").row(0, named=True)
    assert vs_ref["model"] == "candidate" and vs_ref["pvalue_valid"] is True
    assert vs_ref["ks_pvalue"] == pytest.approx(st.ks_2samp(ref_scores, c1).pvalue, rel=1e-9)
    first = row.filter(
        (pl.col("comparison") == "vs_first_window") & (pl.col("model") == "primary")
    ).row(0, named=True)
    p0 = p[m0 & ~np.isnan(p)]
    assert first["ks_statistic"] == float(st.ks_2samp(p0, p1).statistic)
    # paired view: Spearman within 0.01 of scipy's; discordant-share interval holds the truth
    mask = ~np.isnan(p) & m1
    rho = st.spearmanr(p[mask], c[mask]).statistic
    tau = st.kendalltau(p[mask], c[mask]).statistic  # no ties: tau-b = tau-a
    assert paired["spearman"] == pytest.approx(rho, abs=0.01)
    disc = (1 - tau) / 2
    assert paired["discordant_share_lower"] <= disc <= paired["discordant_share_upper"]
    assert paired["discordant_share"] == pytest.approx(disc, abs=0.01)
    # quantiles per window/model and for the reference
    q = res.quantiles.filter(pl.col("source") == "reference")
    assert q["value"].to_list() == pytest.approx(
        np.quantile(ref_scores, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 0.999]).tolist()
    )
    d = res.to_dict()
    json.dumps(d, allow_nan=False)
    assert len(d["table"]) == t.height


def test_compare_scores_reference_parquet_and_budget(week, tmp_path, rng):
    frame, p, *_ = week
    ref_p, ref_c = rng.beta(2, 6, 2000), rng.beta(2, 5.5, 2000)
    path = tmp_path / "reference.parquet"
    pl.DataFrame(
        {"model": ["primary"] * 2000 + ["candidate"] * 2000, "score": np.r_[ref_p, ref_c]}
    ).write_parquet(path)
    res = compare_scores(frame, reference=path, every=None)
    t = res.table
    assert t.height == 3  # one window: paired + two vs_reference rows
    prim = t.filter((pl.col("comparison") == "vs_reference") & (pl.col("model") == "primary"))
    assert prim["ks_statistic"][0] == float(st.ks_2samp(ref_p, p[~np.isnan(p)]).statistic)
    # a tiny budget: binned KS with a bound that holds
    small = compare_scores(frame, reference=path, every=None, max_pull_rows=0)
    row = small.table.filter(pl.col("model") == "primary", pl.col("comparison") == "vs_reference")
    true = float(st.ks_2samp(ref_p, p[~np.isnan(p)]).statistic)
    lo, bound = row["ks_statistic"][0], row["ks_statistic_error_bound"][0]
    assert lo <= true <= lo + bound
    assert small.notes


def test_compare_scores_constant_scores_warn_degenerate():
    frame = make_pairs([0.5] * 20, list(np.linspace(0, 1, 20)))
    with pytest.warns(DegenerateInputWarning, match="constant"):
        res = compare_scores(frame, every=None)
    assert math.isnan(res.table["spearman"][0])


# ------------------------------------------------------------------------------------------
# parameter errors (one format for every public function)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: psi([1.0], [1.0], bins=1),
            "The 'bins' parameter of psi must be an int >= 2. Got 1 instead.",
        ),
        (
            lambda: psi([1.0], [1.0], binning="sturges"),
            "The 'binning' parameter of psi must be a str among {'quantile', 'uniform', "
            "'edges', 'evidently'}. Got 'sturges' instead.",
        ),
        (
            lambda: psi([1.0], [1.0], eps=0),
            "The 'eps' parameter of psi must be a float in (0, 1). Got 0 instead.",
        ),
        (
            lambda: ks_2samp([1.0], [1.0], method="fast"),
            "The 'method' parameter of ks_2samp must be a str among {'auto', 'exact', "
            "'asymp'}. Got 'fast' instead.",
        ),
        (
            lambda: ks_2samp([1.0], [1.0], alternative="bigger"),
            "The 'alternative' parameter of ks_2samp must be a str among {'two-sided', 'less', "
            "'greater'}. Got 'bigger' instead.",
        ),
        (
            lambda: ks_2samp([1.0], [1.0], max_pull_rows=-1),
            "The 'max_pull_rows' parameter of ks_2samp must be an int >= 0. Got -1 instead.",
        ),
        (
            lambda: wasserstein_distance([1.0], [1.0], max_pull_rows=1.5),
            "The 'max_pull_rows' parameter of wasserstein_distance must be an int >= 0. "
            "Got 1.5 instead.",
        ),
        (
            lambda: quantile_table([1.0], [1.0], quantiles=[1.5]),
            "The 'quantiles' parameter of quantile_table must be a non-empty sequence of floats "
            "in [0, 1]. Got [1.5] instead.",
        ),
        (
            lambda: jensen_shannon([1.0], [1.0], bins=0),
            "The 'bins' parameter of psi must be an int >= 2. Got 0 instead.",
        ),
        (
            lambda: compare_distributions([1.0], [1.0], bins=1),
            "The 'bins' parameter of compare_distributions must be an int >= 2. Got 1 instead.",
        ),
        (
            lambda: compare_scores(make_pairs([0.1], [0.2]), bins=1),
            "The 'bins' parameter of compare_scores must be an int >= 2. Got 1 instead.",
        ),
        (
            lambda: compare_scores(make_pairs([0.1], [0.2]), every="soon"),
            "The 'every' parameter of compare_scores must be a polars duration string such as "
            "'1d'. Got 'soon' instead.",
        ),
    ],
)
def test_parameter_errors(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


def test_compare_scores_missing_segment_column_names_columns():
    with pytest.raises(ValueError, match=r"column 'countr' not found.*Did you mean 'country'"):
        compare_scores(make_pairs([0.1], [0.2], country=["DE"]), by="countr")


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------


def test_cli_compare_writes_json(week, tmp_path, capsys):
    from shadowlab.cli import main

    frame = week[0]
    logs = tmp_path / "pairs"
    logs.mkdir()
    frame.write_parquet(logs / "part-0.parquet")
    out = tmp_path / "cmp.json"
    code = main(["compare", str(logs), "--every", "1d", "--by", "country", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "candidate_vs_primary" in text and "it has no p-value" in text
    data = json.loads(out.read_text())
    assert len(data["table"]) == 2 * (1 + 3 + 3)  # per segment: day 0 paired only, then 3
    for row in data["table"]:  # a paired row's p-value is null, the others' are numbers
        paired = row["comparison"] == "candidate_vs_primary"
        assert (row["ks_pvalue"] is None) == paired and row["pvalue_valid"] is not paired
    assert main(["compare", str(logs), "--bins", "1"]) == 2


# ------------------------------------------------------------------------------------------
# mergeable summaries: the same answer from partitioned partials (what the Spark engine does)
# ------------------------------------------------------------------------------------------


class _PartitionedSource:
    """A Source that runs every summary on 3 slices and merges them, as a cluster would."""

    engine = "test-partitions"

    def __init__(self, frame: pl.DataFrame) -> None:
        self.frame = frame

    def aggregate(self, agg):
        from shadowlab.engine import merge_partials

        k = self.frame.height // 3 + 1
        parts = [agg.build(self.frame.slice(i * k, k).lazy()).collect() for i in range(3)]
        return merge_partials(parts, agg)

    def pull(self, predicate, columns):
        return self.frame.lazy().filter(predicate).select(list(columns)).collect()

    def collect_schema(self):
        return self.frame.collect_schema()


def test_partitioned_source_gives_identical_results(week, rng):
    frame = week[0]
    src = _PartitionedSource(frame)
    one = compare_distributions(S.PRIMARY_SCORE, S.CANDIDATE_SCORE, data=frame)
    many = compare_distributions(S.PRIMARY_SCORE, S.CANDIDATE_SCORE, data=src)
    assert one.ks == many.ks
    assert one.psi.statistic == many.psi.statistic
    assert one.psi.table.equals(many.psi.table)
    assert one.quantiles.table.equals(many.quantiles.table)
    assert many.wasserstein.statistic == pytest.approx(one.wasserstein.statistic, rel=1e-12)
    ref = rng.beta(2, 6, 1000)
    a = compare_scores(frame, reference=ref, by="country").table
    b = compare_scores(src, reference=ref, by="country").table
    exact = ["window", "country", "comparison", "model", "ks_statistic", "ks_pvalue", "psi"]
    assert a.select(exact).equals(b.select(exact))
    assert a["spearman"].to_list() == b["spearman"].to_list()


def test_compare_scores_with_a_saved_sketch(week, tmp_path, rng):
    frame, _, c, *_ = week
    ref = rng.beta(2, 6, 5000)
    path = ScoreSketch.from_scores(ref, model="candidate").save(tmp_path / "ref.parquet")
    res = compare_scores(frame, reference=path, every=None)
    row = res.table.filter(pl.col("comparison") == "vs_reference").row(0, named=True)
    assert row["model"] == "candidate"
    assert row["psi"] == pytest.approx(psi(ref, c).statistic, rel=1e-12)
    true = float(st.ks_2samp(ref, c).statistic)
    assert row["ks_statistic"] <= true <= row["ks_statistic"] + row["ks_statistic_error_bound"]


def test_ks_zoom_pass_finishes_exactly(monkeypatch, rng):
    # At scale the candidate bins hold too many rows; a zoom pass splits them first. Force it.
    import shadowlab.drift as drift

    monkeypatch.setattr(drift, "ZOOM_ROWS", 0)
    monkeypatch.setattr(drift, "ZOOM_SHARE", 0.0)
    calls = []
    real = drift._zoom_pass
    monkeypatch.setattr(drift, "_zoom_pass", lambda *a, **k: calls.append(1) or real(*a, **k))
    a, b = rng.beta(3, 7, 40_000), np.round(rng.beta(3.1, 7, 35_000), 5)
    for alternative in ("two-sided", "less", "greater"):
        res = ks_2samp(a, b, alternative=alternative)
        _assert_ks_equal(res, st.ks_2samp(a, b, alternative=alternative))
        assert res.passes <= 3  # histogram, zoom, pull (each only when needed)
    both = compare_distributions(a, b)
    _assert_ks_equal(both.ks, st.ks_2samp(a, b))
    assert both.psi.statistic == psi(a, b).statistic
    assert both.passes == 3
    assert len(calls) >= 2
    binned = ks_2samp(a, b, max_pull_rows=0)
    true = float(st.ks_2samp(a, b).statistic)
    assert binned.statistic <= true <= binned.statistic + binned.statistic_error_bound
    # the zoom tightens the binned bound (cells are up to 1024x finer than bins)
    monkeypatch.setattr(drift, "ZOOM_ROWS", 10**9)
    coarse = ks_2samp(a, b, max_pull_rows=0)
    assert binned.statistic_error_bound <= coarse.statistic_error_bound


def _build_only(monkeypatch, func, *args):
    # the same pass with the numpy fast path switched off: the polars build Spark runs
    with monkeypatch.context() as m:
        m.setattr(drift, "_hist_fold", lambda *a, **k: (None, None))
        m.setattr(drift, "_paired_fold", lambda *a, **k: (None, None))
        m.setattr(drift._Run, "_scan_pullable", lambda self, inp: False)
        return func(*args)


def _assert_same_summary(fast, slow, with_sum):
    assert fast.columns == slow.columns
    assert fast.height == slow.height > 1000
    real = pl.col("bin") != drift.MISSING_BIN
    keys = [c for c in fast.columns if c not in ("n", "s", "mn", "mx")]
    for c in [*keys, "n"]:
        assert fast[c].to_list() == slow[c].to_list(), c
    for c in ("mn", "mx"):
        assert fast.filter(real)[c].to_list() == slow.filter(real)[c].to_list()
    if with_sum:
        np.testing.assert_allclose(
            fast.filter(real)["s"].to_numpy(),
            slow.filter(real)["s"].to_numpy(),
            rtol=1e-9,
            atol=1e-12,
        )


def test_numpy_fold_equals_the_polars_group_by(rng, monkeypatch):
    # The histogram pass folds Arrow chunks with np.bincount / np.minimum.at (the Aggregation's
    # prepare/fold fast path); it must give the summary the polars group-by (`build`, the one
    # Spark runs) gives: same bins, counts, minima, maxima; offset sums up to rounding.
    import shadowlab.drift as drift
    from shadowlab.engine import merge_partials

    n = 300_000
    a = rng.beta(0.3, 5, n)
    a[rng.integers(0, n, 500)] = np.nan
    # below, at and around the edges of the [0, 1] and [-0.5, 2] grids, infinities, -0.0
    edges = [-0.5, 1.0, 2.0, np.inf, -np.inf, 0.0, -0.0, np.nextafter(1.0, 0.0)]
    edges += [np.nextafter(1.0, 2.0), np.nextafter(0.0, -1.0), np.nextafter(-0.5, -1.0)]
    edges += [np.nextafter(2.0, 0.0), np.nextafter(2.0, 3.0), 0.5, 1 / 3]
    a[: len(edges)] = edges
    b = np.round(rng.beta(2, 5, n), 3)  # ties: constant bins
    frame = pl.DataFrame({"a": a, "b": b}).with_columns(
        pl.when(pl.int_range(pl.len()) % 977 == 0).then(None).otherwise(pl.col("b")).alias("b")
    )
    inp = drift._Input(drift.PolarsSource(frame.lazy()), ["a", "b"])
    for grid in (drift._DyadicGrid(), drift._Grid(0.0, 1.0), drift._Grid(-0.5, 2.0)):
        for with_sum in (False, True):
            fast = drift._hist_pass(inp, grid, with_sum)[0]
            slow = _build_only(monkeypatch, drift._hist_pass, inp, grid, with_sum)[0]
            _assert_same_summary(fast, slow, with_sum)
    # and the fold is what PolarsSource runs when the aggregation offers it
    prepare, fold = drift._hist_fold(["a"], drift._DyadicGrid(), False)
    chunks = [c for c in prepare(frame.lazy()).collect_batches()]
    merged = merge_partials(
        [fold(chunks[: len(chunks) // 2]), fold(chunks[len(chunks) // 2 :])],
        drift.Aggregation(lambda lf: lf, ("sample", "bin"), {"n": "sum", "mn": "min", "mx": "max"}),
    )
    whole = merge_partials(
        [fold(chunks)],
        drift.Aggregation(lambda lf: lf, ("sample", "bin"), {"n": "sum", "mn": "min", "mx": "max"}),
    )
    assert merged.equals(whole)


@pytest.mark.parametrize("dense_groups", [64, 2])
def test_grouped_numpy_fold_equals_the_polars_group_by(rng, monkeypatch, dense_groups):
    # By window and segment (as compare_scores runs it) the fold splits each chunk by group;
    # beyond MAX_DENSE_GROUPS groups it keeps sparse summaries and merges them. Either way the
    # summary is the polars group-by's: per group, same bins, counts, minima and maxima.
    n = 200_000
    a = rng.beta(0.3, 5, n)
    a[rng.integers(0, n, 300)] = np.nan
    b = np.round(rng.beta(2, 5, n), 3)
    start = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
    ts = start + pl.Series(rng.integers(0, 5 * 86_400, n) * 1_000_000).cast(pl.Duration("us"))
    frame = pl.DataFrame({"a": a, "b": b, "ts": ts, "seg": rng.choice(["x", "y", None], n)})
    frame = frame.sort("ts")  # day-ordered like a written week; chunks still straddle days
    groups = [("window", pl.col("ts").dt.truncate("1d")), ("seg", pl.col("seg"))]
    inp = drift._Input(drift.PolarsSource(frame.lazy()), ["a", "b"], groups, ["ts", "seg"])
    monkeypatch.setattr(drift, "MAX_DENSE_GROUPS", dense_groups)
    for grid in (drift._DyadicGrid(), drift._Grid(0.0, 1.0)):
        for with_sum in (False, True):
            fast = drift._hist_pass(inp, grid, with_sum)[0]
            slow = _build_only(monkeypatch, drift._hist_pass, inp, grid, with_sum)[0]
            assert fast.select("window", "seg").n_unique() == 15
            _assert_same_summary(fast, slow, with_sum)


def test_paired_numpy_fold_equals_the_polars_joins(rng, monkeypatch):
    # compare_scores' paired cross-tab (Spearman, discordant share) folds bin ids through a
    # lookup array; the polars build (two joins and a group-by) must give the same table.
    n = 120_000
    p = rng.beta(0.5, 5, n)
    c = np.clip(p + rng.normal(0, 0.05, n), 0, 1)
    p[rng.integers(0, n, 200)] = np.nan
    start = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
    ts = start + pl.Series(rng.integers(0, 3 * 86_400, n) * 1_000_000).cast(pl.Duration("us"))
    frame = pl.DataFrame({S.TS: ts, S.PRIMARY_SCORE: p, S.CANDIDATE_SCORE: c})
    fast = compare_scores(frame, every="1d").table
    slow = _build_only(monkeypatch, compare_scores, frame).table
    paired = pl.col("comparison") == "candidate_vs_primary"
    assert fast.filter(paired).height == 3
    assert fast.drop("wasserstein_error_bound").equals(slow.drop("wasserstein_error_bound"))


@pytest.mark.parametrize("how", ["scan", "predicate", "predicate for all groups"])
def test_grouped_pull_fetches_each_groups_bins_exactly(rng, monkeypatch, how):
    # _Run.pull on a grouped polars input: the scan pull (bin-id lookups per chunk and group)
    # and the predicate pulls (Spark's) return every value of each wanted (group, column, bin)
    # and count the same wanted rows
    n = 60_000
    g = rng.choice(["a", "b", "c"], n)
    frame = pl.DataFrame({"g": g, "x": rng.beta(0.5, 8, n), "y": rng.random(n)})
    frame = frame.with_columns(
        pl.when(pl.int_range(n) % 97 == 0).then(None).otherwise("x").alias("x")
    )
    if how != "scan":
        monkeypatch.setattr(drift._Run, "_scan_pullable", lambda self, inp: False)
    if how == "predicate for all groups":
        monkeypatch.setattr(drift, "MAX_PULL_GROUPS", 1)
    run = drift._Run("test", None)
    src = run.add_input(
        drift._Input(PolarsSource(frame.lazy()), ["x", "y"], [("g", pl.col("g"))], ["g"])
    )
    run.measure()
    grid = run.grid
    needs, want_rows = {}, 0
    for key, col in (("a", "x"), ("b", "x"), ("b", "y"), ("c", "y")):
        h = run.hist(drift._Sample(src, col, (key,)))
        bins = set(h.bin[h.mn != h.mx][[3, 40, 41, 500]].tolist())
        needs[drift._Sample(src, col, (key,))] = bins
    run.pull(needs)
    hit = np.zeros(n, bool)
    for smp, bins in needs.items():
        rows = frame.filter(pl.col("g") == smp.group[0])[smp.column].drop_nulls().to_numpy()
        ids = grid.bin_np(rows)
        for b in bins:
            np.testing.assert_array_equal(run.value(smp, b), np.sort(rows[ids == b]))
        at = (frame["g"] == smp.group[0]).to_numpy()
        vals = frame[smp.column].fill_null(np.nan).to_numpy()
        hit |= at & np.isin(grid.bin_np(vals), list(bins))
    want_rows = int(hit.sum())
    assert run.rows_pulled == want_rows > 0 and run.passes == 2


def test_refinement_pull_per_group_or_for_all_groups_gives_the_same_comparison(rng, monkeypatch):
    # The pull fetches each (day, segment)'s own bins: in the paired pass (polars), by a
    # per-group predicate (Spark and other engines) or, beyond MAX_PULL_GROUPS groups, by each
    # column's bins of all groups. Every way gives the same table and counts the same rows.
    n = 90_000
    p = rng.beta(0.4, 9, n)
    c = np.clip(p * rng.lognormal(0, 0.2, n), 0, 1)
    start = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
    ts = start + pl.Series(np.sort(rng.integers(0, 3 * 86_400, n)) * 1_000_000).cast(
        pl.Duration("us")
    )
    seg = rng.choice(["a", "b"], n)
    frame = pl.DataFrame({S.TS: ts, S.PRIMARY_SCORE: p, S.CANDIDATE_SCORE: c, "seg": seg})
    run = functools.partial(compare_scores, every="1d", by="seg")
    fetched = run(frame)
    per_group = _build_only(monkeypatch, run, frame)
    monkeypatch.setattr(drift, "MAX_PULL_GROUPS", 1)
    for_all = _build_only(monkeypatch, run, frame)
    assert fetched.rows_pulled == per_group.rows_pulled == for_all.rows_pulled > 0
    exact = fetched.table.drop("wasserstein", "wasserstein_error_bound")
    for other in (per_group, for_all):
        assert other.table.drop("wasserstein", "wasserstein_error_bound").equals(exact)
        np.testing.assert_allclose(
            other.table["wasserstein"].to_numpy(), fetched.table["wasserstein"].to_numpy(),
            rtol=1e-12,
        )  # fmt: skip


@pytest.mark.parametrize("lo, hi", [(0.0, 1.0), (-0.5, 2.0), (0.25, 0.25 + 1e-9), (3.0, 3.0)])
def test_numpy_bin_ids_equal_the_polars_expression(lo, hi, rng):
    # _Grid.bin_np (the fold's bin ids) must be _Grid.bin (the polars summary's) id for id.
    from shadowlab.drift import MISSING_BIN, _Grid

    grid = _Grid(lo, hi)
    x = np.concatenate(
        [
            rng.uniform(lo - 1, hi + 1, 5000),
            np.linspace(lo, hi, 2001),
            [lo, hi, np.nextafter(lo, -np.inf), np.nextafter(hi, np.inf), np.nan, -0.0],
            [np.nextafter(lo, np.inf), np.nextafter(hi, -np.inf), 1e300, -1e300],
        ]
    )
    col = pl.col("x")
    expected = (
        pl.DataFrame({"x": x})
        .select(
            pl.when(col.is_not_nan()).then(grid.bin(col)).otherwise(pl.lit(MISSING_BIN, pl.Int32))
        )
        .to_series()
        .to_numpy()
    )
    np.testing.assert_array_equal(grid.bin_np(x), expected)
    np.testing.assert_array_equal(grid.bin_np(x, 2), expected + 2)


@pytest.mark.parametrize("exponents, mantissa_bits", [(24, 11), (6, 3)])
def test_dyadic_grid_numpy_ids_equal_polars_at_and_beside_every_edge(exponents, mantissa_bits, rng):
    # The default [0, 1] grid: numpy reads bin ids off the float's bits, polars computes them
    # from log2 corrected by exact comparisons. Every edge, its two float neighbours, the tail,
    # 0.5 and 1, subnormals and -0.0 get the same id both ways; ids are monotone in x, each value
    # lies between its bin's edges, and both engines agree on the edges themselves.
    from shadowlab.drift import MISSING_BIN, _DyadicGrid

    grid = _DyadicGrid(exponents, mantissa_bits)
    assert grid.bins == 2 * ((exponents - 1) * 2**mantissa_bits + 1)
    edges = grid.left_np(np.arange(grid.bins + 1))
    assert edges[0] == 0.0 and edges[-1] == 1.0 and np.all(np.diff(edges) > 0)
    assert edges[grid.half] == 0.5
    x = np.concatenate(
        [
            edges,
            np.nextafter(edges, -1.0),
            np.nextafter(edges, 2.0),
            rng.random(20_000),
            rng.random(20_000) ** 12,  # crowded near 0
            1.0 - rng.random(20_000) ** 12,  # and near 1
            [0.0, -0.0, 0.5, 1.0, 5e-324, 1e-310, 2.0**-exponents, 1 - 2.0**-exponents],
            [-1e-300, np.nextafter(1.0, 2.0), np.inf, -np.inf, np.nan, 7.0],
        ]
    )
    col = pl.col("x")
    want = (
        pl.DataFrame({"x": x})
        .select(pl.when(col.is_not_nan()).then(grid.bin(col)).otherwise(MISSING_BIN))
        .to_series()
        .to_numpy()
    )
    np.testing.assert_array_equal(grid.bin_np(x), want)
    np.testing.assert_array_equal(grid.bin_np(x, 2), want + 2)
    inside = (x >= 0) & (x <= 1)
    xs, ks = x[inside], want[inside]
    order = np.argsort(xs, kind="stable")
    assert np.all(np.diff(ks[order]) >= 0)  # monotone
    assert np.all((grid.left_np(ks) <= xs) & (xs <= grid.left_np(ks + 1)))
    assert np.all(want[x < 0] == -1) and np.all(want[(x > 1) & ~np.isnan(x)] == grid.bins)
    ids = np.arange(-1, grid.bins + 2)
    got = pl.select(grid.left(pl.lit(pl.Series(ids)))).to_series().to_numpy()
    np.testing.assert_array_equal(got, grid.left_np(ids))
    # the pull's predicate covers every value of the wanted bins (runs and many-run lookups)
    for wanted in ({0, 1, 2, grid.half - 1, grid.half}, set(rng.integers(0, grid.bins, 40))):
        picked = pl.DataFrame({"x": xs}).select(grid.covering(col, wanted)).to_series()
        assert picked.to_numpy()[np.isin(ks, list(wanted))].all()


def test_a_sketch_keeps_its_grid_through_save_and_load(tmp_path, rng):
    # scores in [0, 1] are sketched on the dyadic grid, others on an equal-width one; both
    # come back as they were, and a file from before the dyadic grid (lo, hi, bins) still loads
    for scores, kind in ((rng.beta(0.5, 9, 5000), "dyadic"), (rng.normal(3, 1, 5000), None)):
        sk = ScoreSketch.from_scores(scores)
        back = ScoreSketch.load(sk.save(tmp_path / "s.parquet"))
        assert back.grid == sk.grid and back.bins.equals(sk.bins)
        assert (sk.grid[3] if len(sk.grid) > 3 else None) == kind
        assert ks_2samp(back, scores).statistic == ks_2samp(sk, scores).statistic
    import json

    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "s.parquet")
    meta = json.loads(table.schema.metadata[b"shadowlab.score_sketch"])
    meta["grid"] = meta["grid"][:3]
    assert len(sk.grid) == 3  # the normal scores' equal-width grid: the old layout
    old = table.replace_schema_metadata({b"shadowlab.score_sketch": json.dumps(meta).encode()})
    pq.write_table(old, tmp_path / "old.parquet")
    assert ScoreSketch.load(tmp_path / "old.parquet").grid == sk.grid
    meta["grid"] = [0.0, 1.0, 5, "dyadic", 24, 11]
    bad = table.replace_schema_metadata({b"shadowlab.score_sketch": json.dumps(meta).encode()})
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="Unknown fine-histogram grid"):
        ScoreSketch.load(tmp_path / "bad.parquet")


def test_polars_source_runs_the_fold_when_an_aggregation_offers_one():
    # engine.Aggregation(prepare=, fold=) is an optional fast path: PolarsSource folds the
    # prepared chunks instead of running build (which Spark still runs per partition).
    from shadowlab.engine import Aggregation, PolarsSource

    def build(lf):
        raise AssertionError("build must not run when a fold is given")

    def fold(chunks):
        total = sum(int(c["v"].sum()) for c in chunks)
        return pl.DataFrame({"k": [1], "v": [total]})

    frame = pl.LazyFrame({"v": list(range(1, 100_001)), "w": [0] * 100_000})
    agg = Aggregation(build, ("k",), {"v": "sum"}, lambda lf: lf.select("v"), fold)
    assert PolarsSource(frame).aggregate(agg).to_dicts() == [{"k": 1, "v": 5_000_050_000}]
    plain = Aggregation(
        lambda lf: lf.group_by(pl.lit(1).alias("k")).agg(pl.col("v").sum()), ("k",), {"v": "sum"}
    )
    assert PolarsSource(frame).aggregate(plain).to_dicts() == [{"k": 1, "v": 5_000_050_000}]


def test_polars_source_folds_chunks_in_scan_order(tmp_path):
    # A fold's float sums depend on the order the chunks come in: PolarsSource hands them over
    # in scan order, so the same files give the same bits on every run (compare_scores'
    # Wasserstein and its error bound used to differ in the last bit between runs).
    from shadowlab.engine import Aggregation, PolarsSource

    for i in range(6):
        start = i * 150_000
        pl.DataFrame({"i": pl.int_range(start, start + 150_000, eager=True)}).write_parquet(
            tmp_path / f"part-{i}.parquet", row_group_size=20_000
        )
    seen: list[int] = []

    def fold(chunks):
        for c in chunks:
            seen.append(int(c["i"][0]))
        return pl.DataFrame({"k": [1], "n": [len(seen)]})

    frame = pl.scan_parquet(sorted(tmp_path.glob("*.parquet")))
    agg = Aggregation(lambda lf: lf, ("k",), {"n": "sum"}, lambda lf: lf.select("i"), fold)
    PolarsSource(frame).aggregate(agg)
    assert len(seen) > 6 and seen == sorted(seen)


def test_kstwo_shortcut_equals_scipy():
    # _kstwo_sf answers scipy's own branches for n > 140 (n d^2 >= 370 gives 0.0, n d^2 >= 2.2
    # gives 2 * smirnov(n, d), below that Pelz-Good's series unless n <= 1e5 and n d^1.5 <= 1.4)
    # without importing scipy.stats; everywhere else it calls kstwo.sf.
    # Either way the value is scipy's, exactly, including either side of both cut-offs.
    ns = [1, 2, 139, 140, 141, 1000, 12_345, 10**6, 2.5e7]
    ds = [0.0, 1e-6, 0.001, 0.0185, 0.0193, 0.05, 0.2, 0.4999, 0.5, 0.9, 1.0]
    rng = np.random.default_rng(7)
    for n in ns:
        # (smirnov is O(n) per value, ~1 s at n = 1e6: the 2.2 cut-off and random points are
        # checked on the smaller sizes)
        small = n < 20_000
        cuts = [
            math.sqrt(c / n) * f
            for c in (2.2, 370)
            if small or c == 370
            for f in (0.999, 1.0, 1.001)
        ]
        more = np.sqrt(rng.uniform(2.2, 370, 20) / n).tolist() if small else []
        # below 2.2 (n > 1e5 or n d^1.5 > 1.4): the Pelz-Good series, ported step for step
        more += np.sqrt(rng.uniform(1e-3, 2.2, 40) / n).tolist()
        for d in ds + cuts + more:
            if d > 1:
                continue
            want = float(st.kstwo.sf(d, n))
            assert drift._kstwo_sf(d, n) == want, (d, n)


def test_importing_the_analyses_does_not_import_scipy_stats_or_sklearn():
    # scipy.stats (~0.5 s) and sklearn (~1.5 s) are imported where they are used, not when a
    # gate or a notebook imports shadowlab's analyses.
    import subprocess
    import sys

    code = (
        "import sys, shadowlab.gate, shadowlab.drift, shadowlab.thresholds, shadowlab.load, "
        "shadowlab.feedback, shadowlab.accuracy, shadowlab.cli\n"
        "print(sorted(m for m in sys.modules if m.startswith(('scipy.stats', 'sklearn'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_jensen_shannon_distance_equals_scipy(rng):
    # _jensenshannon follows scipy.spatial.distance.jensenshannon(base=2) step by step with
    # numpy's log (scipy.spatial is not imported); zero shares included.
    for i in range(500):
        k = int(rng.integers(2, 40))
        p, q = rng.random(k), rng.random(k)
        p[rng.integers(0, k, k // 3)] = 0 if i % 2 else p[0]
        q[rng.integers(0, k, k // 4)] = 0
        want = float(jensenshannon(p, q, base=2))
        assert drift._jensenshannon(p, q) == pytest.approx(want, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("seed", range(6))
def test_merged_counts_equals_the_binary_searches_it_replaces(seed):
    # _merged_counts (one stable merge) must give exactly what _sorted_union plus
    # np.searchsorted(side="right") and a membership test give: heavy ties, -0.0 beside 0.0,
    # and empty sides included.
    rng = np.random.default_rng(seed)
    n1, n2 = [(0, 40), (40, 0), (0, 0), (1, 1), (300, 500), (2000, 50)][seed]
    a1 = np.sort(rng.choice([-1.0, -0.0, 0.0, 0.25, 0.5, 1.0], n1) + 0.0 * rng.random(n1))
    a2 = np.sort(np.round(rng.normal(0, 0.5, n2), 1))
    a1[: n1 // 3] = np.where(a1[: n1 // 3] == 0.0, -0.0, a1[: n1 // 3])
    x, r1, r2, in1 = drift._merged_counts(a1, a2)
    np.testing.assert_array_equal(x, drift._sorted_union(a1, a2))
    np.testing.assert_array_equal(r1, np.searchsorted(a1, x, side="right"))
    np.testing.assert_array_equal(r2, np.searchsorted(a2, x, side="right"))
    np.testing.assert_array_equal(in1, np.isin(x, a1))
    assert len(x) == len(np.unique(np.concatenate((a1, a2))))
