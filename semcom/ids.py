"""Names that come from outside (stream, site and location ids, tokens' names) checked against one pattern.

A checked name is safe as a single path component, in a log line and in an HTML text node: it starts with a
letter or digit, holds only letters, digits, '.', '_' and '-', never contains "..", and is at most 64
characters long. Everything that reaches a file name, a log or the web page passes through here first.
"""

from __future__ import annotations

import re

from semcom.errors import InvalidInput

ID_MAX_CHARS = 64
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_ID = re.compile(ID_PATTERN)


def is_valid_id(value: str) -> bool:
    """Whether `value` matches ID_PATTERN and holds no "..": a safe path component, log and HTML text."""
    return bool(_ID.fullmatch(value)) and ".." not in value


def check_id(value: str, what: str = "id") -> str:
    """`value` when it is a valid id, else InvalidInput naming `what`, the pattern and a safe preview."""
    if not isinstance(value, str) or not is_valid_id(value):
        raise InvalidInput(
            f"{what} {preview(value)} is not valid: 1-{ID_MAX_CHARS} characters of letters, digits, '.', "
            "'_' and '-', starting with a letter or digit, without '..'"
        )
    return value


def check_stream_id(value: str) -> str:
    """A stream id as it names a folder of the clip store, a metric label and a line on the web page."""
    return check_id(value, "stream_id")


def check_site_id(value: str) -> str:
    return check_id(value, "site_id")


def preview(value: object, max_chars: int = 40) -> str:
    """A printable, bounded rendering of untrusted input for error messages and logs (repr escapes control
    characters; the length cap keeps a megabyte of junk out of the log)."""
    text = repr(value)
    return text if len(text) <= max_chars else text[: max_chars - 3] + "..."
