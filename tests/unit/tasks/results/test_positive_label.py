"""A binary task's positive class is named wherever its scores are read (issue 25): F1,
precision, recall and ROC AUC score that class, so the CLI's lines, summary.txt and the UI's
summary and result say which one it is."""

from tasks.results import aggregate
from tasks.results.aggregate import (
    aggregate_results,
    baseline_lines,
    cv_results_table,
    metric_lines,
    positive_class_text,
    result_markdown,
    summarize,
)
from tests.unit.tasks.results.test_baseline import BASELINE, KIND, fits


def test_the_positive_class_is_shown_as_the_user_wrote_it():
    assert positive_class_text(">50K") == "positive class: '>50K'"
    assert positive_class_text(2) == "positive class: 2"
    assert positive_class_text(True) == "positive class: True"


def test_the_baseline_line_names_the_positive_class(tmp_path):
    results = fits()
    table = cv_results_table(results, 3)
    summary = summarize(table, results, tmp_path, "accuracy", BASELINE, KIND, ">50K")
    line = "Baseline (majority class): accuracy 0.651000; positive class: '>50K'"
    assert summary.positive_label == ">50K"
    assert baseline_lines(summary) == [line]
    assert metric_lines(summary)[0] == line
    assert line in result_markdown(summary)


def test_without_a_baseline_the_positive_class_has_its_own_line(tmp_path):
    results = fits()
    summary = summarize(cv_results_table(results, 3), results, tmp_path, positive_label=2)
    assert baseline_lines(summary) == ["Positive class: 2"]


def test_summary_txt_ends_with_the_baseline_and_the_positive_class(tmp_path, monkeypatch):
    published = []
    for name in ("create_table_artifact", "create_markdown_artifact"):
        monkeypatch.setattr(aggregate, name, lambda **artifact: published.append(artifact))
    results = fits()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    summary = aggregate_results.fn(
        results, 3, run_dir, "unit", baseline=BASELINE, baseline_kind=KIND, positive_label=2
    )
    text = (run_dir / "summary.txt").read_text().splitlines()
    assert text[0].startswith("Best: ") and text[:-1] == summary.lines
    assert text[-1] == "Baseline (majority class): accuracy 0.651000; positive class: 2"
    assert "positive class: 2" in published[-1]["markdown"]  # the UI's summary artifact
