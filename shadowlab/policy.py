"""The gate policy: thresholds, review capacity and a limit and a severity for every check.

A policy is a TOML file (``shadowlab init-policy`` writes a commented default, see
:func:`default_policy_toml`) read into a tree of frozen dataclasses, :class:`GatePolicy`. Every key
has a documented default, so the file is optional and may set only what differs. An unknown key or
an out-of-range value is a :class:`PolicyError` that names the key (``checks.trigger_parity.band``)
and, for a misspelt key, suggests the nearest known one.

Severities: ``"fail"`` (a breached limit fails the gate), ``"warn"`` (reported, the gate still
passes) and ``"off"`` (the check is not run). A check that cannot be computed is INCONCLUSIVE and
fails the gate unless its ``allow_inconclusive`` is true (fail closed).

References
----------
.. [1] TOML v1.0.0 specification: https://toml.io/en/v1.0.0
.. [2] Python ``tomllib``: https://docs.python.org/3/library/tomllib.html
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "AccuracyPolicy",
    "ChecksPolicy",
    "EnoughDataPolicy",
    "FeedbackPolicy",
    "GatePolicy",
    "HealthPolicy",
    "LoadPolicy",
    "OutputsPolicy",
    "PolicyError",
    "ReviewPolicy",
    "ThresholdPolicy",
    "TriggerParityPolicy",
    "default_policy_toml",
    "load_policy",
    "parse_policy",
]

SEVERITIES = ("fail", "warn", "off")


class PolicyError(ValueError):
    """A policy file or value is invalid; the message names the key."""


# --- validators: each returns the normalised value or raises PolicyError naming the key --------


def _bad(key: str, want: str, value: Any) -> PolicyError:
    return PolicyError(f"The policy key '{key}' must be {want}. Got {value!r} instead.")


def _number(
    lo: float | None = None,
    hi: float | None = None,
    *,
    integer: bool = False,
    lo_open: bool = False,
    hi_open: bool = False,
    none: bool = False,
) -> Callable:
    kind = "an int" if integer else "a number"
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi}")
    want = kind + (" " + " and ".join(parts) if parts else "") + (" or omitted" if none else "")

    def check(key: str, value: Any) -> Any:
        if value is None and none:
            return None
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and integer and not isinstance(value, int):
            ok = False
        if ok and not math.isfinite(value):
            ok = False
        if ok and lo is not None:
            ok = value > lo if lo_open else value >= lo
        if ok and hi is not None:
            ok = value < hi if hi_open else value <= hi
        if not ok:
            raise PolicyError(f"The policy key '{key}' must be {want}. Got {value!r} instead.")
        return int(value) if integer else float(value)

    return check


def _boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise PolicyError(f"The policy key '{key}' must be true or false. Got {value!r} instead.")
    return value


def _severity(key: str, value: Any) -> str:
    if value not in SEVERITIES:
        raise PolicyError(
            f"The policy key '{key}' must be one of 'fail', 'warn', 'off'. Got {value!r} instead."
        )
    return value


def _optional_str(key: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise _bad(key, "a non-empty string or omitted", value)
    return value


def _segments(key: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, list | tuple) and all(isinstance(v, str) and v for v in value):
        if len(set(value)) != len(value):
            raise PolicyError(f"The policy key '{key}' lists a column twice: {list(value)!r}.")
        return tuple(value)
    raise PolicyError(
        f"The policy key '{key}' must be a list of column names. Got {value!r} instead."
    )


def _band(key: str, value: Any) -> tuple[float, float]:
    ok = (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and all(math.isfinite(v) for v in value)
    )
    if ok:
        lo, hi = float(value[0]), float(value[1])
        ok = 0 < lo <= 1 <= hi
    if not ok:
        raise PolicyError(
            f"The policy key '{key}' must be [low, high] with 0 < low <= 1 <= high "
            f"(a band for the ratio candidate/primary). Got {value!r} instead."
        )
    return (lo, hi)


def _candidate_threshold(key: str, value: Any) -> float | str:
    if value == "calibrate":
        return "calibrate"
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise PolicyError(
        f"The policy key '{key}' must be a number or \"calibrate\". Got {value!r} instead."
    )


def _interval(key: str, value: Any) -> str:
    import re

    if isinstance(value, str) and re.fullmatch(r"[1-9][0-9]*(s|m|h|d)", value):
        return value
    raise PolicyError(
        f'The policy key \'{key}\' must be a duration such as "5m", "1h" or "1d". '
        f"Got {value!r} instead."
    )


def _v(check: Callable, default: Any, doc: str) -> Any:
    return field(default=default, metadata={"check": check, "doc": doc})


class _Section:
    """Shared behaviour of the policy sections: validation naming the key, and ``to_dict``."""

    __slots__ = ()
    SECTION: ClassVar[str] = ""

    def _validate(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            check = f.metadata.get("check")
            if check is None:
                continue
            key = f"{self.SECTION}.{f.name}" if self.SECTION else f.name
            object.__setattr__(self, f.name, check(key, getattr(self, f.name)))

    def __post_init__(self) -> None:
        self._validate()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            if not f.repr:
                continue
            value = getattr(self, f.name)
            if isinstance(value, _Section):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out


# --- sections -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ThresholdPolicy(_Section):
    """``[thresholds]``: the decision thresholds (trigger rule ``score >= threshold``)."""

    SECTION: ClassVar[str] = "thresholds"
    primary: float | None = _v(
        _number(none=True), None, "v1's production threshold (required here or on the command line)"
    )
    candidate: float | str = _v(
        _candidate_threshold,
        "calibrate",
        "v2's threshold: a number, or \"calibrate\" to match v1's trigger rate on the logged week",
    )
    inclusive: bool = _v(_boolean, True, "trigger when score >= threshold (false: >)")


@dataclass(frozen=True, slots=True)
class ReviewPolicy(_Section):
    """``[review]``: the review queue behind the model (used by the downstream-load check)."""

    SECTION: ClassVar[str] = "review"
    reviewers: int | None = _v(
        _number(1, integer=True, none=True),
        None,
        "reviewers on duty; omitted: sized so that v1 runs at target_utilisation",
    )
    mean_service_minutes: float = _v(_number(0, lo_open=True), 10.0, "mean minutes per review")
    sla_minutes: float = _v(
        _number(0, lo_open=True), 240.0, "time to decision (wait + review) objective"
    )
    target_utilisation: float = _v(
        _number(0, 1, lo_open=True, hi_open=True),
        0.85,
        "utilisation v1 runs at when reviewers is omitted (the queue was tuned to v1)",
    )
    interval: str = _v(_interval, "5m", "replay interval of the load simulation")


@dataclass(frozen=True, slots=True)
class EnoughDataPolicy(_Section):
    """``[checks.enough_data]``: minimum evidence; below any minimum the gate is INCONCLUSIVE."""

    SECTION: ClassVar[str] = "checks.enough_data"
    severity: str = _v(_severity, "fail", "fail | warn | off")
    allow_inconclusive: bool = _v(_boolean, False, "let too little data pass (not advised)")
    min_rows: int = _v(_number(1, integer=True), 20_000, "scored pairs in the window")
    min_days: int = _v(_number(1, integer=True), 7, "distinct days with traffic (a full week)")
    min_labelled: int = _v(_number(0, integer=True), 200, "pairs with a label")
    min_audit: int = _v(_number(0, integer=True), 100, "pairs in the audit slice")


@dataclass(frozen=True, slots=True)
class HealthPolicy(_Section):
    """``[checks.production_health]``: the candidate as a service, overall and per segment."""

    SECTION: ClassVar[str] = "checks.production_health"
    severity: str = _v(_severity, "fail", "fail | warn | off")
    allow_inconclusive: bool = _v(_boolean, False, "")
    max_error_rate: float = _v(_number(0, 1), 0.01, "share of requests where v2 raised an error")
    max_null_rate: float = _v(_number(0, 1), 0.01, "share of requests with no v2 score (null/NaN)")
    min_coverage: float = _v(_number(0, 1), 0.98, "share of requests with both scores present")
    max_latency_p99_ms: float = _v(_number(0, lo_open=True), 200.0, "v2 latency p99 limit (ms)")
    max_latency_p99_ratio: float = _v(
        _number(1), 2.0, "v2 p99 may exceed this multiple of v1's p99 ..."
    )
    latency_slack_ms: float = _v(
        _number(0), 20.0, "... only by less than this many ms (sub-ms models are not slow)"
    )
    min_segment_rows: int = _v(
        _number(1, integer=True), 500, "segments with fewer rows are reported, not judged"
    )


@dataclass(frozen=True, slots=True)
class OutputsPolicy(_Section):
    """``[checks.outputs]``: v2's production scores against its offline reference, per day."""

    SECTION: ClassVar[str] = "checks.outputs"
    severity: str = _v(_severity, "fail", "fail | warn | off")
    allow_inconclusive: bool = _v(_boolean, False, "pass when no reference is given")
    max_psi: float = _v(_number(0, lo_open=True), 0.25, "PSI of any day against the reference")
    max_ks: float = _v(_number(0, 1, lo_open=True), 0.2, "KS statistic of any day against it")
    every: str = _v(_interval, "1d", "window of the per-day comparison")


