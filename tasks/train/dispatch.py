"""Per-fold training: seeded, self-contained fits that return small result records.

The reference engine lives here: one Keras fit per (combination, fold) of the model the
user's function builds, with batches in foldflow's own order (`epoch_order`) so it follows
the same trajectory as the fast engine (tasks.train.fast) whenever both apply.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from prefect import task
from prefect.cache_policies import NO_CACHE
from sklearn.model_selection import KFold, StratifiedKFold

from tasks.config import ExplicitSplit, ModelParams, Task
from tasks.data.dataset import DatasetHandle, load_arrays
from tasks.data.preprocess import (
    FoldFeatures,
    fit_preprocessor,
    preprocessing_record,
    with_preprocessing,
)
from tasks.errors import ConfigError
from tasks.files import write_atomically, write_text_atomically
from tasks.metrics import (
    binary_scores,
    loss_on_test_rows,
    multiclass_scores,
    regression_scores,
)
from tasks.model.factory import classes_of, model_for_fit, model_meta
from tasks.model.initial_weights import RECIPES, build_key, recipe_of
from tasks.model.sources import ModelSource
from tasks.records import (
    Checkpoint,
    DenseNetwork,
    FitJob,
    FitResult,
    Fold,
    LearningCurve,
    epoch_order,
    fit_seed,
    split_validation,
)
from tasks.train.fast.programs import trace_programs
from tasks.train.fast.trainer import train_on_all_rows, train_stacked
from tasks.train.xla_cache import enable as enable_xla_cache

# Before this process runs any TensorFlow op: the compiled-program cache (tasks.train.xla_cache).
enable_xla_cache()


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


def epoch_batches(
    seed: int, epochs: int, n_rows: int, batch_size: int, shuffle: bool = True, first_epoch: int = 0
) -> tf.data.Dataset:
    """Row indices for every batch of epochs [first_epoch, epochs), last partial batch of each
    epoch included."""
    orders = tf.constant(
        np.stack(
            [epoch_order(seed, epoch, n_rows, shuffle) for epoch in range(first_epoch, epochs)]
        )
    )
    return tf.data.Dataset.from_tensor_slices(orders).flat_map(
        lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
    )


def dataset_meta(dataset: DatasetHandle) -> dict[str, Any]:
    """`meta` for the model function, from the data every worker reads the same way."""
    features, labels = load_arrays(dataset)
    return model_meta(dataset.task, features.shape[1], classes_of(labels, dataset.task))


def encode_targets(labels: np.ndarray, meta: dict[str, Any], loss: Any = None) -> np.ndarray:
    """Targets as the model is trained on them: class index (sorted labels, as scikeras'
    encoder does), one-hot for a categorical (non-sparse) cross-entropy, numbers otherwise."""
    if meta["task"] == "regression":
        return np.asarray(labels, dtype=np.float32)
    index = {label: position for position, label in enumerate(meta["classes_"])}
    encoded = np.array([index[_plain(label)] for label in labels], dtype=np.int64)
    if meta["task"] == "multiclass" and _is_one_hot_loss(loss):
        return np.eye(meta["n_classes_"], dtype=np.float32)[encoded]
    return encoded.astype(np.float32) if meta["task"] == "binary" else encoded


def _is_one_hot_loss(loss: Any) -> bool:
    name = (
        loss
        if isinstance(loss, str)
        else getattr(loss, "name", None) or getattr(loss, "__name__", "")
    )
    return "categorical" in str(name).lower() and "sparse" not in str(name).lower()


def keras_class_weight(model: ModelParams, meta: dict[str, Any]) -> dict[int, float] | None:
    """`fit__class_weight` by label text -> Keras' {class index: weight} (others weigh 1)."""
    if not model.class_weight:
        return None
    return {
        position: float(model.class_weight.get(str(label), 1.0))
        for position, label in enumerate(meta["classes_"])
    }


