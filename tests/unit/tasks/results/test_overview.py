"""The result where a user looks first: the run's tag, its overview card, the leaderboard; and
the UI table's order, widths and within-the-noise marks."""

from datetime import UTC, datetime

from tasks.records import FitResult
from tasks.results.aggregate import artifact_table, cv_results_table, summarize
from tasks.results.overview import (
    leaderboard_key,
    leaderboard_row,
    merged_leaderboard,
    overview_markdown,
    result_tag,
    top_table_markdown,
)

SCORES = {0: [0.70, 0.72, 0.74], 1: [0.76, 0.74, 0.75], 2: [0.60, 0.61, 0.62]}


def record(combination, fold, accuracy, stopped=None):
    return FitResult(
        combination=combination,
        params={"model__learning_rate": 0.0017567312128322 * (combination + 1), "epochs": 9},
        fold=fold, accuracy=accuracy, loss=0.5, n_train=512, n_test=256, fit_seconds=1.23456,
        seed=1, engine="fast", stopped_epoch=stopped,
    )  # fmt: skip


def fits(stopped=None):
    return [
        record(c, f, s, None if stopped is None else stopped[f])
        for c, folds in SCORES.items()
        for f, s in enumerate(folds)
    ]


def test_the_tag_says_metric_best_and_fold_std(tmp_path):
    results = fits()
    summary = summarize(cv_results_table(results, 3), results, tmp_path)
    assert result_tag(summary) == "accuracy 0.750±0.008"


def test_the_ui_table_leads_with_params_then_the_score_and_the_noise_mark():
    table = cv_results_table(fits([4, 9, 6]), 3)
    rows = artifact_table(table, "accuracy")
    columns = list(rows[0])
    assert columns[:7] == [
        "combination",
        "param_epochs",
        "param_model__learning_rate",
        "mean_test_accuracy",
        "std_test_accuracy",
        "rank_test_accuracy",
        "within_noise",
    ]
    assert columns[7] == "stopped_epochs" and rows[0]["stopped_epochs"] == "4, 9, 6"
    assert [row["combination"] for row in rows] == [1, 0, 2]
    # 1 vs 0: d = (0.06, 0.02, 0.01) is noise for 3 folds; 1 vs 2: a clear gap
    assert [row["within_noise"] for row in rows] == ["best", "≈ best", "worse"]
    assert rows[0]["param_model__learning_rate"] == 0.003513  # rounded as in names and labels
    assert (rows[0]["mean_test_accuracy"], rows[0]["std_test_accuracy"]) == ("0.750", "0.00816")
    assert rows[0]["mean_fit_time"] == "1.23" and rows[0]["rank_test_accuracy"] == 1


def test_halvings_bookkeeping_comes_last():
    columns = {c: {"candidate": c, "iter": 0, "n_resources": 9, "n_candidates": 3} for c in SCORES}
    rows = artifact_table(cv_results_table(fits(), 3, row_columns=columns), "accuracy")
    assert list(rows[0])[-4:] == ["candidate", "iter", "n_resources", "n_candidates"]


def test_the_overview_holds_best_params_baseline_top_table_and_picture(tmp_path):
    results = fits()
    table = cv_results_table(results, 3)
    summary = summarize(table, results, tmp_path, baseline={"accuracy": 0.651},
                        baseline_kind="majority class")  # fmt: skip
    markdown = overview_markdown(summary, table, "search", "tpe", picture=b"\x89PNG")
    assert markdown.startswith("## Accuracy 0.750 ± 0.008 (tpe search)")
    assert "| learning_rate | 0.003513 |" in markdown
    assert "Baseline (majority class): accuracy 0.651000." in markdown
    assert "| 1 | 1 | 0.003513 | 0.750 ± 0.00816 | best |" in markdown
    assert "Nadeau and Bengio" in markdown and "data:image/png;base64," in markdown
    assert top_table_markdown(table, "accuracy", top=2).count("\n| ") == 3  # header, 2 rows


def test_the_leaderboard_keeps_the_newest_run_first_and_its_key_safe(tmp_path):
    results = fits()
    summary = summarize(cv_results_table(results, 3), results, tmp_path)
    row = leaderboard_row(summary, "search", "tpe", "create_model",
                          datetime(2026, 12, 6, 4, 30, tzinfo=UTC), "http://ui/runs/1")  # fmt: skip
    assert row == {
        "date": "2026-12-06 04:30 UTC",
        "kind": "search",
        "strategy": "tpe",
        "model function": "create_model",
        "metric": "accuracy",
        "best ± std": "0.750 ± 0.00816",
        "best params": "epochs=9, learning_rate=0.003513",
        "fits": 9,
        "run": "http://ui/runs/1",
    }
    assert merged_leaderboard([{"date": "old"}] * 3, row, limit=3) == [row, *[{"date": "old"}] * 2]
    assert leaderboard_key("Pima Indians_Diabetes") == "leaderboard-pima-indians-diabetes"
