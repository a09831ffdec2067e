"""``shadowlab load LOGS --primary-threshold T1 --candidate-threshold T2``: replay the triggers
into the review queue under v1, v2 at v1's threshold and v2 at the calibrated threshold."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import polars as pl

from shadowlab import schema as S
from shadowlab.cli import UsageError
from shadowlab.load import ReviewCapacity, simulate_load

_SHOWN = (
    "policy",
    "arrivals",
    "utilisation",
    "mean_wait_minutes",
    "p95_wait_minutes",
    "p99_wait_minutes",
    "prob_wait",
    "sla_breach_share",
    "peak_backlog",
    "time_to_drain_minutes",
    "reviewers_needed",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("logs", nargs="+", help="pair-log directory, glob or Parquet file(s)")
    parser.add_argument(
        "--primary-threshold", type=float, required=True, help="v1's production threshold"
    )
    parser.add_argument(
        "--candidate-threshold",
        type=float,
        required=True,
        help="v2's calibrated threshold (see `shadowlab calibrate`)",
    )
    parser.add_argument(
        "--reviewers",
        default=None,
        help="constant number of reviewers, or a file of 168 numbers (hour of week, Monday "
        "00:00 UTC first); default: sized so that v1 runs at 85%% utilisation",
    )
    parser.add_argument(
        "--service-minutes", type=float, default=10.0, help="mean minutes per review (10)"
    )
    parser.add_argument(
        "--service-cv",
        type=float,
        default=1.0,
        help="coefficient of variation of review times, stochastic mode (1 = exponential)",
    )
    parser.add_argument("--sla", default="4h", help="time-to-decision objective (4h)")
    parser.add_argument("--interval", default="5m", help="arrival-count interval (5m)")
    parser.add_argument("--mode", choices=("fluid", "stochastic"), default="fluid")
    parser.add_argument("--seeds", type=int, default=8, help="stochastic runs (8)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (0)")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")


def _reviewers(value: str | None) -> int | tuple[int, ...] | None:
    if value is None:
        return None
    if re.fullmatch(r"\d+", value.strip()):
        return int(value)
    path = Path(value)
    if not path.is_file():
        raise UsageError(
            f"--reviewers must be a whole number or a file of 168 numbers; {value!r} is neither."
        )
    numbers = re.findall(r"-?\d+(?:\.\d+)?", path.read_text(encoding="utf-8"))
    if len(numbers) != 168:
        raise UsageError(
            f"--reviewers file {value} holds {len(numbers)} numbers; it needs 168 (one per hour "
            "of the week, Monday 00:00 UTC first)."
        )
    return tuple(int(float(n)) for n in numbers)


def run(args: argparse.Namespace) -> int:
    try:
        capacity = ReviewCapacity(
            _reviewers(args.reviewers),
            mean_service_minutes=args.service_minutes,
            service_cv=args.service_cv,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    policies = {
        "v1": (S.PRIMARY, args.primary_threshold),
        "v2 naive": (S.CANDIDATE, args.primary_threshold),
        "v2 calibrated": (S.CANDIDATE, args.candidate_threshold),
    }
    logs = args.logs[0] if len(args.logs) == 1 else args.logs
    report = simulate_load(
        logs,
        policies,
        capacity,
        sla=args.sla,
        interval=args.interval,
        seed=args.seed,
        n_seeds=args.seeds,
        mode=args.mode,
    )
    print(
        f"{report.rows:,} logged requests, {report.mode} mode, SLA {args.sla}, "
        f"capacity {report.capacity!r} ({report.capacity_note})"
    )
    with pl.Config(tbl_rows=20, tbl_cols=20, tbl_width_chars=200, float_precision=3):
        print(report.summary.select(_SHOWN))
        print(
            report.daily.pivot(on="policy", index="day", values="p95_wait_minutes").rename(
                lambda c: c if c == "day" else f"p95 wait {c}"
            )
        )
    for line in report.story():
        print(line)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(report.to_dict(), fh, indent=2, allow_nan=False)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
