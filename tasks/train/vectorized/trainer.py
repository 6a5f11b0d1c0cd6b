"""The vectorized path's trainer: a task run's jobs of one architecture (same program key,
batch size and row counts) trained as copies in one program (tasks.train.vectorized.program),
each copy exactly what the reference engine's fit would be given: the model the function
builds under the fit's seed, the fold's training rows less its validation part, batches in
`epoch_order`, class weights as sample weights, early stopping as Keras' callback; scored,
with a learning curve and a checkpoint in the reference engine's format.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tasks.config import ModelParams
from tasks.data.preprocess import FoldFeatures
from tasks.metrics import ScorerSpec, loss_on_test_rows, score_outputs
from tasks.model.factory import model_for_fit
from tasks.model.sources import ModelSource
from tasks.records import (
    Checkpoint,
    FitJob,
    FitResult,
    Fold,
    LearningCurve,
    epoch_order,
    fit_seed,
    split_validation,
)
from tasks.train.fast.callbacks import improved
from tasks.train.reference import classes, keras_class_weight, keras_state, keras_targets
from tasks.train.reference import restore_state as restore_reference_state
from tasks.train.vectorized.program import (
    StackedModels,
    assign_state,
    draws_random_numbers,
    model_state,
    stack_states,
    unstack_state,
)

ENGINE = "vectorized"
# Copies per program at most (each is a built Keras model in this process while it trains).
MAX_COPIES = 256
# XLA compiles a program in 4-16 s here and then runs its epochs 2-4x faster than TensorFlow's
# graph runtime: measured break-even 6,000-16,000 steps of 12 copies (docs/engines.md,
# "Vectorized path: what we tried"). Below this many copy-steps the graph runtime is faster.
XLA_MIN_COPY_STEPS = 100_000


@dataclass
class Copy:
    """One job made ready: its built model and the rows and targets it trains and is scored on."""

    job: FitJob
    seed: int
    meta: dict[str, Any]
    model: keras.Model
    train: list[int]
    x: np.ndarray
    y: np.ndarray
    weights: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    val_truth: np.ndarray | None  # class indices of the validation rows (None: regression)
    x_test: np.ndarray
    test_labels: np.ndarray
    train_labels: np.ndarray
    losses: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float | None] = field(default_factory=list)

    @property
    def params(self) -> ModelParams:
        return self.job.model

    @property
    def first_epoch(self) -> int:
        return self.job.start_epoch


def prepare_copy(
    source: ModelSource,
    views: FoldFeatures,
    labels: np.ndarray,
    fold: Fold,
    job: FitJob,
    run_seed: int,
    meta_of: Callable[[ModelParams, np.ndarray], dict[str, Any]],
    seed: int | None = None,
) -> Copy:
    """Build the job's model under its fit seed (`seed`, else the run's seed for this job;
    continued from its checkpoint) and take its rows as the reference engine's fit_and_score
    does."""
    seed = fit_seed(run_seed, job.model, job.fold) if seed is None else seed
    view = views.of(fold.index, fold.train, job.model) if fold.index >= 0 else views.features
    meta = meta_of(job.model, view)
    train, held = split_validation(
        fold.train, job.model.validation_split, seed, classes(labels, meta)
    )
    model = model_for_fit(source, job.model, meta, seed)
    if job.start is not None:
        restore_reference_state(model, job.start.model_copy(update={"engine": "reference"}))
    y = keras_targets(labels[train], meta, model.loss)
    return Copy(
        job=job, seed=seed, meta=meta, model=model, train=train,
        x=view[train], y=y, weights=sample_weights(y, keras_class_weight(job.model, meta)),
        x_val=view[held], y_val=keras_targets(labels[held], meta, model.loss),
        val_truth=None if meta["task"] == "regression" else keras_targets(labels[held], meta),
        x_test=view[fold.test], test_labels=labels[fold.test], train_labels=labels[train],
    )  # fmt: skip


def refit_copy(
    source: ModelSource,
    features: np.ndarray,
    labels: np.ndarray,
    model: ModelParams,
    meta: dict[str, Any],
    seed: int,
    vectorized: str,
) -> Copy:
    """The refit as a copy: every row (less the validation part), nothing held out to score."""
    fold = Fold(index=-1, train=list(range(len(labels))), test=[])
    job = FitJob(combination=-1, params={}, model=model, fold=-1, vectorized=vectorized)
    views = FoldFeatures(features)  # already preprocessed on every row by the caller
    return prepare_copy(source, views, labels, fold, job, 0, lambda _, __: meta, seed)


def sample_weights(targets: np.ndarray, class_weight: dict[int, float] | None) -> np.ndarray:
    """Keras' class_weight as per-row sample weights (its fit does the same); ones without."""
    if not class_weight:
        return np.ones(len(targets), dtype=np.float32)
    index = targets.argmax(axis=1) if targets.ndim == 2 else np.round(targets).astype(np.int64)
    return np.array([class_weight.get(int(i), 1.0) for i in index], dtype=np.float32)


