"""Preprocessing is fitted on each fold's training rows only, and feeds both engines alike."""

import keras
import numpy as np
import pytest
from prefect.cache_policies import INPUTS
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from tasks.config import DEFAULT_DATASET_SPEC, DatasetSpec, ModelParams
from tasks.data.folds import plan_folds
from tasks.data.preprocess import (
    FoldFeatures,
    fit_preprocessor,
    fold_features,
    preprocessing_record,
    with_preprocessing,
)
from tasks.model.factory import build_mlp, build_model
from tasks.records import FitJob, fit_seed
from tasks.train.fast.trainer import train_stacked
from tasks.train.weights_cache import InitialWeights
from tests.support import BUILTIN, PIMA_META, combinations, mlp_params, reference_scores

SPEC = DatasetSpec.from_yaml(DEFAULT_DATASET_SPEC)
ZERO_COLUMNS = tuple(SPEC.feature_columns.index(c) for c in SPEC.impossible_zero_columns)


@pytest.fixture(scope="module")
def folds(pima_arrays):
    return {fold.index: fold for fold in plan_folds(pima_arrays[1], 3, 7)}


@pytest.mark.parametrize(
    "scaling, scaler", [("standard", StandardScaler), ("minmax", MinMaxScaler)]
)
def test_a_folds_test_rows_are_scaled_by_its_training_rows_alone(
    pima_arrays, folds, scaling, scaler
):
    features, _ = pima_arrays
    fold = folds[1]
    x = features.astype(np.float64)
    transformed = fold_features(features, fold.train, ModelParams(scaling=scaling), ())
    train_only = scaler().fit(x[fold.train]).transform(x[fold.test])
    all_rows = scaler().fit(x).transform(x[fold.test])
    np.testing.assert_allclose(transformed[fold.test], train_only, rtol=1e-5, atol=1e-6)
    assert not np.allclose(transformed[fold.test], all_rows, rtol=1e-5, atol=1e-6)


def test_zero_coded_values_are_imputed_with_the_training_rows_median(pima_arrays, folds):
    features, _ = pima_arrays
    fold = folds[0]
    model = ModelParams(impute_zeros=True)
    transformed = fold_features(features, fold.train, model, ZERO_COLUMNS)
    differs_from_all_rows = False
    for column in ZERO_COLUMNS:
        train = features[fold.train, column]
        median = np.median(train[train != 0])
        zeros = np.flatnonzero(features[:, column] == 0)
        assert zeros.size and np.all(transformed[zeros, column] == np.float32(median))
        everything = features[:, column]
        differs_from_all_rows |= median != np.median(everything[everything != 0])
    assert differs_from_all_rows  # so the assertion above could tell a leak from a match
    others = [c for c in range(features.shape[1]) if c not in ZERO_COLUMNS]
    np.testing.assert_array_equal(transformed[:, others], features[:, others])


def test_without_preprocessing_a_fit_sees_the_very_same_features(pima_arrays, folds):
    features, _ = pima_arrays
    assert fold_features(features, folds[0].train, ModelParams(), ZERO_COLUMNS) is features
    views = FoldFeatures(features, ZERO_COLUMNS)
    assert views.key(0, ModelParams()) == views.key(2, ModelParams()) == ("raw",)
    assert views.key(0, ModelParams(scaling="standard")) != views.key(
        1, ModelParams(scaling="standard")
    )


