"""Aggregation: fold scores to a scikit-learn-style cv_results table, the tutorial's summary
lines, files in the run folder and artifacts in the Prefect UI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel
from scipy.stats import rankdata

from tasks.files import write_atomically, write_text_atomically
from tasks.metrics import METRICS
from tasks.numbers import param_text, param_value, score_text
from tasks.records import FitResult
from tasks.results.curves import publish_learning_curves, write_learning_curves
from tasks.results.noise import (
    kfold_ratio,
    noise_mark,
    p_values_against_best,
    rung_mark,
    rung_p_values,
    within_noise,
)
from tasks.results.plots import (
    baseline_text,
    best_first,
    fold_matrix,
    in_sentence,
    publish_results_picture,
)
from tasks.results.run_folder import mark_run_complete


class MetricScore(BaseModel):
    mean: float
    std: float


class SearchSummary(BaseModel):
    """The headline of a run: best combination, its score, and where the files went.

    `best_score` is the refit metric's mean (the one that picked the best combination);
    `best_metrics` has every metric of that combination.
    """

    best_index: int
    best_score: float
    best_std: float
    best_params: dict[str, Any]
    refit_metric: str = "accuracy"
    best_metrics: dict[str, MetricScore] = {}
    n_combinations: int
    n_fits: int
    n_failed_fits: int
    n_cached_fits: int = 0  # reused from the fit cache, not trained by this run
    refit_seconds: float | None = None  # training the best combination on every row
    lines: list[str]
    output_dir: str
    engines: list[str]
    fit_seconds: float = 0.0  # training time summed over fits (parallel fits overlap)
    headline: str = ""  # the run's result in one line (tasks.results.aggregate.headline)
    # What a model that learned nothing scores, per metric (mean over the folds), and what
    # it predicts ("majority class", "mean of the training targets"): tasks.metrics.baseline_scores
    baseline: dict[str, float] = {}
    baseline_kind: str = ""
    # A binary task's positive class, the user's label: what F1, precision and ROC AUC score.
    positive_label: bool | int | str | None = None


def metric_names(results: list[FitResult]) -> list[str]:
    """The metrics the fits were scored on, in the task's order (tasks.metrics.TASK_METRICS)."""
    for result in results:
        if result.scores:
            return list(result.scores)
    return ["accuracy"]


def _metric_value(fit: FitResult, metric: str) -> float:
    if metric in fit.scores:
        return fit.scores[metric]
    if metric == "accuracy" and fit.accuracy is not None:
        return fit.accuracy
    return np.nan


def _train_value(fit: FitResult, metric: str) -> float:
    return fit.train_scores.get(metric, np.nan)


def rank(means: np.ndarray, greater_is_better: bool = True) -> np.ndarray:
    """scikit-learn's ranking: 1 is best, ties share the lowest rank, NaN (failed) ranks last."""
    signed = means if greater_is_better else -means
    return rankdata(-np.where(np.isnan(signed), -np.inf, signed), method="min").astype(int)


