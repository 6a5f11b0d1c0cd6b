"""Fast engine: many MLP fits trained at once as one TensorFlow program.

The tutorial's fits are tiny (a 12-8-1 MLP), so their time goes to per-step and per-fit
overhead, not arithmetic. This engine removes both while reproducing the reference engine
(one scikeras fit per fold) step for step:

* weights of M models are stacked (`[M, P]` flat vectors) and every step updates all of them
  with batched matmuls, inside one compiled loop (`tf.while_loop` under XLA);
* each model keeps its own rows, batch order (`epoch_order`), batch size, optimizer and
  Keras' exact update rule; padding rows carry zero weight and an idle model is not updated;
* epochs are prefixes (the fit seed ignores epochs), so jobs differing only in epochs share
  one trajectory and are scored at checkpoints.

Anything else (another builder, loss or optimizer) falls back to the reference engine.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from tasks.config import ModelParams
from tasks.model_factory import seeded_initializer
from tasks.training import FitJob, FitResult, Fold, binary_log_loss, epoch_order, fit_seed

FAST_OPTIMIZERS = ("rmsprop", "adam", "sgd")
FAST_ACTIVATIONS = {
    "relu": tf.nn.relu,
    "tanh": tf.math.tanh,
    "sigmoid": tf.math.sigmoid,
    "elu": tf.nn.elu,
    "selu": tf.nn.selu,
    "softplus": tf.math.softplus,
    "linear": tf.identity,
}
# Keras 3 defaults (keras/src/optimizers/{rmsprop,adam,sgd}.py).
LEARNING_RATES = {"rmsprop": 0.001, "adam": 0.001, "sgd": 0.01}
RMSPROP_RHO, EPSILON = 0.9, 1e-7
ADAM_BETA_1, ADAM_BETA_2 = 0.9, 0.999


def fast_engine_applies(jobs: list[FitJob]) -> bool:
    """True when every job is the registered MLP with an optimizer and loss we reproduce."""
    return all(
        job.model.builder == "mlp"
        and job.model.optimizer in FAST_OPTIMIZERS
        and job.model.activation in FAST_ACTIVATIONS
        and job.model.loss == "binary_crossentropy"
        for job in jobs
    )


@dataclass
class Trajectory:
    """One training run (params without epochs, fold) and the epochs at which it is scored."""

    model: ModelParams
    fold: Fold
    seed: int
    jobs: list[FitJob] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        return max(job.model.epochs for job in self.jobs)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.fold.train) / self.model.batch_size)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def trajectories_of(
    jobs: list[FitJob], fold_by_index: dict[int, Fold], run_seed: int
) -> list[Trajectory]:
    by_key: dict[tuple[str, int], Trajectory] = {}
    for job in jobs:
        key = (job.model.model_dump_json(exclude={"epochs"}), job.fold)
        if key not in by_key:
            model = job.model
            by_key[key] = Trajectory(
                model=model, fold=fold_by_index[job.fold], seed=fit_seed(run_seed, model, job.fold)
            )
        by_key[key].jobs.append(job)
    return list(by_key.values())


def _architecture(model: ModelParams) -> tuple[tuple[int, ...], str]:
    return (model.hidden_layers, model.activation)


def plan_groups(jobs: list[FitJob], workers: int) -> list[list[FitJob]]:
    """Split a run's jobs into task-sized groups: one stacked program per group.

    Jobs sharing a trajectory stay together; groups hold one architecture each; trajectories
    of similar length go together (an idle model still costs its padded share of a step), and
    there are at least `workers` groups when there is enough work, so all threads train.
    """
    if not fast_engine_applies(jobs):
        return [[job] for job in jobs]
    placeholder_folds: dict[int, Fold] = {}
    by_trajectory: dict[tuple[str, int], list[FitJob]] = defaultdict(list)
    for job in jobs:
        by_trajectory[(job.model.model_dump_json(exclude={"epochs"}), job.fold)].append(job)
    by_architecture: dict[tuple, list[list[FitJob]]] = defaultdict(list)
    for trajectory_jobs in by_trajectory.values():
        by_architecture[_architecture(trajectory_jobs[0].model)].append(trajectory_jobs)
    del placeholder_folds
    groups: list[list[list[FitJob]]] = []
    for trajectories in by_architecture.values():
        trajectories.sort(key=lambda t: (-_relative_length(t), t[0].combination, t[0].fold))
        n_groups = max(1, min(workers, len(trajectories)))
        groups.extend(_split_by_length(trajectories, n_groups))
    return [
        sorted((job for trajectory in group for job in trajectory), key=_job_order)
        for group in groups
        if group
    ]


def _relative_length(trajectory_jobs: list[FitJob]) -> float:
    """Steps per row of the trajectory: epochs / batch size (train size is ~equal per fold)."""
    model = trajectory_jobs[0].model
    return max(job.model.epochs for job in trajectory_jobs) / model.batch_size


def _split_by_length(trajectories: list[list[FitJob]], n_groups: int) -> list[list[list[FitJob]]]:
    """Contiguous runs of the length-sorted trajectories, balanced by a group's loop length.

    A group's cost is its longest trajectory times its size (padded steps), so cut the sorted
    list where the cumulative cost splits evenly.
    """
    costs = [_relative_length(t) for t in trajectories]
    total = sum(costs)
    groups: list[list[list[FitJob]]] = [[] for _ in range(n_groups)]
    running = 0.0
    for trajectory, cost in zip(trajectories, costs, strict=True):
        index = min(n_groups - 1, int(running / total * n_groups)) if total else 0
        groups[index].append(trajectory)
        running += cost
    return [group for group in groups if group]


def _job_order(job: FitJob) -> tuple[int, int]:
    return (job.combination, job.fold)


# ---------------------------------------------------------------------------------------------
# The stacked program


@dataclass(frozen=True)
class Layout:
    """Where each layer's kernel and bias sit in a model's flat parameter vector."""

    sizes: tuple[int, ...]  # n_features, hidden..., 1

    @property
    def slices(self) -> list[tuple[int, int, int, int]]:
        """(kernel_start, bias_start, fan_in, fan_out) per layer."""
        offsets, start = [], 0
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            offsets.append((start, start + fan_in * fan_out, fan_in, fan_out))
            start += fan_in * fan_out + fan_out
        return offsets

    @property
    def n_params(self) -> int:
        return sum(i * o + o for i, o in zip(self.sizes[:-1], self.sizes[1:], strict=True))


def _forward_logits(params, x, layout: Layout, activation):
    """Batched forward pass: params [M, P], x [M, B, F] -> logits [M, B]."""
    hidden = x
    n_models = tf.shape(params)[0]
    last = len(layout.slices) - 1
    for index, (kernel_start, bias_start, fan_in, fan_out) in enumerate(layout.slices):
        kernel = tf.reshape(
            params[:, kernel_start:bias_start], tf.stack([n_models, fan_in, fan_out])
        )
        bias = params[:, bias_start : bias_start + fan_out]
        hidden = tf.matmul(hidden, kernel) + bias[:, None, :]
        if index < last:
            hidden = activation(hidden)
    return tf.squeeze(hidden, axis=-1)


_PROGRAMS: dict[tuple, tf.types.experimental.GenericFunction] = {}
_FINAL_PARAMETERS = threading.local()  # last group's trained weights, per thread
_PROGRAMS_LOCK = threading.Lock()
TRACE_COUNT = {"train": 0, "predict": 0}


def _programs(layout: Layout, activation_name: str):
    """The compiled train and predict functions for one architecture, built once per process."""
    key = (layout.sizes, activation_name)
    with _PROGRAMS_LOCK:
        if key not in _PROGRAMS:
            _PROGRAMS[key] = _build_programs(layout, FAST_ACTIVATIONS[activation_name])
        return _PROGRAMS[key]


def _build_programs(layout: Layout, activation):
    specs = dict(
        params=tf.TensorSpec([None, None], tf.float32),
        slots=tf.TensorSpec([None, None], tf.float32),
        steps=tf.TensorSpec([None], tf.float32),
    )

    @tf.function(
        jit_compile=True,
        input_signature=[
            specs["params"],  # params [M, P]
            specs["slots"],  # first moment (adam) [M, P]
            specs["slots"],  # second moment / velocity [M, P]
            specs["steps"],  # adam step counter per model [M]
            tf.TensorSpec([None, None], tf.float32),  # features [N, F]
            tf.TensorSpec([None], tf.float32),  # labels [N]
            tf.TensorSpec([None, None, None], tf.int32),  # rows [S, M, B]
            tf.TensorSpec([None, None, None], tf.float32),  # row weights [S, M, B]
            tf.TensorSpec([None], tf.int32),  # optimizer id per model [M]
            tf.TensorSpec([None], tf.float32),  # learning rate per model [M]
        ],
    )
    def train(params, first, second, steps, features, labels, rows, weights, optimizer, lr):
        TRACE_COUNT["train"] += 1
        is_rmsprop = tf.equal(optimizer, 0)[:, None]
        is_adam = tf.equal(optimizer, 1)[:, None]
        lr_column = lr[:, None]

        def step(s, params, first, second, steps):
            batch_rows = rows[s]
            batch_weights = weights[s]
            x = tf.gather(features, batch_rows)
            y = tf.gather(labels, batch_rows)
            count = tf.reduce_sum(batch_weights, axis=1)
            active = count > 0
            with tf.GradientTape() as tape:
                tape.watch(params)
                logits = _forward_logits(params, x, layout, activation)
                per_row = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits)
                # Keras' "sum_over_batch_size": the mean over the real rows of each batch.
                per_model = tf.reduce_sum(per_row * batch_weights, axis=1) / tf.maximum(count, 1.0)
                total = tf.reduce_sum(per_model)
            gradient = tape.gradient(total, params)
            active_column = active[:, None]
            # RMSprop (Keras): v = rho v + (1 - rho) g^2; w -= lr g / sqrt(v + eps)
            rms_second = RMSPROP_RHO * second + (1 - RMSPROP_RHO) * tf.square(gradient)
            rms_delta = lr_column * gradient / tf.sqrt(rms_second + EPSILON)
            # Adam (Keras): m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2);
            # w -= m * lr sqrt(1 - b2^t) / (1 - b1^t) / (sqrt(v) + eps)
            local_step = steps + 1.0
            alpha = (
                lr
                * tf.sqrt(1 - tf.pow(ADAM_BETA_2, local_step))
                / (1 - tf.pow(ADAM_BETA_1, local_step))
            )
            adam_first = first + (gradient - first) * (1 - ADAM_BETA_1)
            adam_second = second + (tf.square(gradient) - second) * (1 - ADAM_BETA_2)
            adam_delta = (adam_first * alpha[:, None]) / (tf.sqrt(adam_second) + EPSILON)
            sgd_delta = lr_column * gradient
            delta = tf.where(is_rmsprop, rms_delta, tf.where(is_adam, adam_delta, sgd_delta))
            new_second = tf.where(is_rmsprop, rms_second, tf.where(is_adam, adam_second, second))
            new_first = tf.where(is_adam, adam_first, first)
            params = tf.where(active_column, params - delta, params)
            first = tf.where(active_column, new_first, first)
            second = tf.where(active_column, new_second, second)
            steps = tf.where(active, local_step, steps)
            return s + 1, params, first, second, steps

        _, params, first, second, steps = tf.while_loop(
            lambda s, *_: s < tf.shape(rows)[0],
            step,
            (tf.constant(0), params, first, second, steps),
        )
        return params, first, second, steps

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.float32),
            tf.TensorSpec([None, None], tf.float32),
            tf.TensorSpec([None, None], tf.int32),
        ]
    )
    def predict(params, features, rows):
        TRACE_COUNT["predict"] += 1
        return tf.math.sigmoid(
            _forward_logits(params, tf.gather(features, rows), layout, activation)
        )

    return train, predict


def initial_parameters(model: ModelParams, seed: int, layout: Layout) -> np.ndarray:
    """The exact initial weights the reference engine's Keras model starts from."""
    flat = np.zeros(layout.n_params, dtype=np.float32)
    for index, (kernel_start, bias_start, fan_in, fan_out) in enumerate(layout.slices):
        initializer = seeded_initializer(model.init, seed, index)
        kernel = np.asarray(initializer((fan_in, fan_out), dtype="float32"))
        flat[kernel_start:bias_start] = kernel.reshape(-1)
    return flat


