"""Downstream load: replay a logged week of triggers into the review queue under each policy.

A model lives inside a system tuned to the old model: a review queue, its staffing and its SLA.
:func:`simulate_load` turns the logged requests into review arrivals under each decision policy
(``{"v1": ("primary", t1), "v2 naive": ("candidate", t1), "v2 calibrated": ("candidate", t2)}``)
and replays them against the reviewers, so the shadow week shows what v2 does to the people
behind it before canary.

Passes over the pairs (issue 11)
--------------------------------
**One** :class:`~shadowlab.engine.Aggregation` pass: per interval (default 5 minutes, keyed by
``floor(epoch_us / interval_us)``) it counts the logged rows, each policy's arrivals and each
policy's null scores, for every policy at once. The partial summary is a few thousand rows per
week whatever the number of pairs and merges by summing, so the same code runs on polars and on
Spark. Everything after it (the queue) runs locally on those small series. Measured with
``benchmarks/bench_load.py`` (fluid mode, three policies, default staffing, 2 shared cores under
load): 10 M logged rows in about 4 s (2.6 s of it the aggregation pass), 50 M rows in about 16 s
(11.6 s the pass; the local finish, including the staffing solve over 2 M review items per
policy, about 4 s).

Decision rules
--------------
* A request triggers a review under policy ``(model, t)`` when ``score(model) >= t`` (the same
  ``>=`` convention as the threshold module), or ``> t`` with ``inclusive=False``.
* Audit-slice rows (``audit`` true) arrive whatever the model says.
* A null score on the policy's model (the model errored) falls back to the **baseline** policy's
  decision, i.e. what the served fallback (v1) would have done; a null score on the baseline
  policy's own model does not trigger (nothing could be decided). Rows decided by the fallback are
  counted in the summary's ``null_scores`` column.

Arrival times inside an interval
--------------------------------
Only counts per interval leave the aggregation pass. The fluid mode spreads interval ``j``'s
``n_j`` arrivals evenly over it (item ``k`` at ``T_j + k*dt/n_j``), which is exactly the
piecewise-linear cumulative arrival curve; the stochastic mode draws them uniformly at random
within the interval (seeded), which for Poisson arrivals is the exact conditional law given the
count [3]_. The interval bounds the timing error of either mode (5 minutes by default); pass a
finer ``interval`` (down to ``"1s"``) for second resolution at the price of a larger summary.

Modes
-----
``"fluid"``
    Deterministic. Work (reviewer-minutes) arrives along the cumulative curve ``A(t)`` and the
    reviewers offer ``C(t) = ∫ reviewers(s) ds``. The fluid queue's cumulative departures are
    ``D(t) = C(t) + min_{s<=t} (A - C)(s)`` (the reflection map [2]_), piecewise linear with
    breakpoints at interval and hour boundaries plus one crossing per segment, computed exactly
    and vectorised. An item's FIFO wait is the horizontal distance from its arrival on ``A`` to
    the time ``D`` reaches the work queued ahead of it (``numpy.searchsorted`` + interpolation);
    backlog is ``(A - D) / mean_service``. Randomness of service times is ignored, so fluid waits
    are zero whenever capacity keeps up and grow linearly under overload.
``"stochastic"``
    A FIFO multi-server queue with random service times (gamma with shape ``1/cv**2`` and the
    given mean: exponential at ``cv=1``; ``cv=0`` is deterministic), run for ``n_seeds`` seeds
    with common random numbers per seed. Each arrival, in order, is taken by the reviewer who can
    start it earliest (the Kiefer–Wolfowitz recursion [4]_), so starts are in arrival order. With
    constant staffing this is a heap of ``c`` free-times (``heapq``); with an hour-of-week
    schedule it is two heaps (reviewers ahead by next possible start; available ones by index).
    **Shift rule:** reviewer ``k`` is on duty in hour ``h`` when ``k < reviewers[h]``; a
    reviewer whose shift ends mid-review finishes that review (non-preemptive overtime) and
    starts no new one until back on duty.
    Arrivals are review items (thousands to a few hundred thousand a week, not the millions of
    logged requests), so a Python loop per arrival is affordable. Measured with
    ``benchmarks/bench_load.py`` on 200 000 M/M/3 arrivals (2 shared cores): about 0.5-0.8 µs
    per arrival with the heap, about 2 µs with a schedule (two heaps, see
    :func:`_fifo_schedule`), and about 35 µs with a textbook SimPy [5]_ process model
    (``simpy.Resource``) on the same arrivals and service times, whose waits agree with ours
    to the last bit. We therefore use our own recursion: 40-70x faster than SimPy, no run-time
    dependency, and schedules with the shift rule above are a few lines (Ciw [6]_ was not
    measured: its per-event object model is of the same kind as SimPy's). A week of 400 000
    review items per policy, 3 policies and 4 seeds takes about 45 s including the staffing
    solve (about 3.5 s in fluid mode). Summary figures are means over the seeds; the band
    columns ``*_lo`` / ``*_hi`` are the minimum and maximum across seeds.

Staffing
--------
:class:`ReviewCapacity` takes a constant number of reviewers or a 168-value schedule by hour of
week (index 0 = Monday 00:00-01:00 UTC). With ``reviewers=None`` (the default, also used when
``capacity`` is None) the staffing is sized from the data: the smallest constant number of
reviewers at which the baseline policy's offered load is at most ``target_utilisation`` (85 %) of
the capacity over the logged window — the team's real world was tuned to v1. The report states
which was used (``report.capacity_note``).

``reviewers_needed`` solves, per policy, for the smallest constant staffing (or, for a schedule,
the smallest multiple ``k/20`` of the schedule, rounded up per hour) at which the policy's SLA
breach share and p95 wait are no worse than the baseline's under the given capacity, by doubling
then bisection (waits are monotone in capacity; the stochastic mode uses the same seeds for
every candidate staffing).

The SLA is on time to decision: wait plus service (fluid: wait plus mean service).

References
----------
.. [1] Kleinrock, L. (1975). *Queueing Systems, Volume 1: Theory*. Wiley, §3.5 (M/M/m, Erlang C).
.. [2] Chen, H. and Yao, D. D. (2001). *Fundamentals of Queueing Networks*. Springer, ch. 6
       (the one-dimensional reflection mapping).
.. [3] Ross, S. M. (2014). *Introduction to Probability Models*, 11th ed., Theorem 5.2 (arrival
       times of a Poisson process given their number are uniform order statistics).
.. [4] Kiefer, J. and Wolfowitz, J. (1955). On the theory of queues with many servers.
       *Trans. Amer. Math. Soc.* 78, 1-18.
.. [5] SimPy, discrete-event simulation for Python. https://simpy.readthedocs.io/
.. [6] Palmer, G. I. et al. (2019). Ciw: an open-source discrete event simulation library.
       *Journal of Simulation* 13(1), 68-82.
.. [7] Gross, D., Shortle, J. F., Thompson, J. M. and Harris, C. M. (2008). *Fundamentals of
       Queueing Theory*, 4th ed. Wiley, §2.3 (M/M/c).
"""

