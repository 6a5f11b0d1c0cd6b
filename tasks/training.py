"""Per-fold training: seeded, self-contained fits that return small result records."""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from prefect import task
from pydantic import BaseModel, ConfigDict
from sklearn.model_selection import KFold, StratifiedKFold

from tasks.config import ModelParams, Task
from tasks.dataset import DatasetHandle, load_arrays
from tasks.files import write_atomically, write_text_atomically
from tasks.metrics import (
    binary_scores,
    loss_on_test_rows,
    multiclass_scores,
    regression_scores,
)
from tasks.model_factory import (
    FoldflowClassifier,
    FoldflowRegressor,
    build_mlp,
    make_estimator,
    task_of_loss,
)
from tasks.preprocess import (
    FoldFeatures,
    fit_preprocessor,
    preprocessing_record,
    with_preprocessing,
)


class Fold(BaseModel):
    """One train/test split, by row index."""

    model_config = ConfigDict(frozen=True)

    index: int
    train: list[int]
    test: list[int]


class FitJob(BaseModel):
    """One (combination, fold) pair to train."""

    model_config = ConfigDict(frozen=True)

    combination: int
    params: dict[str, Any]  # routed names, as shown in cv_results (`model__optimizer`, ...)
    model: ModelParams
    fold: int


class FitResult(BaseModel):
    """What one fit leaves behind: scores and sizes, never the model.

    `scores` holds every metric of the task (tasks.metrics); `accuracy` and `loss` (log loss,
    or MSE for a regression) are kept as fields for the tutorial's two numbers.
    """

    combination: int
    params: dict[str, Any]
    fold: int
    accuracy: float | None
    loss: float | None
    scores: dict[str, float] = {}
    n_train: int
    n_test: int
    fit_seconds: float
    seed: int
    engine: str
    error: str | None = None


def plan_folds(labels: np.ndarray, n_splits: int, seed: int, task: Task = "binary") -> list[Fold]:
    """Shuffled, seeded folds, stratified for classes (KFold for a regression): built
    explicitly, never left to a wrapper's guess."""
    splitter_class = KFold if task == "regression" else StratifiedKFold
    splitter = splitter_class(n_splits=n_splits, shuffle=True, random_state=seed)
    placeholder = np.zeros((len(labels), 1))
    return [
        Fold(index=index, train=train.tolist(), test=test.tolist())
        for index, (train, test) in enumerate(splitter.split(placeholder, labels))
    ]


def fit_seed(run_seed: int, model: ModelParams, fold: int) -> int:
    """Seed of one fit from (run seed, params, fold): independent of worker and order.

    Epochs are left out on purpose: a 50-epoch fit is then exactly the first 50 epochs of the
    150-epoch fit with the same other parameters, so checkpoints can stand in for shorter runs.
    Preprocessing is left out too (`ModelParams.seed_key`): it is compared on equal terms.
    """
    key = json.dumps([run_seed, model.seed_key(), fold], sort_keys=True)
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % (2**31 - 1)


def epoch_order(seed: int, epoch: int, n_rows: int) -> np.ndarray:
    """The order in which one epoch visits the training rows (independent of TF internals)."""
    return np.random.default_rng([seed, epoch]).permutation(n_rows)


def epoch_batches(seed: int, epochs: int, n_rows: int, batch_size: int) -> tf.data.Dataset:
    """Row indices for every batch of every epoch, last partial batch of each epoch included."""
    orders = tf.constant(np.stack([epoch_order(seed, epoch, n_rows) for epoch in range(epochs)]))
    return tf.data.Dataset.from_tensor_slices(orders).flat_map(
        lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
    )


def train_estimator(
    train_x: np.ndarray, train_y: np.ndarray, model: ModelParams, seed: int
) -> FoldflowClassifier | FoldflowRegressor:
    """A seeded scikeras fit whose batches follow `epoch_order`, never TF's op-seed counters.

    Labels are encoded by the estimator itself (text labels too); its `classes_` decode them.
    """
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(seed)
    estimator = make_estimator(model, seed=seed)
    estimator.initialize(train_x, train_y)
    encoded_y = np.asarray(estimator.target_encoder_.transform(train_y), dtype=np.float32)
    x_tensor, y_tensor = tf.constant(train_x), tf.constant(encoded_y)
    batches = epoch_batches(seed, model.epochs, len(train_x), model.batch_size).map(
        lambda rows: (tf.gather(x_tensor, rows), tf.gather(y_tensor, rows))
    )
    steps = math.ceil(len(train_x) / model.batch_size)
    estimator.model_.fit(
        batches, epochs=model.epochs, steps_per_epoch=steps, shuffle=False, verbose=0
    )
    return estimator