def _schedule(
    trajectories: list[Trajectory], first_step: int, last_step: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rows and row weights for global steps [first_step, last_step) of every model."""
    n_steps, n_models = last_step - first_step, len(trajectories)
    rows = np.zeros((n_steps, n_models, width), dtype=np.int32)
    weights = np.zeros((n_steps, n_models, width), dtype=np.float32)
    for model_index, trajectory in enumerate(trajectories):
        train = np.asarray(trajectory.fold.train, dtype=np.int32)
        batch, per_epoch = trajectory.model.batch_size, trajectory.steps_per_epoch
        end = min(last_step, trajectory.total_steps)
        for global_step in range(first_step, end):
            epoch, step = divmod(global_step, per_epoch)
            if step == 0 or global_step == first_step:
                order = train[epoch_order(trajectory.seed, epoch, len(train))]
            chunk = order[step * batch : (step + 1) * batch]
            rows[global_step - first_step, model_index, : len(chunk)] = chunk
            weights[global_step - first_step, model_index, : len(chunk)] = 1.0
    return rows, weights


def train_stacked(
    features: np.ndarray,
    labels: np.ndarray,
    fold_by_index: dict[int, Fold],
    jobs: list[FitJob],
    run_seed: int,
) -> list[FitResult]:
    """Train every job's trajectory at once and score each job at its epoch checkpoint."""
    started = time.perf_counter()
    trajectories = trajectories_of(jobs, fold_by_index, run_seed)
    results: dict[tuple[int, int], FitResult] = {}
    by_architecture: dict[tuple, list[Trajectory]] = defaultdict(list)
    for trajectory in trajectories:
        by_architecture[_architecture(trajectory.model)].append(trajectory)
    features32 = tf.constant(np.asarray(features, dtype=np.float32))
    labels32 = tf.constant(np.asarray(labels, dtype=np.float32))
    for (hidden_layers, activation), group in by_architecture.items():
        layout = Layout((features.shape[1], *hidden_layers, 1))
        for trajectory, scores in _train_group(group, layout, activation, features32, labels32):
            for job in trajectory.jobs:
                accuracy, loss = scores[job.model.epochs]
                results[(job.combination, job.fold)] = FitResult(
                    combination=job.combination,
                    params=job.params,
                    fold=job.fold,
                    accuracy=accuracy,
                    loss=loss,
                    n_train=len(trajectory.fold.train),
                    n_test=len(trajectory.fold.test),
                    fit_seconds=0.0,
                    seed=trajectory.seed,
                    engine="fast",
                )
    share = (time.perf_counter() - started) / max(1, len(jobs))
    return [
        results[(job.combination, job.fold)].model_copy(update={"fit_seconds": share})
        for job in jobs
    ]


def _train_group(
    group: list[Trajectory],
    layout: Layout,
    activation: str,
    features: tf.Tensor,
    labels: tf.Tensor,
):
    """Run one stacked program in segments that end at every checkpoint; yield the scores."""
    train, predict = _programs(layout, activation)
    width = max(trajectory.model.batch_size for trajectory in group)
    params = tf.constant(np.stack([initial_parameters(t.model, t.seed, layout) for t in group]))
    first = tf.zeros_like(params)
    second = tf.zeros_like(params)
    steps = tf.zeros([len(group)], tf.float32)
    optimizer = tf.constant(
        [FAST_OPTIMIZERS.index(t.model.optimizer) for t in group], dtype=tf.int32
    )
    lr = tf.constant([LEARNING_RATES[t.model.optimizer] for t in group], dtype=tf.float32)
    checkpoints: dict[int, list[tuple[int, int]]] = defaultdict(list)  # step -> (model, epochs)
    for model_index, trajectory in enumerate(group):
        for epochs in sorted({job.model.epochs for job in trajectory.jobs}):
            checkpoints[epochs * trajectory.steps_per_epoch].append((model_index, epochs))
    test_width = max(len(t.fold.test) for t in group)
    test_rows = np.zeros((len(group), test_width), dtype=np.int32)
    for model_index, trajectory in enumerate(group):
        test_rows[model_index, : len(trajectory.fold.test)] = trajectory.fold.test
    test_rows_tensor = tf.constant(test_rows)
    label_values = labels.numpy()
    scores: list[dict[int, tuple[float, float]]] = [{} for _ in group]
    position = 0
    for boundary in sorted(checkpoints):
        rows, weights = _schedule(group, position, boundary, width)
        params, first, second, steps = train(
            params, first, second, steps, features, labels,
            tf.constant(rows), tf.constant(weights), optimizer, lr,
        )  # fmt: skip
        position = boundary
        probabilities = predict(params, features, test_rows_tensor).numpy()
        for model_index, epochs in checkpoints[boundary]:
            n_test = len(group[model_index].fold.test)
            p = probabilities[model_index, :n_test]
            truth = label_values[test_rows[model_index, :n_test]]
            # scikeras' rule: class 1 where p > 1 - p (argmax of [1 - p, p]; ties go to 0).
            predicted = (p > (np.float32(1) - p)).astype(np.float32)
            accuracy = float(np.mean(predicted == truth))
            scores[model_index][epochs] = (accuracy, binary_log_loss(truth, p))
    _FINAL_PARAMETERS.params = params.numpy()
    return list(zip(group, scores, strict=True))


def train_on_all_rows(
    features: np.ndarray, labels: np.ndarray, model: ModelParams, seed: int
) -> list[np.ndarray]:
    """Keras-ordered weights of `model` trained on every row, as the reference refit does."""
    rows = list(range(len(labels)))
    trajectory = Trajectory(model=model, fold=Fold(index=-1, train=rows, test=rows), seed=seed)
    trajectory.jobs.append(FitJob(combination=0, params={}, model=model, fold=-1))
    layout = Layout((features.shape[1], *model.hidden_layers, 1))
    _train_group(
        [trajectory],
        layout,
        model.activation,
        tf.constant(np.asarray(features, dtype=np.float32)),
        tf.constant(np.asarray(labels, dtype=np.float32)),
    )
    flat = _FINAL_PARAMETERS.params[0]
    weights = []
    for kernel_start, bias_start, fan_in, fan_out in layout.slices:
        weights.append(flat[kernel_start:bias_start].reshape(fan_in, fan_out))
        weights.append(flat[bias_start : bias_start + fan_out])
    return weights
