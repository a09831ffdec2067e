"""The canary router: deterministic traffic split, both models scored, one pair row per request.

Usage
-----
>>> from shadowlab.logs import PairLogWriter
>>> from shadowlab.router import CanaryRouter, SklearnModel
>>> v1 = SklearnModel(fitted_v1, name="fraud:1.4.0")                       # doctest: +SKIP
>>> v2 = SklearnModel(fitted_v2, name="fraud:2.0.0")                       # doctest: +SKIP
>>> with PairLogWriter("logs/pairs") as log:                               # doctest: +SKIP
...     router = CanaryRouter(v1, v2, traffic_pct=0.0, log=log, salt="fraud-2026-11",
...                           audit_rate=0.01)
...     router.predict(x, "req-42", context={"country": "DE"}).score       # one request
...     out = router.predict_batch(X, request_ids, ts=ts, context={"country": countries})
...     out.scores, out.served                                             # numpy arrays
>>> router.route("req-42")                                                 # doctest: +SKIP
'primary'

Routing
-------
Each request id is hashed with keyed BLAKE2b [1]_ (key = the salt, 16-byte digest) into two
independent 64-bit integers: ``h_route`` (bytes 0-7) and ``h_audit`` (bytes 8-15), read as
big-endian unsigned integers. A request goes to the candidate iff
``h_route < floor(traffic_pct * 2**64)``, and is in the audit slice iff
``h_audit < floor(audit_rate * 2**64)``. Hence

* the split is the same in every process, machine and Python version (no ``hash()``);
* any ``traffic_pct`` is honoured to 2**-64 resolution;
* ramp monotonicity: the candidate set at ``p`` is a subset of the set at every ``p' > p``;
* different salts give independent splits, and the audit draw is independent of routing
  (disjoint digest bytes of a pseudo-random function).

References
----------
.. [1] Aumasson, J.-P., Neves, S., Wilcox-O'Hearn, Z., Winnerlein, C. (2013). BLAKE2: simpler,
       smaller, fast as MD5. RFC 7693. https://www.rfc-editor.org/rfc/rfc7693
.. [2] Kohavi, R., Tang, D., Xu, Y. (2020). Trustworthy Online Controlled Experiments, ch. 4
       (hash-based, salted, monotone-ramp assignment). Cambridge University Press.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import os
import threading
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import polars as pl

from shadowlab import schema as S
from shadowlab.logs import NONFINITE_ERROR

__all__ = [
    "BatchPrediction",
    "CanaryRouter",
    "Model",
    "Prediction",
    "RouterConfig",
    "RouterStats",
    "ServedModelError",
    "SklearnModel",
    "audit_draw",
    "route_hash",
]

FailurePolicy = Literal["raise", "fallback"]
_TWO64 = 1 << 64


@runtime_checkable
class Model(Protocol):
    """What the router needs from a model: an id and a score.

    ``score_batch(X) -> array`` is optional; without it :meth:`CanaryRouter.predict_batch`
    calls ``score`` row by row.
    """

    name: str

    def score(self, x: Any) -> float: ...


class SklearnModel:
    """Adapter for a fitted scikit-learn classifier: the score is ``predict_proba(X)[:, 1]``.

    Parameters
    ----------
    estimator : fitted classifier with ``predict_proba``
    name : str
        The model id logged in every row, e.g. ``"fraud:1.4.0"``.
    """

    def __init__(self, estimator: Any, name: str) -> None:
        if not hasattr(estimator, "predict_proba"):
            raise TypeError(
                f"SklearnModel needs a classifier with predict_proba; "
                f"{type(estimator).__name__} has none."
            )
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"The 'name' parameter of SklearnModel must be a non-empty str. Got {name!r} "
                "instead."
            )
        self.estimator = estimator
        self.name = name

    def score(self, x: Any) -> float:
        row = np.asarray(x, dtype=float).reshape(1, -1)
        return float(self.estimator.predict_proba(row)[0, 1])

    def score_batch(self, X: Any) -> np.ndarray:
        return np.asarray(self.estimator.predict_proba(X)[:, 1], dtype=float)

    def __repr__(self) -> str:
        return f"SklearnModel({type(self.estimator).__name__}, name={self.name!r})"


class ServedModelError(RuntimeError):
    """The served model failed and the failure policy is ``"raise"`` (or both models failed).

    Raised by :meth:`CanaryRouter.predict_batch`, it carries the batch's answers in ``result``
    (a :class:`BatchPrediction`; ``scores`` is NaN exactly on the failed requests and
    ``failed`` marks them), so the requests that did succeed can still be answered.
    """

    result: BatchPrediction | None = None


# --------------------------------------------------------------------------------------------
# Hashing
# --------------------------------------------------------------------------------------------


def _key(salt: str) -> bytes:
    raw = salt.encode()
    # BLAKE2b keys are at most 64 bytes; longer salts are first hashed to 64 bytes.
    return raw if len(raw) <= 64 else hashlib.blake2b(raw).digest()


def _digests(salt: str, request_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(route, audit) uint64 arrays for ``request_ids``: halves of keyed BLAKE2b-128."""
    key = _key(salt)
    blake = hashlib.blake2b
    buf = b"".join([blake(r.encode(), digest_size=16, key=key).digest() for r in request_ids])
    both = np.frombuffer(buf, dtype=">u8").reshape(-1, 2)
    return both[:, 0].astype(np.uint64), both[:, 1].astype(np.uint64)


