"""The stacked trainer: runs a group's program over its trajectories, scores each job at its
epochs, and returns fit results, checkpoints and learning curves (train_stacked); the same
for one model on every row (train_on_all_rows, the refit)."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tasks.config import ModelParams
from tasks.data.preprocess import FoldFeatures, UserRows
from tasks.data.stacked import aligned_float32, is_aligned_float32
from tasks.metrics import ScorerSpec, loss_on_test_rows, score_outputs
from tasks.records import Checkpoint, DenseNetwork, FitJob, FitResult, Fold, LearningCurve
from tasks.train.fast.callbacks import CurveRecorder, EarlyStopping
from tasks.train.fast.graph import GraphLayout, layout_of
from tasks.train.fast.network import (
    Layout,
    dropout_slots,
    dropout_vectors,
    forward_logits,
    penalty_terms,
    penalty_vectors,
)
from tasks.train.fast.optimizers import FAST_OPTIMIZERS, SETTINGS, setting_vector
from tasks.train.fast.programs import compiled_programs, group_program_key, program_groups
from tasks.train.fast.rates import learning_rates
from tasks.train.fast.schedules import CHUNK_STEPS, Trajectory, chunk_rows, job_order, segments

# Test rows per prediction call across models (features and activations gathered per block).
PREDICT_ROW_BUDGET = 262_144
# And at most this many bytes of gathered features per call: a wide one-hot row is 100s of
# floats, and each task run's blocks are held at once.
PREDICT_FEATURE_BYTES = 32 * 2**20


def encode_binary_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(classes, 0/1 per row) in sorted order, as scikeras' OrdinalEncoder encodes them."""
    classes, encoded = np.unique(labels, return_inverse=True)
    return classes, encoded.astype(np.int64)


