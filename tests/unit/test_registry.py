"""The lazy plugin registry."""

from __future__ import annotations

import sys

import pytest

from semcom.errors import InvalidInput
from semcom.registry import Registry


def test_lazy_import_and_errors() -> None:
    reg: Registry[object] = Registry("widget", {"dec": "decimal:Decimal"})
    sys.modules.pop("fractions", None)
    reg.register("frac", "fractions:Fraction")
    assert "fractions" not in sys.modules  # registering imports nothing
    assert getattr(reg.load("frac"), "__name__", None) == "Fraction"
    assert reg.names() == ["dec", "frac"]
    with pytest.raises(InvalidInput, match="unknown widget 'nope'; known: dec, frac"):
        reg.load("nope")


def test_register_object() -> None:
    reg: Registry[type] = Registry("thing")
    reg.register("int", int)
    assert reg.load("int") is int
