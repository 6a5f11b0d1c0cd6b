"""A scikit-learn Pipeline ending in a Keras wrapper, as foldflow plans it: its transformers
shipped with every fit, search keys routed to every step, what cannot travel refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scikeras.wrappers import KerasClassifier
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, MinMaxScaler, OneHotEncoder, StandardScaler

import foldflow
from foldflow.estimators import for_data, plan_estimator, routed_candidate
from tasks.config import ModelParams
from tasks.data.user_transformer import (
    decode_transformer,
    raw_rows,
    transformer_digest,
    user_fold_features,
)
from tasks.errors import ConfigError
from tasks.model.routing import route, signature_of


def tiny_model(meta, units=4):
    raise AssertionError("never built in these tests")


def pipeline() -> Pipeline:
    numeric = make_pipeline(SimpleImputer(), StandardScaler())
    pre = ColumnTransformer(
        [("num", numeric, ["age"]), ("cat", OneHotEncoder(handle_unknown="ignore"), ["color"])]
    )
    return Pipeline([("pre", pre), ("clf", KerasClassifier(model=tiny_model, epochs=3, verbose=0))])


FRAME = pd.DataFrame({"age": [1.0, 2.0, np.nan, 4.0], "color": ["a", "b", "a", np.nan]})


def test_a_pipeline_is_planned_as_its_keras_step_with_its_transformers():
    plan = for_data(plan_estimator(pipeline()), FRAME)
    assert plan.kind == "classifier"
    assert plan.base_params["epochs"] == 3
    assert plan.final_step == "clf"
    shipped, as_frame = decode_transformer(plan.base_params["transformer"])
    assert as_frame is True
    assert [name for name, _ in shipped.steps] == ["pre"]


def test_search_keys_reach_the_keras_step_and_the_transformer_steps():
    plan = for_data(plan_estimator(pipeline()), FRAME)
    routed = routed_candidate(
        plan,
        {
            "clf__epochs": 5,
            "clf__model__units": 8,
            "pre__num__simpleimputer__strategy": "median",
        },
    )
    assert routed == {
        "epochs": 5,
        "model__units": 8,
        "transformer__pre__num__simpleimputer__strategy": "median",
    }
    model = route({**plan.base_params, **routed}, signature_of(tiny_model))
    assert model.epochs == 5 and model.arguments["units"] == 8
    assert model.transformer_params == {"pre__num__simpleimputer__strategy": "median"}


def test_a_step_searched_as_a_whole_ships_its_own_transformer():
    plan = for_data(plan_estimator(pipeline()), FRAME)
    routed = routed_candidate(plan, {"pre__num__standardscaler": MinMaxScaler()})
    shipped, _ = decode_transformer(routed["transformer"])
    assert isinstance(shipped.get_params()["pre__num__standardscaler"], MinMaxScaler)


def test_an_unknown_step_key_is_refused_naming_it():
    plan = for_data(plan_estimator(pipeline()), FRAME)
    with pytest.raises(ConfigError, match="pre__nope__strategy"):
        routed_candidate(plan, {"pre__nope__strategy": "mean"})


def test_a_lambda_cannot_travel_and_is_refused_with_the_reason():
    estimator = Pipeline(
        [
            ("f", FunctionTransformer(lambda x: x)),
            ("clf", KerasClassifier(model=tiny_model, verbose=0)),
        ]
    )
    with pytest.raises(ConfigError, match="module-level functions"):
        foldflow.GridSearchCV(estimator, {"clf__epochs": [1]}).fit(FRAME[["age"]], [0, 1, 0, 1])


def test_a_pipeline_must_end_in_a_keras_wrapper_after_transformers():
    with pytest.raises(ConfigError, match="last step 'lr'"):
        plan_estimator(Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression())]))
    with pytest.raises(ConfigError, match="step 'lr'.*not a transformer"):
        plan_estimator(
            Pipeline([("lr", LogisticRegression()), ("clf", KerasClassifier(model=tiny_model))])
        )


def test_the_fits_cache_key_holds_the_transformer_and_its_step_params():
    plan = for_data(plan_estimator(pipeline()), FRAME)
    text = plan.base_params["transformer"]
    mean = ModelParams(transformer=text, transformer_params={"a": "mean"})
    median = ModelParams(transformer=text, transformer_params={"a": "median"})
    assert mean.model_dump(mode="json") != median.model_dump(mode="json")
    assert transformer_digest(text, {"a": "mean"}) != transformer_digest(text, {"a": "median"})
    other = for_data(plan_estimator(pipeline().set_params(pre__remainder="passthrough")), FRAME)
    assert other.base_params["transformer"] != text


def test_the_user_rows_come_back_from_the_data_contracts_codes():
    features = np.array([[1.0, 0.0], [np.nan, 1.0], [3.0, np.nan]], dtype=np.float32)
    rows = raw_rows(features, ["age", "color"], {"color": ["blue", "red"]})
    assert list(rows.columns) == ["age", "color"]
    assert rows["color"].tolist()[:2] == ["blue", "red"] and pd.isna(rows["color"][2])
    assert np.isnan(rows["age"][1])


def test_the_transformer_is_fitted_on_the_training_rows_only():
    plan = for_data(plan_estimator(pipeline()), FRAME)
    text = plan.base_params["transformer"]
    rows = pd.DataFrame({"age": [0.0, 2.0, 100.0, 50.0], "color": ["a", "a", "b", "b"]})
    encoded = user_fold_features(text, {}, rows, np.array([0, 1, 0, 1]), [0, 1])
    # scaled by the first two rows' mean and deviation; 'b' never seen in training: zeros
    np.testing.assert_allclose(encoded[:, 0], [-1.0, 1.0, 99.0, 49.0])
    np.testing.assert_array_equal(encoded[:, 1:], [[1], [1], [0], [0]])
    assert encoded.dtype == np.float32


def test_a_halving_search_names_a_pipelines_keys_as_the_search_flow_routes_them():
    search = foldflow.HalvingGridSearchCV(pipeline(), {}, resource="clf__epochs")
    assert search._flow_key("clf__model__units") == "model__units"
    assert search._flow_key("clf__shuffle") == "fit__shuffle"
    assert search._flow_key("pre__num__simpleimputer__strategy") == (
        "transformer__pre__num__simpleimputer__strategy"
    )
    plan = for_data(plan_estimator(pipeline()), FRAME)
    wrong = foldflow.HalvingGridSearchCV(pipeline(), {"clf__model__units": [4]})
    with pytest.raises(ConfigError, match="resource='clf__epochs'"):
        wrong._scorer_names(plan, "binary")


def test_keras_own_wrapper_as_the_last_step_is_searched_by_its_dicts():
    from keras.wrappers import SKLearnClassifier

    estimator = Pipeline(
        [("scale", StandardScaler()), ("clf", SKLearnClassifier(model=tiny_model))]
    )
    plan = for_data(plan_estimator(estimator), FRAME[["age"]].to_numpy())
    assert plan.keras_kwargs is not None and plan.as_frame is False
    routed = routed_candidate(plan, {"clf__model_kwargs": {"units": 8}, "scale__with_mean": False})
    assert routed == {
        "model__units": 8,
        "epochs": 1,
        "batch_size": 32,
        "transformer__scale__with_mean": False,
    }
