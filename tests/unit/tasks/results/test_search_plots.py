"""Pictures per strategy: history, importance, rungs; nothing drawn as failed that did not fail."""

import json

import numpy as np
import pytest

from tasks.results.plots import grid_heatmap_png
from tasks.results.search_plots import (
    history_png,
    param_importances,
    rungs_png,
    running_best,
    ties,
)
from tasks.search.spaces import space_from_mapping
from tests.unit.tasks.results.test_plots import grid_table
from tests.unit.tasks.results.test_reports import SPACE, drawn, halving_table


def texts(axes) -> list[str]:
    return [t.get_text() for axis in axes for t in axis.texts]


def test_the_running_best_follows_the_metrics_direction_and_skips_failures():
    means = np.array([0.5, np.nan, 0.7, 0.6, 0.8])
    assert running_best(means).tolist() == [0.5, 0.5, 0.7, 0.7, 0.8]
    assert running_best(np.array([3.0, 2.0, 4.0]), greater_is_better=False).tolist() == [3, 2, 2]


def test_ties_are_equal_means_only():
    assert ties(np.array([0.652, 0.7, 0.652, np.nan, 0.652])).tolist() == [
        True, False, True, False, True,
    ]  # fmt: skip


def test_cut_candidates_are_crossed_not_failed_and_ties_are_ringed(monkeypatch):
    table = halving_table()
    table.loc[table["iter"] == 0, "mean_test_score"] = [0.652, 0.652, 0.6, 0.652]
    (axis,) = drawn(monkeypatch, lambda: rungs_png(table, baseline=0.651))
    assert "failed" not in " ".join(texts([axis]))
    labels = [t.get_text() for t in axis.figure.legends[0].get_texts()]
    assert "cut at this rung" in labels and "tied mean (order broke the tie)" in labels
    assert "baseline 0.651" in labels


def test_a_grid_cell_not_tried_is_blank_not_failed(monkeypatch):
    from tasks.results import plots

    figures = []
    monkeypatch.setattr(plots, "_drawn_png", lambda figure: figures.append(figure) or b"")
    table = grid_table({"a": [1, 2], "b": [3, 4]}, means=[0.76, 0.7, 0.65, 0.6]).iloc[:3]
    grid_heatmap_png(table)  # (a=2, b=4) was never tried
    assert "failed" not in " ".join(texts(figures[0].axes))


def test_history_draws_every_trial_in_order(monkeypatch):
    table = halving_table()
    (axis,) = drawn(monkeypatch, lambda: history_png(table))
    assert axis.get_xlabel() == "trial (in the order tried)"
    assert len(axis.collections) >= 1  # error bars


def test_importance_finds_the_key_the_score_depends_on():
    space = space_from_mapping(
        {"model__learning_rate": {"loguniform": [1e-3, 1e-1]}, "model__optimizer": ["adam", "sgd"]}
    )
    rng = np.random.default_rng(0)
    rows = []
    for trial in range(12):
        optimizer = ["adam", "sgd"][trial % 2]
        params = {"model__learning_rate": float(10 ** rng.uniform(-3, -1)),
                  "model__optimizer": optimizer}  # fmt: skip
        score = 0.6 + 0.1 * (optimizer == "adam") + rng.uniform(0, 0.005)
        rows.append({"params": json.dumps(params), "mean_test_score": score})
    import pandas as pd

    importances = param_importances(pd.DataFrame(rows), space)
    assert max(importances, key=importances.get) == "model__optimizer"
    assert sum(importances.values()) == pytest.approx(1.0)
    assert param_importances(pd.DataFrame(rows[:3]), space) == {}  # too few trials
    assert SPACE  # the shared space stays importable
