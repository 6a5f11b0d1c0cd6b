"""A CSV with missing numbers and text categories, read as it comes, through
the grid flow: each fold's ColumnTransformer is fitted on its training rows, both engines see
the same encoded matrices and agree, and the refit saves the transformer beside the model."""

import json

import keras
import numpy as np
import pandas as pd
import pytest
import yaml

from flows.grid_search import grid_search_flow
from tasks.config import GridSearchConfig, GridSpec, RunSettings
from tasks.data.preprocess import PREPROCESSING_FILE, load_preprocessing

COLORS = ["blue", "green", "red"]
GRADES = ["A", "B", "C", "D", "E"]
FEATURES = ["age", "color", "income", "grade"]
GRID = {
    "preprocess__categorical_encoding": ["onehot", "ordinal"],
    "epochs": [2],
    "batch_size": [16],
}


def mixed_frame(n_rows=150, seed=0):
    """Numbers (some missing), text categories (some missing) and a label they predict."""
    generator = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": generator.normal(40, 12, n_rows).round(),
            "color": generator.choice(COLORS, n_rows).astype(object),
            "income": generator.lognormal(3, 0.5, n_rows),
            "grade": generator.choice(GRADES, n_rows),
        }
    )
    signal = (frame["color"] == "red") * 1.5 + (frame["age"] - 40) / 12
    frame["bought"] = (signal + generator.normal(0, 0.7, n_rows) > 0.5).astype(int)
    frame.loc[generator.random(n_rows) < 0.1, "age"] = np.nan
    frame.loc[generator.random(n_rows) < 0.1, "color"] = None
    return frame


@pytest.fixture
def mixed_dataset(tmp_path):
    """The CSV a user brings (read as it comes), and the coded matrix the reader makes of it:
    codes into the sorted categories, NaN where missing."""
    frame = mixed_frame()
    frame.to_csv(tmp_path / "mixed.csv", index=False)
    spec = tmp_path / "mixed.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "mixed",
                "url": "https://example.invalid/none",
                "header": True,
                "target": "bought",
                "features": FEATURES,
            }
        )
    )
    categories = {"color": COLORS, "grade": GRADES}
    converted = frame.copy()
    for column, values in categories.items():
        codes = converted[column].map({value: float(i) for i, value in enumerate(values)})
        converted[column] = codes.astype(np.float64)
    converted[FEATURES] = converted[FEATURES].astype(np.float64)
    return str(spec), str(tmp_path / "mixed.csv"), converted


def grid_run(run_settings, mixed_dataset, engine):
    spec, source, _ = mixed_dataset
    run = RunSettings(
        **{**run_settings, "dataset_spec": spec, "source": source},
        n_splits=3,
        engine=engine,
        run_name=f"mixed-{engine}",
    )
    return grid_search_flow(GridSearchConfig(grid=GridSpec.from_mapping(GRID), run=run))


def test_a_grid_over_categorical_encodings_agrees_on_both_engines(run_settings, mixed_dataset):
    fast = grid_run(run_settings, mixed_dataset, "fast")
    reference = grid_run(run_settings, mixed_dataset, "reference")
    assert fast.engines == ["fast"] and reference.engines == ["reference"]
    tables = [pd.read_parquet(f"{s.output_dir}/cv_results.parquet") for s in (fast, reference)]
    assert list(tables[0]["param_preprocess__categorical_encoding"]) == ["onehot", "ordinal"]
    for k in range(3):
        accuracy = f"split{k}_test_accuracy"
        assert list(tables[0][accuracy]) == list(tables[1][accuracy])
        np.testing.assert_allclose(
            tables[0][f"split{k}_test_log_loss"],
            tables[1][f"split{k}_test_log_loss"],
            rtol=1e-4,
            atol=1e-5,
        )

    # The refit's transformer is saved beside the model and prepares raw coded rows.
    saved = json.loads(open(f"{fast.output_dir}/best_model.json").read())
    preprocessing = saved["preprocessing"]
    assert preprocessing["feature_columns"] == FEATURES
    assert preprocessing["transformer_file"] == PREPROCESSING_FILE
    prepare = load_preprocessing(fast.output_dir)
    model = keras.saving.load_model(f"{fast.output_dir}/best_model.keras")
    _, _, converted = mixed_dataset
    raw = converted[FEATURES].to_numpy(dtype=np.float32)[:5]
    prepared = prepare(raw)
    # one-hot: age, income, color (3 + missing), grade (5); ordinal: 4 columns
    width = 2 + 4 + 5 if fast.best_params["preprocess__categorical_encoding"] == "onehot" else 4
    assert prepared.shape == (5, width) and len(preprocessing["encoded_columns"]) == width
    probabilities = model.predict(prepared, verbose=0)
    assert probabilities.shape == (5, 1) and ((0 < probabilities) & (probabilities < 1)).all()


EMBEDDING_MODEL = '''
import keras


def create_model(meta, units=8):
    """Numbers through as they are, each category's ordinal code through an Embedding."""
    inputs = keras.Input((meta["n_features_in_"],))
    categorical = meta["categorical_features_"]
    parts = [inputs[:, : categorical[0]["columns"][0]]]
    for column in categorical:
        codes = inputs[:, column["columns"][0]]
        parts.append(keras.layers.Embedding(column["input_dim"], 2)(codes))
    hidden = keras.layers.Dense(units, activation="relu")(keras.layers.Concatenate()(parts))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(hidden))
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model
'''


def test_an_embedding_model_finds_its_columns_and_input_dims_in_meta(
    run_settings, mixed_dataset, tmp_path
):
    """With ordinal categories the model function reads each column's position and
    input_dim from meta (missing is its own code), and trains on the fast engine."""
    spec, source, _ = mixed_dataset
    model = tmp_path / "embedding.py"
    model.write_text(EMBEDDING_MODEL)
    grid = {"preprocess__categorical_encoding": ["ordinal"], "epochs": [2], "batch_size": [16]}
    run = RunSettings(
        **{**run_settings, "dataset_spec": spec, "source": source},
        n_splits=3,
        run_name="embedding",
    )
    summary = grid_search_flow(
        GridSearchConfig(
            model=f"{model}:create_model", grid=GridSpec.from_mapping(grid), run=run, refit=True
        )
    )
    assert summary.engines == ["fast"] and summary.n_failed_fits == 0
    saved = keras.saving.load_model(f"{summary.output_dir}/best_model.keras")
    dims = sorted(layer.input_dim for layer in saved.layers if "embedding" in layer.name)
    assert dims == [len(COLORS) + 1, len(GRADES) + 1]
