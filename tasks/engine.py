"""Fast engine: many MLP fits trained at once as one compiled TensorFlow program.

The tutorial's fits are tiny (an 8-12-8-1 MLP), so their time goes to per-step and per-fit
overhead, not arithmetic. This engine removes both while reproducing the reference engine
(one scikeras fit per fold) step for step:

* weights of M models are stacked (`[M, P]` flat vectors) and every step updates all of them
  with batched matmuls, inside one XLA-compiled `tf.while_loop` (~0.01 ms/step alone, ~3 us
  more per stacked model, against ~1.5 ms/step for a Keras fit);
* each model keeps its own rows, batch order (`epoch_order`), batch size, optimizer and
  Keras' exact update rule; padding rows (-1) carry no weight and a model without real rows
  in a step is not updated at all (Adam's step counter and moments only advance on real steps);
* epochs are prefixes (the fit seed ignores epochs), so jobs differing only in epochs share
  one trajectory and are scored at checkpoints;
* preprocessing (fitted per fold on its training rows) gives a trajectory its own feature
  matrix: a program holds one stacked copy per distinct (fold, preprocessing) and each model's
  row indices point into its own copy, so the arithmetic is the same as with a single matrix.

What it trains is what inspection of the user's model found (tasks.inspection): a chain of
Dense layers with their own widths, activations and biases, binary cross-entropy, and RMSprop,
Adam or SGD with their settings (per model, so one program mixes optimizers). Initial weights
are the ones the model function builds under the fit's seed. Anything else runs on the
reference engine (tasks.training).
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import tensorflow as tf

from tasks.config import ModelParams
from tasks.metrics import binary_scores
from tasks.preprocess import FoldFeatures
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

FAST_OPTIMIZERS = ("rmsprop", "adam", "sgd")
# Keras 3 activations with default arguments are exactly these TF ops.
FAST_ACTIVATIONS: dict[str, Callable[[tf.Tensor], tf.Tensor]] = {
    "relu": tf.nn.relu,
    "tanh": tf.math.tanh,
    "sigmoid": tf.math.sigmoid,
    "elu": tf.nn.elu,
    "selu": tf.nn.selu,
    "softplus": tf.math.softplus,
    "gelu": partial(tf.nn.gelu, approximate=False),
    "linear": tf.identity,
}
# Per-model optimizer settings, in the order the program takes them (tasks.inspection reads
# them off the user's compiled optimizer). Keras computes `1 - rho` and `1 - beta` in Python
# doubles before casting, so those are passed precomputed, not derived in float32.
SETTINGS = (
    "learning_rate",
    "rho",
    "one_minus_rho",
    "beta_1",
    "one_minus_beta_1",
    "beta_2",
    "one_minus_beta_2",
    "epsilon",
    "momentum",
    "nesterov",
)

# Steps per program call: a fixed shape, so one compiled program serves every call of a group
# shape; the loop itself stops at the call's real step count.
CHUNK_STEPS = 1024
MAX_CACHED_PROGRAMS = 32
MIN_STACKED_MODELS = 2
# Cost model for planning, in model-steps (one stacked model for one step, ~3.5 us measured
# on 2 cores): a step also costs ~10 us whatever the stack, i.e. STEP_OVERHEAD_MODELS more
# models, and a group a fixed GROUP_OVERHEAD (program call, scoring, task bookkeeping).
STEP_OVERHEAD_MODELS = 3.0
GROUP_OVERHEAD = 20_000.0
NOMINAL_TRAIN_ROWS = 512


def fast_engine_applies(jobs: list[FitJob]) -> bool:
    """True when inspection found a network the fast engine reproduces for every job."""
    return all(job.network is not None for job in jobs)


def setting_vector(network: DenseNetwork) -> list[float]:
    """The network's optimizer settings in SETTINGS order (unused ones are zero)."""
    settings = dict(network.settings)
    for name in ("rho", "beta_1", "beta_2"):
        if name in settings:
            settings[f"one_minus_{name}"] = 1.0 - settings[name]
    return [float(settings.get(name, 0.0)) for name in SETTINGS]


def encode_binary_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(classes, 0/1 per row) in sorted order, as scikeras' OrdinalEncoder encodes them."""
    classes, encoded = np.unique(labels, return_inverse=True)
    return classes, encoded.astype(np.int64)