def predict_scores(
    estimator: FoldflowClassifier | FoldflowRegressor, test_x: np.ndarray, test_y: np.ndarray
) -> dict[str, float]:
    """Every metric of the estimator's task on the test rows (tasks.metrics)."""
    if isinstance(estimator, FoldflowRegressor):
        return regression_scores(test_y, estimator.predict(test_x))
    probabilities = estimator.predict_proba(test_x)
    truth = np.asarray(estimator.target_encoder_.transform(test_y)).ravel().astype(np.int64)
    if probabilities.shape[1] == 2:
        return binary_scores(truth, probabilities[:, 1])
    return multiclass_scores(truth, probabilities)


def score_fold(
    features: np.ndarray,
    labels: np.ndarray,
    fold: Fold,
    model: ModelParams,
    seed: int,
    fold_features: np.ndarray | None = None,
) -> dict[str, float]:
    """Reference engine: one scikeras fit on the fold's training rows, every metric on its
    test rows. `fold_features` are the features preprocessed for this fold, if any."""
    view = features if fold_features is None else fold_features
    estimator = train_estimator(view[fold.train], labels[fold.train], model, seed)
    scores = predict_scores(estimator, view[fold.test], labels[fold.test])
    keras.backend.clear_session(free_memory=False)
    return scores


def fit_and_score(
    features: np.ndarray,
    labels: np.ndarray,
    fold: Fold,
    model: ModelParams,
    seed: int,
) -> tuple[float, float]:
    """The tutorial's two numbers of one reference fit: (accuracy, log loss)."""
    scores = score_fold(features, labels, fold, model, seed)
    return scores["accuracy"], scores["log_loss"]


def run_fit_jobs(
    dataset: DatasetHandle,
    folds: list[Fold],
    jobs: list[FitJob],
    run_seed: int,
    engine: str = "auto",
) -> list[FitResult]:
    """Train every job, on the fast engine where it applies, else one scikeras fit each.

    Each job's preprocessing is fitted on its fold's training rows only (tasks.preprocess).
    """
    features, labels = load_arrays(dataset)
    fold_by_index = {fold.index: fold for fold in folds}
    zero_columns = dataset.zero_column_indices
    if engine in ("auto", "fast"):
        from tasks.engine import fast_engine_applies, train_stacked

        if fast_engine_applies(jobs):
            return train_stacked(features, labels, fold_by_index, jobs, run_seed, zero_columns)
        if engine == "fast":
            from tasks.errors import ConfigError

            raise ConfigError("engine 'fast' cannot train these models; use 'auto' or 'reference'")
    views = FoldFeatures(features, zero_columns)
    results = []
    for job in jobs:
        fold = fold_by_index[job.fold]
        seed = fit_seed(run_seed, job.model, job.fold)
        started = time.perf_counter()
        view = views.of(fold.index, fold.train, job.model)
        scores = score_fold(features, labels, fold, job.model, seed, fold_features=view)
        results.append(
            FitResult(
                combination=job.combination,
                params=job.params,
                fold=job.fold,
                accuracy=scores.get("accuracy"),
                loss=loss_on_test_rows(task_of_loss(job.model.loss), scores),
                scores=scores,
                n_train=len(fold.train),
                n_test=len(fold.test),
                fit_seconds=time.perf_counter() - started,
                seed=seed,
                engine="reference",
            )
        )
    return results


def code_fingerprint() -> str:
    """Hash of the code and library versions a fit's result depends on (part of its cache key)."""
    digest = hashlib.sha256(f"{tf.__version__}|{keras.__version__}".encode())
    modules = (
        "config.py",
        "dataset.py",
        "model_factory.py",
        "preprocess.py",
        "training.py",
        "engine.py",
        "metrics.py",
    )
    for module in modules:
        path = Path(__file__).with_name(module)
        if path.exists():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def describe_jobs(jobs: list[FitJob]) -> str:
    """A readable task-run name: `adam·uniform·e150·b5·fold2`, or what a group holds."""
    folds = _span(sorted({job.fold for job in jobs}))
    combinations = sorted({job.combination for job in jobs})
    first = jobs[0].model
    if len(combinations) == 1:
        name = f"{first.optimizer}·{first.init}·e{first.epochs}·b{first.batch_size}"
        name += "".join(f"·{step}" for step in _preprocessing_words(first)) + f"·fold{folds}"
        return name if len(jobs) == 1 else f"{name} ({len(jobs)} fits)"
    batch_sizes = "/".join(str(size) for size in sorted({job.model.batch_size for job in jobs}))
    return f"{len(jobs)} fits·combos {_span(combinations)}·b{batch_sizes}·folds {folds}"


def _preprocessing_words(model: ModelParams) -> list[str]:
    """`standard`, `impute0`: only what differs from the tutorial's raw features."""
    words = [model.scaling] if model.scaling != "none" else []
    return words + (["impute0"] if model.impute_zeros else [])


def _span(numbers: list[int]) -> str:
    """`3` or `0-9` for a contiguous run, else `0,2,5`."""
    if len(numbers) == 1:
        return str(numbers[0])
    if numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"{numbers[0]}-{numbers[-1]}"
    return ",".join(map(str, numbers))


