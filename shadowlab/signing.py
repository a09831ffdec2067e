"""Signed, verifiable gate verdicts: in-toto Statement v1 in a DSSE envelope, Ed25519.

The gate's verdict is an in-toto Statement [1]_ whose subjects are every input file (pair logs,
labels, reference, policy) with its SHA-256, and whose predicate holds the verdict. The statement is
serialised to JSON and wrapped in a DSSE envelope [2]_: the signature is Ed25519 [3]_ (via
``cryptography``) over the DSSE pre-authentication encoding
``PAE(type, body) = "DSSEv1" SP len(type) SP type SP len(body) SP body``.

Subject names are stable and relative: ``<role>/<path inside the argument>``, e.g.
``pairs/date=2026-11-02/part-0.parquet`` for a directory argument and ``policy/gate.toml`` for a
file, so a verdict verifies on another machine where the same files sit elsewhere.

The key id is securesystemslib's default key id (SHA-256 of the canonical JSON of the public key),
so ``securesystemslib.dsse.Envelope.verify`` accepts shadowlab's envelopes as they are.

References
----------
.. [1] in-toto Attestation Framework, Statement v1:
       https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md
.. [2] DSSE: Dead Simple Signing Envelope, protocol and envelope:
       https://github.com/secure-systems-lab/dsse/blob/master/protocol.md
.. [3] S. Josefsson and I. Liusvaara, "Edwards-Curve Digital Signature Algorithm (EdDSA)",
       RFC 8032, 2017.
"""

from __future__ import annotations

import base64
import binascii
import glob
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "ENV_SIGNING_KEY",
    "INPUT_ROLES",
    "PAYLOAD_TYPE",
    "PREDICATE_TYPE",
    "STATEMENT_TYPE",
    "InputCheck",
    "SigningError",
    "Verification",
    "generate_keypair",
    "hash_inputs",
    "key_id",
    "load_private_key",
    "load_public_key",
    "make_statement",
    "pae",
    "read_envelope",
    "sign_statement",
    "unsigned_envelope",
    "verify_envelope",
    "write_envelope",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
PREDICATE_TYPE = "https://shadowlab.dev/gate-verdict/v1"
ENV_SIGNING_KEY = "SHADOWLAB_SIGNING_KEY"
"""Environment variable that may hold the PEM text of the Ed25519 private key."""

INPUT_ROLES = ("pairs", "labels", "reference", "policy")
"""Roles of the gate's input files; the first component of every subject name."""


class SigningError(ValueError):
    """A key, envelope or statement is unusable (message says which and why)."""


# --- DSSE -------------------------------------------------------------------------------------


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding of ``payload`` (what is signed) [2]_."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise SigningError(f"The envelope's {what} must be a base64 string.")
    try:
        # DSSE allows standard or URL-safe base64, padded or not.
        text = text.replace("-", "+").replace("_", "/")
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SigningError(f"The envelope's {what} is not valid base64.") from exc


# --- keys ---------------------------------------------------------------------------------------


