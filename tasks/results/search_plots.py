"""Pictures chosen per search strategy: a sampled search (random, TPE) gets its optimisation
history, parallel coordinates and per-parameter importance; successive halving its rungs. A
grid keeps its heatmap (tasks.results.plots). No picture calls a candidate "failed" unless its
fits failed: a candidate cut at a rung is drawn as cut, one never sampled is not drawn at all.

Pure functions from a cv_results table to PNG bytes (matplotlib's Agg canvas, as plots.py)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullLocator

from tasks.numbers import param_text
from tasks.results.plots import (
    BAR,
    CMAP,
    FAILED,
    MEAN,
    _baseline_style,
    _drawn_png,
    _figure,
    _short,
    _suptitle,
    in_sentence,
)
from tasks.search.spaces import SearchSpace, _optuna_choice, optuna_distributions

NOISE = "#f58518"  # within the noise of the best (tasks.results.noise)
MIN_TRIALS_FOR_IMPORTANCE = 4


def running_best(means: np.ndarray, greater_is_better: bool = True) -> np.ndarray:
    """The best mean so far after each trial, in trial order (failed trials, NaN, skipped;
    NaN until the first trial that scored)."""
    best = np.full(len(means), np.nan)
    current = math.nan
    for index, value in enumerate(np.asarray(means, dtype=float)):
        if not math.isnan(value) and (
            math.isnan(current) or (value > current if greater_is_better else value < current)
        ):
            current = value
        best[index] = current
    return best


def history_png(
    table: pd.DataFrame,
    metric: str = "Accuracy",
    greater_is_better: bool = True,
    baseline: float | None = None,
    baseline_kind: str = "",
) -> bytes:
    """Each trial's mean score in the order it was tried, its fold std as an error bar, the
    best so far as a step line, candidates within the noise of the best in orange, and the
    baseline dashed: did the search still improve when it stopped?"""
    ordered = table.sort_values("combination", kind="stable")
    trials = np.arange(1, len(ordered) + 1)
    means = ordered["mean_test_score"].to_numpy(dtype=float)
    stds = ordered["std_test_score"].to_numpy(dtype=float)
    noisy = (
        ordered["within_noise_of_best"].to_numpy(dtype=bool)
        if "within_noise_of_best" in ordered
        else np.zeros(len(ordered), bool)
    )
    figure = _figure(7.0, 3.8)
    axis = figure.add_subplot()
    if baseline is not None and np.isfinite(baseline):
        axis.axhline(baseline, **_baseline_style(baseline, baseline_kind))
    for chosen, colour, label in (
        (~noisy, BAR, "trial: mean ± fold std"),
        (noisy, NOISE, "within the noise of the best"),
    ):
        if chosen.any():
            axis.errorbar(
                trials[chosen], means[chosen], yerr=stds[chosen], fmt="o", color=colour,
                markersize=4, capsize=2, linewidth=0.8, zorder=3, label=label,
            )  # fmt: skip
    axis.step(
        trials, running_best(means, greater_is_better), where="post", color=MEAN,
        linewidth=1.8, zorder=2, label="best so far",
    )  # fmt: skip
    failed = np.isnan(means)
    if failed.any():
        low = np.nanmin(means) if (~failed).any() else 0.0
        axis.scatter(trials[failed], np.full(failed.sum(), low), marker="x", color=FAILED,
                     label="failed (every fold NaN)", zorder=3)  # fmt: skip
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("trial (in the order tried)")
    axis.set_ylabel(f"mean {in_sentence(metric)}")
    axis.grid(alpha=0.3)
    _suptitle(figure, f"Optimisation history: {metric} of {len(ordered)} trials")
    figure.legend(loc="outside lower center", fontsize=8, frameon=False, ncols=2)
    return _drawn_png(figure)


def param_importances(
    table: pd.DataFrame, space: SearchSpace, greater_is_better: bool = True, seed: int = 0
) -> dict[str, float]:
    """Each searched key's share of the score's variance, by Optuna's fANOVA evaluator fed the
    trials (mean score per candidate); keys with one value only are left out. Empty when fewer
    than MIN_TRIALS_FOR_IMPORTANCE trials scored."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {key: d for key, d in optuna_distributions(space).items() if not d.single()}
    scored = table[np.isfinite(table["mean_test_score"].to_numpy(dtype=float))]
    if len(scored) < MIN_TRIALS_FOR_IMPORTANCE or not distributions:
        return {}
    study = optuna.create_study(direction="maximize" if greater_is_better else "minimize")
    for text, mean in zip(scored["params"], scored["mean_test_score"], strict=True):
        params = json.loads(text)
        study.add_trial(
            optuna.trial.create_trial(
                params={key: _optuna_choice(params[key]) for key in distributions},
                distributions=distributions,
                value=float(mean),
            )
        )
    found = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed))
    return {key: float(value) for key, value in found.items()}