def _trajectory_id(job: FitJob) -> tuple[str, int, int]:
    """Jobs with equal ids differ only in epochs: one training run scored at checkpoints.
    A run continued from a checkpoint is another run (it starts at another epoch)."""
    return (job.model.model_dump_json(exclude={"epochs"}), job.fold, job.start_epoch)


def _architecture(job: FitJob) -> tuple:
    assert job.network is not None
    return job.network.architecture


def _job_order(job: FitJob) -> tuple[int, int]:
    return (job.combination, job.fold)


# ---------------------------------------------------------------------------------------------
# Planning: which jobs share a program


def plan_groups(jobs: list[FitJob], workers: int) -> list[list[FitJob]]:
    """Split a run's jobs into task-sized groups, longest first, for `workers` threads.

    A group is one stacked program, which runs as long as its longest trajectory and costs
    every stacked model each step, so groups hold trajectories of one architecture, batch size
    and length (no idle padding). Each such class is cut into near-equal pieces of at most
    `cap` trajectories; the cap is the one whose simulated longest-first schedule on `workers`
    threads finishes first (ties: fewer groups). Jobs of one trajectory stay together.
    """
    singles = [[job] for job in jobs if job.network is None]
    trajectories: dict[tuple[str, int, int], list[FitJob]] = defaultdict(list)
    for job in jobs:
        if job.network is not None:
            trajectories[_trajectory_id(job)].append(job)
    if not trajectories:
        return singles
    classes: dict[tuple, list[list[FitJob]]] = defaultdict(list)
    for members in trajectories.values():
        model = members[0].model
        length = max(job.model.epochs - job.start_epoch for job in members)
        classes[(_architecture(members[0]), model.batch_size, length)].append(members)
    ordered = [
        sorted(members, key=lambda t: _job_order(t[0]))
        for _, members in sorted(classes.items(), key=lambda item: repr(item[0]))
    ]
    largest = max(len(members) for members in ordered)
    plans = [
        [piece for members in ordered for piece in _split_evenly(members, cap)]
        for cap in range(largest, 0, -1)
    ]
    # min() keeps the first of equals: the plan with the fewest groups.
    pieces = min(plans, key=lambda plan: _simulated_makespan(list(map(_group_cost, plan)), workers))
    pieces = sorted(pieces, key=_group_cost, reverse=True)
    grouped = [sorted((job for t in piece for job in t), key=_job_order) for piece in pieces]
    return grouped + singles


def _split_evenly(members: list[list[FitJob]], cap: int) -> list[list[list[FitJob]]]:
    """Near-equal contiguous pieces of at most `cap` trajectories (equal sizes share a shape)."""
    count = math.ceil(len(members) / cap)
    size, extra = divmod(len(members), count)
    pieces, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        pieces.append(members[start:end])
        start = end
    return pieces


def _group_cost(piece: list[list[FitJob]]) -> float:
    """Estimated cost in model-steps: loop length times (models + per-step overhead)."""
    model = piece[0][0].model
    epochs = max(job.model.epochs - job.start_epoch for trajectory in piece for job in trajectory)
    steps = epochs * math.ceil(NOMINAL_TRAIN_ROWS / model.batch_size)
    return steps * (len(piece) + STEP_OVERHEAD_MODELS) + GROUP_OVERHEAD


def _simulated_makespan(costs: list[float], workers: int) -> float:
    """Finish time when a FIFO pool of `workers` threads takes the groups longest first."""
    finish = [0.0] * max(1, workers)
    for cost in sorted(costs, reverse=True):
        heapq.heapreplace(finish, finish[0] + cost)
    return max(finish)


# ---------------------------------------------------------------------------------------------
# Trajectories and their batch schedules