@task(name="train_fold", task_run_name="train_fold[{label}]", retries=1, retry_delay_seconds=2)
def train_fold(
    dataset: DatasetHandle,
    folds: list[Fold],
    jobs: list[FitJob],
    run_seed: int,
    engine: str = "auto",
    label: str = "",
    code_version: str = "",
) -> list[FitResult]:
    """Train one (params, fold) pair, or a group the fast engine trains as one program.

    `label` names the task run; `code_version` only feeds the cache key.
    """
    return run_fit_jobs(dataset, folds, jobs, run_seed, engine)


@task(name="split_folds")
def split_folds(dataset: DatasetHandle, n_splits: int, seed: int) -> list[Fold]:
    """StratifiedKFold (KFold for a regression) with shuffle=True, random_state=seed."""
    _, labels = load_arrays(dataset)
    return plan_folds(labels, n_splits, seed, dataset.task)  # type: ignore[arg-type]


def refit_on_all_rows(
    features: np.ndarray, labels: np.ndarray, model: ModelParams, seed: int, engine: str = "auto"
) -> keras.Model:
    """The chosen combination trained on every row, as GridSearchCV's `refit=True` does."""
    from tasks.engine import encode_binary_labels, fast_engine_applies, train_on_all_rows

    probe = FitJob(combination=0, params={}, model=model, fold=-1)
    if engine != "reference" and fast_engine_applies([probe]):
        keras_model = build_mlp(
            {"n_features_in_": features.shape[1]},
            model.hidden_layers,
            model.activation,
            model.init,
            model.optimizer,
            model.loss,
            seed,
        )
        _, encoded = encode_binary_labels(labels)
        keras_model.set_weights(train_on_all_rows(features, encoded, model, seed))
        # The fast engine's optimizer moments stay inside it: give the saved model a built,
        # fresh optimizer so the file loads without a variable-count mismatch.
        keras_model.optimizer.build(keras_model.trainable_variables)
        return keras_model
    return train_estimator(features, labels, model, seed).model_


def refit_with_preprocessing(
    features: np.ndarray,
    labels: np.ndarray,
    model: ModelParams,
    seed: int,
    engine: str = "auto",
    zero_columns: tuple[int, ...] = (),
    feature_columns: list[str] | None = None,
) -> tuple[keras.Model, dict[str, Any], list[Any] | None]:
    """(model, its preprocessing as plain numbers, output index -> class label or None):
    the preprocessing is fitted on every row too, like the model."""
    preprocessor = fit_preprocessor(features, np.arange(len(features)), model, zero_columns)
    if preprocessor is not None:
        features = np.ascontiguousarray(
            preprocessor.transform(np.asarray(features, dtype=np.float64)), dtype=np.float32
        )
    columns = feature_columns or [f"x{index}" for index in range(features.shape[1])]
    keras_model = refit_on_all_rows(features, labels, model, seed, engine)
    # Both engines encode labels in sorted order (scikeras' OrdinalEncoder, np.unique).
    is_regression = task_of_loss(model.loss) == "regression"
    classes = None if is_regression else [_plain(label) for label in np.unique(labels)]
    return keras_model, preprocessing_record(preprocessor, columns), classes


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def save_best_model(
    model: keras.Model, params: ModelParams, summary_fields: dict[str, Any], run_dir: Path
) -> Path:
    """best_model.keras and best_model.json, each written atomically into the run folder."""
    model_path = run_dir / "best_model.keras"
    write_atomically(model_path, lambda temporary: model.save(temporary))
    write_text_atomically(
        run_dir / "best_model.json",
        json.dumps({**summary_fields, "model": params.model_dump(mode="json")}, indent=2) + "\n",
    )
    return model_path


@task(name="refit_best")
def refit_best(
    dataset: DatasetHandle,
    model: ModelParams,
    summary: Any,
    run_seed: int,
    run_dir: Path,
    engine: str = "auto",
) -> Path:
    """Train the best combination on every row and save it beside its params and score."""
    features, labels = load_arrays(dataset)
    seed = fit_seed(run_seed, model, fold=-1)
    fitted, preprocessing, classes = refit_with_preprocessing(
        features,
        labels,
        model,
        seed,
        engine,
        zero_columns=dataset.zero_column_indices,
        feature_columns=dataset.feature_columns,
    )
    fields = {
        "best_params": summary.best_params,
        "best_score": summary.best_score,
        "best_std": summary.best_std,
        "refit_metric": summary.refit_metric,
        "seed": seed,
        "task": dataset.task,
        # best_model.keras takes raw feature rows: its first layers impute and scale as
        # recorded here. Output i means classes[i].
        "preprocessing": preprocessing,
        "classes": classes,
    }
    return save_best_model(with_preprocessing(fitted, preprocessing), model, fields, run_dir)
