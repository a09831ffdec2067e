"""One self-contained HTML report of a shadow week: the verdict first, then the pictures.

Every chart is drawn with Altair from a small polars frame aggregated beforehand (histograms,
hourly counts, per-segment counts, the analyses' own summaries), so a chart never carries more
than a few thousand points however many rows the logs have. The Vega, Vega-Lite and vega-embed
JavaScript is embedded once in the page (from ``vl-convert``'s bundle), so the file opens with no
network.

References
----------
.. [1] Satyanarayan, Moritz, Wongsuphasawat & Heer, "Vega-Lite: A Grammar of Interactive
       Graphics", IEEE TVCG 23(1), 2017.
.. [2] Wilk & Gnanadesikan, "Probability plotting methods for the analysis of data",
       Biometrika 55(1), 1968 (Q-Q plots).
"""

from __future__ import annotations

import datetime as dt
import html
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import altair as alt
import numpy as np
import polars as pl

from shadowlab import schema as S
from shadowlab.engine import Aggregation, Source, as_source
from shadowlab.logs import id_probe

__all__ = ["Report", "build_report", "context_columns", "write_report"]

HIST_BINS = 200
"""Bins of the score histograms drawn (the Q-Q plot uses a finer grid, :data:`QQ_BINS`)."""
QQ_BINS = 4096
_STATUS_COLOURS = {
    "PASS": "#1a7f37",
    "WARN": "#9a6700",
    "FAIL": "#cf222e",
    "INCONCLUSIVE": "#8250df",
}
_MODEL_COLOURS = alt.Scale(
    domain=["v1 (primary)", "v2 (candidate)", "v2 reference"],
    range=["#4c78a8", "#f58518", "#54a24b"],
)


def context_columns(source: Source) -> list[str]:
    """String context columns of a pair log (segments such as ``country``, ``channel``)."""
    schema = source.collect_schema()
    return [
        name
        for name, dtype in schema.items()
        if name not in S.PAIR_SCHEMA and dtype in (pl.String, pl.Categorical, pl.Enum)
    ]


