"""What a search did, for the Prefect UI: the strategy and its settings, the space, the rungs
and survivors of a halving search, the compute spent against an exhaustive search of the same
candidates, and pictures (score against each searched value; for halving, every candidate's
score rung by rung). Pure functions to markdown and PNG bytes, plus one thin task."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.ticker import NullLocator
from prefect import task
from prefect.artifacts import create_markdown_artifact

from tasks.results.plots import (
    BAR,
    BASELINE,
    MEAN,
    _drawn_png,
    _figure,
    baseline_text,
    in_sentence,
    publish_picture,
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
    """The search-summary artifact: strategy, space, rungs, compute vs exhaustive, and the
    baseline (what a model that learned nothing scores)."""
    strategy = describe["strategy"]
    lines = [f"## {strategy} search over {len(space.dimensions)} key(s), {n_splits}-fold CV", ""]
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
    """One panel per searched key: each row's mean score against its value (log axis for a
    log-uniform key, one column per choice for a categorical one); halving rows by rung; the
    baseline as a dashed line."""
    keys = space.names
    columns = min(3, len(keys))
    rows = math.ceil(len(keys) / columns)
    figure = _figure(4.2 * columns, 3.2 * rows)
    means = table["mean_test_score"].to_numpy(dtype=float)
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
        for rung in np.unique(rungs):
            chosen = rungs == rung
            colour = colours[-1] if rung == rungs.max() else colours[int(rung) % (len(colours) - 1)]
            label = f"rung {rung}" if "iter" in table.columns else None
            axis.scatter(x[chosen], means[chosen], s=14, color=colour, label=label, alpha=0.8)
        if baseline is not None and np.isfinite(baseline):
            axis.axhline(baseline, color=BASELINE, linestyle="--", linewidth=1.2,
                         label=baseline_text(baseline, baseline_kind))  # fmt: skip
        axis.set_title(key.removeprefix("model__"), fontsize=9)
        axis.set_ylabel(f"mean {in_sentence(metric)}", fontsize=8)
        axis.tick_params(which="both", labelsize=7)  # a log axis labels minor ticks too
    if "iter" in table.columns or baseline is not None:
        figure.axes[0].legend(fontsize=7)
    return _drawn_png(figure)


def halving_png(table: pd.DataFrame, metric: str = "Accuracy") -> bytes:
    """Every candidate's mean score rung by rung (epochs on a log axis): the survivors' lines
    go on, the others stop; the title counts candidates per rung."""
    figure = _figure(6.5, 3.8)
    axis = figure.add_subplot()
    last = table["iter"].max()
    best = table[table["iter"] == last]["mean_test_score"].idxmax()
    best_candidate = table.loc[best, "candidate"] if not pd.isna(best) else None
    for candidate, rows in table.groupby("candidate"):
        rows = rows.sort_values("iter")
        won = candidate == best_candidate
        axis.plot(
            rows["n_resources"],
            rows["mean_test_score"],
            marker="o",
            markersize=3 if not won else 5,
            linewidth=0.6 if not won else 2.0,
            color=MEAN if won else BAR,
            alpha=1.0 if won else 0.35,
        )
    counts = table.groupby("iter")["candidate"].count().tolist()
    epochs = table.groupby("iter")["n_resources"].first().tolist()
    axis.set_xscale("log")
    axis.set_xticks(epochs, [str(e) for e in epochs])
    axis.xaxis.set_minor_locator(NullLocator())  # the rungs' epochs are the only ticks to read
    axis.set_xlabel("epochs (rung)")
    axis.set_ylabel(f"mean {in_sentence(metric)}")
    axis.set_title("candidates per rung: " + " -> ".join(map(str, counts)), fontsize=9)
    return _drawn_png(figure)


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
) -> str:
    """The search-summary artifact and the search's pictures; returns the markdown."""
    markdown = search_summary_markdown(
        describe, space, table, n_splits, refit_metric, default_epochs, baseline, baseline_kind
    )
    create_markdown_artifact(
        key="search-summary", markdown=markdown, description=f"{describe['strategy']} search"
    )
    pictures = [("search-scores", score_by_value_png, "Mean score against each searched value")]
    if "iter" in table.columns:
        pictures.append(("search-rungs", halving_png, "Successive halving: candidates per rung"))
    for key, draw, text in pictures:
        try:
            publish_picture(
                key,
                draw(table, metric=metric_label)
                if draw is halving_png
                else draw(table, space, metric_label, baseline, baseline_kind),
                text,
            )
        except Exception as error:  # a picture must never fail the run
            from tasks.results.plots import _logger

            _logger().warning("no picture %s: %s: %s", key, type(error).__name__, error)
    return markdown