def cv_results_table(
    results: list[FitResult],
    n_splits: int,
    refit_metric: str = "accuracy",
    row_columns: dict[int, dict[str, Any]] | None = None,
    train_scores: bool = False,
) -> pd.DataFrame:
    """One row per combination, columns as in scikit-learn's multi-metric `cv_results_`:
    `split{k}_test_{metric}`, `mean_test_{metric}`, `std_test_{metric}`, `rank_test_{metric}`
    for every metric, and the `*_test_score` columns for the refit metric.

    A combination with a failed fold scores NaN (like `error_score=np.nan`) and ranks last.
    `row_columns` adds columns per combination (a search's `candidate`, halving's `iter`,
    `n_resources`). `train_scores` adds `split{k}_train_{metric}`, `mean_train_{metric}` and
    `std_train_{metric}` (the fits' scores on their own training rows; with `score`, too).
    """
    metrics = metric_names(results)
    if refit_metric not in metrics:
        raise ValueError(f"refit metric {refit_metric!r} is not among the scores {metrics}")
    by_combination: dict[int, list[FitResult]] = {}
    for result in results:
        by_combination.setdefault(result.combination, []).append(result)
    rows = []
    for combination in sorted(by_combination):
        fits = sorted(by_combination[combination], key=lambda fit: fit.fold)
        folds = [fit.fold for fit in fits]
        if folds != list(range(n_splits)):
            raise ValueError(
                f"combination {combination} has folds {folds}, expected 0..{n_splits - 1}"
            )
        losses = np.array([np.nan if fit.loss is None else fit.loss for fit in fits])
        fit_times = np.array([fit.fit_seconds for fit in fits])
        errors = [f"fold {fit.fold}: {fit.error}" for fit in fits if fit.error]
        row: dict[str, Any] = {"combination": combination}
        row.update((row_columns or {}).get(combination, {}))
        for fold, seconds in enumerate(fit_times):
            row[f"split{fold}_fit_time"] = float(seconds)
        row["mean_fit_time"] = float(fit_times.mean())
        row["std_fit_time"] = float(fit_times.std())
        for key, value in sorted(fits[0].params.items()):
            row[f"param_{key}"] = _cell(value)
        row["params"] = json.dumps(fits[0].params, sort_keys=True)
        by_metric = {m: np.array([_metric_value(fit, m) for fit in fits]) for m in metrics}
        for name, scores in [("score", by_metric[refit_metric]), *by_metric.items()]:
            for fold, score in enumerate(scores):
                row[f"split{fold}_test_{name}"] = float(score)
            row[f"mean_test_{name}"] = float(scores.mean())
            row[f"std_test_{name}"] = float(scores.std())
        if train_scores:
            on_train = {m: np.array([_train_value(fit, m) for fit in fits]) for m in metrics}
            for name, scores in [("score", on_train[refit_metric]), *on_train.items()]:
                for fold, score in enumerate(scores):
                    row[f"split{fold}_train_{name}"] = float(score)
                row[f"mean_train_{name}"] = float(scores.mean())
                row[f"std_train_{name}"] = float(scores.std())
        for fold, loss in enumerate(losses):
            row[f"split{fold}_test_loss"] = float(loss)
        row["mean_test_loss"] = float(losses.mean())
        if any(fit.stopped_epoch is not None for fit in results):
            # early stopping: the epochs each fold's fit trained (NaN: no early stopping)
            stopped = np.array(
                [np.nan if f.stopped_epoch is None else f.stopped_epoch for f in fits]
            )
            for fold, epochs in enumerate(stopped):
                row[f"split{fold}_stopped_epoch"] = float(epochs)
            row["mean_stopped_epoch"] = float(stopped.mean())
        row["engine"] = fits[0].engine
        row["error"] = "; ".join(errors) if errors else ""
        rows.append(row)
    table = pd.DataFrame(rows)
    for metric in metrics:
        greater = METRICS[metric].greater_is_better if metric in METRICS else True
        table[f"rank_test_{metric}"] = rank(table[f"mean_test_{metric}"].to_numpy(), greater)
    table["rank_test_score"] = table[f"rank_test_{refit_metric}"]
    return with_noise_marks(table, test_train_ratio(results, n_splits))


def test_train_ratio(results: list[FitResult], n_splits: int) -> float:
    """n_test / n_train of the folds, as the corrected t-test needs it: read from the fits'
    own row counts, so repeated k-fold (r x k scores, ratio still 1/(k-1)) and a caller's
    splitter get theirs; 1/(n_splits - 1) when no fit counted its rows."""
    ratios = [fit.n_test / fit.n_train for fit in results if fit.n_train > 0 and fit.n_test > 0]
    if ratios:
        return float(np.mean(ratios))
    return kfold_ratio(n_splits) if n_splits >= 2 else math.nan


def with_noise_marks(table: pd.DataFrame, ratio: float) -> pd.DataFrame:
    """`p_vs_best` (the corrected resampled t-test's two-sided p-value of each row against the
    best, tasks.results.noise, with `ratio` = n_test / n_train) and `within_noise_of_best`
    (p > 0.05: these folds cannot tell the two apart); one fold compares nothing. Halving
    compares the best's rung for these, and adds `p_vs_rung_best` and
    `within_noise_of_rung_best`: each row against the best of its own rung, so a cut decided
    inside the noise is seen (tasks.results.noise.rung_p_values)."""
    best = best_row(table)
    same_rung = (table["iter"] == table.loc[best, "iter"]).to_numpy() if "iter" in table else None
    folds = fold_matrix(table)
    if folds.shape[1] < 2 or not np.isfinite(ratio):
        table["p_vs_best"] = np.nan
    else:
        table["p_vs_best"] = p_values_against_best(folds, best, ratio, same_rung)
    table["within_noise_of_best"] = within_noise(table["p_vs_best"].to_numpy())
    if "iter" in table:
        if folds.shape[1] < 2 or not np.isfinite(ratio):
            table["p_vs_rung_best"] = np.nan
        else:
            ranks = table["rank_test_score"].to_numpy()
            table["p_vs_rung_best"] = rung_p_values(folds, table["iter"].to_numpy(), ranks, ratio)
        table["within_noise_of_rung_best"] = within_noise(table["p_vs_rung_best"].to_numpy())
    return table


