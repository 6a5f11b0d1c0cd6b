"""The reference engine: one Keras fit per (combination, fold) of the model the user's function
builds, with batches in foldflow's own order (`epoch_order`) so it follows the same trajectory
as the fast engine (tasks.train.fast) whenever both apply; its checkpoints and its scores."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tasks.config import ModelParams
from tasks.metrics import ScorerSpec, score_outputs
from tasks.model.factory import model_for_fit
from tasks.model.sources import ModelSource, model_files, running_model_code
from tasks.records import (
    Checkpoint,
    Fold,
    LearningCurve,
    epoch_order,
    plain_value,
    split_validation,
)
from tasks.train.traced_models import reusing_traced
from tasks.train.xla_cache import enable as enable_xla_cache

# Before this process runs any TensorFlow op: the compiled-program cache (tasks.train.xla_cache).
enable_xla_cache()


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


def keras_targets(labels: np.ndarray, meta: dict[str, Any], loss: Any = None) -> np.ndarray:
    """Targets as the model is trained on them: class index (sorted labels, as scikeras'
    encoder does), one-hot for a categorical (non-sparse) cross-entropy, numbers otherwise."""
    if meta["task"] == "regression":
        return np.asarray(labels, dtype=np.float32)
    index = {label: position for position, label in enumerate(meta["classes_"])}
    encoded = np.array([index[plain_value(label)] for label in labels], dtype=np.int64)
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
    `validation` (features, labels), its `val_loss` and ValidationAccuracy's values.
    `sys.exit()` from the model's code while it trains (a layer's `call`) is a
    ModelFunctionExit naming the line (the refit's fits too)."""
    with running_model_code(f"model function {source.label}", model_files(source)):
        return _fit_keras_model(source, model, meta, train_x, train_labels, seed, start, validation)


def _fit_keras_model(
    source: ModelSource,
    model: ModelParams,
    meta: dict[str, Any],
    train_x: np.ndarray,
    train_labels: np.ndarray,
    seed: int,
    start: Checkpoint | None,
    validation: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[keras.Model, LearningCurve]:
    keras_model = model_for_fit(source, model, meta, seed)
    return keras_model, _train(
        keras_model, model, meta, train_x, train_labels, seed, start, validation
    )


@contextmanager
def fitted_keras_model(
    source: ModelSource,
    model: ModelParams,
    meta: dict[str, Any],
    train_x: np.ndarray,
    train_labels: np.ndarray,
    seed: int,
    start: Checkpoint | None = None,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
) -> Iterator[tuple[keras.Model, LearningCurve]]:
    """fit_keras_model's model and curve, the model valid only inside the block: the fit runs
    on an idle traced model of the same structure if there is one (tasks.train.traced_models),
    which is handed back for the next fit when the block ends."""
    code = (f"model function {source.label}", model_files(source))
    with running_model_code(*code):
        fresh = model_for_fit(source, model, meta, seed)
    with reusing_traced(fresh) as keras_model:
        with running_model_code(*code):
            curve = _train(keras_model, model, meta, train_x, train_labels, seed, start, validation)
        yield keras_model, curve


def _train(
    keras_model: keras.Model,
    model: ModelParams,
    meta: dict[str, Any],
    train_x: np.ndarray,
    train_labels: np.ndarray,
    seed: int,
    start: Checkpoint | None,
    validation: tuple[np.ndarray, np.ndarray] | None,
) -> LearningCurve:
    first_epoch = 0
    if start is not None:
        restore_state(keras_model, start)
        first_epoch = start.epochs
    targets = keras_targets(train_labels, meta, keras_model.loss)
    x_tensor, y_tensor = tf.constant(train_x), tf.constant(targets)
    batches = epoch_batches(
        seed, model.epochs, len(train_x), model.batch_size, model.shuffle, first_epoch
    ).map(lambda rows: (tf.gather(x_tensor, rows), tf.gather(y_tensor, rows)))
    steps = math.ceil(len(train_x) / model.batch_size)
    callbacks, validation_data, accuracy = [], None, None
    if validation is not None and len(validation[0]):
        val_x, val_labels = validation
        validation_data = (val_x, keras_targets(val_labels, meta, keras_model.loss))
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
    return curve.after(None if start is None else start.curve)


class ValidationAccuracy(keras.callbacks.Callback):
    """The validation rows' accuracy after every epoch, as the fast engine measures it
    (whatever metrics the model function compiled); None for a regression."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, meta: dict[str, Any]):
        super().__init__()
        self.features, self.meta = tf.constant(features), meta
        self.truth = None if meta["task"] == "regression" else keras_targets(labels, meta)
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
    keras_model: keras.Model,
    test_x: np.ndarray,
    test_labels: np.ndarray,
    meta: dict[str, Any],
    scorers: tuple[ScorerSpec, ...] | list[ScorerSpec] = (),
) -> dict[str, float]:
    """Every metric of the task on the test rows (tasks.metrics), and each extra scorer."""
    # float32, as Keras returns them and the fast engine scores them: clipping a saturated
    # probability at 1 - eps rounds differently in float64.
    outputs = np.asarray(keras_model.predict(test_x, verbose=0))
    task = meta["task"]
    if task == "regression":
        truth, outputs = np.asarray(test_labels, dtype=np.float64), outputs.ravel()
    else:
        truth = keras_targets(test_labels, meta).astype(np.int64)
        outputs = outputs.ravel() if task == "binary" else outputs
    return score_outputs(task, truth, outputs, scorers)


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
    scorers: tuple[ScorerSpec, ...] | list[ScorerSpec] = (),
) -> tuple[dict[str, float], dict[str, float], Checkpoint]:
    """score_fold_from, and every metric on the rows the model trained on (the fold's
    training rows less any validation rows): (test scores, train scores, state)."""
    train, held = split_validation(fold.train, model.validation_split, seed, classes(labels, meta))
    with fitted_keras_model(
        source, model, meta, features[train], labels[train], seed, start,
        (features[held], labels[held]),
    ) as (keras_model, curve):  # fmt: skip
        scores = predict_scores(keras_model, features[fold.test], labels[fold.test], meta, scorers)
        train_scores = predict_scores(keras_model, features[train], labels[train], meta, scorers)
        return scores, train_scores, keras_state(keras_model, model.epochs, curve)


def classes(labels: np.ndarray, meta: dict[str, Any]) -> np.ndarray | None:
    """The labels a validation part is stratified by: a classification's, not a regression's."""
    return None if meta["task"] == "regression" else labels