def train_keras_model(
    source: ModelSource,
    model: ModelParams,
    meta: dict[str, Any],
    train_x: np.ndarray,
    train_labels: np.ndarray,
    seed: int,
    start: Checkpoint | None = None,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
) -> keras.Model:
    """Reference engine: the function's model, seeded, fitted with batches in foldflow's order
    (`epoch_order`), never TF's op-seed counters; from `start`'s state and epoch if given."""
    return fit_keras_model(source, model, meta, train_x, train_labels, seed, start, validation)[0]


def fit_keras_model(
    source: ModelSource,
    model: ModelParams,
    meta: dict[str, Any],
    train_x: np.ndarray,
    train_labels: np.ndarray,
    seed: int,
    start: Checkpoint | None = None,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[keras.Model, LearningCurve]:
    """train_keras_model, and the fit's learning curve: Keras' History `loss` and, with
    `validation` (features, labels), its `val_loss` and ValidationAccuracy's values."""
    keras_model = model_for_fit(source, model, meta, seed)
    first_epoch = 0
    if start is not None:
        restore_state(keras_model, start)
        first_epoch = start.epochs
    targets = encode_targets(train_labels, meta, keras_model.loss)
    x_tensor, y_tensor = tf.constant(train_x), tf.constant(targets)
    batches = epoch_batches(
        seed, model.epochs, len(train_x), model.batch_size, model.shuffle, first_epoch
    ).map(lambda rows: (tf.gather(x_tensor, rows), tf.gather(y_tensor, rows)))
    steps = math.ceil(len(train_x) / model.batch_size)
    callbacks, validation_data, accuracy = [], None, None
    if validation is not None and len(validation[0]):
        val_x, val_labels = validation
        validation_data = (val_x, encode_targets(val_labels, meta, keras_model.loss))
        accuracy = ValidationAccuracy(val_x, val_labels, meta)
        callbacks.append(accuracy)
    if model.early_stopping:  # after ValidationAccuracy, which logs `val_accuracy` for it
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=model.monitor,
                min_delta=model.min_delta,
                patience=model.patience,
                mode="max" if model.monitor.endswith("accuracy") else "min",
                restore_best_weights=model.restore_best_weights,
            )
        )
    history = keras_model.fit(
        batches,
        validation_data=validation_data,
        callbacks=callbacks,
        initial_epoch=first_epoch,
        epochs=model.epochs,
        steps_per_epoch=steps,
        shuffle=False,
        verbose=0,
        class_weight=keras_class_weight(model, meta),
    )
    curve = LearningCurve(
        first_epoch=first_epoch,
        train_loss=[float(v) for v in history.history.get("loss", [])],
        val_loss=[float(v) for v in history.history.get("val_loss", [])],
        val_accuracy=[] if accuracy is None else accuracy.values,
    )
    return keras_model, curve.after(None if start is None else start.curve)


