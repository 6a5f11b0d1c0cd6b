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

What it trains is what inspection of the user's model found (tasks.model.inspection): a chain of
Dense layers with their own widths, activations, biases and L1/L2 regularizers; a sigmoid
(binary cross-entropy), softmax (sparse or one-hot categorical cross-entropy) or linear (MSE,
MAE) output; class weights; and any Keras optimizer foldflow offers (SGD, RMSprop, Adam/AdamW,
Adagrad, Adadelta, Adamax, Nadam) with its settings, weight decay and clipvalue, in Keras'
own op order. SGD, RMSprop and Adam share programs (each model its own rule and settings);
any other optimizer has programs of its own. Initial weights are
the ones the model function builds under the fit's seed. Dropout on a Dense layer's input
is Keras' inverted dropout in training steps only (never when predicting, scoring or
validating), its mask drawn from a counter-based hash of (fit seed, step, layer, batch slot,
unit): it does not depend on the other models of a program, and a continued run draws what
the uninterrupted one would (its masks match Keras' statistically, not bit for bit).
Anything else (EMA, other layers) runs on the reference engine (tasks.train.dispatch).
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
from tensorflow.python.framework import ops as tf_ops

from tasks.config import ModelParams
from tasks.data.preprocess import FoldFeatures
from tasks.metrics import binary_scores, loss_on_test_rows, multiclass_scores, regression_scores
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

FAST_OPTIMIZERS = ("rmsprop", "adam", "sgd", "adagrad", "adadelta", "adamax", "nadam")
# Losses as Keras computes them from a Dense output (binary and categorical cross-entropy
# from the sigmoid's / softmax's logits, which Keras keeps on the activation's output).
FAST_LOSSES = (
    "binary_crossentropy",
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "mean_squared_error",
    "mean_absolute_error",
)
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
# Per-model optimizer settings, in the order the program takes them (tasks.model.inspection reads
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
    "centered",  # rmsprop
    "amsgrad",  # adam
    "initial_accumulator_value",  # adagrad
    "weight_decay",  # any optimizer (AdamW is Adam with it)
    "clipvalue",  # any optimizer
    "clipnorm",  # any optimizer: per variable (kernel, bias)
    "global_clipnorm",  # any optimizer: over all variables
    "inverse_global_clipnorm",  # 1 / global_clipnorm, in doubles as Keras computes it
)

# Steps per program call: a fixed shape, so one compiled program serves every call of a group
# shape; the loop itself stops at the call's real step count.
CHUNK_STEPS = 1024
MAX_CACHED_PROGRAMS = 32
MIN_STACKED_MODELS = 2
# Each trace starts its names at a multiple of this (align_trace_names); ~1 ms to skip one.
NAME_BLOCK = 1 << 14
# Cost model for planning, in model-steps (one stacked model for one step, ~3.5 us measured
# on 2 cores): a step also costs ~10 us whatever the stack, i.e. STEP_OVERHEAD_MODELS more
# models, and a group a fixed GROUP_OVERHEAD (program call, scoring, task bookkeeping).
STEP_OVERHEAD_MODELS = 3.0
GROUP_OVERHEAD = 20_000.0
NOMINAL_TRAIN_ROWS = 512
# Memory bounds at scale: batch rows per step across a program's models (the chunk of batch
# rows is [CHUNK_STEPS, models, batch] int32: 64 MiB), test rows per prediction call across
# models (features and activations gathered per block), pieces per worker worth planning.
STACK_ROW_BUDGET = 16_384
PREDICT_ROW_BUDGET = 262_144
MAX_PIECES_PER_WORKER = 8


def fast_engine_applies(jobs: list[FitJob]) -> bool:
    """True when inspection found a network the fast engine reproduces for every job."""
    return all(job.network is not None for job in jobs)


def setting_vector(network: DenseNetwork) -> list[float]:
    """The network's optimizer settings in SETTINGS order (unused ones are zero)."""
    settings = dict(network.settings)
    for name in ("rho", "beta_1", "beta_2"):
        if name in settings:
            settings[f"one_minus_{name}"] = 1.0 - settings[name]
    if settings.get("global_clipnorm"):
        settings["inverse_global_clipnorm"] = 1.0 / settings["global_clipnorm"]
    return [float(settings.get(name, 0.0)) for name in SETTINGS]


def encode_binary_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(classes, 0/1 per row) in sorted order, as scikeras' OrdinalEncoder encodes them."""
    classes, encoded = np.unique(labels, return_inverse=True)
    return classes, encoded.astype(np.int64)


