"""``shadowlab simulate OUT``: write a synthetic shadow week (logs, labels, reference, truth).

Progress goes to stderr when stderr is a terminal (never with ``--quiet``); a short summary of
what was written goes to stdout (not with ``--quiet``); ``--json PATH`` writes the result.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import time
from typing import Any

from shadowlab.cli import UsageError

__all__ = ["add_arguments", "run"]


def _rows(text: str) -> int:
    """``300000``, ``300_000``, ``3e5`` or ``1M``/``10k`` -> int."""
    raw = text.strip().replace("_", "").replace(",", "")
    scale = 1
    if raw[-1:].lower() in ("k", "m"):
        scale = 1_000 if raw[-1].lower() == "k" else 1_000_000
        raw = raw[:-1]
    try:
        value = float(raw) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a row count: {text!r} (e.g. 300000, 3e5, 1M)"
        ) from None
    if not math.isfinite(value) or value != int(value) or value < 1:
        raise argparse.ArgumentTypeError(f"rows must be a whole number >= 1, got {text!r}")
    return int(value)


def _when(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO time: {text!r} (e.g. 2026-11-02T00:00:00Z)"
        ) from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a time zone, e.g. {text}Z for UTC")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from shadowlab.synth import DEFAULT_START, SCENARIOS

    parser.add_argument("out", metavar="OUT", help="output folder (created)")
    parser.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="trigger-shift",
        help="what v2 does in production (default: %(default)s)",
    )
    parser.add_argument(
        "--rows", type=_rows, default=1_000_000, help="requests in the week (default: 1M)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--traffic-pct",
        type=float,
        default=0.0,
        help="candidate share served, 0..1 (default: 0, pure shadow)",
    )
    parser.add_argument(
        "--audit-rate", type=float, default=0.01, help="audit slice, 0..1 (default: 0.01)"
    )
    parser.add_argument(
        "--start",
        type=_when,
        default=DEFAULT_START,
        help="week start, ISO with zone (default: 2026-11-02T00:00:00Z, a Monday)",
    )
    parser.add_argument("--days", type=int, default=7, help="length in days (default: 7)")
    parser.add_argument(
        "--as-of",
        type=_when,
        default=None,
        help="labels arriving later are not written (default: end of week + 3 days)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a week already in OUT")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument("--json", metavar="PATH", help="also write the result as JSON")


class _Progress:
    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.t0 = time.monotonic()
        self.last = -1.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last < 0.2:
            return
        self.last = now
        secs = now - self.t0
        rate = done / secs if secs > 0 else 0.0
        self.stream.write(
            f"\rsimulate: {100 * done / total:5.1f}%  {done:,}/{total:,} rows  "
            f"{secs:6.1f} s  {rate:,.0f} rows/s"
        )
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def run(args: argparse.Namespace) -> int:
    from shadowlab.synth import simulate_week

    progress = None
    if not args.quiet and sys.stderr.isatty():
        progress = _Progress(sys.stderr)
    t0 = time.monotonic()
    try:
        week = simulate_week(
            args.out,
            scenario=args.scenario,
            rows=args.rows,
            seed=args.seed,
            traffic_pct=args.traffic_pct,
            audit_rate=args.audit_rate,
            start=args.start,
            days=args.days,
            as_of=args.as_of,
            overwrite=args.overwrite,
            progress=progress,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    secs = time.monotonic() - t0
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(week.to_dict(), fh, indent=2)
            fh.write("\n")
    if not args.quiet:
        labels = ", ".join(f"{k} {v:,}" for k, v in week.labels.items())
        print(
            f"wrote {week.scenario} week to {week.out_dir} in {secs:.1f} s "
            f"({week.rows / secs:,.0f} rows/s)\n"
            f"  rows               {week.rows:,} ({week.start:%Y-%m-%d} .. {week.days} days)\n"
            f"  models             {week.primary_model} (primary) / "
            f"{week.candidate_model} (candidate)\n"
            f"  holdout AP         {week.primary_ap:.3f} / {week.candidate_ap:.3f}\n"
            f"  primary threshold  {week.primary_threshold:.6g}\n"
            f"  trigger rate       {week.primary_trigger_rate:.4f} / "
            f"{week.candidate_trigger_rate:.4f} (ratio {week.trigger_ratio:.2f})\n"
            f"  fraud rate         {week.fraud_rate:.4f}\n"
            f"  candidate errors   {week.candidate_errors:,}\n"
            f"  labels             {labels} (as of {week.as_of:%Y-%m-%d %H:%M} UTC)"
        )
    return 0
