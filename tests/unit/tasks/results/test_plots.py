import base64
import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tasks.config import DEFAULT_GRID_FILE, GridSpec
from tasks.results import plots
from tasks.results.aggregate import rank
from tasks.results.plots import (
    colour_range,
    fold_scores_png,
    grid_heatmap_png,
    picture_markdown,
    publish_results_picture,
    ranked_png,
    split_grid_keys,
)


def image_of(png: bytes) -> Image.Image:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.format == "PNG"
    return image


def colours_in(image: Image.Image) -> int:
    return len(set(image.convert("RGB").getdata()))


def cv_table(scores: list[float]) -> pd.DataFrame:
    row = {"params": "{}", "mean_test_score": float(np.nanmean(scores))}
    row.update({f"split{k}_test_score": score for k, score in enumerate(scores)})
    return pd.DataFrame([row])


def grid_table(grid: dict, means=None) -> pd.DataFrame:
    combinations = GridSpec(param_grid=grid).expand()
    if means is None:
        means = np.linspace(0.6, 0.76, len(combinations))
    means = np.asarray(means, dtype=float)
    table = pd.DataFrame(
        {
            "combination": range(len(combinations)),
            "params": [json.dumps(params, sort_keys=True) for params in combinations],
            "mean_test_score": means,
            "std_test_score": np.full(len(means), 0.02),
            "rank_test_score": rank(means),
        }
    )
    for fold, offset in enumerate((-0.02, 0.0, 0.02)):
        table[f"split{fold}_test_score"] = means + offset
    return table


def test_fold_scores_picture_is_a_real_png():
    image = image_of(fold_scores_png(cv_table([0.6 + k / 50 for k in range(10)])))
    assert image.width > 400 and image.height > 200
    assert colours_in(image) > 50  # bars, mean line, band and text: not a blank canvas


def test_fold_scores_picture_marks_a_failed_fold_instead_of_crashing():
    image = image_of(fold_scores_png(cv_table([0.7, float("nan"), 0.72])))
    assert image.width > 300


def test_fold_scores_picture_handles_many_folds():
    image = image_of(fold_scores_png(cv_table(list(np.linspace(0.5, 0.9, 60)))))
    assert image.width > 1000  # one bar each, labels thinned


def test_grid_heatmap_handles_the_tutorial_grid():
    table = grid_table(GridSpec.from_yaml(DEFAULT_GRID_FILE).param_grid)
    image = image_of(grid_heatmap_png(table))
    # 9 rows (batch_size x epochs) by 6 columns (init x optimizer): a wide, detailed picture.
    assert image.width > 800 and image.height > 400
    assert colours_in(image) > 200


def test_tutorial_grid_puts_two_keys_on_each_axis():
    params = [json.loads(text) for text in grid_table(GridSpec().param_grid)["params"]]
    assert split_grid_keys(params) == (
        ["batch_size", "epochs"],
        ["model__init", "model__optimizer"],
    )


@pytest.mark.parametrize(
    "grid",
    [
        {"model__optimizer": ["rmsprop", "adam"], "epochs": [1], "batch_size": [64]},
        {"model__optimizer": ["rmsprop", "adam", "sgd"]},
        {"model__hidden_layers": [[12, 8], [4]], "model__activation": ["relu", "tanh"]},
        {
            "model__optimizer": ["rmsprop", "adam"],
            "model__init": ["uniform", "normal"],
            "model__activation": ["relu", "tanh"],
            "epochs": [1, 2],
            "batch_size": [16, 64],
        },
    ],
    ids=["one-varying-key", "single-key", "list-values", "five-keys"],
)
def test_grid_heatmap_handles_any_grid_keys(grid):
    image = image_of(grid_heatmap_png(grid_table(grid)))
    assert image.width > 300 and image.height > 150


def test_grid_heatmap_shows_failed_combinations_and_all_failed_grids():
    table = grid_table({"model__optimizer": ["rmsprop", "adam"], "epochs": [1, 2]})
    table.loc[1, "mean_test_score"] = np.nan
    image_of(grid_heatmap_png(table))
    table["mean_test_score"] = np.nan
    image_of(grid_heatmap_png(table))


