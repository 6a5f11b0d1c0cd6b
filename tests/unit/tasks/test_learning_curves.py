"""The learning-curve table and picture, from fit records."""

import numpy as np
import pandas as pd

from tasks.learning_curves import COLUMNS, curves_table, learning_curves_png, write_learning_curves
from tasks.records import FitResult, LearningCurve
from tests.unit.tasks.test_plots import grid_table, image_of


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
