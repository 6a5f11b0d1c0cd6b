"""Pictures for the Prefect UI: fold scores of a CV run, mean score over a grid (the refit
metric's, accuracy by default).

Pure functions from a cv_results table to PNG bytes, drawn on matplotlib's Agg canvas through
`Figure` objects (no pyplot, no global backend switch: safe in worker threads). The UI v2 shows a
PNG embedded as a data URI in a markdown artifact, so that is how pictures are published.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps, rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FixedLocator
from PIL import Image
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import MissingContextError
from prefect.logging import get_logger, get_run_logger

from tasks.files import write_atomically
from tasks.numbers import param_text, param_value

DPI = 110
COMPRESS_LEVEL = 3  # zlib level: measured as small as 6 on these pictures, and faster
BAR = "#4c78a8"
MEAN = "#e45756"
FAILED = "#bbbbbb"
NOISE = "#f58518"  # within the noise of the best (tasks.results.noise)
NOISE_RULE = "corrected t-test, p > 0.05"
BASELINE = "#555555"  # dashed: what a model that learned nothing scores
CMAP = "viridis"
# FreeType's hinter costs about a third of drawing text; at 110 dpi unhinted glyphs read the same.
UNHINTED = {"text.hinting": "no_hinting"}
TITLE_MARGIN = 0.15  # inches either side of a figure's title


def in_sentence(metric: str) -> str:
    """'Accuracy' -> 'accuracy' inside a sentence; acronyms ('ROC AUC', 'RMSE', 'R2') stay."""
    return metric[0].lower() + metric[1:] if metric[1:2].islower() else metric


def _figure(width: float, height: float) -> Figure:
    """A figure for `_drawn_png`: drawn at DPI, laid out once by constrained layout while drawing
    (savefig's bbox_inches="tight" would lay it out a second time)."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _suptitle(figure: Figure, text: str) -> None:
    """A title over the whole figure, which is widened to hold it: constrained layout lets a
    title overflow, and measuring one text is far cheaper than bbox_inches="tight"."""
    title = figure.suptitle(text, fontsize=10)
    with rc_context(UNHINTED):
        width = title.get_window_extent(figure.canvas.get_renderer()).width / figure.dpi
    figure.set_figwidth(max(figure.get_figwidth(), width + 2 * TITLE_MARGIN))


def _fixed_ticks(axis) -> None:
    """Freeze an axes' linear ticks where its auto-locators put them now (after plotting):
    layout and drawing update every tick several times, and a fixed locator with fixed labels
    makes that cheap. Ticks outside the view are left out (they would not show); an axis whose
    labels need an offset or exponent ("1e-5") keeps its formatter."""
    for side in (axis.xaxis, axis.yaxis):
        if side.get_scale() != "linear" or isinstance(side.get_major_locator(), FixedLocator):
            continue
        low, high = sorted(side.get_view_interval())
        slack = 1e-10 * (high - low)
        ticks = [t for t in side.get_major_locator()() if low - slack <= t <= high + slack]
        formatter = side.get_major_formatter()
        labels = formatter.format_ticks(ticks)
        if not formatter.get_offset():
            side.set_ticks(ticks, labels)


def _drawn_png(figure: Figure) -> bytes:
    """One draw (text unhinted), then the canvas's pixels as an RGB PNG: the figure is opaque,
    so alpha would only cost encoding time and bytes."""
    canvas = figure.canvas
    with rc_context(UNHINTED):
        canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3]
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(
        buffer, format="png", compress_level=COMPRESS_LEVEL
    )
    return buffer.getvalue()


def fold_matrix(table: pd.DataFrame) -> np.ndarray:
    """Every row's `split0_test_score`, `split1_test_score`, ... (rows x folds, fold order,
    NaN = failed): one lookup, not one per row."""
    columns = [c for c in table.columns if c.startswith("split") and c.endswith("_test_score")]
    columns.sort(key=lambda name: int(name[len("split") : -len("_test_score")]))
    return table[columns].to_numpy(dtype=float)


