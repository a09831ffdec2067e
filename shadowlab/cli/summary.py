"""``shadowlab summary PATH``: scan and validate pair logs; print rows, days, models, traffic."""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from shadowlab.logs import DuplicateRequestsWarning, scan_pairs, summarize_logs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path", nargs="+", help="pair-log directory, glob or Parquet file(s) (validated)"
    )
    parser.add_argument(
        "--duplicates",
        choices=("error", "keep-first"),
        default="error",
        help="null or repeated request ids: fail (default) or keep each id's first row",
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="also write the summary as JSON to PATH (or stdout when PATH is omitted)",
    )


def run(args: argparse.Namespace) -> int:
    source = args.path[0] if len(args.path) == 1 else args.path
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DuplicateRequestsWarning)
        pairs = scan_pairs(source, duplicates=args.duplicates)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    summary = summarize_logs(pairs)
    if args.json == "-":
        json.dump(summary.to_dict(), sys.stdout, indent=2)
        print()
        return 0
    print(summary)
    if summary.by_day.height:
        print()
        print(summary.by_day)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(summary.to_dict(), fh, indent=2)
        print(f"\nwrote {args.json}")
    return 0
