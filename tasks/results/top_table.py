"""The few lines a terminal shows at the end of a search: the top combinations as a small
table (rank, mean ± std of the ranking metric, each parameter under its key); every row and
column stays in cv_results.csv."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

TOP_ROWS = 5


def _value_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ",".join(_value_text(v) for v in value)
    return str(value)


def _score_text(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "failed"
    return f"{mean:.4f} ± {0.0 if math.isnan(std) else std:.4f}"


def top_rows(table: pd.DataFrame, n: int = TOP_ROWS) -> pd.DataFrame:
    """The best `n` rows by rank (halving: of its last rung, where the best is picked)."""
    rows = table
    if "iter" in table.columns:
        rows = table[table["iter"] == table["iter"].max()]
    return rows.sort_values(["rank_test_score"], kind="stable").head(n)


def top_table_lines(table: pd.DataFrame, refit_metric: str, n: int = TOP_ROWS) -> list[str]:
    """`rank  accuracy  batch_size  epochs` then one aligned line per top combination and,
    when rows are left out, how many and where they are."""
    rows = top_rows(table, n)
    params = [json.loads(text) if isinstance(text, str) else {} for text in rows["params"]]
    keys = sorted({key for p in params for key in p})
    header = ["rank", refit_metric, *keys]
    body = [
        [
            str(int(rank)),
            _score_text(float(mean), float(std)),
            *(_value_text(p[key]) if key in p else "" for key in keys),
        ]
        for rank, mean, std, p in zip(
            rows["rank_test_score"], rows["mean_test_score"], rows["std_test_score"], params,
            strict=True,
        )
    ]  # fmt: skip
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def aligned(cells: list[str]) -> str:
        first = cells[0].rjust(widths[0])
        rest = [cell.ljust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    lines = [aligned(header), *(aligned(cells) for cells in body)]
    if len(table) > len(rows):
        lines.append(f"(top {len(rows)} of {len(table)} rows; all of them in cv_results.csv)")
    return lines