def _cell(value: Any) -> Any:
    """Lists and tuples become text so Parquet gets one type per column."""
    return json.dumps(list(value)) if isinstance(value, list | tuple) else value


def params_of(table: pd.DataFrame, row: int) -> dict[str, Any]:
    params = json.loads(table.loc[row, "params"])
    return {key: tuple(v) if isinstance(v, list) else v for key, v in params.items()}


def best_row(table: pd.DataFrame) -> int:
    """The first combination of rank 1, as `GridSearchCV.best_index_` picks it; with halving's
    `iter` column, the best of the last rung, as scikit-learn's halving searches pick it."""
    ranks = table["rank_test_score"].to_numpy()
    if "iter" in table.columns:
        last = table["iter"].to_numpy() == table["iter"].max()
        ranks = np.where(last, ranks, np.iinfo(ranks.dtype).max)
    return int(np.flatnonzero(ranks == ranks.min())[0])


def row_noise_mark(table: pd.DataFrame, index: int, best: int) -> str:
    """A row's within-the-noise mark: against the best (tasks.results.noise.noise_mark), or,
    for a halving row of an earlier rung than the best's, against its own rung's best."""
    if "p_vs_rung_best" in table and table.loc[index, "iter"] != table.loc[best, "iter"]:
        return rung_mark(float(table.loc[index, "p_vs_rung_best"]))
    return noise_mark(index == best, float(table.loc[index, "p_vs_best"]))


def best_so_far(
    results: list[FitResult], n_folds: int, refit_metric: str = "accuracy"
) -> int | None:
    """The combination cv_results would pick among those whose every fold is done (None if
    none is): what a refit started before the last fits end bets on."""
    folds: dict[int, set[int]] = {}
    for result in results:
        folds.setdefault(result.combination, set()).add(result.fold)
    every_fold = set(range(n_folds))
    complete = sorted(c for c, done in folds.items() if done == every_fold)
    if not complete:
        return None
    finished = [result for result in results if folds[result.combination] == every_fold]
    return complete[best_row(cv_results_table(finished, n_folds, refit_metric))]


def tutorial_lines(table: pd.DataFrame) -> list[str]:
    """Exactly the tutorial's printout: the best line, then `mean (std) with: params` per row."""
    best = best_row(table)
    lines = [
        "Best: %f using %s" % (table.loc[best, "mean_test_score"], params_of(table, best))  # noqa: UP031
    ]
    for row in range(len(table)):
        lines.append(
            "%f (%f) with: %r"  # noqa: UP031
            % (
                table.loc[row, "mean_test_score"],
                table.loc[row, "std_test_score"],
                params_of(table, row),
            )
        )
    return lines


def write_results(table: pd.DataFrame, lines: list[str], run_dir: Path) -> None:
    """cv_results as Parquet and CSV plus the summary text, each written atomically."""
    write_atomically(run_dir / "cv_results.parquet", lambda p: table.to_parquet(p, index=False))
    write_atomically(run_dir / "cv_results.csv", lambda p: table.to_csv(p, index=False))
    write_text_atomically(run_dir / "summary.txt", "\n".join(lines) + "\n")