@dataclass
class Trajectory:
    """One training run (params without epochs, fold) and the epochs at which it is scored."""

    model: ModelParams
    network: DenseNetwork
    fold: Fold  # its training rows less any validation rows (`fit__validation_split`)
    seed: int
    jobs: list[FitJob] = field(default_factory=list)
    start: Checkpoint | None = None  # continue from this state instead of the initial weights
    validation: list[int] = field(default_factory=list)  # rows measured after every epoch

    @property
    def epochs(self) -> int:
        return max(job.model.epochs for job in self.jobs)

    @property
    def first_epoch(self) -> int:
        return 0 if self.start is None else self.start.epochs

    @property
    def batch(self) -> int:
        """Rows in a full batch: a batch size above the training rows is one whole batch."""
        return min(self.model.batch_size, len(self.fold.train))

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.fold.train) / self.model.batch_size)

    @property
    def total_steps(self) -> int:
        """Steps this run takes (from its first epoch): step numbers below count from there."""
        return (self.epochs - self.first_epoch) * self.steps_per_epoch

    def epoch_rows(self, epoch: int) -> np.ndarray:
        """Row indices of each batch of one epoch, [steps_per_epoch, batch], padded with -1."""
        train = np.asarray(self.fold.train, dtype=np.int32)
        padded = np.full(self.steps_per_epoch * self.batch, -1, dtype=np.int32)
        padded[: len(train)] = train[epoch_order(self.seed, epoch, len(train), self.model.shuffle)]
        return padded.reshape(self.steps_per_epoch, self.batch)

    def step_rows(self, start: int, stop: int) -> np.ndarray:
        """Batch rows of steps [start, stop) of this run (clipped to its end); a continued
        run's step 0 is the first step of its first epoch, in that epoch's order."""
        stop = min(stop, self.total_steps)
        if stop <= start:
            return np.zeros((0, self.batch), dtype=np.int32)
        skipped = self.first_epoch * self.steps_per_epoch
        start, stop = start + skipped, stop + skipped
        first, last = start // self.steps_per_epoch, (stop - 1) // self.steps_per_epoch
        rows = np.concatenate([self.epoch_rows(epoch) for epoch in range(first, last + 1)])
        offset = first * self.steps_per_epoch
        return rows[start - offset : stop - offset]


def trajectories_of(
    jobs: list[FitJob],
    fold_by_index: dict[int, Fold],
    run_seed: int,
    labels: np.ndarray | None = None,
) -> list[Trajectory]:
    """One Trajectory per training run; `labels` (classes) stratify validation parts."""
    by_id: dict[tuple[str, int], Trajectory] = {}
    for job in jobs:
        key = _trajectory_id(job)
        if key not in by_id:
            assert job.network is not None
            seed = fit_seed(run_seed, job.model, job.fold)
            fold = fold_by_index[job.fold]
            train, held = split_validation(fold.train, job.model.validation_split, seed, labels)
            by_id[key] = Trajectory(
                model=job.model,
                network=job.network,
                fold=Fold(index=fold.index, train=train, test=fold.test),
                seed=seed,
                start=job.start,
                validation=held,
            )
        by_id[key].jobs.append(job)
    return list(by_id.values())


def _chunk_rows(group: list[Trajectory], start: int, n_models: int, width: int) -> np.ndarray:
    """[CHUNK_STEPS, n_models, width] batch rows from global step `start`; -1 pads and idles."""
    rows = np.full((CHUNK_STEPS, n_models, width), -1, dtype=np.int32)
    for model_index, trajectory in enumerate(group):
        block = trajectory.step_rows(start, start + CHUNK_STEPS)
        rows[: len(block), model_index, : block.shape[1]] = block
    return rows


# ---------------------------------------------------------------------------------------------
# The stacked program


