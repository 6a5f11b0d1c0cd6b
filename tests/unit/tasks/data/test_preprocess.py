"""Preprocessing is fitted on each fold's training rows only, and feeds both engines alike."""

import keras
import numpy as np
import pytest
from prefect.cache_policies import INPUTS
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from tasks.config import DEFAULT_DATASET_SPEC, ModelParams
from tasks.data.folds import plan_folds
from tasks.data.preprocess import (
    FoldFeatures,
    fit_preprocessor,
    fold_features,
    preprocessing_record,
    with_preprocessing,
)
from tasks.dataset_spec import DatasetSpec
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


# --- Categories and missing cells: one ColumnTransformer, a fixed width ---------------------

from tasks.data.preprocess import (  # noqa: E402
    FixedWidthCategories,
    kinds_meta,
    load_preprocessing,
    make_preprocessor,
    save_preprocessor,
)
from tasks.features import FeatureKinds, model_input_meta  # noqa: E402

# Columns: 0 numeric (NaN missing), 1 categorical (3 categories, NaN missing), 2 numeric
# (never missing), 3 categorical (4 categories, never missing).
MIXED_KINDS = FeatureKinds(
    n_features=4, categorical=(1, 3), category_counts=(3, 4), with_missing=(0, 1)
)


def mixed_matrix(n_rows=60, seed=0):
    generator = np.random.default_rng(seed)
    features = np.column_stack(
        [
            generator.normal(10, 3, n_rows),
            generator.integers(0, 3, n_rows),
            generator.normal(0, 1, n_rows),
            generator.integers(0, 4, n_rows),
        ]
    ).astype(np.float32)
    features[generator.random(n_rows) < 0.2, 0] = np.nan
    features[generator.random(n_rows) < 0.2, 1] = np.nan
    return features


def test_numbers_only_none_missing_keep_todays_pipeline():
    plain = FeatureKinds(n_features=8, zero_coded=ZERO_COLUMNS)
    model = ModelParams(scaling="standard", impute_zeros=True)
    from_kinds, from_positions = (
        make_preprocessor(model, plain),
        make_preprocessor(model, ZERO_COLUMNS),
    )
    assert [name for name, _ in from_kinds.steps] == ["zeros_as_missing", "impute", "scale"]
    assert repr(from_kinds) == repr(from_positions)
    assert kinds_meta(plain) == {}
    assert make_preprocessor(ModelParams(), plain) is None


def test_numeric_missing_cells_get_the_training_rows_median_only():
    features = mixed_matrix()
    train, test = np.arange(40), np.arange(40, 60)
    features[test, 0] = 1000.0  # a test-row statistic would move the median
    features[45, 0] = np.nan
    transformed = fold_features(features, train, ModelParams(), MIXED_KINDS)
    median = np.nanmedian(features[train, 0])
    assert transformed[45, 0] == np.float32(median)
    assert np.isnan(features[train, 0]).any()
    missing_train = train[np.isnan(features[train, 0])]
    assert np.all(transformed[missing_train, 0] == np.float32(median))
    assert transformed.dtype == np.float32 and not np.isnan(transformed).any()
    mean = fold_features(features, train, ModelParams(numeric_impute="mean"), MIXED_KINDS)
    assert mean[45, 0] == np.float32(np.nanmean(features[train, 0].astype(np.float64)))
    constant = ModelParams(numeric_impute="constant", numeric_fill=-5.0)
    assert fold_features(features, train, constant, MIXED_KINDS)[45, 0] == -5.0


def test_scaling_of_numbers_uses_the_training_rows_alone():
    features = mixed_matrix()
    train = np.arange(40)
    for scaling in ("standard", "minmax", "robust"):
        transformed = fold_features(features, train, ModelParams(scaling=scaling), MIXED_KINDS)
        scaler = {"standard": StandardScaler, "minmax": MinMaxScaler}.get(scaling)
        if scaler is None:
            from sklearn.preprocessing import RobustScaler

            scaler = RobustScaler
        expected = scaler().fit(features[train][:, [2]].astype(np.float64))
        np.testing.assert_allclose(
            transformed[:, 1],  # numeric columns first: 0 then 2
            expected.transform(features[:, [2]].astype(np.float64))[:, 0],
            rtol=1e-5,
            atol=1e-6,
        )