def importance_png(importances: dict[str, float], metric: str, n_trials: int) -> bytes:
    """One bar per searched key, largest first: which keys the score depended on."""
    keys = sorted(importances, key=importances.get)
    figure = _figure(6.0, max(2.2, 0.4 * len(keys) + 1.4))
    axis = figure.add_subplot()
    values = [importances[k] for k in keys]
    axis.barh([_short(k) for k in keys], values, color=BAR)
    for position, value in enumerate(values):
        axis.text(value, position, f" {value:.2f}", va="center", fontsize=8)
    axis.set_xlim(0, max(1.0, max(values, default=0) * 1.15))
    axis.set_xlabel(f"share of the variance of the mean {in_sentence(metric)} (fANOVA)")
    _suptitle(
        figure,
        f"Parameter importance over {n_trials} trials"
        + (" (few trials: indicative only)" if n_trials < 30 else ""),
    )
    return _drawn_png(figure)


def _same_choice(value: Any, choice: Any) -> bool:
    """A value read back from the params' JSON (lists) against a space's choice (tuples)."""
    as_json = lambda v: json.dumps(list(v) if isinstance(v, tuple) else v)  # noqa: E731
    return as_json(value) == as_json(choice)


def axis_positions(space: SearchSpace, key: str, values: list[Any]) -> tuple[np.ndarray, list]:
    """Where each trial's value sits on a parallel-coordinates axis (0 at the bottom, 1 at the
    top of the key's range: log for a log-uniform key, evenly spaced choices) and the axis's
    ticks as (position, label) pairs. A value outside the space sits at NaN."""
    d = space.dimension(key)
    if d.kind == "choice":
        count = len(d.choices)
        spots = [index / (count - 1) if count > 1 else 0.5 for index in range(count)]
        positions = [
            next((spots[i] for i, c in enumerate(d.choices) if _same_choice(v, c)), math.nan)
            for v in values
        ]
        return np.asarray(positions, dtype=float), [
            (spot, param_text(c)) for spot, c in zip(spots, d.choices, strict=True)
        ]
    raw = np.asarray([math.nan if v is None else float(v) for v in values], dtype=float)
    low, high = float(d.low), float(d.high)
    if d.kind == "loguniform":
        scale = np.log
        middle = math.sqrt(low * high)
    else:
        scale = np.asarray
        middle = (low + high) / 2
    span = float(scale(high) - scale(low)) or 1.0
    positions = (scale(raw) - scale(low)) / span
    ticks = [(float((scale(v) - scale(low)) / span), f"{v:.3g}") for v in (low, middle, high)]
    if d.kind == "randint":
        ticks = [(position, str(round(float(label)))) for position, label in ticks]
    return positions, ticks


