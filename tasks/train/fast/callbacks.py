"""Keras' training callbacks, per model of a stacked group: early stopping and the learning
curve (training loss per epoch, validation loss and accuracy measured at each epoch's end)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tasks.config import ModelParams
from tasks.records import LearningCurve
from tasks.train.fast.schedules import Trajectory


def improved(model: ModelParams, current: float, best: float | None) -> bool:
    """Keras' EarlyStopping test: better than the best by more than min_delta (an accuracy
    higher, a loss lower); the first epoch always is."""
    if best is None:
        return True
    if model.monitor.endswith("accuracy"):
        return current - model.min_delta > best
    return current + model.min_delta < best


class EarlyStopping:
    """Keras' EarlyStopping (3.x `on_epoch_end` / `on_train_end`), per model of a group:
    a model whose patience runs out stops taking steps while the others go on; with
    `restore_best_weights` a model is scored with its best epoch's weights."""

    def __init__(self, group: list[Trajectory]):
        self.group = group
        self.wait = [0] * len(group)
        self.best: list[float | None] = [None] * len(group)
        self.best_params: list[np.ndarray | None] = [None] * len(group)
        self.trained: list[int | None] = [None] * len(group)  # epochs when it stopped
        self.stopped: set[int] = set()

    def epoch_end(self, stop: int, curves: CurveRecorder, params: tf.Tensor) -> None:
        values = None
        for index, trajectory in enumerate(self.group):
            model = trajectory.model
            per_epoch = trajectory.steps_per_epoch
            if not model.early_stopping or index in self.stopped or stop % per_epoch:
                continue
            epoch = stop // per_epoch - 1
            if not 0 <= epoch < len(curves.loss_sums[index]):
                continue
            values = params.numpy() if values is None else values
            current = curves.value(index, epoch, model.monitor)
            if np.isnan(current):
                continue  # Keras skips an epoch without the monitored value
            if model.restore_best_weights and self.best_params[index] is None:
                self.best_params[index] = values[index].copy()
            self.wait[index] += 1
            if improved(model, current, self.best[index]):
                self.best[index] = current
                if model.restore_best_weights:
                    self.best_params[index] = values[index].copy()
                self.wait[index] = 0
                continue
            if self.wait[index] >= model.patience and trajectory.first_epoch + epoch > 0:
                self.stopped.add(index)
                self.trained[index] = epoch + 1

    def scoring_params(self, params: tf.Tensor) -> tf.Tensor:
        """The params to score: each restoring model's best so far, the others' own."""
        restored = [i for i, best in enumerate(self.best_params) if best is not None]
        if not restored:
            return params
        values = params.numpy().copy()
        for index in restored:
            values[index] = self.best_params[index]
        return tf.constant(values)


class CurveRecorder:
    """Per-epoch training loss (from the program's per-step summed losses) and validation loss
    and accuracy (predicted at each epoch's end) of every model of a group."""

    def __init__(self, group: list[Trajectory], n_models: int, labels: np.ndarray, loss: str):
        self.group, self.n_models, self.labels, self.loss = group, n_models, labels, loss
        lengths = [t.epochs - t.first_epoch for t in group]
        self.loss_sums = [np.zeros(n) for n in lengths]
        self.row_sums = [np.zeros(n) for n in lengths]
        self.val_loss = [np.full(n, np.nan) for n in lengths]
        self.val_accuracy = [np.full(n, np.nan) for n in lengths]
        width = max((len(t.validation) for t in group), default=0)
        self.val_rows = np.zeros((n_models, max(1, width)), dtype=np.int32)
        for index, trajectory in enumerate(group):
            self.val_rows[index, : len(trajectory.validation)] = trajectory.validation

    def add_steps(self, start: int, stop: int, losses: np.ndarray, rows: np.ndarray) -> None:
        """Sum steps [start, stop)'s losses and rows into their epochs, in float64."""
        counts = (rows[: stop - start] >= 0).sum(axis=2)
        for index, trajectory in enumerate(self.group):
            epochs = np.arange(start, stop) // trajectory.steps_per_epoch
            inside = epochs < len(self.loss_sums[index])
            np.add.at(self.loss_sums[index], epochs[inside], losses[: stop - start][inside, index])
            np.add.at(self.row_sums[index], epochs[inside], counts[inside, index])

    def measure(
        self,
        stop: int,
        logits: Callable[[np.ndarray], tf.Tensor],
        penalties: Callable[[], np.ndarray],
    ) -> None:
        """Validation loss and accuracy of the models whose epoch ends at step `stop`
        (`logits` of the stacked models for [models, rows] row indices; `penalties` their
        regularization terms, which Keras adds to the validation loss too)."""
        ended = [
            (index, stop // t.steps_per_epoch - 1)
            for index, t in enumerate(self.group)
            if t.validation
            and stop % t.steps_per_epoch == 0
            and 0 < stop // t.steps_per_epoch <= len(self.loss_sums[index])
        ]
        if not ended:
            return
        outputs = logits(self.val_rows).numpy()
        penalty = penalties()
        for index, epoch in ended:
            rows = self.group[index].validation
            loss, accuracy = validation_scores(
                self.loss, self.labels[rows], outputs[index, : len(rows)]
            )
            self.val_loss[index][epoch] = loss + float(penalty[index])
            self.val_accuracy[index][epoch] = accuracy

    def value(self, index: int, epoch: int, monitor: str) -> float:
        """The monitored value of one model after one epoch (NaN if it has none)."""
        if monitor == "loss":
            return float(self.loss_sums[index][epoch] / max(self.row_sums[index][epoch], 1))
        values = self.val_loss if monitor == "val_loss" else self.val_accuracy
        return float(values[index][epoch])

    def curves(self) -> list[LearningCurve]:
        return [
            LearningCurve(
                first_epoch=trajectory.first_epoch,
                train_loss=(self.loss_sums[i] / np.maximum(self.row_sums[i], 1)).tolist(),
                val_loss=self.val_loss[i].tolist() if trajectory.validation else [],
                val_accuracy=self.val_accuracy[i].tolist() if trajectory.validation else [],
            ).after(None if trajectory.start is None else trajectory.start.curve)
            for i, trajectory in enumerate(self.group)
        ]


def validation_scores(loss: str, truth: np.ndarray, logits: np.ndarray) -> tuple[float, float]:
    """(loss, accuracy) on validation rows as Keras evaluates them (no class weights), from
    the [rows, units] logits: binary cross-entropy from the sigmoid's logits (no clipping),
    categorical cross-entropy from the softmax's, or the regression's error (accuracy NaN)."""
    z = logits.astype(np.float64)
    if loss == "binary_crossentropy":
        z, y = z[:, 0], truth.astype(np.float64)
        value = np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))))
        return float(value), float(np.mean((z > 0) == (y > 0.5)))
    if "categorical" in loss:
        shifted = z - z.max(axis=1, keepdims=True)
        log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        index = truth.astype(np.int64)
        value = -np.mean(log_probabilities[np.arange(len(index)), index])
        return float(value), float(np.mean(z.argmax(axis=1) == index))
    error = truth.astype(np.float64) - z[:, 0]
    value = np.mean(error**2) if loss == "mean_squared_error" else np.mean(np.abs(error))
    return float(value), float("nan")