class ValidationAccuracy(keras.callbacks.Callback):
    """The validation rows' accuracy after every epoch, as the fast engine measures it
    (whatever metrics the model function compiled); None for a regression."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, meta: dict[str, Any]):
        super().__init__()
        self.features, self.meta = tf.constant(features), meta
        self.truth = None if meta["task"] == "regression" else encode_targets(labels, meta)
        self.values: list[float | None] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.truth is None:
            self.values.append(None)
            return
        outputs = np.asarray(self.model(self.features, training=False))
        if self.meta["task"] == "binary":
            predicted = (outputs.ravel() > 0.5).astype(np.int64)
        else:
            predicted = outputs.argmax(axis=1)
        self.values.append(float(np.mean(predicted == self.truth.astype(np.int64))))
        if logs is not None:  # what EarlyStopping(monitor="val_accuracy") reads
            logs["val_accuracy"] = self.values[-1]


def keras_state(
    keras_model: keras.Model, epochs: int, curve: LearningCurve | None = None
) -> Checkpoint:
    """Every model variable (the dropout seed state too) and optimizer variable, as numpy."""
    arrays = {f"model_{i}": np.array(v.numpy()) for i, v in enumerate(keras_model.variables)}
    optimizer = keras_model.optimizer.variables if keras_model.optimizer.built else []
    arrays |= {f"optimizer_{i}": np.array(v.numpy()) for i, v in enumerate(optimizer)}
    arrays |= {} if curve is None else curve.arrays()
    return Checkpoint(engine="reference", epochs=epochs, arrays=arrays)


def restore_state(keras_model: keras.Model, checkpoint: Checkpoint) -> None:
    """Put a reference checkpoint's variables back into a freshly built model and optimizer."""
    if checkpoint.engine != "reference":
        raise ValueError(
            f"a {checkpoint.engine!r} checkpoint cannot continue on the reference engine"
        )
    keras_model.optimizer.build(keras_model.trainable_variables)
    for prefix, variables in (
        ("model", keras_model.variables),
        ("optimizer", keras_model.optimizer.variables),
    ):
        arrays = checkpoint.numbered(prefix)
        if len(arrays) != len(variables):
            raise ValueError(
                f"checkpoint holds {len(arrays)} {prefix} variables, the model {len(variables)}"
            )
        for variable, array in zip(variables, arrays, strict=True):
            variable.assign(array)


def predict_scores(
    keras_model: keras.Model, test_x: np.ndarray, test_labels: np.ndarray, meta: dict[str, Any]
) -> dict[str, float]:
    """Every metric of the task on the test rows (tasks.metrics)."""
    # float32, as Keras returns them and the fast engine scores them: clipping a saturated
    # probability at 1 - eps rounds differently in float64.
    outputs = np.asarray(keras_model.predict(test_x, verbose=0))
    if meta["task"] == "regression":
        return regression_scores(np.asarray(test_labels, dtype=np.float64), outputs.ravel())
    truth = encode_targets(test_labels, meta).astype(np.int64)
    if meta["task"] == "binary":
        return binary_scores(truth, outputs.ravel())
    return multiclass_scores(truth, outputs)


def score_fold(
    source: ModelSource,
    features: np.ndarray,
    labels: np.ndarray,
    fold: Fold,
    model: ModelParams,
    meta: dict[str, Any],
    seed: int,
) -> dict[str, float]:
    """Reference engine: one fit on the fold's training rows (less any validation rows),
    every metric on its test rows. `features` are already preprocessed for this fold."""
    return score_fold_from(source, features, labels, fold, model, meta, seed)[0]


def score_fold_from(
    source: ModelSource,
    features: np.ndarray,
    labels: np.ndarray,
    fold: Fold,
    model: ModelParams,
    meta: dict[str, Any],
    seed: int,
    start: Checkpoint | None = None,
) -> tuple[dict[str, float], Checkpoint]:
    """score_fold, continued from `start` if given, and the fit's state at its last epoch
    (its learning curve so far included: `Checkpoint.curve`)."""
    scores, _, state = fit_and_score(source, features, labels, fold, model, meta, seed, start)
    return scores, state


def fit_and_score(
    source: ModelSource,
    features: np.ndarray,
    labels: np.ndarray,
    fold: Fold,
    model: ModelParams,
    meta: dict[str, Any],
    seed: int,
    start: Checkpoint | None = None,
) -> tuple[dict[str, float], dict[str, float], Checkpoint]:
    """score_fold_from, and every metric on the rows the model trained on (the fold's
    training rows less any validation rows): (test scores, train scores, state)."""
    train, held = split_validation(fold.train, model.validation_split, seed, classes(labels, meta))
    keras_model, curve = fit_keras_model(
        source, model, meta, features[train], labels[train], seed, start,
        (features[held], labels[held]),
    )  # fmt: skip
    scores = predict_scores(keras_model, features[fold.test], labels[fold.test], meta)
    train_scores = predict_scores(keras_model, features[train], labels[train], meta)
    state = keras_state(keras_model, model.epochs, curve)
    del keras_model
    return scores, train_scores, state