def summarize(
    table: pd.DataFrame,
    results: list[FitResult],
    run_dir: Path,
    refit_metric: str = "accuracy",
    baseline: dict[str, float] | None = None,
    baseline_kind: str = "",
    positive_label: bool | int | str | None = None,
) -> SearchSummary:
    best = best_row(table)
    summary = SearchSummary(
        best_index=best,
        best_score=float(table.loc[best, "mean_test_score"]),
        best_std=float(table.loc[best, "std_test_score"]),
        best_params=params_of(table, best),
        refit_metric=refit_metric,
        best_metrics={
            metric: MetricScore(
                mean=float(table.loc[best, f"mean_test_{metric}"]),
                std=float(table.loc[best, f"std_test_{metric}"]),
            )
            for metric in metric_names(results)
        },
        n_combinations=len(table),
        n_fits=len(results),
        n_failed_fits=sum(1 for result in results if result.error),
        n_cached_fits=sum(1 for result in results if result.cached),
        lines=tutorial_lines(table),
        output_dir=str(run_dir),
        engines=sorted({result.engine for result in results}),
        fit_seconds=float(sum(result.fit_seconds for result in results)),
        baseline=baseline or {},
        baseline_kind=baseline_kind if baseline else "",
        positive_label=positive_label,
    )
    return summary.model_copy(update={"headline": headline(summary)})


def _short_key(key: str) -> str:
    return key.removeprefix("model__")


def _value_text(value: Any) -> str:
    return param_text(value)  # floats rounded as everywhere (tasks.numbers)


def headline(summary: SearchSummary) -> str:
    """`Best accuracy 0.750 (0.017) with batch_size=5, epochs=150, ... - 162 fits, 41.3 s of
    training`: what a run page's state message and first artifact say."""
    metric = (
        METRICS[summary.refit_metric].label
        if summary.refit_metric in METRICS
        else summary.refit_metric
    )
    label = in_sentence(metric)
    params = ", ".join(f"{_short_key(k)}={_value_text(v)}" for k, v in summary.best_params.items())
    counts = [f"{summary.n_fits} fits"]
    if summary.n_failed_fits:
        counts.append(f"{summary.n_failed_fits} failed")
    if summary.n_cached_fits:
        counts.append(f"{summary.n_cached_fits} reused from the cache")
    baseline = summary.baseline.get(summary.refit_metric)
    return (
        f"Best {label} {summary.best_score:.3f} ({summary.best_std:.3f}) "
        f"with {params or 'the defaults'} - {', '.join(counts)}, "
        f"{summary.fit_seconds:.1f} s of training"
        + ("" if baseline is None else f"; {baseline_text(baseline, summary.baseline_kind)}")
    )


def result_markdown(summary: SearchSummary, best_model: Path | None = None) -> str:
    """The run's result: the headline, then where its files are (paths on the flow's host)."""
    run_dir = Path(summary.output_dir)
    files = [("run folder", run_dir)]
    if best_model is not None:
        files.append(("best model, refitted on every row", best_model))
    files += [
        ("cv_results (CSV)", run_dir / "cv_results.csv"),
        ("cv_results (Parquet)", run_dir / "cv_results.parquet"),
        ("the tutorial's lines", run_dir / "summary.txt"),
    ]
    lines = [f"**{summary.headline}**", ""]
    lines += [f"- {what}: `{path}`" for what, path in files]
    lines += [
        "",
        f"{summary.n_combinations} combination(s), ranked by {summary.refit_metric} "
        f"(mean over folds, std in brackets); engines: {', '.join(summary.engines)}.",
        *baseline_lines(summary),
    ]
    return "\n".join(lines) + "\n"


@task(name="publish_result")
def publish_result(
    summary: SearchSummary, artifact_key: str, best_model: Path | None = None
) -> str:
    """The run's result as its own short artifact; returns the headline for the final state.
    The last step of every flow: its run folder stops saying INCOMPLETE here."""
    mark_run_complete(Path(summary.output_dir))
    create_markdown_artifact(
        key=f"{artifact_key}-best",
        markdown=result_markdown(summary, best_model),
        description=summary.headline,
    )
    return summary.headline


def metric_lines(summary: SearchSummary) -> list[str]:
    """`Accuracy: 0.770833 (0.041667)` per metric of the best combination, refit metric last;
    the baseline's line first when the run has one (baseline_lines)."""
    order = sorted(summary.best_metrics, key=lambda metric: metric == summary.refit_metric)
    return [
        *baseline_lines(summary),
        *(
            f"{METRICS[m].label if m in METRICS else m}: "
            f"{summary.best_metrics[m].mean:.6f} ({summary.best_metrics[m].std:.6f})"
            for m in order
        ),
    ]