@dataclass(frozen=True, slots=True)
class TriggerParityPolicy(_Section):
    """``[checks.trigger_parity]``: v2's trigger rate over v1's, overall, per day, per segment."""

    SECTION: ClassVar[str] = "checks.trigger_parity"
    severity: str = _v(_severity, "fail", "fail | warn | off")
    allow_inconclusive: bool = _v(_boolean, False, "")
    band: tuple[float, float] = _v(_band, (0.8, 1.25), "allowed ratio v2 rate / v1 rate, overall")
    day_band: tuple[float, float] = _v(_band, (0.67, 1.5), "allowed ratio on each day")
    segment_band: tuple[float, float] = _v(
        _band, (0.5, 2.0), "allowed ratio in each segment (a better model re-ranks segments)"
    )
    per_day: bool = _v(_boolean, True, "judge every day")
    per_segment: bool = _v(_boolean, True, "judge every segment")
    min_flags: int = _v(
        _number(1, integer=True),
        50,
        "a day/segment is judged only when v1 or v2 flagged at least this many there",
    )


@dataclass(frozen=True, slots=True)
class LoadPolicy(_Section):
    """``[checks.load]``: the review queue under v2 against under v1 (``simulate_load``)."""

    SECTION: ClassVar[str] = "checks.load"
    severity: str = _v(_severity, "fail", "fail | warn | off")
    allow_inconclusive: bool = _v(_boolean, False, "")
    max_sla_breach_increase: float = _v(
        _number(0, 1), 0.05, "v2's SLA-breach share minus v1's (share points, 0.05 = 5 points)"
    )
    max_peak_backlog_ratio: float = _v(_number(1), 1.5, "v2's peak backlog over v1's")


