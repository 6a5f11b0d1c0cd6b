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


def sampled_table():
    """Four random-search trials over SPACE (rung 0 of halving_table), one failed."""
    table = halving_table()
    table = table[table["iter"] == 0].drop(columns=["iter", "n_resources", "candidate"])
    table.loc[2, "mean_test_score"] = np.nan
    return table.reset_index(drop=True)


def test_parallel_axes_place_values_by_the_spaces_own_scale():
    from tasks.results.search_plots import axis_positions

    rates, rate_ticks = axis_positions(SPACE, "model__learning_rate", [1e-3, 1e-2, 1e-1])
    assert rates == pytest.approx([0.0, 0.5, 1.0])  # log-uniform: a decade is half the axis
    assert [label for _, label in rate_ticks] == ["0.001", "0.01", "0.1"]
    layers, layer_ticks = axis_positions(SPACE, "model__hidden_layers", [[8, 4], [4], [9]])
    assert layers[:2].tolist() == [1.0, 0.0] and np.isnan(layers[2])  # [9] is not a choice
    assert layer_ticks == [(0.0, "4"), (1.0, "8x4")]


def test_parallel_coordinates_draw_a_line_per_trial_the_best_last_in_red(monkeypatch):
    from tasks.results.plots import FAILED, MEAN
    from tasks.results.search_plots import parallel_png

    table = sampled_table()
    axis = drawn(monkeypatch, lambda: parallel_png(table, SPACE))[0]
    trials = [line for line in axis.get_lines() if len(set(line.get_xdata())) == 3]
    assert len(trials) == 4  # two keys and the score: three axes
    assert trials[-1].get_color() == MEAN  # the best (trial 3, 0.53), on top
    assert trials[-1].get_ydata()[-1] == pytest.approx(1.0)
    failed = [line for line in trials if line.get_linestyle() == "--"]
    assert len(failed) == 1 and failed[0].get_color() == FAILED
    assert [t.get_text() for t in axis.get_xticklabels()][-1] == "mean accuracy"
    assert "failed" not in " ".join(texts([axis])).replace("grey, dashed", "")


def test_the_rung_picture_marks_candidates_within_their_rungs_noise(monkeypatch):
    table = halving_table()
    # rung 0: candidates 0-3, 1 and 3 kept; candidate 0 cut beyond the noise (p 0.01)
    table["p_vs_rung_best"] = [0.01, 0.2, 0.3, 1.0, 0.4, 1.0, 1.0]
    table["within_noise_of_rung_best"] = table["p_vs_rung_best"] > 0.05
    (axis,) = drawn(monkeypatch, lambda: rungs_png(table))
    labels = [t.get_text() for t in axis.figure.legends[0].get_texts()]
    assert "within the noise of its rung's best (kept or cut)" in labels
    from matplotlib.colors import to_hex

    from tasks.results.search_plots import NOISE

    dots = [
        c
        for c in axis.collections
        if len(c.get_facecolor()) and to_hex(c.get_facecolor()[0]) == NOISE
    ]
    marked = sorted(tuple(np.round(point, 3)) for c in dots for point in c.get_offsets())
    # candidates 1 and 2 at rung 0 (one kept, one cut) and 1 at rung 1: not 0 (p 0.01)
    assert [round(y, 3) for _, y in marked] == sorted([0.51, 0.52, 0.52])
