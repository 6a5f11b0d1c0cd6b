"""foldflow.GridSearchCV as a scikit-learn estimator, and the pure parts of the API (no fits)."""

from __future__ import annotations

import linecache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from keras.wrappers import SKLearnClassifier, SKLearnRegressor
from scikeras.wrappers import KerasClassifier, KerasRegressor
from sklearn.base import clone, is_classifier
from sklearn.model_selection import KFold, StratifiedKFold

import foldflow
from foldflow.estimators import keras_candidate, plan_estimator, task_of
from foldflow.results import scikit_learn_out, scorer_names
from foldflow.runs import explicit_splits, n_workers, run_settings
from tasks.data.folds import split_folds
from tasks.data.in_memory import data_frame, fingerprint, store_in_memory_data
from tasks.errors import ConfigError
from tasks.model.function_source import function_reference, standalone_source


def build(optimizer="adam", units=8):
    """A stand-in model function (never called here)."""
    return np.zeros(units), optimizer


def test_clone_get_params_and_set_params_work_as_for_scikit_learns_search():
    search = foldflow.GridSearchCV(
        KerasClassifier(model=build, epochs=3), {"model__units": [4, 8]}, cv=3, engine="fast"
    )
    params = search.get_params()
    assert params["cv"] == 3 and params["engine"] == "fast"
    assert params["estimator__epochs"] == 3
    search.set_params(estimator__epochs=5, cv=4)
    copy = clone(search)
    assert copy.get_params()["estimator__epochs"] == 5 and copy.cv == 4
    assert copy is not search and copy.estimator is not search.estimator
    assert is_classifier(search)
    assert not is_classifier(foldflow.GridSearchCV(build, {"units": [4]}))  # known after fit
    randomized = clone(foldflow.RandomizedSearchCV(build, {"units": [4, 8]}, n_iter=2))
    assert randomized.get_params()["n_iter"] == 2 and randomized.engine == "auto"


def test_a_wrapper_gives_its_function_and_routed_base_params():
    plan = plan_estimator(
        KerasClassifier(model=build, epochs=3, batch_size=None, shuffle=False, model__units=4)
    )
    assert plan.function is build and plan.kind == "classifier"
    assert plan.base_params == {
        "epochs": 3,
        "batch_size": 32,
        "fit__shuffle": False,
        "fit__validation_split": 0.0,
        "model__units": 4,
    }
    assert plan_estimator(KerasRegressor(model=build)).kind == "regressor"
    assert plan_estimator(build).kind == "infer"


def build_from_data(X, y, units=8):
    """A stand-in in the shape of Keras' wrappers' model functions (never called here)."""
    return np.zeros((X.shape[1], units, y.shape[1]))


def test_keras_own_wrappers_give_their_function_and_kwargs_with_keras_fit_defaults():
    plan = plan_estimator(
        SKLearnClassifier(
            model=build_from_data, model_kwargs={"units": 4}, fit_kwargs={"epochs": 3, "verbose": 0}
        )
    )
    assert plan.function is build_from_data and plan.kind == "classifier"
    assert plan.base_params == {"model__units": 4, "epochs": 3, "batch_size": 32}
    # A searched fit_kwargs replaces the estimator's whole dict, as scikit-learn's set_params
    # does: Keras' own defaults (1 epoch) for what it leaves out.
    assert keras_candidate(plan, {"fit_kwargs": {"batch_size": 8, "shuffle": False}}) == {
        "model__units": 4,
        "epochs": 1,
        "batch_size": 8,
        "fit__shuffle": False,
    }
    assert keras_candidate(plan, {"model_kwargs": {}}) == {"epochs": 3, "batch_size": 32}
    assert plan_estimator(SKLearnRegressor(model=build_from_data)).kind == "regressor"
    with pytest.raises(ConfigError, match="model__units"):
        keras_candidate(plan, {"model__units": 8})


