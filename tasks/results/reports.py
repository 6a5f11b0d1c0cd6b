"""What a search did, for the Prefect UI: the strategy and its settings, the space, the rungs
and survivors of a halving search, the compute spent against an exhaustive search of the same
candidates, and pictures (score against each searched value; for halving, every candidate's
score rung by rung). Pure functions to markdown and PNG bytes, plus one thin task."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter, LogLocator
from prefect import task
from prefect.artifacts import create_markdown_artifact

from tasks.metrics import METRICS
from tasks.results.plots import (
    BAR,
    BASELINE,
    MEAN,
    _drawn_png,
    _figure,
    _logger,
    baseline_text,
    fold_matrix,
    in_sentence,
    publish_picture,
    write_picture,
)
from tasks.results.search_plots import (
    history_png,
    importance_png,
    parallel_png,
    param_importances,
    rung_noise,
    rungs_png,
)
from tasks.search.spaces import SearchSpace


def _distribution_text(space: SearchSpace, key: str) -> str:
    d = space.dimension(key)
    if d.kind == "choice":
        return "choice of " + ", ".join(
            json.dumps(list(c) if isinstance(c, tuple) else c) for c in d.choices
        )
    bounds = f"[{d.low:g}, {d.high:g}]"
    return f"{d.kind} {bounds}" + (" (both included)" if d.kind == "randint" else "")


def _epochs_of(params: dict[str, Any], default_epochs: int) -> int:
    return int(params.get("epochs", default_epochs))


def search_summary_markdown(
    describe: dict[str, Any],
    space: SearchSpace,
    table: pd.DataFrame,
    n_splits: int,
    refit_metric: str,
    default_epochs: int,
    baseline: float | None = None,
    baseline_kind: str = "",
) -> str:
    """The search-strategy artifact: strategy, space, rungs, compute vs exhaustive, and the
    baseline (what a model that learned nothing scores)."""
    strategy = describe["strategy"]
    draws = fold_matrix(table).shape[1] // n_splits  # repeated k-fold: r x k fold columns
    repeats = f" repeated {draws} times" if draws > 1 else ""
    lines = [
        f"## {strategy} search over {len(space.dimensions)} key(s), {n_splits}-fold CV{repeats}"
    ]
    lines += [""]
    lines += ["| key | searched as |", "| --- | --- |"]
    lines += [f"| `{key}` | {_distribution_text(space, key)} |" for key in space.names]
    lines += ["", "| setting | value |", "| --- | --- |"]
    for name, value in describe.items():
        if name != "rungs" and name != "strategy":
            lines.append(f"| {name} | {value} |")
    if "rungs" in describe:
        rungs = describe["rungs"]
        lines += ["", "| rung | epochs | candidates | continue to the next rung |"]
        lines.append("| --- | --- | --- | --- |")
        for index, rung in enumerate(rungs):
            following = rungs[index + 1]["candidates"] if index + 1 < len(rungs) else "-"
            lines.append(f"| {index} | {rung['epochs']} | {rung['candidates']} | {following} |")
        lines += tie_lines(table)
        lines += noisy_cut_lines(table)
        exhaustive = describe["epochs an exhaustive search trains"]
        scratch = describe["epochs trained (each rung from scratch)"]
        continued = describe["epochs trained (rungs continued)"]
        lines += [
            "",
            f"Epochs per fold: {scratch:,} with every rung trained from scratch, "
            f"{continued:,} with rungs continued from the last one's weights, against "
            f"{exhaustive:,} for every candidate at {describe['rungs'][-1]['epochs']} epochs "
            f"({scratch / exhaustive:.1%} and {continued / exhaustive:.1%}).",
        ]
    else:
        epochs = sum(_epochs_of(json.loads(p), default_epochs) for p in table["params"])
        lines += [
            "",
            f"{len(table)} candidate(s), each trained in full on every fold: {epochs:,} epochs "
            "per fold, as an exhaustive search of the same candidates would.",
        ]
    score = table["mean_test_score"].to_numpy(dtype=float)
    failed = int(np.isnan(score).sum())
    if failed:
        lines.append(f"{failed} row(s) failed (NaN): ranked last.")
    lines.append(f"Ranked by the mean fold {refit_metric}.")
    if baseline is not None and np.isfinite(baseline):
        kind = f" ({baseline_kind})" if baseline_kind else ""
        lines.append(
            f"Baseline{kind}: {refit_metric} {baseline:.3f}, what a model that learned "
            "nothing scores on the same folds."
        )
    return "\n".join(lines) + "\n"


def tie_lines(table: pd.DataFrame) -> list[str]:
    """Halving rungs whose cut fell inside a tie: equal means on both sides of the cut, so the
    candidates' order, not their scores, decided which went on (said, not silent)."""
    if "iter" not in table.columns:
        return []
    lines = []
    for rung in sorted(table["iter"].unique())[:-1]:
        means = table[table["iter"] == rung]["mean_test_score"].to_numpy(dtype=float)
        kept = int((table["iter"] == rung + 1).sum())
        ordered = np.sort(means[np.isfinite(means)])[::-1]
        if 0 < kept < len(ordered) and ordered[kept - 1] == ordered[kept]:
            tied = int((means == ordered[kept]).sum())
            lines.append(
                f"Rung {rung}: the cut fell inside a tie of {tied} candidates at "
                f"{ordered[kept]:.3f}; the candidates' order, not their scores, decided which "
                "went on."
            )
    return ["", *lines] if lines else []