def fold_scores_png(
    table: pd.DataFrame,
    row: int = 0,
    metric: str = "Accuracy",
    baseline: float | None = None,
    baseline_kind: str = "",
) -> bytes:
    """One bar per fold with the mean and a ±1 std band: how much the score depends on the
    split; and the baseline as a dashed line (what a model that learned nothing scores)."""
    scores = fold_matrix(table)[row]
    n_folds = len(scores)
    mean, std = float(np.nanmean(scores)), float(np.nanstd(scores))
    figure = _figure(max(5.0, 0.55 * n_folds + 2), 3.4)
    axis = figure.add_subplot()
    folds = np.arange(n_folds)
    failed = np.isnan(scores)
    axis.bar(folds[~failed], scores[~failed], color=BAR, width=0.7, zorder=2)
    axis.axhspan(
        mean - std, mean + std, color=MEAN, alpha=0.15, zorder=1, label=f"±1 std {std:.3f}"
    )
    axis.axhline(mean, color=MEAN, linewidth=1.5, zorder=3, label=f"mean {mean:.3f}")
    if baseline is not None and np.isfinite(baseline):
        axis.axhline(baseline, **_baseline_style(baseline, baseline_kind))
    if n_folds <= 20:
        for fold, score in zip(folds, scores, strict=True):
            text = "failed" if np.isnan(score) else f"{score:.3f}"
            y = 0.02 if np.isnan(score) else score + 0.01
            axis.text(fold, y, text, ha="center", va="bottom", fontsize=7, zorder=4)
    step = max(1, n_folds // 20)
    axis.set_xticks(folds[::step], [str(k) for k in folds[::step]])
    axis.set_xlabel("fold")
    finite = scores[~failed]
    if finite.size == 0 or (finite.min() >= 0 and finite.max() <= 1):
        axis.set_ylim(0, 1.05)  # accuracy, AUC, F1: the whole scale
    axis.set_ylabel(f"test {in_sentence(metric)}")
    counted = f"{n_folds} folds" if not failed.any() else f"{n_folds} folds, {failed.sum()} failed"
    axis.set_title(f"{metric} per fold: {mean:.3f} ({std:.3f}) over {counted}", fontsize=10)
    axis.grid(axis="y", alpha=0.3, zorder=0)
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2, fontsize=8, frameon=False)
    return _drawn_png(figure)


def baseline_text(baseline: float, kind: str) -> str:
    """`baseline 0.651 (majority class)`: the score of a model that learned nothing."""
    return f"baseline {baseline:.3f}" + (f" ({kind})" if kind else "")


def _baseline_style(baseline: float, kind: str) -> dict[str, Any]:
    return {
        "color": BASELINE,
        "linestyle": "--",
        "linewidth": 1.5,
        "zorder": 3,
        "label": baseline_text(baseline, kind),
    }


def _baseline_clause(baseline: float | None, kind: str) -> str:
    if baseline is None or not np.isfinite(baseline):
        return ""
    return f"; {baseline_text(baseline, kind)}"


def _value_text(value: Any) -> str:
    """A value in a label: floats rounded as everywhere (tasks.numbers), lists as JSON."""
    if isinstance(value, list | tuple):
        return json.dumps(list(param_value(value)))
    if isinstance(value, dict):
        return json.dumps(value)
    return param_text(value) if isinstance(value, float) else str(value)


def _short(key: str) -> str:
    return key.removeprefix("model__")


def varying_keys(params: list[dict[str, Any]]) -> list[str]:
    """The keys whose value differs between combinations, sorted (the grid's order): the ones
    a picture's labels and titles name."""
    keys = sorted({key for p in params for key in p})
    return [k for k in keys if len({_value_text(p.get(k)) for p in params}) > 1]


