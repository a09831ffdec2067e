"""``shadowlab report``: write the offline HTML report of a shadow week."""

from __future__ import annotations

import argparse
import sys

from shadowlab.cli import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("logs", nargs="+", help="pair-log directory, glob or files")
    parser.add_argument("--labels", nargs="*", default=None, help="label files or directory")
    parser.add_argument("--reference", default=None, help="v2's reference (offline eval) Parquet")
    parser.add_argument("--policy", default=None, help="gate policy TOML (thresholds, segments)")
    parser.add_argument("--verdict", default=None, help="verdict.json written by `shadowlab gate`")
    parser.add_argument("--primary-threshold", type=float, default=None, help="v1's threshold t1")
    parser.add_argument(
        "--candidate-threshold",
        type=float,
        default=None,
        help="v2's threshold t2 (default: calibrate)",
    )
    parser.add_argument("--log-scale", action="store_true", help="score densities on a log axis")
    parser.add_argument("--out", required=True, help="HTML file to write")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")


def run(args: argparse.Namespace) -> int:
    from shadowlab.logs import scan_pairs
    from shadowlab.policy import load_policy
    from shadowlab.progress import Progress
    from shadowlab.report import build_report

    policy = load_policy(args.policy) if args.policy else None
    t1 = args.primary_threshold
    t2 = args.candidate_threshold
    if policy is not None:
        t1 = t1 if t1 is not None else policy.thresholds.primary
        if t2 is None and isinstance(policy.thresholds.candidate, float | int):
            t2 = float(policy.thresholds.candidate)
    if t1 is None:
        raise UsageError("give --primary-threshold or a --policy that names [thresholds] primary.")
    reference = args.reference
    if reference is None and policy is not None and policy.reference_path() is not None:
        reference = str(policy.reference_path())
    pairs = scan_pairs(args.logs if len(args.logs) > 1 else args.logs[0])
    steps = 4 + (t2 is None) + 3 * bool(args.labels)
    with Progress(steps, label="report", enabled=False if args.quiet else None) as progress:
        report = build_report(
            pairs,
            primary_threshold=t1,
            candidate_threshold=t2,
            labels=args.labels,
            reference=reference,
            verdict=args.verdict,
            log_scale=args.log_scale,
            progress=progress,
        )
    path = report.save(args.out)
    if not args.quiet:
        print(
            f"wrote {path} ({len(report.html.encode()) / 1e6:.1f} MB, {len(report.charts)} charts)"
        )
        for note in report.notes:
            print(f"  not shown: {note}", file=sys.stderr)
    return 0
