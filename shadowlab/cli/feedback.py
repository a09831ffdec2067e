"""``shadowlab feedback LOGS --labels LABELS --primary-threshold T1 --candidate-threshold T2``.

Prints what the selective labels can and cannot say about the candidate (decision cross-tab,
unlabelled-risk mass, bounds and estimate of v2's precision and recall, label maturity, the
training set each policy would produce, canary arms, the audit plan); ``--json PATH`` writes the
whole report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl

from shadowlab.cli import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "logs", nargs="+", metavar="LOGS", help="pair logs: directory, glob or files"
    )
    parser.add_argument(
        "--labels", nargs="+", metavar="LABELS", help="label files (omit: no labels at all)"
    )
    parser.add_argument(
        "--primary-threshold", type=float, required=True, metavar="T1", help="v1's threshold"
    )
    parser.add_argument(
        "--candidate-threshold", type=float, required=True, metavar="T2", help="v2's threshold"
    )
    parser.add_argument(
        "--as-of",
        metavar="ISO",
        help="analyse as if at this instant (labels after it are ignored; default: latest label)",
    )
    parser.add_argument("--confidence", type=float, default=0.95, help="interval level")
    parser.add_argument(
        "--margin",
        type=float,
        default=0.05,
        help="target ± on v2's precision where only v2 flags, for the audit plan",
    )
    parser.add_argument(
        "--segment",
        action="append",
        metavar="COL",
        help="context column to compare between policies (repeatable; default: all text ones)",
    )
    parser.add_argument("--json", metavar="PATH", help="write the full report as JSON here")


def _table(frame: pl.DataFrame) -> str:
    with pl.Config(
        tbl_rows=50,
        tbl_cols=20,
        tbl_width_chars=140,
        float_precision=3,
        tbl_hide_dataframe_shape=True,
    ):
        return str(frame)


def run(args: argparse.Namespace) -> int:
    from shadowlab.feedback import feedback_diagnostics
    from shadowlab.logs import LogValidationError

    try:
        report = feedback_diagnostics(
            args.logs if len(args.logs) > 1 else args.logs[0],
            args.labels,
            args.primary_threshold,
            args.candidate_threshold,
            as_of=args.as_of,
            confidence=args.confidence,
            margin=args.margin,
            segments=args.segment,
        )
    except (LogValidationError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    print(repr(report))
    print("\nDecision cross-tab (v1 flag x v2 flag):")
    print(_table(report.crosstab))
    print("\nLabel maturity by day:")
    print(_table(report.maturity))
    if report.arms is not None:
        print("\nCanary arms:")
        print(_table(report.arms))
    print("\nAudit plan: " + report.audit_plan.explain())
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        print(f"\nwrote {path}")
    return 0