def split_grid_keys(params: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Rows get the first half of the keys that vary (one or two for most grids), columns the rest.

    Keys are in the grid's (sorted) order; a grid where nothing varies gets one row per key set.
    """
    varying = varying_keys(params)
    if not varying:
        return sorted({key for p in params for key in p})[:1], []
    half = max(1, len(varying) // 2)
    return varying[:half], varying[half:]


def _labels(params: list[dict[str, Any]], keys: list[str], separator: str) -> list[str]:
    """One label per distinct value combination of `keys`, in the grid's own value order."""
    order: dict[str, list[str]] = {k: [] for k in keys}
    for p in params:
        for k in keys:
            if (text := _value_text(p.get(k))) not in order[k]:
                order[k].append(text)
    seen = {tuple(_value_text(p.get(k)) for k in keys) for p in params}
    ranked = sorted(
        seen, key=lambda combo: [order[k].index(v) for k, v in zip(keys, combo, strict=True)]
    )
    return [
        separator.join(f"{_short(k)}={v}" for k, v in zip(keys, combo, strict=True)) or "all"
        for combo in ranked
    ]


def _label_of(p: dict[str, Any], keys: list[str], separator: str) -> str:
    return separator.join(f"{_short(k)}={_value_text(p.get(k))}" for k in keys) or "all"


def grid_heatmap_png(
    table: pd.DataFrame,
    metric: str = "Accuracy",
    baseline: float | None = None,
    baseline_kind: str = "",
) -> bytes:
    """Mean CV score of every combination, as a heatmap with the grid's keys on its two axes
    (the baseline in its title).

    Rows take one or two keys and columns the rest, so any grid (1 to many keys) fits; failed
    combinations (NaN) are grey, the best one is outlined.
    """
    params = [json.loads(text) for text in table["params"]]
    means = table["mean_test_score"].to_numpy(dtype=float)
    stds = table["std_test_score"].to_numpy(dtype=float)
    row_keys, column_keys = split_grid_keys(params)
    rows = _labels(params, row_keys, " · ")
    columns = _labels(params, column_keys, "\n")
    grid = np.full((len(rows), len(columns)), np.nan)
    spread = np.full_like(grid, np.nan)
    tried = np.zeros(grid.shape, dtype=bool)  # a cell no row fills was not tried: blank
    for p, mean, std in zip(params, means, stds, strict=True):
        cell = (
            rows.index(_label_of(p, row_keys, " · ")),
            columns.index(_label_of(p, column_keys, "\n")),
        )
        grid[cell], spread[cell], tried[cell] = mean, std, True

    lines_per_column = max(1, len(column_keys))
    figure = _figure(
        max(5.0, 1.15 * len(columns) + 3.5),
        max(2.8, 0.42 * len(rows) + 1.6 + 0.18 * lines_per_column),
    )
    axis = figure.add_subplot()
    finite = grid[np.isfinite(grid)]
    low, high = colour_range(finite, spread[np.isfinite(spread)])
    norm = Normalize(vmin=low, vmax=high)
    colormap = colormaps[CMAP].with_extremes(bad=FAILED)
    image = axis.imshow(np.ma.masked_invalid(grid), cmap=colormap, norm=norm, aspect="auto")
    axis.set_xticks(range(len(columns)), columns, fontsize=8)
    axis.xaxis.tick_top()
    axis.set_yticks(range(len(rows)), rows, fontsize=8)
    axis.tick_params(length=0)
    _cell_texts(axis, grid, spread, colormap(norm(grid)), tried)
    for i, j in zip(*np.nonzero(~tried), strict=True):
        axis.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, color="white", zorder=2))
    if finite.size:
        # rank 1 is best whichever way the metric points (RMSE: lowest)
        ranks = table["rank_test_score"].to_numpy() if "rank_test_score" in table else None
        best = int(np.flatnonzero(ranks == 1)[0]) if ranks is not None else int(np.nanargmax(means))
        i = rows.index(_label_of(params[best], row_keys, " · "))
        j = columns.index(_label_of(params[best], column_keys, "\n"))
        axis.add_patch(
            Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor=MEAN, linewidth=2.5)
        )
        title = (
            f"Mean CV {in_sentence(metric)} over {len(params)} combinations "
            f"(best {means[best]:.3f}, outlined{_baseline_clause(baseline, baseline_kind)})"
            "\n± fold std; the colour scale spans at "
            "least two typical fold stds, so pale differences are within the noise"
        )
    else:
        title = f"Mean CV {in_sentence(metric)} over {len(params)} combinations (all failed)"
    bar = figure.colorbar(
        image, ax=axis, label=f"mean {in_sentence(metric)}", fraction=0.05, pad=0.02
    )
    _fixed_ticks(bar.ax)  # the colour scale's ticks, re-located on every layout pass otherwise
    _suptitle(figure, title)
    return _drawn_png(figure)


