"""Any scorer and the baseline, through the real flows: scikit-learn scorer names and a
make_scorer of a module-level function scored in the task runs, equal to scikit-learn's own
cross_validate fold by fold; the refit metric any of them; the baseline in every summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scikeras.wrappers import KerasClassifier
from sklearn import model_selection
from sklearn.metrics import make_scorer
from sklearn.model_selection import StratifiedKFold

import foldflow
from flows.cv import cv_flow
from tasks.config import CVConfig, RunSettings
from tasks.errors import ConfigError
from tests.flows.conftest import task_runs_of
from tests.flows.test_api import home, seeded_model, small_pima  # noqa: F401 (fixtures)

TINY = {"epochs": 1, "batch_size": 64}


def predicted_share(y_true, y_pred):
    """A custom score: the share of rows predicted positive."""
    return float(np.mean(np.asarray(y_pred) == 1))


def test_scorers_asked_for_equal_scikit_learns_fold_by_fold(home, small_pima):  # noqa: F811
    features, labels = small_pima
    splitter = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
    estimator = KerasClassifier(
        model=seeded_model, verbose=0, epochs=2, batch_size=64, shuffle=False
    )
    scoring = {
        "bal": "balanced_accuracy",
        "precision": "precision",
        "mcc": "matthews_corrcoef",
        "share": make_scorer(predicted_share),
        "ll": "neg_log_loss",
    }
    ours = foldflow.cross_validate(
        estimator, features, labels, cv=splitter, scoring=scoring, engine="reference"
    )
    theirs = model_selection.cross_validate(
        estimator, features, labels, cv=splitter, scoring=scoring
    )
    assert list(ours) == list(theirs)
    for name in scoring:
        np.testing.assert_allclose(
            ours[f"test_{name}"], theirs[f"test_{name}"], rtol=1e-4, atol=1e-6, err_msg=name
        )


def test_a_lambda_scorer_is_refused_before_any_fit(home, small_pima):  # noqa: F811
    features, labels = small_pima
    estimator = KerasClassifier(model=seeded_model, verbose=0, epochs=1)
    with pytest.raises(ConfigError, match="module-level function"):
        foldflow.cross_validate(
            estimator, features, labels, cv=2, scoring=make_scorer(lambda t, p: 0.0)
        )
    assert not (home / "runs").exists()


def run_cv(settings, **overrides):
    config = CVConfig(params=TINY, run=RunSettings(**settings, **overrides))
    return cv_flow(config)


def test_the_cv_flow_ranks_by_any_scorer_and_shows_the_baseline(run_settings):
    summary = run_cv(
        run_settings,
        engine="auto",
        run_name="cv-scoring",
        scoring=["precision"],
        refit_metric="balanced_accuracy",
    )
    table = pd.read_parquet(f"{summary.output_dir}/cv_results.parquet")
    for name in ("balanced_accuracy", "precision", "accuracy"):
        assert f"split9_test_{name}" in table and f"mean_test_{name}" in table
    assert summary.refit_metric == "balanced_accuracy"
    assert summary.best_score == pytest.approx(table.loc[0, "mean_test_balanced_accuracy"])
    # the majority class: balanced accuracy 0.5, precision 0 (no row predicted positive)
    assert summary.baseline["balanced_accuracy"] == pytest.approx(0.5)
    assert summary.baseline["precision"] == 0.0
    assert summary.baseline["accuracy"] == pytest.approx(500 / 768, abs=0.002)
    assert summary.baseline_kind == "majority class"
    assert "baseline 0.500 (majority class)" in summary.headline
    # a cached fit lacking a scorer asked for now is retrained; with it, it is served
    again = run_cv(run_settings, run_name="cv-again", scoring=["precision"],
                   refit_metric="balanced_accuracy")  # fmt: skip
    assert again.n_cached_fits == 10
    more = run_cv(run_settings, run_name="cv-more", scoring=["precision", "recall"],
                  refit_metric="balanced_accuracy")  # fmt: skip
    assert more.n_cached_fits == 0
    assert "mean_test_recall" in pd.read_parquet(f"{more.output_dir}/cv_results.parquet")


def test_a_scorer_that_does_not_apply_stops_the_flow_before_training(run_settings):
    config = CVConfig(
        params=TINY, run=RunSettings(**run_settings, scoring=["neg_mean_absolute_error"])
    )
    state = cv_flow(config, return_state=True)
    assert state.is_failed()
    assert "'neg_mean_absolute_error' is not a scikit-learn scorer of a binary task" in (
        state.message
    )
    assert not [run for run in task_runs_of(state.state_details.flow_run_id)
                if run.name.startswith("train_fold")]  # fmt: skip


def test_the_cli_scores_ranks_and_prints_the_baseline(tmp_path):
    import io

    from flows.cli import run
    from tests.conftest import PIMA_CSV

    out = io.StringIO()
    arguments = ["cv", "--data", str(PIMA_CSV), "--epochs", "1", "--batch-size", "64",
                 "--scoring", "precision, recall", "--refit-metric", "matthews_corrcoef",
                 "--output-dir", str(tmp_path / "runs"), "--run-name", "cli-scoring"]  # fmt: skip
    assert run(arguments, out=out) == 0
    printed = out.getvalue().splitlines()
    assert printed[-2].startswith("matthews_corrcoef: ")  # the refit metric, last
    assert {line.split(":")[0] for line in printed[-8:-1]} >= {"precision", "recall", "Accuracy"}
    baseline = next(line for line in printed if line.startswith("Baseline (majority class): "))
    assert baseline.startswith("Baseline (majority class): matthews_corrcoef 0.000000, ")
    table = pd.read_csv(tmp_path / "runs" / "cli-scoring" / "cv_results.csv")
    assert {"split9_test_precision", "mean_test_recall", "rank_test_matthews_corrcoef"} <= set(
        table.columns
    )


def test_a_search_refits_by_a_custom_scorer_as_scikit_learns_does(home, small_pima):  # noqa: F811
    features, labels = small_pima
    splitter = StratifiedKFold(n_splits=2, shuffle=True, random_state=0)
    estimator = KerasClassifier(
        model=seeded_model, verbose=0, epochs=2, batch_size=64, shuffle=False
    )
    grid = {"model__units": [4, 8]}
    scoring = {"bal": "balanced_accuracy", "share": make_scorer(predicted_share)}
    ours = foldflow.GridSearchCV(
        estimator, grid, cv=splitter, scoring=scoring, refit="bal", engine="reference"
    ).fit(features, labels)
    theirs = model_selection.GridSearchCV(
        estimator, grid, cv=splitter, scoring=scoring, refit="bal"
    ).fit(features, labels)
    assert sorted(ours.cv_results_) == sorted([*theirs.cv_results_, "engine"])
    for key in ("split0_test_bal", "split1_test_share", "mean_test_bal", "rank_test_share"):
        np.testing.assert_allclose(ours.cv_results_[key], theirs.cv_results_[key], atol=1e-6)
    assert ours.best_index_ == theirs.best_index_
    assert ours.scorer_["share"] is scoring["share"]