from __future__ import annotations

import datetime as dt
import difflib
import heapq
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl

from shadowlab import schema as S
from shadowlab.engine import Aggregation, as_source, grouped_sums

__all__ = [
    "LoadReport",
    "ReviewCapacity",
    "erlang_c",
    "load_aggregation",
    "simulate_load",
]

HOURS_PER_WEEK = 168
_MONDAY_OFFSET_HOURS = 72  # 1970-01-01 was a Thursday: epoch hour 0 is hour 72 of its week
_EPS_MIN = 1e-9  # minutes; fluid waits below this are float noise, reported as 0
_MAX_DRAIN_WEEKS = 520  # the fluid horizon stops 10 years after the data; later = never drains
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_BAND_METRICS = (
    "mean_wait_minutes",
    "p95_wait_minutes",
    "prob_wait",
    "sla_breach_share",
    "peak_backlog",
)


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReviewCapacity:
    """The review team: how many reviewers are on duty and how long a review takes.

    Parameters
    ----------
    reviewers : int, sequence of 168 ints, or None
        Constant number of reviewers, or a schedule by hour of week (index 0 = Monday
        00:00-01:00 UTC, 167 = Sunday 23:00-24:00 UTC). None sizes a constant staffing from the
        data so that the baseline policy runs at ``target_utilisation``.
    mean_service_minutes : float
        Mean time one reviewer spends on one review, > 0.
    service_cv : float
        Coefficient of variation of service times (stochastic mode): gamma with shape
        ``1/cv**2`` (exponential at 1), deterministic at 0.
    target_utilisation : float
        Used only when ``reviewers`` is None: offered load of the baseline policy that the
        sized staffing must not exceed, in (0, 1].
    """

    reviewers: int | tuple[int, ...] | None = None
    mean_service_minutes: float = 10.0
    service_cv: float = 1.0
    target_utilisation: float = 0.85

    def __post_init__(self) -> None:
        r = self.reviewers
        if r is not None and not isinstance(r, int | np.integer):
            try:
                values = tuple(int(v) for v in r)
                ok = len(values) == HOURS_PER_WEEK and all(
                    float(v) == float(w) for v, w in zip(values, r, strict=True)
                )
            except (TypeError, ValueError):
                ok = False
            if not ok or min(values) < 0:
                raise ValueError(
                    "The 'reviewers' parameter of ReviewCapacity must be an int >= 0, a sequence "
                    f"of 168 ints >= 0 (hour of week, Monday 00:00 UTC first) or None. Got {r!r} "
                    "instead."
                )
            object.__setattr__(self, "reviewers", values)
        elif r is not None:
            if int(r) < 0:
                raise ValueError(
                    "The 'reviewers' parameter of ReviewCapacity must be an int >= 0, a sequence "
                    f"of 168 ints >= 0 (hour of week, Monday 00:00 UTC first) or None. Got {r!r} "
                    "instead."
                )
            object.__setattr__(self, "reviewers", int(r))
        m = self.mean_service_minutes
        if not (isinstance(m, int | float) and math.isfinite(m) and m > 0):
            raise ValueError(
                "The 'mean_service_minutes' parameter of ReviewCapacity must be a float > 0. "
                f"Got {m!r} instead."
            )
        cv = self.service_cv
        if not (isinstance(cv, int | float) and math.isfinite(cv) and cv >= 0):
            raise ValueError(
                "The 'service_cv' parameter of ReviewCapacity must be a float >= 0. "
                f"Got {cv!r} instead."
            )
        u = self.target_utilisation
        if not (isinstance(u, int | float) and 0 < u <= 1):
            raise ValueError(
                "The 'target_utilisation' parameter of ReviewCapacity must be a float in (0, 1]. "
                f"Got {u!r} instead."
            )

    @property
    def schedule(self) -> np.ndarray:
        """Reviewers on duty per hour of week (168 ints); raises if ``reviewers`` is None."""
        if self.reviewers is None:
            raise ValueError("ReviewCapacity(reviewers=None) has no schedule until it is sized.")
        if isinstance(self.reviewers, int):
            return np.full(HOURS_PER_WEEK, self.reviewers, dtype=np.int64)
        return np.asarray(self.reviewers, dtype=np.int64)

    @property
    def is_constant(self) -> bool:
        """True when the same number of reviewers is on duty every hour."""
        return isinstance(self.reviewers, int)

    def scaled(self, factor: float) -> ReviewCapacity:
        """The same team with every hour's reviewers multiplied by ``factor``, rounded up."""
        sched = np.ceil(self.schedule * factor - 1e-9).astype(np.int64)
        reviewers: int | tuple[int, ...] = (
            int(sched[0]) if self.is_constant else tuple(int(v) for v in sched)
        )
        return ReviewCapacity(
            reviewers, self.mean_service_minutes, self.service_cv, self.target_utilisation
        )

    def with_reviewers(self, reviewers: int | tuple[int, ...]) -> ReviewCapacity:
        """A copy with another staffing."""
        return ReviewCapacity(
            reviewers, self.mean_service_minutes, self.service_cv, self.target_utilisation
        )

    def __repr__(self) -> str:
        r = self.reviewers
        if isinstance(r, tuple):
            r_txt = f"<schedule {min(r)}-{max(r)}, mean {np.mean(r):.1f}>"
        else:
            r_txt = repr(r)
        return (
            f"ReviewCapacity(reviewers={r_txt}, mean_service_minutes={self.mean_service_minutes:g}"
            f", service_cv={self.service_cv:g})"
        )

    def to_dict(self) -> dict[str, Any]:
        r = self.reviewers
        return {
            "reviewers": list(r) if isinstance(r, tuple) else r,
            "mean_service_minutes": float(self.mean_service_minutes),
            "service_cv": float(self.service_cv),
            "target_utilisation": float(self.target_utilisation),
        }


def _duration_seconds(value: Any, name: str) -> float:
    """Parse ``"5m"``, ``"1h30m"``, ``"4h"``, ``"1d"`` or a timedelta into seconds (> 0)."""
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str) and re.fullmatch(r"(\d+(\.\d+)?[smhdw])+", value.strip()):
        seconds = sum(
            float(n) * _UNITS[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)([smhdw])", value)
        )
    else:
        seconds = float("nan")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(
            f"The '{name}' parameter of simulate_load must be a positive duration such as '5m', "
            f"'4h', '1h30m' or a datetime.timedelta. Got {value!r} instead."
        )
    return seconds