def parallel_png(
    table: pd.DataFrame,
    space: SearchSpace,
    metric: str = "Accuracy",
    greater_is_better: bool = True,
) -> bytes:
    """Parallel coordinates: one line per trial across the searched keys to its mean score,
    coloured by that score (brighter is better), the best drawn last in red; a failed trial
    grey and dashed, at the bottom of the score axis. Which regions of the space the good
    trials share, at a glance."""
    keys = space.names
    params = [json.loads(text) for text in table["params"]]
    means = table["mean_test_score"].to_numpy(dtype=float)
    columns = [axis_positions(space, key, [p.get(key) for p in params]) for key in keys]
    finite = np.isfinite(means)
    low, high = (means[finite].min(), means[finite].max()) if finite.any() else (0.0, 1.0)
    span = (high - low) or 1.0
    score_position = np.where(finite, (means - low) / span, 0.0)
    lines = np.column_stack([*(positions for positions, _ in columns), score_position])
    figure = _figure(max(6.0, 1.5 * (len(keys) + 1) + 1.5), 4.2)
    axis = figure.add_subplot()
    cmap = colormaps[CMAP if greater_is_better else f"{CMAP}_r"]
    norm = Normalize(low, high)
    x = np.arange(len(keys) + 1)
    order = np.argsort(np.where(finite, means if greater_is_better else -means, -np.inf))
    best = order[-1] if finite.any() else None
    for row in order:
        if not finite[row]:
            axis.plot(x, lines[row], color=FAILED, linestyle="--", linewidth=0.8, zorder=1)
        elif row == best:
            axis.plot(x, lines[row], color=MEAN, linewidth=2.4, zorder=4, label="the best")
        else:
            axis.plot(x, lines[row], color=cmap(norm(means[row])), linewidth=1.1, alpha=0.8,
                      zorder=2)  # fmt: skip
    score_ticks = [(0.0, f"{low:.3g}"), (0.5, f"{(low + high) / 2:.3g}"), (1.0, f"{high:.3g}")]
    for position, ticks in zip(x, [*(t for _, t in columns), score_ticks], strict=True):
        axis.axvline(position, color="#333333", linewidth=0.8, zorder=0)
        for y, label in ticks:
            axis.text(position - 0.04, y, label, ha="right", va="center", fontsize=7,
                      bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5, "alpha": 0.7},
                      zorder=5)  # fmt: skip
    axis.set_xticks(x, [*(_short(k) for k in keys), f"mean {in_sentence(metric)}"], fontsize=8)
    axis.set_xlim(-0.45, len(keys) + 0.1)
    axis.set_ylim(-0.05, 1.05)
    axis.set_yticks([])
    for side in ("left", "right", "top"):
        axis.spines[side].set_visible(False)
    figure.colorbar(ScalarMappable(norm, cmap), ax=axis, label=f"mean {in_sentence(metric)}",
                    fraction=0.04, pad=0.02)  # fmt: skip
    failed = int((~finite).sum())
    note = f", {failed} failed (grey, dashed)" if failed else ""
    _suptitle(figure, f"Parallel coordinates: {len(table)} trials, coloured by {metric}{note}")
    return _drawn_png(figure)


def ties(means: np.ndarray) -> np.ndarray:
    """True where a mean equals another row's exactly (a tie the ranking broke by order)."""
    values = np.asarray(means, dtype=float)
    finite = values[np.isfinite(values)]
    unique, counts = np.unique(finite, return_counts=True)
    tied = set(unique[counts > 1].tolist())
    return np.array([v in tied for v in values], dtype=bool)


def rung_noise(rows: pd.DataFrame) -> np.ndarray:
    """True for rows within the noise of their rung's best (aggregate.with_noise_marks),
    that best itself left out (its p is 1): a statistical tie with the rung's best."""
    if "within_noise_of_rung_best" not in rows:
        return np.zeros(len(rows), dtype=bool)
    within = rows["within_noise_of_rung_best"].to_numpy(dtype=bool)
    return within & (rows["p_vs_rung_best"].to_numpy(dtype=float) < 1.0)


