"""A synthetic shadow week of fraud-like traffic whose truth is known.

:func:`simulate_week` writes one week of pair logs through the real
:class:`shadowlab.router.CanaryRouter` and :class:`shadowlab.logs.PairLogWriter`, the labels a real
fraud system would collect for it, the offline reference scores of both models, the ground truth of
every request and a manifest. Layout of ``out_dir``::

    pairs/date=YYYY-MM-DD/part-*.parquet   pair logs (schema v1 + context: country, channel)
    labels/labels-YYYY-MM-DD.parquet       labels (schema v1), one file per arrival day
    reference.parquet                      model {primary, candidate}, score f64, label i8
    truth.parquet                          request_id, is_fraud i8, fraud_prob f64, ...
    manifest.json                          scenario, seed, rows, primary_threshold, ...

The world
---------
Each request has six behavioural features (amount, account age, transactions in the last 24 h,
distance from home, new device, merchant risk), its hour of day and two context columns,
``country`` (8 values) and ``channel`` (web, app, pos). Volume follows a daily and weekly shape:
nights are quiet, weekdays peak late morning and early evening, weekends start later and run
into the night. The true fraud probability is a logistic function of the features with two
non-linear patterns (a "ring": young app accounts making bursts of transactions; an "account
takeover": new device, far from home, large amount), giving a base fraud rate around 1 %.

Models
------
Both models are real scikit-learn estimators trained inside the generator (and cached per seed):

- v1 (*primary*, ``fraud:1.4.0``): a standardised ``LogisticRegression`` trained on *older*
  data, from a world where both non-linear patterns were weaker. Its serving pipeline imputes a
  missing feature with the training median.
- v2 (*candidate*, ``fraud:2.0.0``): a ``HistGradientBoostingClassifier`` trained on *fresh*
  data, so it learns the patterns and has a clearly higher average precision on the holdout.

v2's probability then goes through a post-hoc monotone recalibration,
``score = expit(a * logit(p) + b)``, which leaves its ranking (and so its AP) unchanged and sets
how many requests it flags at v1's production threshold. v1's threshold is the 98th percentile of
v1's scores on a 200 000-row calibration sample of production traffic (v1 flags about 2 %). The
slope ``a`` gives v2 a differently shaped distribution and ``b`` is solved in closed form so that
v2 flags ``trigger_ratio`` times as many calibration requests as v1 (2.0 in ``trigger-shift``,
1.0 otherwise). The recalibrated v2 is what the team validated: the *reference* scores are both
models' outputs on a labelled 50 000-row holdout, through the same serving wrappers.

Scenarios
---------
``trigger-shift``
    The article's story [1]_: v2 has the better AP, yet at v1's threshold it flags about twice
    as many requests (``a = 0.8``, ratio 2.0).
``benign``
    v2 has the better AP and flags as many requests as v1 at the same threshold.
``broken``
    A production-only failure: for ``country == "BR"`` between day 2 06:00 and day 4 18:00 the
    merchant-enrichment service fails, so ``amount`` and ``merchant_risk`` arrive missing. v2's
    new feature pipeline silently fills them with 0 (so its scores collapse there: median and
    99th percentile drop several-fold), and where ``account_age`` is missing too (5 % of those
    requests) it raises ``ValueError``, which the router logs as a candidate error. v1's
    pipeline imputes training medians and carries on. Such rows are sent to the router in their
    own ``predict_batch`` call (after the healthy rows of the hour), because the router re-scores
    a batch whose ``score_batch`` raised row by row.
``drift``
    The benign models, but from mid-week (ramping over 12 hours) amounts grow, customers are
    further from home and traffic moves towards the app; both models see the shifted inputs and
    the true fraud rate changes with them.

Labels
------
The label selection of a real fraud system, from the served model's decision at the production
threshold:

- ``review``: requests the served model flagged (score >= ``primary_threshold``) outside the
  audit slice, labelled with the truth after a log-normal delay (median 6 h, 0.5 h to 3 days);
- ``audit``: the router's random audit slice, whatever the models say, labelled with the truth
  (median 24 h, 1 h to 10 days);
- ``chargeback``: 70 % of the *unflagged, unaudited* fraud, labelled 1 after a log-normal delay
  (median 7 days, 1 to 60 days). Unflagged legitimate traffic is never labelled.

Labels are written as of ``as_of`` (default: the end of the week plus 3 days): a label whose
``label_ts`` is later has not arrived yet and is not written, so the last days of the week are
immature (most of their chargebacks are still missing). Reviewers are assumed to be right.

Routing and latency
-------------------
The router runs with the given ``traffic_pct`` and ``audit_rate``, a salt derived from the seed
and ``on_served_failure="fallback"`` (a canary request on which v2 fails is answered by v1, and
``served`` says so). Latency columns come from a simulated clock: per request about 0.4 ms for
v1 and 1.3 ms for v2, times ``1 + 0.6 * (hour's volume / peak volume)`` and a per-hour jitter.

Truth
-----
``truth.parquet`` has one row per request: ``request_id``, ``is_fraud`` (int8), ``fraud_prob``
(the true probability it was drawn from), ``feature_missing`` (the ``broken`` segment) and
``drift`` (the drift strength in [0, 1] of the request's hour).

Determinism
-----------
Every random draw comes from ``numpy.random.default_rng([seed, stream, hour])``, one generator
per hour of the week and purpose, so the output depends only on the parameters, not on
``chunk_rows`` (except how pair rows are split into files) or the wall clock; request ids are
``tx<seed>-<index>``, the router's salt is derived from the seed, the writer's file names come
from a fixed writer id (``PairLogWriter(writer_id=...)``) and latency from the simulated clock
(``CanaryRouter(clock=...)``). Models are trained and run on one thread, so scores are
bit-identical from run to run on the same platform; a different CPU or BLAS build may change
the last bits of v1's coefficients (then regenerate the bundled sample, see
``data/samples/README.md``).

References
----------
.. [1] "Migrating models to v2 without breaking your users" (shadow, canary, ramp, deprecate);
       /work/shared/reference/migrating-models-to-v2.txt in the team notes.
.. [2] Lakkaraju et al., "The Selective Labels Problem", KDD 2017 (why only flagged and audited
       requests get review labels).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import math
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.special import expit, logit

from shadowlab import schema as S

__all__ = [
    "CHANNELS",
    "COUNTRIES",
    "DEFAULT_START",
    "FEATURES",
    "GENERATOR_VERSION",
    "SCENARIOS",
    "SimulatedWeek",
    "read_manifest",
    "simulate_week",
]

GENERATOR_VERSION: Final = "4"
"""Bumped whenever the same parameters would produce different files."""

SCENARIOS: Final = ("trigger-shift", "benign", "broken", "drift")
"""Names accepted by ``simulate_week(scenario=...)``."""

DEFAULT_START: Final = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
"""A Monday, 00:00 UTC."""

COUNTRIES: Final = ("US", "GB", "DE", "FR", "BR", "IN", "MX", "NG")
CHANNELS: Final = ("web", "app", "pos")

FEATURES: Final = (
    "log_amount",
    "log_account_age_days",
    "tx_24h",
    "log_distance_km",
    "new_device",
    "merchant_risk",
    "hour_sin",
    "hour_cos",
    *(f"channel_{c}" for c in CHANNELS),
    *(f"country_{c}" for c in COUNTRIES),
)
"""Columns of the model matrix ``X`` the router passes to both models, in order."""

PRIMARY_ID: Final = "fraud:1.4.0"
CANDIDATE_ID: Final = "fraud:2.0.0"

_COUNTRY_P = np.array([0.34, 0.12, 0.10, 0.08, 0.12, 0.12, 0.08, 0.04])
_COUNTRY_EFFECT = np.array([0.0, 0.1, -0.3, -0.1, 0.6, 0.4, 0.5, 1.0])
_CHANNEL_P = np.array([0.38, 0.42, 0.20])
_CHANNEL_P_DRIFTED = np.array([0.28, 0.57, 0.15])
_CHANNEL_EFFECT = np.array([0.3, 0.0, -0.8])

# The merchant-enrichment service that fails in ``broken`` supplies these two features.
_COLS_ENRICHMENT = [FEATURES.index("log_amount"), FEATURES.index("merchant_risk")]
_COL_ACCOUNT_AGE = FEATURES.index("log_account_age_days")

_PRIMARY_FLAG_RATE = 0.02
_TRAIN_ROWS = 100_000
_CALIBRATION_ROWS = 200_000
_HOLDOUT_ROWS = 50_000
_AS_OF_DAYS = 3.0
_CHARGEBACK_SHARE = 0.7
_BROKEN_COUNTRY = "BR"
_BROKEN_WINDOW_H = (30.0, 90.0)  # hours after start: day 2 06:00 to day 4 18:00
_BROKEN_RAISE_SHARE = 0.05
_DRIFT_RAMP_H = 12.0

# RNG streams: default_rng([seed, stream, index]).
_STREAM_TRAFFIC = 1
_STREAM_OLD = 2
_STREAM_FRESH = 3
_STREAM_CALIBRATION = 4
_STREAM_HOLDOUT = 5
_STREAM_VOLUME = 6


@dataclass(frozen=True, slots=True)
class _Scenario:
    trigger_ratio: float
    slope: float
    drift: bool = False
    broken: bool = False


_SCENARIOS: Final[dict[str, _Scenario]] = {
    "trigger-shift": _Scenario(trigger_ratio=2.0, slope=0.8),
    "benign": _Scenario(trigger_ratio=1.0, slope=1.0),
    "broken": _Scenario(trigger_ratio=1.0, slope=1.0, broken=True),
    "drift": _Scenario(trigger_ratio=1.0, slope=1.0, drift=True),
}


# --------------------------------------------------------------------------------------------
# The world
# --------------------------------------------------------------------------------------------


# Weekday volume (Monday..Sunday) relative to Wednesday: Fridays are busiest.
_DAY_FACTOR = np.array([0.96, 0.98, 1.0, 1.02, 1.1, 1.0, 1.0])


def _hour_weights(start: dt.datetime, days: int, seed: int | None = None) -> np.ndarray:
    """Relative request volume of each hour of the week (nights quiet, weekends different).

    With a ``seed``, each hour also gets a small random factor (log-normal, sigma 0.05) so
    that no two days are identical.
    """
    hours = np.arange(days * 24)
    stamp = [start + dt.timedelta(hours=int(h)) for h in hours]
    hod = np.array([t.hour + t.minute / 60 for t in stamp]) + 0.5
    weekday = np.array([t.weekday() for t in stamp])
    weekend = weekday >= 5
    noise = np.ones(len(hours))
    if seed is not None:
        noise = np.random.default_rng([seed, _STREAM_VOLUME, 0]).lognormal(0.0, 0.05, len(hours))

    def bump(centre: float, width: float) -> np.ndarray:
        d = np.minimum(np.abs(hod - centre), 24 - np.abs(hod - centre))
        return _libm(math.exp, -((d / width) ** 2))

    weekday_shape = 0.06 + 0.85 * bump(11.5, 3.2) + 1.0 * bump(19.0, 2.6)
    weekend_shape = 0.85 * (0.09 + 0.7 * bump(14.0, 3.8) + 0.9 * bump(21.0, 2.8))
    return np.where(weekend, weekend_shape, weekday_shape) * _DAY_FACTOR[weekday] * noise


def _allocate(rows: int, weights: np.ndarray) -> np.ndarray:
    """Split ``rows`` over hours in proportion to ``weights`` (largest remainder, deterministic)."""
    exact = rows * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    short = rows - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:short]] += 1
    return counts


def _draw(
    rng: np.random.Generator, n: int, hod: np.ndarray, shift: float = 0.0
) -> dict[str, np.ndarray]:
    """Draw ``n`` requests' raw features at hours of day ``hod``; ``shift`` in [0, 1] drifts them."""
    channel_p = (1 - shift) * _CHANNEL_P + shift * _CHANNEL_P_DRIFTED
    return {
        "hod": hod,
        "country": rng.choice(len(COUNTRIES), n, p=_COUNTRY_P).astype(np.int8),
        "channel": rng.choice(len(CHANNELS), n, p=channel_p / channel_p.sum()).astype(np.int8),
        "log_amount": rng.normal(3.6 + 0.45 * shift, 1.1, n),
        "log_account_age_days": _libm(math.log1p, rng.gamma(1.2, 500.0, n)),
        "tx_24h": rng.poisson(_libm(math.exp, rng.normal(0.6, 0.7, n))).astype(np.float64),
        "log_distance_km": _libm(math.log1p, rng.lognormal(2.5 + 0.6 * shift, 1.6, n)),
        "new_device": (rng.random(n) < 0.08).astype(np.float64),
        "merchant_risk": rng.beta(2.0, 6.0, n),
    }


