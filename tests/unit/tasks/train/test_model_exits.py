"""`sys.exit()` from the model's code while a fit trains (a layer it defines) fails those fits
with a line naming it, instead of ending the worker or the run (issue 27)."""

import pandas as pd
import pytest

from tasks.config import ModelParams
from tasks.data.dataset import DatasetHandle
from tasks.data.folds import plan_folds
from tasks.model.sources import ModelFunctionExit, resolve_model_reference
from tasks.records import FitJob
from tasks.train.dispatch import run_fit_jobs

MODEL = """\
import sys

import keras


class Leaving(keras.layers.Layer):
    def call(self, inputs):
        if not keras.backend.is_keras_tensor(inputs) and getattr(self, "built_once", False):
            sys.exit(0)
        self.built_once = True
        return inputs


def create_model():
    layers = [keras.Input((8,)), Leaving(), keras.layers.Dense(1, activation="sigmoid")]
    model = keras.Sequential(layers)
    model.compile(loss="binary_crossentropy", optimizer="adam")
    return model
"""


def test_sys_exit_in_a_layer_while_training_is_a_failed_fit_naming_the_line(pima_arrays, tmp_path):
    features, labels = pima_arrays
    features, labels = features[:60], labels[:60]
    path = tmp_path / "leaving.py"
    path.write_text(MODEL)
    source = resolve_model_reference(f"{path}:create_model", tmp_path)
    columns = [f"x{i}" for i in range(8)]
    pd.DataFrame(features, columns=columns).assign(y=labels).to_parquet(tmp_path / "d.parquet")
    handle = DatasetHandle(
        name="d", parquet_path=str(tmp_path / "d.parquet"), sha256="t",
        feature_columns=columns, target="y",
    )  # fmt: skip
    folds = plan_folds(labels, 2, 7)
    job = FitJob(combination=0, params={}, model=ModelParams(epochs=1, batch_size=30), fold=0)
    with pytest.raises(ModelFunctionExit) as raised:
        run_fit_jobs(handle, folds, [job], run_seed=7, source=source)
    assert str(raised.value).startswith(
        f"model function create_model ({path}) called sys.exit(0) at line 9: "
    )