@pytest.mark.parametrize(
    ("estimator", "message"),
    [
        (SKLearnClassifier(model=build_from_data, warm_start=True), "warm_start"),
        (SKLearnClassifier(model=build_from_data, fit_kwargs={"callbacks": []}), "callbacks"),
        (SKLearnClassifier(model=build_from_data, model_kwargs=[4]), "model_kwargs"),
        (SKLearnRegressor(model=object()), "not a model instance"),
        (KerasClassifier(model=build, callbacks=[object()]), "callbacks"),
        (KerasClassifier(model=build, warm_start=True), "warm_start"),
        (KerasClassifier(model=build, optimizer__learning_rate=0.1), "optimizer__learning_rate"),
        (KFold(), "KFold"),
    ],
)
def test_what_foldflow_would_not_honour_is_refused_by_name(estimator, message):
    with pytest.raises(ConfigError, match=message):
        plan_estimator(estimator)


def test_scoring_names_map_to_cv_results_names():
    assert scorer_names(None, "binary") == {"score": "accuracy"}
    assert scorer_names(None, "regression") == {"score": "r2"}
    assert scorer_names(["accuracy", "roc_auc"], "binary") == {
        "accuracy": "accuracy",
        "roc_auc": "roc_auc",
    }
    assert scorer_names({"ll": "neg_log_loss"}, "binary") == {"ll": "neg_log_loss"}
    with pytest.raises(ConfigError, match="'r2' is not a binary metric"):
        scorer_names("r2", "binary")
    with pytest.raises(ConfigError, match="callable cannot reach the fold.s model"):
        scorer_names(lambda estimator, X, y: 0.0, "binary")


def test_task_follows_the_wrapper_and_the_target():
    assert task_of("classifier", np.array([0, 1, 1])) == "binary"
    assert task_of("classifier", np.array(["a", "b", "c"])) == "multiclass"
    assert task_of("infer", np.array([0.5, 1.25, 3.0])) == "regression"
    assert task_of("regressor", np.array([0, 1, 1])) == "regression"


def test_n_jobs_maps_to_workers():
    assert n_workers(None) == 1 and n_workers(3) == 3 and n_workers(-1) >= 1


def test_an_int_cv_means_foldflows_folds_and_a_splitter_its_own_rows():
    X, y = np.zeros((6, 2)), np.array([0, 1] * 3)
    assert explicit_splits(3, X, y) is None
    splits = explicit_splits(KFold(3), X, y)
    assert [split.test for split in splits] == [[0, 1], [2, 3], [4, 5]]


def test_in_memory_data_is_stored_once_by_its_fingerprint(tmp_path):
    X = np.arange(12, dtype=np.float64).reshape(6, 2)
    y = np.array([0, 1, 0, 1, 0, 1])
    spec, path = store_in_memory_data(X, y, "binary", tmp_path)
    again, same_path = store_in_memory_data(X.copy(), y.copy(), "binary", tmp_path)
    assert path == same_path and spec == again
    assert path.name == f"{fingerprint(data_frame(X, y))}.parquet"
    assert list(pd.read_parquet(path).columns) == ["x0", "x1", "target"]
    assert spec.format == "parquet" and spec.target == "target"
    _, other = store_in_memory_data(X, 1 - y, "binary", tmp_path)
    assert other != path


def test_in_memory_data_refuses_mismatched_rows(tmp_path):
    with pytest.raises(ValueError, match="X has 3 rows but y has 2"):
        store_in_memory_data(np.zeros((3, 2)), np.array([0, 1]), "binary", tmp_path)


def test_a_module_function_is_referenced_by_module(tmp_path):
    assert function_reference(build, tmp_path) == f"{__name__}:build"


def test_a_scripts_function_is_shipped_with_imports_for_its_globals(tmp_path):
    namespace = {"__name__": "__main__"}
    script = tmp_path / "script.py"
    script.write_text(
        "import numpy as np\nfrom keras.layers import Dense\nWIDTH = 4\n\n"
        "def helper():\n    return WIDTH\n\n"
        "def create_model(units=8):\n    return Dense(units + helper()), np.zeros(1)\n\n"
        "raise SystemExit('the script runs its search here')\n"
    )
    code = compile(script.read_text(), str(script), "exec")
    with pytest.raises(SystemExit):
        exec(code, namespace)
    text = standalone_source(namespace["create_model"])
    assert "SystemExit" not in text
    assert "import numpy as np" in text and "WIDTH = 4" in text and "def helper" in text
    assert "from keras.src.layers.core.dense import Dense as Dense" in text
    reference = function_reference(namespace["create_model"], tmp_path / "cache")
    path, _, name = reference.rpartition(":")
    assert name == "create_model" and path.startswith(str(tmp_path / "cache"))
    shipped = {}
    exec(compile(open(path).read(), path, "exec"), shipped)
    assert shipped["create_model"](1)[0].units == 5