def _cell_texts(
    axis, grid: np.ndarray, spread: np.ndarray, shades: np.ndarray, tried: np.ndarray
) -> None:
    """Each cell's mean ± std (or "failed" when its fits failed; nothing when it was not
    tried) in ink that reads on its shade. The shades come in one colormap call, not one per
    cell; the texts lie inside their cells, so constrained layout need not measure them."""
    light = shades[..., :3] @ np.array([0.299, 0.587, 0.114]) > 0.5
    for (i, j), value in np.ndenumerate(grid):
        if not tried[i, j]:
            continue
        if np.isnan(value):
            words, ink, size = "failed", "black", 7
        else:
            words, size = f"{value:.3f}\n±{spread[i, j]:.3f}", 7.5
            ink = "black" if light[i, j] else "white"
        axis.text(j, i, words, ha="center", va="center", fontsize=size, color=ink, in_layout=False)


def colour_range(means: np.ndarray, stds: np.ndarray) -> tuple[float, float]:
    """The heatmap's colour range: the observed means, widened about their middle to at least
    twice the median fold std, so a gap smaller than the folds' spread is not painted as a
    contrast."""
    if means.size == 0:
        return 0.0, 1.0
    low, high = float(means.min()), float(means.max())
    noise = 2 * float(np.median(stds)) if stds.size else 0.0
    span = max(high - low, noise, 1e-9)
    middle = (low + high) / 2
    return middle - span / 2, middle + span / 2


def best_first(table: pd.DataFrame) -> pd.DataFrame:
    """Rows by rank; halving's by rung, last rung first (its best is the search's best)."""
    if "iter" not in table.columns:
        return table.sort_values(["rank_test_score", "combination"], kind="stable")
    order = table.assign(_rung=-table["iter"])
    ordered = order.sort_values(["_rung", "rank_test_score", "combination"], kind="stable")
    return ordered.drop(columns="_rung")


def ranked_png(
    table: pd.DataFrame,
    metric: str = "Accuracy",
    baseline: float | None = None,
    baseline_kind: str = "",
) -> bytes:
    """Every combination's mean (best at the top) with its fold std as an error bar and its
    fold scores as dots: which combinations the best one really beats; the baseline as a
    dashed line: which ones learned anything at all."""
    ordered = best_first(table)
    params = [json.loads(text) for text in ordered["params"]]
    keys = sum(split_grid_keys(params), [])
    labels = [
        f"#{int(c)}  " + ", ".join(f"{_short(k)}={_value_text(p.get(k))}" for k in keys)
        for c, p in zip(ordered["combination"], params, strict=True)
    ]
    if "iter" in ordered:  # halving: the same candidate at several rungs
        labels = [
            f"{label}  (rung {int(r)}, {int(e)} epochs)"
            for label, r, e in zip(labels, ordered["iter"], ordered["n_resources"], strict=True)
        ]
    noisy = (
        ordered["within_noise_of_best"].to_numpy(dtype=bool, copy=True)
        if "within_noise_of_best" in ordered
        else np.zeros(len(ordered), dtype=bool)
    )
    noisy[0] = False  # the best itself
    means = ordered["mean_test_score"].to_numpy(dtype=float)
    stds = ordered["std_test_score"].to_numpy(dtype=float)
    folds = fold_matrix(ordered)
    n = len(ordered)
    figure = _figure(8.0, max(2.6, 0.24 * n + 1.4))
    axis = figure.add_subplot()
    positions = np.arange(n)
    if np.isfinite(means[0]):
        axis.axvspan(
            means[0] - stds[0],
            means[0] + stds[0],
            color=MEAN,
            alpha=0.12,
            zorder=0,
            label=f"best ± its fold std ({means[0]:.3f} ± {stds[0]:.3f})",
        )
    if baseline is not None and np.isfinite(baseline):
        axis.axvline(baseline, **_baseline_style(baseline, baseline_kind))
    for fold in range(folds.shape[1]):
        axis.scatter(folds[:, fold], positions, s=8, color=FAILED, zorder=1)
    for chosen, colour, label in (
        (~noisy, BAR, "mean ± fold std (grey dots: folds)"),
        (noisy, NOISE, f"within the noise of the best ({NOISE_RULE})"),
    ):
        if chosen.any():
            axis.errorbar(
                means[chosen], positions[chosen], xerr=stds[chosen], fmt="o", color=colour,
                markersize=4, capsize=2, zorder=2, label=label,
            )  # fmt: skip
    axis.set_yticks(positions, labels, fontsize=7)
    axis.invert_yaxis()
    axis.set_xlabel(f"test {in_sentence(metric)}")
    axis.grid(axis="x", alpha=0.3, zorder=0)
    rungs = ", rung by rung from the last" if "iter" in ordered else ""
    _suptitle(
        figure, f"{metric} of {n} combinations, best first{rungs} (#n: the combination column)"
    )
    figure.legend(loc="outside lower center", fontsize=8, frameon=False, ncols=2)
    return _drawn_png(figure)