def encode_targets(labels: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(classes, class index per row) in sorted order for a classifier, as
    tasks.train.dispatch.encode_targets does; (no classes, values as float64) for a regression."""
    if task == "regression":
        return np.array([]), np.asarray(labels, dtype=np.float64)
    return encode_binary_labels(labels)


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


def plan_groups(
    jobs: list[FitJob], workers: int, train_rows: int = NOMINAL_TRAIN_ROWS
) -> list[list[FitJob]]:
    """Split a run's jobs into task-sized groups, longest first, for `workers` threads.

    A group is one stacked program, which runs as long as its longest trajectory and costs
    every stacked model each step, so groups hold trajectories of one architecture, batch size
    and length (no idle padding). Each such class is cut into near-equal pieces of at most
    `cap` trajectories (and at most STACK_ROW_BUDGET batch rows per step, which bounds a
    program's memory); the cap is the one whose simulated longest-first schedule on `workers`
    threads finishes first (ties: fewer groups). Jobs of one trajectory stay together.
    `train_rows` (a fold's training rows) sets the steps per epoch of the cost model.
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
    limits = [stack_limit(members[0][0].model.batch_size) for members in ordered]

    def plan(cap: int) -> list[list[list[FitJob]]]:
        return [
            piece
            for members, limit in zip(ordered, limits, strict=True)
            for piece in _split_evenly(members, min(cap, limit))
        ]

    # min() keeps the first of equals: the plan with the fewest groups.
    cap = min(
        candidate_caps([len(members) for members in ordered], workers),
        key=lambda cap: _simulated_makespan(
            [_group_cost(piece, train_rows) for piece in plan(cap)], workers
        ),
    )
    pieces = sorted(plan(cap), key=lambda piece: _group_cost(piece, train_rows), reverse=True)
    grouped = [sorted((job for t in piece for job in t), key=_job_order) for piece in pieces]
    return grouped + singles


def stack_limit(batch_size: int) -> int:
    """Most models one program stacks at this batch size: its per-chunk batch rows
    ([CHUNK_STEPS, models, batch]) stay within STACK_ROW_BUDGET rows per step."""
    return max(1, STACK_ROW_BUDGET // max(1, batch_size))


def candidate_caps(class_sizes: list[int], workers: int) -> list[int]:
    """Caps worth simulating, largest first: a plan only changes where some class's piece
    count ceil(n / cap) does (O(sqrt n) values per class, not n), and more than
    MAX_PIECES_PER_WORKER pieces per worker of the largest class only adds overhead."""
    largest = max(class_sizes)
    smallest = math.ceil(largest / (MAX_PIECES_PER_WORKER * max(1, workers)))
    caps = {largest}
    for size in class_sizes:
        count = 1
        while count <= size:
            cap = math.ceil(size / count)
            if cap >= smallest:
                caps.add(cap)
            # the next count whose cap differs
            count = max(count + 1, math.ceil(size / (cap - 1)) if cap > 1 else size + 1)
    return sorted(caps, reverse=True)


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


def _group_cost(piece: list[list[FitJob]], train_rows: int = NOMINAL_TRAIN_ROWS) -> float:
    """Estimated cost in model-steps: loop length times (models + per-step overhead)."""
    model = piece[0][0].model
    epochs = max(job.model.epochs - job.start_epoch for trajectory in piece for job in trajectory)
    steps = epochs * math.ceil(train_rows / model.batch_size)
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
    class_weights: np.ndarray | None = None  # per encoded class (fit__class_weight)

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


def _chunk_rows(
    group: list[Trajectory], start: int, stop: int, n_models: int, width: int
) -> np.ndarray:
    """[CHUNK_STEPS, n_models, width] batch rows of global steps [start, stop); -1 pads and
    idles. Only the steps the call runs are drawn: a segment may be one epoch (early
    stopping), and shuffling every epoch up to CHUNK_STEPS cost more than the training."""
    rows = np.full((CHUNK_STEPS, n_models, width), -1, dtype=np.int32)
    for model_index, trajectory in enumerate(group):
        block = trajectory.step_rows(start, min(stop, start + CHUNK_STEPS))
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
    def variables(self) -> tuple[tuple[int, int], ...]:
        """(start, stop) of each Keras variable in the flat vector: kernel, then bias if any."""
        spans = []
        for layer, (kernel_start, bias_start, _, fan_out) in enumerate(self.slices):
            spans.append((kernel_start, bias_start))
            if self.has_bias(layer):
                spans.append((bias_start, bias_start + fan_out))
        return tuple(spans)

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
    params: tf.Tensor,
    x: tf.Tensor,
    layout: Layout,
    activations: tuple[str, ...],
    dropout: Callable[[int, tf.Tensor], tf.Tensor] | None = None,
) -> tf.Tensor:
    """Batched forward pass: params [M, P], x [M, B, F] -> the output layer before its
    activation, [M, B, units] (Keras computes cross-entropy from those logits).

    `dropout(layer, inputs)` (training steps only) drops units of a Dense layer's input.
    """
    hidden = x
    n_models = tf.shape(params)[0]
    last = len(layout.slices) - 1
    for index, (kernel_start, bias_start, fan_in, fan_out) in enumerate(layout.slices):
        if dropout is not None:
            hidden = dropout(index, hidden)
        kernel = tf.reshape(
            params[:, kernel_start:bias_start], tf.stack([n_models, fan_in, fan_out])
        )
        hidden = tf.matmul(hidden, kernel)
        if layout.has_bias(index):
            hidden = hidden + params[:, bias_start : bias_start + fan_out][:, None, :]
        if index < last:
            hidden = FAST_ACTIVATIONS[activations[index]](hidden)
    return hidden


def _mix32(h: tf.Tensor) -> tf.Tensor:
    """MurmurHash3's 32-bit finalizer: a bijection of uint32 whose every output bit depends
    on every input bit (XLA compiles it to a few integer ops)."""
    h = h ^ tf.bitwise.right_shift(h, tf.constant(16, tf.uint32))
    h = h * tf.constant(0x85EBCA6B, tf.uint32)
    h = h ^ tf.bitwise.right_shift(h, tf.constant(13, tf.uint32))
    h = h * tf.constant(0xC2B2AE35, tf.uint32)
    return h ^ tf.bitwise.right_shift(h, tf.constant(16, tf.uint32))


def dropout_uniform(
    seeds: tf.Tensor, steps: tf.Tensor, layer: int, batch: int, units: int
) -> tf.Tensor:
    """[M, batch, units] uniforms in [0, 1) from a hash of (fit seed, step, layer, batch slot,
    unit): counter-based, so a model's draws depend on nothing else in its program, and a
    continued run (its step count restored) draws what the uninterrupted one would.

    `seeds` [M] int32 (fit seeds, >= 0), `steps` [M] float32 (Keras' iterations so far).
    """
    step_key = _mix32(
        tf.cast(steps, tf.uint32) + tf.constant(0x9E3779B9 * (layer + 1) % 2**32, tf.uint32)
    )
    key = _mix32(tf.cast(seeds, tf.uint32) ^ step_key)[:, None, None]
    # slot * units + unit: unique per (slot, unit) while batch * units < 2**32.
    index = tf.cast(tf.range(batch * units), tf.uint32)
    index = tf.reshape(index, [1, batch, units])
    bits = _mix32(_mix32(index ^ key) + key)
    # The top 24 bits as a float32 in [0, 1) (exact: 24 bits fit a float32's mantissa).
    return tf.cast(tf.bitwise.right_shift(bits, tf.constant(8, tf.uint32)), tf.float32) * (
        1.0 / 2**24
    )


def apply_dropout(
    inputs: tf.Tensor, uniform: tf.Tensor, rate: tf.Tensor, scale: tf.Tensor
) -> tf.Tensor:
    """Keras' inverted dropout (tf.nn.experimental.stateless_dropout): a unit is kept when
    its uniform >= rate and then scaled by 1 / (1 - rate) (`scale`, computed in doubles);
    `rate` and `scale` are [M] (rate 0, scale 1 leave the inputs exactly as they are)."""
    keep = tf.cast(uniform >= rate[:, None, None], tf.float32)
    return inputs * scale[:, None, None] * keep


def dropout_vectors(network: DenseNetwork) -> np.ndarray:
    """[2, layers]: each Dense layer's input dropout rate and 1 / (1 - rate) (0 and 1: none)."""
    vectors = np.zeros((2, len(network.sizes) - 1), dtype=np.float64)
    vectors[1] = 1.0
    for layer, rate in enumerate(network.dropout):
        if rate is not None:
            vectors[:, layer] = (rate, 1.0 / (1.0 - rate))
    return vectors.astype(np.float32)


def _per_row_loss(loss: str, logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """[M, B] loss per row, as Keras' loss function computes it before the reduction."""
    if loss == "binary_crossentropy":
        return tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits[..., 0])
    if loss == "sparse_categorical_crossentropy":
        return tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(y, tf.int32), logits=logits
        )
    if loss == "categorical_crossentropy":
        targets = tf.one_hot(tf.cast(y, tf.int32), tf.shape(logits)[-1], dtype=tf.float32)
        return tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits)
    # Regression: a linear output; Keras takes the mean over the last axis (one unit).
    error = y - logits[..., 0]
    return tf.square(error) if loss == "mean_squared_error" else tf.abs(error)


def _outputs(loss: str, logits: tf.Tensor) -> tf.Tensor:
    """What the model predicts from its logits: P(class 1), class probabilities, or values."""
    if loss == "binary_crossentropy":
        return tf.math.sigmoid(logits)
    if "categorical" in loss:
        return tf.nn.softmax(logits, axis=-1)
    return logits


# Optimizer state per model: three [M, P] slots and one scalar (Nadam's u_product), each
# optimizer using the slots it needs (slot 0 starts at Adagrad's initial accumulator).
SLOT_USE = {
    "rmsprop": ("momentum", "velocity", "average_gradient"),
    "adam": ("momentum", "velocity", "velocity_hat"),
    "sgd": ("momentum",),
    "adagrad": ("accumulator",),
    "adadelta": ("accumulated_grad", "accumulated_delta_var"),
    "adamax": ("momentum", "norm"),
    "nadam": ("momentum", "velocity"),
}


def _keras_update(
    gradient: tf.Tensor,
    params: tf.Tensor,
    slots: tuple[tf.Tensor, tf.Tensor, tf.Tensor],
    steps: tf.Tensor,
    product: tf.Tensor,
    optimizer: tf.Tensor,
    settings: tf.Tensor,
    optimizers: tuple[str, ...] = FAST_OPTIMIZERS,
    options: tuple[str, ...] = ("clipvalue", "weight_decay"),
    variables: tuple[tuple[int, int], ...] = (),
) -> tuple[tf.Tensor, tuple[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]:
    """(params, slots, product) after one step, as Keras' optimizers compute them (same op
    order): clipping, then weight decay, then the optimizer's own update_step.

    `settings` is [M, len(SETTINGS)]: each model's own learning rate, rho, betas, epsilon...
    Only the `optimizers` and `options` named are computed (a model whose clipvalue or
    weight_decay is 0 is left exactly as without them). `variables` are the (start, stop) of
    each Keras variable (kernel, bias) in the flat vector, for clipnorm's norms.
    """
    value = {name: settings[:, index] for index, name in enumerate(SETTINGS)}
    column = {name: vector[:, None] for name, vector in value.items()}
    lr = column["learning_rate"]
    if "clipvalue" in options:
        limit = column["clipvalue"]
        gradient = tf.where(limit > 0, tf.clip_by_value(gradient, -limit, limit), gradient)
    if "clipnorm" in options:
        gradient = _clip_by_norm(gradient, column["clipnorm"], variables)
    if "global_clipnorm" in options:
        gradient = _clip_by_global_norm(
            gradient, column["global_clipnorm"], column["inverse_global_clipnorm"], variables
        )
    if "weight_decay" in options:
        # BaseOptimizer._apply_weight_decay: variable -= variable * wd * lr, before the step.
        decay = column["weight_decay"]
        params = tf.where(decay != 0, params - params * decay * lr, params)
    first, second, third = slots
    local_step = steps + 1.0
    results: dict[str, tuple] = {}
    if "rmsprop" in optimizers:
        # v = rho v + (1 - rho) g^2; centered: a = rho a + (1 - rho) g, denominator
        # v - a^2 + eps; increment = lr g / sqrt(denominator); momentum: m = mu m + increment.
        velocity = column["rho"] * second + column["one_minus_rho"] * tf.square(gradient)
        average = column["rho"] * third + column["one_minus_rho"] * gradient
        centered = column["centered"] > 0
        denominator = tf.where(
            centered,
            velocity - tf.square(average) + column["epsilon"],
            velocity + column["epsilon"],
        )
        increment = lr * gradient / tf.sqrt(denominator)
        has_momentum = column["momentum"] > 0
        moment = column["momentum"] * first + increment
        results["rmsprop"] = (
            params - tf.where(has_momentum, moment, increment),
            (tf.where(has_momentum, moment, first), velocity, tf.where(centered, average, third)),
        )
    if "adam" in optimizers:
        # m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); amsgrad: v^ = max(v^, v) replaces v;
        # w -= m alpha / (sqrt(v) + eps)
        beta_1_power = tf.pow(value["beta_1"], local_step)
        beta_2_power = tf.pow(value["beta_2"], local_step)
        alpha = value["learning_rate"] * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        moment = first + (gradient - first) * column["one_minus_beta_1"]
        velocity = second + (tf.square(gradient) - second) * column["one_minus_beta_2"]
        amsgrad = column["amsgrad"] > 0
        velocity_hat = tf.where(amsgrad, tf.maximum(third, velocity), third)
        used = tf.where(amsgrad, velocity_hat, velocity)
        delta = (moment * alpha[:, None]) / (tf.sqrt(used) + column["epsilon"])
        results["adam"] = (params - delta, (moment, velocity, velocity_hat))
    if "sgd" in optimizers:
        # m = momentum m - g lr; w += m (nesterov: w += momentum m - g lr); no momentum:
        # w -= g lr.
        momentum = column["momentum"]
        velocity = first * momentum - gradient * lr
        nesterov_step = velocity * momentum - gradient * lr
        with_momentum = tf.where(column["nesterov"] > 0, -nesterov_step, -velocity)
        has_momentum = tf.not_equal(momentum, 0.0)
        delta = tf.where(has_momentum, with_momentum, gradient * lr)
        results["sgd"] = (params - delta, (tf.where(has_momentum, velocity, first), second, third))
    if "adagrad" in optimizers:
        # a += g^2; w -= lr g / sqrt(a + eps)
        accumulator = first + tf.square(gradient)
        delta = lr * gradient / tf.sqrt(accumulator + column["epsilon"])
        results["adagrad"] = (params - delta, (accumulator, second, third))
    if "adadelta" in optimizers:
        # ag = rho ag + (1 - rho) g^2; d = -(sqrt(ad + eps) g) / sqrt(ag + eps);
        # ad = rho ad + (1 - rho) d^2; w += lr d
        accumulated_grad = column["rho"] * first + column["one_minus_rho"] * tf.square(gradient)
        delta_var = -(
            (tf.sqrt(second + column["epsilon"]) * gradient)
            / tf.sqrt(accumulated_grad + column["epsilon"])
        )
        accumulated_delta = column["rho"] * second + column["one_minus_rho"] * tf.square(delta_var)
        results["adadelta"] = (
            params + lr * delta_var,
            (accumulated_grad, accumulated_delta, third),
        )
    if "adamax" in optimizers:
        # m += (g - m)(1 - b1); u = max(b2 u, |g|); w -= lr m / ((1 - b1^t)(u + eps))
        beta_1_power = tf.pow(value["beta_1"], local_step)[:, None]
        moment = first + (gradient - first) * column["one_minus_beta_1"]
        norm = tf.maximum(column["beta_2"] * second, tf.abs(gradient))
        delta = (lr * moment) / ((1 - beta_1_power) * (norm + column["epsilon"]))
        results["adamax"] = (params - delta, (moment, norm, third))
    if "nadam" in optimizers:
        # Keras casts Nadam's betas to float32 first, so 1 - beta is computed in float32.
        beta_1, beta_2 = value["beta_1"], value["beta_2"]
        decay = tf.constant(0.96, tf.float32)
        new_product = product * beta_1 * (1.0 - 0.5 * tf.pow(decay, local_step))
        u_t = beta_1 * (1.0 - 0.5 * tf.pow(decay, local_step))
        u_t_1 = beta_1 * (1.0 - 0.5 * tf.pow(decay, steps + 2.0))
        product_t_1 = new_product * u_t_1
        beta_2_power = tf.pow(beta_2, local_step)
        moment = first + (gradient - first) * (1 - beta_1)[:, None]
        velocity = second + (tf.square(gradient) - second) * (1 - beta_2)[:, None]
        moment_hat = (u_t_1[:, None] * moment) / (1 - product_t_1)[:, None] + (
            (1 - u_t)[:, None] * gradient
        ) / (1 - new_product)[:, None]
        velocity_hat = velocity / (1 - beta_2_power)[:, None]
        delta = (moment_hat * lr) / (tf.sqrt(velocity_hat) + column["epsilon"])
        results["nadam"] = (params - delta, (moment, velocity, third), new_product)
    if len(optimizers) == 1:
        [(new_params, new_slots, *rest)] = results.values()
        return new_params, new_slots, rest[0] if rest else product
    new_params, new_slots, new_product = params, slots, product
    for name in optimizers:
        candidate = results[name]
        chosen = tf.equal(optimizer, FAST_OPTIMIZERS.index(name))
        rows = chosen[:, None]
        new_params = tf.where(rows, candidate[0], new_params)
        new_slots = tuple(
            tf.where(rows, slot, old) for slot, old in zip(candidate[1], new_slots, strict=True)
        )
        if len(candidate) > 2:
            new_product = tf.where(chosen, candidate[2], new_product)
    return new_params, new_slots, new_product  # type: ignore[return-value]


def _clip_by_norm(
    gradient: tf.Tensor, clip: tf.Tensor, variables: tuple[tuple[int, int], ...]
) -> tf.Tensor:
    """tf.clip_by_norm per Keras variable (what Keras' clipnorm does), for models whose
    clipnorm is > 0; the others' gradients pass unchanged."""
    pieces = []
    for start, stop in variables:
        values = gradient[:, start:stop]
        l2sum = tf.reduce_sum(values * values, axis=1, keepdims=True)
        positive = l2sum > 0
        l2norm = tf.where(positive, tf.sqrt(tf.where(positive, l2sum, tf.ones_like(l2sum))), l2sum)
        pieces.append((values * clip) / tf.maximum(l2norm, clip))
    return tf.where(clip > 0, tf.concat(pieces, axis=1), gradient)


def _clip_by_global_norm(
    gradient: tf.Tensor,
    clip: tf.Tensor,
    inverse_clip: tf.Tensor,
    variables: tuple[tuple[int, int], ...],
) -> tf.Tensor:
    """Keras' clip_by_global_norm: every gradient times clip * min(1 / norm, 1 / clip), the
    norm over all variables (a sum of per-variable sums)."""
    squared = tf.stack(
        [tf.reduce_sum(tf.square(gradient[:, start:stop]), axis=1) for start, stop in variables],
        axis=1,
    )
    norm = tf.sqrt(tf.reduce_sum(squared, axis=1, keepdims=True))
    scale = clip * tf.minimum(1.0 / norm, inverse_clip) + (norm - norm)
    return tf.where(clip > 0, gradient * scale, gradient)


@dataclass(frozen=True)
class ProgramKey:
    """Everything a compiled program's shapes and body depend on."""

    sizes: tuple[int, ...]
    activations: tuple[str, ...]
    biases: tuple[bool, ...]
    n_models: int
    width: int
    n_rows: int
    loss: str = "binary_crossentropy"
    # Update rules computed (DenseNetwork.rules): every rule costs every model each step.
    optimizers: tuple[str, ...] = ("rmsprop", "adam", "sgd")
    options: tuple[str, ...] = ()  # "clipvalue", "weight_decay", "regularizers" (DenseNetwork)
    dropout: tuple[bool, ...] = ()  # per Dense layer: a Dropout on its input (DenseNetwork)


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
            align_trace_names()
            _PROGRAMS[key] = _build_programs(key)
            while len(_PROGRAMS) > MAX_CACHED_PROGRAMS:
                _PROGRAMS.popitem(last=False)
        return _PROGRAMS[key]


def align_trace_names() -> None:
    """Move TensorFlow's name counter on to the next multiple of NAME_BLOCK.

    Why: TensorFlow names a traced function and its loops after a process-wide counter
    (`ops.uid`), which anything creating a variable or a thread's graph also advances, and
    the compiled-program cache (tasks.train.xla_cache) keys on those names. Started at a block
    boundary, a trace's names depend only on how many programs this process traced before
    it, so a repeated run asks for the programs it stored. (A name that still differs only
    costs a compile: TensorFlow matches a stored program on its whole HLO.)
    """
    current = tf_ops.uid()
    for _ in range(-(current + 1) % NAME_BLOCK):
        tf_ops.uid()


def _build_programs(key: ProgramKey) -> tuple[Callable, Callable]:
    layout, activations = Layout(key.sizes, key.biases), key.activations
    models, params = key.n_models, layout.n_params
    n_classes = max(2, key.sizes[-1])
    n_layers = len(key.sizes) - 1
    state = tf.TensorSpec([models, params], tf.float32)

    # autograph=False: the programs' loops are explicit tf.while_loops and their branches
    # are on Python values, so there is nothing to convert; converting (parsing and rewriting
    # the functions' source) cost about a third of each trace.
    @tf.function(
        jit_compile=True,
        autograph=False,
        input_signature=[
            state,  # params
            state,  # slot 0 (momentum / accumulator, SLOT_USE)
            state,  # slot 1 (velocity, ...)
            tf.TensorSpec([models], tf.float32),  # real steps taken per model (Keras' iterations)
            tf.TensorSpec([key.n_rows, key.sizes[0]], tf.float32),  # features
            tf.TensorSpec([key.n_rows], tf.float32),  # labels: 0/1, class index or value
            tf.TensorSpec([CHUNK_STEPS, models, key.width], tf.int32),  # batch rows, -1 = none
            tf.TensorSpec([], tf.int32),  # steps to run in this call
            tf.TensorSpec([models], tf.int32),  # optimizer per model (FAST_OPTIMIZERS index)
            tf.TensorSpec([models, len(SETTINGS)], tf.float32),  # its settings per model
            state,  # slot 2 (velocity_hat, average_gradient)
            tf.TensorSpec([models], tf.float32),  # Nadam's u_product per model
            tf.TensorSpec([models, n_classes], tf.float32),  # class weight per model and class
            tf.TensorSpec([2, models, params], tf.float32),  # L1, L2 factor per parameter
            tf.TensorSpec([models], tf.int32),  # fit seed per model (dropout masks)
            tf.TensorSpec([2, models, n_layers], tf.float32),  # dropout rate, 1 / (1 - rate)
        ],
    )
    def train(
        params, first, second, steps, features, labels, rows, n_steps, optimizer, settings,
        third, product, class_weights, penalties, seeds, dropout,
    ):  # fmt: skip
        TRACE_COUNT["train"] += 1
        weighted = key.loss != "mean_squared_error" and key.loss != "mean_absolute_error"
        variables = layout.variables

        def dropped(steps):
            """The training pass's dropout at this step (None: no Dropout anywhere)."""
            if not any(key.dropout):
                return None

            def drop(layer, inputs):
                if not key.dropout[layer]:
                    return inputs
                uniform = dropout_uniform(seeds, steps, layer, key.width, key.sizes[layer])
                return apply_dropout(inputs, uniform, dropout[0, :, layer], dropout[1, :, layer])

            return drop

        def step(s, params, first, second, third, steps, product, losses):
            batch_rows = rows[s]
            real = tf.cast(batch_rows >= 0, tf.float32)
            safe_rows = tf.maximum(batch_rows, 0)
            x, y = tf.gather(features, safe_rows), tf.gather(labels, safe_rows)
            count = tf.reduce_sum(real, axis=1)
            # Keras' class_weight: a per-row sample weight multiplying the row's loss; the
            # reduction still divides by the batch's row count.
            weights = real
            if weighted:
                weights = real * tf.gather(class_weights, tf.cast(y, tf.int32), batch_dims=1)
            with tf.GradientTape() as tape:
                tape.watch(params)
                logits = _forward_logits(params, x, layout, activations, dropped(steps))
                per_row = _per_row_loss(key.loss, logits, y)
                # "sum_over_batch_size": the mean over the real rows of each model's batch.
                per_model = tf.reduce_sum(per_row * weights, axis=1) / tf.maximum(count, 1.0)
                if "regularizers" in key.options:
                    # Keras adds the layers' penalties to the loss (and to History's loss).
                    per_model += tf.reduce_sum(penalties[0] * tf.abs(params), axis=1)
                    per_model += tf.reduce_sum(penalties[1] * tf.square(params), axis=1)
                total = tf.reduce_sum(per_model)
            gradient = tape.gradient(total, params)
            new_params, new_slots, new_product = _keras_update(
                gradient, params, (first, second, third), steps, product, optimizer, settings,
                key.optimizers, key.options, variables,
            )  # fmt: skip
            active = count > 0
            column = active[:, None]
            # The batch's summed loss per model (its mean times its rows): the epoch's
            # History loss is reduced from these outside the program.
            losses = tf.tensor_scatter_nd_update(losses, [[s]], [per_model * count])
            return (
                s + 1,
                tf.where(column, new_params, params),
                tf.where(column, new_slots[0], first),
                tf.where(column, new_slots[1], second),
                tf.where(column, new_slots[2], third),
                tf.where(active, steps + 1.0, steps),
                tf.where(active, new_product, product),
                losses,
            )

        losses = tf.zeros([CHUNK_STEPS, models], tf.float32)
        _, params, first, second, third, steps, product, losses = tf.while_loop(
            lambda s, *_: s < n_steps,
            step,
            (tf.constant(0), params, first, second, third, steps, product, losses),
        )
        return params, first, second, steps, third, product, losses

    @tf.function(
        autograph=False,
        input_signature=[
            state,
            tf.TensorSpec([key.n_rows, key.sizes[0]], tf.float32),
            tf.TensorSpec([models, None], tf.int32),
        ],
    )
    def predict(params, features, rows):
        TRACE_COUNT["predict"] += 1
        logits = _forward_logits(params, tf.gather(features, rows), layout, activations)
        return _outputs(key.loss, logits)

    # Traced here, not on first call: tracing once per shape is the design, not a warning.
    train.get_concrete_function()
    predict.get_concrete_function()
    return train, predict


def _scores(
    loss: str, outputs: np.ndarray, labels: np.ndarray, test_rows: list[int]
) -> dict[str, float]:
    """Every metric of the task, as the reference computes them from the model's predictions
    (float32 outputs; labels are 0/1 or class indices, or values for a regression)."""
    outputs = outputs[: len(test_rows)]
    truth = labels[test_rows]
    if loss == "binary_crossentropy":
        return binary_scores(truth.astype(np.int64), outputs[:, 0])
    if "categorical" in loss:
        return multiclass_scores(truth.astype(np.int64), outputs)
    return regression_scores(np.asarray(truth, dtype=np.float64), outputs[:, 0])


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


def program_key(
    group: list[Trajectory],
    layout: Layout,
    activations: tuple[str, ...],
    n_models: int,
    width: int,
    n_rows: int,
) -> ProgramKey:
    """The program a group of one architecture needs (its update rules and options included:
    XLA fuses a different body differently, so a fit's program is chosen by the fit alone)."""
    network = group[0].network
    return ProgramKey(
        sizes=layout.sizes,
        activations=activations,
        biases=layout.biases,
        n_models=n_models,
        width=width,
        n_rows=n_rows,
        loss=network.loss,
        optimizers=network.rules,
        options=network.options,
        dropout=network.dropout_layers,
    )


def _group_program_key(
    group: list[Trajectory], layout: Layout, activations: tuple[str, ...], n_rows: int
) -> ProgramKey:
    """A lone model gets an idle partner (MIN_STACKED_MODELS); the widest batch sets the width."""
    n_models = max(MIN_STACKED_MODELS, len(group))
    width = max(trajectory.batch for trajectory in group)
    return program_key(group, layout, activations, n_models, width, n_rows)


def penalty_vectors(layout: Layout, network: DenseNetwork) -> np.ndarray:
    """[2, P]: each parameter's L1 and L2 factor (Keras adds l1 sum|w| + l2 sum w^2 per
    regularized variable to the loss)."""
    penalties = np.zeros((2, layout.n_params), dtype=np.float32)
    for layer, factors in enumerate(network.regularizers):
        kernel_start, bias_start, _, fan_out = layout.slices[layer]
        kernel_l1, kernel_l2, bias_l1, bias_l2 = factors
        penalties[:, kernel_start:bias_start] = np.array([[kernel_l1], [kernel_l2]])
        if layout.has_bias(layer):
            penalties[:, bias_start : bias_start + fan_out] = np.array([[bias_l1], [bias_l2]])
    return penalties


def class_weight_vector(model: ModelParams, classes: np.ndarray) -> np.ndarray | None:
    """`fit__class_weight` (by label text) as a weight per encoded class, as
    tasks.train.dispatch.keras_class_weight gives Keras (unnamed classes weigh 1)."""
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
    block = max(1, PREDICT_ROW_BUDGET // n_models)
    return np.concatenate(
        [
            predict(params, features, tf.constant(test_rows[:, start : start + block])).numpy()
            for start in range(0, n_rows, block)
        ],
        axis=1,
    )


# A fit's initial weights in Keras order, from (its params, its seed): the model function
# built under that seed (tasks.train.dispatch.InitialWeights).
InitialWeights = Callable[[ModelParams, int], list[np.ndarray]]


# Per epoch checkpoint: (scores on the test rows, scores on the rows it trained on).
EpochScores = dict[int, tuple[dict[str, float], dict[str, float]]]


def _train_group(
    group: list[Trajectory],
    layout: Layout,
    activations: tuple[str, ...],
    features: np.ndarray,
    labels: np.ndarray,
    initial_weights: InitialWeights,
) -> tuple[list[EpochScores], list[Checkpoint], list[LearningCurve], list[int | None]]:
    """Run one stacked program over the group; (test scores, train scores) per model and
    epochs (train scores: the rows it trained on, scored the same way), each model's state at
    its last epoch (a model whose run ends early is not updated after it) and its learning
    curve.

    A lone model gets an idle partner: XLA compiles a batch of one matmul differently, and
    a result must not depend on how many models share its program.
    """
    key = _group_program_key(group, layout, activations, len(features))
    n_models, width = key.n_models, key.width
    train, predict = _programs(key)
    features_tensor = tf.constant(features)
    labels_tensor = tf.constant(labels.astype(np.float32))
    initial = np.zeros((n_models, layout.n_params), dtype=np.float32)
    optimizer = np.zeros(n_models, dtype=np.int32)
    settings = np.zeros((n_models, len(SETTINGS)), dtype=np.float32)
    class_weights = np.ones((n_models, max(2, layout.sizes[-1])), dtype=np.float32)
    penalties = np.zeros((2, n_models, layout.n_params), dtype=np.float32)
    seeds = np.zeros(n_models, dtype=np.int32)
    dropout = np.zeros((2, n_models, len(layout.sizes) - 1), dtype=np.float32)
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
    curves = _CurveRecorder(group, n_models, labels, key.loss)
    stopper = _EarlyStopping(group)
    for start, stop, reached in _segments(group):
        rows = _chunk_rows(group, start, stop, n_models, width)
        rows[:, sorted(stopper.stopped), :] = -1  # a stopped model takes no more steps
        step_losses = np.zeros((CHUNK_STEPS, n_models), dtype=np.float32)
        if (rows >= 0).any():
            params, first, second, steps, third, product, losses = train(
                params, first, second, steps, features_tensor, labels_tensor,
                tf.constant(rows), tf.constant(stop - start, tf.int32), optimizer_tensor,
                settings_tensor, third, product, class_weights_tensor, penalties_tensor,
                seeds_tensor, dropout_tensor,
            )  # fmt: skip
            step_losses = losses.numpy()
        curves.add_steps(start, stop, step_losses, rows)
        curves.measure(
            stop,
            lambda rows, now=params: _forward_logits(
                now, tf.gather(features_tensor, rows), layout, activations
            ),
            lambda now=params: _penalties(now, penalties),
        )
        stopper.epoch_end(stop, curves, params)
        if reached:
            scored = stopper.scoring_params(params)
            outputs = predict_in_blocks(predict, scored, features_tensor, test_rows)
            on_train = predict_in_blocks(predict, scored, features_tensor, train_rows)
            for index, epochs in reached:
                fold = group[index].fold
                scores[index][epochs] = (
                    _scores(key.loss, outputs[index], labels, fold.test),
                    _scores(key.loss, on_train[index], labels, fold.train),
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


def _penalties(params: tf.Tensor, factors: np.ndarray) -> np.ndarray:
    """Each model's L1 + L2 regularization term (zero without regularizers)."""
    if not factors.any():
        return np.zeros(factors.shape[1])
    params = params.numpy()
    return (factors[0] * np.abs(params)).sum(axis=1) + (factors[1] * np.square(params)).sum(axis=1)


# A fast-engine checkpoint's arrays: params, the three optimizer slots, Keras' iterations and
# Nadam's u_product (tasks.records.Checkpoint).
FAST_STATE = ("params", "first", "second", "third", "steps", "product")


def _fast_state(checkpoint: Checkpoint, layout: Layout) -> tuple:
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
    assert jobs[0].network is not None
    task = jobs[0].network.task
    classes, encoded = encode_targets(labels, task)
    views = FoldFeatures(features, zero_columns)
    results: dict[tuple[int, int], FitResult] = {}
    for group in program_groups(jobs, fold_by_index, run_seed, labels):
        for trajectory in group:
            trajectory.class_weights = class_weight_vector(trajectory.model, classes)
        sizes, activations, biases = group[0].network.architecture[:3]
        layout = Layout(sizes, biases)
        group_features, group_labels = stack_views(group, views, encoded)
        scores, states, curves, stopped = _train_group(
            group, layout, activations, group_features, group_labels, initial_weights
        )
        outcomes = zip(group, scores, states, curves, stopped, strict=True)
        for trajectory, by_epochs, state, curve, trained in outcomes:
            for job in trajectory.jobs:
                fold_scores, train_scores = by_epochs[job.model.epochs]
                results[_job_order(job)] = FitResult(
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
    return [results[_job_order(job)].model_copy(update={"fit_seconds": share}) for job in jobs]


def program_groups(
    jobs: list[FitJob], fold_by_index: dict[int, Fold], run_seed: int, labels: np.ndarray
) -> list[list[Trajectory]]:
    """The jobs' trajectories by the program that trains them (one per architecture and batch
    size), in the order train_stacked runs them."""
    programs: dict[tuple, list[Trajectory]] = defaultdict(list)
    for trajectory in trajectories_of(jobs, fold_by_index, run_seed, labels):
        programs[(trajectory.network.architecture, trajectory.batch)].append(trajectory)
    return list(programs.values())


def trace_programs(
    fold_by_index: dict[int, Fold],
    groups: list[list[FitJob]],
    run_seed: int,
    labels: np.ndarray,
    views: FoldFeatures,
) -> list[ProgramKey]:
    """Trace, in a fixed order, every program train_stacked will run for these groups of
    jobs (each group as one call), without training.

    Why: TensorFlow names a traced function after a process-wide counter, and the compiled
    program cache (tasks.train.xla_cache) keys on the names. Groups traced by racing threads get
    other names each run, so a warm run would compile some of its programs again; traced
    here, one after the other, a repeated run asks for the very programs it stored.
    At most MAX_CACHED_PROGRAMS are traced: the others are traced when their group runs. A
    program that fails to trace is left to its group's task run, whose failure is recorded
    as for any group (failed fits, or the run stopped under fail_fast).
    """
    keys: list[ProgramKey] = []
    n_rows = len(labels)
    for jobs in groups:
        fast = [job for job in jobs if job.network is not None]
        if not fast:
            continue
        for group in program_groups(fast, fold_by_index, run_seed, labels):
            sizes, activations, biases = group[0].network.architecture[:3]
            copies = len({views.key(t.fold.index, t.model) for t in group})  # stack_views
            key = _group_program_key(group, Layout(sizes, biases), activations, n_rows * copies)
            if key in keys:
                continue
            try:
                _programs(key)
            except Exception:  # noqa: BLE001 - the group's task run meets it and records it
                continue
            keys.append(key)
            if len(keys) == MAX_CACHED_PROGRAMS:  # more would push the first ones out
                return keys
    return keys


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
    layout = Layout.of(network)
    features32 = np.ascontiguousarray(features, dtype=np.float32)
    _, [state], _, _ = _train_group(
        [trajectory], layout, network.activations, features32, labels, initial_weights
    )
    return layout.unflatten(state.arrays["params"])
