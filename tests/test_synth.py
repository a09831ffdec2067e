"""Tests of the synthetic shadow week (shadowlab.synth) and `shadowlab simulate`.

Every scenario's intended property is measured here from the files the generator wrote (not
from its own tallies), so the generator cannot silently stop producing it. Weeks are small
(20-100 k rows); the models are trained once per process (cached per seed).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import average_precision_score

from shadowlab import schema as S
from shadowlab.cli import main
from shadowlab.logs import scan_labels, scan_pairs
from shadowlab.synth import (
    CHANNELS,
    COUNTRIES,
    DEFAULT_START,
    SCENARIOS,
    SimulatedWeek,
    read_manifest,
    simulate_week,
)

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "samples" / "trigger-shift"


@pytest.fixture(scope="module")
def weeks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SimulatedWeek]:
    root = tmp_path_factory.mktemp("weeks")
    rows = {"trigger-shift": 100_000, "benign": 150_000, "broken": 40_000, "drift": 150_000}
    return {name: simulate_week(root / name, scenario=name, rows=n) for name, n in rows.items()}


def _pairs(week: SimulatedWeek) -> pl.DataFrame:
    return scan_pairs(week.pairs_dir).collect()


def _joined(week: SimulatedWeek) -> pl.DataFrame:
    truth = pl.read_parquet(week.truth_path)
    return _pairs(week).join(truth, on=S.REQUEST_ID, how="left", validate="1:1")


def _trigger_rates(pairs: pl.DataFrame, t: float) -> tuple[float, float]:
    out = pairs.select(
        (pl.col(S.PRIMARY_SCORE) >= t).mean().alias("p"),
        (pl.col(S.CANDIDATE_SCORE) >= t).mean().alias("c"),
    )
    return out["p"][0], out["c"][0]


def _reference_ap(week: SimulatedWeek) -> dict[str, float]:
    ref = pl.read_parquet(week.reference_path)
    return {
        m: average_precision_score(
            ref.filter(pl.col("model") == m)[S.LABEL], ref.filter(pl.col("model") == m)["score"]
        )
        for m in (S.PRIMARY, S.CANDIDATE)
    }


# -- scenarios --------------------------------------------------------------------------------


def test_trigger_shift_v2_better_ap_but_twice_the_triggers(weeks):
    week = weeks["trigger-shift"]
    ap = _reference_ap(week)
    # AP recomputed with sklearn from reference.parquet: v2 clearly better than v1.
    assert ap[S.CANDIDATE] > ap[S.PRIMARY] + 0.2
    assert ap[S.PRIMARY] == pytest.approx(week.primary_ap)
    assert ap[S.CANDIDATE] == pytest.approx(week.candidate_ap)
    p, c = _trigger_rates(_pairs(week), week.primary_threshold)
    assert 0.01 <= p <= 0.03  # v1 flags roughly 1-3 % at its production threshold
    assert 1.8 <= c / p <= 2.2
    assert week.trigger_ratio == pytest.approx(c / p)
    # v2's score distribution differs from v1's (not just a scaled copy): KS distance.
    ref = pl.read_parquet(week.reference_path)
    a = np.sort(ref.filter(pl.col("model") == S.PRIMARY)["score"].to_numpy())
    b = np.sort(ref.filter(pl.col("model") == S.CANDIDATE)["score"].to_numpy())
    grid = np.concatenate([a, b])
    ks = np.max(
        np.abs(
            np.searchsorted(a, grid, "right") / a.size - np.searchsorted(b, grid, "right") / b.size
        )
    )
    assert ks > 0.2


def test_benign_same_trigger_rate_and_better_ap(weeks):
    week = weeks["benign"]
    ap = _reference_ap(week)
    assert ap[S.CANDIDATE] >= ap[S.PRIMARY]
    p, c = _trigger_rates(_pairs(week), week.primary_threshold)
    assert abs(c / p - 1) <= 0.05
    assert week.candidate_errors == 0


def test_broken_segment_collapses_and_errors(weeks):
    week = weeks["broken"]
    df = _joined(week)
    hit = df.filter(pl.col("feature_missing"))
    rest = df.filter(~pl.col("feature_missing"))
    # Only Brazil, only inside the window (day 2 06:00 to day 4 18:00).
    assert hit.height > 1000
    assert set(hit["country"].unique()) == {"BR"}
    lo, hi = DEFAULT_START + dt.timedelta(hours=30), DEFAULT_START + dt.timedelta(hours=90)
    assert hit["ts"].min() >= lo and hit["ts"].max() < hi
    # v2's scores collapse there; v1's do not.
    br_ok = rest.filter(pl.col("country") == "BR")
    c_hit = hit[S.CANDIDATE_SCORE].drop_nulls().median()
    c_ok = br_ok[S.CANDIDATE_SCORE].median()
    assert c_hit < 0.25 * c_ok
    q99 = pl.col(S.CANDIDATE_SCORE).quantile(0.99)
    assert hit.select(q99).item() < 0.25 * br_ok.select(q99).item()
    assert 0.5 < hit[S.PRIMARY_SCORE].median() / br_ok[S.PRIMARY_SCORE].median() < 2.0
    # Some candidate calls raised: logged as errors, only in the broken segment, never v1.
    errors = df.filter(pl.col(S.CANDIDATE_ERROR).is_not_null())
    assert errors.height == week.candidate_errors > 0
    assert errors["feature_missing"].all()
    assert errors[S.CANDIDATE_ERROR].str.starts_with("ValueError").all()
    assert errors[S.CANDIDATE_SCORE].is_null().all()
    assert df[S.PRIMARY_ERROR].null_count() == df.height
    # Shadow mode: the failures never changed what was served.
    assert (df[S.SERVED] == S.PRIMARY).all()


def test_drift_shifts_inputs_mid_week(weeks):
    week = weeks["drift"]
    df = _joined(week)
    before = df.filter(pl.col("drift") == 0)
    after = df.filter(pl.col("drift") == 1)
    assert before.height > 0.4 * df.height and after.height > 0.3 * df.height
    assert before["ts"].max() < after["ts"].min()
    # Channel mix moves towards the app (0.42 -> 0.57 by construction).
    app_before = (before["channel"] == "app").mean()
    app_after = (after["channel"] == "app").mean()
    assert app_after - app_before > 0.1
    # Both models see it: their scores rise, and so does the true fraud rate.
    for col in (S.PRIMARY_SCORE, S.CANDIDATE_SCORE):
        assert after[col].mean() > 1.1 * before[col].mean()
    assert after["is_fraud"].mean() > before["is_fraud"].mean()
    # On top of the benign scenario: before the drift the week *is* the benign week.
    benign = _pairs(weeks["benign"]).drop(S.PRIMARY_LATENCY, S.CANDIDATE_LATENCY)
    cols = benign.columns
    same = before.select(cols).join(benign, on=cols, how="semi", nulls_equal=True)
    assert same.height == before.height


# -- the world --------------------------------------------------------------------------------


def test_layout_schema_and_manifest(weeks):
    week = weeks["trigger-shift"]
    parts = sorted(week.pairs_dir.rglob("*.parquet"))
    assert parts and all(
        re.fullmatch(r"date=\d{4}-\d{2}-\d{2}", p.parent.name) and p.name.startswith("part-")
        for p in parts
    )
    assert {p.parent.name for p in parts} == {
        f"date={(DEFAULT_START + dt.timedelta(days=d)).date()}" for d in range(7)
    }
    pairs = _pairs(week)
    assert pairs.height == week.rows == pairs[S.REQUEST_ID].n_unique()
    assert pairs.schema["country"] == pl.String and pairs.schema["channel"] == pl.String
    assert set(pairs["country"].unique()) <= set(COUNTRIES)
    assert set(pairs["channel"].unique()) == set(CHANNELS)
    assert pairs[S.AUDIT_RATE].unique().to_list() == [0.01]
    assert pairs[S.TRAFFIC_PCT].unique().to_list() == [0.0]
    assert pairs[S.PRIMARY_MODEL].unique().to_list() == [week.primary_model]
    assert pairs[S.CANDIDATE_MODEL].unique().to_list() == [week.candidate_model]
    assert (pairs[S.CANDIDATE_LATENCY] > pairs[S.PRIMARY_LATENCY]).all()
    labels = scan_labels(week.labels_dir).collect()
    assert labels.schema == pl.Schema(S.LABEL_SCHEMA)
    assert all(
        re.fullmatch(r"labels-\d{4}-\d{2}-\d{2}\.parquet", p.name)
        for p in week.labels_dir.iterdir()
    )
    ref = pl.read_parquet(week.reference_path)
    assert ref.schema == pl.Schema({"model": pl.String, "score": pl.Float64, S.LABEL: pl.Int8})
    assert set(ref["model"].unique()) == {S.PRIMARY, S.CANDIDATE}
    truth = pl.read_parquet(week.truth_path)
    assert truth.schema["is_fraud"] == pl.Int8 and truth.height == week.rows
    manifest = read_manifest(week.out_dir)
    assert manifest["primary_threshold"] == week.primary_threshold
    assert manifest["scenario"] == "trigger-shift" and manifest["rows"] == week.rows
    assert manifest["holdout_ap"] == {"primary": week.primary_ap, "candidate": week.candidate_ap}
    assert (
        manifest["command"]
        == "shadowlab simulate OUT --scenario trigger-shift --rows 100000 --seed 0"
    )
    json.dumps(week.to_dict())  # JSON-safe
    assert "trigger-shift" in repr(week)


def test_fraud_rate_and_volume_shape(weeks):
    week = weeks["trigger-shift"]
    df = _joined(week)
    assert 0.005 <= df["is_fraud"].mean() <= 0.02
    assert df["is_fraud"].mean() == pytest.approx(week.fraud_rate)
    by_hour = df.group_by(pl.col("ts").dt.hour().alias("h")).len().sort("h")["len"].to_numpy()
    assert by_hour[2:5].mean() < 0.25 * by_hour[11:14].mean()  # nights are quiet
    by_day = df.group_by(pl.col("ts").dt.weekday().alias("d")).len().sort("d")
    weekday, weekend = by_day["len"][:5].mean(), by_day["len"][5:].mean()
    assert weekend < 0.95 * weekday
    # Weekends peak later: the share of traffic after 20:00 is higher on Saturday/Sunday.
    late = (
        df.with_columns(
            (pl.col("ts").dt.hour() >= 20).alias("late"),
            (pl.col("ts").dt.weekday() >= 6).alias("we"),
        )
        .group_by("we")
        .agg(pl.col("late").mean())
    )
    shares = dict(zip(late["we"].to_list(), late["late"].to_list(), strict=True))
    assert shares[True] > shares[False] + 0.03


def test_selective_labels(weeks):
    week = weeks["trigger-shift"]
    df = _joined(week)
    labels = scan_labels(week.labels_dir).collect()
    assert labels[S.REQUEST_ID].n_unique() == labels.height
    got = labels.join(df, on=S.REQUEST_ID, how="left", validate="1:1")
    assert got[S.TS].null_count() == 0
    flagged = pl.col(S.PRIMARY_SCORE) >= week.primary_threshold  # shadow: v1 serves
    # Reviews: flagged requests only; audits: the audit slice only; chargebacks: missed fraud.
    src = got.group_by(S.SOURCE).agg(
        flagged.all().alias("all_flagged"),
        pl.col(S.AUDIT).all().alias("all_audit"),
        pl.col(S.AUDIT).any().alias("any_audit"),
        (pl.col(S.LABEL) == pl.col("is_fraud")).all().alias("truthful"),
        pl.col(S.LABEL).min().alias("min_label"),
        flagged.any().alias("any_flagged"),
    )
    row = {r[S.SOURCE]: r for r in src.iter_rows(named=True)}
    assert set(row) == {"review", "audit", "chargeback"}
    assert row["review"]["all_flagged"] and not row["review"]["any_audit"]
    assert row["audit"]["all_audit"]
    assert row["chargeback"]["min_label"] == 1 and not row["chargeback"]["any_flagged"]
    assert all(r["truthful"] for r in row.values())
    # Every flagged or audited request gets its review hours later; the few still missing at
    # as_of (end + 3 days) are from the week's last days (audits wait a median 24 h).
    reviewed = df.filter(flagged | pl.col(S.AUDIT))
    pending = reviewed.join(labels, on=S.REQUEST_ID, how="anti")
    assert pending.height <= 0.005 * reviewed.height
    assert pending.height == 0 or pending[S.TS].min() >= DEFAULT_START + dt.timedelta(days=5)
    # ... unflagged, unaudited legitimate traffic never gets a label ...
    assert got.filter(~flagged & ~pl.col(S.AUDIT) & (pl.col("is_fraud") == 0)).height == 0
    # ... labels arrive after the request and no later than as_of ...
    assert (got[S.LABEL_TS] > got[S.TS]).all()
    assert got[S.LABEL_TS].max() <= week.as_of
    delay = (got[S.LABEL_TS] - got[S.TS]).dt.total_hours(fractional=True)
    assert delay.filter(got[S.SOURCE] == "review").median() < 24
    assert delay.filter(got[S.SOURCE] == "chargeback").min() >= 24
    # ... and chargebacks of the last days are immature.
    missed = df.filter(~flagged & ~pl.col(S.AUDIT) & (pl.col("is_fraud") == 1)).join(
        labels.select(S.REQUEST_ID, S.SOURCE), on=S.REQUEST_ID, how="left"
    )
    day = missed[S.TS].dt.date()
    early = missed.filter(day <= (DEFAULT_START + dt.timedelta(days=2)).date())
    late = missed.filter(day >= (DEFAULT_START + dt.timedelta(days=5)).date())
    # Expected shares (70 % charged back, delay log-normal median 7 d, sigma 0.6, as_of = end
    # + 3 d): about 0.44 for days 1-3 and 0.12 for the weekend.
    assert early[S.SOURCE].is_not_null().mean() > late[S.SOURCE].is_not_null().mean() + 0.15


def test_canary_share_and_served_labels(tmp_path):
    week = simulate_week(tmp_path / "w", scenario="trigger-shift", rows=20_000, traffic_pct=0.25)
    df = _joined(week)
    share = (df[S.SERVED] == S.CANDIDATE).mean()
    assert abs(share - 0.25) < 4 * np.sqrt(0.25 * 0.75 / df.height)
    served = pl.when(pl.col(S.SERVED) == S.CANDIDATE).then(pl.col(S.CANDIDATE_SCORE))
    served = served.otherwise(pl.col(S.PRIMARY_SCORE))
    labels = scan_labels(week.labels_dir).collect()
    reviews = labels.filter(pl.col(S.SOURCE) == "review").join(df, on=S.REQUEST_ID)
    # Reviews follow the *served* model's decision at the production threshold.
    assert reviews.select((served >= week.primary_threshold).all()).item()
    assert (reviews[S.SERVED] == S.CANDIDATE).any()
    assert "--traffic-pct 0.25" in week.command


def test_content_does_not_depend_on_chunking(tmp_path):
    a = simulate_week(tmp_path / "a", scenario="broken", rows=20_000)
    b = simulate_week(tmp_path / "b", scenario="broken", rows=20_000, chunk_rows=3_000)
    assert len(list(b.pairs_dir.rglob("*.parquet"))) > len(list(a.pairs_dir.rglob("*.parquet")))
    key = [S.REQUEST_ID]
    assert _pairs(a).sort(key).equals(_pairs(b).sort(key))
    assert pl.read_parquet(a.truth_path).equals(pl.read_parquet(b.truth_path))
    assert a.manifest_path.read_bytes() == b.manifest_path.read_bytes()


def test_sample_regenerates_bit_for_bit(tmp_path):
    manifest = read_manifest(SAMPLE)
    command = manifest["command"].split()
    assert command[:3] == ["shadowlab", "simulate", "OUT"]
    readme = (REPO / "data" / "samples" / "README.md").read_text()
    assert " ".join(["shadowlab", "simulate", "data/samples/trigger-shift", *command[3:]]) in readme
    out = tmp_path / "regen"
    assert main(["simulate", str(out), *command[3:], "--quiet"]) == 0
    want = sorted(p.relative_to(SAMPLE) for p in SAMPLE.rglob("*") if p.is_file())
    got = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert got == want
    # Row-for-row first (a clearer failure), then byte-for-byte.
    assert scan_pairs(out / "pairs").collect().equals(scan_pairs(SAMPLE / "pairs").collect())
    different = [str(p) for p in want if (out / p).read_bytes() != (SAMPLE / p).read_bytes()]
    assert different == [], f"regenerated sample differs in {different}; see data/samples/README.md"


# -- parameters and CLI -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scenario": "nope"}, "The 'scenario' parameter of simulate_week must be a str among"),
        ({"rows": 0}, "The 'rows' parameter of simulate_week must be an int >= 1. Got 0 instead."),
        ({"rows": 1.5}, "The 'rows' parameter of simulate_week must be an int >= 1. Got 1.5"),
        ({"seed": -1}, "The 'seed' parameter of simulate_week must be an int >= 0. Got -1"),
        ({"traffic_pct": 1.5}, "The 'traffic_pct' parameter of simulate_week must be a float in"),
        ({"audit_rate": -0.1}, "The 'audit_rate' parameter of simulate_week must be a float in"),
        ({"days": 0}, "The 'days' parameter of simulate_week must be an int >= 1. Got 0"),
        ({"chunk_rows": 0}, "The 'chunk_rows' parameter of simulate_week must be an int >= 1"),
        ({"start": dt.datetime(2026, 11, 2)}, "The 'start' parameter of simulate_week must be a"),
        (
            {"as_of": DEFAULT_START},
            "The 'as_of' parameter of simulate_week must be a timezone-aware datetime at or after",
        ),
    ],
)
def test_bad_parameters(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        simulate_week(tmp_path / "w", **{"rows": 1000, **kwargs})
    assert not (tmp_path / "w").exists()


def test_refuses_to_overwrite_a_week(tmp_path, capsys):
    out = tmp_path / "w"
    assert main(["simulate", str(out), "--rows", "10k", "--scenario", "benign", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["simulate", str(out), "--rows", "10k", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "already holds a week" in err and "--overwrite" in err
    assert (
        main(
            [
                "simulate",
                str(out),
                "--rows",
                "1e4",
                "--overwrite",
                "--json",
                str(tmp_path / "r.json"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "trigger rate" in printed and "holdout AP" in printed
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["scenario"] == "trigger-shift" and result["rows"] == 10_000
    assert read_manifest(out)["scenario"] == "trigger-shift"
    with pytest.raises(FileNotFoundError, match=r"No manifest\.json"):
        read_manifest(tmp_path)


def test_cli_rejects_bad_rows(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", str(tmp_path / "w"), "--rows", "many"])
    assert exc.value.code == 2
    assert "not a row count" in capsys.readouterr().err


def test_scenarios_constant_matches_cli():
    assert SCENARIOS == ("trigger-shift", "benign", "broken", "drift")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_cli_progress_only_on_a_terminal(tmp_path, monkeypatch, capsys):
    term = _Terminal()
    monkeypatch.setattr("sys.stderr", term)
    assert main(["simulate", str(tmp_path / "a"), "--rows", "5k", "--scenario", "benign"]) == 0
    shown = term.getvalue()
    assert "simulate: 100.0%  5,000/5,000 rows" in shown and shown.endswith("\n")
    term = _Terminal()
    monkeypatch.setattr("sys.stderr", term)
    args = ["simulate", str(tmp_path / "b"), "--rows", "5k", "--scenario", "benign", "--quiet"]
    assert main(args) == 0
    assert term.getvalue() == "" and capsys.readouterr().out.count("wrote benign week") == 1
