import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.metrics import METRICS
from tasks.records import FitResult
from tasks.results.aggregate import (
    artifact_table,
    best_so_far,
    cv_results_table,
    metric_lines,
    result_markdown,
    summarize,
    tutorial_lines,
    write_results,
)


def record(combination, fold, accuracy, params=None, error=None):
    return FitResult(
        combination=combination,
        params=params or {"batch_size": 5 * (combination + 1), "model__optimizer": "adam"},
        fold=fold,
        accuracy=accuracy,
        loss=None if accuracy is None else 0.5,
        n_train=512,
        n_test=256,
        fit_seconds=1.0,
        seed=1,
        engine="reference",
        error=error,
    )


@pytest.fixture
def results():
    scores = {0: [0.70, 0.72, 0.74], 1: [0.76, 0.74, 0.75], 2: [0.76, 0.75, 0.74]}
    return [record(c, f, s) for c, fold_scores in scores.items() for f, s in enumerate(fold_scores)]


def test_cv_results_has_scikit_learn_columns_mean_std_and_rank(results):
    table = cv_results_table(list(reversed(results)), n_splits=3)
    assert list(table["combination"]) == [0, 1, 2]
    assert table.loc[0, "split2_test_score"] == 0.74
    assert table.loc[1, "mean_test_score"] == pytest.approx(0.75)
    assert table.loc[0, "std_test_score"] == pytest.approx(np.std([0.70, 0.72, 0.74]))
    assert list(table["rank_test_score"]) == [3, 1, 1]
    assert json.loads(table.loc[2, "params"]) == {"batch_size": 15, "model__optimizer": "adam"}


def test_summary_prints_the_tutorials_lines(results):
    table = cv_results_table(results, n_splits=3)
    lines = tutorial_lines(table)
    assert lines[0] == "Best: 0.750000 using {'batch_size': 10, 'model__optimizer': 'adam'}"
    assert len(lines) == 4
    assert re.fullmatch(r"0\.720000 \(0\.016330\) with: \{'batch_size': 5, .*\}", lines[1])


def test_a_failed_fold_scores_nan_ranks_last_and_keeps_its_error(results):
    results[0] = record(0, 0, None, error="ValueError: boom")
    table = cv_results_table(results, n_splits=3)
    assert np.isnan(table.loc[0, "mean_test_score"])
    assert table.loc[0, "rank_test_score"] == 3
    assert "fold 0: ValueError: boom" in table.loc[0, "error"]


def test_missing_or_duplicate_folds_are_refused(results):
    with pytest.raises(ValueError, match="folds"):
        cv_results_table(results[1:], n_splits=3)
    with pytest.raises(ValueError, match="folds"):
        cv_results_table(results + results[:1], n_splits=3)


def test_results_are_written_as_parquet_csv_and_text_without_temporary_files(results, tmp_path):
    table = cv_results_table(results, n_splits=3)
    summary = summarize(table, results, tmp_path / "run")
    write_results(table, summary.lines, tmp_path / "run")
    written = sorted(path.name for path in (tmp_path / "run").iterdir())
    assert written == ["cv_results.csv", "cv_results.parquet", "summary.txt"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "run" / "cv_results.parquet"), table)
    assert (tmp_path / "run" / "summary.txt").read_text().startswith("Best: 0.750000")


# --- several metrics, one refit metric -------------------------------------------------------


def scored(combination, fold, scores):
    return record(combination, fold, scores["accuracy"]).model_copy(
        update={"scores": scores, "loss": scores["log_loss"]}
    )


@pytest.fixture
def multi_metric_results():
    # combination 0 is the most accurate; combination 1 has the lowest log loss and best AUC
    by_combination = {
        0: {"accuracy": 0.80, "roc_auc": 0.70, "f1": 0.6, "log_loss": 0.60},
        1: {"accuracy": 0.70, "roc_auc": 0.85, "f1": 0.5, "log_loss": 0.45},
        2: {"accuracy": 0.75, "roc_auc": 0.80, "f1": 0.7, "log_loss": 0.50},
    }
    return [
        scored(c, fold, {k: v + 0.01 * fold for k, v in scores.items()})
        for c, scores in by_combination.items()
        for fold in range(3)
    ]


def test_cv_results_carry_every_metric_per_split_with_mean_std_and_rank(multi_metric_results):
    table = cv_results_table(multi_metric_results, n_splits=3)
    for metric in ("accuracy", "roc_auc", "f1", "log_loss"):
        for column in (
            *(f"split{k}_test_{metric}" for k in range(3)),
            f"mean_test_{metric}",
            f"std_test_{metric}",
            f"rank_test_{metric}",
        ):
            assert column in table.columns, column
    assert table.loc[1, "split2_test_roc_auc"] == pytest.approx(0.87)
    assert table.loc[1, "mean_test_log_loss"] == pytest.approx(0.46)
    assert list(table["rank_test_accuracy"]) == [1, 3, 2]
    assert list(table["rank_test_log_loss"]) == [3, 1, 2]  # lower is better
    # *_test_score is the refit metric, accuracy by default: current consumers keep working
    assert list(table["mean_test_score"]) == list(table["mean_test_accuracy"])
    assert list(table["rank_test_score"]) == [1, 3, 2]


@pytest.mark.parametrize(
    ("refit_metric", "best"), [("accuracy", 0), ("roc_auc", 1), ("f1", 2), ("log_loss", 1)]
)
def test_the_refit_metric_picks_the_best_combination(multi_metric_results, refit_metric, best):
    table = cv_results_table(multi_metric_results, n_splits=3, refit_metric=refit_metric)
    summary = summarize(table, multi_metric_results, Path("run"), refit_metric)
    assert summary.best_index == best and summary.refit_metric == refit_metric
    assert summary.best_score == pytest.approx(table.loc[best, f"mean_test_{refit_metric}"])
    assert list(table[f"split0_test_{refit_metric}"]) == list(table["split0_test_score"])
    assert tutorial_lines(table)[0].startswith(f"Best: {summary.best_score:f} using ")
    assert set(summary.best_metrics) == {"accuracy", "roc_auc", "f1", "log_loss"}
    assert metric_lines(summary)[-1].split(":")[0] == METRICS[refit_metric].label


