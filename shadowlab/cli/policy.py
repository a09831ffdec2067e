"""``shadowlab init-policy [PATH]``: write the commented default gate policy."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shadowlab.cli import UsageError
from shadowlab.policy import default_policy_toml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path", metavar="PATH", nargs="?", default=None, help="file to write (default: stdout)"
    )
    parser.add_argument(
        "--primary-threshold",
        type=float,
        default=None,
        metavar="T",
        help="fill in v1's production threshold",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")


def run(args: argparse.Namespace) -> int:
    text = default_policy_toml()
    if args.primary_threshold is not None:
        text = text.replace("# primary = ...", f"primary = {float(args.primary_threshold)!r}", 1)
    if args.path is None:
        sys.stdout.write(text)
        return 0
    path = Path(args.path)
    if path.exists() and not args.force:
        raise UsageError(f"{path} exists; pass --force to overwrite it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(
        f"wrote {path}: edit thresholds.primary, the review queue and the limits, then run "
        f"`shadowlab gate LOGS --labels LABELS --policy {path} --out verdict.json`"
    )
    return 0
