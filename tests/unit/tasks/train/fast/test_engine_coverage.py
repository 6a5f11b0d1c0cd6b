"""The fast engine reproduces the reference engine beyond the tutorial: multiclass and
regression outputs, every optimizer with its settings (weight decay, clipvalue), L1/L2
regularizers and class weights, per (combination, fold)."""

import textwrap

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.preprocessing import StandardScaler

from tasks.data.folds import plan_folds
from tasks.data.preprocess import fold_features
from tasks.model.factory import model_meta
from tasks.model.sources import resolve_model_reference
from tasks.records import fit_seed
from tasks.train.fast.trainer import train_stacked
from tasks.train.weights_cache import InitialWeights
from tests.support import PIMA_META, combinations, jobs, reference_scores

MODEL = """
import keras

OPTIMIZERS = {
    "rmsprop_centered": lambda: keras.optimizers.RMSprop(0.005, momentum=0.5, centered=True),
    "rmsprop_weight_decay": lambda: keras.optimizers.RMSprop(0.005, weight_decay=0.05),
    "adam": lambda: keras.optimizers.Adam(0.01),
    "adam_amsgrad": lambda: keras.optimizers.Adam(0.01, beta_2=0.9, amsgrad=True),
    "adamw": lambda: keras.optimizers.AdamW(0.01, weight_decay=0.05),
    "sgd_clipvalue": lambda: keras.optimizers.SGD(
        0.05, momentum=0.9, nesterov=True, clipvalue=0.05
    ),
    "adam_clipnorm": lambda: keras.optimizers.Adam(0.01, clipnorm=0.05),
    "rmsprop_global_clipnorm": lambda: keras.optimizers.RMSprop(0.01, global_clipnorm=0.1),
    "adagrad": lambda: keras.optimizers.Adagrad(0.05, initial_accumulator_value=0.2),
    "adadelta": lambda: keras.optimizers.Adadelta(1.0, rho=0.9),
    "adamax": lambda: keras.optimizers.Adamax(0.01, beta_1=0.8),
    "nadam": lambda: keras.optimizers.Nadam(0.01, beta_2=0.99),
}
OUTPUTS = {"binary": "sigmoid", "multiclass": "softmax", "regression": "linear"}
LOSSES = {
    "binary": "binary_crossentropy",
    "multiclass": "sparse_categorical_crossentropy",
    "regression": "mse",
}


def create_model(meta, kind="adam", loss_name=None, regularize=False):
    task = meta["task"]
    units = meta["n_classes_"] if task == "multiclass" else 1
    penalties = {}
    if regularize:
        penalties = {
            "kernel_regularizer": keras.regularizers.L1L2(l1=0.001, l2=0.01),
            "bias_regularizer": "l2",
        }
    model = keras.Sequential([
        keras.Input((meta["n_features_in_"],)),
        keras.layers.Dense(6, activation="relu", **penalties),
        keras.layers.Dense(units, activation=OUTPUTS[task]),
    ])
    model.compile(loss=loss_name or LOSSES[task], optimizer=OPTIMIZERS[kind]())
    return model
"""


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("coverage") / "coverage_model.py"
    path.write_text(textwrap.dedent(MODEL))
    return resolve_model_reference(f"{path}:create_model", path.parent)


def scaled(features):
    return StandardScaler().fit_transform(features).astype(np.float32)


def fast_and_reference(source, features, labels, meta, grid, task, fold_indices=(0,)):
    """(fast result, reference scores) per (combination, fold) of `grid`."""
    folds = {fold.index: fold for fold in plan_folds(labels, 3, 7, task)}
    checked = combinations(grid, source, meta=meta)
    assert all(c.network is not None for c in checked), [c.reason for c in checked]
    fast_jobs = jobs(checked, fold_indices)
    results = train_stacked(features, labels, folds, fast_jobs, 7, InitialWeights(source, meta))
    for job, result in zip(fast_jobs, results, strict=True):
        seed = fit_seed(7, job.model, job.fold)
        view = fold_features(features, folds[job.fold].train, job.model, ())
        expected = reference_scores(view, labels, folds[job.fold], job.model, seed, source, meta)
        assert (result.engine, result.seed, set(result.scores)) == ("fast", seed, set(expected))
        yield job, result, expected


def test_multiclass_sparse_and_one_hot_cross_entropy_match_the_reference(source):
    iris = load_iris()
    meta = model_meta("multiclass", 4, [0, 1, 2])
    grid = {
        "loss_name": ["sparse_categorical_crossentropy", "categorical_crossentropy"],
        "epochs": [3],
        "batch_size": [16],
    }
    for job, result, expected in fast_and_reference(
        source, scaled(iris.data), iris.target, meta, grid, "multiclass"
    ):
        assert result.scores["accuracy"] == expected["accuracy"], job
        assert result.scores["f1_macro"] == expected["f1_macro"], job
        assert result.scores["log_loss"] == pytest.approx(expected["log_loss"], rel=1e-4), job
        assert result.scores["roc_auc_ovr"] == pytest.approx(expected["roc_auc_ovr"], abs=1e-6)
        assert result.loss == result.scores["log_loss"]


def test_regression_with_mse_and_mae_matches_the_reference(source):
    diabetes = load_diabetes()
    meta = model_meta("regression", 10, None)
    grid = {"loss_name": ["mse", "mae"], "kind": ["adam"], "epochs": [3], "batch_size": [32]}
    for job, result, expected in fast_and_reference(
        source, scaled(diabetes.data), diabetes.target, meta, grid, "regression"
    ):
        assert result.scores["r2"] == pytest.approx(expected["r2"], rel=1e-4, abs=1e-5), job
        assert result.scores["rmse"] == pytest.approx(expected["rmse"], rel=1e-5), job
        assert result.accuracy is None
        assert result.loss == pytest.approx(result.scores["rmse"] ** 2)


@pytest.mark.parametrize(
    "kind",
    [
        "rmsprop_centered",
        "rmsprop_weight_decay",
        "adam_amsgrad",
        "adamw",
        "sgd_clipvalue",
        "adam_clipnorm",
        "rmsprop_global_clipnorm",
        "adagrad",
        "adadelta",
        "adamax",
        "nadam",
    ],
)
def test_each_optimizer_and_its_settings_match_the_reference(source, pima_arrays, kind):
    features, labels = pima_arrays
    grid = {"kind": [kind], "preprocess__scaling": ["standard"], "epochs": [2], "batch_size": [32]}
    for job, result, expected in fast_and_reference(
        source, features, labels, PIMA_META, grid, "binary"
    ):
        assert result.accuracy == expected["accuracy"], job
        assert result.loss == pytest.approx(expected["log_loss"], rel=1e-4, abs=1e-5), job


def test_regularizers_and_class_weights_match_the_reference(source, pima_arrays):
    features, labels = pima_arrays
    grid = {
        "regularize": [True, False],
        "fit__class_weight": [{0: 1.0, 1: 2.5}, None],
        "preprocess__scaling": ["standard"],
        "epochs": [2],
        "batch_size": [32],
    }
    for job, result, expected in fast_and_reference(
        source, features, labels, PIMA_META, grid, "binary", fold_indices=(1,)
    ):
        assert result.accuracy == expected["accuracy"], job
        assert result.loss == pytest.approx(expected["log_loss"], rel=1e-4, abs=1e-5), job
