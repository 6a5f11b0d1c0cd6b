"""Beyond the tutorial: a regression (Parquet) and a multiclass dataset with text labels (CSV
with a header) through both flows, and per-fold preprocessing on the fast engine."""

import json

import keras
import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.datasets import load_iris, make_regression

from flows.cv import cv_flow
from flows.grid_search import grid_search_flow
from tasks.config import CVConfig, GridSearchConfig, GridSpec, RunSettings
from tasks.dataset_spec import DatasetSpec
from tasks.errors import ConfigError

TINY = {"epochs": 2, "batch_size": 32}
SCALING_GRID = {"preprocess__scaling": ["none", "standard"], "epochs": [2], "batch_size": [32]}


@pytest.fixture
def regression_spec(tmp_path):
    features, target = make_regression(n_samples=90, n_features=4, noise=5.0, random_state=0)
    frame = pd.DataFrame(features, columns=["a", "b", "c", "d"]).assign(y=target)
    frame.insert(0, "row_id", [f"r{i}" for i in range(len(frame))])  # ignored: not a feature
    frame.to_parquet(tmp_path / "regression.parquet")
    return write_spec(
        tmp_path,
        name="synthetic-regression",
        format="parquet",
        target="y",
        features=["a", "b", "c", "d"],
        task="regression",
    ), str(tmp_path / "regression.parquet")


@pytest.fixture
def iris_spec(tmp_path):
    iris = load_iris(as_frame=True)
    frame = iris.data.set_axis(["sl", "sw", "pl", "pw"], axis=1)
    frame["species"] = iris.target_names[iris.target]
    frame.to_csv(tmp_path / "iris.csv", index=False)
    spec = write_spec(tmp_path, name="iris", header=True, target="species", task="multiclass")
    return spec, str(tmp_path / "iris.csv")


def write_spec(tmp_path, **fields):
    path = tmp_path / f"{fields['name']}.yaml"
    path.write_text(yaml.safe_dump({"url": "https://example.invalid/none", **fields}))
    return str(path)


def settings(run_settings, spec_and_source, run_name, **overrides):
    spec, source = spec_and_source
    values = {**run_settings, "dataset_spec": spec, "source": source, "n_splits": 3}
    if "dataset" in overrides:
        values["dataset_spec"] = "no/such/spec.yaml"  # the inline spec wins
    return RunSettings(**values, run_name=run_name, **overrides)


def table_of(summary):
    return pd.read_parquet(f"{summary.output_dir}/cv_results.parquet")


def test_regression_runs_through_cv_and_grid_search(run_settings, regression_spec):
    cv = cv_flow(CVConfig(params=TINY, run=settings(run_settings, regression_spec, "reg-cv")))
    table = table_of(cv)
    assert cv.refit_metric == "r2" and cv.engines == ["fast"]
    assert set(cv.best_metrics) == {"r2", "rmse"}
    for k in range(3):
        assert table.loc[0, f"split{k}_test_score"] == table.loc[0, f"split{k}_test_r2"]
        assert table.loc[0, f"split{k}_test_rmse"] > 0

    config = GridSearchConfig(
        grid=GridSpec.from_mapping(SCALING_GRID),
        run=settings(run_settings, regression_spec, "reg-grid", refit_metric="rmse"),
    )
    grid = grid_search_flow(config)
    table = table_of(grid)
    assert len(table) == 2 and grid.refit_metric == "rmse"
    best = int(np.argmin(table["mean_test_rmse"]))  # lower is better
    assert grid.best_index == best and table.loc[best, "rank_test_score"] == 1
    assert grid.best_score == pytest.approx(table.loc[best, "mean_test_rmse"])
    saved = json.loads(open(f"{grid.output_dir}/best_model.json").read())
    assert saved["task"] == "regression" and saved["classes"] is None
    assert saved["refit_metric"] == "rmse"
    assert saved["preprocessing"]["feature_columns"] == ["a", "b", "c", "d"]
    model = keras.saving.load_model(f"{grid.output_dir}/best_model.keras")
    assert model.predict(np.zeros((2, 4), dtype=np.float32), verbose=0).shape == (2, 1)