def program_key(copy: Copy) -> tuple:
    """Copies with equal keys run in one program: same architecture, batch size and shapes."""
    return (
        copy.job.vectorized,
        copy.params.batch_size,
        copy.x.shape,
        copy.y.shape,
        copy.x_val.shape,
    )


def train_vectorized(
    copies: list[Copy], scorers: tuple[ScorerSpec, ...] | list[ScorerSpec] = ()
) -> list[FitResult]:
    """Every copy trained and scored, one program per program_key (at most MAX_COPIES)."""
    programs: dict[tuple, list[Copy]] = defaultdict(list)
    for copy in copies:
        programs[program_key(copy)].append(copy)
    results = []
    for members in programs.values():
        for start in range(0, len(members), MAX_COPIES):
            results += train_program(members[start : start + MAX_COPIES], scorers)
    return results


def train_program(copies: list[Copy], scorers) -> list[FitResult]:
    """One program: the copies' epochs, each copy stepping only through its own epochs;
    every copy scored on its test and training rows."""
    started = time.perf_counter()
    stack, stacked, final, trained = run_epochs(copies)
    seconds = (time.perf_counter() - started) / len(copies)
    # Test and training rows in one call (one compiled prediction program).
    outputs = predict_padded(stack, final, [np.concatenate([c.x_test, c.x]) for c in stacked])
    test_outputs = [o[: len(c.x_test)] for o, c in zip(outputs, stacked, strict=True)]
    train_outputs = [o[len(c.x_test) :] for o, c in zip(outputs, stacked, strict=True)]
    return [
        result_of(copy, unstack_state(final, index), test_outputs[index], train_outputs[index],
                  scorers, seconds, trained[index])
        for index, copy in enumerate(copies)
    ]  # fmt: skip


def fit_copy(copy: Copy) -> keras.Model:
    """One copy trained (the refit: every row), its final state in its own Keras model."""
    _, _, final, _ = run_epochs([copy])
    assign_state(copy.model, unstack_state(final, 0))
    return copy.model


