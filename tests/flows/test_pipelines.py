"""A scikit-learn Pipeline (ColumnTransformer, imputer, scaler, one-hot encoder, then a Keras
wrapper) searched by foldflow as scikit-learn searches it: the transformers fitted on each
fold's training rows inside the task runs, search keys reaching every step."""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pytest
from scikeras.wrappers import KerasClassifier
from sklearn import model_selection
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

import foldflow

NUMERIC = ["age", "income"]
CATEGORICAL = ["color"]


def pipeline_model(meta, units=4, optimizer="adam"):
    """Its input width is the transformers' output (scikeras' meta), initial weights fixed."""
    model = keras.Sequential(
        [
            keras.Input(shape=(meta["n_features_in_"],)),
            keras.layers.Dense(
                units, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(1)
            ),
            keras.layers.Dense(
                1, activation="sigmoid", kernel_initializer=keras.initializers.GlorotUniform(2)
            ),
        ]
    )
    model.compile(loss="binary_crossentropy", optimizer=optimizer, metrics=["accuracy"])
    return model


def clipped(values):
    """A module-level function: a FunctionTransformer of it travels to the task runs."""
    return np.clip(values, -3.0, 3.0)


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FOLDFLOW_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def mixed_frame():
    """120 rows: two numbers with missing cells (float32 values, as foldflow stores them),
    one text column with missing cells, a binary target that depends on both kinds."""
    rng = np.random.default_rng(3)
    n = 120
    age = rng.normal(40, 10, n).astype(np.float32).astype(np.float64)
    income = rng.normal(0, 1, n).astype(np.float32).astype(np.float64)
    color = rng.choice(np.array(["red", "green", "blue"], dtype=object), n)
    target = ((age > 40).astype(int) + (color == "red").astype(int) + (income > 0)) >= 2
    age[rng.choice(n, 10, replace=False)] = np.nan
    color[rng.choice(n, 8, replace=False)] = np.nan
    frame = pd.DataFrame({"age": age, "income": income, "color": color})
    return frame, target.astype(int)


def pipeline(epochs: int = 2) -> Pipeline:
    numeric = make_pipeline(
        SimpleImputer(strategy="median"), StandardScaler(), FunctionTransformer(clipped)
    )
    categorical = make_pipeline(
        SimpleImputer(strategy="constant", fill_value="missing"),
        OneHotEncoder(handle_unknown="ignore", sparse_output=False),
    )
    pre = ColumnTransformer([("num", numeric, NUMERIC), ("cat", categorical, CATEGORICAL)])
    classifier = KerasClassifier(
        model=pipeline_model, verbose=0, epochs=epochs, batch_size=32, shuffle=False
    )
    return Pipeline([("pre", pre), ("clf", classifier)])


def test_a_pipelines_cv_results_conform_to_scikit_learns_grid_search(home, mixed_frame):
    """Same Pipeline, splitter and initial weights, no shuffling: the transformers fitted on
    each fold's training rows in the task runs give scikit-learn's scores fold by fold, for
    keys of the transformer steps and of the Keras step; on the reference engine exactly,
    and with the Keras step on the fast engine (every fold's transformer gives one width)
    within one test row per fold."""
    X, y = mixed_frame
    splitter = StratifiedKFold(n_splits=2, shuffle=True, random_state=0)
    grid = {"pre__num__simpleimputer__strategy": ["mean", "median"], "clf__model__units": [4, 8]}
    estimator = pipeline()
    ours = foldflow.GridSearchCV(estimator, grid, cv=splitter, engine="reference").fit(X, y)
    fast = foldflow.GridSearchCV(estimator, grid, cv=splitter).fit(X, y)
    theirs = model_selection.GridSearchCV(estimator, grid, cv=splitter).fit(X, y)

    assert ours.cv_results_["params"] == theirs.cv_results_["params"]
    for key in ("split0_test_score", "split1_test_score", "mean_test_score"):
        np.testing.assert_allclose(
            ours.cv_results_[key], theirs.cv_results_[key], rtol=1e-4, atol=1e-6, err_msg=key
        )
        np.testing.assert_allclose(
            fast.cv_results_[key], theirs.cv_results_[key], atol=1 / 60 + 1e-6, err_msg=key
        )
    engines = pd.read_csv(fast.run_dir_ / "cv_results.csv")["engine"].dropna()
    assert set(engines) == {"fast"}
    # The refit runs on the engine the fits ran on, as the command line's does.
    refit_engines = [
        json.loads((search.run_dir_ / "best_model.json").read_text())["engine"]
        for search in (ours, fast)
    ]
    assert refit_engines == ["reference", "fast"]
    assert fast.predict_proba(X).shape == (len(X), 2)
    assert ours.best_params_ == theirs.best_params_
    best = ours.best_estimator_
    assert isinstance(best, Pipeline)
    assert [name for name, _ in best.steps] == ["pre", "clf"]
    assert (
        best.named_steps["pre"].transformers_[0][1].named_steps["simpleimputer"].strategy
        == (ours.best_params_["pre__num__simpleimputer__strategy"])
    )
    assert ours.predict_proba(X).shape == (len(X), 2)
    assert set(np.unique(ours.predict(X))) <= {0, 1}
    assert list(ours.feature_names_in_) == ["age", "income", "color"]