def test_an_unknown_refit_metric_is_refused(multi_metric_results):
    with pytest.raises(ValueError, match="refit metric 'r2'"):
        cv_results_table(multi_metric_results, n_splits=3, refit_metric="r2")


def test_the_ui_table_leads_with_combination_and_params_then_the_refit_metric_best_first(
    multi_metric_results,
):
    table = cv_results_table(multi_metric_results, n_splits=3, refit_metric="roc_auc")
    rows = artifact_table(table, "roc_auc")
    assert list(rows[0])[:6] == [
        "combination",
        "param_batch_size",
        "param_model__optimizer",
        "mean_test_roc_auc",
        "std_test_roc_auc",
        "rank_test_roc_auc",
    ]
    assert [row["combination"] for row in rows] == [1, 2, 0]  # by roc_auc rank
    assert [row["rank_test_roc_auc"] for row in rows] == [1, 2, 3]
    assert {"param_batch_size", "param_model__optimizer"} <= set(table.columns)  # as the CSV
    assert not any(key.endswith("_test_score") or key == "params" for key in rows[0])


def test_the_ui_table_leaves_out_a_keras_loss_that_repeats_log_loss(multi_metric_results):
    repeated = [
        fit.model_copy(update={"loss": fit.scores["log_loss"]}) for fit in multi_metric_results
    ]
    assert "mean_test_loss" not in artifact_table(cv_results_table(repeated, n_splits=3))[0]
    other = [fit.model_copy(update={"loss": 0.9}) for fit in multi_metric_results]
    assert artifact_table(cv_results_table(other, n_splits=3))[0]["mean_test_loss"] == "0.900"


def test_the_run_result_names_best_score_std_params_and_files(results, tmp_path):
    table = cv_results_table(results, n_splits=3)
    summary = summarize(table, results, tmp_path / "run")
    assert summary.headline == (
        "Best accuracy 0.750 (0.008) with batch_size=10, optimizer=adam - 9 fits, 9.0 s of training"
    )
    markdown = result_markdown(summary, tmp_path / "run" / "best_model.keras")
    assert markdown.startswith(f"**{summary.headline}**")
    for name in ("best_model.keras", "cv_results.csv", "cv_results.parquet", "summary.txt"):
        assert f"{tmp_path / 'run' / name}`" in markdown


# --- the best so far, which an early refit bets on ------------------------------------------


def test_the_best_so_far_is_cv_results_best_among_combinations_with_every_fold_done(results):
    assert best_so_far(results, n_folds=3) == 1  # 0.75 ties 0.75: the first, as best_row
    without_a_fold_of_1 = [r for r in results if (r.combination, r.fold) != (1, 2)]
    assert best_so_far(without_a_fold_of_1, n_folds=3) == 2
    assert best_so_far([r for r in results if r.fold < 2], n_folds=3) is None
    assert best_so_far([], n_folds=3) is None


@pytest.mark.parametrize(("refit_metric", "best"), [("accuracy", 0), ("log_loss", 1)])
def test_the_best_so_far_follows_the_refit_metric(multi_metric_results, refit_metric, best):
    assert best_so_far(multi_metric_results, 3, refit_metric) == best
    only_some = [r for r in multi_metric_results if r.combination != best]
    assert best_so_far(only_some, 3, refit_metric) == 2


def test_a_failed_fold_never_makes_a_combination_the_best_so_far(results):
    failed = [record(1, r.fold, None, error="boom") if r.combination == 1 else r for r in results]
    assert best_so_far(failed, n_folds=3) == 2


def test_repeated_kfold_marks_use_the_folds_own_test_train_ratio():
    # 2 repeats of 3 folds (512 training rows, 256 test rows each): six fold columns, and the
    # noise test's ratio n_test/n_train = 1/2, not 1/5 as six folds of one split would have
    # (tests/unit/tasks/results/test_noise.py works this example by hand: p = 0.229205).
    scores = {0: [0.8, 0.7, 0.9] * 2, 1: [0.7] * 6}
    fits = [record(c, f, s) for c, fold_scores in scores.items() for f, s in enumerate(fold_scores)]
    table = cv_results_table(fits, 6)
    assert [f"split{k}_test_score" in table for k in range(6)] == [True] * 6
    assert table.loc[1, "p_vs_best"] == pytest.approx(0.229205, abs=1e-6)


def test_halving_rows_are_marked_against_their_own_rungs_best():
    scores = {0: [0.8, 0.7, 0.9], 1: [0.7, 0.7, 0.7], 2: [0.3, 0.2, 0.4], 3: [0.9] * 3}
    fits = [record(c, f, s) for c, fold_scores in scores.items() for f, s in enumerate(fold_scores)]
    rungs = {0: {"iter": 0}, 1: {"iter": 0}, 2: {"iter": 0}, 3: {"iter": 1}}
    table = cv_results_table(fits, 3, row_columns=rungs)
    assert table["p_vs_rung_best"].iloc[:3].round(6).tolist() == [1.0, 0.387628, 0.0]
    assert table["within_noise_of_rung_best"].tolist() == [True, True, False, True]
    marks = {row["combination"]: row["within_noise"] for row in artifact_table(table)}
    assert marks == {3: "best", 0: "rung best", 1: "≈ rung best", 2: "below rung best"}