@dataclass(frozen=True, slots=True)
class AccuracyPolicy(_Section):
    """``[checks.accuracy]``: v2 against v1 and against its eval figure on the production sample."""

    SECTION: ClassVar[str] = "checks.accuracy"
    severity: str = _v(_severity, "warn", "fail | warn | off")
    allow_inconclusive: bool = _v(_boolean, False, "")
    unbiased: bool = _v(
        _boolean,
        True,
        "read accuracy off the audit slice only (review labels exist only where v1 flagged)",
    )
    max_precision_drop: float = _v(
        _number(0, 1), 0.05, "v1 precision minus v2 precision at the thresholds"
    )
    max_recall_drop: float = _v(_number(0, 1), 0.05, "v1 recall minus v2 recall")
    max_ap_drop_vs_reference: float = _v(
        _number(0, 1), 0.1, "v2's offline (reference) AP minus its production AP"
    )
    confidence: float = _v(_number(0, 1, lo_open=True, hi_open=True), 0.95, "interval level")


@dataclass(frozen=True, slots=True)
class FeedbackPolicy(_Section):
    """``[checks.feedback]``: what the labels cannot see (``feedback_diagnostics``)."""

    SECTION: ClassVar[str] = "checks.feedback"
    severity: str = _v(_severity, "warn", "fail | warn | off")
    allow_inconclusive: bool = _v(_boolean, False, "")
    max_unlabelled_risk_mass: float = _v(
        _number(0, 1), 0.3, "share of v2's flags no review under today's policy would see"
    )
    max_immature_share: float = _v(
        _number(0, 1), 0.5, "share of requests whose labels cannot have arrived yet"
    )