@dataclass(frozen=True)
class Layout:
    """Where each layer's kernel and bias sit in a model's flat parameter vector."""

    sizes: tuple[int, ...]  # n_features, units of each Dense layer (the output's last: 1)
    biases: tuple[bool, ...] = ()  # per Dense layer (default: all)

    def has_bias(self, layer: int) -> bool:
        return self.biases[layer] if self.biases else True

    @property
    def slices(self) -> list[tuple[int, int, int, int]]:
        """(kernel_start, bias_start, fan_in, fan_out) per layer; a layer without a bias has
        an empty bias slice (bias_start to bias_start)."""
        offsets, start = [], 0
        for layer, (fan_in, fan_out) in enumerate(
            zip(self.sizes[:-1], self.sizes[1:], strict=True)
        ):
            offsets.append((start, start + fan_in * fan_out, fan_in, fan_out))
            start += fan_in * fan_out + (fan_out if self.has_bias(layer) else 0)
        return offsets

    @property
    def n_params(self) -> int:
        kernel_start, bias_start, _, fan_out = self.slices[-1]
        return bias_start + (fan_out if self.has_bias(len(self.sizes) - 2) else 0)

    @classmethod
    def of(cls, network: DenseNetwork) -> Layout:
        return cls(network.sizes, network.biases)

    def flatten(self, weights: list[np.ndarray]) -> np.ndarray:
        """Keras' weight list (kernel, then bias if any, per layer) as one flat vector."""
        flat = np.zeros(self.n_params, dtype=np.float32)
        arrays = iter(weights)
        for layer, (kernel_start, bias_start, fan_in, fan_out) in enumerate(self.slices):
            flat[kernel_start:bias_start] = np.asarray(next(arrays)).reshape(fan_in * fan_out)
            if self.has_bias(layer):
                flat[bias_start : bias_start + fan_out] = np.asarray(next(arrays))
        return flat

    def unflatten(self, flat: np.ndarray) -> list[np.ndarray]:
        """The flat vector back in Keras' weight order, for `set_weights`."""
        weights = []
        for layer, (kernel_start, bias_start, fan_in, fan_out) in enumerate(self.slices):
            weights.append(flat[kernel_start:bias_start].reshape(fan_in, fan_out))
            if self.has_bias(layer):
                weights.append(flat[bias_start : bias_start + fan_out])
        return weights


def _forward_logits(
    params: tf.Tensor, x: tf.Tensor, layout: Layout, activations: tuple[str, ...]
) -> tf.Tensor:
    """Batched forward pass: params [M, P], x [M, B, F] -> logits [M, B] (the output's
    sigmoid is left to the loss, as Keras does for binary cross-entropy)."""
    hidden = x
    n_models = tf.shape(params)[0]
    last = len(layout.slices) - 1
    for index, (kernel_start, bias_start, fan_in, fan_out) in enumerate(layout.slices):
        kernel = tf.reshape(
            params[:, kernel_start:bias_start], tf.stack([n_models, fan_in, fan_out])
        )
        hidden = tf.matmul(hidden, kernel)
        if layout.has_bias(index):
            hidden = hidden + params[:, bias_start : bias_start + fan_out][:, None, :]
        if index < last:
            hidden = FAST_ACTIVATIONS[activations[index]](hidden)
    return tf.squeeze(hidden, axis=-1)


