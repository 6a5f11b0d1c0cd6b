"""`import foldflow` used as scikit-learn's search and CV are, on the real Prefect API: the
tutorial's script with one import changed, scikit-learn conformance, nesting and pipelines."""

from __future__ import annotations

import contextlib
import io
import json
import re
import runpy
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from scikeras.wrappers import KerasClassifier, KerasRegressor
from scipy.stats import randint
from sklearn import model_selection
from sklearn.base import is_classifier
from sklearn.metrics import r2_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

import foldflow
from tasks.cache_home import cache_home
from tasks.config import PROJECT_ROOT

TUTORIAL_SCRIPT = PROJECT_ROOT / "examples" / "tutorial_grid_search.py"


def seeded_model(optimizer="adam", units=8):
    """Initial weights fixed by the function itself, so scikeras and foldflow start alike."""
    model = keras.Sequential(
        [
            keras.Input(shape=(8,)),
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


@pytest.fixture
def home(tmp_path, monkeypatch):
    """FOLDFLOW_HOME in the test's folder: runs/ and the cache (cache/) land there."""
    monkeypatch.setenv("FOLDFLOW_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def small_pima(pima_arrays):
    """200 rows of the real data: enough for 2-3 stratified folds, quick to fit."""
    features, labels = pima_arrays
    return features[:200].astype(np.float64), labels[:200]


def test_tutorial_script_with_foldflow_import_prints_the_tutorial_lines(
    tmp_path, monkeypatch, pima_csv
):
    """The shipped example, run as a script from its own folder; only the grid's training
    lengths are made small here."""
    text = TUTORIAL_SCRIPT.read_text()
    code = [line for line in text.splitlines() if not line.startswith("#")]
    assert "from foldflow import GridSearchCV" in code
    assert not [line for line in code if "sklearn" in line]
    text = text.replace("epochs = [50, 100, 150]", "epochs = [1, 2]")
    text = text.replace("batches = [5, 10, 20]", "batches = [64]")
    script = tmp_path / "tutorial_grid_search.py"
    script.write_text(text)
    (tmp_path / "pima-indians-diabetes.csv").write_bytes(pima_csv.read_bytes())
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FOLDFLOW_HOME", raising=False)

    # Only stdout is captured (pytest's capsys would hand Prefect's log handlers a stream it
    # closes before they finish).
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        runpy.run_path(str(script), run_name="__main__")

    lines = printed.getvalue().strip().splitlines()[-13:]
    assert re.fullmatch(r"Best: 0\.\d{6} using \{'batch_size': 64, 'epochs': [12], .*\}", lines[0])
    rows = [re.fullmatch(r"(0\.\d{6}) \((0\.\d{6})\) with: (\{.*\})", line) for line in lines[1:]]
    assert all(rows), lines
    assert len(rows) == 12  # 2 optimizers x 3 initializers x 2 epochs x 1 batch size
    best = lines[0].split(" using ")[1]
    assert max(float(row.group(1)) for row in rows) == float(lines[0].split()[1])
    assert best in [row.group(3) for row in rows]
    # outputs where the user is (runs/ in the current folder); the cache in the cache home,
    # never in the working folder (issue 29)
    assert list((tmp_path / "runs").glob("grid-*/best_model.keras"))
    assert list((cache_home() / "in-memory").glob("*.parquet"))
    assert not (tmp_path / "data").exists()


def test_cv_results_conform_to_scikit_learns_grid_search(home, small_pima):
    """Same problem, same splitter, same initial weights, reference engine, no shuffling:
    the same keys, dtypes, shapes, masks and ranks, and equal scores fold by fold, on the
    test rows and (return_train_score) on the training rows."""
    features, labels = small_pima
    splitter = StratifiedKFold(n_splits=2, shuffle=True, random_state=0)
    estimator = KerasClassifier(
        model=seeded_model, verbose=0, epochs=2, batch_size=64, shuffle=False
    )
    grid = {"model__optimizer": ["adam", "sgd"], "model__units": [4, 8]}
    # roc_auc is left out: scikit-learn 1.9 does not see scikeras' wrapper as a classifier
    # and fails to score it (NaN); foldflow scores it.
    scoring = ["accuracy", "neg_log_loss"]
    ours = foldflow.GridSearchCV(
        estimator,
        grid,
        cv=splitter,
        scoring=scoring,
        refit="accuracy",
        engine="reference",
        return_train_score=True,
    ).fit(features, labels)
    theirs = model_selection.GridSearchCV(
        estimator, grid, cv=splitter, scoring=scoring, refit="accuracy", return_train_score=True
    ).fit(features, labels)

    assert sorted(ours.cv_results_) == sorted([*theirs.cv_results_, "engine"])
    for key, expected in theirs.cv_results_.items():
        got = ours.cv_results_[key]
        if key == "params":
            assert got == expected
            continue
        assert type(got) is type(expected), key
        assert got.dtype == expected.dtype, key
        assert got.shape == expected.shape, key
        if isinstance(expected, np.ma.MaskedArray):
            assert list(got.mask) == list(expected.mask), key
            assert list(got.data) == list(expected.data), key
        if key.startswith(("split", "mean_t", "std_t", "rank_test")):
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6, err_msg=key)
    assert ours.best_index_ == theirs.best_index_
    assert ours.best_params_ == theirs.best_params_
    assert ours.best_score_ == pytest.approx(theirs.best_score_)
    assert (ours.n_splits_, ours.multimetric_) == (theirs.n_splits_, theirs.multimetric_)
    assert ours.refit_time_ > 0
    assert np.isnan(ours.cv_results_["mean_score_time"]).all()  # not timed apart
    results = ours.cv_results_
    assert not np.array_equal(results["split0_train_accuracy"], results["split0_test_accuracy"])
    # the refitted best model predicts like the search's own
    predictions = ours.predict(features)
    assert set(np.unique(predictions)) <= {0, 1}
    assert ours.predict_proba(features).shape == (len(features), 2)
    assert ours.score(features, labels) == pytest.approx(np.mean(predictions == labels))


def test_a_dataframe_fits_and_its_columns_name_the_features(home, small_pima):
    features, labels = small_pima
    frame = pd.DataFrame(features, columns=[f"f{index}" for index in range(8)])
    search = foldflow.GridSearchCV(
        seeded_model, {"optimizer": ["adam"], "epochs": [1], "batch_size": [64]}, cv=2
    ).fit(frame, pd.Series(labels))
    assert search.cv_results_["split1_test_score"].shape == (1,)
    assert search.best_estimator_.predict(frame).shape == (len(frame),)
    assert list(search.feature_names_in_) == list(frame.columns)
    assert search.n_features_in_ == 8
    assert is_classifier(search)  # a bare function's task is known once y is seen
    reordered = frame[list(reversed(frame.columns))]
    np.testing.assert_array_equal(search.predict_proba(reordered), search.predict_proba(frame))
    stored = pd.read_parquet(next((home / "cache" / "in-memory").glob("*.parquet")))
    assert list(stored.columns) == [*frame.columns, "target"]


def test_search_inside_cross_val_score_and_a_pipeline(home, small_pima):
    """Nested CV the scikit-learn way, with the search as a pipeline's last step."""
    features, labels = small_pima
    search = foldflow.GridSearchCV(
        KerasClassifier(model=seeded_model, verbose=0, epochs=1, batch_size=64),
        {"model__units": [4]},
        cv=2,
    )
    pipeline = Pipeline([("identity", FunctionTransformer()), ("search", search)])
    scores = model_selection.cross_val_score(
        pipeline, features, labels, cv=StratifiedKFold(2, shuffle=True, random_state=1)
    )
    assert scores.shape == (2,)
    assert np.all((scores >= 0) & (scores <= 1))


def test_cross_validate_and_cross_val_score_match_scikit_learns_keys(home, small_pima):
    features, labels = small_pima
    estimator = KerasClassifier(model=seeded_model, verbose=0, epochs=1, batch_size=64)
    splitter = StratifiedKFold(3, shuffle=True, random_state=0)
    scoring = ["accuracy", "neg_log_loss"]
    ours = foldflow.cross_validate(
        estimator, features, labels, cv=splitter, scoring=scoring, return_train_score=True
    )
    theirs = model_selection.cross_validate(
        estimator, features, labels, cv=splitter, scoring=scoring, return_train_score=True
    )
    assert list(ours) == list(theirs)  # train_accuracy, train_neg_log_loss too, in their order
    assert all(ours[key].shape == theirs[key].shape for key in theirs)
    scores = foldflow.cross_val_score(estimator, features, labels, cv=splitter)
    np.testing.assert_allclose(scores, ours["test_accuracy"])


def test_a_list_of_grids_and_a_randomized_search_give_scikit_learns_masks(home, small_pima):
    """Candidates that search different keys: `param_*` masked where a candidate lacks the
    key, exactly as scikit-learn masks them."""
    features, labels = small_pima
    estimator = KerasClassifier(model=seeded_model, verbose=0, epochs=1, batch_size=64)
    grids = [{"model__units": [4, 6]}, {"model__optimizer": ["sgd"]}]
    splitter = StratifiedKFold(2, shuffle=True, random_state=0)
    ours = foldflow.GridSearchCV(estimator, grids, cv=splitter).fit(features, labels)
    theirs = model_selection.GridSearchCV(estimator, grids, cv=splitter).fit(features, labels)
    assert sorted(ours.cv_results_) == sorted([*theirs.cv_results_, "engine"])
    for key in ("param_model__units", "param_model__optimizer"):
        assert list(ours.cv_results_[key].mask) == list(theirs.cv_results_[key].mask)
        assert ours.cv_results_[key].dtype == theirs.cv_results_[key].dtype
    assert ours.cv_results_["params"] == theirs.cv_results_["params"]
    assert list(ours.cv_results_["engine"]) == ["fast"] * 3  # which engine trained each

    distributions = {"model__units": randint(2, 9), "model__optimizer": ["adam", "sgd"]}

    def worst(results):  # `refit` as a callable: scikit-learn's semantics, any choice
        return int(np.argmax(results["rank_test_score"]))

    sampled = foldflow.RandomizedSearchCV(
        estimator, distributions, n_iter=3, cv=2, random_state=0, refit=worst
    ).fit(features, labels)
    expected = model_selection.ParameterSampler(distributions, 3, random_state=0)
    assert sampled.cv_results_["params"] == list(expected)
    assert sampled.cv_results_["rank_test_score"].min() == 1
    assert sampled.best_index_ == worst(sampled.cv_results_)
    assert sampled.best_params_ == sampled.cv_results_["params"][sampled.best_index_]
    assert not hasattr(sampled, "best_score_")
    record = Path(sampled.best_estimator_.path).with_name("best_model.json")
    refitted = json.loads(record.read_text())
    assert refitted["best_params"] == sampled.best_params_  # the chosen one, refitted
    assert sampled.best_estimator_.predict(features[:5]).shape == (5,)


def regression_model(units=8):
    model = keras.Sequential(
        [
            keras.Input(shape=(7,)),
            keras.layers.Dense(units, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(loss="mse", optimizer="adam")
    return model


def test_a_regressor_is_searched_and_scored_as_scikit_learn_scores_regressors(home, small_pima):
    """KerasRegressor: KFold folds, r2 by default, rmse negated as scikit-learn's scorer."""
    features, _ = small_pima
    X, y = np.delete(features, 5, axis=1), features[:, 5]  # predict the BMI column
    search = foldflow.GridSearchCV(
        KerasRegressor(model=regression_model, verbose=0, epochs=1, batch_size=64),
        {"model__units": [4, 8]},
        cv=2,
        scoring=["r2", "neg_root_mean_squared_error"],
        refit="r2",
    ).fit(X, y)
    results = search.cv_results_
    assert np.all(results["mean_test_neg_root_mean_squared_error"] < 0)
    assert sorted(results["rank_test_r2"]) == [1, 2]
    predictions = search.predict(X)
    assert predictions.shape == (len(X),) and predictions.dtype == np.float64
    assert search.score(X, y) == pytest.approx(r2_score(y, predictions))


def keras_wrapper_model(X, y, units=8):
    """A model function as Keras' own wrappers call it: sizes from X and (one-hot) y."""
    model = keras.Sequential(
        [
            keras.Input(shape=(X.shape[1],)),
            keras.layers.Dense(
                units, activation="relu", kernel_initializer=keras.initializers.GlorotUniform(1)
            ),
            keras.layers.Dense(
                y.shape[1],
                activation="softmax",
                kernel_initializer=keras.initializers.GlorotUniform(2),
            ),
        ]
    )
    model.compile(loss="categorical_crossentropy", optimizer="adam")
    return model


def regression_wrapper_model(X, y, units=8):
    model = keras.Sequential(
        [
            keras.Input(shape=(X.shape[1],)),
            keras.layers.Dense(units, activation="relu"),
            keras.layers.Dense(y.shape[1]),  # one column: Keras' regressor passes y as (n, 1)
        ]
    )
    model.compile(loss="mse", optimizer="adam")
    return model


def test_keras_own_wrapper_is_searched_as_scikit_learn_searches_it(home):
    """keras.wrappers.SKLearnClassifier (model_kwargs and fit_kwargs searched as dicts) on a
    3-class problem: the same candidates and, reference engine with the same initial weights
    and no shuffling, the same fold scores as scikit-learn's GridSearchCV."""
    from keras.wrappers import SKLearnClassifier, SKLearnRegressor
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    estimator = SKLearnClassifier(model=keras_wrapper_model)
    # In the grid: Keras' wrapper drops fit_kwargs when scikit-learn clones it (keras 3.15's
    # __sklearn_clone__), so scikit-learn's search sees them only when it sets them.
    grid = {
        "model_kwargs": [{"units": 4}, {"units": 8}],
        "fit_kwargs": [{"epochs": 2, "batch_size": 32, "shuffle": False}],
    }
    splitter = StratifiedKFold(n_splits=2, shuffle=True, random_state=0)
    ours = foldflow.GridSearchCV(estimator, grid, cv=splitter, engine="reference").fit(X, y)
    theirs = model_selection.GridSearchCV(estimator, grid, cv=splitter).fit(X, y)
    assert ours.cv_results_["params"] == theirs.cv_results_["params"]
    assert list(ours.cv_results_["engine"]) == ["reference"] * 2
    for key in ("split0_test_score", "split1_test_score", "rank_test_score"):
        np.testing.assert_allclose(ours.cv_results_[key], theirs.cv_results_[key], err_msg=key)
    assert set(ours.predict(X)) <= {0, 1, 2}

    regression = foldflow.cross_validate(
        SKLearnRegressor(model=regression_wrapper_model, model_kwargs={"units": 4}),
        X[:, :3],
        X[:, 3],
        cv=2,
    )  # Keras' fit defaults: 1 epoch, batch 32
    assert regression["test_score"].shape == (2,)


def test_halving_grid_search_gives_scikit_learns_halving_results(home, small_pima):
    """Successive halving over epochs: cv_results_ with scikit-learn's keys and dtypes (taken
    from its HalvingGridSearchCV over a LogisticRegression's max_iter on the same data), one
    row per candidate and iteration, the best of the last iteration refitted."""
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.linear_model import LogisticRegression

    features, labels = small_pima
    estimator = KerasClassifier(model=seeded_model, verbose=0, epochs=3, batch_size=64)
    grid = {"model__units": [2, 4, 8], "model__optimizer": ["adam", "sgd"]}
    ours = foldflow.HalvingGridSearchCV(
        estimator, grid, resource="epochs", min_resources=1, max_resources=3, factor=3, cv=3
    ).fit(features, labels)
    theirs = model_selection.HalvingGridSearchCV(
        LogisticRegression(),
        {"C": [0.5, 1.0, 2.0], "fit_intercept": [True, False]},
        resource="max_iter",
        min_resources=1,
        max_resources=3,
        factor=3,
        cv=3,
    ).fit(features, labels)  # return_train_score: True by default in both

    rename = {"param_C": "param_model__units", "param_fit_intercept": "param_model__optimizer"}
    rename["param_max_iter"] = "param_epochs"
    expected_keys = sorted([*(rename.get(key, key) for key in theirs.cv_results_), "engine"])
    assert sorted(ours.cv_results_) == expected_keys
    for key, expected in theirs.cv_results_.items():
        got = ours.cv_results_[rename.get(key, key)]
        assert type(got) is type(expected), key
        assert np.shape(got) == np.shape(expected) == (6 + 2,), key
        if key in ("iter", "n_resources", "param_max_iter") or key.startswith(
            ("split", "mean_", "std_", "rank_")
        ):
            assert np.asarray(got).dtype == np.asarray(expected).dtype, key
    assert ours.n_resources_ == theirs.n_resources_ == [1, 3]
    assert ours.n_candidates_ == theirs.n_candidates_ == [6, 2]
    assert (ours.n_iterations_, ours.min_resources_, ours.max_resources_) == (2, 1, 3)
    assert ours.n_required_iterations_ == theirs.n_required_iterations_
    assert ours.n_possible_iterations_ == theirs.n_possible_iterations_
    results = ours.cv_results_
    assert list(results["iter"]) == [0] * 6 + [1] * 2
    assert list(results["n_resources"]) == [1] * 6 + [3] * 2
    assert results["params"][:6] == [
        {**params, "epochs": 1} for params in model_selection.ParameterGrid(grid)
    ]
    assert [p["epochs"] for p in results["params"]] == list(results["param_epochs"])
    # the survivors are the first iteration's best two, worse first as scikit-learn orders them
    first = results["mean_test_score"][:6]
    survivors = [{**p, "epochs": 1} for p in results["params"][6:]]
    assert sorted(first[[results["params"].index(p) for p in survivors]]) == sorted(first)[-2:]
    assert ours.best_index_ in (6, 7)
    assert ours.best_score_ == results["mean_test_score"][ours.best_index_]
    assert ours.best_params_ == results["params"][ours.best_index_]
    assert ours.best_params_["epochs"] == 3
    record = Path(ours.best_estimator_.path).with_name("best_model.json")
    assert json.loads(record.read_text())["best_params"] == ours.best_params_
    assert ours.predict(features[:5]).shape == (5,)
