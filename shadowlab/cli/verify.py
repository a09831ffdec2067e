"""``shadowlab verify VERDICT --public-key KEY [--logs PATH ...]``: check a signed verdict.

Exit 0 only for a valid PASS: the signature verifies with KEY (or the statement is unsigned and
``--allow-unsigned`` was given), the re-hashed inputs (when given) match the statement's subjects,
and the verdict is PASS. Exit 1 otherwise, 2 for bad usage or an unreadable file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from shadowlab.cli import UsageError
from shadowlab.signing import SigningError, load_public_key, read_envelope, verify_envelope


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "verdict", metavar="VERDICT", help="envelope written by `shadowlab gate --out`"
    )
    parser.add_argument("--public-key", metavar="KEY", help="Ed25519 public key (PEM, PATH.pub)")
    parser.add_argument("--logs", nargs="+", metavar="PATH", help="re-hash these pair logs")
    parser.add_argument("--labels", nargs="+", metavar="PATH", help="re-hash these label files")
    parser.add_argument("--reference", metavar="PATH", help="re-hash this reference file")
    parser.add_argument("--policy", metavar="PATH", help="re-hash this policy file")
    parser.add_argument(
        "--allow-unsigned", action="store_true", help="accept a statement written without a key"
    )
    parser.add_argument(
        "--json", metavar="PATH", help="write the verification as JSON ('-': stdout)"
    )


def run(args: argparse.Namespace) -> int:
    if args.public_key is None and not args.allow_unsigned:
        raise UsageError(
            "--public-key KEY is required (or --allow-unsigned for unsigned verdicts)."
        )
    try:
        envelope = read_envelope(args.verdict)
        key = None if args.public_key is None else load_public_key(args.public_key)
        inputs = {
            "pairs": args.logs,
            "labels": args.labels,
            "reference": args.reference,
            "policy": args.policy,
        }
        result = verify_envelope(
            envelope,
            key,
            inputs={k: v for k, v in inputs.items() if v is not None} or None,
            allow_unsigned=args.allow_unsigned,
        )
    except SigningError as exc:
        raise UsageError(str(exc)) from exc
    if args.json == "-":
        print(json.dumps(result.to_dict(), indent=2))
    else:
        if args.json:
            Path(args.json).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        if not result.signed:
            sig = "unsigned" + (" (accepted: --allow-unsigned)" if args.allow_unsigned else "")
        elif result.signature_valid:
            sig = f"valid Ed25519 signature, key id {result.keyid[:16]}…"
        else:
            sig = "INVALID signature"
        print(f"signature  {sig}")
        if result.inputs is None:
            print("inputs     not re-hashed (pass --logs/--labels/--reference/--policy)")
        elif result.inputs.ok:
            print(f"inputs     match ({', '.join(result.inputs.roles)})")
        else:
            for what in ("changed", "missing", "extra"):
                for name in getattr(result.inputs, what):
                    print(f"inputs     {what}: {name}")
        predicate = (result.statement or {}).get("predicate") or {}
        for c in predicate.get("checks", []):
            print(f"  {c.get('status', '?'):<13} {c.get('name', '?')}")
        print(f"verdict    {result.verdict or 'missing'}")
        for p in result.problems:
            print(f"problem    {p}")
        print("OK: valid PASS" if result.ok else "NOT OK: do not promote")
    return 0 if result.ok else 1