def test_onehot_has_a_fixed_width_whatever_the_fold():
    features = mixed_matrix()
    model = ModelParams()
    width = MIXED_KINDS.encoded_width(model)
    # 2 numeric + (3 categories + missing) + 4 categories
    assert width == 2 + 4 + 4
    for train in (np.arange(30), np.arange(30, 60), np.arange(5)):
        assert fold_features(features, train, model, MIXED_KINDS).shape == (60, width)
    for routed in (
        ModelParams(missing_indicator=True),
        ModelParams(categorical_encoding="ordinal"),
        ModelParams(categorical_impute="most_frequent"),
        ModelParams(min_frequency=5),
    ):
        encoded = fold_features(features, np.arange(5), routed, MIXED_KINDS)
        assert encoded.shape == (60, MIXED_KINDS.encoded_width(routed)), routed


def test_a_category_unseen_in_training_is_all_zeros_and_missing_is_its_own_category():
    features = mixed_matrix()
    train = np.flatnonzero(features[:, 3] != 2)  # category 2 of column 3 never in training
    encoded = fold_features(features, train, ModelParams(), MIXED_KINDS)
    block3 = encoded[:, 6:10]  # column 3's four categories
    unseen = features[:, 3] == 2
    assert unseen.any()
    assert np.all(block3[unseen] == 0)
    assert np.all(block3[~unseen].sum(axis=1) == 1)
    assert np.all(block3[:, 2] == 0)
    block1 = encoded[:, 2:6]  # column 1: three categories, then "missing"
    missing = np.isnan(features[:, 1])
    assert np.all(block1[missing, 3] == 1) and np.all(block1[~missing, 3] == 0)
    codes = features[~missing, 1].astype(int)
    assert np.all(block1[np.flatnonzero(~missing), codes] == 1)


def test_most_frequent_imputes_categories_from_training_rows():
    features = mixed_matrix()
    train = np.arange(40)
    model = ModelParams(categorical_impute="most_frequent")
    encoded = fold_features(features, train, model, MIXED_KINDS)
    present = features[train, 1][~np.isnan(features[train, 1])].astype(int)
    mode = np.bincount(present).argmax()
    missing = np.flatnonzero(np.isnan(features[:, 1]))
    assert np.all(encoded[missing, 2 + mode] == 1)
    assert encoded.shape[1] == 2 + 3 + 4