def _keras_update(
    gradient: tf.Tensor,
    first: tf.Tensor,
    second: tf.Tensor,
    steps: tf.Tensor,
    optimizer: tf.Tensor,
    settings: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(delta, first, second) per model, as Keras' optimizers compute them (same op order).

    `settings` is [M, len(SETTINGS)]: each model's own learning rate, rho, betas, epsilon...
    """
    value = {name: settings[:, index] for index, name in enumerate(SETTINGS)}
    column = {name: vector[:, None] for name, vector in value.items()}
    lr = column["learning_rate"]
    is_rmsprop = tf.equal(optimizer, 0)[:, None]
    is_adam = tf.equal(optimizer, 1)[:, None]
    # RMSprop: v = rho v + (1 - rho) g^2; w -= lr g / sqrt(v + eps)
    rms_second = column["rho"] * second + column["one_minus_rho"] * tf.square(gradient)
    rms_delta = lr * gradient / tf.sqrt(rms_second + column["epsilon"])
    # Adam: m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); w -= m alpha / (sqrt(v) + eps)
    local_step = steps + 1.0
    beta_1_power = tf.pow(value["beta_1"], local_step)
    beta_2_power = tf.pow(value["beta_2"], local_step)
    alpha = value["learning_rate"] * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
    adam_first = first + (gradient - first) * column["one_minus_beta_1"]
    adam_second = second + (tf.square(gradient) - second) * column["one_minus_beta_2"]
    adam_delta = (adam_first * alpha[:, None]) / (tf.sqrt(adam_second) + column["epsilon"])
    # SGD: m = momentum m - g lr; w += m (nesterov: w += momentum m - g lr); no momentum:
    # w -= g lr. `first` holds m.
    momentum = column["momentum"]
    velocity = first * momentum - gradient * lr
    nesterov_step = velocity * momentum - gradient * lr
    with_momentum = tf.where(column["nesterov"] > 0, -nesterov_step, -velocity)
    has_momentum = tf.not_equal(momentum, 0.0)
    sgd_delta = tf.where(has_momentum, with_momentum, gradient * lr)
    sgd_first = tf.where(has_momentum, velocity, first)
    delta = tf.where(is_rmsprop, rms_delta, tf.where(is_adam, adam_delta, sgd_delta))
    new_second = tf.where(is_rmsprop, rms_second, tf.where(is_adam, adam_second, second))
    new_first = tf.where(is_adam, adam_first, tf.where(is_rmsprop, first, sgd_first))
    return delta, new_first, new_second


@dataclass(frozen=True)
class ProgramKey:
    """Everything a compiled program's shapes depend on."""

    sizes: tuple[int, ...]
    activations: tuple[str, ...]
    biases: tuple[bool, ...]
    n_models: int
    width: int
    n_rows: int


_PROGRAMS: OrderedDict[ProgramKey, tuple[Callable, Callable]] = OrderedDict()
_PROGRAMS_LOCK = threading.Lock()
TRACE_COUNT = {"train": 0, "predict": 0}
CACHE_STATS = {"hits": 0, "misses": 0}


def _programs(key: ProgramKey) -> tuple[Callable, Callable]:
    """The compiled train and predict functions for one group shape, built once per process.

    Every input shape is fixed, so each program is traced and XLA-compiled exactly once; the
    least recently used program is dropped beyond MAX_CACHED_PROGRAMS to bound memory.
    """
    with _PROGRAMS_LOCK:
        if key in _PROGRAMS:
            CACHE_STATS["hits"] += 1
            _PROGRAMS.move_to_end(key)
        else:
            CACHE_STATS["misses"] += 1
            _PROGRAMS[key] = _build_programs(key)
            while len(_PROGRAMS) > MAX_CACHED_PROGRAMS:
                _PROGRAMS.popitem(last=False)
        return _PROGRAMS[key]


def _build_programs(key: ProgramKey) -> tuple[Callable, Callable]:
    layout, activations = Layout(key.sizes, key.biases), key.activations
    models, params = key.n_models, layout.n_params
    state = tf.TensorSpec([models, params], tf.float32)

    @tf.function(
        jit_compile=True,
        input_signature=[
            state,  # params
            state,  # first moment (adam)
            state,  # second moment (adam) / velocity (rmsprop)
            tf.TensorSpec([models], tf.float32),  # real steps taken per model (adam's t)
            tf.TensorSpec([key.n_rows, key.sizes[0]], tf.float32),  # features
            tf.TensorSpec([key.n_rows], tf.float32),  # labels
            tf.TensorSpec([CHUNK_STEPS, models, key.width], tf.int32),  # batch rows, -1 = none
            tf.TensorSpec([], tf.int32),  # steps to run in this call
            tf.TensorSpec([models], tf.int32),  # optimizer per model (FAST_OPTIMIZERS index)
            tf.TensorSpec([models, len(SETTINGS)], tf.float32),  # its settings per model
        ],
    )
    def train(params, first, second, steps, features, labels, rows, n_steps, optimizer, settings):
        TRACE_COUNT["train"] += 1

        def step(s, params, first, second, steps, losses):
            batch_rows = rows[s]
            weights = tf.cast(batch_rows >= 0, tf.float32)
            safe_rows = tf.maximum(batch_rows, 0)
            x, y = tf.gather(features, safe_rows), tf.gather(labels, safe_rows)
            count = tf.reduce_sum(weights, axis=1)
            with tf.GradientTape() as tape:
                tape.watch(params)
                logits = _forward_logits(params, x, layout, activations)
                # Keras computes binary cross-entropy from the sigmoid's logits.
                per_row = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits)
                # "sum_over_batch_size": the mean over the real rows of each model's batch.
                per_model = tf.reduce_sum(per_row * weights, axis=1) / tf.maximum(count, 1.0)
                total = tf.reduce_sum(per_model)
            gradient = tape.gradient(total, params)
            delta, new_first, new_second = _keras_update(
                gradient, first, second, steps, optimizer, settings
            )
            active = count > 0
            column = active[:, None]
            # The batch's summed loss per model (its mean times its rows): the epoch's
            # History loss is reduced from these outside the program.
            losses = tf.tensor_scatter_nd_update(losses, [[s]], [per_model * count])
            return (
                s + 1,
                tf.where(column, params - delta, params),
                tf.where(column, new_first, first),
                tf.where(column, new_second, second),
                tf.where(active, steps + 1.0, steps),
                losses,
            )

        losses = tf.zeros([CHUNK_STEPS, models], tf.float32)
        _, params, first, second, steps, losses = tf.while_loop(
            lambda s, *_: s < n_steps,
            step,
            (tf.constant(0), params, first, second, steps, losses),
        )
        return params, first, second, steps, losses

    @tf.function(
        input_signature=[
            state,
            tf.TensorSpec([key.n_rows, key.sizes[0]], tf.float32),
            tf.TensorSpec([models, None], tf.int32),
        ]
    )
    def predict(params, features, rows):
        TRACE_COUNT["predict"] += 1
        return tf.math.sigmoid(
            _forward_logits(params, tf.gather(features, rows), layout, activations)
        )

    # Traced here, not on first call: tracing once per shape is the design, not a warning.
    train.get_concrete_function()
    predict.get_concrete_function()
    return train, predict