def run_fit_jobs(
    dataset: DatasetHandle,
    folds: list[Fold],
    jobs: list[FitJob],
    run_seed: int,
    source: ModelSource,
) -> list[FitResult]:
    """Train every job: those with an inspected network on the fast engine (together), the
    others one Keras fit each. Each job's preprocessing is fitted on its fold's training rows
    only (tasks.data.preprocess)."""
    features, labels = load_arrays(dataset)
    fold_by_index = {fold.index: fold for fold in folds}
    zero_columns = dataset.zero_column_indices
    meta = dataset_meta(dataset)
    fast_jobs = [job for job in jobs if job.network is not None]
    results: dict[tuple[int, int], FitResult] = {}
    if fast_jobs:
        initial = InitialWeights(source, meta)
        for result in train_stacked(
            features, labels, fold_by_index, fast_jobs, run_seed, initial, zero_columns
        ):
            results[(result.combination, result.fold)] = result
    views = FoldFeatures(features, zero_columns)
    for job in jobs:
        if job.network is not None:
            continue
        fold = fold_by_index[job.fold]
        seed = fit_seed(run_seed, job.model, job.fold)
        started = time.perf_counter()
        view = views.of(fold.index, fold.train, job.model)
        scores, train_scores, state = fit_and_score(
            source, view, labels, fold, job.model, meta, seed, job.start
        )
        results[(job.combination, job.fold)] = FitResult(
            combination=job.combination,
            params=job.params,
            fold=job.fold,
            accuracy=scores.get("accuracy"),
            loss=loss_on_test_rows(meta["task"], scores),
            scores=scores,
            train_scores=train_scores,
            n_train=len(
                split_validation(
                    fold.train, job.model.validation_split, seed, classes(labels, meta)
                )[0]
            ),
            n_test=len(fold.test),
            fit_seconds=time.perf_counter() - started,
            seed=seed,
            engine="reference",
            start_epoch=job.start_epoch,
            curve=state.curve,
            checkpoint=state,
            stopped_epoch=len(state.curve.train_loss) if job.model.early_stopping else None,
        )
    return [results[(job.combination, job.fold)] for job in jobs]


def prepare_programs(
    dataset: DatasetHandle, folds: list[Fold], groups: list[list[FitJob]], run_seed: int
) -> int:
    """Trace the fast engine's programs for these task groups in this process, in order
    (tasks.train.fast.programs.trace_programs says why); the number of distinct programs."""
    features, labels = load_arrays(dataset)
    views = FoldFeatures(features, dataset.zero_column_indices)
    fold_by_index = {fold.index: fold for fold in folds}
    return len(trace_programs(fold_by_index, groups, run_seed, labels, views))


class InitialWeights:
    """A fit's initial weights, as the function builds them under the fit's seed: the fast
    engine starts exactly where the reference engine starts, whatever the initializers."""

    def __init__(self, source: ModelSource, meta: dict[str, Any]):
        self.source, self.meta = source, meta

    def __call__(self, model: ModelParams, seed: int) -> list[np.ndarray]:
        key = (*build_key(self.source, self.meta, model), seed)
        weights = BUILT_WEIGHTS.get(key)
        if weights is None:
            weights = self._weights(model, seed, key[:2])
            BUILT_WEIGHTS.put(key, weights)
        return [array.copy() for array in weights]

    def _weights(self, model: ModelParams, seed: int, key: tuple[str, str]) -> list[np.ndarray]:
        """From the arguments' recipe (tasks.model.initial_weights) when there is one, else built;
        a first build of the arguments records their recipe for the other seeds."""
        recorded, recipe = RECIPES.lookup(key)
        if recipe is not None:
            return recipe.weights(seed)
        log: list | None = None if recorded else []
        keras_model = model_for_fit(self.source, model, self.meta, seed, log)
        weights = keras_model.get_weights()
        if log is not None:
            RECIPES.record(key, recipe_of(keras_model, log, seed))
        del keras_model
        return weights