def key_id(public_key: Ed25519PublicKey) -> str:
    """securesystemslib's default key id: SHA-256 of the canonical JSON of the public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    canonical = json.dumps(
        {"keytype": "ed25519", "keyval": {"public": raw.hex()}, "scheme": "ed25519"},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def generate_keypair(path: str | Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair: the private key (PKCS#8 PEM, mode 0600) to ``path`` and the
    public key (SubjectPublicKeyInfo PEM) to ``path.pub``. Returns both paths.

    Raises
    ------
    FileExistsError
        When either file exists and ``overwrite`` is false.
    """
    private_path = Path(path)
    public_path = Path(f"{private_path}.pub")
    if not overwrite:
        for p in (private_path, public_path):
            if p.exists():
                raise FileExistsError(
                    f"{p} exists; refusing to overwrite a key (pass overwrite=True / --force)."
                )
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(private_path, flags, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.chmod(private_path, 0o600)
    public_path.write_bytes(pub)
    return private_path, public_path


def load_private_key(
    path: str | Path | None = None, *, environ: Mapping[str, str] | None = None
) -> Ed25519PrivateKey | None:
    """The signing key: from the PEM file ``path``, else from the ``SHADOWLAB_SIGNING_KEY``
    environment variable (its PEM text), else ``None`` (the verdict will be unsigned).

    The key is never taken from a command-line value, which would leak into process listings and
    shell history.
    """
    env = os.environ if environ is None else environ
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Signing key file {str(path)!r} does not exist.")
        data, where = path.read_bytes(), str(path)
    elif env.get(ENV_SIGNING_KEY):
        data, where = env[ENV_SIGNING_KEY].encode("utf-8"), f"${ENV_SIGNING_KEY}"
    else:
        return None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(
            f"{where} is not an unencrypted PEM private key ({exc}). "
            "Create one with `shadowlab keygen PATH`."
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{where} holds a {type(key).__name__}; shadowlab signs with Ed25519.")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """Read an Ed25519 public key (PEM, as ``shadowlab keygen`` writes to ``PATH.pub``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Public key file {str(path)!r} does not exist.")
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except ValueError as exc:
        raise SigningError(f"{path} is not a PEM public key ({exc}).") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(f"{path} holds a {type(key).__name__}; expected an Ed25519 public key.")
    return key


# --- subjects -----------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _files_of(role: str, spec: str | Path) -> tuple[Path, list[Path]]:
    """The files of one input argument (file, directory or glob) and the root they are named
    relative to: the directory itself, a file's parent, or a glob's static prefix."""
    spec_s = str(spec)
    p = Path(spec_s)
    if p.is_dir():
        return p, [f for f in sorted(p.rglob("*")) if f.is_file()]
    if p.is_file():
        return p.parent, [p]
    if glob.has_magic(spec_s):
        parts = p.parts
        static = parts[: next(i for i, q in enumerate(parts) if glob.has_magic(q))]
        root = Path(*static) if static else Path(".")
        files = [Path(m) for m in sorted(glob.glob(spec_s, recursive=True)) if Path(m).is_file()]
        if not files:
            raise FileNotFoundError(f"No {role} files match {spec_s!r}.")
        return root, files
    raise FileNotFoundError(f"The {role} input {spec_s!r} does not exist.")


def hash_inputs(inputs: Mapping[str, str | Path | Sequence[str | Path] | None]) -> list[dict]:
    """In-toto subjects for the gate's input files: ``[{"name", "digest": {"sha256"}}]``.

    Parameters
    ----------
    inputs : mapping of role to path(s)
        Roles from :data:`INPUT_ROLES`; each value a file, a directory (every file under it, hidden
        ones included, so nothing can be slipped in beside the data), a glob, a list of those, or
        ``None``.

    Returns
    -------
    list of dict
        Sorted by name; names are ``<role>/<relative path>``: relative to a directory argument,
        to a file argument's directory, to a glob's static prefix, or, for several arguments of
        one role, to their common directory.
    """
    named: dict[str, Path] = {}
    for role, specs in inputs.items():
        if role not in INPUT_ROLES:
            raise ValueError(
                f"The 'inputs' parameter of hash_inputs takes roles {INPUT_ROLES}. Got {role!r}."
            )
        if specs is None:
            continue
        if isinstance(specs, str | Path):
            specs = [specs]
        found = [_files_of(role, spec) for spec in specs]
        # Several arguments (e.g. a shell-expanded glob) are named relative to their common
        # directory, so `date=.../part-0.parquet` keeps its partition and names do not collide.
        roots = {os.path.abspath(root) for root, _ in found}
        common = Path(os.path.commonpath(sorted(roots))) if len(roots) > 1 else None
        for root, files in found:
            for f in files:
                rel = (
                    f.relative_to(root)
                    if common is None
                    else Path(os.path.abspath(f)).relative_to(common)
                )
                name = f"{role}/{rel.as_posix()}"
                if name in named and named[name].resolve() != f.resolve():
                    raise ValueError(
                        f"Two {role} inputs map to the same subject name {name!r}; "
                        "pass their common directory instead."
                    )
                named[name] = f
    return [{"name": n, "digest": {"sha256": _sha256(named[n])}} for n in sorted(named)]


# --- statements and envelopes -------------------------------------------------------------------


def make_statement(subjects: Iterable[Mapping[str, Any]], predicate: Mapping[str, Any]) -> dict:
    """An in-toto Statement v1 with shadowlab's gate-verdict predicate type."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [dict(s) for s in subjects],
        "predicateType": PREDICATE_TYPE,
        "predicate": dict(predicate),
    }


def _serialise(statement: Mapping[str, Any]) -> bytes:
    # Deterministic bytes: sorted keys, no NaN (JSON has none), UTF-8.
    return json.dumps(statement, sort_keys=True, allow_nan=False, ensure_ascii=False).encode()


def sign_statement(statement: Mapping[str, Any], private_key: Ed25519PrivateKey) -> dict:
    """Wrap ``statement`` in a DSSE envelope signed with ``private_key`` (Ed25519 over the PAE)."""
    payload = _serialise(statement)
    sig = private_key.sign(pae(PAYLOAD_TYPE, payload))
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": _b64(payload),
        "signatures": [{"keyid": key_id(private_key.public_key()), "sig": _b64(sig)}],
    }


def unsigned_envelope(statement: Mapping[str, Any]) -> dict:
    """The same envelope with no signature (written when no key is available)."""
    return {"payloadType": PAYLOAD_TYPE, "payload": _b64(_serialise(statement)), "signatures": []}


def write_envelope(envelope: Mapping[str, Any], path: str | Path) -> Path:
    """Write an envelope as JSON (one object, trailing newline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(envelope, indent=2) + "\n", encoding="utf-8")
    return path


def read_envelope(path: str | Path) -> dict:
    """Read an envelope file; raise :class:`SigningError` when it is not a DSSE envelope."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Verdict file {str(path)!r} does not exist.")
    try:
        envelope = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SigningError(f"{path} is not JSON: {exc}.") from exc
    if not isinstance(envelope, dict) or not {"payload", "payloadType", "signatures"} <= set(
        envelope
    ):
        raise SigningError(
            f"{path} is not a DSSE envelope (needs payload, payloadType and signatures); "
            "pass the file `shadowlab gate --out` wrote."
        )
    return envelope


# --- verification -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InputCheck:
    """Re-hashed inputs against the statement's subjects, for the roles that were given."""

    roles: tuple[str, ...]
    changed: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not (self.changed or self.missing or self.extra)

    def to_dict(self) -> dict[str, Any]:
        return {
            "roles": list(self.roles),
            "changed": list(self.changed),
            "missing": list(self.missing),
            "extra": list(self.extra),
            "ok": self.ok,
        }


@dataclass(frozen=True, slots=True)
class Verification:
    """Outcome of :func:`verify_envelope`.

    Attributes
    ----------
    ok : bool
        True only for a trustworthy PASS: a valid signature by the given key (or an unsigned
        statement with ``allow_unsigned``), a well-formed gate statement, matching inputs (when
        given) and a PASS verdict.
    signed, signature_valid : bool
    keyid : str or None
    verdict : str or None
        ``"PASS"``, ``"FAIL"`` or ``"INCONCLUSIVE"`` as stated (only trust it when ``ok``).
    statement : dict or None
        The decoded statement (``None`` when the payload could not be decoded).
    inputs : InputCheck or None
    problems : tuple of str
        Every reason ``ok`` is false, in plain words.
    """

    ok: bool
    signed: bool
    signature_valid: bool
    keyid: str | None
    verdict: str | None
    statement: dict | None = field(repr=False)
    inputs: InputCheck | None
    problems: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "signed": self.signed,
            "signature_valid": self.signature_valid,
            "keyid": self.keyid,
            "verdict": self.verdict,
            "inputs": None if self.inputs is None else self.inputs.to_dict(),
            "problems": list(self.problems),
        }


def _check_inputs(statement: dict, inputs: Mapping[str, Any]) -> InputCheck:
    stated = {
        s.get("name"): (s.get("digest") or {}).get("sha256")
        for s in statement.get("subject", [])
        if isinstance(s, dict)
    }
    given_roles = tuple(r for r, v in inputs.items() if v is not None)
    actual = {s["name"]: s["digest"]["sha256"] for s in hash_inputs(inputs)}
    in_roles = {n: d for n, d in stated.items() if str(n).split("/", 1)[0] in given_roles}
    changed = tuple(sorted(n for n in in_roles if n in actual and actual[n] != in_roles[n]))
    missing = tuple(sorted(n for n in in_roles if n not in actual))
    extra = tuple(sorted(n for n in actual if n not in in_roles))
    return InputCheck(roles=given_roles, changed=changed, missing=missing, extra=extra)


def verify_envelope(
    envelope: Mapping[str, Any] | str | Path,
    public_key: Ed25519PublicKey | None,
    *,
    inputs: Mapping[str, Any] | None = None,
    allow_unsigned: bool = False,
) -> Verification:
    """Verify a gate verdict envelope: signature, statement, inputs and verdict.

    Parameters
    ----------
    envelope : dict or path
        The DSSE envelope (as written by ``shadowlab gate --out``).
    public_key : Ed25519PublicKey or None
        The signer's public key; ``None`` only makes sense with ``allow_unsigned``.
    inputs : mapping of role to path(s), optional
        Re-hash these inputs (roles as in :func:`hash_inputs`) and compare them with the subjects of
        the same roles: changed, missing and extra files are named.
    allow_unsigned : bool, default False
        Accept an unsigned statement (refused otherwise).

    Returns
    -------
    Verification
    """
    if isinstance(envelope, str | Path):
        envelope = read_envelope(envelope)
    problems: list[str] = []
    payload_type = envelope.get("payloadType")
    payload = _unb64(envelope.get("payload"), "payload")
    sigs = envelope.get("signatures") or []
    if not isinstance(sigs, list):
        raise SigningError("The envelope's signatures must be a list.")
    signed = bool(sigs)
    valid = False
    keyid = None
    if payload_type != PAYLOAD_TYPE:
        problems.append(f"payloadType is {payload_type!r}, expected {PAYLOAD_TYPE!r}")
    if signed:
        if public_key is None:
            problems.append("the statement is signed but no public key was given")
        else:
            message = pae(str(payload_type), payload)
            for s in sigs:
                try:
                    public_key.verify(_unb64(s.get("sig"), "signature"), message)
                except (InvalidSignature, SigningError, AttributeError):
                    continue
                valid, keyid = True, s.get("keyid")
                break
            if not valid:
                problems.append("no signature verifies with the given public key")
    elif not allow_unsigned:
        problems.append("the statement is unsigned (pass --allow-unsigned to accept it)")
    statement = None
    verdict = None
    try:
        statement = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        problems.append("the payload is not JSON")
    if statement is not None:
        if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
            problems.append(f"the payload is not an in-toto Statement v1 ({STATEMENT_TYPE})")
        elif statement.get("predicateType") != PREDICATE_TYPE:
            problems.append(f"predicateType is {statement.get('predicateType')!r}")
        else:
            verdict = (statement.get("predicate") or {}).get("verdict")
    input_check = None
    if statement is not None and inputs:
        input_check = _check_inputs(statement, inputs)
        for what in ("changed", "missing", "extra"):
            names = getattr(input_check, what)
            if names:
                problems.append(f"{what} input files: {', '.join(names)}")
    if verdict != "PASS":
        problems.append(f"the verdict is {verdict or 'missing'}, not PASS")
    return Verification(
        ok=not problems,
        signed=signed,
        signature_valid=valid,
        keyid=keyid,
        verdict=verdict,
        statement=statement if isinstance(statement, dict) else None,
        inputs=input_check,
        problems=tuple(problems),
    )