def route_hash(salt: str, request_id: str) -> int:
    """The 64-bit routing hash of ``request_id`` under ``salt`` (an int in [0, 2**64))."""
    d = hashlib.blake2b(request_id.encode(), digest_size=16, key=_key(salt)).digest()
    return int.from_bytes(d[:8], "big")


def _audit_hash(salt: str, request_id: str) -> int:
    d = hashlib.blake2b(request_id.encode(), digest_size=16, key=_key(salt)).digest()
    return int.from_bytes(d[8:], "big")


def _cut(p: float) -> int:
    """Integer threshold: hash < cut  <=>  uniform draw < p. ``p = 1`` gives 2**64 (all)."""
    return _TWO64 if p >= 1.0 else int(p * _TWO64)


def _below(h: np.ndarray, p: float) -> np.ndarray:
    cut = _cut(p)
    if cut >= _TWO64:
        return np.ones(h.shape, dtype=bool)
    return h < np.uint64(cut)


def audit_draw(salt: str, request_id: str, audit_rate: float) -> bool:
    """Whether ``request_id`` falls in the audit slice at ``audit_rate`` (deterministic)."""
    return _audit_hash(salt, request_id) < _cut(audit_rate)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def _prob_iv(value: Any, name: str, where: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0.0 <= value <= 1.0
    ):
        raise ValueError(
            f"The {name!r} parameter of {where} must be a float in [0, 1]. Got {value!r} instead."
        )
    return float(value)