@dataclass(frozen=True, slots=True)
class Report:
    """A rendered report: the HTML page and the Altair charts it holds.

    Attributes
    ----------
    html : str
        The self-contained page.
    charts : dict of str to altair.Chart
        Every chart by name, for notebooks and for :meth:`save_chart`.
    notes : tuple of str
        What the report could not show and why (a missing input, an empty sample).
    """

    html: str
    charts: Mapping[str, alt.TopLevelMixin] = field(repr=False)
    notes: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return (
            f"Report(charts={list(self.charts)}, bytes={len(self.html.encode())}, "
            f"notes={len(self.notes)})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "charts": list(self.charts),
            "bytes": len(self.html.encode()),
            "notes": list(self.notes),
        }

    def save(self, path: str | Path) -> Path:
        """Write the HTML page to ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.html, encoding="utf-8")
        return path

    def save_chart(self, name: str, path: str | Path) -> Path:
        """Save one chart as PNG or SVG (by the file's suffix), rendered by vl-convert."""
        import vl_convert as vlc

        if name not in self.charts:
            raise KeyError(f"No chart {name!r} in this report; it has {sorted(self.charts)}.")
        path = Path(path)
        spec = self.charts[name].to_json()
        if path.suffix == ".png":
            path.write_bytes(vlc.vegalite_to_png(spec, scale=2))
        elif path.suffix == ".svg":
            path.write_text(vlc.vegalite_to_svg(spec))
        else:
            raise ValueError(f"Cannot save chart as {path.suffix!r}: use a .png or .svg path.")
        return path


# --------------------------------------------------------------------------- aggregation passes


def _range_and_hourly(
    source: Source, thresholds: Mapping[str, tuple[str, float]]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Pass 1: score ranges, and per-hour request and trigger counts for each rule."""
    rules = {
        name: pl.col(S.score_column(model)).fill_nan(None).ge(t).fill_null(False).cast(pl.Int64)
        for name, (model, t) in thresholds.items()
    }

    def build(lf: pl.LazyFrame) -> pl.LazyFrame:
        return (
            lf.with_columns(hour=pl.col(S.TS).dt.truncate("1h"))
            .group_by("hour")
            .agg(
                n=pl.len(),
                **{name: rule.sum() for name, rule in rules.items()},
                **{
                    f"{m}_min": pl.col(S.score_column(m)).fill_nan(None).min()
                    for m in (S.PRIMARY, S.CANDIDATE)
                },
                **{
                    f"{m}_max": pl.col(S.score_column(m)).fill_nan(None).max()
                    for m in (S.PRIMARY, S.CANDIDATE)
                },
            )
        )

    reduce = {"n": "sum", **dict.fromkeys(rules, "sum")}
    for m in (S.PRIMARY, S.CANDIDATE):
        reduce[f"{m}_min"] = "min"
        reduce[f"{m}_max"] = "max"
    hourly = source.aggregate(Aggregation(build, ("hour",), reduce))
    ranges = hourly.select(
        lo=pl.min_horizontal(pl.col(f"{S.PRIMARY}_min").min(), pl.col(f"{S.CANDIDATE}_min").min()),
        hi=pl.max_horizontal(pl.col(f"{S.PRIMARY}_max").max(), pl.col(f"{S.CANDIDATE}_max").max()),
    )
    return ranges, hourly.select("hour", "n", *rules)


def _histograms(source: Source, lo: float, hi: float, bins: int) -> pl.DataFrame:
    """Pass 2: counts of each model's scores on ``bins`` equal bins over [lo, hi]."""
    width = (hi - lo) / bins if hi > lo else 1.0

    def bin_of(col: str) -> pl.Expr:
        return ((pl.col(col).fill_nan(None) - lo) / width).floor().clip(0, bins - 1).cast(pl.Int32)

    def build(lf: pl.LazyFrame) -> pl.LazyFrame:
        parts = [
            lf.select(bin=bin_of(S.score_column(m)))
            .drop_nulls()
            .group_by("bin")
            .agg(n=pl.len())
            .with_columns(model=pl.lit(m))
            for m in (S.PRIMARY, S.CANDIDATE)
        ]
        return pl.concat(parts)

    hist = source.aggregate(Aggregation(build, ("model", "bin"), {"n": "sum"}))
    return hist.with_columns(lo=lo + pl.col("bin") * width, hi=lo + (pl.col("bin") + 1) * width)


def _reference_histogram(reference: Any, lo: float, hi: float, bins: int) -> pl.DataFrame:
    """v2's reference (offline eval) scores on the same bins, as model ``"reference"``.

    ``reference`` is a Parquet path or frame with ``model``/``score`` columns (as the synthetic
    week writes it: the ``candidate`` rows are v2's), or a plain array of v2's scores.
    """
    if isinstance(reference, str | Path):
        frame = pl.scan_parquet(reference)
    elif isinstance(reference, pl.DataFrame | pl.LazyFrame):
        frame = reference.lazy()
    else:
        frame = pl.LazyFrame({"score": np.asarray(reference, dtype=float)})
    if "model" in frame.collect_schema().names():
        frame = frame.filter(pl.col("model") == S.CANDIDATE)
    width = (hi - lo) / bins if hi > lo else 1.0
    return (
        frame.select(
            bin=((pl.col("score").fill_nan(None) - lo) / width)
            .floor()
            .clip(0, bins - 1)
            .cast(pl.Int32)
        )
        .drop_nulls()
        .group_by("bin")
        .agg(n=pl.len())
        .with_columns(
            model=pl.lit("reference"),
            lo=lo + pl.col("bin") * width,
            hi=lo + (pl.col("bin") + 1) * width,
        )
        .select("model", "bin", "n", "lo", "hi")
        .collect()
    )


def _segment_counts(
    source: Source, segments: Sequence[str], thresholds: Mapping[str, tuple[str, float]]
) -> pl.DataFrame:
    """Per-segment request and trigger counts, long over segment columns."""
    if not segments:
        return pl.DataFrame()
    rules = {
        name: pl.col(S.score_column(model)).fill_nan(None).ge(t).fill_null(False).cast(pl.Int64)
        for name, (model, t) in thresholds.items()
    }

    def build(lf: pl.LazyFrame) -> pl.LazyFrame:
        parts = [
            lf.group_by(value=pl.col(seg).cast(pl.String).fill_null("(null)"))
            .agg(n=pl.len(), **{k: r.sum() for k, r in rules.items()})
            .with_columns(segment=pl.lit(seg))
            .select("segment", "value", "n", *rules)
            for seg in segments
        ]
        return pl.concat(parts)

    return source.aggregate(
        Aggregation(build, ("segment", "value"), {"n": "sum", **dict.fromkeys(rules, "sum")})
    )


def _quantiles_from_hist(hist: pl.DataFrame, model: str, probs: np.ndarray) -> np.ndarray:
    """Quantiles by linear interpolation of the binned CDF: error at most one bin width."""
    h = hist.filter(pl.col("model") == model).sort("bin")
    if h.height == 0:
        return np.full(len(probs), np.nan)
    counts = h["n"].to_numpy().astype(float)
    cdf = np.concatenate([[0.0], np.cumsum(counts) / counts.sum()])
    edges = np.concatenate([h["lo"].to_numpy()[:1], h["hi"].to_numpy()])
    # Bins with no rows are absent; interpolate over the present bins' edges only.
    return np.interp(probs, cdf, edges)


# --------------------------------------------------------------------------- charts


def _display_histogram(fine: pl.DataFrame, share: float = 0.99) -> tuple[pl.DataFrame, float]:
    """Re-bin the fine histogram into about :data:`HIST_BINS` bins up to the ``share`` quantile.

    Fraud-like scores crowd near 0 with a long tail: drawing the whole [min, max] range would
    squash the body into a few bins, so the drawn range ends at the larger of the two models'
    ``share`` quantiles (the title says how much is shown).
    """
    top = 0
    for model in (S.PRIMARY, S.CANDIDATE):
        h = fine.filter(pl.col("model") == model).sort("bin")
        if h.height:
            cum = h["n"].cum_sum() / h["n"].sum()
            top = max(top, int(h["bin"][int((cum < share).sum())]))
    factor = max(1, -(-(top + 1) // HIST_BINS))
    kept = fine.filter(pl.col("bin") <= top)
    shown = float(kept["n"].sum() / fine["n"].sum()) if fine.height else 1.0
    coarse = (
        kept.with_columns(bin=pl.col("bin") // factor)
        .group_by("model", "bin")
        .agg(pl.col("n").sum(), pl.col("lo").min(), pl.col("hi").max())
        .sort("model", "bin")
    )
    return coarse, shown


def _density_chart(hist: pl.DataFrame, log_scale: bool, shown: float = 1.0) -> alt.Chart:
    frame = hist.with_columns(
        density=pl.col("n") / pl.col("n").sum().over("model") / (pl.col("hi") - pl.col("lo")),
        model=pl.col("model").replace_strict(
            {S.PRIMARY: "v1 (primary)", S.CANDIDATE: "v2 (candidate)", "reference": "v2 reference"}
        ),
    )
    y = alt.Y(
        "density:Q", title="density", scale=alt.Scale(type="symlog" if log_scale else "linear")
    )
    return (
        alt.Chart(frame, title=f"Score distributions ({shown:.1%} of scores shown)")
        .mark_line(interpolate="step-after")
        .encode(
            x=alt.X("lo:Q", title="score"),
            y=y,
            color=alt.Color("model:N", scale=_MODEL_COLOURS, title=None),
            tooltip=["model", alt.Tooltip("lo:Q", format=".3f"), alt.Tooltip("n:Q", title="rows")],
        )
        .properties(width=520, height=240)
    )


def _qq_chart(hist: pl.DataFrame) -> alt.Chart:
    probs = np.linspace(0.005, 0.995, 199)
    frame = pl.DataFrame(
        {
            "p": probs,
            "v1": _quantiles_from_hist(hist, S.PRIMARY, probs),
            "v2": _quantiles_from_hist(hist, S.CANDIDATE, probs),
        }
    )
    lo = float(np.nanmin(frame.select("v1", "v2").to_numpy())) if frame.height else 0.0
    hi = float(np.nanmax(frame.select("v1", "v2").to_numpy())) if frame.height else 1.0
    # Scores crowd near 0 with a long tail: log axes when every quantile is positive.
    kind = "log" if lo > 0 else "linear"
    points = (
        alt.Chart(frame, title="Q-Q: v2 quantiles against v1 quantiles (p0.5 to p99.5)")
        .mark_circle(size=18)
        .encode(
            x=alt.X("v1:Q", title="v1 (primary) quantile", scale=alt.Scale(type=kind)),
            y=alt.Y("v2:Q", title="v2 (candidate) quantile", scale=alt.Scale(type=kind)),
            tooltip=[alt.Tooltip("p:Q", format=".3f"), "v1:Q", "v2:Q"],
        )
    )
    diagonal = (
        alt.Chart(pl.DataFrame({"x": [lo, hi], "y": [lo, hi]}))
        .mark_line(strokeDash=[4, 4], color="grey")
        .encode(x="x:Q", y="y:Q")
    )
    return (points + diagonal).properties(width=300, height=300)


def _hourly_chart(hourly: pl.DataFrame, names: Sequence[str]) -> alt.Chart:
    frame = (
        hourly.sort("hour")
        .unpivot(index=["hour", "n"], on=list(names), variable_name="rule", value_name="flags")
        .with_columns(trigger_rate=pl.when(pl.col("n") > 0).then(pl.col("flags") / pl.col("n")))
    )
    return (
        alt.Chart(frame, title="Trigger rate per hour across the week")
        .mark_line()
        .encode(
            x=alt.X("hour:T", title=None),
            y=alt.Y("trigger_rate:Q", title="share of requests flagged", axis=alt.Axis(format="%")),
            color=alt.Color("rule:N", title=None),
            tooltip=["rule", "hour:T", alt.Tooltip("trigger_rate:Q", format=".2%"), "n"],
        )
        .properties(width=720, height=240)
    )


def _segment_chart(segments: pl.DataFrame, base: str, other: str) -> alt.Chart:
    frame = (
        segments.with_columns(
            ratio=pl.when(pl.col(base) > 0).then(pl.col(other) / pl.col(base)),
            label=pl.col("segment") + "=" + pl.col("value"),
        )
        .with_columns(distance=(pl.col("ratio").log()).abs().fill_null(float("inf")))
        .sort("distance", descending=True)
        .head(40)
    )
    bars = (
        alt.Chart(frame, title=f"Per-segment trigger-rate ratio ({other} ÷ {base}), worst first")
        .mark_bar()
        .encode(
            y=alt.Y("label:N", sort=None, title=None),
            x=alt.X("ratio:Q", title="trigger-rate ratio (1 = parity)"),
            color=alt.condition("datum.ratio > 1", alt.value("#cf222e"), alt.value("#4c78a8")),
            tooltip=["label", alt.Tooltip("ratio:Q", format=".2f"), "n", base, other],
        )
    )
    parity = alt.Chart(pl.DataFrame({"x": [1.0]})).mark_rule(color="black").encode(x="x:Q")
    return (bars + parity).properties(width=520)


def _crosstab_chart(crosstab: pl.DataFrame) -> alt.Chart:
    frame = crosstab.with_columns(
        v1=pl.when(pl.col("primary_flag")).then(pl.lit("v1 flags")).otherwise(pl.lit("v1 passes")),
        v2=pl.when(pl.col("candidate_flag"))
        .then(pl.lit("v2 flags"))
        .otherwise(pl.lit("v2 passes")),
        text=pl.format(
            "{} requests, {}% labelled",
            pl.col("requests"),
            (pl.col("labelled_share") * 100).round(1),
        ),
    )
    base = alt.Chart(frame, title="Decisions of v1 and v2, with label coverage per cell")
    heat = base.mark_rect().encode(
        x=alt.X("v2:N", title=None, sort=["v2 flags", "v2 passes"]),
        y=alt.Y("v1:N", title=None, sort=["v1 flags", "v1 passes"]),
        color=alt.Color(
            "labelled_share:Q", title="labelled", scale=alt.Scale(scheme="blues", domain=[0, 1])
        ),
        tooltip=[
            "v1",
            "v2",
            "requests",
            alt.Tooltip("labelled_share:Q", format=".1%"),
            alt.Tooltip("review_share:Q", format=".1%"),
            alt.Tooltip("audit_share:Q", format=".1%"),
            alt.Tooltip("chargeback_share:Q", format=".1%"),
            alt.Tooltip("positive_rate:Q", format=".1%", title="observed positive rate"),
        ],
    )
    text = base.mark_text(fontSize=12).encode(
        x=alt.X("v2:N", sort=["v2 flags", "v2 passes"]),
        y=alt.Y("v1:N", sort=["v1 flags", "v1 passes"]),
        text="text:N",
        color=alt.condition("datum.labelled_share > 0.5", alt.value("white"), alt.value("black")),
    )
    return (heat + text).properties(width=420, height=200)


def _queue_chart(timeline: pl.DataFrame, sla_minutes: float) -> alt.Chart:
    # Hourly: the largest backlog and the largest p95 wait of each hour, per policy.
    frame = (
        timeline.group_by("policy", hour=pl.col("interval_start").dt.truncate("1h"))
        .agg(pl.col("backlog").max(), pl.col("p95_wait_minutes").max())
        .sort("policy", "hour")
    )
    backlog = (
        alt.Chart(frame, title="Review backlog over the week (hourly peak)")
        .mark_line()
        .encode(
            x=alt.X("hour:T", title=None),
            y=alt.Y("backlog:Q", title="items waiting"),
            color=alt.Color("policy:N", title=None),
            tooltip=["policy", "hour:T", alt.Tooltip("backlog:Q", format=",.0f")],
        )
        .properties(width=720, height=200)
    )
    wait = (
        alt.Chart(frame, title=f"p95 wait for a review (hourly peak; SLA {sla_minutes:g} min)")
        .mark_line()
        .encode(
            x=alt.X("hour:T", title=None),
            y=alt.Y("p95_wait_minutes:Q", title="minutes"),
            color=alt.Color("policy:N", title=None),
            tooltip=["policy", "hour:T", alt.Tooltip("p95_wait_minutes:Q", format=",.0f")],
        )
    )
    sla = alt.Chart(pl.DataFrame({"y": [sla_minutes]})).mark_rule(strokeDash=[4, 4]).encode(y="y:Q")
    return alt.vconcat(backlog, (wait + sla).properties(width=720, height=200))


def _reliability_chart(reliability: pl.DataFrame) -> alt.Chart:
    frame = reliability.with_columns(
        curve=pl.col("model").replace_strict(
            {S.PRIMARY: "v1", S.CANDIDATE: "v2"}, default=pl.col("model")
        )
        + " on "
        + pl.col("data")
    )
    lines = (
        alt.Chart(frame, title="Reliability: observed positive rate against mean score")
        .mark_line(point=True)
        .encode(
            x=alt.X("mean_score:Q", title="mean score in bin"),
            y=alt.Y("observed_rate:Q", title="observed positive rate"),
            color=alt.Color("curve:N", title=None),
            strokeDash=alt.StrokeDash("data:N", title="labels"),
            tooltip=[
                "curve",
                "bin",
                alt.Tooltip("mean_score:Q", format=".3f"),
                alt.Tooltip("observed_rate:Q", format=".3f"),
                "weight",
            ],
        )
    )
    diagonal = (
        alt.Chart(pl.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0]}))
        .mark_line(strokeDash=[4, 4], color="grey")
        .encode(x="x:Q", y="y:Q")
    )
    return (lines + diagonal).properties(width=340, height=300)


def _pr_chart(curves: pl.DataFrame) -> alt.Chart:
    return (
        alt.Chart(curves, title="Precision–recall on the labelled sample (audit slice dashed)")
        .mark_line()
        .encode(
            x=alt.X("recall:Q"),
            y=alt.Y("precision:Q"),
            color=alt.Color("model:N", title=None),
            strokeDash=alt.StrokeDash("slice:N", title="labels"),
            order="recall:Q",
            tooltip=[
                "model",
                "slice",
                alt.Tooltip("precision:Q", format=".3f"),
                alt.Tooltip("recall:Q", format=".3f"),
                alt.Tooltip("threshold:Q", format=".4f"),
            ],
        )
        .properties(width=340, height=300)
    )


def _pr_curves(source: Source, labels: pl.LazyFrame, max_points: int = 400) -> pl.DataFrame:
    """PR curves of both models on all labelled pairs and on the audit slice alone.

    The labelled subset is a few percent of the week, so it is collected (one ``pull`` of the
    labelled request ids); each curve is thinned to ``max_points`` points.
    """
    from sklearn.metrics import precision_recall_curve

    latest = labels.sort(S.LABEL_TS).group_by(S.REQUEST_ID).agg(pl.col(S.LABEL).last()).collect()
    cols = [S.REQUEST_ID, S.PRIMARY_SCORE, S.CANDIDATE_SCORE, S.AUDIT]
    # by 64-bit hash (a string is_in against every label id was most of this step: 10 M pairs,
    # 13 s); the inner join on the exact id then drops any hash collision
    rows = source.pull(id_probe(latest[S.REQUEST_ID]), cols)
    joined = rows.join(latest, on=S.REQUEST_ID, how="inner")
    parts = []
    for slice_name, frame in (("all labels", joined), ("audit slice", joined.filter(S.AUDIT))):
        for model, col in (("v1", S.PRIMARY_SCORE), ("v2", S.CANDIDATE_SCORE)):
            f = frame.drop_nulls(col)
            y = f[S.LABEL].to_numpy()
            if f.height < 2 or y.min() == y.max():
                continue
            precision, recall, thr = precision_recall_curve(y, f[col].to_numpy())
            keep = np.unique(np.linspace(0, len(thr) - 1, min(max_points, len(thr))).astype(int))
            parts.append(
                pl.DataFrame(
                    {
                        "precision": precision[keep],
                        "recall": recall[keep],
                        "threshold": thr[keep],
                    }
                ).with_columns(model=pl.lit(model), slice=pl.lit(slice_name))
            )
    return pl.concat(parts) if parts else pl.DataFrame()


# --------------------------------------------------------------------------- page


def _verdict_section(verdict: Mapping[str, Any] | None, signature: str) -> str:
    if verdict is None:
        return (
            "<section id='verdict'><h2>Verdict</h2><p class='muted'>No verdict given: run "
            "<code>shadowlab gate</code> and pass <code>--verdict</code>.</p></section>"
        )
    status = str(verdict.get("verdict", "INCONCLUSIVE"))
    rows = []
    for check in verdict.get("checks", []):
        st = str(check.get("status", ""))
        rows.append(
            "<tr>"
            f"<td>{html.escape(str(check.get('name', '')))}</td>"
            f"<td><span class='status' style='background:{_STATUS_COLOURS.get(st, '#57606a')}'>"
            f"{html.escape(st)}</span></td>"
            f"<td>{html.escape(_fmt(check.get('value')))}</td>"
            f"<td>{html.escape(_fmt(check.get('limit')))}</td>"
            f"<td>{html.escape(str(check.get('sentence', check.get('message', ''))))}</td>"
            "</tr>"
        )
    colour = _STATUS_COLOURS.get(status, "#57606a")
    return (
        "<section id='verdict'><h2>Verdict: "
        f"<span class='status big' style='background:{colour}'>{html.escape(status)}</span></h2>"
        f"<p>Signature: {html.escape(signature)}</p>"
        "<table class='checks'><thead><tr><th>check</th><th>status</th><th>value</th>"
        "<th>limit</th><th>why</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></section>"
    )


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping | list):
        return json.dumps(value)[:120]
    return str(value)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #1f2328; }
h1 { margin-bottom: 0.2rem; } .muted { color: #57606a; }
table.checks { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
table.checks td, table.checks th { border-bottom: 1px solid #d0d7de; padding: 4px 8px; text-align: left; }
.status { color: white; border-radius: 4px; padding: 1px 6px; font-weight: 600; }
.status.big { font-size: 1.2rem; } section { margin: 1.5rem 0; }
.chart { margin: 0.5rem 0 1.5rem; }
"""


def _page(
    title: str,
    subtitle: str,
    verdict_html: str,
    charts: Mapping[str, alt.TopLevelMixin],
    notes: Sequence[str],
) -> str:
    import vl_convert as vlc
    from altair.utils._importers import vl_version_for_vl_convert

    bundle = vlc.javascript_bundle(vl_version=vl_version_for_vl_convert())
    divs, calls = [], []
    for i, (name, chart) in enumerate(charts.items()):
        div = f"chart-{i}"
        divs.append(f"<div class='chart' id='{div}' data-chart='{html.escape(name)}'></div>")
        spec = json.dumps(chart.to_dict(), separators=(",", ":"))
        calls.append(
            f"vegaEmbed('#{div}', {spec}, {{actions: false, renderer: 'svg'}})"
            ".catch(console.error);"
        )
    notes_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style>"
        f"<script type='text/javascript'>\n{bundle}\n</script></head><body>"
        f"<h1>{html.escape(title)}</h1><p class='muted'>{html.escape(subtitle)}</p>"
        f"{verdict_html}<section id='charts'>{''.join(divs)}</section>"
        + (
            f"<section id='notes'><h2>Not shown</h2><ul>{notes_html}</ul></section>"
            if notes
            else ""
        )
        + "<script type='text/javascript'>\n"
        + "\n".join(calls)
        + "\n</script></body></html>"
    )


def build_report(
    pairs: Any,
    *,
    primary_threshold: float,
    candidate_threshold: float | None = None,
    labels: Any = None,
    reference: Any = None,
    verdict: Mapping[str, Any] | str | Path | None = None,
    signature: str | None = None,
    segments: Sequence[str] | None = None,
    log_scale: bool = False,
    capacity: Any = None,
    sla: str | dt.timedelta = "4h",
    title: str = "shadowlab: shadow-week report",
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Aggregate a week of pair logs and draw the report.

    Parameters
    ----------
    pairs : LazyFrame, DataFrame, path, or Spark DataFrame
        The pair logs (see :func:`shadowlab.engine.as_source`).
    primary_threshold : float
        v1's production threshold ``t1``.
    candidate_threshold : float, optional
        v2's calibrated threshold ``t2``; when omitted it is computed with
        :func:`shadowlab.thresholds.calibrate_threshold` (when that module is available).
    labels, reference : optional
        Label files and v2's offline reference scores, for the label-based charts.
    verdict : mapping or path, optional
        A verdict as written by ``shadowlab gate`` (the envelope or the bare statement).
    signature : str, optional
        What is known of the verdict's signature ("valid, key …", "unsigned"); shown beside it.
    segments : sequence of str, optional
        Context columns for the per-segment chart; default every string context column.
    log_scale : bool
        Draw the score densities on a symmetric-log axis.
    capacity : ReviewCapacity, optional
        Review staffing for the queue replay (:func:`shadowlab.load.simulate_load`); by default
        staffing sized so that v1 runs at 85 % utilisation.
    sla : str or timedelta
        The review SLA drawn on the waiting-time chart.
    progress : callable, optional
        Called with the name of each aggregation step as it starts (e.g. a
        :class:`shadowlab.progress.Progress`).

    Returns
    -------
    Report
    """
    source = as_source(pairs)
    progress = progress or (lambda step: None)
    verdict_doc, sig_text = _load_verdict(verdict, signature)
    notes: list[str] = []
    if candidate_threshold is None:
        try:
            from shadowlab.thresholds import calibrate_threshold

            progress("calibrating v2's threshold")
            candidate_threshold = float(calibrate_threshold(source, primary_threshold).threshold)
        except ImportError:
            notes.append("v2's calibrated threshold: shadowlab.thresholds is not available.")
    rules: dict[str, tuple[str, float]] = {
        f"v1 at t1={primary_threshold:.4g}": (S.PRIMARY, primary_threshold),
        f"v2 at t1={primary_threshold:.4g}": (S.CANDIDATE, primary_threshold),
    }
    if candidate_threshold is not None:
        rules[f"v2 at t2={candidate_threshold:.4g}"] = (S.CANDIDATE, candidate_threshold)
    progress("hourly trigger rates")
    ranges, hourly = _range_and_hourly(source, rules)
    lo, hi = ranges.row(0)
    if lo is None or hi is None:
        raise ValueError("The pair logs hold no valid score: nothing to draw.")
    progress("score histograms")
    hist_fine = _histograms(source, lo, hi, QQ_BINS)
    if reference is not None:
        ref_hist = _reference_histogram(reference, lo, hi, QQ_BINS)
        hist_fine = pl.concat(
            [hist_fine.select(ref_hist.columns), ref_hist], how="vertical_relaxed"
        )
    hist, shown = _display_histogram(hist_fine)
    charts: dict[str, alt.TopLevelMixin] = {
        "score_distributions": _density_chart(hist, log_scale, shown),
        "qq": _qq_chart(hist_fine),
        "trigger_rate_hourly": _hourly_chart(hourly, list(rules)),
    }
    segs = list(segments) if segments is not None else context_columns(source)
    if segs:
        names = list(rules)
        progress("segments")
        seg = _segment_counts(source, segs, rules)
        other = names[2] if len(names) > 2 else names[1]
        charts["segment_ratios"] = _segment_chart(seg, names[0], other)
    else:
        notes.append("Per-segment ratios: the logs have no string context columns.")
    if candidate_threshold is not None:
        from shadowlab.load import simulate_load

        policies = {
            "v1 at t1": (S.PRIMARY, primary_threshold),
            "v2 at t1 (naive)": (S.CANDIDATE, primary_threshold),
            "v2 at t2 (calibrated)": (S.CANDIDATE, candidate_threshold),
        }
        progress("review queue")
        load = simulate_load(source, policies, capacity, sla=sla, baseline="v1 at t1")
        charts["review_queue"] = _queue_chart(load.timeline, load.sla_minutes)
    if labels is None:
        notes.append("Decision cross-tab, reliability and PR curves: no labels given (--labels).")
    elif candidate_threshold is not None:
        from shadowlab.accuracy import operating_point_metrics
        from shadowlab.feedback import feedback_diagnostics
        from shadowlab.logs import scan_labels

        label_frame = labels if isinstance(labels, pl.LazyFrame) else scan_labels(labels)
        progress("labels: cross-tab")
        feedback = feedback_diagnostics(source, label_frame, primary_threshold, candidate_threshold)
        charts["decision_crosstab"] = _crosstab_chart(feedback.crosstab)
        progress("labels: accuracy")
        metrics = operating_point_metrics(
            source, label_frame, primary_threshold, candidate_threshold, reference=reference
        )
        if metrics.reliability.height:
            charts["reliability"] = _reliability_chart(metrics.reliability)
        progress("labels: PR curves")
        curves = _pr_curves(source, label_frame)
        if curves.height:
            charts["precision_recall"] = _pr_chart(curves)
        else:
            notes.append("PR curves: the labelled sample has a single class.")
    subtitle = (
        f"{int(hourly['n'].sum()):,} requests, {hourly['hour'].min()} to {hourly['hour'].max()}; "
        f"t1 = {primary_threshold:.4g}"
        + (f", t2 = {candidate_threshold:.4g}" if candidate_threshold is not None else "")
        + f". Written {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC."
    )
    page = _page(title, subtitle, _verdict_section(verdict_doc, sig_text), charts, notes)
    return Report(html=page, charts=charts, notes=tuple(notes))


def _load_verdict(
    verdict: Mapping[str, Any] | str | Path | None, signature: str | None
) -> tuple[Mapping[str, Any] | None, str]:
    """Accept a verdict dict, a statement file or a DSSE envelope file; return its predicate."""
    if verdict is None:
        return None, signature or "no verdict"
    doc: Any = verdict
    if isinstance(verdict, str | Path):
        doc = json.loads(Path(verdict).read_text())
    sig = signature
    if "payload" in doc and "payloadType" in doc:
        import base64

        signed = bool(doc.get("signatures"))
        doc = json.loads(base64.b64decode(doc["payload"]))
        sig = sig or ("signed (not verified here)" if signed else "unsigned")
    predicate = doc.get("predicate", doc)
    return predicate, sig or "unknown"


def write_report(out: str | Path, pairs: Any, **kwargs: Any) -> Path:
    """:func:`build_report` and save it to ``out``; returns the path."""
    return build_report(pairs, **kwargs).save(out)
