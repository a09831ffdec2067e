"""In-toto/DSSE signing: PAE, Ed25519, interop with securesystemslib, tamper detection, CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shadowlab.cli import main
from shadowlab.signing import (
    ENV_SIGNING_KEY,
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    SigningError,
    generate_keypair,
    hash_inputs,
    key_id,
    load_private_key,
    load_public_key,
    make_statement,
    pae,
    sign_statement,
    unsigned_envelope,
    verify_envelope,
    write_envelope,
)


@pytest.fixture
def inputs(tmp_path):
    pairs = tmp_path / "logs" / "pairs"
    for day in ("2026-11-02", "2026-11-03"):
        (pairs / f"date={day}").mkdir(parents=True)
        (pairs / f"date={day}" / "part-0.parquet").write_bytes(f"pairs {day}".encode())
    labels = tmp_path / "logs" / "labels"
    labels.mkdir()
    (labels / "labels-0.parquet").write_bytes(b"labels")
    policy = tmp_path / "gate.toml"
    policy.write_text("[thresholds]\nprimary = 0.8\n")
    return {"pairs": pairs, "labels": labels, "policy": policy}


@pytest.fixture
def keys(tmp_path):
    return generate_keypair(tmp_path / "keys" / "gate.key")


def _statement(inputs, verdict="PASS"):
    return make_statement(hash_inputs(inputs), {"verdict": verdict, "sign": 1, "checks": []})


def test_pae_matches_dsse_spec_example():
    # DSSE protocol.md test vector: PAE("http://example.com/HelloWorld", "hello world")
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_subjects_are_relative_sorted_and_hashed(inputs):
    subjects = hash_inputs(inputs)
    names = [s["name"] for s in subjects]
    assert names == [
        "labels/labels-0.parquet",
        "pairs/date=2026-11-02/part-0.parquet",
        "pairs/date=2026-11-03/part-0.parquet",
        "policy/gate.toml",
    ]
    assert subjects[1]["digest"]["sha256"] == hashlib.sha256(b"pairs 2026-11-02").hexdigest()
    # a glob names files relative to its static prefix, like the directory does
    glob_subjects = hash_inputs({"pairs": str(inputs["pairs"]) + "/*/*.parquet"})
    assert [s["name"] for s in glob_subjects] == names[1:3]


def test_hash_inputs_errors(tmp_path, inputs):
    with pytest.raises(FileNotFoundError, match="pairs input"):
        hash_inputs({"pairs": tmp_path / "nope"})
    with pytest.raises(ValueError, match="roles"):
        hash_inputs({"logs": inputs["pairs"]})


def test_several_arguments_are_named_relative_to_their_common_directory(tmp_path, inputs):
    # a shell-expanded glob gives the same names as the directory itself
    parts = sorted(str(p) for p in inputs["pairs"].rglob("*.parquet"))
    assert hash_inputs({"pairs": parts}) == hash_inputs({"pairs": inputs["pairs"]})
    other = tmp_path / "other"
    other.mkdir()
    (other / "gate.toml").write_text("x")
    names = [s["name"] for s in hash_inputs({"policy": [inputs["policy"], other / "gate.toml"]})]
    assert names == ["policy/gate.toml", "policy/other/gate.toml"]
    # the same file twice is one subject
    assert len(hash_inputs({"policy": [inputs["policy"], inputs["policy"]]})) == 1


def test_keygen_files(tmp_path, keys):
    private_path, public_path = keys
    assert public_path.name == "gate.key.pub"
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in private_path.read_bytes()
    assert b"BEGIN PUBLIC KEY" in public_path.read_bytes()
    sk = load_private_key(private_path)
    assert key_id(sk.public_key()) == key_id(load_public_key(public_path))
    with pytest.raises(FileExistsError):
        generate_keypair(private_path)


def test_private_key_from_env_and_errors(tmp_path, keys):
    private_path, public_path = keys
    pem = private_path.read_text()
    sk = load_private_key(environ={ENV_SIGNING_KEY: pem})
    assert key_id(sk.public_key()) == key_id(load_public_key(public_path))
    assert load_private_key(environ={}) is None
    with pytest.raises(SigningError, match=ENV_SIGNING_KEY):
        load_private_key(environ={ENV_SIGNING_KEY: "not a key"})
    with pytest.raises(SigningError, match="Ed25519"):
        load_public_key(_write_rsa_pub(tmp_path))


def _write_rsa_pub(tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pub = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    path = tmp_path / "rsa.pub"
    path.write_bytes(
        pub.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def test_sign_and_verify_round_trip(inputs, keys):
    sk = load_private_key(keys[0])
    pk = load_public_key(keys[1])
    env = sign_statement(_statement(inputs), sk)
    assert env["payloadType"] == PAYLOAD_TYPE
    stmt = json.loads(base64.b64decode(env["payload"]))
    assert stmt["_type"] == STATEMENT_TYPE and stmt["predicateType"] == PREDICATE_TYPE
    res = verify_envelope(env, pk, inputs=inputs)
    assert res.ok and res.signature_valid and res.verdict == "PASS", res.problems
    assert res.inputs.ok and set(res.inputs.roles) == {"pairs", "labels", "policy"}
    # a wrong key does not verify
    other = Ed25519PrivateKey.generate().public_key()
    res = verify_envelope(env, other)
    assert not res.ok and not res.signature_valid
    assert "no signature verifies" in " ".join(res.problems)


def test_interop_with_securesystemslib(inputs, keys):
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError
    from securesystemslib.signer import SSlibKey

    sk = load_private_key(keys[0])
    env = sign_statement(_statement(inputs), sk)
    sslib_key = SSlibKey.from_crypto(load_public_key(keys[1]))
    assert sslib_key.keyid == env["signatures"][0]["keyid"]  # same default key id
    parsed = Envelope.from_dict(json.loads(json.dumps(env)))
    assert parsed.pae() == pae(PAYLOAD_TYPE, base64.b64decode(env["payload"]))
    accepted = parsed.verify([sslib_key], 1)
    assert list(accepted) == [sslib_key.keyid]
    # securesystemslib rejects a tampered payload too
    bad = dict(env, payload=base64.b64encode(base64.b64decode(env["payload"]) + b" ").decode())
    with pytest.raises(VerificationError):
        Envelope.from_dict(json.loads(json.dumps(bad))).verify([sslib_key], 1)


def test_securesystemslib_signed_envelope_verifies_with_shadowlab(inputs):
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import CryptoSigner

    signer = CryptoSigner.generate_ed25519()
    payload = json.dumps(_statement(inputs), sort_keys=True).encode()
    env = Envelope(payload, PAYLOAD_TYPE, {})
    env.sign(signer)
    pk = signer.public_key._crypto_key()
    res = verify_envelope(env.to_dict(), pk)
    assert res.ok and res.keyid == signer.public_key.keyid, res.problems


def _flip(b64: str, index: int) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize("index", [0, 17, -2])
def test_one_byte_of_payload_tampered_is_detected(inputs, keys, index):
    env = sign_statement(_statement(inputs), load_private_key(keys[0]))
    env["payload"] = _flip(env["payload"], index)
    res = verify_envelope(env, load_public_key(keys[1]))
    assert not res.ok and not res.signature_valid


@pytest.mark.parametrize("index", [0, 31, 63])
def test_one_byte_of_signature_tampered_is_detected(inputs, keys, index):
    env = sign_statement(_statement(inputs), load_private_key(keys[0]))
    env["signatures"][0]["sig"] = _flip(env["signatures"][0]["sig"], index)
    res = verify_envelope(env, load_public_key(keys[1]))
    assert not res.ok and not res.signature_valid


def test_payload_type_is_bound_by_the_signature(inputs, keys):
    env = sign_statement(_statement(inputs), load_private_key(keys[0]))
    env["payloadType"] = "application/json"
    assert not verify_envelope(env, load_public_key(keys[1])).signature_valid


def test_one_byte_of_an_input_changed_missing_or_extra_is_named(inputs, keys):
    env = sign_statement(_statement(inputs), load_private_key(keys[0]))
    pk = load_public_key(keys[1])
    part = inputs["pairs"] / "date=2026-11-03" / "part-0.parquet"
    data = bytearray(part.read_bytes())
    data[3] ^= 0x01
    part.write_bytes(bytes(data))
    res = verify_envelope(env, pk, inputs=inputs)
    assert res.signature_valid and not res.ok
    assert res.inputs.changed == ("pairs/date=2026-11-03/part-0.parquet",)
    (inputs["labels"] / "labels-0.parquet").unlink()
    (inputs["labels"] / "labels-1.parquet").write_bytes(b"new")
    res = verify_envelope(env, pk, inputs=inputs)
    assert res.inputs.missing == ("labels/labels-0.parquet",)
    assert res.inputs.extra == ("labels/labels-1.parquet",)
    assert "missing input files: labels/labels-0.parquet" in res.problems
    # only the roles given are compared
    res = verify_envelope(env, pk, inputs={"policy": inputs["policy"]})
    assert res.ok and res.inputs.roles == ("policy",)


def test_unsigned_is_refused_unless_allowed(inputs, keys):
    env = unsigned_envelope(_statement(inputs))
    pk = load_public_key(keys[1])
    res = verify_envelope(env, pk)
    assert not res.ok and not res.signed
    assert "unsigned" in res.problems[0]
    assert verify_envelope(env, None, allow_unsigned=True).ok
    # stripping the signature off a signed envelope gives the same refusal
    signed = sign_statement(_statement(inputs), load_private_key(keys[0]))
    signed["signatures"] = []
    assert not verify_envelope(signed, pk).ok


def test_valid_signature_on_a_fail_verdict_is_not_ok(inputs, keys):
    env = sign_statement(_statement(inputs, verdict="FAIL"), load_private_key(keys[0]))
    res = verify_envelope(env, load_public_key(keys[1]))
    assert res.signature_valid and not res.ok
    assert "the verdict is FAIL, not PASS" in res.problems


def test_statement_serialisation_is_deterministic(inputs, keys):
    sk = load_private_key(keys[0])
    a = sign_statement(_statement(inputs), sk)
    b = sign_statement(_statement(inputs), sk)
    assert a == b  # Ed25519 is deterministic (RFC 8032) and the JSON is canonical
    with pytest.raises(ValueError):
        sign_statement(make_statement([], {"x": float("nan")}), sk)


def test_keygen_and_verify_cli(tmp_path, inputs, capsys, monkeypatch):
    key = tmp_path / "k" / "gate.key"
    assert main(["keygen", str(key)]) == 0
    assert "key id" in capsys.readouterr().out
    assert main(["keygen", str(key)]) == 2  # refuses to overwrite
    assert "exists" in capsys.readouterr().err
    env = sign_statement(_statement(inputs), load_private_key(key))
    verdict = write_envelope(env, tmp_path / "verdict.json")
    pub = f"{key}.pub"
    args = ["verify", str(verdict), "--public-key", pub]
    assert main([*args, "--logs", str(inputs["pairs"]), "--policy", str(inputs["policy"])]) == 0
    out = capsys.readouterr().out
    assert "OK: valid PASS" in out and "inputs     match" in out
    (inputs["policy"]).write_text("[thresholds]\nprimary = 0.9\n")
    assert main([*args, "--policy", str(inputs["policy"])]) == 1
    assert "changed: policy/gate.toml" in capsys.readouterr().out
    unsigned = write_envelope(unsigned_envelope(_statement(inputs)), tmp_path / "u.json")
    assert main(["verify", str(unsigned), "--public-key", pub]) == 1
    assert main(["verify", str(unsigned), "--allow-unsigned"]) == 0
    assert main(["verify", str(unsigned)]) == 2  # neither key nor --allow-unsigned
    (tmp_path / "junk.json").write_text("[1, 2]")
    assert main(["verify", str(tmp_path / "junk.json"), "--public-key", pub]) == 2
    assert "not a DSSE envelope" in capsys.readouterr().err
    assert main(["verify", str(verdict), "--public-key", pub, "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