def picture_markdown(png: bytes, title: str) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return f"### {title}\n\n![{title}](data:image/png;base64,{encoded})\n"


def publish_picture(key: str, png_bytes: bytes, description: str) -> None:
    """A markdown artifact holding the PNG inline: the Prefect UI (v2) shows it as an image."""
    create_markdown_artifact(
        key=key, markdown=picture_markdown(png_bytes, description), description=description
    )


def write_picture(run_dir: Path, name: str, png: bytes) -> Path:
    """The picture as `<name>.png` in the run folder too (written atomically), for readers
    without the UI."""
    path = Path(run_dir) / f"{name}.png"
    write_atomically(path, lambda target: Path(target).write_bytes(png))
    return path


def publish_results_picture(
    table: pd.DataFrame,
    artifact_key: str,
    metric: str = "Accuracy",
    baseline: float | None = None,
    baseline_kind: str = "",
    heatmap: bool = True,
    run_dir: Path | None = None,
) -> list[str]:
    """The pictures that fit the run: fold scores for one combination; for several, every
    combination ranked with its fold spread, and for a grid (`heatmap`) its heatmap (a sampled
    or halving search has no grid to lay out: tasks.results.search_plots draws its own); each
    with the baseline, each also as a PNG file in `run_dir`.

    Returns the artifact keys. A picture is a courtesy: if drawing fails, the run's results
    (files, table artifact) still stand, so the error is logged and the picture skipped.
    """
    if len(table) == 1:
        pictures = [("fold-scores", fold_scores_png, f"{metric} per fold")]
    else:
        pictures = [
            (
                "ranked",
                ranked_png,
                f"Every combination's {in_sentence(metric)}, ranked, with its fold spread",
            ),
        ]
        if heatmap:
            text = f"Mean {in_sentence(metric)} over the grid"
            pictures.insert(0, ("heatmap", grid_heatmap_png, text))
    published = []
    for name, draw, text in pictures:
        key = f"{artifact_key}-{name}"
        try:
            png = draw(table, metric=metric, baseline=baseline, baseline_kind=baseline_kind)
            publish_picture(key, png, text)
            if run_dir is not None:
                write_picture(run_dir, name, png)
            published.append(key)
        except Exception as error:  # a picture must never fail the run
            _logger().warning("no picture %s: %s: %s", key, type(error).__name__, error)
    return published


def _logger():
    try:
        return get_run_logger()
    except MissingContextError:
        return get_logger("foldflow.plots")