def _scores(
    probabilities: np.ndarray, labels: np.ndarray, test_rows: list[int]
) -> dict[str, float]:
    """Every binary metric, as the reference computes them from predict_proba."""
    return binary_scores(labels[test_rows], probabilities[: len(test_rows)])


def _segments(group: list[Trajectory]) -> Iterator[tuple[int, int, list[tuple[int, int]]]]:
    """(start, stop, checkpoints reached at stop) per program call: cut at chunk ends and at
    every checkpoint, so a checkpoint sees exactly the state a shorter run ends with."""
    checkpoints: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for model_index, trajectory in enumerate(group):
        for epochs in sorted({job.model.epochs for job in trajectory.jobs}):
            steps = (epochs - trajectory.first_epoch) * trajectory.steps_per_epoch
            checkpoints[steps].append((model_index, epochs))
        if trajectory.validation or trajectory.model.early_stopping:
            # a program call ends at every epoch, to measure it (and maybe stop)
            for epoch in range(1, trajectory.epochs - trajectory.first_epoch + 1):
                checkpoints[epoch * trajectory.steps_per_epoch] += []
    start = 0
    for boundary in sorted(checkpoints):
        while start < boundary:
            stop = min(boundary, start + CHUNK_STEPS)
            yield start, stop, checkpoints[boundary] if stop == boundary else []
            start = stop


# A fit's initial weights in Keras order, from (its params, its seed): the model function
# built under that seed (tasks.training.InitialWeights).
InitialWeights = Callable[[ModelParams, int], list[np.ndarray]]


