"""Every name in shadowlab.__all__ resolves, from the module the package says defines it."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import shadowlab


@pytest.mark.parametrize("name", shadowlab.__all__)
def test_public_name_resolves(name: str) -> None:
    value = getattr(shadowlab, name)
    module = shadowlab._EXPORTS.get(name)
    if module is not None:
        assert value is getattr(importlib.import_module(f"shadowlab.{module}"), name)


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = shadowlab.nope  # type: ignore[attr-defined]


def test_import_is_cheap() -> None:
    # Lazy re-exports: importing the package must not pull in sklearn, altair or scipy.
    code = "import sys, shadowlab; print(sorted(m for m in ('sklearn','altair','scipy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
