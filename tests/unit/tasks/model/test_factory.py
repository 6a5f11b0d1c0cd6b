import numpy as np
import pytest
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.model_selection import GridSearchCV, StratifiedKFold, check_cv

from tasks.config import PROJECT_ROOT, GridSpec
from tasks.errors import ConfigError
from tasks.model.factory import build_mlp, build_model, model_meta, shape_only_data
from tasks.model.sources import resolve_model_reference
from tasks.model.wrappers import FoldflowClassifier, FoldflowRegressor
from tests.support import combinations


def classifier(**options):
    """The tag-fixed scikeras wrapper around foldflow's MLP (scikeras passes `meta`)."""
    return FoldflowClassifier(model=build_mlp, verbose=0, **options)


def test_wrapper_is_a_classifier_for_scikit_learn():
    wrapper = classifier()
    assert is_classifier(wrapper)
    assert is_classifier(clone(wrapper))


def test_grid_search_with_integer_cv_stratifies():
    labels = np.array([0] * 10 + [1] * 5)
    splitter = check_cv(3, labels, classifier=is_classifier(classifier()))
    assert isinstance(splitter, StratifiedKFold)


def test_grid_search_cv_runs_stratified_folds_on_real_data(pima_arrays):
    features, labels = pima_arrays
    search = GridSearchCV(
        classifier(epochs=1, batch_size=64),
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
    meta, arguments = {"n_features_in_": 8}, {"init": "uniform"}
    first = build_model(build_mlp, arguments, meta, seed=11).get_weights()
    second = build_model(build_mlp, arguments, meta, seed=11).get_weights()
    other = build_model(build_mlp, arguments, meta, seed=12).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"optimizer": "adamw2"}, "raised: ValueError: unknown optimizer 'adamw2'"),
        ({"init": "orthogonal_ish"}, "raised: ValueError: unknown init 'orthogonal_ish'"),
        ({"batch_size": 0}, "batch_size: Input should be greater than or equal to 1"),
        ({"epochs": 0}, "epochs: Input should be greater than or equal to 1"),
        ({"hidden_layers": (12, 0)}, "hidden_layers needs 1..100000 units per layer"),
    ],
)
def test_invalid_hyperparameters_are_refused_before_training(overrides, message):
    with pytest.raises(ConfigError, match=message):
        combinations(None, base=overrides)


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("resnet", "model reference 'resnet': expected PATH.py:FUNCTION"),
        ("tasks.model.factory:resnet", "no function 'resnet' in tasks.model.factory"),
    ],
)
def test_unknown_model_fails_loudly(reference, message):
    with pytest.raises(ConfigError, match=message):
        resolve_model_reference(reference, PROJECT_ROOT)


def test_every_grid_combination_is_validated_up_front():
    grid = GridSpec(param_grid={"model__optimizer": ["adam", "nope"], "epochs": [1]}).param_grid
    with pytest.raises(ConfigError, match="unknown optimizer 'nope'"):
        combinations(grid)


def test_empty_grid_is_refused():
    with pytest.raises(ConfigError, match="empty"):
        GridSpec.from_mapping({})


def test_the_task_chooses_the_output_layer_and_the_loss_must_fit_it():
    multiclass_meta = {"n_features_in_": 4, "n_classes_": 3, "task": "multiclass"}
    multiclass = build_mlp(multiclass_meta)
    assert (multiclass.layers[-1].units, multiclass.layers[-1].activation.__name__) == (
        3,
        "softmax",
    )
    assert multiclass.loss == "sparse_categorical_crossentropy"
    regression = build_mlp({"n_features_in_": 4, "task": "regression"}, loss="mae")
    assert (regression.layers[-1].units, regression.layers[-1].activation.__name__) == (
        1,
        "linear",
    )
    with pytest.raises(ValueError, match="loss 'mse' does not fit a binary task"):
        build_mlp({"n_features_in_": 4}, loss="mse")


def test_tagged_wrappers_are_a_regressor_and_a_classifier_for_scikit_learn():
    assert is_regressor(FoldflowRegressor(model=build_mlp))
    assert is_regressor(clone(FoldflowRegressor(model=build_mlp)))
    assert is_classifier(FoldflowClassifier(model=build_mlp))


def test_x_and_y_reach_a_function_as_keras_wrappers_shape_them_without_values():
    meta = model_meta("multiclass", 4, [0, 1, 2])
    X, y = shape_only_data("X", meta), shape_only_data("y", meta)
    assert (X.shape, y.shape) == ((None, 4), (None, 3))  # y one-hot, as Keras' classifier
    assert shape_only_data("y", model_meta("binary", 4, [0, 1])).shape == (None, 2)
    assert shape_only_data("y", model_meta("regression", 4, None)).shape == (None, 1)
    with pytest.raises(ConfigError, match=r"values of X: .*X.shape"):
        np.asarray(X)
    with pytest.raises(ConfigError, match="values of y"):
        y[0]
