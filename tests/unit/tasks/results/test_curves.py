"""The learning-curve table and picture, from fit records."""

import numpy as np
import pandas as pd
import pytest

from tasks.records import FitResult, LearningCurve
from tasks.results.curves import COLUMNS, curves_table, learning_curves_png, write_learning_curves
from tests.unit.tasks.results.test_plots import grid_table, image_of


def fit(combination, fold, curve):
    return FitResult(
        combination=combination, params={}, fold=fold, accuracy=0.7, loss=0.6, n_train=9,
        n_test=3, fit_seconds=0.1, seed=1, engine="fast", curve=curve,
    )  # fmt: skip


def results(n_combinations=2, epochs=4, validation=True):
    records = []
    for combination in range(n_combinations):
        for fold in range(3):
            train = list(np.linspace(0.7, 0.4, epochs) + 0.01 * fold + 0.02 * combination)
            curve = LearningCurve(
                train_loss=train,
                val_loss=[v + 0.1 for v in train] if validation else [],
                val_accuracy=[0.6] * epochs if validation else [],
            )
            records.append(fit(combination, fold, curve))
    return records


def test_curves_table_has_one_row_per_fit_and_epoch(tmp_path):
    fits = results()
    fits.append(fit(2, 0, None))  # a fit cached before curves were recorded
    fits.append(fit(3, 0, LearningCurve(first_epoch=2, train_loss=[0.5, 0.4])))
    table = write_learning_curves(fits, tmp_path)
    assert list(table.columns) == COLUMNS
    assert len(table) == 2 * 3 * 4 + 2
    assert table[table["combination"] == 3]["epoch"].tolist() == [3, 4]
    assert table[table["combination"] == 3]["val_loss"].isna().all()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "learning_curves.parquet"), table)


def test_learning_curves_picture_shows_the_best_combinations():
    grid = {"optimizer": ["adam", "rmsprop", "sgd"], "batch_size": [5, 10, 20]}
    cv_results = grid_table(grid)
    curves = curves_table(results(n_combinations=9))
    width, height = image_of(learning_curves_png(curves, cv_results)).size
    assert width > 600 and height > 400  # six panels: the best six of nine
    one = curves_table(results(n_combinations=1, validation=False))
    assert image_of(learning_curves_png(one, cv_results.iloc[:1])).size[0] > 200


@pytest.mark.parametrize(
    "loss",
    [
        "binary_crossentropy",
        "sparse_categorical_crossentropy",
        "categorical_crossentropy",
        "mean_squared_error",
        "mean_absolute_error",
    ],
)
def test_validation_scores_are_keras_losses_of_the_outputs(loss):
    """The fast engine's validation loss (from logits) is the loss Keras evaluates on the
    model's outputs, for every task the engine trains."""
    import keras

    from tasks.train.fast.callbacks import validation_scores

    rng = np.random.default_rng(3)
    units = 1 if loss in ("binary_crossentropy",) or "mean" in loss else 3
    logits = rng.normal(size=(40, units)).astype(np.float32)
    truth = rng.integers(0, max(2, units), size=40).astype(np.float64)
    if "mean" in loss:
        truth = rng.normal(size=40)
    value, accuracy = validation_scores(loss, truth, logits)
    outputs = keras.ops.convert_to_numpy(
        keras.activations.sigmoid(logits)
        if loss == "binary_crossentropy"
        else keras.activations.softmax(logits)
        if "categorical" in loss
        else logits
    )
    target = truth[:, None] if units == 1 else truth
    if loss == "categorical_crossentropy":
        target = np.eye(units)[truth.astype(int)]
    expected = float(np.mean(keras.losses.get(loss)(target, outputs)))
    assert value == pytest.approx(expected, rel=1e-4, abs=1e-5)
    if "mean" in loss:
        assert np.isnan(accuracy)
    else:
        predicted = outputs[:, 0] > 0.5 if units == 1 else outputs.argmax(axis=1)
        assert accuracy == pytest.approx(np.mean(predicted == truth))


def test_a_one_epoch_curve_is_drawn_as_a_point_with_its_fold_spread():
    """Seen in the UI: 1-epoch combinations showed empty panels (a line needs two points)."""
    cv_results = grid_table({"optimizer": ["adam"]})
    one_epoch = curves_table(results(n_combinations=1, epochs=1, validation=False))
    image = image_of(learning_curves_png(one_epoch, cv_results)).convert("RGB")
    training = (0x4C, 0x78, 0xA8)  # tasks.results.plots.BAR, the training curve's colour
    pixels = np.asarray(image, dtype=int).reshape(-1, 3)
    drawn = int((np.abs(pixels - np.array(training)).sum(axis=1) < 30).sum())
    assert drawn > 80  # the legend's sample line alone is ~46 pixels of it


def drawn_axes(monkeypatch, curves, cv_results):
    from tasks.results import curves as module

    figures = []
    monkeypatch.setattr(module, "_drawn_png", lambda figure: figures.append(figure) or b"")
    learning_curves_png(curves, cv_results)
    figures[0].canvas.draw()
    return figures[0].axes


def test_panels_share_one_log_scale_and_mark_where_early_stopping_ended_a_fold(monkeypatch):
    cv_results = grid_table({"optimizer": ["adam", "sgd"]})
    fits = results(n_combinations=2, epochs=6, validation=False)
    short = LearningCurve(train_loss=[40.0, 0.9, 0.5])  # epoch 1's loss of 40, then stopped
    fits[0] = fits[0].model_copy(update={"curve": short})
    for fold in range(3):
        cv_results[f"split{fold}_stopped_epoch"] = [3.0 if fold == 0 else 6.0, 6.0]
    cv_results["mean_stopped_epoch"] = 5.0
    axes = drawn_axes(monkeypatch, curves_table(fits), cv_results)
    assert [axis.get_yscale() for axis in axes] == ["log", "log"]
    assert axes[0].get_ylim() == axes[1].get_ylim()  # one scale: panels compare
    marked = {
        index: [tuple(offset) for c in axis.collections if c.get_label().startswith("early")
                for offset in c.get_offsets()]
        for index, axis in enumerate(axes)
    }  # fmt: skip
    # combination 0 (fold 0 stopped at epoch 3) is ranked second in grid_table's means
    assert [len(points) for points in marked.values()] == [0, 1]
    assert marked[1][0] == (3.0, 0.5)