def test_fast_engine_matches_reference_fits_with_preprocessing(pima_arrays, folds):
    features, labels = pima_arrays
    settings = [("none", False), ("standard", False), ("minmax", True), ("none", True)]
    # Alternating folds: few reference fits, several matrices in one program.
    jobs = []
    for index, (scaling, impute) in enumerate(settings):
        routed = {"preprocess__scaling": scaling, "preprocess__impute_zeros": impute}
        [checked] = combinations(None, base={**routed, "epochs": 2, "batch_size": 64})
        assert checked.network is not None
        jobs.append(
            FitJob(
                combination=index,
                params=routed,
                model=checked.model,
                fold=index % 2 * 2,
                network=checked.network,
            )
        )
    initial = InitialWeights(BUILTIN, PIMA_META)
    together = train_stacked(features, labels, folds, jobs, 7, initial, ZERO_COLUMNS)
    views = FoldFeatures(features, ZERO_COLUMNS)
    for job, result in zip(jobs, together, strict=True):
        fold = folds[job.fold]
        seed = fit_seed(7, job.model, job.fold)
        view = views.of(fold.index, fold.train, job.model)
        reference = reference_scores(view, labels, fold, job.model, seed)
        assert result.accuracy == reference["accuracy"], job.params
        assert result.scores["f1"] == reference["f1"], job.params
        assert result.loss == pytest.approx(reference["log_loss"], rel=1e-4, abs=1e-5)
        # A rank metric: probabilities equal to float rounding may swap a few near-ties.
        assert result.scores["roc_auc"] == pytest.approx(reference["roc_auc"], abs=5e-3)
    # One matrix per (fold, preprocessing) in one program gives what each gets alone.
    alone = [
        train_stacked(features, labels, folds, [job], 7, initial, ZERO_COLUMNS)[0]
        for job in jobs[1::3]
    ]
    assert [r.scores for r in alone] == [r.scores for r in together[1::3]]


def test_preprocessing_is_part_of_a_fits_cache_key_but_not_of_its_seed():
    raw = FitJob(combination=0, params={}, model=mlp_params(), fold=0)
    scaled = raw.model_copy(update={"model": mlp_params(preprocess__scaling="standard")})
    assert fit_seed(7, raw.model, 0) == fit_seed(7, scaled.model, 0)
    keys = {INPUTS.compute_key(None, {"jobs": [job], "run_seed": 7}, {}) for job in (raw, scaled)}
    assert len(keys) == 2


def test_the_fitted_step_is_recorded_as_plain_numbers(pima_arrays):
    features, _ = pima_arrays
    rows = np.arange(len(features))
    model = ModelParams(scaling="standard", impute_zeros=True)
    step = fit_preprocessor(features, rows, model, ZERO_COLUMNS)
    record = preprocessing_record(step, SPEC.feature_columns)
    assert set(record["zeros_imputed_with_median"]) == set(SPEC.impossible_zero_columns)
    prepared = features.astype(np.float64)
    for column, median in record["zeros_imputed_with_median"].items():
        index = SPEC.feature_columns.index(column)
        prepared[prepared[:, index] == 0, index] = median
    prepared = (prepared - record["center"]) / record["scale"]
    np.testing.assert_allclose(prepared, step.transform(features.astype(np.float64)), atol=1e-9)


def test_a_saved_model_takes_raw_rows_through_its_recorded_preprocessing(pima_arrays, tmp_path):
    features, _ = pima_arrays
    rows = np.arange(len(features))
    mlp = build_model(build_mlp, {"hidden_layers": (4,)}, {"n_features_in_": 8}, seed=3)
    mlp.optimizer.build(mlp.trainable_variables)  # as refit_on_all_rows leaves it
    for scaling in ("standard", "minmax"):
        model = ModelParams(scaling=scaling, impute_zeros=True)
        step = fit_preprocessor(features, rows, model, ZERO_COLUMNS)
        record = preprocessing_record(step, SPEC.feature_columns)
        with_preprocessing(mlp, record).save(tmp_path / f"{scaling}.keras")
        loaded = keras.saving.load_model(tmp_path / f"{scaling}.keras")
        prepared = step.transform(features.astype(np.float64)).astype(np.float32)
        np.testing.assert_allclose(
            loaded.predict(features, verbose=0), mlp.predict(prepared, verbose=0), atol=1e-5
        )
    assert with_preprocessing(mlp, preprocessing_record(None, SPEC.feature_columns)) is mlp