def _policy_iv(value: Any, where: str) -> FailurePolicy:
    if value not in ("raise", "fallback"):
        raise ValueError(
            f"The 'on_served_failure' parameter of {where} must be a str among "
            f"{{'raise', 'fallback'}}. Got {value!r} instead."
        )
    return value


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """The router's runtime settings; rollback is ``traffic_pct = 0``.

    A TOML file holds any of the three keys (missing keys keep their defaults)::

        traffic_pct = 0.05          # candidate share in [0, 1]
        audit_rate = 0.01           # audit-slice probability in [0, 1]
        on_served_failure = "fallback"   # or "raise"
    """

    traffic_pct: float = 0.0
    audit_rate: float = 0.0
    on_served_failure: FailurePolicy = "raise"

    def __post_init__(self) -> None:
        _prob_iv(self.traffic_pct, "traffic_pct", "RouterConfig")
        _prob_iv(self.audit_rate, "audit_rate", "RouterConfig")
        _policy_iv(self.on_served_failure, "RouterConfig")

    @classmethod
    def from_toml(
        cls, path: str | os.PathLike[str], *, base: RouterConfig | None = None
    ) -> RouterConfig:
        """Read settings from a TOML file; keys it lacks keep ``base``'s values (default: the
        defaults). Unknown keys are an error (a typo must not pass silently)."""
        with open(path, "rb") as fh:
            try:
                data = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(
                    f"Router config {os.fspath(path)!r} is not valid TOML: {exc}"
                ) from exc
        unknown = sorted(set(data) - {"traffic_pct", "audit_rate", "on_served_failure"})
        if unknown:
            raise ValueError(
                f"Router config {os.fspath(path)!r} has unknown key(s) {unknown}; allowed: "
                "traffic_pct, audit_rate, on_served_failure."
            )
        try:
            return replace(base, **data) if base is not None else cls(**data)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"Router config {os.fspath(path)!r}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return {
            "traffic_pct": self.traffic_pct,
            "audit_rate": self.audit_rate,
            "on_served_failure": self.on_served_failure,
        }


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Prediction:
    """The answer to one request.

    Attributes
    ----------
    score : float
        The served score.
    served : {'primary', 'candidate'}
        Whose score was used (differs from ``routed`` after a fallback).
    routed : {'primary', 'candidate'}
        Where the hash sent the request.
    request_id : str
    audit : bool
    primary_score, candidate_score : float or None
        Both scores (None when that model failed).
    primary_error, candidate_error : str or None
    """

    score: float
    served: str
    routed: str
    request_id: str
    audit: bool
    primary_score: float | None
    candidate_score: float | None
    primary_error: str | None
    candidate_error: str | None

    def __float__(self) -> float:
        return self.score

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class BatchPrediction:
    """The answers to a batch: numpy arrays aligned with the request ids.

    Attributes
    ----------
    scores : ndarray of float
        The served scores (NaN only where both models failed under ``"fallback"``).
    served, routed : ndarray of str
    audit : ndarray of bool
    primary_scores, candidate_scores : ndarray of float (NaN where that model failed)
    primary_errors, candidate_errors : list of (str or None)
    failed : ndarray of bool
        Requests without an answer (the served model failed and there was no fallback); only
        seen through :attr:`ServedModelError.result`.
    """

    scores: np.ndarray
    served: np.ndarray
    routed: np.ndarray
    audit: np.ndarray
    primary_scores: np.ndarray
    candidate_scores: np.ndarray
    primary_errors: list[str | None]
    candidate_errors: list[str | None]
    failed: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def __repr__(self) -> str:
        n = len(self.scores)
        return (
            f"BatchPrediction(n={n}, served_candidate={int((self.served == S.CANDIDATE).sum())}, "
            f"audit={int(self.audit.sum())}, primary_errors="
            f"{sum(e is not None for e in self.primary_errors)}, candidate_errors="
            f"{sum(e is not None for e in self.candidate_errors)})"
        )


@dataclass(frozen=True, slots=True)
class RouterStats:
    """Counters of a router since it was built."""

    requests: int
    served_primary: int
    served_candidate: int
    fallbacks: int
    primary_failures: int
    candidate_failures: int
    log_failures: int
    last_log_error: str | None
    config_reloads: int
    config_errors: int
    last_config_error: str | None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


# --------------------------------------------------------------------------------------------
# Router
# --------------------------------------------------------------------------------------------


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _single(
    model: Any, x: Any, clock: Callable[[], float] = time.perf_counter
) -> tuple[float | None, str | None, float, BaseException | None]:
    """Score one request: (score or None, error text or None, latency ms, exception)."""
    t0 = clock()
    try:
        value = float(model.score(x))
    except Exception as exc:
        return None, _error_text(exc), (clock() - t0) * 1e3, exc
    ms = (clock() - t0) * 1e3
    if not math.isfinite(value):
        return None, f"{NONFINITE_ERROR}: {value}", ms, None
    return value, None, ms, None


