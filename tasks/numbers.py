"""Numbers as a reader sees them: one rounding for sampled values (table, task-run names,
picture labels) and one fixed number of significant digits for scores, so columns line up and
a sampled learning rate reads `0.001757`, not `0.0017567312128322`."""

from __future__ import annotations

import math
from typing import Any

PARAM_DIGITS = 4  # significant digits of a sampled float, wherever it is shown
SCORE_DIGITS = 3  # significant digits of a score, a std or a time in a table


def round_significant(value: float, digits: int = PARAM_DIGITS) -> float:
    """`value` rounded to `digits` significant digits (0, NaN and inf as they are)."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def param_value(value: Any) -> Any:
    """A parameter value as shown: floats rounded (round_significant), anything else as it is;
    inside lists and tuples too."""
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        return round_significant(value)
    if isinstance(value, list | tuple):
        return type(value)(param_value(item) for item in value)
    return value


def param_text(value: Any) -> str:
    """A parameter value as text: `0.001757`, `adam`, `12x8` for layer widths."""
    value = param_value(value)
    if isinstance(value, list | tuple):
        return "x".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def score_text(value: float | None, digits: int = SCORE_DIGITS) -> str:
    """A score with a fixed number of significant digits: `0.695`, `0.0387`, `12.3`; from
    10**(digits-1) up, a whole number (`1234`); '' for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    value = float(value)
    if math.isinf(value):
        return str(value)
    if value == 0:
        return "0"
    if abs(value) >= 10 ** (digits - 1):
        return f"{value:.0f}"
    return f"{value:#.{digits}g}".rstrip(".")