def _train_group(
    group: list[Trajectory],
    layout: Layout,
    activations: tuple[str, ...],
    features: np.ndarray,
    labels: np.ndarray,
    initial_weights: InitialWeights,
) -> tuple[list[dict[int, dict[str, float]]], list[Checkpoint], list[LearningCurve]]:
    """Run one stacked program over the group; scores per model and epochs, each model's
    state at its last epoch (a model whose run ends early is not updated after it) and its
    learning curve.

    A lone model gets an idle partner: XLA compiles a batch of one matmul differently, and
    a result must not depend on how many models share its program.
    """
    n_models = max(MIN_STACKED_MODELS, len(group))
    width = max(trajectory.batch for trajectory in group)
    key = ProgramKey(layout.sizes, activations, layout.biases, n_models, width, len(features))
    train, predict = _programs(key)
    features_tensor = tf.constant(features)
    labels_tensor = tf.constant(labels.astype(np.float32))
    initial = np.zeros((n_models, layout.n_params), dtype=np.float32)
    optimizer = np.zeros(n_models, dtype=np.int32)
    settings = np.zeros((n_models, len(SETTINGS)), dtype=np.float32)
    test_rows = np.zeros((n_models, max(len(t.fold.test) for t in group)), dtype=np.int32)
    first = np.zeros_like(initial)
    second = np.zeros_like(initial)
    steps = np.zeros(n_models, dtype=np.float32)
    for index, trajectory in enumerate(group):
        if trajectory.start is None:
            initial[index] = layout.flatten(initial_weights(trajectory.model, trajectory.seed))
        else:
            state = _fast_state(trajectory.start, layout)
            initial[index], first[index], second[index], steps[index] = state
        optimizer[index] = FAST_OPTIMIZERS.index(trajectory.network.optimizer)
        settings[index] = setting_vector(trajectory.network)
        test_rows[index, : len(trajectory.fold.test)] = trajectory.fold.test
    params = tf.constant(initial)
    first, second, steps = tf.constant(first), tf.constant(second), tf.constant(steps)
    optimizer_tensor, settings_tensor = tf.constant(optimizer), tf.constant(settings)
    scores: list[dict[int, dict[str, float]]] = [{} for _ in group]
    curves = _CurveRecorder(group, n_models, labels)
    stopper = _EarlyStopping(group)
    for start, stop, reached in _segments(group):
        rows = _chunk_rows(group, start, n_models, width)
        rows[:, sorted(stopper.stopped), :] = -1  # a stopped model takes no more steps
        step_losses = np.zeros((CHUNK_STEPS, n_models), dtype=np.float32)
        if (rows >= 0).any():
            params, first, second, steps, losses = train(
                params, first, second, steps, features_tensor, labels_tensor,
                tf.constant(rows), tf.constant(stop - start, tf.int32), optimizer_tensor,
                settings_tensor,
            )  # fmt: skip
            step_losses = losses.numpy()
        curves.add_steps(start, stop, step_losses, rows)
        curves.measure(
            stop,
            lambda rows, now=params: _forward_logits(
                now, tf.gather(features_tensor, rows), layout, activations
            ),
        )
        stopper.epoch_end(stop, curves, params)
        if reached:
            scored = stopper.scoring_params(params)
            probabilities = predict(scored, features_tensor, tf.constant(test_rows)).numpy()
            for index, epochs in reached:
                scores[index][epochs] = _scores(
                    probabilities[index], labels, group[index].fold.test
                )
    # After training, a restoring model holds its best weights (Keras' on_train_end).
    final = [array.numpy() for array in (stopper.scoring_params(params), first, second, steps)]
    learned = [
        curve if trained is None else curve.up_to(trained)
        for curve, trained in zip(curves.curves(), stopper.trained, strict=True)
    ]
    states = [
        Checkpoint(
            engine="fast",
            epochs=trajectory.epochs,
            arrays={
                name: np.array(array[index])
                for name, array in zip(("params", "first", "second", "steps"), final, strict=True)
            }
            | learned[index].arrays(),
        )
        for index, trajectory in enumerate(group)
    ]
    return scores, states, learned, stopper.trained


class _EarlyStopping:
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

    def epoch_end(self, stop: int, curves: _CurveRecorder, params: tf.Tensor) -> None:
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
            if self._improved(model, current, self.best[index]):
                self.best[index] = current
                if model.restore_best_weights:
                    self.best_params[index] = values[index].copy()
                self.wait[index] = 0
                continue
            if self.wait[index] >= model.patience and trajectory.first_epoch + epoch > 0:
                self.stopped.add(index)
                self.trained[index] = epoch + 1

    @staticmethod
    def _improved(model: ModelParams, current: float, best: float | None) -> bool:
        if best is None:
            return True
        if model.monitor.endswith("accuracy"):
            return current - model.min_delta > best
        return current + model.min_delta < best

    def scoring_params(self, params: tf.Tensor) -> tf.Tensor:
        """The params to score: each restoring model's best so far, the others' own."""
        restored = [i for i, best in enumerate(self.best_params) if best is not None]
        if not restored:
            return params
        values = params.numpy().copy()
        for index in restored:
            values[index] = self.best_params[index]
        return tf.constant(values)


class _CurveRecorder:
    """Per-epoch training loss (from the program's per-step summed losses) and validation loss
    and accuracy (predicted at each epoch's end) of every model of a group."""

    def __init__(self, group: list[Trajectory], n_models: int, labels: np.ndarray):
        self.group, self.n_models, self.labels = group, n_models, labels
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

    def measure(self, stop: int, logits: Callable[[np.ndarray], tf.Tensor]) -> None:
        """Validation loss and accuracy of the models whose epoch ends at step `stop`
        (`logits` of the stacked models for [models, rows] row indices)."""
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
        for index, epoch in ended:
            rows = self.group[index].validation
            loss, accuracy = validation_scores(self.labels[rows], outputs[index, : len(rows)])
            self.val_loss[index][epoch], self.val_accuracy[index][epoch] = loss, accuracy

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