def _fraud_logit(w: Mapping[str, np.ndarray], *, fresh: bool) -> np.ndarray:
    """True log-odds of fraud; ``fresh=False`` is the older world v1 was trained on."""
    ring = (w["channel"] == 1) & (w["log_account_age_days"] < math.log1p(60)) & (w["tx_24h"] >= 4)
    takeover = (
        (w["new_device"] > 0) & (w["log_distance_km"] > math.log1p(500)) & (w["log_amount"] > 4.0)
    )
    night = w["hod"] < 6
    return (
        -7.6
        + 0.5 * (w["log_amount"] - 3.6)
        - 0.3 * (w["log_account_age_days"] - 5.5)
        + 0.8 * w["new_device"]
        + 3.0 * w["merchant_risk"]
        + 0.8 * night
        + _COUNTRY_EFFECT[w["country"]]
        + _CHANNEL_EFFECT[w["channel"]]
        + 0.25 * np.maximum(w["tx_24h"] - 3, 0)
        + (7.0 if fresh else 4.0) * ring
        + (6.0 if fresh else 5.0) * takeover
    )


def _matrix(w: Mapping[str, np.ndarray]) -> np.ndarray:
    """The model matrix (columns :data:`FEATURES`), float64, C order."""
    n = len(w["hod"])
    X = np.empty((n, len(FEATURES)))
    for j, name in enumerate(FEATURES[:6]):
        X[:, j] = w[name]
    angle = 2 * np.pi * w["hod"] / 24
    X[:, 6] = np.sin(angle)
    X[:, 7] = np.cos(angle)
    for k in range(len(CHANNELS)):
        X[:, 8 + k] = w["channel"] == k
    for k in range(len(COUNTRIES)):
        X[:, 8 + len(CHANNELS) + k] = w["country"] == k
    return X