def baseline_lines(summary: SearchSummary) -> list[str]:
    """`Baseline (majority class): accuracy 0.651042, roc_auc 0.500000, ...`, the refit
    metric first: what a model that learned nothing scores, beside the best's scores; then,
    for a binary task, `; positive class: '>50K'`, the class F1, precision and ROC AUC score
    (on a line of its own without a baseline; no line without either)."""
    positive = (
        None if summary.positive_label is None else positive_class_text(summary.positive_label)
    )
    if not summary.baseline:
        return [] if positive is None else [positive[0].upper() + positive[1:]]
    order = sorted(summary.baseline, key=lambda metric: metric != summary.refit_metric)
    scores = ", ".join(f"{metric} {summary.baseline[metric]:.6f}" for metric in order)
    kind = f" ({summary.baseline_kind})" if summary.baseline_kind else ""
    return [f"Baseline{kind}: {scores}" + ("" if positive is None else f"; {positive}")]


def positive_class_text(label: bool | int | str) -> str:
    """`positive class: '>50K'` (text quoted, numbers and booleans as they are)."""
    return f"positive class: {label!r}" if isinstance(label, str) else f"positive class: {label}"


def summary_text_lines(summary: SearchSummary) -> list[str]:
    """summary.txt's lines: the tutorial's, then the baseline and the positive class."""
    return [*summary.lines, *baseline_lines(summary)]


# A search's own columns (tasks.search.strategies): the candidate, and halving's rung and epochs.
SEARCH_COLUMNS = ("candidate", "iter", "n_resources", "n_candidates")


def artifact_table(
    table: pd.DataFrame,
    refit_metric: str = "accuracy",
    baseline: dict[str, float] | None = None,
    baseline_kind: str = "",
) -> list[dict[str, Any]]:
    """cv_results as the UI's table shows it: what was tried first, then how it scored.

    `combination` (the number task-run names use, `combos 0-17`) and the `param_*` columns
    (sampled floats rounded as everywhere, tasks.numbers), then the refit metric's mean, std
    and rank, `within_noise` (tasks.results.noise.noise_mark), the other metrics' means,
    stopped epochs, its fold scores and the rest; a search's bookkeeping (`candidate`,
    halving's `iter`, `n_resources`, `n_candidates`) last; best first. Scores and times as
    text with a fixed number of significant digits, so columns line up. Columns that only
    repeat another (`*_test_score`, a Keras loss equal to `log_loss`) are left to the CSV.
    With a baseline, a last row `baseline (majority class)` holds its mean per metric.
    """
    ordered = best_first(table)
    metric = refit_metric
    columns = ["combination", *(c for c in table.columns if c.startswith("param_"))]
    columns += [f"mean_test_{metric}", f"std_test_{metric}", f"rank_test_{metric}"]
    others = [
        c
        for c in table.columns
        if c.startswith("mean_test_") and c not in (f"mean_test_{metric}", "mean_test_score")
    ]
    columns += [c for c in others if not _repeats_a_column(table, c, [*columns, *others])]
    columns += _split_columns(table, metric) + ["mean_fit_time", "engine", "error"]
    columns += [c for c in SEARCH_COLUMNS if c in table.columns]
    best = best_row(table)
    rows = []
    for index, record in zip(
        ordered.index, ordered[columns].to_dict(orient="records"), strict=True
    ):
        row = {key: _artifact_value(key, value) for key, value in record.items()}
        marks = {"within_noise": row_noise_mark(table, index, best)}
        if "mean_stopped_epoch" in table.columns:  # early stopping: each fold's last epoch
            marks["stopped_epochs"] = _stopped_text(table.loc[index])
        rows.append(_insert_after(row, f"rank_test_{metric}", marks))
    if baseline:
        label = "baseline" + (f" ({baseline_kind})" if baseline_kind else "")
        row: dict[str, Any] = dict.fromkeys(rows[0] if rows else columns)
        row["combination"] = label
        for name, value in baseline.items():
            if f"mean_test_{name}" in row:
                row[f"mean_test_{name}"] = score_text(value)
        rows.append(row)
    return rows


def _stopped_text(row: pd.Series) -> str:
    """`12, 30, 25`: the epoch each fold's fit stopped at (`-` where it did not stop early)."""
    folds = sorted(
        (c for c in row.index if c.startswith("split") and c.endswith("_stopped_epoch")),
        key=lambda name: int(name[len("split") : -len("_stopped_epoch")]),
    )
    return ", ".join("-" if math.isnan(row[c]) else str(int(row[c])) for c in folds)


