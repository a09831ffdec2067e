"""The ``shadowlab`` command line: a thin layer over the library.

Each subcommand lives in its own module ``shadowlab.cli.<name>`` with two functions,
``add_arguments(parser)`` and ``run(args) -> int``. Exit codes: 0 success (for ``gate`` and
``verify``: a valid PASS), 1 a negative verdict, 2 bad usage or bad input.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "summary": ("shadowlab.cli.summary", "scan and validate pair logs; print rows, days, models"),
    "simulate": ("shadowlab.cli.simulate", "write a synthetic shadow week (logs, labels, truth)"),
    "compare": ("shadowlab.cli.compare", "compare score distributions (KS, PSI) by day/segment"),
    "calibrate": ("shadowlab.cli.calibrate", "v2 threshold that keeps v1's trigger rate"),
    "load": ("shadowlab.cli.load", "replay triggers into the review queue"),
    "feedback": ("shadowlab.cli.feedback", "selective-label and feedback-loop diagnostics"),
    "init-policy": ("shadowlab.cli.policy", "write a commented default gate policy"),
    "keygen": ("shadowlab.cli.keygen", "write an Ed25519 key pair for signing verdicts"),
    "gate": ("shadowlab.cli.gate", "run every check and write the signed verdict"),
    "verify": ("shadowlab.cli.verify", "verify a signed verdict and its inputs"),
    "report": ("shadowlab.cli.report", "write the offline HTML report"),
}


class UsageError(Exception):
    """Bad usage or bad input: printed as one clear message, exit code 2."""


def _parser(available: dict[str, object]) -> argparse.ArgumentParser:
    from shadowlab import __version__

    parser = argparse.ArgumentParser(
        prog="shadowlab",
        description="Decide from shadow-stage pair logs whether a candidate may go to canary.",
    )
    parser.add_argument("--version", action="version", version=f"shadowlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in available.items():
        p = sub.add_parser(name, help=COMMANDS[name][1], description=COMMANDS[name][1])
        module.add_arguments(p)  # type: ignore[attr-defined]
        p.set_defaults(_run=module.run)  # type: ignore[attr-defined]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``shadowlab`` console script; returns the exit code."""
    available = {}
    for name, (module_name, _) in COMMANDS.items():
        try:
            available[name] = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
    parser = _parser(available)
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args._run(args))
    except UsageError as exc:
        print(f"shadowlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, OSError) as exc:
        print(f"shadowlab {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