def _labelled_sample(seed: int, stream: int, n: int, *, fresh: bool):
    """``n`` labelled requests at production hours of day: (X, y, world)."""
    rng = np.random.default_rng([seed, stream, 0])
    weights = _hour_weights(DEFAULT_START, 7).reshape(7, 24).sum(axis=0)
    hod = rng.choice(24, n, p=weights / weights.sum()) + rng.random(n)
    w = _draw(rng, n, hod)
    y = (rng.random(n) < expit(_fraud_logit(w, fresh=fresh))).astype(np.int8)
    return _matrix(w), y


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


class _ServingModel:
    """A fitted scikit-learn classifier behind a serving pipeline, as the router sees it.

    ``score_batch(X)`` returns ``expit(slope * logit(p) + intercept)`` of the estimator's
    ``predict_proba(X)[:, 1]`` after the pipeline's handling of missing features:
    ``impute="median"`` fills NaN with the training medians (v1); ``impute="zero"`` fills
    missing features with 0 and raises ``ValueError`` when ``log_account_age_days`` is
    missing (v2's new pipeline). ``score(x)`` scores one row with the same semantics.
    """

    __slots__ = ("clock", "estimator", "impute", "intercept", "medians", "name", "slope")

    def __init__(
        self,
        name: str,
        estimator: Any,
        *,
        impute: str,
        medians: np.ndarray,
        slope: float = 1.0,
        intercept: float = 0.0,
        clock: _SimulatedClock | None = None,
    ) -> None:
        self.name = name
        self.clock = clock
        self.estimator = estimator
        self.impute = impute
        self.medians = medians
        self.slope = slope
        self.intercept = intercept

    def _prepare(self, X: np.ndarray) -> np.ndarray:
        missing = np.isnan(X)
        if not missing.any():
            return X
        if self.impute == "median":
            return np.where(missing, self.medians, X)
        if missing[:, _COL_ACCOUNT_AGE].any():
            raise ValueError(f"{self.name}: feature 'account_age_days' is missing")
        X = X.copy()
        X[missing] = 0.0
        return X

    def raw_proba(self, X: np.ndarray) -> np.ndarray:
        """The estimator's fraud probability before recalibration (pipeline applied)."""
        if self.clock is not None:
            self.clock.charge(self.name, len(X))
        X = self._prepare(np.asarray(X, dtype=np.float64))
        if hasattr(self.estimator, "steps"):
            return _linear_proba(self.estimator, X)
        return self.estimator.predict_proba(X)[:, 1]

    def recalibrate(self, p: np.ndarray) -> np.ndarray:
        """The post-hoc monotone map applied to :meth:`raw_proba`."""
        if self.slope == 1.0 and self.intercept == 0.0:
            return p
        return expit(self.slope * logit(np.clip(p, 1e-12, 1 - 1e-12)) + self.intercept)

    def score_batch(self, X: np.ndarray) -> np.ndarray:
        return self.recalibrate(self.raw_proba(X))

    def score(self, x: np.ndarray) -> float:
        return float(self.score_batch(np.asarray(x, dtype=np.float64).reshape(1, -1))[0])

    def __repr__(self) -> str:
        return (
            f"_ServingModel(name={self.name!r}, estimator={type(self.estimator).__name__}, "
            f"impute={self.impute!r}, slope={self.slope}, intercept={self.intercept:.4f})"
        )


