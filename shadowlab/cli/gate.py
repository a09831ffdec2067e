"""``shadowlab gate LOGS --labels LABELS --out verdict.json``: run the checks, write the verdict.

Exit codes: 0 PASS, 1 FAIL or INCONCLUSIVE, 2 bad usage or bad input. The verdict is written as
an in-toto statement in a DSSE envelope, signed when a key is given (``--key FILE`` or the
``SHADOWLAB_SIGNING_KEY`` environment variable holding the PEM text), unsigned otherwise.

In CI (GitHub Actions), the gate job fails on a negative verdict and the deploy job verifies the
signed verdict against the same logs before it starts a canary::

    gate:
      runs-on: ubuntu-latest
      steps:
        - uses: actions/checkout@v4
        - run: pip install shadowlab
        - name: Shadow gate (exit 1 on FAIL/INCONCLUSIVE fails the job)
          env:
            SHADOWLAB_SIGNING_KEY: ${{ secrets.SHADOWLAB_SIGNING_KEY }}
          run: >
            shadowlab gate logs/pairs --labels logs/labels --reference eval/reference.parquet
            --policy gate.toml --out verdict.json
        - uses: actions/upload-artifact@v4
          with: {name: verdict, path: verdict.json}
    canary:
      needs: gate
      steps:
        - uses: actions/download-artifact@v4
          with: {name: verdict}
        - run: >
            shadowlab verify verdict.json --public-key keys/gate.pub
            --logs logs/pairs --labels logs/labels --policy gate.toml
        - run: ./deploy-canary.sh
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor

from shadowlab.cli import UsageError
from shadowlab.signing import (
    ENV_SIGNING_KEY,
    SigningError,
    hash_inputs,
    key_id,
    load_private_key,
    make_statement,
    sign_statement,
    unsigned_envelope,
    write_envelope,
)


def _candidate(value: str) -> float | str:
    if value == "calibrate":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a number or 'calibrate', got {value!r}"
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "logs", nargs="+", metavar="LOGS", help="pair logs: directory, glob or files"
    )
    parser.add_argument("--labels", nargs="+", required=True, metavar="LABELS", help="label files")
    parser.add_argument("--reference", metavar="REF", help="v2's offline eval scores (Parquet)")
    parser.add_argument(
        "--policy", metavar="TOML", help="gate policy (default: documented defaults)"
    )
    parser.add_argument(
        "--out", required=True, metavar="PATH", help="write the verdict envelope here"
    )
    parser.add_argument(
        "--key",
        metavar="KEY",
        help=f"Ed25519 private key file (or set ${ENV_SIGNING_KEY}); without one the verdict is "
        "written unsigned",
    )
    parser.add_argument("--primary-threshold", type=float, metavar="T", help="v1's threshold")
    parser.add_argument(
        "--candidate-threshold", type=_candidate, metavar="T|calibrate", help="v2's threshold"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the verdict as JSON instead of the table"
    )
    parser.add_argument(
        "--engine",
        choices=("polars", "spark"),
        default="polars",
        help="where the summaries run: polars on this machine, or Apache Spark (same verdict)",
    )
    parser.add_argument(
        "--spark-master",
        metavar="URL",
        help="Spark master with --engine spark (default local[2]; e.g. spark://host:7077, yarn)",
    )


def _inputs(args: argparse.Namespace) -> tuple[object, object]:
    """The pairs (lazy polars frame or Spark DataFrame) and labels the gate reads."""
    from shadowlab.logs import scan_pairs

    logs = args.logs if len(args.logs) > 1 else args.logs[0]
    labels = args.labels if len(args.labels) > 1 else args.labels[0]
    if args.engine == "polars":
        if args.spark_master:
            raise UsageError("--spark-master goes with --engine spark.")
        return scan_pairs(logs), labels
    try:
        from shadowlab.engines.spark import collect_labels, read_labels, read_pairs, spark_session

        spark = spark_session(args.spark_master or "local[2]")
    except (ModuleNotFoundError, RuntimeError) as exc:
        raise UsageError(
            f"--engine spark needs pyspark and Java: {exc}. Fix: pip install 'shadowlab[spark]' "
            "and install a Java runtime (e.g. Debian's openjdk-17-jre-headless)."
        ) from exc
    # Labels are a few percent of a week: read and checked by Spark, finished on the driver.
    return read_pairs(spark, logs), collect_labels(read_labels(spark, labels))


def run(args: argparse.Namespace) -> int:
    from shadowlab.gate import run_gate
    from shadowlab.policy import load_policy

    try:
        key = load_private_key(args.key)
    except SigningError as exc:
        raise UsageError(str(exc)) from exc
    policy = load_policy(args.policy)
    if args.primary_threshold is None and policy.thresholds.primary is None:
        raise UsageError(
            "v1's production threshold is missing: set [thresholds] primary in the policy or "
            "pass --primary-threshold."
        )
    reference = args.reference or policy.reference_path()
    inputs = {
        "pairs": args.logs,
        "labels": args.labels,
        "reference": None if reference is None else str(reference),
        "policy": args.policy,
    }
    from shadowlab.gate import CHECKS
    from shadowlab.progress import Progress

    pairs, labels = _inputs(args)

    # The statement names the bytes the gate reads: they are hashed (sha256 releases the GIL)
    # in a thread that starts before the analysis reads them and runs beside it (a week of
    # 50 M pairs is ~1.8 GB: ~1.9 s of hashing that no longer adds to the gate's wall time).
    with ThreadPoolExecutor(max_workers=1) as pool:
        hashing = pool.submit(hash_inputs, inputs)
        # A bar on a terminal only (never with --json, whose stdout a machine reads).
        with Progress(len(CHECKS) + 2, label="gate", enabled=False if args.json else None) as bar:
            verdict = run_gate(
                pairs,
                labels,
                reference=reference,
                policy=policy,
                primary_threshold=args.primary_threshold,
                candidate_threshold=args.candidate_threshold,
                progress=bar,
            )
        subjects = hashing.result()
    statement = make_statement(subjects, verdict.predicate())
    if key is None:
        envelope = unsigned_envelope(statement)
        signed_note = (
            f"UNSIGNED: no key (--key or ${ENV_SIGNING_KEY}); `shadowlab verify` refuses it "
            "without --allow-unsigned"
        )
    else:
        envelope = sign_statement(statement, key)
        signed_note = f"signed: Ed25519 key id {key_id(key.public_key())[:16]}…"
    out = write_envelope(envelope, args.out)
    if args.json:
        print(
            json.dumps(
                {
                    "verdict": verdict.verdict,
                    "sign": verdict.sign,
                    "signed": key is not None,
                    "out": str(out),
                    "subjects": len(subjects),
                    "predicate": statement["predicate"],
                },
                indent=2,
            )
        )
    else:
        print(verdict.summary())
        print(f"wrote {out} ({len(subjects)} input files hashed); {signed_note}")
    return 0 if verdict.verdict == "PASS" else 1
