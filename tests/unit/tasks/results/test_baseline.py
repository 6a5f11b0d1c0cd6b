"""The baseline beside every score: the summary, the CLI's lines, the UI's table and the
pictures say what a model that learned nothing scores (tasks.results)."""

import json

import numpy as np

from tasks.config import GridSpec
from tasks.results import plots
from tasks.results.aggregate import (
    artifact_table,
    baseline_lines,
    cv_results_table,
    metric_lines,
    result_markdown,
    summarize,
)
from tasks.results.plots import fold_scores_png, grid_heatmap_png, ranked_png
from tasks.results.reports import score_by_value_png, search_summary_markdown
from tasks.results.search_plots import history_png, rungs_png
from tests.unit.tasks.results.test_aggregate import record
from tests.unit.tasks.results.test_plots import cv_table, grid_table
from tests.unit.tasks.results.test_reports import SPACE, halving_table

BASELINE = {"accuracy": 0.651}
KIND = "majority class"


def fits():
    scores = {0: [0.64, 0.66, 0.65], 1: [0.70, 0.66, 0.65]}
    return [record(c, f, s) for c, fold in scores.items() for f, s in enumerate(fold)]


def test_the_summary_and_its_headline_carry_the_baseline(tmp_path):
    results = fits()
    summary = summarize(cv_results_table(results, 3), results, tmp_path, "accuracy", BASELINE, KIND)
    assert summary.baseline == BASELINE and summary.baseline_kind == KIND
    assert summary.headline.endswith("s of training; baseline 0.651 (majority class)")
    assert summary.headline.startswith("Best accuracy 0.670 (0.022) with ")  # as before
    assert baseline_lines(summary) == ["Baseline (majority class): accuracy 0.651000"]
    assert metric_lines(summary) == [*baseline_lines(summary), "Accuracy: 0.670000 (0.021602)"]
    assert "Baseline (majority class): accuracy 0.651000" in result_markdown(summary)


def test_without_a_baseline_nothing_changes(tmp_path):
    results = fits()
    summary = summarize(cv_results_table(results, 3), results, tmp_path)
    assert "baseline" not in summary.headline and baseline_lines(summary) == []
    assert metric_lines(summary) == ["Accuracy: 0.670000 (0.021602)"]


def test_the_ui_table_ends_with_the_baselines_row():
    table = cv_results_table(fits(), 3)
    rows = artifact_table(table, "accuracy", BASELINE, KIND)
    assert [row["combination"] for row in rows] == [1, 0, "baseline (majority class)"]
    assert rows[-1]["mean_test_accuracy"] == "0.651" and rows[-1]["std_test_accuracy"] is None
    assert artifact_table(table, "accuracy") == rows[:-1]


def drawn(monkeypatch) -> list:
    figures = []
    draw = plots._drawn_png

    def recording(figure):
        figures.append(figure)
        return draw(figure)

    monkeypatch.setattr(plots, "_drawn_png", recording)
    from tasks.results import reports

    monkeypatch.setattr(reports, "_drawn_png", recording)
    from tasks.results import search_plots

    monkeypatch.setattr(search_plots, "_drawn_png", recording)
    return figures


def baseline_line_drawn(figure, value: float) -> bool:
    """A dashed line at `value` labelled as the baseline, on any of the figure's axes."""
    return any(
        line.get_linestyle() == "--"
        and line.get_label() == f"baseline {value:.3f} (majority class)"
        and value in {*np.ravel(line.get_xdata()), *np.ravel(line.get_ydata())}
        for axis in figure.axes
        for line in axis.get_lines()
    )


def test_the_pictures_draw_the_baseline_as_a_dashed_line(monkeypatch):
    figures = drawn(monkeypatch)
    grid = grid_table(
        json.loads(json.dumps(GridSpec(param_grid={"batch_size": [5, 10]}).param_grid))
    )
    ranked_png(grid, baseline=0.651, baseline_kind=KIND)
    fold_scores_png(cv_table([0.7, 0.8, 0.75]), baseline=0.651, baseline_kind=KIND)
    score_by_value_png(halving_table(), SPACE, "Accuracy", 0.651, KIND)
    rungs_png(halving_table(), "Accuracy", 0.651, KIND)
    history_png(halving_table(), "Accuracy", True, 0.651, KIND)
    assert [baseline_line_drawn(figure, 0.651) for figure in figures] == [True] * 5
    grid_heatmap_png(grid, baseline=0.651, baseline_kind=KIND)
    assert "baseline 0.651 (majority class)" in figures[-1]._suptitle.get_text()


def test_the_search_summary_says_what_the_baseline_scores():
    table = halving_table()
    describe = {"strategy": "random", "n_candidates": len(table)}
    markdown = search_summary_markdown(describe, SPACE, table, 3, "accuracy", 10, 0.651, KIND)
    assert "Baseline (majority class): accuracy 0.651, what a model that learned nothing" in (
        markdown
    )