def _libm(fn: Any, x: np.ndarray) -> np.ndarray:
    """``fn`` (a :mod:`math` function) of every value of ``x``, through the C library.

    numpy dispatches its own AVX-512 kernels for float64 ``exp`` and ``log1p`` on CPUs that have
    them (the C library's elsewhere); they differ from the C library's in the last bit of some
    values, which changed the v1 scores of ~1 % of the sample week's pairs on an Intel Xeon
    against an AMD EPYC. :mod:`math` calls the C library on every CPU, which is what numpy
    gives without AVX-512, so the sample regenerates bit for bit on both. ~50 ns a value.
    """
    return np.fromiter(map(fn, np.ravel(x).tolist()), np.float64, x.size).reshape(x.shape)


def _round_params(a: np.ndarray) -> np.ndarray:
    """``a`` to 12 significant digits: a fit's last bits can differ between CPUs (BLAS)."""
    return np.array([float(f"{v:.12g}") for v in np.ravel(a)]).reshape(np.shape(a))


def _linear_proba(pipeline: Any, X: np.ndarray) -> np.ndarray:
    """``predict_proba(X)[:, 1]`` of the ``StandardScaler`` + ``LogisticRegression`` pipeline,
    summed feature by feature in a fixed order with elementwise IEEE operations: BLAS's
    ``X @ coef`` sums in an order that depends on the CPU's kernels, which changed the last bit
    of ~3/4 of the scores between two x86 machines (the sample week is regenerated bit for bit
    on any machine). Equal to ``predict_proba`` within ~1e-16."""
    scaler, lr = pipeline.steps[0][1], pipeline.steps[-1][1]
    z = np.full(len(X), float(lr.intercept_[0]))
    for j, c in enumerate(lr.coef_[0].tolist()):
        z += c * ((X[:, j] - scaler.mean_[j]) / scaler.scale_[j])
    return expit(z)


@functools.lru_cache(maxsize=4)
def _trained(seed: int) -> tuple[Any, Any, np.ndarray]:
    """Fit v1 (logistic regression, older data) and v2 (gradient boosting, fresh data)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X_old, y_old = _labelled_sample(seed, _STREAM_OLD, _TRAIN_ROWS, fresh=False)
    X_new, y_new = _labelled_sample(seed, _STREAM_FRESH, _TRAIN_ROWS, fresh=True)
    v1 = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X_old, y_old)
    scaler, lr = v1.steps[0][1], v1.steps[-1][1]
    for est, attr in ((scaler, "mean_"), (scaler, "scale_"), (lr, "coef_"), (lr, "intercept_")):
        setattr(est, attr, _round_params(getattr(est, attr)))
    # Small trees keep scoring of 10 M rows inside the time budget (depth-4 trees, 80 rounds).
    v2 = HistGradientBoostingClassifier(
        max_iter=80,
        max_leaf_nodes=15,
        max_depth=4,
        learning_rate=0.1,
        early_stopping=False,
        random_state=seed % 2**32,
    ).fit(X_new, y_new)
    return v1, v2, np.median(X_old, axis=0)


@dataclass(frozen=True, slots=True)
class _Models:
    primary: _ServingModel
    candidate: _ServingModel
    threshold: float
    reference_primary: np.ndarray
    reference_candidate: np.ndarray
    holdout_y: np.ndarray


@functools.lru_cache(maxsize=16)
def _calibration(seed: int, trigger_ratio: float, slope: float):
    """v1's threshold, v2's recalibration intercept and both models' holdout scores (cached)."""
    v1, v2, medians = _trained(seed)
    primary = _ServingModel(PRIMARY_ID, v1, impute="median", medians=medians)
    raw = _ServingModel(CANDIDATE_ID, v2, impute="zero", medians=medians)
    X_cal, _ = _labelled_sample(seed, _STREAM_CALIBRATION, _CALIBRATION_ROWS, fresh=True)
    s1 = primary.score_batch(X_cal)
    threshold = round(float(np.quantile(s1, 1 - _PRIMARY_FLAG_RATE)), 6)
    q1 = float(np.mean(s1 >= threshold))
    # v2 flags iff slope * logit(p) + b >= logit(threshold): put that cut at the quantile of
    # logit(p) that leaves trigger_ratio * q1 of the calibration sample above it.
    z2 = logit(np.clip(raw.raw_proba(X_cal), 1e-12, 1 - 1e-12))
    cut = float(np.quantile(z2, 1 - trigger_ratio * q1))
    intercept = float(logit(threshold)) - slope * cut
    candidate = _ServingModel(
        CANDIDATE_ID, v2, impute="zero", medians=medians, slope=slope, intercept=intercept
    )
    X_h, y_h = _labelled_sample(seed, _STREAM_HOLDOUT, _HOLDOUT_ROWS, fresh=True)
    ref_p, ref_c = primary.score_batch(X_h), candidate.score_batch(X_h)
    for arr in (ref_p, ref_c, y_h):
        arr.setflags(write=False)
    return threshold, intercept, ref_p, ref_c, y_h


def _models(seed: int, scenario: _Scenario, clock: _SimulatedClock | None = None) -> _Models:
    """Serving wrappers of v1 and v2 (charging ``clock``), v1's threshold, holdout scores."""
    v1, v2, medians = _trained(seed)
    threshold, intercept, ref_p, ref_c, y_h = _calibration(
        seed, scenario.trigger_ratio, scenario.slope
    )
    primary = _ServingModel(PRIMARY_ID, v1, impute="median", medians=medians, clock=clock)
    candidate = _ServingModel(
        CANDIDATE_ID,
        v2,
        impute="zero",
        medians=medians,
        slope=scenario.slope,
        intercept=intercept,
        clock=clock,
    )
    return _Models(primary, candidate, threshold, ref_p, ref_c, y_h)


