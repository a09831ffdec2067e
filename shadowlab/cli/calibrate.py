"""``shadowlab calibrate LOGS --primary-threshold T [--by country] [--target ...] [--json PATH]``.

Prints the candidate threshold that keeps v1's trigger rate (or a given rate / review capacity),
its interval, the naive rate at v1's threshold, the per-day stability and the segments; with
``--labels`` also the accuracy of both models at the two operating points. ``--json PATH`` writes
everything.
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
        "--primary-threshold", type=float, required=True, metavar="T", help="v1's threshold"
    )
    parser.add_argument(
        "--target",
        default="match",
        metavar="TARGET",
        help="'match' (v1's rate, default), a rate such as 0.02, or 'capacity:N' (N flags per day)",
    )
    parser.add_argument(
        "--side",
        choices=("nearest", "at_most", "at_least"),
        default="nearest",
        help="which achievable rate when ties make the target unreachable (default: nearest)",
    )
    parser.add_argument(
        "--exclusive", action="store_true", help="trigger rule 'score > t' instead of '>='"
    )
    parser.add_argument(
        "--by", action="append", metavar="COL", help="segment column (repeatable), e.g. country"
    )
    parser.add_argument(
        "--per-segment", action="store_true", help="also one threshold per segment (needs --by)"
    )
    parser.add_argument("--confidence", type=float, default=0.95, help="interval level")
    parser.add_argument(
        "--labels", nargs="+", metavar="LABELS", help="label files: also report accuracy"
    )
    parser.add_argument(
        "--reference", metavar="PATH", help="reference.parquet (offline holdout), with --labels"
    )
    parser.add_argument(
        "--recalibrate",
        action="store_true",
        help="isotonic recalibration on the reference before the label-free estimate",
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (with --labels)")
    parser.add_argument("--json", metavar="PATH", help="write the full result as JSON here")


def _target(text: str):
    from shadowlab.thresholds import Capacity

    if text == "match":
        return "match"
    if text.startswith("capacity:"):
        try:
            return Capacity(per_day=float(text.split(":", 1)[1]))
        except ValueError as exc:
            raise UsageError(f"--target {text!r}: {exc}") from exc
    try:
        return float(text)
    except ValueError as exc:
        raise UsageError(
            f"--target must be 'match', a rate in [0, 1] or 'capacity:N'. Got {text!r}."
        ) from exc


def _table(frame: pl.DataFrame) -> str:
    with pl.Config(
        tbl_rows=60,
        tbl_cols=20,
        tbl_width_chars=140,
        float_precision=4,
        tbl_hide_dataframe_shape=True,
        tbl_hide_column_data_types=True,
    ):
        return str(frame)


def run(args: argparse.Namespace) -> int:
    from shadowlab.logs import LogValidationError
    from shadowlab.thresholds import calibrate_threshold

    if args.per_segment and not args.by:
        raise UsageError("--per-segment needs --by COL")
    if (args.reference or args.recalibrate) and not args.labels:
        raise UsageError("--reference and --recalibrate need --labels")
    logs = args.logs if len(args.logs) > 1 else args.logs[0]
    try:
        res = calibrate_threshold(
            logs,
            args.primary_threshold,
            target=_target(args.target),
            by=args.by,
            side=args.side,
            inclusive=not args.exclusive,
            confidence=args.confidence,
            per_segment=args.per_segment,
        )
    except (LogValidationError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    print(repr(res))
    print("\nPer day at the week's threshold:")
    print(_table(res.by_day))
    if res.segments is not None:
        print("\nSegments (v2 at the global threshold):")
        print(_table(res.segments))
    passes = ", ".join(f"{p['kind']} ({p['rows_moved']} rows)" for p in res.passes)
    print(f"\npasses: {passes}")
    out = {"calibration": res.to_dict()}
    if args.labels:
        from shadowlab.accuracy import operating_point_metrics

        try:
            acc = operating_point_metrics(
                logs,
                args.labels if len(args.labels) > 1 else args.labels[0],
                args.primary_threshold,
                res.threshold,
                reference=args.reference,
                recalibrate=args.recalibrate,
                inclusive=not args.exclusive,
                seed=args.seed,
            )
        except (LogValidationError, ValueError) as exc:
            raise UsageError(str(exc)) from exc
        print()
        print(repr(acc))
        print(_table(acc.estimate.drop("reason")))
        out["accuracy"] = acc.to_dict()
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2) + "\n")
        print(f"\nwrote {path}")
    return 0