def _check_policies(policies: Any) -> dict[str, tuple[str, float]]:
    msg = (
        "The 'policies' parameter of simulate_load must be a non-empty mapping of name to "
        "(model, threshold) with model in {'primary', 'candidate'} and a finite threshold"
    )
    if not isinstance(policies, Mapping) or not policies:
        raise ValueError(f"{msg}. Got {policies!r} instead.")
    out: dict[str, tuple[str, float]] = {}
    for name, rule in policies.items():
        try:
            model, threshold = rule
            threshold = float(threshold)
        except (TypeError, ValueError):
            raise ValueError(f"{msg}. Got {name!r}: {rule!r} instead.") from None
        if model not in (S.PRIMARY, S.CANDIDATE) or not math.isfinite(threshold):
            raise ValueError(f"{msg}. Got {name!r}: {rule!r} instead.")
        out[str(name)] = (model, threshold)
    return out


# --------------------------------------------------------------------------------------------
# Queueing theory reference
# --------------------------------------------------------------------------------------------


def erlang_c(arrival_rate: float, mean_service: float, servers: int) -> tuple[float, float]:
    """Probability of waiting and mean wait in an M/M/c queue (Erlang C).

    Parameters
    ----------
    arrival_rate : float
        Poisson arrival rate λ (per unit of time).
    mean_service : float
        Mean exponential service time 1/μ (same unit of time).
    servers : int
        Number of servers c; the queue must be stable, ``λ/μ < c``.

    Returns
    -------
    prob_wait, mean_wait : float
        ``C(c, a)`` with offered load ``a = λ/μ``, and ``W_q = C(c, a) / (c μ - λ)``.

    Notes
    -----
    Erlang B from Poisson probabilities, ``B = pmf(c; a) / cdf(c; a)``, then
    ``C = B / (1 - (a/c)(1 - B))`` [1]_ [7]_ (numerically stable for large c).
    """
    for name, value in (("arrival_rate", arrival_rate), ("mean_service", mean_service)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(
                f"The '{name}' parameter of erlang_c must be a float > 0. Got {value!r} instead."
            )
    a = arrival_rate * mean_service
    if isinstance(servers, bool) or not isinstance(servers, int | np.integer) or servers <= a:
        raise ValueError(
            "The 'servers' parameter of erlang_c must be an int above the offered load "
            f"arrival_rate * mean_service = {a:g} (a stable queue). Got {servers!r} instead."
        )
    from scipy import stats  # here, not at import: scipy.stats costs ~0.5 s to import

    b = stats.poisson.pmf(servers, a) / stats.poisson.cdf(servers, a)
    c = b / (1.0 - (a / servers) * (1.0 - b))
    return float(c), float(c * mean_service / (servers - a))


# --------------------------------------------------------------------------------------------
# The aggregation pass
# --------------------------------------------------------------------------------------------


def load_aggregation(
    policies: Mapping[str, tuple[str, float]],
    *,
    interval: str | dt.timedelta = "5m",
    baseline: str | None = None,
    inclusive: bool = True,
) -> Aggregation:
    """The one pass :func:`simulate_load` makes: per-interval row, arrival and null counts.

    Output columns: ``interval`` (``floor(epoch_us / interval_us)``, key), ``rows``, and per
    policy ``i`` (in the mapping's order) ``arrivals_i`` and ``null_i`` (rows whose policy
    score is null and not audited, decided by ``baseline``'s rule); all merge by sum. The
    partial summary has one row per non-empty interval: about 2 000 rows a week at 5 minutes,
    whatever the number of pairs.
    """
    pol = _check_policies(policies)
    interval_us = round(_duration_seconds(interval, "interval") * 1e6)
    base = next(iter(pol)) if baseline is None else baseline
    if base not in pol:
        raise ValueError(
            "The 'baseline' parameter of simulate_load must name one of the policies "
            f"{list(pol)}. Got {baseline!r} instead."
        )
    base_model, base_t = pol[base]
    audit = pl.col(S.AUDIT).fill_null(False)
    if not isinstance(inclusive, bool):
        raise ValueError(
            f"The 'inclusive' parameter of simulate_load must be a bool. Got {inclusive!r} instead."
        )

    def hit(score: pl.Expr, t: float) -> pl.Expr:
        return score >= t if inclusive else score > t

    base_flag = hit(pl.col(S.score_column(base_model)), base_t).fill_null(False)
    sums: dict[str, pl.Expr | None] = {"rows": None}
    for i, (model, t) in enumerate(pol.values()):
        score = pl.col(S.score_column(model))
        flag = audit | pl.when(score.is_null()).then(base_flag).otherwise(hit(score, t))
        sums[f"arrivals_{i}"] = flag.cast(pl.Int64)
        sums[f"null_{i}"] = (score.is_null() & ~audit).cast(pl.Int64)
    # declarative (grouped_sums), so a caller can compute it in one read with other sums
    return grouped_sums(
        {"interval": pl.col(S.TS).dt.epoch("us") // interval_us},
        sums,
        where=pl.col(S.TS).is_not_null(),
    )


# --------------------------------------------------------------------------------------------
# Capacity curves
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Clock:
    """Maps minutes since the first interval start to hours of week and cumulative capacity."""

    t0_seconds: float  # epoch seconds of minute 0
    schedule: np.ndarray  # 168 reviewers per hour of week

    def hour_index(self, minutes: np.ndarray | float) -> np.ndarray:
        """Absolute epoch hour of the given minutes."""
        return np.floor((self.t0_seconds + np.asarray(minutes) * 60.0) / 3600.0).astype(np.int64)

    def hour_start_minutes(self, hours: np.ndarray) -> np.ndarray:
        return (hours * 3600.0 - self.t0_seconds) / 60.0

    def rate(self, hours: np.ndarray) -> np.ndarray:
        """Reviewers on duty during absolute epoch hours ``hours``."""
        return self.schedule[(hours + _MONDAY_OFFSET_HOURS) % HOURS_PER_WEEK]

    def hour_grid(self, end_minutes: float) -> tuple[np.ndarray, np.ndarray]:
        """Hour boundaries (minutes) covering [0, end] and cumulative capacity (reviewer-min)."""
        h0 = int(self.hour_index(0.0))
        h1 = int(self.hour_index(end_minutes)) + 1
        hours = np.arange(h0, h1 + 1, dtype=np.int64)
        bounds = self.hour_start_minutes(hours)
        cum = np.concatenate([[0.0], np.cumsum(self.rate(hours[:-1]) * 60.0)])
        cum -= np.interp(0.0, bounds, cum)
        return bounds, cum


# --------------------------------------------------------------------------------------------
# One replay of one policy
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Run:
    arrival: np.ndarray  # minutes, sorted
    wait: np.ndarray  # minutes (inf = never served)
    sojourn: np.ndarray  # minutes
    work: float  # reviewer-minutes arrived
    backlog_times: np.ndarray  # fluid: vertices of Q; stochastic: unused
    backlog_values: np.ndarray
    start: np.ndarray | None  # stochastic: sorted start times
    peak_backlog: float
    peak_time: float
    time_to_drain: float


def _empty_run() -> _Run:
    e = np.empty(0)
    return _Run(e, e, e, 0.0, np.array([0.0]), np.array([0.0]), e, 0.0, 0.0, 0.0)


def _fluid_run(counts: np.ndarray, dt_min: float, s: float, clock: _Clock) -> _Run:
    n_int = counts.size
    total = int(counts.sum())
    if total == 0:
        return _empty_run()
    t_int = np.arange(n_int + 1, dtype=float) * dt_min
    a_int = np.concatenate([[0.0], np.cumsum(counts.astype(float))]) * s
    work = float(a_int[-1])
    end = t_int[-1]
    weekly = float(clock.schedule.sum()) * 60.0
    if weekly > 0:
        # enough hours after the data that cumulative capacity covers all the work (then D = A)
        extra_weeks = min(math.ceil(work / weekly) + 1, _MAX_DRAIN_WEEKS)
        horizon = end + extra_weeks * HOURS_PER_WEEK * 60.0
    else:
        horizon = end
    bounds, cum = clock.hour_grid(horizon)
    grid = np.union1d(t_int, bounds[(bounds > 0) & (bounds < horizon)])
    grid = np.union1d(grid, [horizon])
    a = np.interp(grid, t_int, a_int)
    c = np.interp(grid, bounds, cum)
    g = a - c
    m = np.minimum.accumulate(np.minimum(g, 0.0))
    # crossings: inside segment i, (A - C) falls below the running minimum m_i
    mi = m[:-1]
    cross = (g[1:] < mi) & (g[:-1] > mi)
    idx = np.nonzero(cross)[0]
    frac = (g[idx] - mi[idx]) / (g[idx] - g[idx + 1])
    t_cross = grid[idx] + frac * (grid[idx + 1] - grid[idx])
    d_cross = np.interp(t_cross, bounds, cum) + mi[idx]
    tg = np.insert(grid, idx + 1, t_cross)
    d = np.insert(c + m, idx + 1, d_cross)
    d = np.maximum.accumulate(np.minimum(d, np.interp(tg, t_int, a_int)))  # float hygiene
    q = np.interp(tg, t_int, a_int) - d

    # items: k-th of n_j arrives at T_j + k dt/n_j with A(T_j) + k s of work queued ahead
    j = np.repeat(np.arange(n_int), counts)
    k = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    arrival = t_int[j] + k * dt_min / counts[j]
    level = a_int[j] + k * s
    # its review starts when D first exceeds the work queued ahead of it (the right end of any
    # flat stretch of D at that level: no capacity, or an empty queue waiting for work); the
    # tolerance keeps float noise on a plateau from ending it early
    tol = 64 * np.finfo(float).eps * max(1.0, work)
    lvl = level + tol
    pos = np.searchsorted(d, lvl, side="right")
    done = np.full(total, np.inf)
    inside = pos < d.size
    p = pos[inside]
    lo = np.maximum(p - 1, 0)
    span = d[p] - d[lo]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(span > 0, (lvl[inside] - d[lo]) / span, 0.0)
    done[inside] = np.where(p == 0, tg[0], tg[lo] + np.clip(frac, 0.0, 1.0) * (tg[p] - tg[lo]))
    # an item whose own work is never done (no capacity left in the horizon) is never served
    done[level + s > d[-1] + tol] = np.inf
    wait = done - arrival
    wait[wait < _EPS_MIN] = 0.0

    qpeak = int(np.argmax(q))
    peak = float(q[qpeak] / s)
    if q[qpeak] <= 1e-9 * max(1.0, work):
        peak, peak_time, drain = 0.0, 0.0, 0.0
    else:
        peak_time = float(tg[qpeak])
        after = np.nonzero(q[qpeak:] <= 1e-9 * max(1.0, work))[0]
        drain = float(tg[qpeak + after[0]] - peak_time) if after.size else math.inf
    q_items = np.maximum(q, 0.0) / s
    return _Run(arrival, wait, wait + s, work, tg, q_items, None, peak, peak_time, drain)


def _service_times(rng: np.random.Generator, n: int, mean: float, cv: float) -> np.ndarray:
    if cv == 0:
        return np.full(n, float(mean))
    shape = 1.0 / (cv * cv)
    return rng.gamma(shape, mean / shape, size=n)


def _fifo_constant(arrival: np.ndarray, service: np.ndarray, c: int) -> np.ndarray:
    """Start times of a FIFO c-server queue (Kiefer–Wolfowitz with a heap of free times)."""
    if c == 0:
        return np.full(arrival.size, np.inf)
    free = [0.0] * c
    start = np.empty(arrival.size)
    replace = heapq.heapreplace
    for i, (t, x) in enumerate(zip(arrival.tolist(), service.tolist(), strict=True)):
        f = free[0]
        st = t if t > f else f
        replace(free, st + x)
        start[i] = st
    return start


def _fifo_schedule(
    arrival: np.ndarray, service: np.ndarray, schedule: np.ndarray, clock: _Clock
) -> np.ndarray:
    """Start times of a FIFO queue whose reviewers follow an hour-of-week schedule.

    Reviewer ``k`` is on duty in hour-of-week ``h`` when ``k < schedule[h]``; a review under way at
    the end of a shift is finished (overtime), and no new review starts off duty.

    Each arrival goes to the reviewer who can start it earliest. Two heaps make that
    ``O(log c)``: reviewers whose next possible start ``g_k`` (the first on-duty instant at or
    after they free up) is still ahead, keyed by ``g_k``; and reviewers already available at some
    point before the arrival, keyed by index. On-duty sets are nested (a lower index is on duty
    whenever a higher one is), so the lowest available index is the one on duty soonest.
    """
    n_srv = int(schedule.max()) if schedule.size else 0
    if n_srv == 0:
        return np.full(arrival.size, np.inf)
    on = np.arange(n_srv)[:, None] < schedule[None, :]  # (servers, 168)
    # hours until reviewer k is next on duty from hour-of-week h
    wait_h = np.zeros((n_srv, HOURS_PER_WEEK), dtype=np.int64)
    for k in range(n_srv):
        on_hours = np.nonzero(on[k])[0]  # never empty: k < max(schedule)
        ext = np.concatenate([on_hours, on_hours + HOURS_PER_WEEK])
        nxt = ext[np.searchsorted(ext, np.arange(HOURS_PER_WEEK), side="left")]
        wait_h[k] = nxt - np.arange(HOURS_PER_WEEK)
    table = wait_h.tolist()
    t0s = clock.t0_seconds
    floor = math.floor

    def next_on(k: int, x: float) -> float:
        hour = floor((t0s + 60.0 * x) / 3600.0)
        off = table[k][(hour + _MONDAY_OFFSET_HOURS) % HOURS_PER_WEEK]
        return x if off == 0 else ((hour + off) * 3600.0 - t0s) / 60.0

    ahead: list[tuple[float, int]] = []  # (g_k, k)
    available = list(range(n_srv))  # heap of indices
    push, pop = heapq.heappush, heapq.heappop
    start = np.empty(arrival.size)
    for i, (t, x) in enumerate(zip(arrival.tolist(), service.tolist(), strict=True)):
        while ahead and ahead[0][0] <= t:
            push(available, pop(ahead)[1])
        if available:
            k = available[0]
            a = next_on(k, t)
            if not ahead or a <= ahead[0][0]:
                pop(available)
            else:
                a, k = pop(ahead)
        else:
            a, k = pop(ahead)
        start[i] = a
        push(ahead, (next_on(k, a + x), k))
    return start


def _stochastic_run(
    counts: np.ndarray,
    dt_min: float,
    capacity: ReviewCapacity,
    clock: _Clock,
    rng: np.random.Generator,
) -> _Run:
    total = int(counts.sum())
    if total == 0:
        return _empty_run()
    j = np.repeat(np.arange(counts.size), counts)
    arrival = np.sort(j * dt_min + rng.uniform(0.0, dt_min, size=total))
    service = _service_times(rng, total, capacity.mean_service_minutes, capacity.service_cv)
    if capacity.is_constant:
        start = _fifo_constant(arrival, service, int(capacity.schedule[0]))
    else:
        start = _fifo_schedule(arrival, service, capacity.schedule, clock)
    wait = start - arrival
    starts = np.sort(start)
    backlog_at_arrival = np.arange(1, total + 1) - np.searchsorted(starts, arrival, side="right")
    ipeak = int(np.argmax(backlog_at_arrival))
    peak = float(backlog_at_arrival[ipeak])
    if peak <= 0:
        peak, peak_time, drain = 0.0, 0.0, 0.0
    else:
        peak_time = float(arrival[ipeak])
        finite = np.isfinite(starts)
        after_start = np.searchsorted(arrival, starts, side="right") - np.arange(1, total + 1)
        ok = np.nonzero(finite & (starts >= peak_time) & (after_start <= 0))[0]
        drain = float(starts[ok[0]] - peak_time) if ok.size else math.inf
    return _Run(
        arrival,
        wait,
        wait + service,
        float(service.sum()),
        np.empty(0),
        np.empty(0),
        starts,
        peak,
        peak_time,
        drain,
    )


def _backlog_at(run: _Run, times: np.ndarray) -> np.ndarray:
    """Items waiting (arrived, not started) at ``times`` (minutes)."""
    if run.arrival.size == 0:
        return np.zeros(times.size)
    if run.start is None:
        return np.interp(times, run.backlog_times, run.backlog_values)
    arrived = np.searchsorted(run.arrival, times, side="right")
    started = np.searchsorted(run.start, times, side="right")
    return (arrived - started).astype(float)


def _quantile(x: np.ndarray, q: float) -> float:
    # the order statistic itself (no interpolation, so an unserved item's inf stays inf)
    return float(np.quantile(x, q, method="inverted_cdf")) if x.size else 0.0


def _metrics(run: _Run, sla_min: float, capacity_minutes: float) -> dict[str, float]:
    n = run.arrival.size
    if capacity_minutes > 0:
        util = run.work / capacity_minutes
    else:
        util = math.inf if run.work > 0 else 0.0
    if n == 0:
        zero = dict.fromkeys(
            (
                "mean_wait_minutes",
                "p50_wait_minutes",
                "p95_wait_minutes",
                "p99_wait_minutes",
                "prob_wait",
                "sla_breach_share",
            ),
            0.0,
        )
        return {
            "utilisation": util,
            **zero,
            "peak_backlog": 0.0,
            "peak_minute": 0.0,
            "time_to_drain_minutes": 0.0,
        }
    w = run.wait
    return {
        "utilisation": util,
        "mean_wait_minutes": float(w.mean()),
        "p50_wait_minutes": _quantile(w, 0.50),
        "p95_wait_minutes": _quantile(w, 0.95),
        "p99_wait_minutes": _quantile(w, 0.99),
        "prob_wait": float(np.mean(w > 0)),
        "sla_breach_share": float(np.mean(run.sojourn > sla_min + _EPS_MIN)),
        "peak_backlog": run.peak_backlog,
        "peak_minute": run.peak_time,
        "time_to_drain_minutes": run.time_to_drain,
    }


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def _fmt_minutes(m: float) -> str:
    if not math.isfinite(m):
        return "never"
    if m < 90:
        return f"{m:.0f} min"
    if m < 48 * 60:
        return f"{m / 60:.1f} h"
    return f"{m / 1440:.1f} days"


def _fmt_reviewers(n: float) -> str:
    if not math.isfinite(n):
        return "more reviewers than any staffing tried"
    text = f"{n:.0f}" if n == round(n) else f"{n:.1f}"
    return f"{text} reviewer" + ("" if n == 1 else "s")


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class LoadReport:
    """What each decision policy does to the review queue over the logged window.

    Attributes
    ----------
    summary : polars.DataFrame
        One row per policy: ``policy``, ``model``, ``threshold``, ``arrivals``, ``null_scores``
        (rows decided by the fallback), ``utilisation`` (offered load / capacity over the logged
        window; > 1 is overload), ``mean_wait_minutes``, ``p50/p95/p99_wait_minutes``,
        ``prob_wait``, ``peak_backlog`` (items) and ``peak_at`` (UTC), ``sla_breach_share``
        (time to decision above the SLA), ``time_to_drain_minutes`` (from the peak until the
        queue is first empty; inf = never), ``reviewers_needed`` and ``capacity_scale_needed``
        (staffing that keeps the baseline's SLA breach share and p95 wait), and relative-to-
        baseline columns ``arrivals_vs_baseline``, ``utilisation_vs_baseline`` and
        ``reviewers_needed_vs_baseline`` (ratios), ``p95_wait_vs_baseline_minutes`` and
        ``sla_breach_share_vs_baseline`` (differences). Stochastic mode: means over seeds, with
        ``*_lo`` / ``*_hi`` (min / max over seeds) for the wait, breach and backlog figures.
    timeline : polars.DataFrame
        Per policy and interval: ``interval_start``, ``arrivals``, ``capacity_reviewer_minutes``,
        ``reviewers`` (mean on duty), ``backlog`` (items waiting at the interval's end; fluid:
        queued work over mean service, fractional; stochastic: mean over seeds),
        ``mean_wait_minutes`` and ``p95_wait_minutes`` of the items arriving in it (null when
        none).
    daily : polars.DataFrame
        Per policy and UTC day: ``arrivals``, ``mean_wait_minutes``, ``p95_wait_minutes``,
        ``sla_breach_share`` and ``backlog_end_of_day``.
    policies : dict
        Name -> (model, threshold), in order; ``baseline`` names the reference policy.
    capacity : ReviewCapacity
        The staffing used (sized when none was given); ``capacity_note`` says which.
    mode, sla_minutes, interval_minutes, seeds, rows
        How the replay ran; ``seeds`` is empty in fluid mode; ``rows`` is the logged requests.
    """

    summary: pl.DataFrame
    timeline: pl.DataFrame
    daily: pl.DataFrame
    policies: dict[str, tuple[str, float]]
    baseline: str
    capacity: ReviewCapacity
    capacity_note: str
    mode: str
    sla_minutes: float
    interval_minutes: float
    seeds: tuple[int, ...]
    rows: int

    def _row(self, name: str) -> dict[str, Any]:
        return self.summary.filter(pl.col("policy") == name).row(0, named=True)

    def _ends_high(self, name: str) -> bool:
        """Backlog at the end of the logged window is near its peak: it grew all week."""
        tl = self.timeline.filter(pl.col("policy") == name)
        if tl.height == 0:
            return False
        end = float(tl["backlog"][-1])
        peak = float(tl["backlog"].max())
        return end >= 1.0 and end >= 0.9 * peak

    def _like_baseline(self, name: str) -> bool:
        r, b = self._row(name), self._row(self.baseline)

        # within 15 minutes or 25 % on p95 wait, and 2 points or 25 % on SLA breaches; in the
        # stochastic mode also when the seed bands overlap (the seeds cannot tell them apart)
        def close(metric: str, tol: float) -> bool:
            if abs(r[metric] - b[metric]) <= tol:
                return True
            lo, hi = f"{metric}_lo", f"{metric}_hi"
            return lo in r and r[lo] <= b[hi] and b[lo] <= r[hi]

        return close("p95_wait_minutes", max(15.0, 0.25 * b["p95_wait_minutes"])) and close(
            "sla_breach_share", max(0.02, 0.25 * b["sla_breach_share"])
        )

    def story(self) -> list[str]:
        """One sentence per non-baseline policy, relative to the baseline."""
        b = self._row(self.baseline)
        out = []
        for name in self.policies:
            if name == self.baseline:
                continue
            r = self._row(name)
            if r["arrivals"] == 0:
                out.append(f"{name}: flags nothing, no reviews at all")
                continue
            if self._like_baseline(name):
                out.append(
                    f"{name}: like {self.baseline} (p95 wait "
                    f"{_fmt_minutes(r['p95_wait_minutes'])} vs "
                    f"{_fmt_minutes(b['p95_wait_minutes'])}, arrivals "
                    f"x{r['arrivals_vs_baseline']:.2f})"
                )
                continue
            shape = (
                "backlog grows all week"
                if self._ends_high(name)
                else "no backlog to speak of"
                if r["peak_backlog"] < 1
                else f"backlog peaks at {r['peak_backlog']:.0f} items on "
                f"{r['peak_at']:%a %H:%M} and drains in {_fmt_minutes(r['time_to_drain_minutes'])}"
            )
            out.append(
                f"{name}: {shape}, p95 wait from {_fmt_minutes(b['p95_wait_minutes'])} to "
                f"{_fmt_minutes(r['p95_wait_minutes'])}, SLA breaches "
                f"{100 * b['sla_breach_share']:.1f}% -> {100 * r['sla_breach_share']:.1f}%, "
                f"needs {_fmt_reviewers(r['reviewers_needed'])} "
                f"(x{r['capacity_scale_needed']:.2f} the staffing)"
            )
        return out

    def headline(self) -> str:
        """The story in one line, e.g. ``"v2 naive: backlog grows all week, p95 wait from …"``."""
        lines = self.story()
        return "; ".join(lines) if lines else f"{self.baseline}: the only policy replayed"

    def __repr__(self) -> str:
        return (
            f"LoadReport(mode={self.mode!r}, policies={list(self.policies)}, "
            f"baseline={self.baseline!r}, capacity={self.capacity!r}, "
            f"sla_minutes={self.sla_minutes:g}, headline={self.headline()!r})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN -> None, inf -> ``"inf"``, datetimes as ISO strings)."""
        return _json_safe(
            {
                "mode": self.mode,
                "baseline": self.baseline,
                "policies": {k: [m, t] for k, (m, t) in self.policies.items()},
                "capacity": self.capacity.to_dict(),
                "capacity_note": self.capacity_note,
                "sla_minutes": self.sla_minutes,
                "interval_minutes": self.interval_minutes,
                "seeds": list(self.seeds),
                "rows": self.rows,
                "headline": self.headline(),
                "summary": self.summary.to_dicts(),
                "daily": self.daily.to_dicts(),
            }
        )


# --------------------------------------------------------------------------------------------
# The public function
# --------------------------------------------------------------------------------------------


def _check_columns(schema: Mapping[str, Any], needed: Sequence[str]) -> None:
    names = list(schema)
    for col in needed:
        if col not in schema:
            near = difflib.get_close_matches(col, names, n=1)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise ValueError(
                f"Input pairs has no column {col!r} (needed by simulate_load); it has {names}."
                f"{hint} Pass pair logs in schema v1 (see shadowlab.schema)."
            )


def _replay(
    counts: np.ndarray,
    dt_min: float,
    capacity: ReviewCapacity,
    clock: _Clock,
    mode: str,
    seeds: Sequence[int],
    policy_index: int,
) -> list[_Run]:
    if mode == "fluid":
        return [_fluid_run(counts, dt_min, capacity.mean_service_minutes, clock)]
    return [
        _stochastic_run(
            counts, dt_min, capacity, clock, np.random.default_rng([seed, policy_index])
        )
        for seed in seeds
    ]


def _mean_metrics(runs: list[_Run], sla_min: float, cap_min: float) -> dict[str, float]:
    per = [_metrics(r, sla_min, cap_min) for r in runs]
    out = {k: float(np.mean([p[k] for p in per])) for k in per[0]}
    if len(per) > 1:
        for k in _BAND_METRICS:
            out[f"{k}_lo"] = float(min(p[k] for p in per))
            out[f"{k}_hi"] = float(max(p[k] for p in per))
        best = int(np.argmax([p["peak_backlog"] for p in per]))
        out["peak_minute"] = per[best]["peak_minute"]
    return out


def _solve_staffing(
    counts: np.ndarray,
    dt_min: float,
    capacity: ReviewCapacity,
    clock: _Clock,
    mode: str,
    seeds: Sequence[int],
    policy_index: int,
    sla_min: float,
    target: tuple[float, float],
    guess: int,
) -> tuple[float, float]:
    """Smallest staffing meeting ``target`` = (SLA breach share, p95 wait) of the baseline.

    Staffing ``k`` is ``k`` reviewers (constant) or the schedule scaled by ``k/20``; ``guess`` is
    where the search starts. Waits fall as staffing grows, so galloping then bisection finds the
    smallest ``k`` in ``O(log)`` replays.

    Returns (mean reviewers on duty, ratio to the given capacity's mean reviewers).
    """
    base_mean = float(capacity.schedule.mean())
    if counts.sum() == 0:
        return 0.0, 0.0

    def staffing(k: int) -> ReviewCapacity:
        if capacity.is_constant:
            return capacity.with_reviewers(k)
        return capacity.scaled(k / 20.0)

    cache: dict[int, bool] = {}

    def meets(k: int) -> bool:
        if k <= 0:
            return False  # nobody on duty serves no one (the policy has arrivals)
        if k not in cache:
            cap = staffing(k)
            c = _Clock(clock.t0_seconds, cap.schedule)
            runs = _replay(counts, dt_min, cap, c, mode, seeds, policy_index)
            breach = np.mean([np.mean(r.sojourn > sla_min + _EPS_MIN) for r in runs])
            p95 = np.mean([_quantile(r.wait, 0.95) for r in runs])
            cache[k] = bool(breach <= target[0] + 1e-12 and p95 <= target[1] + 1e-6)
        return cache[k]

    # gallop from the guess (staffing scaled by the policy's work), then bisect
    if meets(guess):
        hi, step = guess, 1
        while meets(guess - step):
            hi = guess - step
            step *= 2
        lo = max(guess - step, 0)
    else:
        lo, step = guess, 1
        while not meets(guess + step):
            lo = guess + step
            step *= 2
            if step > 2**22:
                return math.inf, math.inf
        hi = guess + step
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if meets(mid):
            hi = mid
        else:
            lo = mid
    needed = float(staffing(hi).schedule.mean())
    return needed, (needed / base_mean if base_mean > 0 else math.inf)


def simulate_load(
    pairs: Any,
    policies: Mapping[str, tuple[str, float]],
    capacity: ReviewCapacity | None = None,
    *,
    sla: str | dt.timedelta = "4h",
    interval: str | dt.timedelta = "5m",
    seed: int = 0,
    n_seeds: int = 8,
    mode: Literal["fluid", "stochastic"] = "fluid",
    baseline: str | None = None,
    inclusive: bool = True,
) -> LoadReport:
    """Replay the logged requests into the review queue under each decision policy.

    Parameters
    ----------
    pairs : LazyFrame, DataFrame, path, glob, list of paths or Spark DataFrame
        Pair logs in schema v1 (columns ``ts``, ``audit``, ``primary_score``,
        ``candidate_score`` are read).
    policies : mapping of str to (model, threshold)
        Named decision rules, model in {'primary', 'candidate'}; a request triggers a review when
        the model's score is ``>= threshold`` (``>`` with ``inclusive=False``), and audit rows
        always do.
    capacity : ReviewCapacity or None
        The review team; None (or ``reviewers=None``) sizes a constant staffing so that the
        baseline policy runs at ``target_utilisation`` (85 %) with 10-minute reviews.
    sla : str or timedelta
        Time-to-decision objective (wait + service), e.g. ``"4h"``.
    interval : str or timedelta
        Width of the per-interval arrival counts of the aggregation pass and of the timeline.
    seed : int
        Base seed of the stochastic mode; seed ``seed + i`` is the ``i``-th run.
    n_seeds : int
        Number of stochastic runs, >= 2 (the band is their min/max). Unused in fluid mode.
    mode : {'fluid', 'stochastic'}
        Deterministic fluid replay or multi-server queue with random service times.
    baseline : str or None
        The policy the team is tuned to (relative columns, staffing target, null fallback);
        default the first policy.
    inclusive : bool
        Trigger on ``score >= threshold`` (default) or, when False, on ``score > threshold``
        (a request scored exactly at the threshold is then not reviewed).

    Returns
    -------
    LoadReport
        ``summary``, ``timeline`` and ``daily`` frames, ``headline()`` and ``story()``.

    Notes
    -----
    See the module docstring for the decision rules, the single aggregation pass, the fluid
    construction, the stochastic recursion and the shift rule.

    Examples
    --------
    >>> report = simulate_load(pairs, {"v1": ("primary", 0.8), "v2": ("candidate", 0.8)})
    >>> report.summary.select("policy", "arrivals", "p95_wait_minutes")  # doctest: +SKIP
    """
    pol = _check_policies(policies)
    if baseline is None:
        baseline = next(iter(pol))
    elif baseline not in pol:
        raise ValueError(
            "The 'baseline' parameter of simulate_load must name one of the policies "
            f"{list(pol)}. Got {baseline!r} instead."
        )
    if mode not in ("fluid", "stochastic"):
        raise ValueError(
            "The 'mode' parameter of simulate_load must be one of {'fluid', 'stochastic'}. "
            f"Got {mode!r} instead."
        )
    if capacity is not None and not isinstance(capacity, ReviewCapacity):
        raise ValueError(
            "The 'capacity' parameter of simulate_load must be a ReviewCapacity or None. "
            f"Got {capacity!r} instead."
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(
            f"The 'seed' parameter of simulate_load must be an int >= 0. Got {seed!r} instead."
        )
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int | np.integer) or n_seeds < 2:
        raise ValueError(
            "The 'n_seeds' parameter of simulate_load must be an int >= 2. "
            f"Got {n_seeds!r} instead."
        )
    sla_min = _duration_seconds(sla, "sla") / 60.0
    interval_s = _duration_seconds(interval, "interval")
    if interval_s * 1e6 != round(interval_s * 1e6):
        raise ValueError(
            "The 'interval' parameter of simulate_load must be a whole number of microseconds. "
            f"Got {interval!r} instead."
        )
    capacity = capacity if capacity is not None else ReviewCapacity()

    source = as_source(pairs)
    _check_columns(source.collect_schema(), [S.TS, S.AUDIT, S.PRIMARY_SCORE, S.CANDIDATE_SCORE])
    agg = load_aggregation(pol, interval=interval, baseline=baseline, inclusive=inclusive)
    summary = source.aggregate(agg)
    if summary.height == 0:
        raise ValueError(
            "Input pairs has no rows with a timestamp: nothing to replay. Pass a non-empty week "
            "of pair logs."
        )
    interval_us = round(interval_s * 1e6)
    first = int(summary["interval"].min())
    n_int = int(summary["interval"].max()) - first + 1
    pos = (summary["interval"].to_numpy() - first).astype(np.int64)
    dt_min = interval_s / 60.0
    t0_seconds = first * interval_us / 1e6
    names = list(pol)
    counts = np.zeros((len(names), n_int), dtype=np.int64)
    nulls = np.zeros(len(names), dtype=np.int64)
    for i in range(len(names)):
        counts[i, pos] = summary[f"arrivals_{i}"].to_numpy()
        nulls[i] = int(summary[f"null_{i}"].sum())
    rows = int(summary["rows"].sum())
    window_min = n_int * dt_min
    b_idx = names.index(baseline)

    if capacity.reviewers is None:
        work = float(counts[b_idx].sum()) * capacity.mean_service_minutes
        c = max(1, math.ceil(work / (capacity.target_utilisation * window_min) - 1e-9))
        capacity = capacity.with_reviewers(c)
        note = (
            f"default: {c} reviewers, sized so that {baseline} runs at <= "
            f"{100 * capacity.target_utilisation:.0f}% utilisation "
            f"(actual {100 * work / (c * window_min):.1f}%) with "
            f"{capacity.mean_service_minutes:g}-minute reviews"
        )
    else:
        note = "given"
    clock = _Clock(t0_seconds, capacity.schedule)
    bounds, cum = clock.hour_grid(window_min)
    t_int = np.arange(n_int + 1) * dt_min
    cap_int = np.diff(np.interp(t_int, bounds, cum))
    cap_window = float(cap_int.sum())
    seeds = tuple(seed + k for k in range(n_seeds)) if mode == "stochastic" else ()

    runs = {
        name: _replay(counts[i], dt_min, capacity, clock, mode, seeds, i)
        for i, name in enumerate(names)
    }
    metrics = {name: _mean_metrics(runs[name], sla_min, cap_window) for name in names}
    target = (
        metrics[baseline]["sla_breach_share"],
        metrics[baseline]["p95_wait_minutes"],
    )
    for i, name in enumerate(names):
        base_k = int(capacity.schedule[0]) if capacity.is_constant else 20
        ratio = counts[i].sum() / max(1, counts[b_idx].sum())
        guess = max(1, math.ceil(base_k * ratio))
        needed, scale = _solve_staffing(
            counts[i], dt_min, capacity, clock, mode, seeds, i, sla_min, target, guess
        )
        metrics[name]["reviewers_needed"] = needed
        metrics[name]["capacity_scale_needed"] = scale

    def to_ts(minutes: np.ndarray | list[float]) -> pl.Series:
        us = np.round(t0_seconds * 1e6 + np.asarray(minutes, dtype=float) * 60e6).astype(np.int64)
        return pl.from_epoch(pl.Series(us), time_unit="us").dt.replace_time_zone("UTC")

    base = metrics[baseline]
    records = []
    for i, name in enumerate(names):
        m = metrics[name]
        rec: dict[str, Any] = {
            "policy": name,
            "model": pol[name][0],
            "threshold": pol[name][1],
            "arrivals": int(counts[i].sum()),
            "null_scores": int(nulls[i]),
        }
        rec.update({k: v for k, v in m.items() if k != "peak_minute"})
        rec["peak_minute"] = m["peak_minute"]
        base_arr = float(counts[b_idx].sum())
        rec["arrivals_vs_baseline"] = rec["arrivals"] / base_arr if base_arr else math.nan
        rec["utilisation_vs_baseline"] = (
            m["utilisation"] / base["utilisation"] if base["utilisation"] else math.nan
        )
        rec["p95_wait_vs_baseline_minutes"] = m["p95_wait_minutes"] - base["p95_wait_minutes"]
        rec["sla_breach_share_vs_baseline"] = m["sla_breach_share"] - base["sla_breach_share"]
        rec["reviewers_needed_vs_baseline"] = (
            m["reviewers_needed"] / base["reviewers_needed"]
            if base["reviewers_needed"]
            else math.nan
        )
        records.append(rec)
    summary_df = pl.DataFrame(records)
    summary_df = summary_df.with_columns(peak_at=to_ts(summary_df["peak_minute"].to_list())).drop(
        "peak_minute"
    )
    first_cols = [
        "policy",
        "model",
        "threshold",
        "arrivals",
        "null_scores",
        "utilisation",
        "mean_wait_minutes",
        "p50_wait_minutes",
        "p95_wait_minutes",
        "p99_wait_minutes",
        "prob_wait",
        "sla_breach_share",
        "peak_backlog",
        "peak_at",
        "time_to_drain_minutes",
        "reviewers_needed",
        "capacity_scale_needed",
    ]
    summary_df = summary_df.select(
        first_cols + [c for c in summary_df.columns if c not in first_cols]
    )

    # timeline and daily tables from the items of every run (pooled over seeds)
    interval_start = to_ts(t_int[:-1])
    timelines, dailies = [], []
    day_start_min = (
        np.floor(t0_seconds / 86400.0) * 86400.0 - t0_seconds
    ) / 60.0  # first UTC midnight at or before minute 0
    n_days = math.ceil((window_min - day_start_min) / 1440.0)
    day_ends = day_start_min + 1440.0 * np.arange(1, n_days + 1)
    for i, name in enumerate(names):
        rs = runs[name]
        backlog = np.mean([_backlog_at(r, t_int[1:]) for r in rs], axis=0)
        eod = np.mean([_backlog_at(r, day_ends) for r in rs], axis=0)
        items = pl.DataFrame(
            {
                "minute": np.concatenate([r.arrival for r in rs]),
                "wait": np.concatenate([r.wait for r in rs]),
                "breach": np.concatenate([r.sojourn > sla_min + _EPS_MIN for r in rs]),
            },
            schema={"minute": pl.Float64, "wait": pl.Float64, "breach": pl.Boolean},
        )
        per_int = (
            items.group_by((pl.col("minute") // dt_min).cast(pl.Int64).alias("j"))
            .agg(
                pl.col("wait").mean().alias("mean_wait_minutes"),
                pl.col("wait").quantile(0.95, "higher").alias("p95_wait_minutes"),
            )
            .filter(pl.col("j") < n_int)
        )
        tl = pl.DataFrame(
            {
                "j": np.arange(n_int),
                "interval_start": interval_start,
                "arrivals": counts[i],
                "capacity_reviewer_minutes": cap_int,
                "reviewers": cap_int / dt_min,
                "backlog": backlog,
            }
        ).join(per_int, on="j", how="left")
        timelines.append(tl.drop("j").with_columns(pl.lit(name).alias("policy")))
        per_day = items.group_by(
            ((pl.col("minute") - day_start_min) // 1440.0).cast(pl.Int64).alias("d")
        ).agg(
            pl.len().alias("n"),
            pl.col("wait").mean().alias("mean_wait_minutes"),
            pl.col("wait").quantile(0.95, "higher").alias("p95_wait_minutes"),
            pl.col("breach").mean().alias("sla_breach_share"),
        )
        daily = (
            pl.DataFrame({"d": np.arange(n_days), "backlog_end_of_day": eod})
            .join(per_day, on="d", how="left")
            .with_columns(
                policy=pl.lit(name),
                day=to_ts(day_start_min + 1440.0 * np.arange(n_days)).dt.date(),
                arrivals=(pl.col("n").fill_null(0) / len(rs)).round(6),
            )
        )
        dailies.append(
            daily.select(
                "policy",
                "day",
                "arrivals",
                "mean_wait_minutes",
                "p95_wait_minutes",
                "sla_breach_share",
                "backlog_end_of_day",
            )
        )
    timeline = pl.concat(timelines).select(
        "policy",
        "interval_start",
        "arrivals",
        "capacity_reviewer_minutes",
        "reviewers",
        "backlog",
        "mean_wait_minutes",
        "p95_wait_minutes",
    )
    return LoadReport(
        summary=summary_df,
        timeline=timeline,
        daily=pl.concat(dailies),
        policies=pol,
        baseline=baseline,
        capacity=capacity,
        capacity_note=note,
        mode=mode,
        sla_minutes=sla_min,
        interval_minutes=dt_min,
        seeds=seeds,
        rows=rows,
    )
