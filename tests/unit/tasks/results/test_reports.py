import json

import numpy as np
import pandas as pd

from tasks.results.reports import score_by_value_png, search_summary_markdown
from tasks.results.search_plots import rungs_png
from tasks.search.spaces import space_from_mapping
from tasks.search.strategies import HalvingStrategy

SPACE = space_from_mapping(
    {"model__learning_rate": {"loguniform": [1e-3, 1e-1]}, "model__hidden_layers": [[4], [8, 4]]}
)


def halving_table():
    """cv_results of a 4 -> 2 -> 1 halving search (scores made up)."""
    rows = []
    for it, (epochs, candidates) in enumerate([(1, [0, 1, 2, 3]), (2, [1, 3]), (4, [3])]):
        for c in candidates:
            params = {
                "epochs": epochs,
                "model__hidden_layers": [4] if c % 2 else [8, 4],
                "model__learning_rate": 0.001 * (c + 1),
            }
            rows.append(
                {
                    "candidate": c,
                    "iter": it,
                    "n_resources": epochs,
                    "params": json.dumps(params),
                    "mean_test_score": 0.5 + 0.01 * c * epochs,
                    "std_test_score": 0.02,
                }
            )
    table = pd.DataFrame(rows)
    table["combination"] = range(len(table))
    table["rank_test_score"] = table["mean_test_score"].rank(ascending=False, method="min")
    return table


def test_halving_summary_says_rungs_survivors_and_epochs_against_exhaustive():
    strategy = HalvingStrategy([{}] * 4, min_epochs=1, max_epochs=4, factor=2)
    strategy.history = [(1, 4), (2, 2), (4, 1)]
    markdown = search_summary_markdown(
        strategy.describe(), SPACE, halving_table(), 3, "accuracy", 150
    )
    assert "| `model__learning_rate` | loguniform [0.001, 0.1] |" in markdown
    assert "| 0 | 1 | 4 | 2 |" in markdown and "| 2 | 4 | 1 | - |" in markdown
    assert "Epochs per fold: 12 with every rung trained from scratch, 8 with rungs continued" in (
        markdown
    )
    assert "against 16 for every candidate at 4 epochs (75.0% and 50.0%)" in markdown


def test_search_pictures_are_pngs():
    table = halving_table()
    table.loc[0, "mean_test_score"] = np.nan
    for png in (rungs_png(table), score_by_value_png(table, SPACE)):
        assert png.startswith(b"\x89PNG")


def drawn(monkeypatch, draw) -> list:
    """The axes of the figure `draw` renders, drawn."""
    from tasks.results import reports as search_report
    from tasks.results import search_plots

    figures = []
    for module in (search_report, search_plots):
        monkeypatch.setattr(module, "_drawn_png", lambda figure: figures.append(figure) or b"")
    draw()
    figures[0].canvas.draw()
    return figures[0].axes


def test_halving_picture_labels_only_the_rungs_epochs(monkeypatch):
    """Seen: the log axis also labelled a minor tick "3 x 10^0" between rungs 2 and 4."""
    from tests.unit.tasks.results.test_plots import tick_labels

    (axis,) = drawn(monkeypatch, lambda: rungs_png(halving_table()))
    assert tick_labels(axis.xaxis) == ["1", "2", "4"]


def test_a_log_axis_labels_its_minor_ticks_as_small_as_its_major_ones(monkeypatch):
    axis = drawn(monkeypatch, lambda: score_by_value_png(halving_table(), SPACE))[0]
    assert axis.get_xscale() == "log"
    sizes = {
        t.label1.get_fontsize() for t in axis.xaxis.get_minor_ticks() + axis.xaxis.get_major_ticks()
    }
    assert sizes == {7}


def test_a_halving_cut_inside_a_tie_is_said():
    from tasks.results.reports import tie_lines

    table = halving_table()
    table.loc[table["iter"] == 0, "mean_test_score"] = [0.652, 0.652, 0.6, 0.652]
    assert tie_lines(table) == [
        "",
        "Rung 0: the cut fell inside a tie of 3 candidates at 0.652; the candidates' order, "
        "not their scores, decided which went on.",
    ]
    assert tie_lines(halving_table()) == []


def test_a_halving_cut_inside_the_noise_is_said():
    from tasks.results.reports import noisy_cut_lines

    table = halving_table()  # rung 0: candidates 0-3 (1 and 3 kept), rung 1: 1 and 3 (3 kept)
    table["p_vs_rung_best"] = [0.2, 0.01, 0.3, 1.0, 0.01, 1.0, 1.0]
    table["within_noise_of_rung_best"] = table["p_vs_rung_best"] > 0.05
    assert noisy_cut_lines(table) == [
        "",
        "Rung 0: 2 of the 2 cut candidate(s) were within the noise of the rung's best "
        "(corrected t-test, p > 0.05): these folds could not tell them apart; --repeats or "
        "more folds would.",
    ]
    assert noisy_cut_lines(halving_table()) == []


def test_a_choices_slice_pools_the_fold_scores_of_every_trial_that_had_it():
    from tasks.results.reports import per_value_scores

    table = pd.DataFrame(
        {
            "split0_test_score": [0.6, 0.7, 0.5],
            "split1_test_score": [0.8, 0.9, np.nan],
            "mean_test_score": [0.7, 0.8, np.nan],
        }
    )
    pooled = per_value_scores(table, [[4], [8, 4], [4]], ["[4]", "[8, 4]", "[2]"])
    assert [scores.tolist() for scores in pooled] == [[0.6, 0.8, 0.5], [0.7, 0.9], []]