def test_imputing_zeros_needs_zero_coded_columns(run_settings, regression_spec):
    params = {**TINY, "preprocess__impute_zeros": True}
    run = settings(run_settings, regression_spec, "reg-impute")
    state = cv_flow(CVConfig(params=params, run=run), return_state=True)
    assert state.is_failed()
    with pytest.raises(ConfigError, match="impute_zeros needs impossible_zero_columns"):
        state.result()


def test_multiclass_with_text_labels_runs_through_cv_and_grid_search(run_settings, iris_spec):
    cv = cv_flow(CVConfig(params=TINY, run=settings(run_settings, iris_spec, "iris-cv")))
    table = table_of(cv)
    assert cv.refit_metric == "accuracy" and cv.engines == ["fast"]
    for metric in ("accuracy", "f1_macro", "log_loss", "roc_auc_ovr"):
        assert 0 <= table.loc[0, f"mean_test_{metric}"] and f"rank_test_{metric}" in table

    # The spec as a flow parameter this time, as a deployment or the UI form would pass it.
    inline = DatasetSpec.from_yaml(iris_spec[0])
    run = settings(run_settings, iris_spec, "iris-grid", refit_metric="log_loss", dataset=inline)
    config = GridSearchConfig(grid=GridSpec.from_mapping(SCALING_GRID), run=run)
    grid = grid_search_flow(config)
    table = table_of(grid)
    assert grid.best_index == int(np.argmin(table["mean_test_log_loss"]))
    saved = json.loads(open(f"{grid.output_dir}/best_model.json").read())
    assert saved["classes"] == ["setosa", "versicolor", "virginica"]
    model = keras.saving.load_model(f"{grid.output_dir}/best_model.keras")
    probabilities = model.predict(np.zeros((2, 4), dtype=np.float32), verbose=0)
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_pima_grid_over_preprocessing_runs_on_the_fast_engine(run_settings):
    grid = {
        "preprocess__scaling": ["none", "standard"],
        "preprocess__impute_zeros": [True],
        "epochs": [1],
        "batch_size": [64],
    }
    config = GridSearchConfig(
        grid=GridSpec.from_mapping(grid),
        run=RunSettings(**run_settings, n_splits=3, run_name="pima-preprocess"),
    )
    summary = grid_search_flow(config)
    table = table_of(summary)
    assert summary.engines == ["fast"] and len(table) == 2
    assert list(table["param_preprocess__scaling"]) == ["none", "standard"]
    saved = json.loads(open(f"{summary.output_dir}/best_model.json").read())
    assert set(saved["preprocessing"]["zeros_imputed_with_median"]) == {
        "glucose",
        "blood_pressure",
        "skin_thickness",
        "insulin",
        "bmi",
    }
    assert saved["classes"] == [0, 1]
    # The saved model takes raw rows: it imputes and scales them itself.
    model = keras.saving.load_model(f"{summary.output_dir}/best_model.keras")
    raw = np.loadtxt(run_settings["source"], delimiter=",", dtype=np.float32)[:5, :8]
    probabilities = model.predict(raw, verbose=0)
    assert model.name == "preprocessed_model" and probabilities.shape == (5, 1)
    assert ((0 < probabilities) & (probabilities < 1)).all()


def test_a_census_style_file_runs_as_it_comes_and_names_its_positive_class(run_settings, tmp_path):
    """Issue 25: headerless, `, ` separators, text categories, `?` cells, text labels; the
    spec names only columns, target and task; best_model.json names the positive class."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        work = ["Private", "Self-emp", "State-gov", "?"][i % 4]
        label = ">50K" if rng.random() < 0.5 else "<=50K"
        rows.append(f"{20 + i % 40}, {work}, {'' if i % 9 == 0 else 40 + i % 7}, {label}")
    (tmp_path / "census.csv").write_text("\n".join(rows) + "\n")
    spec = write_spec(
        tmp_path, name="census", columns=["age", "work", "hours", "income"], target="income"
    )
    config = GridSearchConfig(
        grid=GridSpec.from_mapping({"epochs": [1], "batch_size": [16]}),
        run=settings(run_settings, (spec, str(tmp_path / "census.csv")), "census-grid"),
    )
    grid = grid_search_flow(config)
    saved = json.loads(open(f"{grid.output_dir}/best_model.json").read())
    assert saved["classes"] == ["<=50K", ">50K"] and saved["positive_label"] == ">50K"
    assert len(table_of(grid)) == 1
