"""Routing as scikeras does it and as the tutorial writes it."""

import pytest

from tasks.config import GridSpec
from tasks.errors import ConfigError
from tasks.model.routing import route, signature_of
from tasks.model.sources import load_model_function
from tasks.records import fit_seed
from tests.support import TUTORIAL, combinations, params

SIGNATURE = signature_of(load_model_function(TUTORIAL))


def test_the_tutorials_own_grid_routes_verbatim():
    """param_grid = dict(optimizer=..., epochs=..., batch_size=..., init=...)"""
    model = route(
        {"optimizer": "adam", "epochs": 50, "batch_size": 5, "init": "uniform"}, SIGNATURE
    )
    assert model.arguments == {"optimizer": "adam", "init": "uniform"}
    assert (model.epochs, model.batch_size) == (50, 5)


def test_bare_and_prefixed_keys_bind_the_same_arguments_and_seed():
    bare = route({"optimizer": "adam"}, SIGNATURE)
    prefixed = route({"model__optimizer": "adam", "model__init": "glorot_uniform"}, SIGNATURE)
    assert bare == prefixed  # init bound with the function's default either way
    assert fit_seed(7, bare, 2) == fit_seed(7, prefixed, 2)
    assert fit_seed(7, bare, 2) != fit_seed(7, route({"optimizer": "sgd"}, SIGNATURE), 2)


def test_seed_ignores_epochs_batch_fit_options_and_preprocessing():
    base = route({"optimizer": "adam"}, SIGNATURE)
    other = route(
        {
            "optimizer": "adam",
            "epochs": 3,
            "batch_size": 7,
            "fit__shuffle": False,
            "preprocess__scaling": "standard",
        },
        SIGNATURE,
    )
    assert fit_seed(7, base, 0) == fit_seed(7, other, 0)


def test_fit_and_preprocess_keys():
    model = route(
        {
            "fit__class_weight": {0: 1.0, 1: 2.0},
            "fit__shuffle": False,
            "fit__validation_split": 0.2,
            "preprocess__scaling": "minmax",
        },
        SIGNATURE,
    )
    assert model.class_weight == {"0": 1.0, "1": 2.0}
    assert (model.shuffle, model.validation_split, model.scaling) == (False, 0.2, "minmax")


def test_an_unknown_key_lists_the_functions_parameters():
    with pytest.raises(ConfigError) as error:
        route({"learning_rate": 0.1}, SIGNATURE)
    message = str(error.value)
    assert "'learning_rate' is neither a parameter of create_model(optimizer, init)" in message
    assert "epochs, batch_size, fit__shuffle" in message


def test_a_misplaced_fit_option_is_pointed_at():
    with pytest.raises(ConfigError, match="did you mean 'fit__shuffle'"):
        route({"shuffle": False}, SIGNATURE)


def test_meta_parameters_are_passed_not_searched():
    def create(meta, n_features_in_, units=3):
        return None

    signature = signature_of(create)
    assert signature.meta_parameters == ("meta", "n_features_in_")
    with pytest.raises(ConfigError, match="passed by foldflow from the data"):
        route({"model__meta": {}}, signature)


def test_two_spellings_of_one_argument_are_refused():
    with pytest.raises(ConfigError, match="'optimizer' and 'model__optimizer' both set"):
        route({"optimizer": "adam", "model__optimizer": "sgd"}, SIGNATURE)


def test_kwargs_functions_take_any_prefixed_key_but_not_unknown_bare_ones():
    def create(units=3, **options):
        return None

    signature = signature_of(create)
    assert route({"model__dropout": 0.5}, signature).arguments == {"units": 3, "dropout": 0.5}
    with pytest.raises(ConfigError, match="neither a parameter"):
        route({"dropout": 0.5}, signature)


def test_out_of_range_training_values_name_the_key():
    with pytest.raises(ConfigError, match=r"epochs: .*greater than or equal to 1.*received 0"):
        route({"epochs": 0}, SIGNATURE)


def test_grid_errors_name_the_function_and_the_combination():
    with pytest.raises(
        ConfigError, match=r"create_model \(.*tutorial\.py\): grid key 'units' is neither"
    ):
        combinations({"optimizer": ["adam"], "units": [3]}, TUTORIAL)


def test_grid_expansion_keeps_scikit_learns_order():
    grid = GridSpec(param_grid={"optimizer": ["rmsprop", "adam"], "epochs": [1, 2]})
    assert grid.expand() == [
        {"epochs": 1, "optimizer": "rmsprop"},
        {"epochs": 1, "optimizer": "adam"},
        {"epochs": 2, "optimizer": "rmsprop"},
        {"epochs": 2, "optimizer": "adam"},
    ]
    assert params(TUTORIAL, optimizer="adam").arguments["init"] == "glorot_uniform"


def test_a_grid_key_wins_over_a_fixed_value_however_either_is_spelled():
    [checked] = combinations({"model__optimizer": ["adam"]}, TUTORIAL, base={"optimizer": "sgd"})
    assert checked.model.arguments["optimizer"] == "adam"
    assert checked.routed == {"model__optimizer": "adam"}


def test_early_stopping_keys_route_with_a_default_validation_part():
    model = route({"epochs": 9, "early_stopping__patience": 3}, SIGNATURE)
    assert (model.patience, model.monitor, model.min_delta) == (3, "val_loss", 0.0)
    assert model.early_stopping and model.validation_split == 0.2  # the default part
    given = route({"early_stopping__patience": 3, "fit__validation_split": 0.1}, SIGNATURE)
    assert given.validation_split == 0.1
    on_loss = route({"early_stopping__patience": 3, "early_stopping__monitor": "loss"}, SIGNATURE)
    assert on_loss.validation_split == 0.0
    assert not route({"epochs": 9}, SIGNATURE).early_stopping
    assert fit_seed(7, model, 0) == fit_seed(7, route({"epochs": 9}, SIGNATURE), 0)
    with pytest.raises(ConfigError, match="no validation part: set fit__validation_split"):
        route({"early_stopping__patience": 3, "fit__validation_split": 0.0}, SIGNATURE)
    with pytest.raises(ConfigError, match="monitor"):
        route({"early_stopping__patience": 3, "early_stopping__monitor": "val_auc"}, SIGNATURE)