def test_a_lambda_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="top level"):
        function_reference(lambda: None, tmp_path)


def test_a_notebook_cells_function_is_shipped_from_its_source(tmp_path):
    """Notebooks keep each cell's text in linecache under a made-up file name, as here."""
    cell = "import math\n\ndef create_model(units=8):\n    return math.sqrt(units)\n"
    name = "<ipython-input-3-0123456789ab>"
    linecache.cache[name] = (len(cell), None, cell.splitlines(True), name)
    namespace = {"__name__": "__main__"}
    exec(compile(cell, name, "exec"), namespace)
    path, _, function = function_reference(namespace["create_model"], tmp_path).rpartition(":")
    shipped = {}
    exec(compile(open(path).read(), path, "exec"), shipped)
    assert function == "create_model" and shipped["create_model"](16) == 4.0


def flow_table(error: str = "") -> pd.DataFrame:
    """A one-combination, two-fold cv_results table as the grid flow writes it."""
    return pd.DataFrame(
        {
            "split0_fit_time": [1.5],
            "split1_fit_time": [2.5],
            "split0_test_accuracy": [0.75],
            "split1_test_accuracy": [np.nan if error else 0.5],
            "split0_test_log_loss": [0.5],
            "split1_test_log_loss": [np.nan if error else 0.25],
            "error": [error],
        }
    )


def test_flow_scores_become_scikit_learns_fit_and_score_records():
    names = {"accuracy": "accuracy", "ll": "neg_log_loss"}
    out = scikit_learn_out(flow_table(), 2, names, "binary", np.nan, multimetric=True)
    assert [record["test_scores"] for record in out] == [
        {"accuracy": 0.75, "ll": -0.5},
        {"accuracy": 0.5, "ll": -0.25},
    ]
    assert [record["fit_time"] for record in out] == [1.5, 2.5]
    assert all(np.isnan(record["score_time"]) for record in out)
    single = scikit_learn_out(flow_table(), 2, {"score": "accuracy"}, "binary", np.nan, False)
    assert [record["test_scores"] for record in single] == [0.75, 0.5]


def test_a_failed_fit_scores_error_score_and_says_why():
    table = flow_table(error="fold 1: ValueError: boom")
    out = scikit_learn_out(table, 2, {"score": "accuracy"}, "binary", 0.0, multimetric=False)
    assert [record["test_scores"] for record in out] == [0.75, 0.0]
    assert out[0]["fit_error"] is None and "boom" in out[1]["fit_error"]


def test_each_failed_fold_gets_its_own_error_as_scikit_learn_counts_them():
    table = pd.concat([flow_table(), flow_table()], ignore_index=True)
    table.loc[1, "error"] = "fold 0: ValueError: first; fold 1: KeyError: second"
    out = scikit_learn_out(table, 2, {"score": "accuracy"}, "binary", -1.0, multimetric=False)
    assert [record["fit_error"] for record in out] == [
        None,
        None,
        "ValueError: first",
        "KeyError: second",
    ]
    assert [record["test_scores"] for record in out][2:] == [-1.0, -1.0]