def _insert_after(row: dict[str, Any], key: str, extra: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in row.items():
        out[name] = value
        if name == key:
            out.update(extra)
    return out


def _split_columns(table: pd.DataFrame, metric: str) -> list[str]:
    suffix = f"_test_{metric}"
    found = [c for c in table.columns if c.startswith("split") and c.endswith(suffix)]
    return sorted(found, key=lambda name: int(name[len("split") : -len(suffix)]))


def _repeats_a_column(table: pd.DataFrame, column: str, candidates: list[str]) -> bool:
    """True if an earlier-named metric column holds the same numbers (Keras' loss = log_loss)."""
    if column != "mean_test_loss":
        return False
    values = table[column].to_numpy(dtype=float)
    return any(
        other != column
        and other.startswith("mean_test_")
        and np.allclose(values, table[other].to_numpy(dtype=float), equal_nan=True)
        for other in candidates
    )


def _artifact_value(column: str, value: Any) -> Any:
    """Plain Python for Prefect (it refuses numpy scalars): parameters rounded as everywhere
    (tasks.numbers.param_value), counts as integers, scores and times as fixed-width text."""
    if isinstance(value, np.generic):
        value = value.item()
    if column.startswith("param_"):
        return param_value(value)
    if isinstance(value, float) and column.startswith("rank_"):
        return None if math.isnan(value) else int(value)
    return score_text(value) if isinstance(value, float) else value


@task(name="aggregate_results")
def aggregate_results(
    results: list[FitResult],
    n_splits: int,
    run_dir: Path,
    artifact_key: str,
    refit_metric: str = "accuracy",
    row_columns: dict[int, dict[str, Any]] | None = None,
    train_scores: bool = False,
    baseline: dict[str, float] | None = None,
    baseline_kind: str = "",
    positive_label: bool | int | str | None = None,
) -> SearchSummary:
    """Build cv_results, write it to the run folder and publish it to the Prefect UI (its
    pictures: publish_pictures); `baseline` (tasks.metrics.baseline_scores) goes beside
    every score, and a binary task's `positive_label` is named beside it (summary.txt ends
    with that line, after the tutorial's)."""
    table = cv_results_table(results, n_splits, refit_metric, row_columns, train_scores)
    summary = summarize(
        table, results, run_dir, refit_metric, baseline, baseline_kind, positive_label
    )
    write_results(table, summary_text_lines(summary), run_dir)
    below = f"; last row: the {baseline_kind or 'baseline'}'s scores" if baseline else ""
    create_table_artifact(
        key=f"{artifact_key}-results",
        table=artifact_table(table, refit_metric, baseline, baseline_kind),
        description=(
            f"cv_results: {len(table)} combination(s) x {n_splits} folds, best first "
            f"(by {refit_metric}){below}; every column in cv_results.csv"
        ),
    )
    create_markdown_artifact(
        key=f"{artifact_key}-summary",
        markdown="```\n" + "\n".join(summary_text_lines(summary)) + "\n```\n",
        description="The tutorial's result lines",
    )
    write_learning_curves(results, run_dir)
    return summary


@task(name="publish_pictures")
def publish_pictures(
    results: list[FitResult],
    n_splits: int,
    artifact_key: str,
    refit_metric: str = "accuracy",
    row_columns: dict[int, dict[str, Any]] | None = None,
    baseline: dict[str, float] | None = None,
    baseline_kind: str = "",
    heatmap: bool = True,
    run_dir: Path | None = None,
) -> list[str]:
    """The run's pictures: fold scores (CV) or ranking (and a grid's heatmap: `heatmap`) of the
    refit metric, and learning curves; each also as a PNG in `run_dir`. A task of their own,
    submitted beside the aggregation, so drawing (about 1 s) runs beside the refit. Returns
    the artifact keys."""
    table = cv_results_table(results, n_splits, refit_metric, row_columns)
    label = METRICS[refit_metric].label if refit_metric in METRICS else refit_metric
    line = (baseline or {}).get(refit_metric)
    keys = publish_results_picture(
        table, artifact_key, label, line, baseline_kind, heatmap=heatmap, run_dir=run_dir
    )
    curves = publish_learning_curves(results, table, artifact_key, run_dir)
    return keys + ([curves] if curves else [])
