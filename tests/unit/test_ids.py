"""Ids from outside: the documented pattern, '..' refused, and a bounded preview of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from semcom.auth import TokenSet, hash_token
from semcom.config import AuthConfig
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


def test_a_tokens_file_takes_what_semcom_token_prints_and_refuses_an_empty_one(tmp_path: Path) -> None:
    good = tmp_path / "tokens.toml"
    good.write_text(
        f'[[auth.tokens]]\nname = "ops"\nscope = "admin"\nsha256 = "{hash_token("t1")}"\n'
        f'[[tokens]]\nname = "view"\nscope = "read"\nsha256 = "{hash_token("t2")}"\n'
    )
    tokens = TokenSet.from_config(AuthConfig(tokens_file=good))
    assert tokens.allows("Bearer t1", "admin") == (True, "")
    assert tokens.allows("Bearer t2", "read") == (True, "")
    assert not tokens.allows("Bearer t2", "admin")[0] and not tokens.allows(None, "read")[0]
    empty = tmp_path / "empty.toml"
    empty.write_text("# nobody\n")
    with pytest.raises(InvalidInput, match="holds no"):
        TokenSet.from_config(AuthConfig(tokens_file=empty))


@pytest.mark.parametrize("name", ["..", ".", "../x", "a/b", "", ".hidden", "x" * 100, "\u00e9"])
def test_the_clip_store_keeps_any_name_inside_its_folder(tmp_path: Path, name: str) -> None:
    from txd.clips import ClipStore
    from txd.config import ClipStoreConfig

    store = ClipStore(ClipStoreConfig(dir=tmp_path / "clips"))
    path = store.segment_path(name, 1.0, ".mkv")
    assert path.resolve().parent.parent == (tmp_path / "clips").resolve()
    assert not path.parent.name.startswith(".")