class WeightsCache:
    """Initial weights made in this process, least recently used dropped beyond `max_bytes`:
    fits whose arguments and seed agree (they differ in batch size, epochs, fit options or
    preprocessing only) share them, also across the task runs of a grid."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple, list[np.ndarray]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple) -> list[np.ndarray] | None:
        with self._lock:
            weights = self._entries.get(key)
            if weights is not None:
                self._entries.move_to_end(key)
            return weights

    def put(self, key: tuple, weights: list[np.ndarray]) -> None:
        size = sum(array.nbytes for array in weights)
        with self._lock:
            if key in self._entries or size > self.max_bytes:
                return
            self._entries[key] = weights
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= sum(array.nbytes for array in dropped)


BUILT_WEIGHTS = WeightsCache(max_bytes=256 * 2**20)


def describe_jobs(jobs: list[FitJob]) -> str:
    """A readable task-run name: `adam | uniform | e150 | b5 | fold2`, or what a group holds.

    ASCII separators: the UI's run graph draws names in a font that drops `·`."""
    folds = _span(sorted({job.fold for job in jobs}))
    combinations = sorted({job.combination for job in jobs})
    first = jobs[0]
    if len(combinations) == 1:
        words = [_word(value) for key, value in first.params.items() if key not in _SHOWN_APART]
        words += [f"e{first.model.epochs}", f"b{first.model.batch_size}"]
        words += _preprocessing_words(first.model)
        name = SEPARATOR.join([*words, f"fold{folds}"])
        return name if len(jobs) == 1 else f"{name} ({len(jobs)} fits)"
    batch_sizes = "/".join(str(size) for size in sorted({job.model.batch_size for job in jobs}))
    return SEPARATOR.join(
        [f"{len(jobs)} fits", f"combos {_span(combinations)}", f"b{batch_sizes}", f"folds {folds}"]
    )


SEPARATOR = " | "
_SHOWN_APART = ("epochs", "batch_size", "preprocess__scaling", "preprocess__impute_zeros")