def test_grid_axes_follow_the_grids_value_order_not_text_order():
    # "100" sorts before "50" as text; the picture keeps 50, 100, 150 as written.
    table = grid_table({"epochs": [50, 100, 150], "model__optimizer": ["rmsprop", "adam"]})
    params = [json.loads(text) for text in table["params"]]
    assert plots._labels(params, ["epochs"], " · ") == ["epochs=50", "epochs=100", "epochs=150"]


def test_picture_markdown_embeds_the_png_as_a_data_uri():
    markdown = picture_markdown(b"\x89PNG-bytes", "Accuracy")
    assert "![Accuracy](data:image/png;base64,iVBORy1ieXRlcw==)" in markdown


def published(monkeypatch) -> list[dict]:
    calls: list[dict] = []
    monkeypatch.setattr(plots, "create_markdown_artifact", lambda **kwargs: calls.append(kwargs))
    return calls


def test_one_combination_publishes_fold_scores_and_a_grid_a_heatmap_and_a_ranking(monkeypatch):
    calls = published(monkeypatch)
    assert publish_results_picture(cv_table([0.7, 0.8, 0.75]), "cv") == ["cv-fold-scores"]
    grid = grid_table({"model__optimizer": ["rmsprop", "adam"]})
    assert publish_results_picture(grid, "grid") == ["grid-heatmap", "grid-ranked"]
    assert [call["key"] for call in calls] == ["cv-fold-scores", "grid-heatmap", "grid-ranked"]
    for call in calls:
        encoded = call["markdown"].split("data:image/png;base64,")[1].rstrip(")\n")
        image_of(base64.b64decode(encoded))


def test_a_picture_that_cannot_be_drawn_does_not_fail_the_run(monkeypatch):
    calls = published(monkeypatch)
    broken = pd.DataFrame({"params": ["not json", "{}"], "mean_test_score": [0.5, 0.6]})
    assert publish_results_picture(broken, "grid") == []
    assert calls == []


def test_ranked_picture_draws_every_combination_with_its_fold_spread():
    table = grid_table(json.loads(json.dumps(GridSpec().param_grid)))
    image = image_of(ranked_png(table))
    assert image.height > 54 * 15  # one readable row per combination of the tutorial's grid
    assert colours_in(image) > 50


def test_heatmap_colours_span_at_least_two_fold_stds():
    # means 0.74 and 0.75 with fold std 0.02: the colours span 0.705-0.785, not 0.74-0.75
    assert colour_range(np.array([0.74, 0.75]), np.array([0.02, 0.02])) == pytest.approx(
        (0.725, 0.765)
    )
    assert colour_range(np.array([0.5, 0.9]), np.array([0.01, 0.01])) == pytest.approx((0.5, 0.9))


def drawn_figures(monkeypatch) -> list:
    """The figures behind the PNGs: tasks.results.plots, tasks.results.curves and
    tasks.results.reports draw through `_drawn_png`, which this records."""
    from tasks.results import curves as learning_curves
    from tasks.results import reports as search_report

    figures = []
    draw = plots._drawn_png

    def recording(figure):
        figures.append(figure)
        return draw(figure)

    monkeypatch.setattr(plots, "_drawn_png", recording)
    monkeypatch.setattr(learning_curves, "_drawn_png", recording)
    monkeypatch.setattr(search_report, "_drawn_png", recording)
    from tasks.results import search_plots

    monkeypatch.setattr(search_plots, "_drawn_png", recording)
    return figures


