"""Pictures for the Prefect UI: fold scores of a CV run, mean accuracy over a grid.

Prefect's image artifact takes a URL only, so a PNG is embedded as a data URI in a markdown
artifact, which the UI renders as an image.
"""

from __future__ import annotations

import base64
import io
import json

import matplotlib

matplotlib.use("Agg")  # no display; safe in worker threads and processes

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def split_scores(table: pd.DataFrame, row: int) -> np.ndarray:
    columns = [c for c in table.columns if c.startswith("split") and c.endswith("_test_score")]
    columns.sort(key=lambda name: int(name[len("split") : -len("_test_score")]))
    return table.loc[row, columns].to_numpy(dtype=float)


def fold_scores_png(table: pd.DataFrame) -> bytes:
    """Bar per fold with the mean and ±1 std band: how much a CV score depends on the split."""
    scores = split_scores(table, 0)
    mean, std = float(np.nanmean(scores)), float(np.nanstd(scores))
    figure, axis = plt.subplots(figsize=(7, 3.2))
    axis.bar(range(len(scores)), scores, color="#4c78a8")
    axis.axhline(mean, color="#e45756", label=f"mean {mean:.4f}")
    axis.axhspan(mean - std, mean + std, color="#e45756", alpha=0.15, label=f"±1 std {std:.4f}")
    axis.set_xticks(range(len(scores)), [f"fold {k}" for k in range(len(scores))], fontsize=8)
    axis.set_ylim(0, 1)
    axis.set_ylabel("test accuracy")
    axis.set_title("Accuracy per fold")
    axis.legend(loc="lower right", fontsize=8)
    return _png(figure)


def grid_heatmap_png(table: pd.DataFrame) -> bytes:
    """Mean accuracy over the grid: rows and columns split the grid's keys between them."""
    params = [json.loads(text) for text in table["params"]]
    keys = sorted(params[0]) if params and params[0] else []
    varying = [k for k in keys if len({json.dumps(p[k]) for p in params}) > 1] or keys[:1]
    row_keys, column_keys = varying[: len(varying) // 2 or 1], varying[len(varying) // 2 or 1 :]

    def label(p: dict, chosen: list[str]) -> str:
        return " · ".join(f"{k.removeprefix('model__')}={p[k]}" for k in chosen) or "all"

    rows = sorted({label(p, row_keys) for p in params})
    columns = sorted({label(p, column_keys) for p in params})
    grid = np.full((len(rows), len(columns)), np.nan)
    for p, mean in zip(params, table["mean_test_score"], strict=True):
        grid[rows.index(label(p, row_keys)), columns.index(label(p, column_keys))] = mean
    figure, axis = plt.subplots(
        figsize=(max(5, 0.9 * len(columns) + 3), max(2.5, 0.45 * len(rows) + 1.5))
    )
    image = axis.imshow(grid, cmap="viridis", aspect="auto")
    axis.set_xticks(range(len(columns)), columns, rotation=45, ha="right", fontsize=7)
    axis.set_yticks(range(len(rows)), rows, fontsize=7)
    for (i, j), value in np.ndenumerate(grid):
        if not np.isnan(value):
            axis.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=6, color="white")
    axis.set_title("Mean CV accuracy over the grid")
    figure.colorbar(image, ax=axis, label="mean accuracy")
    return _png(figure)


def picture_markdown(png: bytes, title: str) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return f"### {title}\n\n![{title}](data:image/png;base64,{encoded})\n"


def publish_picture(key: str, png: bytes, title: str) -> None:
    """A markdown artifact holding the PNG inline: the Prefect UI shows it as an image."""
    create_markdown_artifact(key=key, markdown=picture_markdown(png, title), description=title)
