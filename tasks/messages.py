"""Bounded echoes of user input: an error message never grows with the input it quotes."""

from __future__ import annotations

import reprlib
from typing import Any

MAX_ECHO_CHARS = 200
MAX_MESSAGE_CHARS = 2000
MAX_PROBLEMS_LISTED = 5

# reprlib stops at a few items per container and a few levels deep, so echoing a value costs
# the same whether it holds ten items or (through YAML aliases) a billion.
_ECHO = reprlib.Repr()  # Python 3.11's Repr takes no arguments: set its limits one by one
_ECHO.maxlevel = 3
_ECHO.maxtuple = _ECHO.maxlist = _ECHO.maxarray = _ECHO.maxdict = 6
_ECHO.maxset = _ECHO.maxfrozenset = _ECHO.maxdeque = 6
_ECHO.maxstring = _ECHO.maxother = MAX_ECHO_CHARS
_ECHO.maxlong = 60


def shorten(text: str, limit: int) -> str:
    """`text` if it fits in `limit` characters, else its head and tail around a marker."""
    if len(text) <= limit:
        return text
    marker = f" ...[{len(text) - limit} characters left out]... "
    keep = max(limit - len(marker), 2)
    return text[: keep - keep // 4] + marker + text[len(text) - keep // 4 :]


def bounded_repr(value: Any, limit: int = MAX_ECHO_CHARS) -> str:
    """repr() of a value received from the user, at most `limit` characters long."""
    return shorten(_ECHO.repr(value), limit)