def run_epochs(copies: list[Copy]) -> tuple[StackedModels, list[Copy], Any, list[int | None]]:
    """Train the copies together: (the program, the copies as stacked, the final state to
    score (best weights restored), the epochs each early-stopped copy trained)."""
    template, count = copies[0].model, len(copies)
    # TensorFlow cannot vectorize some steps over a single copy (an LSTM's loop: "Shapes must
    # be equal rank"): a lone copy trains beside a twin of itself, whose results are dropped.
    stacked = copies if count > 1 else copies * 2
    stack = StackedModels(template, len(stacked), jit_compile=use_xla(copies))
    state = stack_states([model_state(copy.model) for copy in stacked])
    x = tf.constant(np.stack([copy.x for copy in stacked]))
    y = tf.constant(np.stack([copy.y for copy in stacked]))
    weights = tf.constant(np.stack([copy.weights for copy in stacked]))
    validation = None
    if copies[0].x_val.shape[0]:
        validation = (
            tf.constant(np.stack([copy.x_val for copy in stacked])),
            tf.constant(np.stack([copy.y_val for copy in stacked])),
        )
    stopping = EarlyStopping(copies)
    rows, batch_size = len(copies[0].x), copies[0].params.batch_size
    full = rows // batch_size * batch_size
    for epoch in range(min(c.first_epoch for c in copies), max(c.params.epochs for c in copies)):
        active = np.array(
            [c.first_epoch <= epoch < c.params.epochs and i not in stopping.stopped
             for i, c in enumerate(copies)]
        )  # fmt: skip
        if not active.any():
            break
        active = np.concatenate([active, active[: len(stacked) - count]])  # the twin's
        orders = np.stack(
            [epoch_order(c.seed, epoch, rows, c.params.shuffle) for c in stacked]
        ).astype(np.int32)
        loss_sums = np.zeros(len(stacked))
        if full:
            batches = orders[:, :full].reshape(len(stacked), -1, batch_size).transpose(1, 0, 2)
            state, losses = stack.train(state, x, y, weights, batches, active)
            loss_sums += losses.astype(np.float64).sum(axis=0) * batch_size
        if full < rows:
            state, losses = stack.train(state, x, y, weights, orders[None, :, full:], active)
            loss_sums += losses[0].astype(np.float64) * (rows - full)
        measured = None if validation is None else stack.evaluate(state, *validation)
        for index in np.flatnonzero(active[:count]):
            copy = copies[index]
            copy.losses.append(float(loss_sums[index] / rows))
            if measured is not None:
                copy.val_loss.append(float(measured[1][index]))
                copy.val_accuracy.append(accuracy(copy, measured[0][index]))
        stopping.epoch_end(epoch, active[:count], state)
    return stack, stacked, stopping.restored(state), stopping.trained