def _batch(
    model: Any, X: Any, n: int, clock: Callable[[], float] = time.perf_counter
) -> tuple[np.ndarray, list[str | None], np.ndarray]:
    """Score a batch: (scores with NaN on failure, error texts, per-row latency ms).

    ``score_batch`` runs once; if it raises or returns the wrong shape, the batch is re-scored
    row by row with ``score`` so each request gets its own outcome, exactly as ``predict``.
    Latency of a vectorised call is the batch time divided by the batch size.
    """
    errors: list[str | None] = [None] * n
    batch_fn = getattr(model, "score_batch", None)
    if batch_fn is not None:
        t0 = clock()
        try:
            out = np.asarray(batch_fn(X), dtype=float).reshape(-1)
            if out.shape[0] != n:
                raise ValueError(f"score_batch returned {out.shape[0]} scores for {n} rows")
        except Exception:
            out = None
        ms = (clock() - t0) * 1e3
        if out is not None:
            bad = ~np.isfinite(out)
            if bad.any():
                for i in np.flatnonzero(bad):
                    errors[i] = f"{NONFINITE_ERROR}: {out[i]}"
                out = np.where(bad, np.nan, out)
            return out, errors, np.full(n, ms / max(n, 1))
    scores = np.full(n, np.nan)
    lat = np.empty(n)
    for i in range(n):
        value, err, ms, _ = _single(model, X[i], clock)
        if value is not None:
            scores[i] = value
        errors[i] = err
        lat[i] = ms
    return scores, errors, lat