def classes_and_targets(
    labels: np.ndarray, task: str, classes: list | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(classes, class index per row) in sorted order for a classifier, or in `classes`' order
    (meta's classes_, positive class last), as tasks.train.reference.keras_targets does;
    (no classes, values as float64) for a regression."""
    if task == "regression":
        return np.array([]), np.asarray(labels, dtype=np.float64)
    found, encoded = encode_binary_labels(labels)
    if classes is None:
        return found, encoded
    position = np.array([classes.index(label.item()) for label in found], dtype=np.int64)
    return np.asarray(classes, dtype=found.dtype), position[encoded]


def _scores(
    loss: str,
    outputs: np.ndarray,
    labels: np.ndarray,
    test_rows: list[int],
    scorers: tuple[ScorerSpec, ...] | list[ScorerSpec] = (),
) -> dict[str, float]:
    """Every metric of the task and each extra scorer, as the reference computes them from
    the model's predictions (float32 outputs; labels are 0/1 or class indices, or values for
    a regression)."""
    outputs = outputs[: len(test_rows)]
    truth = labels[test_rows]
    if loss == "binary_crossentropy":
        return score_outputs("binary", truth.astype(np.int64), outputs[:, 0], scorers)
    if "categorical" in loss:
        return score_outputs("multiclass", truth.astype(np.int64), outputs, scorers)
    truth = np.asarray(truth, dtype=np.float64)
    return score_outputs("regression", truth, outputs[:, 0], scorers)


def class_weight_vector(model: ModelParams, classes: np.ndarray) -> np.ndarray | None:
    """`fit__class_weight` (by label text) as a weight per encoded class, as
    tasks.train.reference.keras_class_weight gives Keras (unnamed classes weigh 1)."""
    if not model.class_weight:
        return None
    return np.array(
        [
            float(
                model.class_weight.get(str(label.item() if hasattr(label, "item") else label), 1.0)
            )
            for label in classes
        ],
        dtype=np.float32,
    )


def predict_in_blocks(
    predict: Callable, params: tf.Tensor, features: tf.Tensor, test_rows: np.ndarray
) -> np.ndarray:
    """[M, T, units] outputs, computed over blocks of test rows so that no more than
    PREDICT_ROW_BUDGET (model, row) pairs are gathered at once (100k rows x 100s of models)."""
    n_models, n_rows = test_rows.shape
    width = max(1, int(features.shape[-1]))
    block = max(1, min(PREDICT_ROW_BUDGET, PREDICT_FEATURE_BYTES // (4 * width)) // n_models)
    return np.concatenate(
        [
            predict(params, features, tf.constant(test_rows[:, start : start + block])).numpy()
            for start in range(0, n_rows, block)
        ],
        axis=1,
    )


# A fit's initial weights in Keras order, from (its params, its seed): the model function
# built under that seed (tasks.train.weights_cache.InitialWeights).
InitialWeightsFunction = Callable[[ModelParams, int], list[np.ndarray]]


# Per epoch checkpoint: (scores on the test rows, scores on the rows it trained on).
EpochScores = dict[int, tuple[dict[str, float], dict[str, float]]]


def train_group(
    group: list[Trajectory],
    layout: Layout | GraphLayout,
    activations: tuple[str, ...],
    features: np.ndarray,
    labels: np.ndarray,
    initial_weights: InitialWeightsFunction,
    scorers: tuple[ScorerSpec, ...] | list[ScorerSpec] = (),
) -> tuple[list[EpochScores], list[Checkpoint], list[LearningCurve], list[int | None]]:
    """Run one stacked program over the group; (test scores, train scores) per model and
    epochs (train scores: the rows it trained on, scored the same way), each model's state at
    its last epoch (a model whose run ends early is not updated after it) and its learning
    curve.

    A lone model gets an idle partner: XLA compiles a batch of one matmul differently, and
    a result must not depend on how many models share its program.
    """
    key = group_program_key(group, layout, activations, len(features))
    n_models, width = key.n_models, key.width
    if isinstance(layout, GraphLayout):
        layout.check_codes(features)
    train, predict = compiled_programs(key)
    features_tensor = shared_tensor(features)
    labels_tensor = tf.constant(labels.astype(np.float32))
    initial = np.zeros((n_models, layout.n_params), dtype=np.float32)
    optimizer = np.zeros(n_models, dtype=np.int32)
    settings = np.zeros((n_models, len(SETTINGS)), dtype=np.float32)
    class_weights = np.ones((n_models, max(2, layout.sizes[-1])), dtype=np.float32)
    penalties = np.zeros((2, n_models, layout.n_params), dtype=np.float32)
    seeds = np.zeros(n_models, dtype=np.int32)
    n_slots = dropout_slots(layout.sizes, group[0].network.dropout)
    dropout = np.zeros((2, n_models, n_slots), dtype=np.float32)
    dropout[1] = 1.0
    test_rows = np.zeros((n_models, max(len(t.fold.test) for t in group)), dtype=np.int32)
    train_rows = np.zeros((n_models, max(len(t.fold.train) for t in group)), dtype=np.int32)
    first = np.zeros_like(initial)
    second = np.zeros_like(initial)
    third = np.zeros_like(initial)
    steps = np.zeros(n_models, dtype=np.float32)
    product = np.ones(n_models, dtype=np.float32)  # Nadam's u_product
    for index, trajectory in enumerate(group):
        optimizer[index] = FAST_OPTIMIZERS.index(trajectory.network.optimizer)
        settings[index] = setting_vector(trajectory.network)
        if trajectory.start is None:
            initial[index] = layout.flatten(initial_weights(trajectory.model, trajectory.seed))
            # Adagrad's accumulator starts at its initial_accumulator_value, other slots at 0.
            first[index] = settings[index, SETTINGS.index("initial_accumulator_value")]
        else:
            state = _fast_state(trajectory.start, layout)
            initial[index], first[index], second[index], third[index] = state[:4]
            steps[index], product[index] = state[4:]
        if trajectory.class_weights is not None:
            class_weights[index, : len(trajectory.class_weights)] = trajectory.class_weights
        penalties[:, index] = penalty_vectors(layout, trajectory.network)
        seeds[index] = trajectory.seed
        dropout[:, index] = dropout_vectors(trajectory.network)
        test_rows[index, : len(trajectory.fold.test)] = trajectory.fold.test
        train_rows[index, : len(trajectory.fold.train)] = trajectory.fold.train
    params = tf.constant(initial)
    first, second, third = tf.constant(first), tf.constant(second), tf.constant(third)
    steps, product = tf.constant(steps), tf.constant(product)
    optimizer_tensor, settings_tensor = tf.constant(optimizer), tf.constant(settings)
    class_weights_tensor, penalties_tensor = tf.constant(class_weights), tf.constant(penalties)
    seeds_tensor, dropout_tensor = tf.constant(seeds), tf.constant(dropout)
    scores: list[EpochScores] = [{} for _ in group]
    curves = CurveRecorder(group, n_models, labels, key.loss)
    stopper = EarlyStopping(group)
    for start, stop, reached in segments(group):
        rows = chunk_rows(group, start, stop, n_models, width)
        rows[:, sorted(stopper.stopped), :] = -1  # a stopped model takes no more steps
        step_losses = np.zeros((CHUNK_STEPS, n_models), dtype=np.float32)
        if (rows >= 0).any():
            rates = learning_rates(group, settings, steps.numpy(), rows, stop - start)
            params, first, second, steps, third, product, losses = train(
                params, first, second, steps, features_tensor, labels_tensor,
                tf.constant(rows), tf.constant(stop - start, tf.int32), optimizer_tensor,
                settings_tensor, third, product, class_weights_tensor, penalties_tensor,
                seeds_tensor, dropout_tensor, tf.constant(rates),
            )  # fmt: skip
            step_losses = losses.numpy()
        curves.add_steps(start, stop, step_losses, rows)
        curves.measure(
            stop,
            lambda rows, now=params: forward_logits(
                now, tf.gather(features_tensor, rows), layout, activations
            ),
            lambda now=params: penalty_terms(now, penalties),
        )
        stopper.epoch_end(stop, curves, params)
        if reached:
            scored = stopper.scoring_params(params)
            outputs = predict_in_blocks(predict, scored, features_tensor, test_rows)
            on_train = predict_in_blocks(predict, scored, features_tensor, train_rows)
            for index, epochs in reached:
                fold = group[index].fold
                scores[index][epochs] = (
                    _scores(key.loss, outputs[index], labels, fold.test, scorers),
                    _scores(key.loss, on_train[index], labels, fold.train, scorers),
                )
    # After training, a restoring model holds its best weights (Keras' on_train_end).
    final = [
        array.numpy()
        for array in (stopper.scoring_params(params), first, second, third, steps, product)
    ]
    learned = [
        curve if trained is None else curve.up_to(trained)
        for curve, trained in zip(curves.curves(), stopper.trained, strict=True)
    ]
    states = [
        Checkpoint(
            engine="fast",
            epochs=trajectory.epochs,
            arrays={
                name: np.array(array[index]) for name, array in zip(FAST_STATE, final, strict=True)
            }
            | learned[index].arrays(),
        )
        for index, trajectory in enumerate(group)
    ]
    return scores, states, learned, stopper.trained


def shared_tensor(features: np.ndarray) -> tf.Tensor:
    """The features as a tensor on their own memory (DLPack), copied first only when
    TensorFlow cannot take them as they are: `tf.constant` copies a large array twice over
    (RSS), per group, and a stacked matrix of 100,000-row views is hundreds of MiB."""
    if not is_aligned_float32(features):
        aligned = aligned_float32(features.shape)
        aligned[...] = features
        features = aligned
    return tf.experimental.dlpack.from_dlpack(features.__dlpack__())


# A fast-engine checkpoint's arrays: params, the three optimizer slots, Keras' iterations and
# Nadam's u_product (tasks.records.Checkpoint).
FAST_STATE = ("params", "first", "second", "third", "steps", "product")


def _fast_state(checkpoint: Checkpoint, layout: Layout | GraphLayout) -> tuple:
    """(params, first, second, third, steps, product) of a fast-engine checkpoint, checked
    against the layout."""
    if checkpoint.engine != "fast":
        raise ValueError(f"a {checkpoint.engine!r} checkpoint cannot continue on the fast engine")
    arrays = checkpoint.arrays
    vectors = [np.asarray(arrays[name], dtype=np.float32) for name in FAST_STATE[:4]]
    if any(vector.shape != (layout.n_params,) for vector in vectors):
        raise ValueError(f"checkpoint shapes do not match {layout.n_params} parameters")
    return (*vectors, float(arrays["steps"]), float(arrays["product"]))


def stack_views(
    group: list[Trajectory], views: FoldFeatures, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One feature matrix for the group: a copy per distinct (fold, preprocessing) view, and
    each trajectory's fold shifted to its copy's rows (without preprocessing: one copy, as is)."""
    offsets: dict[tuple, int] = {}
    blocks: list[tuple[int, list[int], ModelParams]] = []
    n_rows = len(labels)
    for trajectory in group:
        key = views.key(trajectory.fold.index, trajectory.model)
        if key not in offsets:
            offsets[key] = len(blocks) * n_rows
            blocks.append((trajectory.fold.index, trajectory.fold.train, trajectory.model))
        offset = offsets[key]
        if offset:
            fold = trajectory.fold
            trajectory.fold = Fold(
                index=fold.index,
                train=[row + offset for row in fold.train],
                test=[row + offset for row in fold.test],
            )
            trajectory.validation = [row + offset for row in trajectory.validation]
    # One matrix for every group of this process that stacks the same views (views.stacked).
    return views.stacked(blocks), np.tile(labels, len(blocks))


def train_stacked(
    features: np.ndarray,
    labels: np.ndarray,
    fold_by_index: dict[int, Fold],
    jobs: list[FitJob],
    run_seed: int,
    initial_weights: InitialWeightsFunction,
    zero_columns: tuple[int, ...] = (),
    scorers: tuple[ScorerSpec, ...] | list[ScorerSpec] = (),
    classes: list | None = None,
    user_rows: UserRows | None = None,
    user_data_key: str | None = None,
) -> list[FitResult]:
    """Train every job's trajectory and score each job at its epoch checkpoint (`classes`:
    meta's classes_, in encoding order; default sorted; `user_rows`: the rows as the user
    gave them, for a Pipeline's own transformers; `user_data_key`: what they are made of,
    tasks.data.user_transformer.rows_key).

    One program per architecture and batch size: padding a batch to a wider program changes
    the float summation order, so a fit's result would depend on its neighbours.
    """
    started = time.perf_counter()
    assert jobs[0].network is not None
    task = jobs[0].network.task
    classes, encoded = classes_and_targets(labels, task, classes)
    views = FoldFeatures(features, zero_columns, user_rows, user_data_key)
    results: dict[tuple[int, int], FitResult] = {}
    for group in program_groups(jobs, fold_by_index, run_seed, labels):
        for trajectory in group:
            trajectory.class_weights = class_weight_vector(trajectory.model, classes)
        layout, activations = layout_of(group[0].network), group[0].network.activations
        group_features, group_labels = stack_views(group, views, encoded)
        scores, states, curves, stopped = train_group(
            group, layout, activations, group_features, group_labels, initial_weights, scorers
        )
        outcomes = zip(group, scores, states, curves, stopped, strict=True)
        for trajectory, by_epochs, state, curve, trained in outcomes:
            for job in trajectory.jobs:
                fold_scores, train_scores = by_epochs[job.model.epochs]
                results[job_order(job)] = FitResult(
                    combination=job.combination,
                    params=job.params,
                    fold=job.fold,
                    accuracy=fold_scores.get("accuracy"),
                    loss=loss_on_test_rows(task, fold_scores),
                    scores=fold_scores,
                    train_scores=train_scores,
                    n_train=len(trajectory.fold.train),
                    n_test=len(trajectory.fold.test),
                    fit_seconds=0.0,
                    seed=trajectory.seed,
                    engine="fast",
                    start_epoch=trajectory.first_epoch,
                    curve=curve.up_to(job.model.epochs),
                    stopped_epoch=_stopped_epoch(job.model, trained),
                    # One state per run: the job it ends with carries it.
                    checkpoint=state if job.model.epochs == trajectory.epochs else None,
                )
    share = (time.perf_counter() - started) / max(1, len(jobs))
    return [results[job_order(job)].model_copy(update={"fit_seconds": share}) for job in jobs]


def _stopped_epoch(model: ModelParams, trained: int | None) -> int | None:
    """Epochs an early-stopping fit of `model.epochs` trained (None without early stopping)."""
    if not model.early_stopping:
        return None
    return model.epochs if trained is None else min(trained, model.epochs)


def train_on_all_rows(
    features: np.ndarray,
    labels: np.ndarray,
    model: ModelParams,
    network: DenseNetwork,
    seed: int,
    initial_weights: InitialWeightsFunction,
    classes: list | None = None,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Keras-ordered weights of `model` trained on every row, as the reference refit does.

    `labels` are encoded (0/1, class index or value); `classes` name them for class weights;
    `validation` (features, encoded labels) is measured each epoch (early stopping).
    """
    rows = list(range(len(labels)))
    held: list[int] = []
    if validation is not None and len(validation[1]):
        held = list(range(len(labels), len(labels) + len(validation[1])))
        features = np.concatenate([features, validation[0]])
        labels = np.concatenate([labels, validation[1]])
    trajectory = Trajectory(
        model=model,
        network=network,
        fold=Fold(index=-1, train=rows, test=rows),
        seed=seed,
        validation=held,
    )
    if classes is not None:
        trajectory.class_weights = class_weight_vector(model, np.asarray(classes, dtype=object))
    trajectory.jobs.append(FitJob(combination=0, params={}, model=model, fold=-1))
    layout = layout_of(network)
    features32 = np.ascontiguousarray(features, dtype=np.float32)
    _, [state], _, _ = train_group(
        [trajectory], layout, network.activations, features32, labels, initial_weights
    )
    return layout.unflatten(state.arrays["params"])