def test_a_splitters_folds_travel_as_a_file_whatever_the_rows(tmp_path, monkeypatch):
    """20,000 rows in 5 folds as row lists were over Prefect's 512 KB for a flow run's
    parameters (HTTP 422 from the API): the folds go to the cache as a file, checked by its
    SHA-256, and the run settings carry only its name; the flow reads back the very rows."""
    monkeypatch.setenv("FOLDFLOW_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20_000, 3)), rng.integers(0, 2, 20_000)
    splitter = StratifiedKFold(n_splits=5, shuffle=True, random_state=1)
    run = run_settings(X, y, "binary", splitter, 7, 1, "auto", "accuracy", tmp_path)
    assert len(run.model_dump_json()) < 64_000
    dataset = load_dataset_for(run)
    folds = split_folds.fn(dataset, run.n_splits, run.seed, run.splits, run.splits_file)
    for fold, (train, test) in zip(folds, splitter.split(X, y), strict=True):
        assert fold.train == train.tolist() and fold.test == test.tolist()

    data = bytearray(Path(run.splits_file).read_bytes())
    data[len(data) // 2] ^= 0xFF
    Path(run.splits_file).write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="splits"):
        split_folds.fn(dataset, run.n_splits, run.seed, run.splits, run.splits_file)


def load_dataset_for(run):
    from tasks.data.fetch import download_dataset

    return download_dataset.fn(run.dataset, run.cache_folder(), source=run.source)


class DataStored(Exception):
    """Raised where the data would be stored: the call ends there."""


def record_api_start_and_data(monkeypatch, module) -> list[str]:
    """`module`'s start_api_early and run_settings (storing the data, which ends the call with
    DataStored) replaced by recorders of their order."""
    events: list[str] = []

    def store(*args, **kwargs):
        events.append("data")
        raise DataStored

    monkeypatch.setattr(module, "start_api_early", lambda: events.append("api"))
    monkeypatch.setattr(module, "run_settings", store)
    return events


def test_fit_starts_the_embedded_api_once_its_arguments_are_checked_before_the_data(monkeypatch):
    """The API takes seconds to come up: it starts as soon as the search's arguments are
    checked, so that it comes up while the data are stored and checked and the flow imported
    (run_flow waits for it); a refused argument starts nothing."""
    from foldflow import search as search_module

    events = record_api_start_and_data(monkeypatch, search_module)
    X, y = np.zeros((20, 2)), np.arange(20) % 2
    estimator = KerasClassifier(model=build, epochs=1)
    with pytest.raises(ConfigError, match="fit parameters"):
        foldflow.GridSearchCV(estimator, {"model__units": [4]}).fit(X, y, sample_weight=y)
    assert events == []
    with pytest.raises(DataStored):
        foldflow.GridSearchCV(estimator, {"model__units": [4]}).fit(X, y)
    assert events == ["api", "data"]


def test_cross_validate_starts_the_embedded_api_once_its_arguments_are_checked(monkeypatch):
    """As the searches do (above): the API comes up while the data are stored and the flow
    imported; a refused scorer starts nothing."""
    from foldflow import cross_validation

    events = record_api_start_and_data(monkeypatch, cross_validation)
    X, y = np.zeros((20, 2)), np.arange(20) % 2
    estimator = KerasClassifier(model=build, epochs=1)
    with pytest.raises(ConfigError, match="no_such_scorer"):
        foldflow.cross_validate(estimator, X, y, scoring="no_such_scorer")
    assert events == []
    with pytest.raises(DataStored):
        foldflow.cross_val_score(estimator, X, y)
    assert events == ["api", "data"]


def test_a_pipelines_transformers_are_fitted_on_every_fold_while_the_api_comes_up(
    tmp_path, monkeypatch
):
    """Before the flow is called (and waits for the API), fit fits the Pipeline's transformers
    on every fold's training rows, as the flow's width check will ask for them: the flow then
    finds them made (tasks.data.user_transformer keeps them per process)."""
    from foldflow import search as search_module
    from tasks.data import user_transformer
    from tests.unit.foldflow.test_pipelines import pipeline

    class Stop(Exception):
        pass

    def flow_called(*args, **kwargs):
        raise Stop

    monkeypatch.setenv("FOLDFLOW_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(search_module, "start_api_early", lambda: None)
    monkeypatch.setattr(search_module, "run_flow", flow_called)
    rng = np.random.default_rng(3)
    X = pd.DataFrame({"age": rng.normal(40, 9, 60), "color": rng.choice(["red", "blue"], 60)})
    y = rng.integers(0, 2, 60)
    fitted_before = set(user_transformer._FITTED.keys())
    search = foldflow.GridSearchCV(
        pipeline(), {"pre__num__simpleimputer__strategy": ["mean"]}, cv=3
    )
    with pytest.raises(Stop):
        search.fit(X, y)
    assert len(set(user_transformer._FITTED.keys()) - fitted_before) == 3  # one per fold
