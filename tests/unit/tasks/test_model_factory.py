import numpy as np
import pytest
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.model_selection import GridSearchCV, StratifiedKFold, check_cv

from tasks.config import GridSpec, ModelParams
from tasks.errors import ConfigError
from tasks.model_factory import (
    build_mlp,
    builder_for,
    make_classifier,
    make_estimator,
    model_combinations,
)


def test_wrapper_is_a_classifier_for_scikit_learn():
    classifier = make_classifier(ModelParams())
    assert is_classifier(classifier)
    assert is_classifier(clone(classifier))


def test_grid_search_with_integer_cv_stratifies():
    labels = np.array([0] * 10 + [1] * 5)
    splitter = check_cv(3, labels, classifier=is_classifier(make_classifier(ModelParams())))
    assert isinstance(splitter, StratifiedKFold)


def test_grid_search_cv_runs_stratified_folds_on_real_data(pima_arrays):
    features, labels = pima_arrays
    search = GridSearchCV(
        make_classifier(ModelParams(epochs=1, batch_size=64)),
        {"model__optimizer": ["adam"]},
        cv=3,
        error_score="raise",
    )
    search.fit(features[:150], labels[:150])
    assert search.best_score_ > 0
    assert isinstance(
        check_cv(3, labels, classifier=is_classifier(search.estimator)), StratifiedKFold
    )


def test_default_builder_reproduces_the_tutorial_mlp():
    model = build_mlp({"n_features_in_": 8})
    assert [layer.units for layer in model.layers] == [12, 8, 1]
    assert [layer.activation.__name__ for layer in model.layers] == ["relu", "relu", "sigmoid"]
    assert model.count_params() == 8 * 12 + 12 + 12 * 8 + 8 + 8 + 1


def test_seeded_builder_gives_identical_initial_weights():
    first = build_mlp({"n_features_in_": 8}, init="uniform", seed=11).get_weights()
    second = build_mlp({"n_features_in_": 8}, init="uniform", seed=11).get_weights()
    other = build_mlp({"n_features_in_": 8}, init="uniform", seed=12).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"optimizer": "adamw2"}, "unknown optimizer 'adamw2'"),
        ({"init": "orthogonal_ish"}, "unknown initializer 'orthogonal_ish'"),
        ({"batch_size": 0}, "batch_size"),
        ({"epochs": 0}, "epochs"),
        ({"hidden_layers": (12, 0)}, "hidden layer"),
    ],
)
def test_invalid_hyperparameters_are_refused_before_training(overrides, message):
    with pytest.raises(ValueError, match=message):
        ModelParams(**overrides)


def test_unknown_builder_fails_loudly():
    with pytest.raises(ConfigError, match="unknown model builder 'resnet'"):
        builder_for("resnet")


def test_every_grid_combination_is_validated_up_front():
    grid = GridSpec(param_grid={"model__optimizer": ["adam", "nope"], "epochs": [1]})
    with pytest.raises(ConfigError, match="unknown optimizer 'nope'"):
        model_combinations(ModelParams(), grid)


def test_empty_grid_is_refused():
    with pytest.raises(ConfigError, match="empty"):
        GridSpec.from_mapping({})


def test_the_loss_chooses_the_output_layer_and_the_wrapper():
    meta = {"n_features_in_": 4, "n_classes_": 3}
    multiclass = build_mlp(meta, loss="sparse_categorical_crossentropy").layers[-1]
    assert (multiclass.units, multiclass.activation.__name__) == (3, "softmax")
    regression = build_mlp(meta, loss="mse").layers[-1]
    assert (regression.units, regression.activation.__name__) == (1, "linear")
    assert is_regressor(make_estimator(ModelParams(loss="mse")))
    assert is_classifier(make_estimator(ModelParams(loss="sparse_categorical_crossentropy")))


def test_imputing_zeros_needs_zero_coded_columns():
    with pytest.raises(ConfigError, match="impute_zeros needs impossible_zero_columns"):
        model_combinations(ModelParams(impute_zeros=True), None, "binary", zero_columns=())
    assert model_combinations(ModelParams(impute_zeros=True), None, "binary", ("glucose",))
