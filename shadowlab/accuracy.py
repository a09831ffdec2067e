"""Accuracy at the operating point: labelled metrics, calibration, and a label-free estimate.

:func:`operating_point_metrics` answers "at the two thresholds, how good is each model on this
week's traffic?" three ways, and says how far each can be trusted:

* **labelled metrics** -- precision, recall and flag rate at each model's threshold, average
  precision and ROC AUC (``sklearn.metrics``), each with a seeded percentile bootstrap interval;
  on *all* labels (biased toward the served model: review labels only exist where it flagged) and
  on the **audit slice** alone, each row weighted by ``1 / audit_rate`` (Horvitz–Thompson), which
  is a random sample of traffic and so unbiased for both models;
* **calibration** -- reliability curve and expected calibration error of each model's scores on
  the audit slice and on the reference (offline holdout) labels; optionally an isotonic
  recalibration fitted on the reference labels;
* a **label-free estimate** (the confidence-based performance estimation idea behind NannyML's
  CBPE): if a score is a calibrated probability ``p``, a flagged request is a true positive with
  probability ``p``, so expected TP = sum of ``p`` over flagged requests, expected positives = sum
  of ``p`` over all requests. Valid only as far as the scores are calibrated, hence reported next
  to the calibration and marked 'miscalibrated' (or 'unverified' when too few out-of-sample
  labels exist to tell) -- see :func:`operating_point_metrics`, parameter ``ece_limit``.

Passes and data moved (issue 11): labels are small and collected; the labelled pairs (a few
percent of the week) are fetched with one :meth:`~shadowlab.engine.Source.pull` keyed on the
labelled request ids and analysed in memory; one :class:`~shadowlab.engine.Aggregation` pass over
all pairs gives the flag counts and the label-free sums (one row).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl
from scipy import sparse

from shadowlab import schema as S
from shadowlab.engine import Aggregation, as_source
from shadowlab.thresholds import _result_to_dict, wilson_interval

if TYPE_CHECKING:
    from sklearn.isotonic import IsotonicRegression

__all__ = [
    "SELECTIVE_LABELS_WARNING",
    "OperatingPointMetrics",
    "expected_calibration_error",
    "operating_point_metrics",
    "reliability_curve",
]

MODELS = (S.PRIMARY, S.CANDIDATE)

SELECTIVE_LABELS_WARNING = (
    "Selective labels: review labels exist only where the served model flagged, so every "
    "'all_labels' figure is measured mostly on the served model's own flags and is biased in its "
    "favour (requests only the candidate flags are largely unlabelled). Compare models on the "
    "'audit' slice, a random sample weighted by 1/audit_rate; its intervals are wider, not biased."
)


@dataclass(frozen=True, slots=True)
class OperatingPointMetrics:
    """Result of :func:`operating_point_metrics`.

    Attributes
    ----------
    primary_threshold, candidate_threshold : float
        The operating points; trigger rule ``score >= t`` (``inclusive=False``: ``>``).
    inclusive, confidence, n_boot, seed : as passed.
    n_pairs, n_excluded : int
        Pairs with both scores finite, and rows excluded because a score failed.
    n_labels, n_labelled, n_audit, n_audit_labelled, n_unmatched_labels : int
        Label rows read, labelled valid pairs (latest label per request), audit rows, audit rows
        with a label, labels whose request is not in the pairs.
    flag_rates : polars.DataFrame
        Over all valid pairs: ``model``, ``threshold``, ``flags``, ``flag_rate`` and its Wilson
        interval (``ci_low``, ``ci_high``), ``labelled_share`` (share of the model's flags with a
        label).
    metrics : polars.DataFrame
        Tidy table: ``slice`` in {'all_labels', 'audit'}, ``model`` in {'primary', 'candidate',
        'difference'} (candidate minus primary, same bootstrap resamples), ``metric`` in
        {'precision', 'recall', 'flag_rate', 'average_precision', 'roc_auc'}, ``estimate``,
        ``ci_low``, ``ci_high``, ``n`` (labelled rows), ``positives``.
    reference : polars.DataFrame or None
        ``model``, ``reference_ap`` (offline holdout), ``production_ap`` (audit slice when it
        has positives, else all labels), ``production_slice``, ``difference``.
    reliability : polars.DataFrame
        Reliability curves: ``data`` in {'audit', 'reference'}, ``model``, ``probabilities`` in
        {'raw', 'isotonic'}, ``bin``, ``mean_score``, ``observed_rate``, ``weight``.
    calibration : polars.DataFrame
        ``data``, ``model``, ``probabilities``, ``ece``, ``relative_ece`` (ECE / observed positive
        rate), ``observed_positives`` and ``expected_positives`` (weighted), ``z`` (their
        difference in standard deviations, calibration-in-the-large), ``n``, ``positives``.
    estimate : polars.DataFrame
        The label-free estimate per model: ``probabilities`` used, ``threshold``,
        ``expected_flags`` (the flag count, known exactly), ``expected_tp``,
        ``expected_positives``, ``expected_precision``, ``expected_recall``, ``trusted``,
        ``status`` ('calibrated', 'unverified', 'miscalibrated'), ``reason``.
    warning : str
        The selective-labels warning (always present; see :data:`SELECTIVE_LABELS_WARNING`).
    passes : tuple of dict
        Data movement: ``kind`` and ``rows_moved``.
    notes : tuple of str
    """

    primary_threshold: float
    candidate_threshold: float
    inclusive: bool
    confidence: float
    n_boot: int
    seed: int
    n_pairs: int
    n_excluded: int
    n_labels: int
    n_labelled: int
    n_audit: int
    n_audit_labelled: int
    n_unmatched_labels: int
    flag_rates: pl.DataFrame
    metrics: pl.DataFrame
    reference: pl.DataFrame | None
    reliability: pl.DataFrame
    calibration: pl.DataFrame
    estimate: pl.DataFrame
    warning: str
    passes: tuple[dict[str, Any], ...]
    notes: tuple[str, ...]

    def metric(self, slice: str, model: str, name: str) -> tuple[float, float, float]:
        """``(estimate, ci_low, ci_high)`` of one metric, e.g. ``metric('audit', 'candidate',
        'precision')``."""
        row = self.metrics.filter(
            (pl.col("slice") == slice) & (pl.col("model") == model) & (pl.col("metric") == name)
        )
        if row.height != 1:
            raise KeyError(f"no metric {name!r} for slice={slice!r}, model={model!r}")
        est, lo, hi = row.select("estimate", "ci_low", "ci_high").row(0)
        return float(est), float(lo), float(hi)

    def __repr__(self) -> str:
        rule = ">=" if self.inclusive else ">"
        lines = [
            f"OperatingPointMetrics(rule='score {rule} t', v1 t={self.primary_threshold:.6g}, "
            f"v2 t={self.candidate_threshold:.6g}, pairs={self.n_pairs}, "
            f"labelled={self.n_labelled}, audit labelled={self.n_audit_labelled})"
        ]
        for sl in ("all_labels", "audit"):
            for model in MODELS:
                parts = []
                for name in ("precision", "recall", "average_precision"):
                    try:
                        est, lo, hi = self.metric(sl, model, name)
                    except KeyError:
                        continue
                    parts.append(f"{name}={est:.3f} [{lo:.3f}, {hi:.3f}]")
                lines.append(f"  {sl:<10} {model:<9} " + ", ".join(parts))
        for row in self.estimate.iter_rows(named=True):
            lines.append(
                f"  label-free {row['model']:<9} ({row['probabilities']}): "
                f"precision~{row['expected_precision']:.3f}, recall~{row['expected_recall']:.3f}, "
                f"{row['status']}"
            )
        lines.append(f"  warning: {self.warning}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: tables as lists of rows, non-finite floats as ``None``."""
        return _result_to_dict(self)


