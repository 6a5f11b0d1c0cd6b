import json
import re

import numpy as np
import pandas as pd
import pytest

from tasks.aggregate import cv_results_table, summarize, tutorial_lines, write_results
from tasks.training import FitResult


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