def _word(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "x".join(map(str, value))
    return str(value)[:24]


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


@task(
    name="train_fold",
    task_run_name="train_fold[{label}]",
    retries=1,
    retry_delay_seconds=2,
    cache_policy=NO_CACHE,
)
def train_fold(
    dataset: DatasetHandle,
    folds: list[Fold],
    jobs: list[FitJob],
    run_seed: int,
    source: ModelSource,
    label: str = "",
) -> list[FitResult]:
    """Train one (params, fold) pair, or a group the fast engine trains as one program.

    `source` carries the model function's code by value; `label` names the task run.
    Finished fits are cached per fit by the flow (tasks.train.fit_cache), not per task run.
    """
    return run_fit_jobs(dataset, folds, jobs, run_seed, source)


def explicit_folds(splits: list[ExplicitSplit], n_rows: int) -> list[Fold]:
    """Folds as a caller's splitter made them, checked: every row index within the data and
    no row both trained on and tested in one fold."""
    folds = []
    for index, split in enumerate(splits):
        rows = [*split.train, *split.test]
        outside = [row for row in rows if not 0 <= row < n_rows]
        if outside:
            raise ConfigError(
                f"split {index}: row index {outside[0]} is outside the data's {n_rows} rows"
            )
        shared = set(split.train) & set(split.test)
        if shared:
            raise ConfigError(
                f"split {index}: row {min(shared)} is both in the training and the test rows"
            )
        folds.append(Fold(index=index, train=list(split.train), test=list(split.test)))
    return folds


@task(name="split_folds")
def split_folds(
    dataset: DatasetHandle, n_splits: int, seed: int, splits: list[ExplicitSplit] | None = None
) -> list[Fold]:
    """StratifiedKFold (KFold for a regression) with shuffle=True, random_state=seed, unless
    the run gives its splits explicitly."""
    _, labels = load_arrays(dataset)
    if splits is not None:
        return explicit_folds(splits, len(labels))
    return plan_folds(labels, n_splits, seed, dataset.task)  # type: ignore[arg-type]


def refit_on_all_rows(
    source: ModelSource,
    features: np.ndarray,
    labels: np.ndarray,
    model: ModelParams,
    network: DenseNetwork | None,
    meta: dict[str, Any],
    seed: int,
) -> keras.Model:
    """The chosen combination trained on every row, as GridSearchCV's `refit=True` does, on
    the engine its fits ran on."""
    rows, held = split_validation(
        list(range(len(labels))), model.validation_split, seed, classes(labels, meta)
    )
    if network is None:
        return train_keras_model(
            source, model, meta, features[rows], labels[rows], seed,
            validation=(features[held], labels[held]),
        )  # fmt: skip
    keras_model = model_for_fit(source, model, meta, seed)
    targets = encode_targets(labels[rows], meta)
    validation = (features[held], encode_targets(labels[held], meta))
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
    zero_columns: tuple[int, ...] = (),
    feature_columns: list[str] | None = None,
) -> tuple[keras.Model, dict[str, Any]]:
    """(model, its preprocessing as plain numbers): the preprocessing is fitted on every row
    too, like the model."""
    preprocessor = fit_preprocessor(features, np.arange(len(features)), model, zero_columns)
    if preprocessor is not None:
        features = np.ascontiguousarray(
            preprocessor.transform(np.asarray(features, dtype=np.float64)), dtype=np.float32
        )
    columns = feature_columns or [f"x{index}" for index in range(features.shape[1])]
    keras_model = refit_on_all_rows(source, features, labels, model, network, meta, seed)
    return keras_model, preprocessing_record(preprocessor, columns)


def classes(labels: np.ndarray, meta: dict[str, Any]) -> np.ndarray | None:
    """The labels a validation part is stratified by: a classification's, not a regression's."""
    return None if meta["task"] == "regression" else labels


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


@dataclass
class RefitModel:
    """A combination trained on every row, not saved yet: a refit started before the last
    fits end is saved only if its combination is still the best once they have."""

    model: keras.Model  # with its preprocessing as its first layers
    params: ModelParams
    source: ModelSource
    fields: dict[str, Any]  # best_model.json's fields that do not depend on the search
    seconds: float


@task(name="refit_best", cache_policy=NO_CACHE)
def refit_best(
    dataset: DatasetHandle,
    source: ModelSource,
    model: ModelParams,
    network: DenseNetwork | None,
    run_seed: int,
) -> RefitModel:
    """Train a combination on every row, with its preprocessing (save_refit writes it)."""
    started = time.perf_counter()
    features, labels = load_arrays(dataset)
    meta = dataset_meta(dataset)
    seed = fit_seed(run_seed, model, fold=-1)
    fitted, preprocessing = refit_with_preprocessing(
        source,
        features,
        labels,
        model,
        network,
        meta,
        seed,
        zero_columns=dataset.zero_column_indices,
        feature_columns=dataset.feature_columns,
    )
    fields = {
        "seed": seed,
        "engine": "reference" if network is None else "fast",
        "task": dataset.task,
        # best_model.keras takes raw feature rows: its first layers impute and scale as
        # recorded here. Output i means classes[i].
        "preprocessing": preprocessing,
        "classes": meta["classes_"],
    }
    return RefitModel(
        model=with_preprocessing(fitted, preprocessing),
        params=model,
        source=source,
        fields=fields,
        seconds=time.perf_counter() - started,
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
    return save_best_model(refit.model, refit.params, fields, run_dir)