def rungs_png(
    table: pd.DataFrame,
    metric: str = "Accuracy",
    baseline: float | None = None,
    baseline_kind: str = "",
) -> bytes:
    """Successive halving rung by rung (epochs on a log axis): each candidate's mean with its
    fold std, a line to the next rung if it was kept, a cross where it was cut; the winner in
    red, tied means ringed (the ranking broke the tie by candidate order), candidates within the
    noise of their rung's best in orange (a cut there was a coin toss), the baseline dashed. A
    cut candidate was evaluated and beaten, not failed."""
    figure = _figure(7.0, 4.2)
    axis = figure.add_subplot()
    last = table["iter"].max()
    final = table[table["iter"] == last]
    winner = final.loc[final["rank_test_score"].idxmin(), "candidate"] if len(final) else None
    epochs = table.groupby("iter")["n_resources"].first()
    spread = 0.03  # a candidate's horizontal offset (log axis), so error bars do not overlap
    n = max(1, table["candidate"].nunique())
    for position, (candidate, rows) in enumerate(table.groupby("candidate")):
        rows = rows.sort_values("iter")
        x = rows["n_resources"].to_numpy(dtype=float) * 10 ** (spread * (position / n - 0.5))
        y = rows["mean_test_score"].to_numpy(dtype=float)
        won = candidate == winner
        colour = MEAN if won else BAR
        axis.errorbar(
            x, y, yerr=rows["std_test_score"].to_numpy(dtype=float), fmt="-o", color=colour,
            markersize=5 if won else 3, linewidth=2.0 if won else 0.7, capsize=2,
            alpha=1.0 if won else 0.6, zorder=3 if won else 2,
        )  # fmt: skip
        noisy = rung_noise(rows)
        if noisy.any():  # kept or cut while its rung's best could not be told apart from it
            axis.scatter(x[noisy], y[noisy], s=36, color=NOISE, zorder=4)
        if rows["iter"].max() < last:  # cut after its last rung
            axis.scatter(x[-1], y[-1], marker="x", s=40, color="black", zorder=5)
    for _, rung in table.groupby("iter"):
        tied = ties(rung["mean_test_score"].to_numpy(dtype=float))
        if tied.any():
            axis.scatter(
                rung["n_resources"].to_numpy(dtype=float)[tied],
                rung["mean_test_score"].to_numpy(dtype=float)[tied],
                s=140, facecolors="none", edgecolors=MEAN, linewidths=1.2, zorder=5,
            )  # fmt: skip
    handles = [
        Line2D([], [], color=MEAN, marker="o", linewidth=2, label="the best (last rung)"),
        Line2D([], [], color=BAR, marker="o", linewidth=0.7, label="mean ± fold std per rung"),
        Line2D([], [], color="black", marker="x", linestyle="", label="cut at this rung"),
        Line2D(
            [],
            [],
            color=NOISE,
            marker="o",
            linestyle="",
            label="within the noise of its rung's best (kept or cut)",
        ),  # fmt: skip
        Line2D(
            [],
            [],
            color=MEAN,
            marker="o",
            markerfacecolor="none",
            markersize=11,
            linestyle="",
            label="tied mean (order broke the tie)",
        ),  # fmt: skip
    ]
    if baseline is not None and np.isfinite(baseline):
        axis.axhline(baseline, **_baseline_style(baseline, baseline_kind))
        handles.append(Line2D([], [], **_baseline_style(baseline, baseline_kind)))
    axis.set_xscale("log")
    axis.set_xticks(epochs.tolist(), [str(e) for e in epochs])
    axis.xaxis.set_minor_locator(NullLocator())
    axis.set_xlabel("epochs (rung)")
    axis.set_ylabel(f"mean {in_sentence(metric)}")
    axis.grid(alpha=0.3)
    counts = table.groupby("iter")["candidate"].count().tolist()
    _suptitle(
        figure,
        f"Successive halving: {metric} per rung; candidates " + " -> ".join(map(str, counts)),
    )
    figure.legend(handles=handles, loc="outside lower center", fontsize=8, frameon=False, ncols=2)
    return _drawn_png(figure)


def strategy_pictures(strategy: str) -> list[str]:
    """The pictures a strategy gets, by artifact key suffix."""
    if strategy == "halving":
        return ["rungs", "scores"]
    return ["history", "parallel", "importance", "scores"]
