"""Ids from outside: the documented pattern, '..' refused, and a bounded preview of bad input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from semcom.errors import InvalidInput
from semcom.ids import ID_MAX_CHARS, check_stream_id, is_valid_id, preview


@pytest.mark.parametrize("good", ["cam-1", "site_a.north", "A", "0" * ID_MAX_CHARS, "tud_campus.mp4"])
def test_valid_ids_pass(good: str) -> None:
    assert check_stream_id(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "..",
        ".",
        "a/../b",
        "a..b",
        "../etc",
        "-leading-dash",
        ".hidden",
        "<img src=x onerror=alert(1)>",
        "a b",
        "a\nb",
        "caf\u00e9",
        "x" * (ID_MAX_CHARS + 1),
        "a/b",
        "a\\b",
        "a\x00b",
    ],
)
def test_bad_ids_refused(bad: str) -> None:
    with pytest.raises(InvalidInput, match="stream_id"):
        check_stream_id(bad)


@given(st.text(max_size=200))
def test_any_valid_id_is_a_safe_path_component(text: str) -> None:
    if is_valid_id(text):
        assert "/" not in text and "\\" not in text and ".." not in text
        assert text not in {".", ".."} and len(text) <= ID_MAX_CHARS
        assert "<" not in text and "&" not in text and text.isprintable()


def test_preview_is_bounded_and_escaped() -> None:
    shown = preview("\n" * 10_000)
    assert len(shown) <= 40 and "\n" not in shown
