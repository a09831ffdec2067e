"""CanaryRouter: deterministic routing, ramp monotonicity, failure isolation, hot reload."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from conftest import WEEK_START
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

from shadowlab import schema as S
from shadowlab.logs import PairLogWriter, scan_pairs
from shadowlab.router import (
    CanaryRouter,
    RouterConfig,
    ServedModelError,
    SklearnModel,
    audit_draw,
    route_hash,
)

HERE = Path(__file__).parent
IDS = [f"req-{i}" for i in range(20_000)]


class Const:
    """A model returning a fixed score (or raising / NaN when told to)."""

    def __init__(self, name: str, value: float = 0.5, *, fail: str | None = None) -> None:
        self.name = name
        self.value = value
        self.fail = fail
        self.calls = 0

    def score(self, x: Any) -> float:
        self.calls += 1
        if self.fail == "raise":
            raise RuntimeError("model exploded")
        if self.fail == "nan":
            return float("nan")
        if self.fail == "inf":
            return float("inf")
        return self.value


class Flaky:
    """Row-wise model whose failure depends on the input: x[0] < 0 raises, x[0] > 2 gives NaN,
    x[0] in (1.5, 2] gives inf. With ``batch`` it also has a vectorised score_batch that raises
    for the whole batch when any row would raise (as real vectorised code does)."""

    def __init__(self, name: str, *, scale: float = 1.0, batch: bool = True) -> None:
        self.name = name
        self.scale = scale
        if batch:
            self.score_batch = self._score_batch

    def score(self, x: Any) -> float:
        v = float(np.asarray(x).reshape(-1)[0])
        if v < 0:
            raise ValueError(f"negative input {v:.3f}")
        if v > 2:
            return float("nan")
        if v > 1.5:
            return float("inf")
        return 1 / (1 + math.exp(-self.scale * v))

    def _score_batch(self, X: Any) -> np.ndarray:
        v = np.asarray(X)[:, 0]
        if (v < 0).any():
            raise ValueError("negative input in batch")
        out = 1 / (1 + np.exp(-self.scale * v))
        return np.where(v > 2, np.nan, np.where(v > 1.5, np.inf, out))


def router(p: float = 0.0, *, salt: str = "s", **kw: Any) -> CanaryRouter:
    kw.setdefault("log", None)
    return CanaryRouter(Const("fraud:1.0.0", 0.1), Const("fraud:2.0.0", 0.9), p, salt=salt, **kw)


def candidates(r: CanaryRouter, ids: list[str] = IDS) -> np.ndarray:
    return r.route_batch(ids) == S.CANDIDATE


# ------------------------------------------------------------------------------------------
# Hash and routing
# ------------------------------------------------------------------------------------------


def test_route_hash_is_keyed_blake2b_and_pinned() -> None:
    # Pinned value: any change to the hash would silently re-route live traffic.
    assert route_hash("shadowlab", "req-1") == 1812294259507713394
    # Definition (module docstring): first 8 bytes, big-endian, of BLAKE2b-128 keyed by the salt.
    d = hashlib.blake2b(b"req-1", digest_size=16, key=b"shadowlab").digest()
    assert route_hash("shadowlab", "req-1") == int.from_bytes(d[:8], "big")
    long_salt = "x" * 100  # longer than BLAKE2b's 64-byte key limit: still works
    assert route_hash(long_salt, "a") != route_hash("x" * 99, "a")


def test_routing_identical_across_processes() -> None:
    def child(hashseed: str) -> dict[str, list[Any]]:
        env = {**os.environ, "PYTHONHASHSEED": hashseed}
        out = subprocess.run(
            [sys.executable, str(HERE / "_route_child.py"), "proc-salt", "0.3", "0.05", "3000"],
            capture_output=True, text=True, check=True, env=env, timeout=120,
        )  # fmt: skip
        return json.loads(out.stdout)

    a, b = child("1"), child("4242")
    assert a == b
    here = router(0.3, salt="proc-salt", audit_rate=0.05)
    ids = [f"req-{i}" for i in range(3000)]
    assert a["route"] == [here.route(r) for r in ids] == a["route_batch"]
    assert a["audit"] == [here.is_audit(r) for r in ids]
    assert 600 < a["route"].count("candidate") < 1200  # not degenerate


def test_edges_zero_and_one() -> None:
    assert not candidates(router(0.0)).any()
    assert candidates(router(1.0)).all()
    assert all(router(1.0).route(r) == "candidate" for r in IDS[:100])


@settings(max_examples=40, deadline=None)
@given(
    p=st.floats(0, 1),
    q=st.floats(0, 1),
    salt=st.text(min_size=1, max_size=20),
)
def test_ramp_monotonicity(p: float, q: float, salt: str) -> None:
    lo, hi = sorted((p, q))
    at_lo, at_hi = (
        candidates(router(lo, salt=salt), IDS[:3000]),
        candidates(router(hi, salt=salt), IDS[:3000]),
    )
    assert not (at_lo & ~at_hi).any()  # on the candidate at lo => on it at every hi > lo
    r = router(lo, salt=salt)
    r.traffic_pct = hi  # a ramp in place keeps the same property
    assert np.array_equal(candidates(r, IDS[:3000]), at_hi)


@settings(max_examples=40, deadline=None)
@given(p=st.floats(0, 1), salt=st.text(min_size=1, max_size=20))
def test_traffic_share_within_binomial_tolerance(p: float, salt: str) -> None:
    k = int(candidates(router(p, salt=salt)).sum())
    n = len(IDS)
    # k ~ Binomial(n, p) for a pseudo-random hash; 5 standard deviations (+1 for p near 0/1)
    # gives a false alarm rate of ~6e-7 per example.
    assert abs(k - n * p) <= 5 * math.sqrt(n * p * (1 - p)) + 1


def test_fine_traffic_pct_is_honoured() -> None:
    ids = [f"id{i}" for i in range(200_000)]
    for p in (0.0005, 0.0025):  # far below 1 %
        k = int(candidates(router(p, salt="fine"), ids).sum())
        sd = math.sqrt(len(ids) * p * (1 - p))
        assert abs(k - len(ids) * p) <= 5 * sd, (p, k)


def test_salts_and_audit_draws_are_independent() -> None:
    n = len(IDS)
    a = candidates(router(0.5, salt="A"))
    b = candidates(router(0.5, salt="B"))
    audit = router(0.5, salt="A", audit_rate=0.5).predict_batch(np.zeros((n, 1)), IDS).audit
    # Independent halves: overlap ~ Binomial(n, 1/4), sd = sqrt(n * 3/16) ~ 61.
    sd = math.sqrt(n * 0.25 * 0.75)
    assert abs(int((a & b).sum()) - n / 4) <= 5 * sd
    assert abs(int((a & audit).sum()) - n / 4) <= 5 * sd
    assert abs(int(audit.sum()) - n / 2) <= 5 * math.sqrt(n / 4)
    assert audit_draw("A", IDS[0], 0.5) == bool(audit[0])
    assert not audit_draw("A", IDS[0], 0.0) and audit_draw("A", IDS[0], 1.0)


# ------------------------------------------------------------------------------------------
# Serving and logging
# ------------------------------------------------------------------------------------------


def test_predict_serves_routed_model_and_logs_pair_rows(tmp_path: Path) -> None:
    with PairLogWriter(tmp_path) as log:
        r = router(0.3, log=log, salt="serve", audit_rate=0.2)
        answers = [
            r.predict([0.0], rid, ts=WEEK_START, context={"country": "DE", "amount": 12.5})
            for rid in IDS[:500]
        ]
    for a in answers:
        assert a.routed == a.served == r.route(a.request_id)
        assert a.score == (0.9 if a.served == "candidate" else 0.1) == float(a)
        assert (a.primary_score, a.candidate_score) == (0.1, 0.9)
    out = scan_pairs(tmp_path).collect()
    assert out.height == 500
    assert out.columns == [*S.PAIR_SCHEMA, "country", "amount"]
    assert out[S.SERVED].to_list() == [a.served for a in answers]
    assert out[S.AUDIT].to_list() == [r.is_audit(rid) for rid in IDS[:500]]
    assert set(out[S.TRAFFIC_PCT]) == {0.3} and set(out[S.AUDIT_RATE]) == {0.2}
    assert set(out["country"]) == {"DE"} and (out[S.PRIMARY_LATENCY] >= 0).all()
    assert set(out[S.PRIMARY_MODEL]) == {"fraud:1.0.0"}
    st_ = r.stats()
    assert (st_.requests, st_.served_candidate) == (500, int((out[S.SERVED] == "candidate").sum()))


def test_latency_measured_with_the_given_clock(tmp_path: Path) -> None:
    ticks = iter(range(0, 10_000, 2))  # seconds: every call of the clock advances 2 s

    with PairLogWriter(tmp_path) as log:
        r = router(0.0, log=log, clock=lambda: float(next(ticks)))
        r.predict([0], "a", ts=WEEK_START)
        r.predict_batch(np.zeros((4, 1)), ["b", "c", "d", "e"], WEEK_START)
    out = scan_pairs(tmp_path).collect()
    # one request: 2 s = 2000 ms per model; a batch of 4 (row-wise models): 2000 ms each row
    assert out[S.PRIMARY_LATENCY].to_list() == [2000.0] * 5
    assert out[S.CANDIDATE_LATENCY].to_list() == [2000.0] * 5
    # a vectorised score_batch call is charged once and split evenly over its rows
    ticks2 = iter(range(0, 10_000, 2))
    vec = CanaryRouter(Flaky("v1"), Flaky("v2"), 0.0, log=None, salt="s",
                       clock=lambda: float(next(ticks2)))  # fmt: skip
    with PairLogWriter(tmp_path / "vec") as log:
        vec.log = log
        vec.predict_batch(np.zeros((4, 1)), ["b", "c", "d", "e"], WEEK_START)
    assert scan_pairs(tmp_path / "vec").collect()[S.PRIMARY_LATENCY].to_list() == [500.0] * 4


def test_both_models_score_every_request() -> None:
    r = router(0.5)
    for rid in IDS[:50]:
        r.predict(None, rid)
    assert r.primary.calls == r.candidate.calls == 50  # type: ignore[attr-defined]


@pytest.mark.parametrize("fail", ["raise", "nan", "inf"])
@pytest.mark.parametrize("served", ["primary", "candidate"])
def test_shadow_failures_are_isolated(tmp_path: Path, fail: str, served: str) -> None:
    good, bad = Const("good:1", 0.25), Const("bad:2", fail=fail)
    pair = (good, bad) if served == "primary" else (bad, good)
    p = 0.0 if served == "primary" else 1.0
    with PairLogWriter(tmp_path) as log:
        r = CanaryRouter(*pair, p, log=log, salt="iso", on_served_failure="raise")
        assert [r.predict([1.0], rid).score for rid in IDS[:20]] == [0.25] * 20
        out = r.predict_batch(np.ones((30, 1)), IDS[20:50])
        assert np.array_equal(out.scores, np.full(30, 0.25))
    rows = scan_pairs(tmp_path).collect()
    shadow = "candidate" if served == "primary" else "primary"
    assert rows[f"{shadow}_score"].null_count() == 50
    want = {"raise": "RuntimeError: model exploded", "nan": "NonFiniteScore: nan",
            "inf": "NonFiniteScore: inf"}[fail]  # fmt: skip
    assert set(rows[f"{shadow}_error"]) == {want}
    assert set(rows[S.SERVED]) == {served} and rows[f"{served}_error"].null_count() == 50
    assert getattr(r.stats(), f"{shadow}_failures") == 50


@pytest.mark.parametrize("fail", ["raise", "nan"])
def test_served_failure_raise_policy_logs_then_raises(tmp_path: Path, fail: str) -> None:
    with PairLogWriter(tmp_path) as log:
        r = CanaryRouter(Const("v1", fail=fail), Const("v2", 0.7), 0.0, log=log, salt="x")
        with pytest.raises(ServedModelError, match="served model 'v1' failed for request 'a'"):
            r.predict([0], "a")
        with pytest.raises(ServedModelError, match="served model failed for 3 of 3 requests") as e:
            r.predict_batch(np.zeros((3, 1)), ["b", "c", "d"])
        assert e.value.result is not None and e.value.result.failed.tolist() == [True] * 3
    rows = scan_pairs(tmp_path).collect()
    assert rows[S.REQUEST_ID].to_list() == ["a", "b", "c", "d"]  # failures are logged too
    assert rows[S.PRIMARY_ERROR].null_count() == 0
    assert rows[S.CANDIDATE_SCORE].to_list() == [0.7] * 4
    assert r.stats().served_primary == 0


def test_served_failure_fallback_policy(tmp_path: Path) -> None:
    with PairLogWriter(tmp_path) as log:
        r = CanaryRouter(Const("v1", 0.2), Const("v2", fail="raise"), 1.0, log=log, salt="x",
                         on_served_failure="fallback")  # fmt: skip
        a = r.predict([0], "a")
        assert (a.score, a.served, a.routed) == (0.2, "primary", "candidate")
        b = r.predict_batch(np.zeros((2, 1)), ["b", "c"])
        assert b.served.tolist() == ["primary"] * 2 and b.routed.tolist() == ["candidate"] * 2
    rows = scan_pairs(tmp_path).collect()
    assert rows[S.SERVED].to_list() == ["primary"] * 3  # served = whose output was used
    assert r.stats().fallbacks == 3
    both = CanaryRouter(Const("v1", fail="nan"), Const("v2", fail="raise"), 0.0, log=None,
                        salt="x", on_served_failure="fallback")  # fmt: skip
    with pytest.raises(ServedModelError, match="the fallback 'v2' failed too"):
        both.predict([0], "z")


def test_predict_batch_matches_predict_row_by_row(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    X = rng.uniform(-0.3, 2.3, size=(400, 2))  # some rows raise, some NaN, some inf
    ids = [f"q{i}" for i in range(400)]
    ts = pl.Series([WEEK_START + dt.timedelta(seconds=i) for i in range(400)])
    country = rng.choice(["DE", "FR"], 400)
    outs = {}
    for mode in ("single", "batch"):
        with PairLogWriter(tmp_path / mode) as log:
            r = CanaryRouter(Flaky("v1", batch=False), Flaky("v2", scale=2.0), 0.4, log=log,
                             salt="same", audit_rate=0.3, on_served_failure="fallback")  # fmt: skip
            if mode == "single":
                answered = np.full(400, np.nan)
                for i in range(400):
                    try:
                        a = r.predict(X[i], ids[i], ts=ts[i], context={"country": country[i]})
                        answered[i] = a.score
                    except ServedModelError:
                        pass
            else:
                with pytest.raises(ServedModelError, match="served model failed for") as e:
                    r.predict_batch(X, ids, ts, context={"country": country})
                res = e.value.result
                assert res is not None
                assert np.array_equal(np.isnan(res.scores), res.failed)
                assert np.array_equal(res.scores[~res.failed], answered[~res.failed])
        outs[mode] = (
            scan_pairs(tmp_path / mode).collect().drop(S.PRIMARY_LATENCY, S.CANDIDATE_LATENCY)
        )
        outs[mode + "_stats"] = r.stats()
    assert outs["batch"].equals(outs["single"])
    assert outs["single"][S.PRIMARY_ERROR].str.starts_with("ValueError").sum() > 0
    assert outs["single"][S.CANDIDATE_ERROR].str.starts_with("NonFiniteScore").sum() > 0
    assert outs["single_stats"] == outs["batch_stats"]


def test_predict_batch_without_failures_returns_arrays() -> None:
    r = router(0.5, audit_rate=0.1)
    out = r.predict_batch(np.zeros((1000, 3)), IDS[:1000])
    assert np.array_equal(out.routed, r.route_batch(IDS[:1000]))
    assert np.array_equal(out.scores, np.where(out.routed == "candidate", 0.9, 0.1))
    assert len(out) == 1000 and "BatchPrediction(n=1000" in repr(out)
    with pytest.raises(ValueError, match="X has 2 rows but request_ids has 3"):
        r.predict_batch(np.zeros((2, 1)), ["a", "b", "c"])


def test_logging_failure_never_breaks_serving() -> None:
    class BrokenLog:
        def write(self, row: Any) -> None:
            raise OSError("disk full")

        def write_batch(self, frame: Any) -> None:
            raise OSError("disk full")

    r = router(0.0, log=BrokenLog())
    assert r.predict([0], "a").score == 0.1
    assert r.predict_batch(np.zeros((5, 1)), IDS[:5]).scores.tolist() == [0.1] * 5
    s = r.stats()
    assert s.log_failures == 2 and s.last_log_error == "OSError: disk full"


def test_concurrent_predict_logs_every_request(tmp_path: Path) -> None:
    with PairLogWriter(tmp_path, max_rows=97) as log:
        r = router(0.2, log=log)

        def work(k: int) -> None:
            for rid in IDS[k * 300 : (k + 1) * 300]:
                r.predict([0], rid, ts=WEEK_START)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    out = scan_pairs(tmp_path).collect()  # raises on duplicate ids
    assert out.height == 1200 and r.stats().requests == 1200


def test_bad_inputs_rejected_before_scoring() -> None:
    r = router(0.5)
    with pytest.raises(ValueError, match="ts must be timezone-aware"):
        r.predict([0], "a", ts=dt.datetime(2026, 11, 2))
    with pytest.raises(ValueError, match="clashes with a pair-log column"):
        r.predict([0], "a", context={"served": "x"})
    naive = pl.Series([dt.datetime(2026, 11, 2)] * 2)
    with pytest.raises(ValueError, match="naive datetimes"):
        r.predict_batch(np.zeros((2, 1)), ["a", "b"], naive)
    with pytest.raises(ValueError, match="Context column 'c' has 1 values for 2 requests"):
        r.predict_batch(np.zeros((2, 1)), ["a", "b"], context={"c": ["x"]})
    with pytest.raises(TypeError, match="request_ids must all be str"):
        r.route_batch(["a", 3])  # type: ignore[list-item]
    assert r.primary.calls == 0  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------
# Settings
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        (
            {"traffic_pct": 1.5},
            "The 'traffic_pct' parameter of CanaryRouter must be a float in [0, 1]. Got 1.5 instead.",
        ),
        (
            {"audit_rate": -0.1},
            "The 'audit_rate' parameter of CanaryRouter must be a float in [0, 1]. Got -0.1 instead.",
        ),
        (
            {"traffic_pct": float("nan")},
            "The 'traffic_pct' parameter of CanaryRouter must be a float in [0, 1]. Got nan instead.",
        ),
        (
            {"on_served_failure": "ignore"},
            "The 'on_served_failure' parameter of CanaryRouter must be a str among {'raise', 'fallback'}. Got 'ignore' instead.",
        ),
        (
            {"salt": ""},
            "The 'salt' parameter of CanaryRouter must be a non-empty str. Got '' instead.",
        ),
    ],
)
def test_parameter_errors(kw: dict[str, Any], msg: str) -> None:
    args = {"traffic_pct": 0.0, "salt": "s", **kw}
    p = args.pop("traffic_pct")
    with pytest.raises(ValueError) as err:
        CanaryRouter(Const("a"), Const("b"), p, log=None, **args)
    assert str(err.value) == msg


def test_model_protocol_checked() -> None:
    with pytest.raises(TypeError, match="'candidate' model must have a str 'name'"):
        CanaryRouter(Const("a"), object(), log=None, salt="s")  # type: ignore[arg-type]


def test_rollback_is_traffic_pct_zero() -> None:
    r = router(0.5)
    assert candidates(r).any()
    r.traffic_pct = 0
    assert not candidates(r).any()
    assert r.predict([0], IDS[0]).served == "primary"


def _write_config(path: Path, text: str, bump: int) -> None:
    path.write_text(text)
    st_ = path.stat()
    # mtime resolution differs by filesystem; move it explicitly so the change is visible
    os.utime(path, ns=(st_.st_atime_ns, st_.st_mtime_ns + bump * 1_000_000_000))


def test_toml_config_hot_reload(tmp_path: Path) -> None:
    cfg = tmp_path / "router.toml"
    _write_config(cfg, "traffic_pct = 0.0\naudit_rate = 0.1\n", 0)
    r = CanaryRouter(Const("a", 0.1), Const("b", 0.9), log=None, salt="s", config=cfg,
                     reload_interval=0)  # fmt: skip
    assert r.config == RouterConfig(0.0, 0.1, "raise")
    assert not candidates(r).any()
    _write_config(cfg, 'traffic_pct = 1.0\non_served_failure = "fallback"\n', 1)
    assert r.predict([0], "x").served == "candidate"  # picked up without a restart
    assert r.config == RouterConfig(1.0, 0.0, "fallback") and r.stats().config_reloads == 1
    _write_config(cfg, "traffic_pct = 7\n", 2)  # broken: keep serving with the last good one
    assert r.traffic_pct == 1.0
    s = r.stats()
    assert s.config_errors == 1 and "must be a float in [0, 1]" in (s.last_config_error or "")
    _write_config(cfg, "traffic_pct = 0  # rollback\n", 3)
    assert r.route("x") == "primary"


def test_toml_keys_missing_keep_constructor_values(tmp_path: Path) -> None:
    cfg = tmp_path / "router.toml"
    cfg.write_text("traffic_pct = 0.25\n")
    r = CanaryRouter(Const("a"), Const("b"), 0.9, log=None, salt="s", config=cfg,
                     audit_rate=0.05, on_served_failure="fallback")  # fmt: skip
    assert r.config == RouterConfig(0.25, 0.05, "fallback")


def test_toml_config_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "r.toml"
    cfg.write_text("trafic_pct = 0.1\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['trafic_pct'\]"):
        CanaryRouter(Const("a"), Const("b"), log=None, salt="s", config=cfg)
    cfg.write_text("traffic_pct = \n")
    with pytest.raises(ValueError, match="is not valid TOML"):
        RouterConfig.from_toml(cfg)


# ------------------------------------------------------------------------------------------
# scikit-learn adapter
# ------------------------------------------------------------------------------------------


def test_sklearn_adapter(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 3))
    y = (X[:, 0] + rng.normal(size=300) > 0).astype(int)
    est = LogisticRegression().fit(X, y)
    m = SklearnModel(est, "fraud:1.4.0")
    want = est.predict_proba(X)[:, 1]
    assert m.score(X[0]) == pytest.approx(want[0], rel=1e-12)
    assert np.allclose(m.score_batch(X), want, rtol=1e-12)
    r = CanaryRouter(m, SklearnModel(est, "fraud:2.0.0"), 0.5, log=None, salt="sk")
    out = r.predict_batch(X, IDS[:300])
    assert np.allclose(out.scores, want, rtol=1e-12)
    with pytest.raises(TypeError, match="needs a classifier with predict_proba"):
        SklearnModel(object(), "x")
