"""Gate policy: defaults, TOML round trip, errors that name the key, init-policy CLI."""

from __future__ import annotations

import re

import pytest

from shadowlab.cli import main
from shadowlab.policy import (
    GatePolicy,
    PolicyError,
    default_policy_toml,
    load_policy,
    parse_policy,
)


def test_defaults_are_documented_and_round_trip():
    text = default_policy_toml()
    assert parse_policy(text) == GatePolicy()
    # every key of every section appears in the commented default
    for section in GatePolicy().to_dict()["checks"].values():
        for key in section:
            assert f"\n{key} = " in text
    assert "# primary = ..." in text


def test_partial_file_overrides_only_what_it_sets(tmp_path):
    path = tmp_path / "gate.toml"
    path.write_text(
        "[thresholds]\nprimary = 0.7\ncandidate = 0.65\n"
        '[checks.trigger_parity]\nband = [0.9, 1.1]\nseverity = "warn"\n'
    )
    p = load_policy(path)
    assert p.thresholds.primary == 0.7
    assert p.thresholds.candidate == 0.65
    assert p.checks.trigger_parity.band == (0.9, 1.1)
    assert p.checks.trigger_parity.severity == "warn"
    assert p.checks.load == GatePolicy().checks.load
    assert p.base_dir == str(tmp_path)


def test_reference_resolves_relative_to_policy_file(tmp_path):
    path = tmp_path / "sub" / "gate.toml"
    path.parent.mkdir()
    path.write_text('reference = "ref.parquet"\n')
    assert load_policy(path).reference_path() == tmp_path / "sub" / "ref.parquet"
    assert GatePolicy().reference_path() is None


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[checks.trigger_parity]\nbnad = [0.8, 1.2]", "checks.trigger_parity.bnad"),
        ("[checks.nope]\nx = 1", "checks.nope"),
        ("colour = 1", "colour"),
        ("[checks.trigger_parity]\nband = [1.2, 2.0]", "checks.trigger_parity.band"),
        ("[checks.trigger_parity]\nband = [0.8]", "checks.trigger_parity.band"),
        ('[checks.load]\nseverity = "fatal"', "checks.load.severity"),
        ("[checks.enough_data]\nmin_rows = 0", "checks.enough_data.min_rows"),
        ("[checks.enough_data]\nmin_rows = 1.5", "checks.enough_data.min_rows"),
        (
            "[checks.production_health]\nmax_error_rate = 1.5",
            "checks.production_health.max_error_rate",
        ),
        (
            "[checks.production_health]\nmax_error_rate = nan",
            "checks.production_health.max_error_rate",
        ),
        ("[review]\nreviewers = -1", "review.reviewers"),
        ("[review]\nreviewers = 2.5", "review.reviewers"),
        ("[review]\ntarget_utilisation = 1.0", "review.target_utilisation"),
        ('[review]\ninterval = "5 minutes"', "review.interval"),
        ('[thresholds]\ncandidate = "auto"', "thresholds.candidate"),
        ("[thresholds]\ninclusive = 1", "thresholds.inclusive"),
        ('segments = "country"', "segments"),
        ("thresholds = 3", "thresholds"),
        ("[checks.accuracy]\nconfidence = 1", "checks.accuracy.confidence"),
    ],
)
def test_bad_policy_names_the_key(text, key):
    with pytest.raises(PolicyError, match=re.escape(f"'{key}'")):
        parse_policy(text)


def test_unknown_key_suggests_nearest():
    with pytest.raises(PolicyError, match="Did you mean 'band'"):
        parse_policy("[checks.trigger_parity]\nbnad = [0.8, 1.2]")


def test_invalid_toml_and_missing_file(tmp_path):
    with pytest.raises(PolicyError, match="not valid TOML"):
        parse_policy("[checks\n")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_policy(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[review]\nsla_minutes = 0\n")
    with pytest.raises(PolicyError, match=r"bad\.toml: .*'review\.sla_minutes'"):
        load_policy(bad)


def test_python_construction_is_validated_too():
    from shadowlab.policy import TriggerParityPolicy

    with pytest.raises(PolicyError, match=re.escape("'checks.trigger_parity.min_flags'")):
        TriggerParityPolicy(min_flags=0)


def test_with_thresholds_overrides():
    p = GatePolicy().with_thresholds(primary=0.8)
    assert p.thresholds.primary == 0.8 and p.thresholds.candidate == "calibrate"
    p = p.with_thresholds(candidate=0.5)
    assert p.thresholds.primary == 0.8 and p.thresholds.candidate == 0.5


def test_to_dict_is_json_safe():
    import json

    d = GatePolicy().to_dict()
    assert json.loads(json.dumps(d)) == d
    assert "base_dir" not in d
    assert d["checks"]["trigger_parity"]["band"] == [0.8, 1.25]


def test_init_policy_cli(tmp_path, capsys):
    out = tmp_path / "gate.toml"
    assert main(["init-policy", str(out), "--primary-threshold", "0.8"]) == 0
    p = load_policy(out)
    assert p.thresholds.primary == 0.8
    assert p == GatePolicy().with_thresholds(primary=0.8)  # the rest is the default
    assert main(["init-policy", str(out)]) == 2  # refuses to overwrite
    assert "exists" in capsys.readouterr().err
    assert main(["init-policy"]) == 0
    assert capsys.readouterr().out == default_policy_toml()