def noisy_cut_lines(table: pd.DataFrame) -> list[str]:
    """Halving rungs that cut candidates the folds could not tell from the rung's best (the
    corrected t-test, tasks.results.noise.rung_p_values): said, with what would settle it."""
    if "within_noise_of_rung_best" not in table.columns:
        return []
    lines = []
    last = table["iter"].max()
    for rung in sorted(table["iter"].unique()):
        if rung == last:
            continue
        rows = table[table["iter"] == rung]
        kept = set(table.loc[table["iter"] == rung + 1, "candidate"])
        cut = rows[~rows["candidate"].isin(kept)]
        noisy = int(rung_noise(cut).sum())
        if noisy:
            lines.append(
                f"Rung {rung}: {noisy} of the {len(cut)} cut candidate(s) were within the noise "
                "of the rung's best (corrected t-test, p > 0.05): these folds could not tell "
                "them apart; --repeats or more folds would."
            )
    return ["", *lines] if lines else []


def _choice_label(value: Any) -> str:
    """A choice as an axis label: text as it is, anything else (widths) as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def _values(table: pd.DataFrame, key: str) -> list[Any]:
    return [json.loads(p).get(key) for p in table["params"]]


def score_by_value_png(
    table: pd.DataFrame,
    space: SearchSpace,
    metric: str = "Accuracy",
    baseline: float | None = None,
    baseline_kind: str = "",
) -> bytes:
    """One panel per searched key (a slice picture): each row's mean score and fold std
    against its value (log axis for a log-uniform key, one column per choice for a
    categorical one); halving rows by rung; the baseline as a dashed line."""
    keys = space.names
    columns = min(3, len(keys))
    rows = math.ceil(len(keys) / columns)
    figure = _figure(4.2 * columns, 3.2 * rows)
    means = table["mean_test_score"].to_numpy(dtype=float)
    stds = table["std_test_score"].to_numpy(dtype=float)
    rungs = table["iter"].to_numpy() if "iter" in table.columns else np.zeros(len(table), int)
    colours = ["#bbbbbb", "#9ecae1", "#6baed6", "#3182bd", "#08519c", MEAN]
    for index, key in enumerate(keys):
        axis = figure.add_subplot(rows, columns, index + 1)
        d = space.dimension(key)
        values = _values(table, key)
        if d.kind == "choice":
            labels = [_choice_label(c) for c in d.choices]
            positions = [
                labels.index(_choice_label(v)) if _choice_label(v) in labels else -1 for v in values
            ]
            jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(values))
            x = np.asarray(positions, dtype=float) + jitter
            axis.set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
        else:
            x = np.asarray(values, dtype=float)
            if d.kind == "loguniform":
                axis.set_xscale("log")
                # "2 x 10^-3" on every minor tick overprinted each other: plain numbers at
                # 1, 2 and 5 per decade only
                axis.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
                axis.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
                axis.xaxis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        for rung in np.unique(rungs):
            chosen = rungs == rung
            colour = colours[-1] if rung == rungs.max() else colours[int(rung) % (len(colours) - 1)]
            colour = colour if "iter" in table.columns else BAR  # red marks the best elsewhere
            label = f"rung {rung}" if "iter" in table.columns else None
            axis.errorbar(
                x[chosen], means[chosen], yerr=stds[chosen], fmt="o", markersize=3.5,
                color=colour, label=label, alpha=0.8, capsize=1.5, linewidth=0.7,
            )  # fmt: skip
        if d.kind == "choice" and "iter" not in table.columns:
            _per_value_spread(axis, table, values, labels)
        if baseline is not None and np.isfinite(baseline):
            axis.axhline(baseline, color=BASELINE, linestyle="--", linewidth=1.2,
                         label=baseline_text(baseline, baseline_kind))  # fmt: skip
        axis.set_title(key.removeprefix("model__"), fontsize=9)
        axis.set_ylabel(f"mean {in_sentence(metric)}", fontsize=8)
        axis.tick_params(which="both", labelsize=7)  # a log axis labels minor ticks too
    if any(axis.get_legend_handles_labels()[1] for axis in figure.axes):
        handles, texts = [], []
        for axis in figure.axes:  # one legend: each label once, whichever panel drew it
            for handle, text in zip(*axis.get_legend_handles_labels(), strict=True):
                if text not in texts:
                    handles.append(handle)
                    texts.append(text)
        figure.axes[0].legend(handles, texts, fontsize=7)
    return _drawn_png(figure)


def per_value_scores(table: pd.DataFrame, values: list[Any], labels: list[str]) -> list:
    """Per choice (in `labels`' order): every fold score of every trial that had it, pooled
    (a trial's mean where the table has no fold columns); empty for a choice never tried."""
    folds = fold_matrix(table)
    if folds.shape[1] == 0:
        folds = table[["mean_test_score"]].to_numpy(dtype=float)
    texts = [_choice_label(v) for v in values]
    pooled = []
    for label in labels:
        chosen = np.array([text == label for text in texts], dtype=bool)
        scores = folds[chosen].ravel() if chosen.any() else np.array([])
        pooled.append(scores[np.isfinite(scores)])
    return pooled


SPREAD = "#333333"  # a choice's pooled fold scores: mean bar and ±1 std band


def _per_value_spread(axis, table: pd.DataFrame, values: list[Any], labels: list[str]) -> None:
    """A choice's summary over the trials that had it: the mean of their fold scores (a dark
    bar) and ±1 std of those fold scores (a band): the slice picture's per-value reading."""
    for position, scores in enumerate(per_value_scores(table, values, labels)):
        if len(scores) == 0:
            continue
        mean, std = float(scores.mean()), float(scores.std())
        axis.add_patch(
            Rectangle((position - 0.3, mean - std), 0.6, 2 * std, color=SPREAD, alpha=0.18,
                      zorder=1, label="per value: ±1 std of its fold scores")
        )  # fmt: skip
        axis.hlines(mean, position - 0.3, position + 0.3, color=SPREAD, linewidth=2, zorder=4,
                    label="per value: mean of its fold scores")  # fmt: skip


@task(name="publish_search_report")
def publish_search_report(
    describe: dict[str, Any],
    space: SearchSpace,
    table: pd.DataFrame,
    n_splits: int,
    refit_metric: str,
    metric_label: str,
    default_epochs: int,
    baseline: float | None = None,
    baseline_kind: str = "",
    run_dir: Path | None = None,
    seed: int = 0,
) -> str:
    """The `search-strategy` artifact and the strategy's pictures (also as PNG files in the
    run folder): halving its rungs, random and TPE their optimisation history, parallel
    coordinates and parameter importance; every strategy its score against each searched
    value. Returns the markdown."""
    markdown = search_summary_markdown(
        describe, space, table, n_splits, refit_metric, default_epochs, baseline, baseline_kind
    )
    strategy = describe["strategy"]
    create_markdown_artifact(
        key="search-strategy", markdown=markdown, description=f"{strategy} search"
    )
    greater = METRICS[refit_metric].greater_is_better if refit_metric in METRICS else True
    pictures: list[tuple[str, Any, str]] = []
    if "iter" in table.columns:
        pictures.append(
            (
                "rungs",
                lambda: rungs_png(table, metric_label, baseline, baseline_kind),
                "Successive halving: every candidate rung by rung",
            )
        )
    else:
        pictures.append(
            (
                "history",
                lambda: history_png(table, metric_label, greater, baseline, baseline_kind),
                "Optimisation history: score per trial, best so far",
            )
        )
        pictures.append(
            (
                "parallel",
                lambda: parallel_png(table, space, metric_label, greater),
                "Parallel coordinates: every trial across the searched keys, coloured by score",
            )
        )
        pictures.append(
            (
                "importance",
                lambda: _importance(table, space, metric_label, greater, seed),
                "Parameter importance (fANOVA over the trials)",
            )
        )
    pictures.append(
        (
            "scores",
            lambda: score_by_value_png(table, space, metric_label, baseline, baseline_kind),
            "Slices: mean score and fold std against each searched value, per choice its "
            "fold scores' mean and spread",
        )
    )
    for name, draw, text in pictures:
        try:
            png = draw()
            if png is None:
                continue
            publish_picture(f"search-{name}", png, text)
            if run_dir is not None:
                write_picture(run_dir, name, png)
        except Exception as error:  # a picture must never fail the run
            _logger().warning("no picture search-%s: %s: %s", name, type(error).__name__, error)
    return markdown


def _importance(
    table: pd.DataFrame, space: SearchSpace, metric: str, greater: bool, seed: int
) -> bytes | None:
    """The importance picture, or None (with a log line) when too few trials scored."""
    importances = param_importances(table, space, greater, seed)
    if not importances:
        _logger().info("no parameter importance: too few trials scored or nothing varies")
        return None
    return importance_png(importances, metric, len(table))
