"""Learning curves: every fit's per-epoch records (tasks.records.LearningCurve) as one table
in the run folder (`learning_curves.parquet`) and a picture per combination for the UI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from tasks.files import write_atomically
from tasks.records import FitResult
from tasks.results.plots import (
    BAR,
    MEAN,
    _drawn_png,
    _figure,
    _fixed_ticks,
    _logger,
    _short,
    _suptitle,
    _value_text,
    publish_picture,
    varying_keys,
    write_picture,
)

STOP = "#54a24b"  # where early stopping ended a fold
COLUMNS = ["combination", "fold", "epoch", "train_loss", "val_loss", "val_accuracy"]
MAX_PICTURED = 6  # combinations in the picture: the best ones by rank
TITLE_CHARACTERS = 60  # of a panel's varying keys: what fits a panel's width at 8 points


def curves_table(results: list[FitResult]) -> pd.DataFrame:
    """One row per (combination, fold, epoch) of every fit that recorded its curve; epochs
    count from 1, validation columns are NaN without a validation part."""
    rows = []
    for result in results:
        curve = result.curve
        if curve is None:
            continue
        for index, train_loss in enumerate(curve.train_loss):
            rows.append(
                (
                    result.combination,
                    result.fold,
                    curve.first_epoch + index + 1,
                    train_loss,
                    _at(curve.val_loss, index),
                    _at(curve.val_accuracy, index),
                )
            )
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.astype({"combination": "int64", "fold": "int64", "epoch": "int64"}).astype(
        {name: "float64" for name in COLUMNS[3:]}
    )


def _at(values: list, index: int) -> float:
    value = values[index] if index < len(values) else None
    return np.nan if value is None else float(value)


def write_learning_curves(results: list[FitResult], run_dir) -> pd.DataFrame:
    """learning_curves.parquet in the run folder, written atomically."""
    table = curves_table(results)
    write_atomically(
        run_dir / "learning_curves.parquet", lambda path: table.to_parquet(path, index=False)
    )
    return table


def learning_curves_png(curves: pd.DataFrame, cv_results: pd.DataFrame) -> bytes:
    """Loss by epoch for the best combinations (by rank): the mean over folds as a line and
    the folds' min-max as a band, training solid, validation dashed; on a log scale (an
    epoch-1 loss of 40 would flatten the rest into a line), one scale for every panel so they
    compare, and a triangle where early stopping ended a fold."""
    ranked = cv_results.sort_values(["rank_test_score", "combination"], kind="stable")
    recorded = set(curves["combination"].tolist())
    shown = [int(c) for c in ranked["combination"] if int(c) in recorded][:MAX_PICTURED]
    params = {
        int(c): json.loads(text)
        for c, text in zip(cv_results["combination"], cv_results["params"], strict=True)
    }
    varying = varying_keys(list(params.values()))
    columns = min(3, len(shown))
    rows = -(-len(shown) // columns)
    figure = _figure(4.2 * columns, 3.2 * rows)
    losses = curves[["train_loss", "val_loss"]].to_numpy(dtype=float)
    positive = losses[np.isfinite(losses)]
    log_scale = positive.size > 0 and bool((positive > 0).all())
    shared = None
    for position, combination in enumerate(shown, start=1):
        axis = figure.add_subplot(rows, columns, position, sharey=shared)
        shared = shared or axis
        of = curves[curves["combination"] == combination]
        for column, style, label in (
            ("train_loss", "-", "training"),
            ("val_loss", "--", "validation"),
        ):
            by_epoch = of.groupby("epoch")[column]
            mean = by_epoch.mean()
            if mean.isna().all():
                continue
            colour = BAR if column == "train_loss" else MEAN
            # Points too when there are few epochs: a one-epoch curve has no line to draw.
            marker = "o" if len(mean) <= 20 else None
            axis.plot(
                mean.index, mean.to_numpy(), style, color=colour, marker=marker, markersize=4,
                label=f"{label} (mean)",
            )  # fmt: skip
            low, high = by_epoch.min().to_numpy(), by_epoch.max().to_numpy()
            if len(mean) == 1:  # the folds' spread as a bar: a band needs two epochs
                axis.vlines(mean.index, low, high, color=colour, alpha=0.5, linewidth=6)
            else:
                axis.fill_between(
                    mean.index, low, high, color=colour, alpha=0.15,
                    label=f"{label} (fold min-max)",
                )  # fmt: skip
        stops = early_stops(of, cv_results, combination)
        if len(stops):
            axis.scatter(
                stops["epoch"], stops["train_loss"], marker="v", s=30, color=STOP, zorder=4,
                label="early stopping ended a fold",
            )  # fmt: skip
        rank = int(ranked.loc[ranked["combination"] == combination, "rank_test_score"].iloc[0])
        words = ", ".join(f"{_short(k)}={_value_text(params[combination].get(k))}" for k in varying)
        # Two lines: one line of 70 characters overflowed its panel into the next one's title.
        title = f"#{combination} (rank {rank})\n{words[:TITLE_CHARACTERS]}"
        axis.set_title(title.strip(), fontsize=8)
        axis.set_xlabel("epoch", fontsize=8)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        epochs = sorted(of["epoch"].unique())
        if len(epochs) == 1:  # one tick at the epoch, not a zoom into fractions of one
            axis.set_xlim(epochs[0] - 1, epochs[0] + 1)
            axis.set_xticks(epochs)
        if log_scale:  # ticks at 1, 2, 5 x 10^k, written plainly (`20`, not `2 x 10^1`)
            axis.set_yscale("log")
            axis.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            axis.yaxis.set_minor_formatter(NullFormatter())
        axis.set_ylabel("loss" + (" (log scale)" if log_scale else ""), fontsize=8)
        axis.tick_params(which="both", labelsize=7)
        axis.grid(alpha=0.3)
        if position == 1:
            axis.legend(fontsize=7, frameon=False)
        _fixed_ticks(axis)
    total = len(recorded)
    _suptitle(
        figure,
        f"Learning curves of the best {len(shown)} of {total} combination(s), over folds "
        "(one loss scale for every panel)",
    )
    return _drawn_png(figure)


def early_stops(of: pd.DataFrame, cv_results: pd.DataFrame, combination: int) -> pd.DataFrame:
    """Each fold's last recorded epoch and training loss, for the folds early stopping ended
    before the combination's longest fold (cv_results' `split{k}_stopped_epoch`)."""
    row = cv_results[cv_results["combination"] == combination]
    if "mean_stopped_epoch" not in cv_results.columns or row.empty or of.empty:
        return of.iloc[0:0]
    last = of.sort_values("epoch").groupby("fold").tail(1)
    longest = of["epoch"].max()
    stopped = []
    for fold in last["fold"]:
        column = f"split{int(fold)}_stopped_epoch"
        value = row[column].iloc[0] if column in row else np.nan
        if np.isfinite(value) and value < longest:
            stopped.append(fold)
    return last[last["fold"].isin(stopped)]


def publish_learning_curves(
    results: list[FitResult], cv_results: pd.DataFrame, artifact_key: str, run_dir=None
) -> str | None:
    """Publish the picture, also as learning-curves.png in `run_dir` (a courtesy: a drawing
    error is only logged)."""
    curves = curves_table(results)
    if curves.empty:
        return None
    key = f"{artifact_key}-learning-curves"
    try:
        png = learning_curves_png(curves, cv_results)
        publish_picture(
            key, png, "Learning curves: loss by epoch, mean over folds with their spread"
        )
        if run_dir is not None:
            write_picture(run_dir, "learning-curves", png)
    except Exception as error:  # a picture must never fail the run
        _logger().warning("no picture %s: %s: %s", key, type(error).__name__, error)
        return None
    return key