@dataclass(frozen=True, slots=True)
class ChecksPolicy(_Section):
    """``[checks.*]``: one table per check."""

    SECTION: ClassVar[str] = "checks"
    enough_data: EnoughDataPolicy = field(default_factory=EnoughDataPolicy)
    production_health: HealthPolicy = field(default_factory=HealthPolicy)
    outputs: OutputsPolicy = field(default_factory=OutputsPolicy)
    trigger_parity: TriggerParityPolicy = field(default_factory=TriggerParityPolicy)
    load: LoadPolicy = field(default_factory=LoadPolicy)
    accuracy: AccuracyPolicy = field(default_factory=AccuracyPolicy)
    feedback: FeedbackPolicy = field(default_factory=FeedbackPolicy)


@dataclass(frozen=True, slots=True)
class GatePolicy(_Section):
    """The whole gate policy.

    Parameters
    ----------
    thresholds, review, checks
        The ``[thresholds]``, ``[review]`` and ``[checks.*]`` tables.
    reference : str or None
        Path of v2's reference (offline eval) Parquet file; a relative path is read relative to the
        policy file's directory (``base_dir``).
    segments : tuple of str or None
        Context columns to check per segment. ``None`` (the default) means ``["country"]`` when
        the logs have that column and no segmentation otherwise; an explicit list must exist.
    seed : int
        Seed of every random choice of the gate (bootstrap intervals, stochastic replays).
    base_dir : str or None
        Directory of the policy file (not part of the policy's content).
    """

    SECTION: ClassVar[str] = ""
    thresholds: ThresholdPolicy = field(default_factory=ThresholdPolicy)
    reference: str | None = _v(_optional_str, None, "v2's offline eval scores (Parquet)")
    segments: tuple[str, ...] | None = _v(_segments, None, "context columns judged per segment")
    seed: int = _v(_number(0, integer=True), 0, "seed of bootstrap intervals and replays")
    review: ReviewPolicy = field(default_factory=ReviewPolicy)
    checks: ChecksPolicy = field(default_factory=ChecksPolicy)
    base_dir: str | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, base_dir: str | Path | None = None
    ) -> GatePolicy:
        """Build a policy from a parsed TOML mapping; unknown keys raise :class:`PolicyError`."""
        policy = _build(cls, data, "")
        return replace(policy, base_dir=None if base_dir is None else str(base_dir))

    def with_thresholds(
        self, *, primary: float | None = None, candidate: float | str | None = None
    ) -> GatePolicy:
        """Return a copy with the thresholds overridden (command-line ``--*-threshold``)."""
        t = self.thresholds
        t = replace(
            t,
            primary=t.primary if primary is None else primary,
            candidate=t.candidate if candidate is None else candidate,
        )
        return replace(self, thresholds=t)

    def reference_path(self) -> Path | None:
        """The reference file, resolved against the policy file's directory."""
        if self.reference is None:
            return None
        path = Path(self.reference)
        if not path.is_absolute() and self.base_dir is not None:
            path = Path(self.base_dir) / path
        return path

    def check_policy(self, name: str) -> Any:
        """The section of check ``name`` (``"trigger_parity"`` ...)."""
        return getattr(self.checks, name)


_NESTED: dict[type, dict[str, type]] = {
    GatePolicy: {"thresholds": ThresholdPolicy, "review": ReviewPolicy, "checks": ChecksPolicy},
    ChecksPolicy: {
        "enough_data": EnoughDataPolicy,
        "production_health": HealthPolicy,
        "outputs": OutputsPolicy,
        "trigger_parity": TriggerParityPolicy,
        "load": LoadPolicy,
        "accuracy": AccuracyPolicy,
        "feedback": FeedbackPolicy,
    },
}


def _build(cls: type, data: Any, prefix: str) -> Any:
    where = f"[{prefix}]" if prefix else "the top level"
    if not isinstance(data, Mapping):
        raise PolicyError(f"The policy key '{prefix}' must be a table. Got {data!r} instead.")
    known = [f.name for f in fields(cls) if f.repr]
    nested = _NESTED.get(cls, {})
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else key
        if key not in known:
            near = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean '{near[0]}'?" if near else ""
            raise PolicyError(
                f"Unknown policy key '{full}' in {where}.{hint} Known keys: {', '.join(known)}."
            )
        kwargs[key] = _build(nested[key], value, full) if key in nested else value
    return cls(**kwargs)


