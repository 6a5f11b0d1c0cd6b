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
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold

from tasks.config import ModelParams
from tasks.dataset import DatasetHandle, load_arrays
from tasks.files import write_atomically, write_text_atomically
from tasks.model_factory import FoldflowClassifier, build_mlp, make_classifier


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
    """What one fit leaves behind: scores and sizes, never the model."""

    combination: int
    params: dict[str, Any]
    fold: int
    accuracy: float | None
    loss: float | None
    n_train: int
    n_test: int
    fit_seconds: float
    seed: int
    engine: str
    error: str | None = None


def plan_folds(labels: np.ndarray, n_splits: int, seed: int) -> list[Fold]:
    """Stratified, shuffled, seeded folds: built explicitly, never left to a wrapper's guess."""
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    placeholder = np.zeros((len(labels), 1))
    return [
        Fold(index=index, train=train.tolist(), test=test.tolist())
        for index, (train, test) in enumerate(splitter.split(placeholder, labels))
    ]


def fit_seed(run_seed: int, model: ModelParams, fold: int) -> int:
    """Seed of one fit from (run seed, params, fold): independent of worker and order.

    Epochs are left out on purpose: a 50-epoch fit is then exactly the first 50 epochs of the
    150-epoch fit with the same other parameters, so checkpoints can stand in for shorter runs.
    """
    key = json.dumps([run_seed, model.trajectory_key(), fold], sort_keys=True)
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


def binary_log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    return float(log_loss(labels, np.clip(probabilities, 1e-7, 1 - 1e-7), labels=[0, 1]))


def train_classifier(
    train_x: np.ndarray, train_y: np.ndarray, model: ModelParams, seed: int
) -> FoldflowClassifier:
    """A seeded scikeras fit whose batches follow `epoch_order`, never TF's op-seed counters."""
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(seed)
    classifier = make_classifier(model, seed=seed)
    classifier.initialize(train_x, train_y)
    encoded_y = classifier.target_encoder_.transform(train_y).astype(np.float32)
    x_tensor, y_tensor = tf.constant(train_x), tf.constant(encoded_y)
    batches = epoch_batches(seed, model.epochs, len(train_x), model.batch_size).map(
        lambda rows: (tf.gather(x_tensor, rows), tf.gather(y_tensor, rows))
    )
    steps = math.ceil(len(train_x) / model.batch_size)
    classifier.model_.fit(
        batches, epochs=model.epochs, steps_per_epoch=steps, shuffle=False, verbose=0
    )
    return classifier


def fit_and_score(
    features: np.ndarray,
    labels: np.ndarray,
    fold: Fold,
    model: ModelParams,
    seed: int,
) -> tuple[float, float]:
    """Reference engine: one scikeras fit on the fold's training rows; (accuracy, log loss)."""
    train_x, train_y = features[fold.train], labels[fold.train]
    test_x, test_y = features[fold.test], labels[fold.test]
    classifier = train_classifier(train_x, train_y, model, seed)
    probabilities = classifier.predict_proba(test_x)[:, 1]
    accuracy = float(classifier.score(test_x, test_y))
    loss = binary_log_loss(test_y, probabilities)
    keras.backend.clear_session(free_memory=False)
    return accuracy, loss


def run_fit_jobs(
    dataset: DatasetHandle,
    folds: list[Fold],
    jobs: list[FitJob],
    run_seed: int,
    engine: str = "auto",
) -> list[FitResult]:
    """Train every job, on the fast engine where it applies, else one scikeras fit each."""
    features, labels = load_arrays(dataset)
    fold_by_index = {fold.index: fold for fold in folds}
    if engine in ("auto", "fast"):
        from tasks.engine import fast_engine_applies, train_stacked

        if fast_engine_applies(jobs):
            return train_stacked(features, labels, fold_by_index, jobs, run_seed)
        if engine == "fast":
            from tasks.errors import ConfigError

            raise ConfigError("engine 'fast' cannot train these models; use 'auto' or 'reference'")
    results = []
    for job in jobs:
        fold = fold_by_index[job.fold]
        seed = fit_seed(run_seed, job.model, job.fold)
        started = time.perf_counter()
        accuracy, loss = fit_and_score(features, labels, fold, job.model, seed)
        results.append(
            FitResult(
                combination=job.combination,
                params=job.params,
                fold=job.fold,
                accuracy=accuracy,
                loss=loss,
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
    for module in ("config.py", "model_factory.py", "training.py", "engine.py"):
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
        name = f"{first.optimizer}·{first.init}·e{first.epochs}·b{first.batch_size}·fold{folds}"
        return name if len(jobs) == 1 else f"{name} ({len(jobs)} fits)"
    batch_sizes = "/".join(str(size) for size in sorted({job.model.batch_size for job in jobs}))
    return f"{len(jobs)} fits·combos {_span(combinations)}·b{batch_sizes}·folds {folds}"


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
    """StratifiedKFold(n_splits, shuffle=True, random_state=seed) over the dataset's labels."""
    _, labels = load_arrays(dataset)
    return plan_folds(labels, n_splits, seed)


def refit_on_all_rows(
    features: np.ndarray, labels: np.ndarray, model: ModelParams, seed: int, engine: str = "auto"
) -> keras.Model:
    """The chosen combination trained on every row, as GridSearchCV's `refit=True` does."""
    from tasks.engine import fast_engine_applies, train_on_all_rows

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
        keras_model.set_weights(train_on_all_rows(features, labels, model, seed))
        # The fast engine's optimizer moments stay inside it: give the saved model a built,
        # fresh optimizer so the file loads without a variable-count mismatch.
        keras_model.optimizer.build(keras_model.trainable_variables)
        return keras_model
    return train_classifier(features, labels, model, seed).model_


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
    fitted = refit_on_all_rows(features, labels, model, seed, engine)
    fields = {
        "best_params": summary.best_params,
        "best_score": summary.best_score,
        "best_std": summary.best_std,
        "seed": seed,
    }
    return save_best_model(fitted, model, fields, run_dir)