class CanaryRouter:
    """Route requests between a primary (v1) and a candidate (v2) model; log both scores.

    Parameters
    ----------
    primary, candidate : Model
        Objects with ``name`` and ``score(x)`` (optionally ``score_batch(X)``); see
        :class:`SklearnModel` for scikit-learn classifiers.
    traffic_pct : float in [0, 1], default 0.0
        Candidate share. ``0`` is pure shadow mode (and the rollback).
    log : PairLogWriter or None
        Where pair rows go (anything with ``write(row)`` and ``write_batch(frame)``);
        ``None`` routes and scores without logging.
    salt : str
        Keys the routing hash; a new salt gives an independent split.
    audit_rate : float in [0, 1], default 0.0
        Probability that a request is marked for the audit slice (independent of routing).
    on_served_failure : {'raise', 'fallback'}, default 'raise'
        When the served model fails (exception, NaN, inf): raise :class:`ServedModelError`
        after logging the row, or answer with the other model's score (``served`` then names
        the other model). If both fail, :class:`ServedModelError` is raised either way.
    config : path or None
        A TOML file (see :class:`RouterConfig`) whose keys override the three above (keys it
        lacks keep the values passed here); it is
        re-read when its modification time changes (checked at most every
        ``reload_interval`` seconds), so a ramp or a rollback needs no restart. A broken file
        keeps the last good settings and is counted in :meth:`stats`.
    reload_interval : float, default 1.0
        Seconds between checks of the config file's modification time.
    clock : callable returning seconds, default ``time.perf_counter``
        Measures the latency columns. A simulation passes a deterministic clock so that its
        logs are reproducible byte for byte (:mod:`shadowlab.synth`).

    Notes
    -----
    The non-served (shadow) model never affects the answer: its exceptions and non-finite
    scores are caught and written to its error column. Logging failures are caught and
    counted (``stats().log_failures``); serving never breaks because the log does.
    """

    def __init__(
        self,
        primary: Model,
        candidate: Model,
        traffic_pct: float = 0.0,
        *,
        log: Any,
        salt: str,
        audit_rate: float = 0.0,
        on_served_failure: FailurePolicy = "raise",
        config: str | os.PathLike[str] | None = None,
        reload_interval: float = 1.0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        for role, model in (("primary", primary), ("candidate", candidate)):
            if not isinstance(getattr(model, "name", None), str) or not callable(
                getattr(model, "score", None)
            ):
                raise TypeError(
                    f"The {role!r} model must have a str 'name' and a 'score(x)' method; got "
                    f"{type(model).__name__}. Wrap scikit-learn classifiers in SklearnModel."
                )
        if not isinstance(salt, str) or not salt:
            raise ValueError(
                f"The 'salt' parameter of CanaryRouter must be a non-empty str. Got {salt!r} "
                "instead."
            )
        self.primary = primary
        self.candidate = candidate
        self.log = log
        self.salt = salt
        self._config = RouterConfig(
            traffic_pct=_prob_iv(traffic_pct, "traffic_pct", "CanaryRouter"),
            audit_rate=_prob_iv(audit_rate, "audit_rate", "CanaryRouter"),
            on_served_failure=_policy_iv(on_served_failure, "CanaryRouter"),
        )
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(
            (
                "requests", "served_primary", "served_candidate", "fallbacks",
                "primary_failures", "candidate_failures", "log_failures",
                "config_reloads", "config_errors",
            ),
            0,
        )  # fmt: skip
        self._last_log_error: str | None = None
        self._last_config_error: str | None = None
        self.config_path = Path(config) if config is not None else None
        self.reload_interval = float(reload_interval)
        self.clock = clock
        self._config_stamp: tuple[int, int] | None = None
        self._next_check = 0.0
        self._base = self._config
        if self.config_path is not None:
            self._config = RouterConfig.from_toml(self.config_path, base=self._base)
            self._config_stamp = self._stamp()

    # -- settings ----------------------------------------------------------------------------
    @property
    def config(self) -> RouterConfig:
        """The settings in force (re-reading the config file if it changed)."""
        self._maybe_reload()
        return self._config

    @property
    def traffic_pct(self) -> float:
        return self.config.traffic_pct

    @traffic_pct.setter
    def traffic_pct(self, value: float) -> None:
        self._config = replace(
            self._config, traffic_pct=_prob_iv(value, "traffic_pct", "CanaryRouter")
        )

    @property
    def audit_rate(self) -> float:
        return self.config.audit_rate

    @audit_rate.setter
    def audit_rate(self, value: float) -> None:
        self._config = replace(
            self._config, audit_rate=_prob_iv(value, "audit_rate", "CanaryRouter")
        )

    def _stamp(self) -> tuple[int, int]:
        st = os.stat(self.config_path)  # type: ignore[arg-type]
        return st.st_mtime_ns, st.st_size

    def reload(self) -> bool:
        """Re-read the config file now if it changed; return whether settings were replaced."""
        if self.config_path is None:
            return False
        try:
            stamp = self._stamp()
            if stamp == self._config_stamp:
                return False
            new = RouterConfig.from_toml(self.config_path, base=self._base)
        except (OSError, ValueError) as exc:
            with self._lock:
                self._counts["config_errors"] += 1
                self._last_config_error = str(exc)
                # Remember the broken version so it is reported once, not on every request.
                try:
                    self._config_stamp = self._stamp()
                except OSError:
                    pass
            return False
        with self._lock:
            self._config = new
            self._config_stamp = stamp
            self._counts["config_reloads"] += 1
        return True

    def _maybe_reload(self) -> None:
        if self.config_path is None:
            return
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + self.reload_interval
            self.reload()

    # -- routing -----------------------------------------------------------------------------
    def route(self, request_id: str) -> str:
        """``"primary"`` or ``"candidate"``: where ``request_id`` goes now, without scoring."""
        cut = _cut(self.config.traffic_pct)
        return S.CANDIDATE if route_hash(self.salt, request_id) < cut else S.PRIMARY

    def route_batch(self, request_ids: Sequence[str]) -> np.ndarray:
        """Vectorised :meth:`route`: an array of ``"primary"``/``"candidate"``."""
        h, _ = _digests(self.salt, _ids(request_ids))
        return np.where(_below(h, self.config.traffic_pct), S.CANDIDATE, S.PRIMARY)

    def is_audit(self, request_id: str) -> bool:
        """Whether ``request_id`` is in the audit slice at the current ``audit_rate``."""
        return audit_draw(self.salt, request_id, self.config.audit_rate)

    # -- serving -----------------------------------------------------------------------------
    def predict(
        self,
        x: Any,
        request_id: str,
        *,
        ts: dt.datetime | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Prediction:
        """Score ``x`` with both models, answer with the routed one, log the pair row.

        Parameters
        ----------
        x : feature vector (whatever the models' ``score`` accepts)
        request_id : str
        ts : timezone-aware datetime, optional
            Request time; default now (UTC).
        context : mapping, optional
            Extra columns for the row (country, channel, …).

        Returns
        -------
        Prediction
            ``.score`` is the served score.

        Raises
        ------
        ServedModelError
            The served model failed and ``on_served_failure == "raise"``, or both failed.
        """
        if not isinstance(request_id, str):
            raise TypeError(f"request_id must be a str. Got {type(request_id).__name__} instead.")
        row_ts = _utc(ts)
        extra = _context_row(context) if context else {}
        cfg = self.config
        key = _key(self.salt)
        digest = hashlib.blake2b(request_id.encode(), digest_size=16, key=key).digest()
        routed = (
            S.CANDIDATE if int.from_bytes(digest[:8], "big") < _cut(cfg.traffic_pct) else S.PRIMARY
        )
        audit = int.from_bytes(digest[8:], "big") < _cut(cfg.audit_rate)
        p_score, p_err, p_ms, p_exc = _single(self.primary, x, self.clock)
        c_score, c_err, c_ms, c_exc = _single(self.candidate, x, self.clock)
        served = routed
        served_score = p_score if routed == S.PRIMARY else c_score
        failure: ServedModelError | None = None
        fell_back = False
        if served_score is None:
            other = S.CANDIDATE if routed == S.PRIMARY else S.PRIMARY
            other_score = c_score if other == S.CANDIDATE else p_score
            err = p_err if routed == S.PRIMARY else c_err
            exc = p_exc if routed == S.PRIMARY else c_exc
            if cfg.on_served_failure == "fallback" and other_score is not None:
                served, served_score, fell_back = other, other_score, True
            else:
                also = ""
                if cfg.on_served_failure == "fallback":
                    other_err = c_err if other == S.CANDIDATE else p_err
                    also = f"; the fallback {self._name(other)!r} failed too: {other_err}"
                failure = ServedModelError(
                    f"served model {self._name(routed)!r} failed for request {request_id!r}: "
                    f"{err}{also}"
                )
                failure.__cause__ = exc
        row = {
            S.TS: row_ts,
            S.REQUEST_ID: request_id,
            S.PRIMARY_MODEL: self.primary.name,
            S.CANDIDATE_MODEL: self.candidate.name,
            S.SERVED: served,
            S.TRAFFIC_PCT: cfg.traffic_pct,
            S.PRIMARY_SCORE: p_score,
            S.CANDIDATE_SCORE: c_score,
            S.PRIMARY_ERROR: p_err,
            S.CANDIDATE_ERROR: c_err,
            S.PRIMARY_LATENCY: p_ms,
            S.CANDIDATE_LATENCY: c_ms,
            S.AUDIT: audit,
            S.AUDIT_RATE: cfg.audit_rate,
        }
        row.update(extra)
        with self._lock:
            c = self._counts
            c["requests"] += 1
            c["primary_failures"] += p_err is not None
            c["candidate_failures"] += c_err is not None
            if failure is None:
                c["served_primary" if served == S.PRIMARY else "served_candidate"] += 1
                c["fallbacks"] += fell_back
        self._log(lambda: self.log.write(row))
        if failure is not None:
            raise failure
        return Prediction(
            score=float(served_score),  # type: ignore[arg-type]
            served=served,
            routed=routed,
            request_id=request_id,
            audit=audit,
            primary_score=p_score,
            candidate_score=c_score,
            primary_error=p_err,
            candidate_error=c_err,
        )

    def predict_batch(
        self,
        X: Any,
        request_ids: Sequence[str],
        ts: Any = None,
        *,
        context: Mapping[str, Any] | None = None,
    ) -> BatchPrediction:
        """:meth:`predict` for a batch, with exactly the same per-request semantics.

        Each model's ``score_batch`` runs once on ``X`` (rows aligned with ``request_ids``);
        hashing, routing, audit draws, failure handling and the log write are vectorised (one
        ``write_batch`` per call).

        Parameters
        ----------
        X : array-like of shape (n, ...)
        request_ids : sequence of str, length n
        ts : datetime, sequence of datetimes or polars Series, optional
            One time for all rows or one per row (timezone-aware); default now (UTC).
        context : mapping of column name to scalar or length-n sequence, optional

        Raises
        ------
        ServedModelError
            After logging the batch, if any served score failed under ``"raise"`` (or both
            models failed on a row); the message gives the count and the first request ids.
        """
        ids = _ids(request_ids)
        n = len(ids)
        if len(X) != n:
            raise ValueError(
                f"X has {len(X)} rows but request_ids has {n}. Fix: pass one id per row."
            )
        ts_col = _ts_series(ts, n)
        ctx_cols = _context_columns(context, n)
        cfg = self.config
        h_route, h_audit = _digests(self.salt, ids)
        to_candidate = _below(h_route, cfg.traffic_pct)
        audit = _below(h_audit, cfg.audit_rate)
        p, p_err, p_ms = _batch(self.primary, X, n, self.clock)
        c, c_err, c_ms = _batch(self.candidate, X, n, self.clock)
        p_ok, c_ok = ~np.isnan(p), ~np.isnan(c)
        routed_ok = np.where(to_candidate, c_ok, p_ok)
        other_ok = np.where(to_candidate, p_ok, c_ok)
        if cfg.on_served_failure == "fallback":
            flip = ~routed_ok & other_ok
        else:
            flip = np.zeros(n, dtype=bool)
        serve_candidate = to_candidate ^ flip
        scores = np.where(serve_candidate, c, p)
        failed = np.isnan(scores)
        routed = np.where(to_candidate, S.CANDIDATE, S.PRIMARY)
        served = np.where(serve_candidate, S.CANDIDATE, S.PRIMARY)
        with self._lock:
            k = self._counts
            k["requests"] += n
            k["primary_failures"] += int((~p_ok).sum())
            k["candidate_failures"] += int((~c_ok).sum())
            k["served_candidate"] += int((serve_candidate & ~failed).sum())
            k["served_primary"] += int((~serve_candidate & ~failed).sum())
            k["fallbacks"] += int(flip.sum())
        if self.log is not None:
            self._log(
                lambda: self.log.write_batch(
                    self._batch_frame(
                        ids, ts_col, served, cfg, p, c, p_err, c_err, p_ms, c_ms, audit, ctx_cols
                    )
                )
            )
        result = BatchPrediction(
            scores=scores,
            served=served,
            routed=routed,
            audit=audit,
            primary_scores=p,
            candidate_scores=c,
            primary_errors=p_err,
            candidate_errors=c_err,
            failed=failed,
        )
        if failed.any():
            bad = np.flatnonzero(failed)
            first = [ids[i] for i in bad[:3]]
            i0 = bad[0]
            err0 = p_err[i0] if not to_candidate[i0] else c_err[i0]
            error = ServedModelError(
                f"served model failed for {len(bad)} of {n} requests (first {first}: {err0}); "
                f"on_served_failure={cfg.on_served_failure!r}. The rows are logged; the other "
                "answers are in this error's .result."
            )
            error.result = result
            raise error
        return result

    def _batch_frame(
        self,
        ids: list[str],
        ts_col: pl.Series,
        served: np.ndarray,
        cfg: RouterConfig,
        p: np.ndarray,
        c: np.ndarray,
        p_err: list[str | None],
        c_err: list[str | None],
        p_ms: np.ndarray,
        c_ms: np.ndarray,
        audit: np.ndarray,
        ctx_cols: list[pl.Series],
    ) -> pl.DataFrame:
        n = len(ids)
        frame = pl.DataFrame(
            {
                S.TS: ts_col,
                S.REQUEST_ID: pl.Series(ids, dtype=pl.String),
                S.PRIMARY_MODEL: pl.repeat(self.primary.name, n, eager=True, dtype=pl.String),
                S.CANDIDATE_MODEL: pl.repeat(self.candidate.name, n, eager=True, dtype=pl.String),
                S.SERVED: pl.Series(served, dtype=pl.String),
                S.TRAFFIC_PCT: pl.repeat(cfg.traffic_pct, n, eager=True, dtype=pl.Float64),
                S.PRIMARY_SCORE: pl.Series(p, dtype=pl.Float64, nan_to_null=True),
                S.CANDIDATE_SCORE: pl.Series(c, dtype=pl.Float64, nan_to_null=True),
                S.PRIMARY_ERROR: _errors(p_err, n),
                S.CANDIDATE_ERROR: _errors(c_err, n),
                S.PRIMARY_LATENCY: pl.Series(p_ms, dtype=pl.Float64),
                S.CANDIDATE_LATENCY: pl.Series(c_ms, dtype=pl.Float64),
                S.AUDIT: pl.Series(audit, dtype=pl.Boolean),
                S.AUDIT_RATE: pl.repeat(cfg.audit_rate, n, eager=True, dtype=pl.Float64),
            }
        )
        return frame.with_columns(ctx_cols) if ctx_cols else frame

    def _log(self, write: Any) -> None:
        if self.log is None:
            return
        try:
            write()
        except Exception as exc:
            with self._lock:
                self._counts["log_failures"] += 1
                self._last_log_error = _error_text(exc)

    def _name(self, role: str) -> str:
        return self.primary.name if role == S.PRIMARY else self.candidate.name

    def stats(self) -> RouterStats:
        """Counters: requests, served per model, fallbacks, failures, log and config errors."""
        with self._lock:
            return RouterStats(
                **self._counts,
                last_log_error=self._last_log_error,
                last_config_error=self._last_config_error,
            )

    def __repr__(self) -> str:
        cfg = self._config
        return (
            f"CanaryRouter(primary={self.primary.name!r}, candidate={self.candidate.name!r}, "
            f"traffic_pct={cfg.traffic_pct:g}, audit_rate={cfg.audit_rate:g}, "
            f"on_served_failure={cfg.on_served_failure!r})"
        )


def _ids(request_ids: Sequence[str]) -> list[str]:
    if isinstance(request_ids, pl.Series) and request_ids.dtype == pl.String:
        if request_ids.null_count():
            raise TypeError("request_ids must all be str (no None, no ints).")
        return request_ids.to_list()
    if isinstance(request_ids, pl.Series):
        ids = request_ids.to_list()
    elif isinstance(request_ids, np.ndarray):
        ids = request_ids.tolist()
    else:
        ids = list(request_ids)
    if not all(isinstance(r, str) for r in ids):
        raise TypeError("request_ids must all be str (no None, no ints).")
    return ids


def _utc(ts: dt.datetime | None) -> dt.datetime:
    if ts is None:
        return dt.datetime.now(dt.UTC)
    if ts.tzinfo is None:
        raise ValueError(
            "ts must be timezone-aware (a naive time is ambiguous). Fix: "
            "dt.datetime.now(dt.UTC) or ts.replace(tzinfo=dt.UTC)."
        )
    return ts.astimezone(dt.UTC)


def _ts_series(ts: Any, n: int) -> pl.Series:
    if ts is None or isinstance(ts, dt.datetime):
        return pl.repeat(_utc(ts), n, eager=True, dtype=pl.Datetime("us", "UTC"))
    s = (
        ts
        if isinstance(ts, pl.Series)
        else pl.Series(list(ts) if not isinstance(ts, np.ndarray) else ts)
    )
    if len(s) != n:
        raise ValueError(f"ts has {len(s)} values for {n} requests.")
    if not isinstance(s.dtype, pl.Datetime):
        raise ValueError(f"ts must hold datetimes. Got {s.dtype} instead.")
    if s.dtype.time_zone is None:
        raise ValueError(
            "ts holds naive datetimes (ambiguous). Fix: mark them UTC, e.g. "
            "pl.Series(ts).dt.replace_time_zone('UTC')."
        )
    return s.dt.convert_time_zone("UTC").cast(pl.Datetime("us", "UTC"))


def _context_row(context: Mapping[str, Any]) -> dict[str, Any]:
    for name in context:
        if name in S.PAIR_SCHEMA:
            raise ValueError(f"Context column {name!r} clashes with a pair-log column; rename it.")
    return dict(context)


def _context_columns(context: Mapping[str, Any] | None, n: int) -> list[pl.Series]:
    cols: list[pl.Series] = []
    for name, value in _context_row(context or {}).items():
        if isinstance(value, str) or np.ndim(value) == 0:
            cols.append(pl.repeat(value, n, eager=True).alias(name))
            continue
        series = value.alias(name) if isinstance(value, pl.Series) else pl.Series(name, value)
        if len(series) != n:
            raise ValueError(f"Context column {name!r} has {len(series)} values for {n} requests.")
        cols.append(series)
    return cols


def _errors(errors: list[str | None], n: int) -> pl.Series:
    if errors.count(None) == n:  # the common case, without building n Python objects
        return pl.repeat(None, n, eager=True, dtype=pl.String)
    return pl.Series(errors, dtype=pl.String)