def test_min_frequency_groups_rare_training_categories_in_one_column():
    codes = np.array([[0], [0], [0], [1], [1], [1], [2], [np.nan]])
    encoder = FixedWidthCategories(counts=(4,), min_frequency=3).fit(codes[:7])
    encoded = encoder.transform(np.array([[0], [1], [2], [3], [np.nan]]))
    # columns: 0, 1, 2, 3, rare
    np.testing.assert_array_equal(
        encoded,
        [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
    )
    fraction = FixedWidthCategories(counts=(4,), min_frequency=0.5).fit(codes[:7])
    assert fraction.transform(np.array([[1.0]])).tolist() == [[0, 0, 0, 0, 1]]  # 3 of 7 < 50%


def test_ordinal_keeps_the_codes_and_gives_missing_its_own():
    features = mixed_matrix()
    encoded = fold_features(
        features, np.arange(40), ModelParams(categorical_encoding="ordinal"), MIXED_KINDS
    )
    assert encoded.shape == (60, 4)
    codes = np.where(np.isnan(features[:, 1]), 3, features[:, 1])
    np.testing.assert_array_equal(encoded[:, 2], codes)
    np.testing.assert_array_equal(encoded[:, 3], features[:, 3])


def test_missing_indicators_flag_numeric_columns_with_missing_cells():
    features = mixed_matrix()
    encoded = fold_features(
        features, np.arange(40), ModelParams(missing_indicator=True), MIXED_KINDS
    )
    np.testing.assert_array_equal(encoded[:, 2], np.isnan(features[:, 0]))
    assert encoded.shape[1] == 2 + 1 + 4 + 4


def test_the_model_sees_the_encoded_width_in_its_meta():
    meta = {**PIMA_META, **kinds_meta(MIXED_KINDS)}
    assert model_input_meta(meta, ModelParams())["n_features_in_"] == 10
    ordinal = model_input_meta(meta, ModelParams(categorical_encoding="ordinal"))
    assert ordinal["n_features_in_"] == 4 and "feature_kinds_" not in ordinal
    assert model_input_meta(PIMA_META, ModelParams()) is PIMA_META


@pytest.mark.parametrize(
    "model",
    [
        ModelParams(categorical_encoding="ordinal"),
        ModelParams(categorical_encoding="ordinal", missing_indicator=True),
        ModelParams(),
        ModelParams(missing_indicator=True, min_frequency=5),
        ModelParams(categorical_impute="most_frequent"),
    ],
    ids=["ordinal", "ordinal+indicator", "onehot", "onehot+indicator+rare", "most-frequent"],
)
def test_meta_says_where_each_categorical_column_sits_in_the_models_input(model):
    """An Embedding needs its column's position and input_dim: meta names them for the
    preprocessing the fit runs, and they match the matrix the model is given."""
    named = MIXED_KINDS.model_copy(update={"names": ("age", "color", "income", "grade")})
    meta = model_input_meta({**PIMA_META, **kinds_meta(named)}, model)
    features = mixed_matrix()
    encoded = fold_features(features, np.arange(40), model, named)
    layout = meta["categorical_features_"]
    assert [c["name"] for c in layout] == ["color", "grade"]
    assert [c["categories"] for c in layout] == [3, 4]
    assert [c["input_dim"] for c in layout] == [4, 4 + 1]  # k codes, and k for missing
    assert layout[-1]["columns"][1] == meta["n_features_in_"] == encoded.shape[1]
    for column, source in zip(layout, (1, 3), strict=True):
        start, stop = column["columns"]
        block = encoded[:, start:stop]
        known = ~np.isnan(features[:, source])
        if model.categorical_encoding == "ordinal":
            codes = np.where(known, features[:, source], column["categories"])
            np.testing.assert_array_equal(block[:, 0], codes)
            assert stop - start == 1 and block.max() < column["input_dim"]
        else:  # the block is the column's one-hot: the code's own column where it is known
            assert set(np.unique(block)) <= {0.0, 1.0} and (block.sum(axis=1) <= 1).all()
            own = block[known, : column["categories"]]
            hot = own.sum(axis=1) == 1
            np.testing.assert_array_equal(own[hot].argmax(axis=1), features[known, source][hot])


def test_a_saved_transformer_loads_back_beside_its_model(tmp_path):
    import json

    features = mixed_matrix()
    model = ModelParams(scaling="standard", missing_indicator=True)
    step = fit_preprocessor(features, np.arange(60), model, MIXED_KINDS)
    record = preprocessing_record(step, ["a", "b", "c", "d"])
    assert record["transformer_file"] == "best_preprocessing.joblib"
    assert len(record["encoded_columns"]) == MIXED_KINDS.encoded_width(model)
    save_preprocessor(step, tmp_path / record["transformer_file"])
    (tmp_path / "best_model.json").write_text(json.dumps({"preprocessing": record}))
    prepare = load_preprocessing(tmp_path)
    np.testing.assert_array_equal(
        prepare(features), fold_features(features, np.arange(60), model, MIXED_KINDS)
    )
    mlp = build_model(build_mlp, {"hidden_layers": (4,)}, {"n_features_in_": 8}, seed=3)
    assert with_preprocessing(mlp, record) is mlp