# --------------------------------------------------------------------------------------------
# Simulated latency
# --------------------------------------------------------------------------------------------


class _SimulatedClock:
    """A deterministic clock for the router: time advances only when a model charges it.

    Each model call charges ``rows * per_row_ms[model]``; the simulation sets ``per_row_ms``
    for every hour (busier hours are slower), so the router's latency columns are
    reproducible instead of depending on the machine running the simulation.
    """

    __slots__ = ("now", "per_row_ms")

    def __init__(self) -> None:
        self.now = 0.0
        self.per_row_ms: dict[str, float] = {}

    def __call__(self) -> float:
        return self.now

    def charge(self, model: str, rows: int) -> None:
        self.now += rows * self.per_row_ms.get(model, 0.0) / 1e3


_BASE_LATENCY_MS: Final = {PRIMARY_ID: 0.4, CANDIDATE_ID: 1.3}


# --------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimulatedWeek:
    """What :func:`simulate_week` wrote, and the properties it measured on the way.

    Attributes
    ----------
    out_dir, pairs_dir, labels_dir, reference_path, truth_path, manifest_path : Path
    scenario : str
    seed, rows, days : int
    start, end, as_of : datetime
        The week is ``[start, end)``; labels arriving after ``as_of`` are not written.
    traffic_pct, audit_rate : float
        The router's candidate share and audit rate.
    primary_model, candidate_model : str
        Model ids in the logs.
    primary_threshold : float
        v1's production threshold (a request is flagged iff its served score >= it).
    primary_ap, candidate_ap : float
        Average precision of each model on the labelled holdout (``reference.parquet``).
    candidate_slope, candidate_intercept : float
        v2's post-hoc recalibration ``expit(slope * logit(p) + intercept)``.
    fraud_rate : float
        Share of the week's requests that are fraud (from the truth).
    primary_trigger_rate, candidate_trigger_rate : float
        Share of each model's successfully scored requests at or above ``primary_threshold``.
    candidate_errors : int
        Requests on which v2 raised (``broken`` only).
    labels : dict of str to int
        Labels written, by source (review, audit, chargeback).
    command : str
        The command line that regenerates the week (``OUT`` stands for the output folder).
    """

    out_dir: Path
    scenario: str
    seed: int
    rows: int
    days: int
    start: dt.datetime
    end: dt.datetime
    as_of: dt.datetime
    traffic_pct: float
    audit_rate: float
    primary_model: str
    candidate_model: str
    primary_threshold: float
    primary_ap: float
    candidate_ap: float
    candidate_slope: float
    candidate_intercept: float
    fraud_rate: float
    primary_trigger_rate: float
    candidate_trigger_rate: float
    candidate_errors: int
    labels: dict[str, int] = field(default_factory=dict)
    command: str = ""

    @property
    def pairs_dir(self) -> Path:
        return self.out_dir / "pairs"

    @property
    def labels_dir(self) -> Path:
        return self.out_dir / "labels"

    @property
    def reference_path(self) -> Path:
        return self.out_dir / "reference.parquet"

    @property
    def truth_path(self) -> Path:
        return self.out_dir / "truth.parquet"

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / "manifest.json"

    @property
    def trigger_ratio(self) -> float:
        """``candidate_trigger_rate / primary_trigger_rate`` (NaN if v1 flagged nothing)."""
        if self.primary_trigger_rate == 0:
            return math.nan
        return self.candidate_trigger_rate / self.primary_trigger_rate

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: paths and datetimes as strings."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, dt.datetime):
                value = _iso(value)
            elif isinstance(value, dict):
                value = dict(value)
            out[f.name] = _finite(value)
        out["trigger_ratio"] = _finite(self.trigger_ratio)
        return out

    def __repr__(self) -> str:
        return (
            f"SimulatedWeek(scenario={self.scenario!r}, rows={self.rows}, seed={self.seed}, "
            f"out_dir={str(self.out_dir)!r}, primary_threshold={self.primary_threshold:.4f}, "
            f"ap={self.primary_ap:.3f}->{self.candidate_ap:.3f}, "
            f"trigger_rate={self.primary_trigger_rate:.4f}->{self.candidate_trigger_rate:.4f} "
            f"(x{self.trigger_ratio:.2f}), fraud_rate={self.fraud_rate:.4f}, "
            f"labels={sum(self.labels.values())}, candidate_errors={self.candidate_errors})"
        )


def _finite(value: Any) -> Any:
    """NaN (e.g. a trigger ratio when v1 flagged nothing) becomes None: strict JSON."""
    return None if isinstance(value, float) and math.isnan(value) else value


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------------------------
# Simulation
# --------------------------------------------------------------------------------------------

_WEEK_FILES = ("pairs", "labels", "reference.parquet", "truth.parquet", "manifest.json")
_US_PER_HOUR = 3_600_000_000
_TRUTH_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("is_fraud", pa.int8()),
        ("fraud_prob", pa.float64()),
        ("feature_missing", pa.bool_()),
        ("drift", pa.float64()),
    ]
)


def _param_error(name: str, expected: str, value: Any) -> ValueError:
    return ValueError(
        f"The {name!r} parameter of simulate_week must be {expected}. Got {value!r} instead."
    )