def validation_scores(truth: np.ndarray, logits: np.ndarray) -> tuple[float, float]:
    """(binary cross-entropy, accuracy at 0.5) as Keras evaluates them: the loss from the
    sigmoid's logits (no clipping of saturated probabilities)."""
    z, y = logits.astype(np.float64), truth.astype(np.float64)
    loss = float(np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))))
    return loss, float(np.mean((z > 0) == (y > 0.5)))


def _fast_state(
    checkpoint: Checkpoint, layout: Layout
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(params, first, second, steps) of a fast-engine checkpoint, checked against the layout."""
    if checkpoint.engine != "fast":
        raise ValueError(f"a {checkpoint.engine!r} checkpoint cannot continue on the fast engine")
    arrays = checkpoint.arrays
    vectors = [np.asarray(arrays[name], dtype=np.float32) for name in ("params", "first", "second")]
    if any(vector.shape != (layout.n_params,) for vector in vectors):
        raise ValueError(f"checkpoint shapes do not match {layout.n_params} parameters")
    return vectors[0], vectors[1], vectors[2], float(arrays["steps"])


def stack_views(
    group: list[Trajectory], views: FoldFeatures, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One feature matrix for the group: a copy per distinct (fold, preprocessing) view, and
    each trajectory's fold shifted to its copy's rows (without preprocessing: one copy, as is)."""
    offsets: dict[tuple, int] = {}
    blocks: list[np.ndarray] = []
    n_rows = len(labels)
    for trajectory in group:
        key = views.key(trajectory.fold.index, trajectory.model)
        if key not in offsets:
            offsets[key] = len(blocks) * n_rows
            blocks.append(views.of(trajectory.fold.index, trajectory.fold.train, trajectory.model))
        offset = offsets[key]
        if offset:
            fold = trajectory.fold
            trajectory.fold = Fold(
                index=fold.index,
                train=[row + offset for row in fold.train],
                test=[row + offset for row in fold.test],
            )
            trajectory.validation = [row + offset for row in trajectory.validation]
    features = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
    return np.ascontiguousarray(features, dtype=np.float32), np.tile(labels, len(blocks))


def train_stacked(
    features: np.ndarray,
    labels: np.ndarray,
    fold_by_index: dict[int, Fold],
    jobs: list[FitJob],
    run_seed: int,
    initial_weights: InitialWeights,
    zero_columns: tuple[int, ...] = (),
) -> list[FitResult]:
    """Train every job's trajectory and score each job at its epoch checkpoint.

    One program per architecture and batch size: padding a batch to a wider program changes
    the float summation order, so a fit's result would depend on its neighbours.
    """
    started = time.perf_counter()
    _, encoded = encode_binary_labels(labels)
    views = FoldFeatures(features, zero_columns)
    programs: dict[tuple, list[Trajectory]] = defaultdict(list)
    for trajectory in trajectories_of(jobs, fold_by_index, run_seed, labels):
        programs[(trajectory.network.architecture, trajectory.batch)].append(trajectory)
    results: dict[tuple[int, int], FitResult] = {}
    for ((sizes, activations, biases), _), group in programs.items():
        layout = Layout(sizes, biases)
        group_features, group_labels = stack_views(group, views, encoded)
        scores, states, curves, stopped = _train_group(
            group, layout, activations, group_features, group_labels, initial_weights
        )
        outcomes = zip(group, scores, states, curves, stopped, strict=True)
        for trajectory, by_epochs, state, curve, trained in outcomes:
            for job in trajectory.jobs:
                fold_scores = by_epochs[job.model.epochs]
                results[_job_order(job)] = FitResult(
                    combination=job.combination,
                    params=job.params,
                    fold=job.fold,
                    accuracy=fold_scores["accuracy"],
                    loss=fold_scores["log_loss"],
                    scores=fold_scores,
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
    return [results[_job_order(job)].model_copy(update={"fit_seconds": share}) for job in jobs]


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
    initial_weights: InitialWeights,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Keras-ordered weights of `model` trained on every row (0/1 labels), as the reference
    refit does; `validation` (features, 0/1 labels) is measured each epoch (early stopping)."""
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
    trajectory.jobs.append(FitJob(combination=0, params={}, model=model, fold=-1))
    layout = Layout.of(network)
    features32 = np.ascontiguousarray(features, dtype=np.float32)
    _, [state], _, _ = _train_group(
        [trajectory], layout, network.activations, features32, labels, initial_weights
    )
    return layout.unflatten(state.arrays["params"])
