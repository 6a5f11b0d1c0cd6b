"""Refit and save: the chosen combination trained on every row (as GridSearchCV's `refit=True`
does), on the engine its fits ran on, with its preprocessing as the model's first layers;
best_model.keras and best_model.json written atomically into the run folder."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.config import ModelParams
from tasks.data.dataset import DatasetHandle, load_arrays
from tasks.data.preprocess import (
    PREPROCESSING_FILE,
    feature_kinds,
    fit_preprocessor,
    preprocessing_record,
    save_preprocessor,
    with_preprocessing,
)
from tasks.data.user_transformer import (
    decode_transformer,
    fit_user_transformer,
    raw_rows,
    transform_rows,
)
from tasks.files import write_atomically, write_text_atomically
from tasks.model.factory import model_for_fit
from tasks.model.sources import ModelSource
from tasks.records import DenseNetwork, fit_seed, split_validation
from tasks.train.dispatch import dataset_meta, width_meta
from tasks.train.xla_cache import enable as enable_xla_cache

if TYPE_CHECKING:
    import keras


def refit_on_all_rows(
    source: ModelSource,
    features: np.ndarray,
    labels: np.ndarray,
    model: ModelParams,
    network: DenseNetwork | None,
    meta: dict[str, Any],
    seed: int,
    vectorized: str = "",
) -> keras.Model:
    """The chosen combination trained on every row, as GridSearchCV's `refit=True` does, on
    the engine its fits ran on (`vectorized`: the vectorized path's program key)."""
    # TensorFlow loads only where training happens, after the compiled-program cache is on
    # (every refit trains here first: its preprocessing layers and saving come after).
    enable_xla_cache()
    from tasks.train.fast.trainer import train_on_all_rows
    from tasks.train.reference import classes, keras_targets, train_keras_model
    from tasks.train.vectorized.trainer import fit_copy, refit_copy
    from tasks.train.weights_cache import InitialWeights

    if network is None and vectorized:
        return fit_copy(refit_copy(source, features, labels, model, meta, seed, vectorized))
    rows, held = split_validation(
        list(range(len(labels))), model.validation_split, seed, classes(labels, meta)
    )
    if network is None:
        return train_keras_model(
            source, model, meta, features[rows], labels[rows], seed,
            validation=(features[held], labels[held]),
        )  # fmt: skip
    keras_model = model_for_fit(source, model, meta, seed)
    targets = keras_targets(labels[rows], meta)
    validation = (features[held], keras_targets(labels[held], meta))
    initial = InitialWeights(source, meta)
    keras_model.set_weights(
        train_on_all_rows(
            features[rows], targets, model, network, seed, initial, meta["classes_"], validation
        )
    )
    # The fast engine's optimizer moments stay inside it: give the saved model a built,
    # fresh optimizer so the file loads without a variable-count mismatch.
    keras_model.optimizer.build(keras_model.trainable_variables)
    return keras_model


def refit_with_preprocessing(
    source: ModelSource,
    features: np.ndarray,
    labels: np.ndarray,
    model: ModelParams,
    network: DenseNetwork | None,
    meta: dict[str, Any],
    seed: int,
    zero_columns: Any = (),
    feature_columns: list[str] | None = None,
) -> tuple[keras.Model, dict[str, Any]]:
    """(model, its preprocessing as plain numbers): the preprocessing is fitted on every row
    too, like the model. `zero_columns`: FeatureKinds, or the zero-coded columns' positions."""
    model_and_step = refit_with_preprocessor(
        source, features, labels, model, network, meta, seed, zero_columns, feature_columns
    )
    return model_and_step[0], model_and_step[1]


def refit_with_preprocessor(
    source: ModelSource,
    features: np.ndarray,
    labels: np.ndarray,
    model: ModelParams,
    network: DenseNetwork | None,
    meta: dict[str, Any],
    seed: int,
    zero_columns: Any = (),
    feature_columns: list[str] | None = None,
    vectorized: str = "",
) -> tuple[keras.Model, dict[str, Any], Any]:
    """(model, its preprocessing's record, the fitted step itself), all fitted on every row."""
    preprocessor = fit_preprocessor(features, np.arange(len(features)), model, zero_columns)
    raw_width = features.shape[1]
    if preprocessor is not None:
        features = np.ascontiguousarray(
            preprocessor.transform(np.asarray(features, dtype=np.float64)), dtype=np.float32
        )
    columns = feature_columns or [f"x{index}" for index in range(raw_width)]
    keras_model = refit_on_all_rows(
        source, features, labels, model, network, meta, seed, vectorized
    )
    return keras_model, preprocessing_record(preprocessor, columns), preprocessor


def refit_with_user_transformer(
    source: ModelSource,
    features: np.ndarray,
    labels: np.ndarray,
    model: ModelParams,
    meta: dict[str, Any],
    seed: int,
    dataset: DatasetHandle,
    network: DenseNetwork | None = None,
) -> tuple[keras.Model, dict[str, Any], Any, DenseNetwork | None]:
    """refit_with_preprocessor for a Python Pipeline: its own transformers (shipped in
    `model.transformer`) fitted on every row, the model trained on their output, the fitted
    transformers saved beside it; the network it trained on the fast engine, else None.

    On the fast engine, as its fits, when `network` (the one they were planned for) takes the
    width every row gives; else (another width, a graph) one Keras fit, the reference engine."""
    assert model.transformer is not None
    columns = dataset.feature_columns
    rows = raw_rows(features, columns, dataset.categories)
    every_row = np.arange(len(labels))
    transformer = fit_user_transformer(
        model.transformer, model.transformer_params, rows, labels, every_row
    )
    encoded = transform_rows(model.transformer, transformer, rows)
    meta = width_meta(meta, model, encoded)
    if network is not None and (network.graph or network.sizes[0] != encoded.shape[1]):
        network = None
    keras_model = refit_on_all_rows(source, encoded, labels, model, network, meta, seed)
    record = {
        "feature_columns": columns,
        "transformer_file": PREPROCESSING_FILE,
        "user": True,
        # What load_preprocessing needs to give it the rows as the user gave them.
        "categories": dataset.categories,
        "as_frame": decode_transformer(model.transformer)[1],
    }
    return keras_model, record, transformer, network


def save_best_model(
    model: keras.Model,
    params: ModelParams,
    summary_fields: dict[str, Any],
    run_dir: Path,
    preprocessor: Any = None,
) -> Path:
    """best_model.keras and best_model.json, each written atomically into the run folder, and
    the fitted ColumnTransformer as best_preprocessing.joblib when the model takes its output
    (tasks.data.preprocess.load_preprocessing reads it back)."""
    model_path = run_dir / "best_model.keras"
    write_atomically(model_path, lambda temporary: model.save(temporary))
    if summary_fields.get("preprocessing", {}).get("transformer_file") == PREPROCESSING_FILE:
        write_atomically(
            run_dir / PREPROCESSING_FILE,
            lambda temporary: save_preprocessor(preprocessor, temporary),
        )
    write_text_atomically(
        run_dir / "best_model.json",
        json.dumps({**summary_fields, "model": params.model_dump(mode="json")}, indent=2) + "\n",
    )
    return model_path


@dataclass
class RefitModel:
    """A combination trained on every row, not saved yet: a refit started before the last
    fits end is saved only if its combination is still the best once they have."""

    model: keras.Model  # with its preprocessing as its first layers
    params: ModelParams
    source: ModelSource
    fields: dict[str, Any]  # best_model.json's fields that do not depend on the search
    seconds: float
    # The fitted ColumnTransformer when the model takes its output (categories, missing cells).
    preprocessor: Any = None


@task(name="refit_best", cache_policy=NO_CACHE)
def refit_best(
    dataset: DatasetHandle,
    source: ModelSource,
    model: ModelParams,
    network: DenseNetwork | None,
    run_seed: int,
    vectorized: str = "",
) -> RefitModel:
    """Train a combination on every row, with its preprocessing (save_refit writes it), on the
    engine its fits ran on (`vectorized`: the vectorized path's program key, else "")."""
    started = time.perf_counter()
    features, labels = load_arrays(dataset)
    meta = dataset_meta(dataset)
    seed = fit_seed(run_seed, model, fold=-1)
    if model.transformer is not None:
        fitted, preprocessing, preprocessor, network = refit_with_user_transformer(
            source, features, labels, model, meta, seed, dataset, network
        )
        vectorized = ""
    else:
        fitted, preprocessing, preprocessor = refit_with_preprocessor(
            source,
            features,
            labels,
            model,
            network,
            meta,
            seed,
            zero_columns=feature_kinds(dataset, features),
            feature_columns=dataset.feature_columns,
            vectorized=vectorized,
        )
    fields = {
        "seed": seed,
        "engine": "fast" if network is not None else "vectorized" if vectorized else "reference",
        "task": dataset.task,
        # best_model.keras takes raw feature rows: its first layers impute and scale as
        # recorded here; or, with a `transformer_file`, it takes that transformer's output
        # (tasks.data.preprocess.load_preprocessing). Output i means classes[i].
        "preprocessing": preprocessing,
        "classes": meta["classes_"],
        # A binary task's positive class (encoded 1: what F1, precision and ROC AUC score).
        "positive_label": dataset.positive_label,
    }
    return RefitModel(
        model=with_preprocessing(fitted, preprocessing),
        params=model,
        source=source,
        fields=fields,
        seconds=time.perf_counter() - started,
        preprocessor=preprocessor,
    )


@task(name="save_best_model", cache_policy=NO_CACHE)
def save_refit(refit: RefitModel, summary: Any, run_dir: Path) -> Path:
    """best_model.keras and best_model.json of the search's best combination."""
    fields = {
        "model_function": refit.source.reference,
        "model_sha256": refit.source.sha256,
        "best_params": summary.best_params,
        "best_score": summary.best_score,
        "best_std": summary.best_std,
        "refit_metric": summary.refit_metric,
        **refit.fields,
    }
    return save_best_model(refit.model, refit.params, fields, run_dir, refit.preprocessor)