def _simulate_iv(
    out_dir: Any,
    scenario: Any,
    rows: Any,
    seed: Any,
    traffic_pct: Any,
    audit_rate: Any,
    start: Any,
    days: Any,
    as_of: Any,
    chunk_rows: Any,
    overwrite: bool,
) -> tuple[Path, dt.datetime, dt.datetime]:
    if scenario not in _SCENARIOS:
        raise _param_error("scenario", f"a str among {set(SCENARIOS)}", scenario)
    for name, value, low in (("rows", rows, 1), ("days", days, 1), ("chunk_rows", chunk_rows, 1)):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low:
            raise _param_error(name, f"an int >= {low}", value)
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
        raise _param_error("seed", "an int >= 0", seed)
    for name, value in (("traffic_pct", traffic_pct), ("audit_rate", audit_rate)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or not 0 <= value <= 1
        ):
            raise _param_error(name, "a float in [0, 1]", value)
    if not isinstance(start, dt.datetime) or start.tzinfo is None:
        raise _param_error("start", "a timezone-aware datetime", start)
    start = start.astimezone(dt.UTC)
    end = start + dt.timedelta(days=int(days))
    if as_of is None:
        as_of = end + dt.timedelta(days=_AS_OF_DAYS)
    elif not isinstance(as_of, dt.datetime) or as_of.tzinfo is None or as_of < end:
        raise _param_error("as_of", "a timezone-aware datetime at or after the week's end", as_of)
    as_of = as_of.astimezone(dt.UTC)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"Output {str(out)!r} exists and is not a folder. Fix: pick a folder.")
    if out.is_dir():
        present = [name for name in _WEEK_FILES if (out / name).exists()]
        if present and not overwrite:
            raise ValueError(
                f"Output folder {str(out)!r} already holds a week ({', '.join(present)}). "
                "Fix: choose an empty folder or pass overwrite=True (--overwrite)."
            )
        for name in present:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()
    return out, as_of, end


def _command(
    scenario: str,
    rows: int,
    seed: int,
    traffic_pct: float,
    audit_rate: float,
    start: dt.datetime,
    days: int,
    as_of: dt.datetime,
    end: dt.datetime,
) -> str:
    parts = ["shadowlab simulate OUT", f"--scenario {scenario}", f"--rows {rows}", f"--seed {seed}"]
    if traffic_pct:
        parts.append(f"--traffic-pct {traffic_pct!r}")
    if audit_rate != 0.01:
        parts.append(f"--audit-rate {audit_rate!r}")
    if start != DEFAULT_START:
        parts.append(f"--start {_iso(start)}")
    if days != 7:
        parts.append(f"--days {days}")
    if as_of != end + dt.timedelta(days=_AS_OF_DAYS):
        parts.append(f"--as-of {_iso(as_of)}")
    return " ".join(parts)


def _lognormal_hours(rng: np.random.Generator, n: int, median_h: float, sigma: float, lo, hi):
    return np.clip(rng.lognormal(math.log(median_h), sigma, n), lo, hi)