def parse_policy(text: str, *, base_dir: str | Path | None = None) -> GatePolicy:
    """Parse policy TOML text into a :class:`GatePolicy`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"The policy is not valid TOML: {exc}.") from exc
    return GatePolicy.from_dict(data, base_dir=base_dir)


def load_policy(path: str | Path | None = None) -> GatePolicy:
    """Read a policy file; ``None`` gives the documented defaults.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    PolicyError
        For invalid TOML, an unknown key or an out-of-range value (the message names the key).
    """
    if path is None:
        return GatePolicy()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Policy file {str(path)!r} does not exist.")
    try:
        return parse_policy(path.read_text(encoding="utf-8"), base_dir=path.parent)
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from exc


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return repr(value)
    if isinstance(value, int):
        return f"{value:_}" if abs(value) >= 10_000 else str(value)
    return repr(value)


_HEADER = """\
# shadowlab gate policy (TOML). Written by `shadowlab init-policy`.
#
# Every key is optional: a missing key takes the default shown here. Unknown keys and
# out-of-range values are errors. Severities: "fail" (a breached limit fails the gate), "warn"
# (reported, the gate still passes), "off" (not run). A check that cannot be computed is
# INCONCLUSIVE and fails the gate unless its allow_inconclusive = true (fail closed).
#
# The defaults suit a fraud-like system: a model flags transactions for human review, the
# review queue was staffed for the served model (v1), and labels come from reviews, a small
# random audit slice and late chargebacks.
"""


def default_policy_toml() -> str:
    """The default policy as commented TOML (what ``shadowlab init-policy`` writes).

    Parsing the text gives exactly ``GatePolicy()`` apart from ``thresholds.primary``, which has no
    default and is written as a commented-out line to fill in.
    """
    lines = [_HEADER]

    def section(obj: _Section, title: str, note: str) -> None:
        lines.append(f"\n[{title}]" if title else "")
        if note:
            lines.extend(f"# {n}" for n in note.splitlines())
        for f in fields(obj):  # type: ignore[arg-type]
            if not f.repr or f.name in _NESTED.get(type(obj), {}):
                continue
            value = getattr(obj, f.name)
            doc = f.metadata.get("doc", "")
            comment = f"  # {doc}" if doc else ""
            if value is None:
                lines.append(f"# {f.name} = ...{comment}")
            else:
                lines.append(f"{f.name} = {_toml_value(value)}{comment}")

    p = GatePolicy()
    lines.append("# v2's offline eval scores (Parquet: model, score, label), read relative to")
    lines.append("# this file; --reference on the command line overrides it.")
    lines.append('# reference = "reference.parquet"')
    lines.append("# Context columns judged per segment; default: country, when the logs have it.")
    lines.append('# segments = ["country"]')
    lines.append(f"seed = {p.seed}  # seed of bootstrap intervals and stochastic replays")
    section(
        p.thresholds,
        "thresholds",
        "Trigger rule: a model flags a request when score >= threshold.\n"
        "Set primary to v1's production threshold (or pass --primary-threshold).",
    )
    section(
        p.review,
        "review",
        "The review queue that receives the flags (downstream-load check).",
    )
    notes = {
        "enough_data": "Too little evidence makes the gate INCONCLUSIVE, never PASS.",
        "production_health": "v2 as a service, overall and in every segment (one broken country\n"
        "is not averaged away). Latency p99 is read from a log-spaced histogram (<= 1% high).",
        "outputs": "v2's production scores against its offline eval (reference) scores, each day.\n"
        "PSI 0.1-0.25 is a moderate shift, > 0.25 a major one (Siddiqi 2006). v2 against v1 on\n"
        "the same requests is reported, not judged: a new model is meant to score differently.",
        "trigger_parity": "v2's trigger rate at its threshold over v1's at its threshold. A band\n"
        "of [0.8, 1.25] means at most 25% more (or 20% fewer) flags than the queue is staffed for.\n"
        "Days must stay close (a threshold that matches only on average is caught); segments get\n"
        "a wider band because a better model legitimately moves flags between segments, but a\n"
        "segment whose flags double or halve is caught.",
        "load": "Replay of the week's flags into the review queue (simulate_load).",
        "accuracy": "Precision/recall at the thresholds with bootstrap intervals; a drop counts\n"
        "only when the interval of the difference excludes the allowed drop.",
        "feedback": "Selective labels: the share of v2's flags that no review under today's\n"
        "policy would ever label, and how many labels are still to come.",
    }
    for name in _NESTED[ChecksPolicy]:
        section(getattr(p.checks, name), f"checks.{name}", notes[name])
    return "\n".join(lines) + "\n"
