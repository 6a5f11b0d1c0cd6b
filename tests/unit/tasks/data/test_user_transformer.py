"""A Pipeline's own transformers see the rows as the user gave them, fold by fold."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tasks.config import ModelParams
from tasks.data.preprocess import FoldFeatures
from tasks.data.user_transformer import UNSEEN_CATEGORY, common_widths, encode_transformer, raw_rows
from tasks.records import Fold

CATEGORIES = {"color": ["blue", "red"]}


def test_codes_become_the_users_text_and_an_unseen_code_text_no_training_row_had():
    features = np.array([[1.5, 0.0], [np.nan, 1.0], [2.0, np.nan], [3.0, -1.0]])
    rows = raw_rows(features, ["age", "color"], CATEGORIES)
    assert rows["color"].tolist()[:2] == ["blue", "red"]
    assert pd.isna(rows["color"][2]) and rows["color"][3] == UNSEEN_CATEGORY
    assert np.isnan(rows["age"][1]) and rows["age"][3] == 3.0


def onehot_model() -> ModelParams:
    encoder = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["color"])])
    return ModelParams(transformer=encode_transformer(encoder, as_frame=True))


def test_a_width_common_to_every_fold_is_known_before_training_and_differing_ones_are_not():
    rows = pd.DataFrame({"color": ["red", "blue", "red", "blue", "green", "red"]})
    labels = np.array([0, 1, 0, 1, 0, 1])
    model = onehot_model()
    every_color = [
        Fold(index=0, train=[0, 1, 4], test=[2]),
        Fold(index=1, train=[2, 3, 4], test=[0]),
    ]
    assert common_widths([model, model], rows, labels, every_color) == {model.transformer_key(): 3}
    green_missing = [*every_color, Fold(index=2, train=[0, 1, 2], test=[4])]
    assert common_widths([model], rows, labels, green_missing) == {}


def test_the_same_read_only_data_gives_one_frame_and_writable_rows_a_new_one_each_time():
    """Task runs of one process share the user's rows (and so their stacked views); rows a
    caller may still change are never taken from before."""
    features = np.array([[1.5, 0.0], [np.nan, 1.0]])
    features.setflags(write=False)
    first = raw_rows(features, ["age", "color"], CATEGORIES)
    assert raw_rows(features, ["age", "color"], CATEGORIES) is first
    assert raw_rows(features, ["age", "colour"], {"colour": ["blue", "red"]}) is not first
    assert raw_rows(features.copy(), ["age", "color"], CATEGORIES) is not first
    writable = np.array([[1.5, 0.0]])
    before = raw_rows(writable, ["age", "color"], CATEGORIES)
    writable[0, 0] = 9.0
    assert raw_rows(writable, ["age", "color"], CATEGORIES)["age"][0] == 9.0 != before["age"][0]
    view = writable.view()
    view.setflags(write=False)  # read-only, but its base is not
    assert raw_rows(view, ["age", "color"], CATEGORIES) is not raw_rows(
        view, ["age", "color"], CATEGORIES
    )


def test_the_loaded_features_are_read_only_all_through(tmp_path):
    from tasks.data.dataset import DatasetHandle, load_arrays, shipped_to_workers

    frame = pd.DataFrame({"a": [1.0, np.nan, 3.0], "b": [2.0, 3.0, 4.0], "y": [0, 1, 0]})
    frame.to_parquet(tmp_path / "d.parquet")
    handle = DatasetHandle(
        name="d", parquet_path=str(tmp_path / "d.parquet"), sha256="0" * 64,
        feature_columns=["a", "b"], target="y",
    )  # fmt: skip
    shipped = shipped_to_workers(handle)
    for features, _ in (load_arrays(handle), load_arrays(shipped)):
        viewed = features
        while viewed is not None:
            assert not viewed.flags.writeable
            viewed = viewed.base
        assert raw_rows(features, ["a", "b"], {}) is raw_rows(features, ["a", "b"], {})


class CountingScaler(StandardScaler):
    """A StandardScaler that counts its fits (shipped by reference: module level)."""

    fits = 0

    def fit(self, X, y=None, sample_weight=None):
        CountingScaler.fits += 1
        return super().fit(X, y, sample_weight)


def test_a_fold_is_fitted_once_for_the_width_check_and_every_view_of_the_same_data():
    """The width check before training fits each (fold, preprocessing); the views the groups
    train on reuse those fits, for the same data only: other data, step parameters or
    training rows are fitted afresh, and without a data key nothing is reused."""
    rows = pd.DataFrame({"x": np.arange(8.0), "z": np.arange(8.0) ** 2})
    labels = np.array([0, 1] * 4)
    model = ModelParams(transformer=encode_transformer(CountingScaler(), as_frame=True))
    folds = [
        Fold(index=0, train=[0, 1, 2, 3, 4], test=[5]),
        Fold(index=1, train=[3, 4, 5, 6, 7], test=[0]),
    ]
    CountingScaler.fits = 0
    assert common_widths([model], rows, labels, folds, data_key="data-a") == {
        model.transformer_key(): 2
    }
    assert CountingScaler.fits == 2
    views = FoldFeatures(np.zeros((8, 2)), user_rows=(rows, labels), user_data_key="data-a")
    for fold in folds:
        view = views.of(fold.index, fold.train, model)
        expected = StandardScaler().fit(rows.iloc[fold.train]).transform(rows)
        np.testing.assert_allclose(view, expected, rtol=1e-6)
    assert CountingScaler.fits == 2
    other_data = FoldFeatures(np.zeros((8, 2)), user_rows=(rows, labels), user_data_key="data-b")
    other_data.of(0, folds[0].train, model)
    assert CountingScaler.fits == 3
    other_params = model.model_copy(update={"transformer_params": {"with_mean": False}})
    other_data.of(0, folds[0].train, other_params)
    assert CountingScaler.fits == 4
    other_rows = FoldFeatures(np.zeros((8, 2)), user_rows=(rows, labels), user_data_key="data-a")
    other_rows.of(0, [0, 1, 2, 3], model)  # fold 0 of another seed
    assert CountingScaler.fits == 5
    unkeyed = FoldFeatures(np.zeros((8, 2)), user_rows=(rows, labels))
    unkeyed.of(0, folds[0].train, model)
    assert CountingScaler.fits == 6