def simulate_week(
    out_dir: str | os.PathLike[str],
    *,
    scenario: str = "trigger-shift",
    rows: int = 1_000_000,
    seed: int = 0,
    traffic_pct: float = 0.0,
    audit_rate: float = 0.01,
    start: dt.datetime = DEFAULT_START,
    days: int = 7,
    as_of: dt.datetime | None = None,
    chunk_rows: int = 1_000_000,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SimulatedWeek:
    """Write a synthetic shadow week (pair logs, labels, reference, truth, manifest).

    Requests go through the real :class:`shadowlab.router.CanaryRouter` (one
    ``predict_batch`` per hour of traffic) into the real :class:`shadowlab.logs.PairLogWriter`.
    See the module docstring for the world, the models, the scenarios and the labels.

    Parameters
    ----------
    out_dir : path
        Output folder (created). It must not already hold a week unless ``overwrite``.
    scenario : {'trigger-shift', 'benign', 'broken', 'drift'}, default 'trigger-shift'
    rows : int >= 1, default 1_000_000
        Requests in the week (spread over the hours by the volume shape).
    seed : int >= 0, default 0
        Seeds every random choice: traffic, truth, training data, label delays, router salt.
    traffic_pct : float in [0, 1], default 0.0
        The router's candidate share (0 = pure shadow).
    audit_rate : float in [0, 1], default 0.01
        The router's audit slice.
    start : timezone-aware datetime, default :data:`DEFAULT_START` (Monday 2026-11-02 UTC)
    days : int >= 1, default 7
    as_of : timezone-aware datetime or None, default None
        Labels arriving later are not written; ``None`` means the week's end plus 3 days.
    chunk_rows : int >= 1, default 1_000_000
        Rows buffered before the pair writer and the truth file flush (memory bound). The
        content does not depend on it; the number of pair files does.
    overwrite : bool, default False
        Replace a week already in ``out_dir`` (only the files a week consists of are removed).
    progress : callable(done_rows, total_rows) or None
        Called after every simulated hour.

    Returns
    -------
    SimulatedWeek
        Paths, v1's production threshold, model ids, holdout AP of both models and the
        measured trigger rates, fraud rate, label counts and candidate errors.

    Examples
    --------
    >>> week = simulate_week("out/week", scenario="trigger-shift", rows=50_000)  # doctest: +SKIP
    >>> round(week.trigger_ratio, 1)                                            # doctest: +SKIP
    2.0
    """
    from sklearn.metrics import average_precision_score
    from threadpoolctl import threadpool_limits

    from shadowlab.logs import PairLogWriter
    from shadowlab.router import CanaryRouter

    out, as_of, end = _simulate_iv(
        out_dir, scenario, rows, seed, traffic_pct, audit_rate, start, days, as_of,
        chunk_rows, overwrite,
    )  # fmt: skip
    start = start.astimezone(dt.UTC)
    rows, seed, days = int(rows), int(seed), int(days)
    spec = _SCENARIOS[scenario]
    out.mkdir(parents=True, exist_ok=True)

    # One thread for the models: scikit-learn's gradient-boosting predictor synchronises its
    # OpenMP threads once per tree, which is slower than one thread on a shared 2-core machine
    # (measured: 4-50x) and makes the run time erratic.
    with threadpool_limits(limits=1):
        clock = _SimulatedClock()
        models = _models(seed, spec, clock)
        threshold = models.threshold
        ref_primary, ref_candidate = models.reference_primary, models.reference_candidate
        primary_ap = float(average_precision_score(models.holdout_y, ref_primary))
        candidate_ap = float(average_precision_score(models.holdout_y, ref_candidate))
        _write_reference(out / "reference.parquet", ref_primary, ref_candidate, models.holdout_y)

        weights = _hour_weights(start, days, seed)
        counts = _allocate(rows, weights)
        load = weights / weights.max()
        start_us = int(start.timestamp()) * 1_000_000 + start.microsecond
        as_of_us = int(as_of.timestamp()) * 1_000_000 + as_of.microsecond
        start_hod = start.hour + start.minute / 60 + start.second / 3600
        drift_from_h = days * 24 / 2
        countries = pl.Series("country", COUNTRIES, dtype=pl.String)
        channels = pl.Series("channel", CHANNELS, dtype=pl.String)

        tally = dict.fromkeys(
            ("fraud", "p_ok", "p_flag", "c_ok", "c_flag", "c_err", "review", "audit", "chargeback"),
            0,
        )
        label_parts: list[pl.DataFrame] = []
        truth_parts: list[pa.Table] = []
        truth_buffered = 0
        done = 0
        (out / "labels").mkdir(exist_ok=True)
        truth_tmp = out / ".truth.parquet.tmp"
        with (
            PairLogWriter(
                out / "pairs", max_rows=chunk_rows, max_seconds=1e9, writer_id=f"synth{seed}"
            ) as log,
            pq.ParquetWriter(truth_tmp, _TRUTH_SCHEMA, compression="zstd") as truth_writer,
        ):
            router = CanaryRouter(
                models.primary,
                models.candidate,
                traffic_pct,
                log=log,
                salt=f"shadowlab-synth-{seed}",
                audit_rate=audit_rate,
                on_served_failure="fallback",
                clock=clock,
            )
            for hour, n in enumerate(counts.tolist()):
                if n == 0:
                    continue
                rng = np.random.default_rng([seed, _STREAM_TRAFFIC, hour])
                offset = np.sort(rng.integers(0, _US_PER_HOUR, n))
                hod = (start_hod + hour + offset / _US_PER_HOUR) % 24
                shift = 0.0
                if spec.drift:
                    shift = float(np.clip((hour + 0.5 - drift_from_h) / _DRIFT_RAMP_H, 0.0, 1.0))
                w = _draw(rng, n, hod, shift)
                fraud_prob = expit(_fraud_logit(w, fresh=True))
                is_fraud = rng.random(n) < fraud_prob
                u_chargeback = rng.random(n)
                u_raise = rng.random(n)
                review_h = _lognormal_hours(rng, n, 6.0, 0.8, 0.5, 72.0)
                audit_h = _lognormal_hours(rng, n, 24.0, 0.6, 1.0, 240.0)
                chargeback_h = 24 * _lognormal_hours(rng, n, 7.0, 0.6, 1.0, 60.0)
                jitter = rng.lognormal(0.0, 0.1, 2)

                X = _matrix(w)
                missing = np.zeros(n, dtype=bool)
                if spec.broken and _BROKEN_WINDOW_H[0] <= hour < _BROKEN_WINDOW_H[1]:
                    missing = w["country"] == COUNTRIES.index(_BROKEN_COUNTRY)
                    X[np.ix_(missing, _COLS_ENRICHMENT)] = np.nan
                    X[missing & (u_raise < _BROKEN_RAISE_SHARE), _COL_ACCOUNT_AGE] = np.nan
                raises = np.isnan(X[:, _COL_ACCOUNT_AGE])

                first = done
                ids = [f"tx{seed}-{i:09d}" for i in range(first, first + n)]
                ts_us = start_us + hour * _US_PER_HOUR + offset
                slow = 1.0 + 0.6 * load[hour]
                clock.per_row_ms = {
                    PRIMARY_ID: _BASE_LATENCY_MS[PRIMARY_ID] * slow * jitter[0],
                    CANDIDATE_ID: _BASE_LATENCY_MS[CANDIDATE_ID] * slow * jitter[1],
                }
                # A batch in which v2 raises is re-scored row by row by the router; keep those rows
                # in their own batch so the healthy majority stays vectorised.
                served_score = np.empty(n)
                audit = np.empty(n, dtype=bool)
                for part in (np.flatnonzero(~raises), np.flatnonzero(raises)):
                    if part.size == 0:
                        continue
                    whole = part.size == n
                    res = router.predict_batch(
                        X if whole else X[part],
                        ids if whole else [ids[i] for i in part],
                        pl.Series(ts_us if whole else ts_us[part]).cast(pl.Datetime("us", "UTC")),
                        context={
                            "country": countries.gather(
                                w["country"] if whole else w["country"][part]
                            ),
                            "channel": channels.gather(
                                w["channel"] if whole else w["channel"][part]
                            ),
                        },
                    )
                    served_score[part] = res.scores
                    audit[part] = res.audit
                    p, c = res.primary_scores, res.candidate_scores
                    tally["p_ok"] += int(np.isfinite(p).sum())
                    tally["p_flag"] += int((p >= threshold).sum())
                    tally["c_ok"] += int(np.isfinite(c).sum())
                    tally["c_flag"] += int((c >= threshold).sum())
                    tally["c_err"] += int(np.isnan(c).sum())
                tally["fraud"] += int(is_fraud.sum())

                flagged = served_score >= threshold
                chargeback = ~flagged & ~audit & is_fraud & (u_chargeback < _CHARGEBACK_SHARE)
                reviewed = flagged & ~audit
                delay_h = np.where(audit, audit_h, np.where(reviewed, review_h, chargeback_h))
                label_us = ts_us + np.round(delay_h * _US_PER_HOUR).astype(np.int64)
                keep = (audit | reviewed | chargeback) & (label_us <= as_of_us)
                if keep.any():
                    idx = np.flatnonzero(keep)
                    source = np.where(
                        audit[idx], "audit", np.where(reviewed[idx], "review", "chargeback")
                    )
                    label_parts.append(
                        pl.DataFrame(
                            {
                                S.REQUEST_ID: [ids[i] for i in idx],
                                S.LABEL: is_fraud[idx].astype(np.int8),
                                S.LABEL_TS: pl.Series(label_us[idx]).cast(pl.Datetime("us", "UTC")),
                                S.SOURCE: source,
                            }
                        )
                    )
                    for name in ("review", "audit", "chargeback"):
                        tally[name] += int((source == name).sum())

                truth_parts.append(
                    pa.table(
                        {
                            "request_id": pa.array(ids, pa.string()),
                            "is_fraud": pa.array(is_fraud.astype(np.int8)),
                            "fraud_prob": pa.array(fraud_prob),
                            "feature_missing": pa.array(missing),
                            "drift": pa.array(np.full(n, shift)),
                        },
                        schema=_TRUTH_SCHEMA,
                    )
                )
                truth_buffered += n
                done += n
                if truth_buffered >= chunk_rows:
                    truth_writer.write_table(
                        pa.concat_tables(truth_parts), row_group_size=chunk_rows
                    )
                    truth_parts, truth_buffered = [], 0
                if progress is not None:
                    progress(done, rows)
            if truth_parts:
                truth_writer.write_table(pa.concat_tables(truth_parts), row_group_size=chunk_rows)
        if log.rows_dropped or router.stats().log_failures:
            raise RuntimeError(
                f"The pair writer lost rows ({router.stats().last_log_error}); the week in "
                f"{str(out)!r} is incomplete."
            )
        os.replace(truth_tmp, out / "truth.parquet")
        _write_labels(out / "labels", label_parts)

        command = _command(scenario, rows, seed, traffic_pct, audit_rate, start, days, as_of, end)
        week = SimulatedWeek(
            out_dir=out,
            scenario=scenario,
            seed=seed,
            rows=rows,
            days=days,
            start=start,
            end=end,
            as_of=as_of,
            traffic_pct=float(traffic_pct),
            audit_rate=float(audit_rate),
            primary_model=PRIMARY_ID,
            candidate_model=CANDIDATE_ID,
            primary_threshold=threshold,
            primary_ap=primary_ap,
            candidate_ap=candidate_ap,
            candidate_slope=models.candidate.slope,
            candidate_intercept=models.candidate.intercept,
            fraud_rate=tally["fraud"] / rows,
            primary_trigger_rate=tally["p_flag"] / tally["p_ok"] if tally["p_ok"] else math.nan,
            candidate_trigger_rate=tally["c_flag"] / tally["c_ok"] if tally["c_ok"] else math.nan,
            candidate_errors=tally["c_err"],
            labels={k: tally[k] for k in ("review", "audit", "chargeback")},
            command=command,
        )
        _write_manifest(week)
        return week


def _write_reference(path: Path, primary: np.ndarray, candidate: np.ndarray, y: np.ndarray):
    n = len(y)
    table = pa.table(
        {
            "model": pa.array([S.PRIMARY] * n + [S.CANDIDATE] * n, pa.string()),
            "score": pa.array(np.concatenate([primary, candidate]), pa.float64()),
            S.LABEL: pa.array(np.concatenate([y, y]).astype(np.int8), pa.int8()),
        }
    )
    from shadowlab.logs import parquet_write_options

    pq.write_table(table, path, **parquet_write_options(table.schema))


def _write_labels(folder: Path, parts: list[pl.DataFrame]) -> None:
    """One file per arrival day, sorted by arrival time then request id."""
    schema = S.arrow_label_schema()
    if not parts:
        return
    labels = pl.concat(parts).sort(S.LABEL_TS, S.REQUEST_ID)
    day = labels[S.LABEL_TS].dt.date()
    for (d,), frame in (
        labels.with_columns(day.alias("__day"))
        .partition_by("__day", as_dict=True, maintain_order=True)
        .items()
    ):
        table = frame.drop("__day").to_arrow().cast(schema)
        pq.write_table(table, folder / f"labels-{d.isoformat()}.parquet", compression="zstd")


def _write_manifest(week: SimulatedWeek) -> None:
    body = {
        "generator": "shadowlab.synth",
        "generator_version": GENERATOR_VERSION,
        "scenario": week.scenario,
        "seed": week.seed,
        "rows": week.rows,
        "days": week.days,
        "start": _iso(week.start),
        "end": _iso(week.end),
        "as_of": _iso(week.as_of),
        "traffic_pct": week.traffic_pct,
        "audit_rate": week.audit_rate,
        "primary_model": week.primary_model,
        "candidate_model": week.candidate_model,
        "primary_threshold": week.primary_threshold,
        "holdout_ap": {S.PRIMARY: week.primary_ap, S.CANDIDATE: week.candidate_ap},
        "candidate_recalibration": {
            "formula": "expit(slope * logit(p) + intercept)",
            "slope": week.candidate_slope,
            "intercept": week.candidate_intercept,
        },
        "measured": {
            "fraud_rate": _finite(week.fraud_rate),
            "primary_trigger_rate": _finite(week.primary_trigger_rate),
            "candidate_trigger_rate": _finite(week.candidate_trigger_rate),
            "trigger_ratio": _finite(week.trigger_ratio),
            "candidate_errors": week.candidate_errors,
            "labels": week.labels,
        },
        "files": {
            "pairs": "pairs",
            "labels": "labels",
            "reference": "reference.parquet",
            "truth": "truth.parquet",
        },
        "context_columns": ["country", "channel"],
        "command": week.command,
    }
    text = json.dumps(body, indent=2, allow_nan=False) + "\n"
    week.manifest_path.write_text(text, encoding="utf-8")


def read_manifest(week_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a simulated week (``week_dir/manifest.json``) as a dict.

    Raises
    ------
    FileNotFoundError
        ``week_dir`` holds no ``manifest.json``; the message names the path and the fix.
    """
    path = Path(week_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"No manifest.json in {str(Path(week_dir))!r}. Fix: point at the folder written by "
            "`shadowlab simulate` (it holds pairs/, labels/ and manifest.json)."
        )
    return json.loads(path.read_text(encoding="utf-8"))