@pytest.mark.parametrize(
    "grid",
    [
        {"model__optimizer": ["rmsprop", "adam"]},  # a narrow picture under a long title
        json.loads(json.dumps(GridSpec().param_grid)),
    ],
    ids=["two-combinations", "tutorial"],
)
def test_every_title_and_label_lies_inside_the_picture(monkeypatch, grid):
    """Seen after dropping bbox_inches="tight": titles wider than the figure were cut off."""
    from tasks.results.curves import curves_table, learning_curves_png
    from tasks.results.reports import score_by_value_png
    from tasks.results.search_plots import history_png, importance_png, rungs_png
    from tests.unit.tasks.results.test_curves import results
    from tests.unit.tasks.results.test_reports import SPACE, halving_table

    figures = drawn_figures(monkeypatch)
    table = grid_table(grid)
    grid_heatmap_png(table)
    ranked_png(table)
    fold_scores_png(cv_table([0.7, 0.8, 0.75]))
    learning_curves_png(curves_table(results(n_combinations=min(len(table), 6))), table)
    score_by_value_png(halving_table(), SPACE)
    rungs_png(halving_table(), baseline=0.6)
    history_png(halving_table(), baseline=0.6)
    importance_png({"model__learning_rate": 0.7, "model__hidden_layers": 0.3}, "Accuracy", 4)
    assert len(figures) == 8
    for figure in figures:
        ink = figure.get_tightbbox(figure.canvas.get_renderer())
        width, height = figure.get_size_inches()
        assert ink.x0 >= -0.01 and ink.y0 >= -0.01, figure
        assert ink.x1 <= width + 0.01 and ink.y1 <= height + 0.01, figure


def tick_labels(axis) -> list[str]:
    """The labels a drawn axis shows: its ticks inside the view, major and minor."""
    low, high = sorted(axis.get_view_interval())
    ticks = [*axis.get_major_ticks(), *axis.get_minor_ticks()]
    shown = [t for t in ticks if t.label1.get_visible() and low <= t.get_loc() <= high]
    return [t.label1.get_text() for t in shown if t.label1.get_text()]


def loss_figure(values: np.ndarray, fixed: bool):
    figure = plots._figure(4.2, 3.2)
    axis = figure.add_subplot()
    axis.plot(np.arange(1, len(values) + 1), values)
    if fixed:
        plots._fixed_ticks(axis)
    figure.canvas.draw()
    return axis


def test_fixed_ticks_are_the_ticks_the_auto_locators_would_show():
    """Freezing ticks before the layout is a speed-up: what the picture shows stays."""
    losses = np.linspace(0.7, 0.42, 150)
    auto, fixed = loss_figure(losses, fixed=False), loss_figure(losses, fixed=True)
    for side in ("xaxis", "yaxis"):
        assert tick_labels(getattr(fixed, side)) == tick_labels(getattr(auto, side))
    assert tick_labels(fixed.yaxis)[0] == "0.45"


def test_fixed_ticks_leave_an_axis_that_needs_an_offset_to_its_formatter():
    axis = loss_figure(1000 + np.linspace(0.001, 0.002, 10), fixed=True)
    assert axis.yaxis.get_offset_text().get_text()  # e.g. "+1e3": the labels alone would lie
    assert tick_labels(axis.yaxis) == tick_labels(
        loss_figure(1000 + np.linspace(0.001, 0.002, 10), fixed=False).yaxis
    )


def test_heatmap_cells_read_in_ink_that_contrasts_with_their_colour(monkeypatch):
    figures = drawn_figures(monkeypatch)
    table = grid_table({"model__optimizer": ["rmsprop", "adam", "sgd"]}, means=[0.6, 0.7, 0.8])
    table.loc[1, "mean_test_score"] = np.nan
    grid_heatmap_png(table)
    axis = figures[0].axes[0]
    inks = {text.get_text().split("\n")[0]: text.get_color() for text in axis.texts}
    # viridis: dark purple at the low end, yellow at the high end, grey where a row failed
    assert inks == {"0.600": "white", "failed": "black", "0.800": "black"}


def test_fold_matrix_reads_folds_in_number_order_not_text_order():
    table = cv_table([float(k) for k in range(12)])  # split10 sorts before split2 as text
    assert plots.fold_matrix(table[list(reversed(table.columns))]).tolist() == [list(range(12))]