def test_cross_validate_takes_a_pipeline(home, mixed_frame):
    X, y = mixed_frame
    splitter = StratifiedKFold(n_splits=2, shuffle=True, random_state=0)
    ours = foldflow.cross_validate(pipeline(epochs=1), X, y, cv=splitter, engine="reference")
    theirs = model_selection.cross_validate(pipeline(epochs=1), X, y, cv=splitter)
    np.testing.assert_allclose(ours["test_score"], theirs["test_score"], rtol=1e-4, atol=1e-6)


def test_a_randomized_search_over_every_step_conforms_too(home, mixed_frame):
    """Candidates sampled as scikit-learn samples them (random_state), fitted in the task
    runs: scikit-learn's RandomizedSearchCV's scores fold by fold."""
    X, y = mixed_frame
    splitter = StratifiedKFold(n_splits=2, shuffle=True, random_state=0)
    space = {
        "pre__num__simpleimputer__strategy": ["mean", "median", "most_frequent"],
        "clf__model__units": [2, 4, 8],
    }
    options = {"n_iter": 2, "cv": splitter, "random_state": 1}
    ours = foldflow.RandomizedSearchCV(pipeline(epochs=1), space, engine="reference", **options)
    theirs = model_selection.RandomizedSearchCV(pipeline(epochs=1), space, **options)
    ours.fit(X, y)
    theirs.fit(X, y)
    assert ours.cv_results_["params"] == theirs.cv_results_["params"]
    for key in ("split0_test_score", "split1_test_score"):
        np.testing.assert_allclose(
            ours.cv_results_[key], theirs.cv_results_[key], rtol=1e-4, atol=1e-6, err_msg=key
        )


def test_a_halving_search_halves_a_pipelines_epochs(home, mixed_frame):
    """resource='clf__epochs', as scikit-learn names a Pipeline's: the transformer keys and
    the Keras step's keys searched rung by rung; the best is a fitted Pipeline."""
    X, y = mixed_frame
    search = foldflow.HalvingGridSearchCV(
        pipeline(epochs=2),
        {"pre__num__simpleimputer__strategy": ["mean", "median"], "clf__model__units": [4, 8]},
        resource="clf__epochs",
        max_resources=2,
        min_resources=1,
        factor=2,
        cv=2,
        engine="reference",
    ).fit(X, y)
    assert search.n_resources_ == [1, 2]
    params = search.cv_results_["params"]
    assert {tuple(sorted(p)) for p in params} == {
        ("clf__epochs", "clf__model__units", "pre__num__simpleimputer__strategy")
    }
    assert [p["clf__epochs"] for p in params] == [1, 1, 1, 1, 2, 2]
    assert isinstance(search.best_estimator_, Pipeline)
    assert search.predict(X).shape == (len(X),)
    # The run folder's saved model takes the same raw rows: text categories, NaN cells.
    saved = foldflow.load_model(search.run_dir_)
    np.testing.assert_array_equal(saved.predict(X), search.predict(X))
    np.testing.assert_allclose(saved.predict_proba(X), search.predict_proba(X), atol=1e-5)