# -- reliability and ECE -------------------------------------------------------------------------


def _bin_edges(scores: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    if strategy == "quantile":
        return np.percentile(scores, np.linspace(0, 100, n_bins + 1))
    return np.linspace(0.0, 1.0, n_bins + 1)


def reliability_curve(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    n_bins: int = 10,
    strategy: Literal["quantile", "uniform"] = "quantile",
) -> pl.DataFrame:
    """Reliability curve: per score bin the (weighted) mean score and observed positive rate.

    Binning follows :func:`sklearn.calibration.calibration_curve` exactly (bin ids
    ``searchsorted(edges[1:-1], score)``; empty bins dropped), so unweighted results equal its
    ``(prob_pred, prob_true)``.

    Returns
    -------
    polars.DataFrame
        ``bin``, ``mean_score``, ``observed_rate``, ``weight`` (sum of weights in the bin).
    """
    _bins_iv(n_bins, strategy, "reliability_curve")
    y = np.asarray(labels, dtype=float)
    s = np.asarray(scores, dtype=float)
    w = np.ones_like(s) if weights is None else np.asarray(weights, dtype=float)
    if s.size == 0:
        return pl.DataFrame(
            schema={
                "bin": pl.Int64,
                "mean_score": pl.Float64,
                "observed_rate": pl.Float64,
                "weight": pl.Float64,
            }
        )
    edges = _bin_edges(s, n_bins, strategy)
    ids = np.searchsorted(edges[1:-1], s)
    tot = np.bincount(ids, weights=w, minlength=n_bins)
    sum_s = np.bincount(ids, weights=w * s, minlength=n_bins)
    sum_y = np.bincount(ids, weights=w * y, minlength=n_bins)
    keep = tot > 0
    return pl.DataFrame(
        {
            "bin": np.flatnonzero(keep).astype(np.int64),
            "mean_score": sum_s[keep] / tot[keep],
            "observed_rate": sum_y[keep] / tot[keep],
            "weight": tot[keep],
        }
    )


def expected_calibration_error(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    n_bins: int = 10,
    strategy: Literal["quantile", "uniform"] = "quantile",
) -> float:
    """Expected calibration error: ``sum_b (W_b / W) |observed_rate_b - mean_score_b|``.

    Bins as in :func:`reliability_curve`. NaN for empty input.

    References
    ----------
    .. [1] M. P. Naeini, G. F. Cooper and M. Hauskrecht, "Obtaining well calibrated
           probabilities using Bayesian binning", AAAI 2015.
    .. [2] C. Guo, G. Pleiss, Y. Sun and K. Q. Weinberger, "On calibration of modern neural
           networks", ICML 2017.
    """
    curve = reliability_curve(labels, scores, weights=weights, n_bins=n_bins, strategy=strategy)
    if curve.height == 0:
        return math.nan
    w = curve["weight"].to_numpy()
    gap = np.abs(curve["observed_rate"].to_numpy() - curve["mean_score"].to_numpy())
    return float(np.sum(w * gap) / np.sum(w))


# -- AP / ROC AUC from one sort -----------------------------------------------------------------


def _descending_order(scores: np.ndarray) -> np.ndarray:
    """Indices sorting ``scores`` descending, ties in input order: the permutation
    ``sklearn.metrics`` uses (``argsort(stable=True, descending=True)`` of its array-API layer,
    written the same way here).

    A stable order restricted to a subset of the rows is the subset's own stable order, so one
    sort of the labelled rows serves every slice of them (see :func:`_restrict_order`).

    polars' stable sort (on both cores) gives that permutation in about half the time of
    numpy's ``s.size - 1 - flip(argsort(flip(s), kind="stable"))``. Both tie -0.0 with 0.0 and
    sort NaN first; ``tests/test_accuracy.py`` checks the two orders are equal.
    """
    s = pl.Series("s", np.asarray(scores, dtype=np.float64))
    frame = pl.DataFrame(s).with_row_index("i")
    order = frame.sort("s", descending=True, maintain_order=True)["i"]
    return order.to_numpy().astype(np.int64)


def _restrict_order(order: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``order`` (a permutation of all rows) restricted to the rows where ``keep`` is True,
    renumbered to the kept rows in their original order."""
    new_index = np.cumsum(keep) - 1
    return new_index[order[keep[order]]]


def _ap_auc(
    y: np.ndarray, scores: np.ndarray, weights: np.ndarray | None, order: np.ndarray
) -> tuple[float, float]:
    """Average precision and ROC AUC, the arithmetic of sklearn 1.9's ``average_precision_score``
    and ``roc_auc_score`` (binary ``y`` in {0, 1}, both classes present, positive finite weights)
    on rows already in :func:`_descending_order`.

    The same operations on the same arrays in the same order, so the results equal sklearn's
    bit for bit (``tests/test_accuracy.py`` asserts equality, ties and weights included); the
    gain is one sort per model shared by AP, AUC and every slice instead of one per call.
    """
    s = scores[order]
    yt = np.asarray(y, dtype=np.float64)[order]
    thr = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    if weights is None:
        tps = np.cumsum(yt, dtype=np.float64)[thr]
        fps = 1 + thr.astype(np.float64) - tps
    else:
        w = np.asarray(weights, dtype=np.float64)[order]
        tps = np.cumsum(yt * w, dtype=np.float64)[thr]
        fps = np.cumsum((1 - yt) * w, dtype=np.float64)[thr]
    # precision_recall_curve (no dropped thresholds) and the step integral
    ps = tps + fps
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(ps != 0, np.divide(tps, ps), 0.0)
    recall = tps / tps[-1]
    precision = np.concatenate((np.flip(precision), [1.0]))
    recall = np.concatenate((np.flip(recall), [0.0]))
    ap = float(max(0.0, -np.sum(np.diff(recall) * precision[:-1])))
    # roc_curve (drop_intermediate=True) and the trapezoidal area
    if fps.shape[0] > 2:
        keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        idx = np.flatnonzero(keep)
        fps, tps = fps[idx], tps[idx]
    tps = np.concatenate(([0.0], tps))
    fps = np.concatenate(([0.0], fps))
    auc = float(np.trapezoid(tps / tps[-1], fps / fps[-1]))
    return ap, auc


def _sklearn_ap_auc(
    y: np.ndarray, scores: np.ndarray, weights: np.ndarray | None
) -> tuple[float, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    return (
        float(average_precision_score(y, scores, sample_weight=weights)),
        float(roc_auc_score(y, scores, sample_weight=weights)),
    )


def _ranking_metrics(
    y: np.ndarray, scores: np.ndarray, weights: np.ndarray | None, order: np.ndarray | None
) -> tuple[float, float]:
    """AP and ROC AUC (both classes present): :func:`_ap_auc` on the usual inputs, sklearn itself
    (imported only then) on the unusual ones it would treat differently (labels other than
    0/1, zero or non-finite weights)."""
    usual = bool(np.all((y == 0) | (y == 1))) and (
        weights is None or bool(np.all(np.isfinite(weights) & (weights > 0)))
    )
    if not usual:
        return _sklearn_ap_auc(y, scores, weights)
    return _ap_auc(y, scores, weights, _descending_order(scores) if order is None else order)


# -- fast weighted AP / AUC for the bootstrap ---------------------------------------------------


class _Ranked:
    """One model's labelled scores sorted once (descending) for repeated weighted metrics."""

    def __init__(self, scores: np.ndarray, y: np.ndarray, order: np.ndarray | None = None):
        # stable descending either way (ties in input order); the caller's order saves a sort
        self.order = _descending_order(scores) if order is None else order
        s = scores[self.order]
        self.y = y[self.order].astype(float)
        self.ends = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1] if s.size else np.array([])

    def ap_auc(self, w: np.ndarray) -> tuple[float, float]:
        """Average precision (sklearn's step-wise definition) and trapezoidal ROC AUC."""
        ws = w[self.order]
        tp = np.cumsum(ws * self.y)[self.ends]
        fp = np.cumsum(ws * (1.0 - self.y))[self.ends]
        pos, neg = tp[-1], fp[-1]
        if pos <= 0 or neg <= 0:
            return math.nan, math.nan
        denom = tp + fp
        precision = np.divide(tp, denom, out=np.ones_like(tp), where=denom > 0)
        recall = tp / pos
        ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
        tpr = np.r_[0.0, recall]
        fpr = np.r_[0.0, fp / neg]
        auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
        return ap, auc


_EXACT_BOOT_ROWS = 50_000
"""Up to this many labelled rows the bootstrap resamples rows; above it, compressed cells."""
_BOOT_BINS = 128
"""Score bins per model in the compressed bootstrap: half at quantiles of all scores, half at
quantiles of the positives' scores, plus the threshold as an edge."""
_BOOT_CHUNK = 25
_BINCOUNT_KEYS = 1 << 24
"""Cell keys below this are counted with ``np.bincount`` (a 128 MB table at most)."""


def _curve(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AP (sklearn's step-wise definition) and trapezoidal ROC AUC from weighted positive and
    negative counts per tie group, groups ordered by descending score along the last axis."""
    tp, fp = np.cumsum(pos, axis=-1), np.cumsum(neg, axis=-1)
    p_all, n_all = tp[..., -1:], fp[..., -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = tp + fp
        precision = np.where(denom > 0, tp / np.where(denom > 0, denom, 1), 1.0)
        recall = tp / p_all
        fpr = fp / n_all
        zeros = np.zeros_like(recall[..., :1])
        ap = np.sum(np.diff(np.concatenate([zeros, recall], -1), axis=-1) * precision, -1)
        tpr0 = np.concatenate([zeros, recall], -1)
        fpr0 = np.concatenate([zeros, fpr], -1)
        auc = np.sum(np.diff(fpr0, axis=-1) * (tpr0[..., 1:] + tpr0[..., :-1]) / 2, -1)
    bad = (p_all[..., 0] <= 0) | (n_all[..., 0] <= 0)
    return np.where(bad, np.nan, ap), np.where(bad, np.nan, auc)


def _compressed_bootstrap(
    y: np.ndarray,
    scores: dict[str, np.ndarray],
    weights: np.ndarray,
    thresholds: dict[str, float],
    inclusive: bool,
    n_boot: int,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Bootstrap replicates of (precision, recall, flag_rate, AP, AUC) per model, resampling
    joint cells (primary bin, candidate bin, label, weight) instead of rows.

    Resampling rows puts a random count on each cell, so drawing the cell counts directly is the
    same bootstrap for anything that only depends on the cells (here the Poisson bootstrap [1]_,
    each row drawn Poisson(1) times, which for ratio statistics matches the multinomial one). Precision,
    recall and flag rate do (the threshold is a bin edge), so their replicates are exact; AP and
    AUC are computed on the binned scores and shifted by (exact - binned) point estimate.

    References
    ----------
    .. [1] J. A. Hanley and B. MacGibbon, "Creating non-parametric bootstrap samples using
           Poisson frequencies", Computer Methods and Programs in Biomedicine 83 (2006) 57-62.
    """
    yi = y.astype(np.int64)
    if weights.size and np.all(weights == weights[0]):  # all labels: weight 1 everywhere
        w_levels, w_idx = weights[:1], np.zeros(weights.size, dtype=np.intp)
    else:
        w_levels, w_idx = np.unique(weights, return_inverse=True)
    ids, t_ids, sizes = {}, {}, {}
    for m in MODELS:
        s = scores[m]
        qs = np.linspace(0.0, 1.0, _BOOT_BINS // 2 + 1)
        parts = [np.quantile(s, qs), np.array([thresholds[m]])]
        if yi.any():
            parts.append(np.quantile(s[yi == 1], qs))
        edges = np.unique(np.concatenate(parts))
        # id = #edges <= s (inclusive) or #edges < s; t is an edge and t_id = #edges <= t, so
        # the flag (s >= t, or s > t) is exactly id >= t_id.
        ids[m] = np.searchsorted(edges, s, side="right" if inclusive else "left")
        t_ids[m] = int(np.searchsorted(edges, thresholds[m], side="right"))
        sizes[m] = edges.size + 1
    key = ((ids[S.PRIMARY] * sizes[S.CANDIDATE] + ids[S.CANDIDATE]) * 2 + yi) * w_levels.size
    key = key + w_idx
    if int(key.max()) < _BINCOUNT_KEYS:  # the same cells and counts as np.unique, without a sort
        cnt = np.bincount(key)
        uniq = np.flatnonzero(cnt)
        cnt = cnt[uniq]
    else:
        uniq, cnt = np.unique(key, return_counts=True)
    w_cell = w_levels[uniq % w_levels.size]
    rest = uniq // w_levels.size
    y_cell = rest % 2
    rest //= 2
    cell_bin = {S.CANDIDATE: rest % sizes[S.CANDIDATE], S.PRIMARY: rest // sizes[S.CANDIDATE]}
    # One sparse (cells x bins) matrix per model and label: weighted counts per score bin are a
    # matrix product, bins reversed so that scores descend along the last axis.
    plan = {}
    cols = np.arange(uniq.size)
    for m in MODELS:
        k = sizes[m]
        desc = k - 1 - cell_bin[m]
        mats = [
            sparse.csr_matrix((w_cell * (y_cell == lab), (cols, desc)), shape=(uniq.size, k))
            for lab in (1, 0)
        ]
        flagged = (k - 1 - np.arange(k)) >= t_ids[m]
        plan[m] = (mats, flagged)

    def metrics(counts: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for m in MODELS:
            (pos_m, neg_m), flagged = plan[m]
            pos = np.asarray((pos_m.T @ counts.T).T)
            neg = np.asarray((neg_m.T @ counts.T).T)
            ap, auc = _curve(pos, neg)
            tp = pos[..., flagged].sum(-1)
            f = tp + neg[..., flagged].sum(-1)
            p_all = pos.sum(-1)
            tot = p_all + neg.sum(-1)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[m] = np.stack([tp / f, tp / p_all, f / tot, ap, auc], axis=-1)
        return out

    point = metrics(cnt[None, :].astype(float))
    point = {m: v[0] for m, v in point.items()}
    reps = {m: [] for m in MODELS}
    for start in range(0, n_boot, _BOOT_CHUNK):
        size = min(_BOOT_CHUNK, n_boot - start)
        # Poisson bootstrap: each row is drawn Poisson(1) times, so a cell of c rows Poisson(c)
        # times -- vectorised, and for ratio metrics equivalent to the multinomial [1]_.
        draws = rng.poisson(cnt, size=(size, cnt.size)).astype(float)
        got = metrics(draws)
        for m in MODELS:
            reps[m].append(got[m])
    return {m: np.concatenate(reps[m]) for m in MODELS} | {f"_point_{m}": point[m] for m in MODELS}


def _point_metrics(y, flag, w) -> tuple[float, float, float]:
    tp = float(np.sum(w * y * flag))
    f = float(np.sum(w * flag))
    p = float(np.sum(w * y))
    tot = float(np.sum(w))
    return (
        tp / f if f > 0 else math.nan,
        tp / p if p > 0 else math.nan,
        f / tot if tot > 0 else math.nan,
    )


def _slice_metrics(
    name: str,
    frame: pl.DataFrame,
    weights: np.ndarray,
    thresholds: dict[str, float],
    inclusive: bool,
    n_boot: int,
    rng: np.random.Generator,
    confidence: float,
    notes: list[str],
    orders: dict[str, np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """Point estimates and bootstrap intervals of one slice. ``orders``: each model's
    :func:`_descending_order` of the slice's scores, when the caller has it (one sort serves
    all slices); else sorted here."""
    y = frame[S.LABEL].to_numpy().astype(float)
    n = y.size
    positives = int(y.sum())
    rows: list[dict[str, Any]] = []
    metric_names = ("precision", "recall", "flag_rate", "average_precision", "roc_auc")
    point: dict[str, dict[str, float]] = {}
    ranked: dict[str, _Ranked] = {}
    flags: dict[str, np.ndarray] = {}
    for model in MODELS:
        s = frame[S.score_column(model)].to_numpy()
        flags[model] = (s >= thresholds[model]) if inclusive else (s > thresholds[model])
        prec, rec, fr = _point_metrics(y, flags[model], weights)
        order = None if orders is None else orders[model]
        if 0 < positives < n:
            if order is None:
                order = _descending_order(s)
            ap, auc = _ranking_metrics(y, s, weights, order)
        else:
            ap = auc = math.nan
        point[model] = dict(zip(metric_names, (prec, rec, fr, ap, auc), strict=True))
        if 0 < n <= _EXACT_BOOT_ROWS:  # only the row-resampling bootstrap uses it
            ranked[model] = _Ranked(s, y, order)
    if n == 0:
        notes.append(f"Slice {name!r} has no labelled pairs: its metrics are NaN.")
    elif not 0 < positives < n:
        notes.append(
            f"Slice {name!r} has only one class ({positives} positives of {n}): AP and "
            "ROC AUC are undefined (NaN)."
        )
    boot = {m: np.full((n_boot, len(metric_names)), np.nan) for m in MODELS}
    if n > _EXACT_BOOT_ROWS:
        scores = {m: frame[S.score_column(m)].to_numpy() for m in MODELS}
        got = _compressed_bootstrap(y, scores, weights, thresholds, inclusive, n_boot, rng)
        for m in MODELS:
            exact = np.array([point[m][k] for k in metric_names])
            boot[m] = got[m] + (exact - got[f"_point_{m}"])
    elif n > 0:
        for b in range(n_boot):
            counts = np.bincount(rng.integers(0, n, n), minlength=n).astype(float)
            w = counts * weights
            for model in MODELS:
                prec, rec, fr = _point_metrics(y, flags[model], w)
                ap, auc = ranked[model].ap_auc(w)
                boot[model][b] = (prec, rec, fr, ap, auc)
    alpha = 1 - confidence

    def interval(values: np.ndarray) -> tuple[float, float]:
        ok = values[np.isfinite(values)]
        if ok.size < max(10, 0.5 * n_boot):
            return math.nan, math.nan
        lo, hi = np.quantile(ok, [alpha / 2, 1 - alpha / 2])
        return float(lo), float(hi)

    for j, metric in enumerate(metric_names):
        for model in MODELS:
            lo, hi = interval(boot[model][:, j])
            rows.append(
                dict(
                    slice=name,
                    model=model,
                    metric=metric,
                    estimate=point[model][metric],
                    ci_low=lo,
                    ci_high=hi,
                    n=n,
                    positives=positives,
                )
            )
        diff = boot[S.CANDIDATE][:, j] - boot[S.PRIMARY][:, j]
        lo, hi = interval(diff)
        rows.append(
            dict(
                slice=name,
                model="difference",
                metric=metric,
                estimate=point[S.CANDIDATE][metric] - point[S.PRIMARY][metric],
                ci_low=lo,
                ci_high=hi,
                n=n,
                positives=positives,
            )
        )
    return rows


# -- input handling ------------------------------------------------------------------------------


def _param_error(name: str, what: str, got: Any) -> ValueError:
    return ValueError(
        f"The {name!r} parameter of operating_point_metrics must be {what}. Got {got!r} instead."
    )


def _bins_iv(n_bins: Any, strategy: Any, fn: str) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 2:
        raise ValueError(
            f"The 'n_bins' parameter of {fn} must be an int >= 2. Got {n_bins!r} instead."
        )
    if strategy not in ("quantile", "uniform"):
        raise ValueError(
            f"The 'strategy' parameter of {fn} must be a str among {{'quantile', 'uniform'}}. "
            f"Got {strategy!r} instead."
        )


def _frame(obj: Any, what: str, scan: Any) -> pl.DataFrame:
    if isinstance(obj, pl.LazyFrame):
        return obj.collect()
    if isinstance(obj, pl.DataFrame):
        return obj
    if isinstance(obj, str | os.PathLike) or (
        isinstance(obj, Sequence) and obj and all(isinstance(x, str | os.PathLike) for x in obj)
    ):
        return scan(obj).collect()
    raise _param_error(
        what, "a polars DataFrame/LazyFrame, a path, a glob or a list of paths", type(obj).__name__
    )


def _require(frame: pl.DataFrame, columns: Sequence[str], what: str) -> None:
    import difflib

    for col in columns:
        if col not in frame.columns:
            close = difflib.get_close_matches(col, frame.columns, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"Input {what} has no column {col!r}; columns are {frame.columns}.{hint}"
            )


def _latest_labels(labels: pl.DataFrame) -> pl.DataFrame:
    # Latest label per request wins (a chargeback after a review overrides it); on equal label_ts
    # the larger label (fraud) wins, so the choice does not depend on file order.
    return (
        labels.sort([S.REQUEST_ID, S.LABEL_TS, S.LABEL])
        .group_by(S.REQUEST_ID)
        .agg(pl.col(S.LABEL).last(), pl.col(S.SOURCE).last())
    )


def _load_reference(reference: Any) -> pl.DataFrame:
    frame = _frame(reference, "reference", pl.scan_parquet)
    _require(frame, ["model", "score", "label"], "reference")
    frame = frame.select(
        pl.col("model").cast(pl.String),
        pl.col("score").cast(pl.Float64),
        pl.col("label").cast(pl.Int8),
    ).filter(pl.col("score").is_finite())
    bad = set(frame["model"].unique().to_list()) - set(MODELS)
    if bad:
        raise ValueError(
            f"Input reference column 'model' holds {sorted(bad)}; expected 'primary' or "
            "'candidate'. Fix: one row per (model, holdout example)."
        )
    return frame


def _isotonic(ref: pl.DataFrame, model: str) -> IsotonicRegression | None:
    part = ref.filter(pl.col("model") == model)
    if part.height < 2 or part["label"].n_unique() < 2:
        return None
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    iso.fit(part["score"].to_numpy(), part["label"].to_numpy().astype(float))
    return iso


def _apply(iso: IsotonicRegression | None, s: np.ndarray) -> np.ndarray:
    return s if iso is None else iso.predict(s)


def _iso_expr(col: str, iso: IsotonicRegression) -> pl.Expr:
    # IsotonicRegression.predict is linear interpolation between its fitted thresholds (clipped).
    xs, ys = iso.X_thresholds_.copy(), iso.y_thresholds_.copy()

    def interp(s: pl.Series) -> pl.Series:
        return pl.Series(np.interp(s.to_numpy(), xs, ys))

    return pl.col(col).map_batches(interp, return_dtype=pl.Float64, is_elementwise=True)


_MIN_POSITIVES = 30
"""Fewest labelled positives for an out-of-sample calibration check to count as a verification."""
_Z_REJECT = 2.5758293035489004  # two-sided 1 % normal quantile


def _trust(
    checks: dict[tuple[str, str, str], dict[str, Any]], model: str, version: str, limit: float
) -> tuple[str, str]:
    """'calibrated', 'unverified' or 'miscalibrated', with the reason in words.

    Only out-of-sample data count: the audit slice always, the reference only for raw scores
    (isotonic is fitted on it). Miscalibrated: relative ECE above ``limit`` on data with at least
    ``_MIN_POSITIVES`` positives, or observed vs expected positives (calibration-in-the-large)
    off by more than ``_Z_REJECT`` standard deviations.
    """
    sets = [
        checks[k]
        for k in (("audit", model, version), ("reference", model, version))
        if k in checks and not (k[0] == "reference" and version == "isotonic")
    ]
    if not sets:
        return "unverified", "no out-of-sample labels to check calibration against"
    for row in sets:
        if abs(row["z"]) > _Z_REJECT:
            return "miscalibrated", (
                f"on {row['data']} labels {row['observed_positives']:.1f} positives observed vs "
                f"{row['expected_positives']:.1f} expected from the scores (z={row['z']:.1f})"
            )
        if row["positives"] >= _MIN_POSITIVES and row["relative_ece"] > limit:
            return "miscalibrated", (
                f"ECE on {row['data']} labels is {row['relative_ece']:.0%} of the positive rate "
                f"(limit {limit:.0%})"
            )
    enough = [r for r in sets if r["positives"] >= _MIN_POSITIVES]
    if not enough:
        best = max(sets, key=lambda r: r["positives"])
        return "unverified", (
            f"only {best['positives']} positives on {best['data']} labels (need "
            f"{_MIN_POSITIVES}) to confirm the calibration; no gross miscalibration seen"
        )
    desc = ", ".join(f"{r['relative_ece']:.0%} on {r['data']}" for r in enough)
    return "calibrated", f"ECE relative to the positive rate {desc} (limit {limit:.0%})"


# -- the public function -------------------------------------------------------------------------


def operating_point_metrics(
    pairs: Any,
    labels: Any,
    primary_threshold: float,
    candidate_threshold: float,
    *,
    reference: Any = None,
    seed: int = 0,
    n_boot: int = 200,
    confidence: float = 0.95,
    inclusive: bool = True,
    recalibrate: bool = False,
    n_bins: int = 10,
    strategy: Literal["quantile", "uniform"] = "quantile",
    ece_limit: float = 0.3,
    labelled_pairs: pl.DataFrame | None = None,
) -> OperatingPointMetrics:
    """Precision, recall, flag rate, AP and ROC AUC of both models at their operating points.

    Parameters
    ----------
    pairs : LazyFrame, DataFrame, path, glob, list or Spark DataFrame
        Pair logs (anything :func:`shadowlab.engine.as_source` accepts).
    labels : DataFrame, LazyFrame, path, glob or list of paths
        Labels in the label schema; the latest label per request wins (ties: fraud).
    primary_threshold, candidate_threshold : float
        Each model's threshold (e.g. ``calibrate_threshold(...).threshold`` for the candidate).
    reference : DataFrame, LazyFrame or path, optional
        Offline holdout scores: columns ``model`` in {'primary', 'candidate'}, ``score``,
        ``label``. Enables the reference AP comparison, the reference calibration and
        ``recalibrate``.
    seed : int, default 0
        Seed of the bootstrap.
    n_boot : int, default 200
        Bootstrap resamples (percentile intervals; both models share each resample, so the
        'difference' rows are paired).
    confidence : float, default 0.95
    inclusive : bool, default True
        Trigger rule ``score >= t`` (True) or ``score > t``.
    recalibrate : bool, default False
        Map scores through an isotonic regression fitted on the reference labels before the
        label-free estimate (needs ``reference``); the audit-slice calibration of the
        recalibrated scores is reported as an out-of-sample check.
    n_bins : int, default 10
    strategy : {'quantile', 'uniform'}, default 'quantile'
        Reliability-curve binning (as in :func:`sklearn.calibration.calibration_curve`).
    ece_limit : float, default 0.3
        Largest ECE, relative to the observed positive rate, at which the probabilities behind
        the label-free estimate count as calibrated. Fraud is rare, so an absolute ECE limit
        would pass anything: an ECE of 0.007 at a 0.8 % fraud rate is a 90 % error. Checked on
        out-of-sample labels only (the audit slice; the reference for raw scores) with at least
        30 positives; an observed-vs-expected positives count off by more than 2.58 standard
        deviations also fails. The estimate's ``status`` is 'calibrated' (``trusted``),
        'unverified' (too few out-of-sample positives to tell) or 'miscalibrated'.
    labelled_pairs : polars.DataFrame, optional
        The pair rows whose request id is in ``labels``, already fetched from ``pairs`` in their
        order (as :func:`shadowlab.gate.run_gate` does for its counts), with at least the columns
        ``request_id``, both scores, ``audit`` and ``audit_rate``; replaces the pull of the
        labelled pairs. Rows whose id has no label are dropped, as after the pull.

    Returns
    -------
    OperatingPointMetrics

    Notes
    -----
    The labelled subset (a few percent of the week) is collected: one pull of the pairs whose
    request id has a label, then in-memory metrics. Flag rates over all pairs come from one
    aggregation pass (Wilson intervals [3]_: over a whole week a bootstrap would add nothing).

    The audit slice is a random sample drawn with probability ``audit_rate``; weighting each
    audited row by ``1 / audit_rate`` gives Horvitz–Thompson estimates [1]_ of the population
    totals, and ratios of them (precision, recall) are consistent for the whole week's traffic.
    Audit rows whose label has not arrived yet are dropped (assumed missing at random).

    The label-free estimate follows the idea of NannyML's confidence-based performance
    estimation (CBPE) [2]_: with calibrated probabilities ``p``, ``E[TP] = sum_{flagged} p`` and
    ``E[positives] = sum_all p``. It is as good as the calibration, which is why ECE [4]_ is
    reported next to it.

    References
    ----------
    .. [1] D. G. Horvitz and D. J. Thompson, "A generalization of sampling without replacement
           from a finite universe", JASA 47 (1952) 663-685.
    .. [2] NannyML documentation, "Confidence-based Performance Estimation (CBPE)",
           https://nannyml.readthedocs.io/en/stable/how_it_works/performance_estimation.html
    .. [3] E. B. Wilson, "Probable inference, the law of succession, and statistical inference",
           JASA 22 (1927) 209-212.
    .. [4] C. Guo et al., "On calibration of modern neural networks", ICML 2017.
    .. [6] B. Van Calster et al., "Calibration: the Achilles heel of predictive analytics",
           BMC Medicine 17 (2019) 230 (calibration-in-the-large, observed vs expected).
    .. [5] B. Efron and R. J. Tibshirani, *An Introduction to the Bootstrap*, Chapman & Hall,
           1993 (percentile intervals).
    """
    for name, value in (
        ("primary_threshold", primary_threshold),
        ("candidate_threshold", candidate_threshold),
    ):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise _param_error(name, "a finite float", value)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise _param_error("seed", "an int", seed)
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 10:
        raise _param_error("n_boot", "an int >= 10", n_boot)
    if not (isinstance(confidence, float) and 0.0 < confidence < 1.0):
        raise _param_error("confidence", "a float in (0, 1)", confidence)
    if not isinstance(inclusive, bool):
        raise _param_error("inclusive", "a bool", inclusive)
    if not isinstance(recalibrate, bool):
        raise _param_error("recalibrate", "a bool", recalibrate)
    if recalibrate and reference is None:
        raise ValueError(
            "The 'recalibrate' parameter of operating_point_metrics needs 'reference': isotonic "
            "recalibration is fitted on the reference (offline holdout) labels."
        )
    _bins_iv(n_bins, strategy, "operating_point_metrics")
    if isinstance(ece_limit, bool) or not isinstance(ece_limit, int | float) or not ece_limit > 0:
        raise _param_error("ece_limit", "a float > 0", ece_limit)
    if labelled_pairs is not None and not isinstance(labelled_pairs, pl.DataFrame):
        raise _param_error("labelled_pairs", "a polars DataFrame or None", labelled_pairs)

    from shadowlab.logs import id_probe, scan_labels

    source = as_source(pairs)
    names = list(source.collect_schema())
    needed = [S.REQUEST_ID, S.PRIMARY_SCORE, S.CANDIDATE_SCORE, S.AUDIT, S.AUDIT_RATE]
    for col in needed:
        if col not in names:
            import difflib

            close = difflib.get_close_matches(col, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"Input pairs has no column {col!r}; columns are {names}.{hint}")
    label_frame = _frame(labels, "labels", scan_labels)
    _require(label_frame, list(S.LABEL_SCHEMA), "labels")
    ref = _load_reference(reference) if reference is not None else None

    thresholds = {S.PRIMARY: float(primary_threshold), S.CANDIDATE: float(candidate_threshold)}
    notes: list[str] = []
    passes: list[dict[str, Any]] = []
    valid = pl.col(S.PRIMARY_SCORE).is_finite().fill_null(False) & pl.col(
        S.CANDIDATE_SCORE
    ).is_finite().fill_null(False)

    def flag(model: str) -> pl.Expr:
        col = pl.col(S.score_column(model))
        return col >= thresholds[model] if inclusive else col > thresholds[model]

    # Probabilities for the label-free estimate: raw scores, and isotonic when asked.
    isos = {m: (_isotonic(ref, m) if (recalibrate and ref is not None) else None) for m in MODELS}
    for m, iso in isos.items():
        if recalibrate and iso is None:
            notes.append(f"No isotonic fit for {m}: its reference rows lack one of the classes.")
    versions: list[tuple[str, str]] = [(m, "raw") for m in MODELS]
    versions += [(m, "isotonic") for m in MODELS if isos[m] is not None]

    def prob(model: str, version: str) -> pl.Expr:
        col = S.score_column(model)
        if version == "isotonic":
            return _iso_expr(col, isos[model])  # type: ignore[arg-type]
        return pl.col(col).clip(0.0, 1.0)

    # Pass 1 over all pairs: counts and label-free sums (one mergeable row).
    def build(lf: pl.LazyFrame) -> pl.LazyFrame:
        exprs = [
            pl.len().cast(pl.Int64).alias("rows"),
            valid.cast(pl.Int64).sum().alias("pairs"),
            (valid & pl.col(S.AUDIT).fill_null(False)).cast(pl.Int64).sum().alias("audit"),
        ]
        for m in MODELS:
            exprs.append((valid & flag(m)).cast(pl.Int64).sum().alias(f"flags_{m}"))
        for m, ver in versions:
            p = prob(m, ver)
            exprs.append(p.filter(valid).sum().alias(f"psum_{m}_{ver}"))
            exprs.append(p.filter(valid & flag(m)).sum().alias(f"ptp_{m}_{ver}"))
        return lf.select(exprs)

    sums_cols = ["pairs", "rows", "audit", *(f"flags_{m}" for m in MODELS)]
    sums_cols += [f"{k}_{m}_{ver}" for m, ver in versions for k in ("psum", "ptp")]
    totals = source.aggregate(Aggregation(build, keys=(), reduce=dict.fromkeys(sums_cols, "sum")))
    passes.append(
        {"kind": "flag counts, audit count, label-free sums", "rows_moved": totals.height}
    )
    tot = totals.row(0, named=True)
    n_pairs, n_excluded = int(tot["pairs"]), int(tot["rows"] - tot["pairs"])
    if n_pairs == 0:
        raise ValueError("Input pairs has no row where both scores are finite: nothing to measure.")
    if n_excluded:
        notes.append(f"{n_excluded} rows excluded: a score failed (null/NaN/inf).")

    # Labelled subset: latest label per request, pulled by request id.
    latest = _latest_labels(label_frame)
    ids = latest[S.REQUEST_ID]
    cols = [S.REQUEST_ID, S.PRIMARY_SCORE, S.CANDIDATE_SCORE, S.AUDIT, S.AUDIT_RATE]
    # Membership by 64-bit hash (logs.id_probe); a collision can only pull an extra row, which
    # the exact inner join on the id below drops.
    if labelled_pairs is None:
        labelled_pairs = source.pull(id_probe(ids) & valid, cols)
        passes.append({"kind": "pull labelled pairs", "rows_moved": labelled_pairs.height})
    else:
        _require(labelled_pairs, cols, "labelled_pairs")
        labelled_pairs = labelled_pairs.filter(valid).select(cols)
        passes.append({"kind": "labelled pairs given (no pull)", "rows_moved": 0})
    n_audit = int(tot["audit"])
    lab = labelled_pairs.join(latest, on=S.REQUEST_ID, how="inner")
    n_unmatched = latest.height - lab.select(S.REQUEST_ID).n_unique()
    if n_unmatched:
        notes.append(
            f"{n_unmatched} labelled request ids are not among the valid pairs (other weeks, or a "
            "failed score): ignored."
        )
    in_audit = lab[S.AUDIT].fill_null(False).to_numpy()
    audit = lab.filter(in_audit)
    if n_audit > audit.height:
        notes.append(
            f"{n_audit - audit.height} of {n_audit} audit rows have no label yet: dropped "
            "(assumed missing at random within the audit slice)."
        )
    rate = audit[S.AUDIT_RATE].to_numpy()
    if audit.height and not (np.all(np.isfinite(rate)) and np.all(rate > 0)):
        raise ValueError(
            f"Input pairs column {S.AUDIT_RATE!r} must be > 0 on audit rows (the probability "
            "with which the row was drawn). Fix: log the router's audit rate with each row."
        )

    # One sort per model ranks every slice (the audit slice's order is a restriction of it).
    lab_orders = {m: _descending_order(lab[S.score_column(m)].to_numpy()) for m in MODELS}
    audit_orders = {m: _restrict_order(o, in_audit) for m, o in lab_orders.items()}
    rng = np.random.default_rng(seed)
    rows = _slice_metrics(
        "all_labels",
        lab,
        np.ones(lab.height),
        thresholds,
        inclusive,
        n_boot,
        rng,
        confidence,
        notes,
        lab_orders,
    )
    ht = 1.0 / rate if audit.height else np.ones(0)
    rows += _slice_metrics(
        "audit", audit, ht, thresholds, inclusive, n_boot, rng, confidence, notes, audit_orders
    )
    metrics = pl.DataFrame(
        rows,
        schema={
            "slice": pl.String,
            "model": pl.String,
            "metric": pl.String,
            "estimate": pl.Float64,
            "ci_low": pl.Float64,
            "ci_high": pl.Float64,
            "n": pl.Int64,
            "positives": pl.Int64,
        },
    )

    # Flag rates over the whole week.
    fr_rows = []
    for m in MODELS:
        k = int(tot[f"flags_{m}"])
        lo, hi = wilson_interval(k, n_pairs, confidence)
        s = lab[S.score_column(m)]
        labelled_flags = int(((s >= thresholds[m]) if inclusive else (s > thresholds[m])).sum())
        fr_rows.append(
            dict(
                model=m,
                threshold=thresholds[m],
                flags=k,
                flag_rate=k / n_pairs,
                ci_low=lo,
                ci_high=hi,
                labelled_share=labelled_flags / k if k else math.nan,
            )
        )
    flag_rates = pl.DataFrame(fr_rows)

    # Calibration: reliability and ECE on the audit slice and on the reference.
    rel_parts: list[pl.DataFrame] = []
    cal_rows: list[dict[str, Any]] = []
    datasets: list[tuple[str, dict[str, np.ndarray], np.ndarray, np.ndarray]] = []
    if audit.height:
        y_a = audit[S.LABEL].to_numpy()
        datasets.append(
            ("audit", {m: audit[S.score_column(m)].to_numpy() for m in MODELS}, y_a, ht)
        )
    checks: dict[tuple[str, str, str], dict[str, float]] = {}

    def calibrate_on(data: str, m: str, ver: str, y: np.ndarray, s: np.ndarray, w) -> None:
        p = np.clip(_apply(isos[m] if ver == "isotonic" else None, s), 0.0, 1.0)
        curve = reliability_curve(y, p, weights=w, n_bins=n_bins, strategy=strategy)
        rel_parts.append(
            curve.select(
                pl.lit(data).alias("data"),
                pl.lit(m).alias("model"),
                pl.lit(ver).alias("probabilities"),
                pl.all(),
            )
        )
        e = expected_calibration_error(y, p, weights=w, n_bins=n_bins, strategy=strategy)
        ww = np.ones_like(p) if w is None else np.asarray(w, dtype=float)
        observed, expected = float(np.sum(ww * y)), float(np.sum(ww * p))
        var = float(np.sum(ww * ww * p * (1 - p)))
        row = dict(
            data=data,
            model=m,
            probabilities=ver,
            ece=e,
            relative_ece=e / (observed / np.sum(ww)) if observed > 0 else math.nan,
            observed_positives=observed,
            expected_positives=expected,
            z=(observed - expected) / math.sqrt(var) if var > 0 else math.nan,
            n=int(y.size),
            positives=int(np.sum(y)),
        )
        checks[(data, m, ver)] = row
        cal_rows.append(row)

    for data, scores, y, w in datasets:
        for m, ver in versions:
            calibrate_on(data, m, ver, y, scores[m], w)
    ref_rows = None
    if ref is not None:
        for m, ver in versions:
            part = ref.filter(pl.col("model") == m)
            calibrate_on(
                "reference", m, ver, part["label"].to_numpy(), part["score"].to_numpy(), None
            )
        if any(v == "isotonic" for _, v in versions):
            notes.append(
                "Isotonic ECE on the reference is in-sample (fitted there): judge the "
                "recalibration by its audit-slice ECE."
            )
        ref_rows = []
        audit_pos = metrics.filter(pl.col("slice") == "audit")["positives"]
        prod_slice = "audit" if audit_pos.len() and int(audit_pos[0]) > 0 else "all_labels"
        for m in MODELS:
            part = ref.filter(pl.col("model") == m)
            y = part["label"].to_numpy()
            ref_ap = (
                _ranking_metrics(y, part["score"].to_numpy(), None, None)[0]
                if 0 < y.sum() < y.size
                else math.nan
            )
            prod_ap = metrics.filter(
                (pl.col("slice") == prod_slice)
                & (pl.col("model") == m)
                & (pl.col("metric") == "average_precision")
            )["estimate"][0]
            ref_rows.append(
                dict(
                    model=m,
                    reference_ap=ref_ap,
                    production_ap=prod_ap,
                    production_slice=prod_slice,
                    difference=prod_ap - ref_ap,
                )
            )
    reliability = (
        pl.concat(rel_parts)
        if rel_parts
        else pl.DataFrame(
            schema={
                "data": pl.String,
                "model": pl.String,
                "probabilities": pl.String,
                "bin": pl.Int64,
                "mean_score": pl.Float64,
                "observed_rate": pl.Float64,
                "weight": pl.Float64,
            }
        )
    )
    calibration = pl.DataFrame(
        cal_rows,
        schema={
            "data": pl.String,
            "model": pl.String,
            "probabilities": pl.String,
            "ece": pl.Float64,
            "relative_ece": pl.Float64,
            "observed_positives": pl.Float64,
            "expected_positives": pl.Float64,
            "z": pl.Float64,
            "n": pl.Int64,
            "positives": pl.Int64,
        },
    )

    # The label-free estimate: recalibrated probabilities when available, else raw.
    est_rows = []
    for m in MODELS:
        ver = "isotonic" if isos[m] is not None else "raw"
        etp, epos = float(tot[f"ptp_{m}_{ver}"]), float(tot[f"psum_{m}_{ver}"])
        flags_m = int(tot[f"flags_{m}"])
        status, reason = _trust(checks, m, ver, ece_limit)
        trusted = status == "calibrated"
        if status == "miscalibrated":
            notes.append(f"Do not trust the label-free estimate for {m}: {reason}.")
        elif status == "unverified":
            notes.append(f"The label-free estimate for {m} is unverified: {reason}.")
        est_rows.append(
            dict(
                model=m,
                probabilities=ver,
                threshold=thresholds[m],
                expected_flags=flags_m,
                expected_tp=etp,
                expected_positives=epos,
                expected_precision=etp / flags_m if flags_m else math.nan,
                expected_recall=etp / epos if epos > 0 else math.nan,
                trusted=trusted,
                status=status,
                reason=reason,
            )
        )
    estimate = pl.DataFrame(est_rows)

    return OperatingPointMetrics(
        primary_threshold=thresholds[S.PRIMARY],
        candidate_threshold=thresholds[S.CANDIDATE],
        inclusive=inclusive,
        confidence=confidence,
        n_boot=n_boot,
        seed=int(seed),
        n_pairs=n_pairs,
        n_excluded=n_excluded,
        n_labels=label_frame.height,
        n_labelled=lab.height,
        n_audit=n_audit,
        n_audit_labelled=audit.height,
        n_unmatched_labels=n_unmatched,
        flag_rates=flag_rates,
        metrics=metrics,
        reference=pl.DataFrame(ref_rows) if ref_rows is not None else None,
        reliability=reliability,
        calibration=calibration,
        estimate=estimate,
        warning=SELECTIVE_LABELS_WARNING,
        passes=tuple(passes),
        notes=tuple(notes),
    )