def use_xla(copies: list[Copy]) -> bool:
    """Compile the training steps with XLA: when they are many (its compile time pays off)
    and draw no random numbers (XLA's random bits are not Keras' fit's)."""
    rows, batch_size = len(copies[0].x), copies[0].params.batch_size
    epochs = max(c.params.epochs for c in copies) - min(c.first_epoch for c in copies)
    steps = epochs * -(-rows // batch_size)
    return steps * len(copies) >= XLA_MIN_COPY_STEPS and not draws_random_numbers(copies[0].model)


def predict_padded(stack: StackedModels, state, blocks: list[np.ndarray]) -> list[np.ndarray]:
    """Each copy's outputs on its own rows, the copies' rows padded to the longest."""
    longest = max(len(block) for block in blocks)
    padded = np.zeros((len(blocks), longest, *blocks[0].shape[1:]), dtype=blocks[0].dtype)
    for index, block in enumerate(blocks):
        padded[index, : len(block)] = block
    outputs = stack.predict(state, padded)
    return [outputs[index, : len(block)] for index, block in enumerate(blocks)]


def accuracy(copy: Copy, outputs: np.ndarray) -> float | None:
    """The validation rows' accuracy, as the reference engine's ValidationAccuracy measures it."""
    if copy.val_truth is None:
        return None
    if copy.meta["task"] == "binary":
        predicted = (outputs.ravel() > 0.5).astype(np.int64)
    else:
        predicted = outputs.argmax(axis=1)
    return float(np.mean(predicted == copy.val_truth.astype(np.int64)))


def scores_of(copy: Copy, outputs: np.ndarray, labels: np.ndarray, scorers) -> dict[str, float]:
    """Every metric of the task, as tasks.train.reference.predict_scores computes them."""
    task = copy.meta["task"]
    if task == "regression":
        truth, outputs = np.asarray(labels, dtype=np.float64), outputs.ravel()
    else:
        truth = keras_targets(labels, copy.meta).astype(np.int64)
        outputs = outputs.ravel() if task == "binary" else outputs
    return score_outputs(task, truth, outputs, scorers)


def result_of(copy, values, test_outputs, train_outputs, scorers, seconds, trained) -> FitResult:
    """The copy's record; its final state goes back into its Keras model for the checkpoint."""
    job = copy.job
    assign_state(copy.model, values)
    curve = LearningCurve(
        first_epoch=copy.first_epoch,
        train_loss=copy.losses,
        val_loss=copy.val_loss,
        val_accuracy=copy.val_accuracy,
    ).after(None if job.start is None else job.start.curve)
    state = keras_state(copy.model, job.model.epochs, curve)
    scores = scores_of(copy, test_outputs, copy.test_labels, scorers)
    return FitResult(
        combination=job.combination,
        params=job.params,
        fold=job.fold,
        accuracy=scores.get("accuracy"),
        loss=loss_on_test_rows(copy.meta["task"], scores),
        scores=scores,
        train_scores=scores_of(copy, train_outputs, copy.train_labels, scorers),
        n_train=len(copy.train),
        n_test=len(copy.test_labels),
        fit_seconds=seconds,
        seed=copy.seed,
        engine=ENGINE,
        start_epoch=job.start_epoch,
        curve=curve,
        checkpoint=Checkpoint(engine=ENGINE, epochs=job.model.epochs, arrays=state.arrays),
        stopped_epoch=len(curve.train_loss) if job.model.early_stopping else None,
    )


class EarlyStopping:
    """Keras' EarlyStopping callback (3.x on_epoch_end / on_train_end) per copy: a copy whose
    patience runs out stops stepping; with restore_best_weights it ends with its best epoch's
    weights (trainable and non-trainable weights, as `get_weights`; not seed states)."""

    def __init__(self, copies: list[Copy]):
        self.copies = copies
        self.wait = [0] * len(copies)
        self.best: list[float | None] = [None] * len(copies)
        self.best_state: dict[int, tuple[list[np.ndarray], list[np.ndarray]]] = {}
        self.trained: list[int | None] = [None] * len(copies)
        self.stopped: set[int] = set()
        model = copies[0].model
        weights = {id(variable) for variable in model.non_trainable_weights}
        self.is_weight = [id(v) in weights for v in model.non_trainable_variables]

    def epoch_end(self, epoch: int, active: np.ndarray, state) -> None:
        for index in np.flatnonzero(active):
            copy = self.copies[index]
            params = copy.params
            if not params.early_stopping:
                continue
            current = self._monitored(copy, params.monitor)
            if current is None or np.isnan(current):
                continue
            if params.restore_best_weights and index not in self.best_state:
                self.best_state[index] = self._weights(state, index)
            self.wait[index] += 1
            if improved(params, current, self.best[index]):
                self.best[index] = current
                if params.restore_best_weights:
                    self.best_state[index] = self._weights(state, index)
                self.wait[index] = 0
                continue
            if self.wait[index] >= params.patience and epoch > 0:
                self.stopped.add(index)
                self.trained[index] = len(copy.losses)

    @staticmethod
    def _monitored(copy: Copy, monitor: str) -> float | None:
        values = {"loss": copy.losses, "val_loss": copy.val_loss}.get(monitor, copy.val_accuracy)
        return values[-1] if values else None

    def _weights(self, state, index: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        return [np.array(v[index]) for v in state[0]], [np.array(v[index]) for v in state[1]]

    def restored(self, state):
        """The state to score: each restoring copy's best weights, the others' own."""
        if not self.best_state:
            return state
        trainable = [v.numpy().copy() for v in state[0]]
        others = [v.numpy().copy() for v in state[1]]
        for index, (best_trainable, best_others) in self.best_state.items():
            for values, best in zip(trainable, best_trainable, strict=True):
                values[index] = best
            for position, (values, best) in enumerate(zip(others, best_others, strict=True)):
                if self.is_weight[position]:
                    values[index] = best
        return (
            [tf.constant(v) for v in trainable],
            [tf.constant(v) for v in others],
            state[2],
        )
