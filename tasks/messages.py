"""Bounded echoes of user input: an error message never grows with the input it quotes."""

from __future__ import annotations

import os
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


# Control characters (C0, DEL, C1) and the Unicode marks that reorder or hide text on a terminal.
_INVISIBLE = {0x200B, 0x200E, 0x200F, 0x2028, 0x2029, 0xFEFF, *range(0x202A, 0x202F)}
_INVISIBLE |= set(range(0x2066, 0x206A))


def escape_controls(text: str) -> str:
    """`text` with every control character written as an escape (`\\x1b`, `\\n`, `\\u202e`),
    so a message quoting a file's bytes or a library's error cannot drive the terminal."""
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 or ord(char) in _INVISIBLE
        else char
        for char in text
    )


# pydantic's error types as a requirement on the value, e.g. "must be at least 2".
_BOUNDS = {
    "greater_than_equal": ("ge", "must be at least"),
    "greater_than": ("gt", "must be more than"),
    "less_than_equal": ("le", "must be at most"),
    "less_than": ("lt", "must be less than"),
}


def validation_problem(item: dict[str, Any], names: dict[str, str]) -> str:
    """One of pydantic's `error.errors()` items as a sentence naming the option or parameter
    the user typed: `names` maps a field to it (`n_splits` -> `--folds`, or `cv`)."""
    parts = [str(part) for part in item.get("loc", ())]
    named = next((names[part] for part in reversed(parts) if part in names), None)
    name = named or ".".join(parts) or "value"
    kind, context = item.get("type", ""), item.get("ctx") or {}
    received = bounded_repr(item.get("input"))
    if kind in _BOUNDS and _BOUNDS[kind][0] in context:
        bound, words = _BOUNDS[kind]
        return f"{name} {words} {context[bound]} (got {received})"
    message = str(item.get("msg", ""))
    if kind == "value_error":  # foldflow's own validators: their message names the value
        return shorten(message.removeprefix("Value error, "), 500)
    message = message.replace("Input should be", "must be").replace("Input ", "")
    return f"{name}: {shorten(message, 300)} (got {received})"


def validation_line(errors: list[dict[str, Any]], names: dict[str, str]) -> str:
    """pydantic's errors as one line (the first few, then how many more)."""
    problems = [validation_problem(item, names) for item in errors[:MAX_PROBLEMS_LISTED]]
    if len(errors) > len(problems):
        problems.append(f"and {len(errors) - len(problems)} more problem(s)")
    return "; ".join(problems)


def os_error_text(error: OSError) -> str:
    """A disk's refusal (read-only, full, no permission) as one line naming the file and its
    folder, as far as the error knows them."""
    reason = error.strerror or str(error) or type(error).__name__
    if not error.filename:
        return reason
    where = os.fsdecode(error.filename)
    return f"{where}: {reason} (in the folder {os.path.dirname(where) or '.'})"
