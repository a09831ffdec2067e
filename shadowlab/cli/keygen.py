"""``shadowlab keygen PATH``: write an Ed25519 key pair for signing gate verdicts."""

from __future__ import annotations

import argparse

from shadowlab.cli import UsageError
from shadowlab.signing import ENV_SIGNING_KEY, generate_keypair, key_id, load_public_key


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path", metavar="PATH", help="private key file; the public key goes to PATH.pub"
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing key files")


def run(args: argparse.Namespace) -> int:
    try:
        private_path, public_path = generate_keypair(args.path, overwrite=args.force)
    except FileExistsError as exc:
        raise UsageError(str(exc)) from exc
    kid = key_id(load_public_key(public_path))
    print(f"private key  {private_path}  (mode 0600; keep it secret, e.g. a CI secret)")
    print(f"public key   {public_path}  (give it to whoever verifies verdicts)")
    print(f"key id       {kid}")
    print(
        f"sign with    shadowlab gate ... --key {private_path}   or   ${ENV_SIGNING_KEY}=<PEM text>"
    )
    return 0
