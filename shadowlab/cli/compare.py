"""``shadowlab compare LOGS``: score-distribution comparisons (KS, PSI, ...) by window and segment."""

from __future__ import annotations

import argparse
import json
import sys

import polars as pl

from shadowlab.cli import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("logs", nargs="+", help="pair-log directory, glob or Parquet file(s)")
    parser.add_argument(
        "--reference",
        metavar="REF",
        help="reference.parquet (columns model, score) or a saved ScoreSketch file",
    )
    parser.add_argument(
        "--every", default="1d", help="window length as a polars duration (default 1d; 'none': one)"
    )
    parser.add_argument("--by", action="append", metavar="COLUMN", help="segment column (repeat)")
    parser.add_argument("--bins", type=int, default=10, help="PSI bins (reference quantiles)")
    parser.add_argument(
        "--max-pull-rows",
        type=int,
        default=None,
        help="memory budget of the exact refinement, in rows (default 5 000 000)",
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="also write the full result as JSON to PATH (or stdout when PATH is omitted)",
    )


def run(args: argparse.Namespace) -> int:
    from shadowlab.drift import compare_scores

    if args.bins < 2:
        raise UsageError(f"--bins must be an int >= 2. Got {args.bins} instead.")
    every = None if str(args.every).lower() in ("none", "all") else args.every
    logs = args.logs[0] if len(args.logs) == 1 else args.logs
    result = compare_scores(
        logs,
        reference=args.reference,
        every=every,
        by=args.by,
        bins=args.bins,
        max_pull_rows=args.max_pull_rows,
    )
    if args.json == "-":
        json.dump(result.to_dict(), sys.stdout, indent=2)
        print()
        return 0
    print(result)
    cols = [
        "window",
        *(args.by or []),
        "comparison",
        "model",
        "n_current",
        "ks_statistic",
        "psi",
        "wasserstein",
        "spearman",
        "discordant_share",
        "ks_pvalue",
    ]
    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, float_precision=4):
        print(result.table.select(cols).with_columns(pl.col("window").dt.date()))
    for note in result.notes:
        print(f"note: {note}")
    print(
        "note: candidate_vs_primary compares the same requests (dependent samples): read KS D "
        "and PSI as effect sizes; it has no p-value (the test assumes independent samples)."
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result.to_dict(), fh, indent=2)
        print(f"wrote {args.json}")
    return 0
