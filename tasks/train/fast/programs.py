"""The compiled programs: one XLA-compiled train and predict function per group shape
(ProgramKey), traced once per process, kept in a bounded cache, and traced ahead in a fixed
order so their names (and so the on-disk compiled-program cache's keys) repeat run after run."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import cachetools
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import ops as tf_ops

from tasks.data.preprocess import FoldFeatures
from tasks.records import ChainLayer, FitJob, Fold, GraphNode
from tasks.train.fast.graph import GraphLayout, layout_for, layout_of
from tasks.train.fast.network import (
    Layout,
    apply_dropout,
    dropout_slots,
    dropout_uniform,
    forward_logits,
    per_row_loss,
    predicted_outputs,
    standard_normal,
    training_forward,
    with_moving_updates,
)
from tasks.train.fast.optimizers import SETTINGS, keras_update
from tasks.train.fast.schedules import CHUNK_STEPS, Trajectory, trajectories_of
from tasks.train.xla_cache import enable as enable_xla_cache

# Before this process runs any TensorFlow op: the compiled-program cache (tasks.train.xla_cache).
enable_xla_cache()

MAX_CACHED_PROGRAMS = 32
MIN_STACKED_MODELS = 2
# Each trace starts its names at a multiple of this (align_trace_names); ~1 ms to skip one.
NAME_BLOCK = 1 << 14


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
    # Per Dense layer: the normalization and activation layers on its input (DenseNetwork).
    between: tuple[tuple[ChainLayer, ...], ...] = ()
    graph: tuple[GraphNode, ...] = ()  # a functional graph's nodes (DenseNetwork)


# The least recently used program is dropped beyond MAX_CACHED_PROGRAMS, to bound memory.
_PROGRAMS: cachetools.LRUCache[ProgramKey, tuple[Callable, Callable]] = cachetools.LRUCache(
    maxsize=MAX_CACHED_PROGRAMS
)
# Held through a build, not only around the cache's lookups as functools.lru_cache and
# cachetools.cached do: a trace's names depend on how many programs this process traced
# before it (align_trace_names), so traces must not interleave, and a program built twice
# costs a second trace and XLA compile.
_PROGRAMS_LOCK = threading.Lock()
TRACE_COUNT = {"train": 0, "predict": 0}
CACHE_STATS = {"hits": 0, "misses": 0}


def compiled_programs(key: ProgramKey) -> tuple[Callable, Callable]:
    """The compiled train and predict functions for one group shape, built once per process.

    Every input shape is fixed, so each program is traced and XLA-compiled exactly once; the
    least recently used program is dropped beyond MAX_CACHED_PROGRAMS to bound memory.
    """
    with _PROGRAMS_LOCK:
        programs = _PROGRAMS.get(key)  # a hit makes it the most recently used
        if programs is not None:
            CACHE_STATS["hits"] += 1
            return programs
        CACHE_STATS["misses"] += 1
        align_trace_names()
        programs = _PROGRAMS[key] = _build_programs(key)
        return programs


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
    layout = layout_for(key.sizes, key.biases, key.between, key.graph)
    activations = key.activations
    models, params = key.n_models, layout.n_params
    n_classes = max(2, key.sizes[-1])
    n_layers = dropout_slots(key.sizes, key.dropout)
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
            tf.TensorSpec([CHUNK_STEPS, models], tf.float32),  # learning rate per step, model
        ],
    )
    def train(
        params, first, second, steps, features, labels, rows, n_steps, optimizer, settings,
        third, product, class_weights, penalties, seeds, dropout, learning_rates,
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
                uniform = dropout_uniform(seeds, steps, layer, key.width, inputs.shape[-1])
                return apply_dropout(inputs, uniform, dropout[0, :, layer], dropout[1, :, layer])

            return drop

        def noisy(steps):
            """The training pass's Gaussian noise at this step (None: none anywhere)."""
            noisy_kinds = ("gaussian_noise", "gaussian_dropout")
            chained = [layer for chain in key.between for layer in chain]
            chained += [node.chain for node in key.graph if node.chain is not None]
            if not any(layer.kind in noisy_kinds for layer in chained):
                return None

            def draw(noise_key, inputs):
                units = inputs.shape[-1]
                first = dropout_uniform(seeds, steps, noise_key, key.width, units)
                second = dropout_uniform(seeds, steps, noise_key + 1, key.width, units)
                return standard_normal(first, second)

            return draw

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
            lookups: list = []  # a graph's Embedding lookups (GraphLayout.squared_gradient)
            with tf.GradientTape() as tape:
                tape.watch(params)
                logits, moved = training_forward(
                    params, x, layout, activations, real, dropped(steps), noisy(steps), lookups
                )
                per_row = per_row_loss(key.loss, logits, y)
                # "sum_over_batch_size": the mean over the real rows of each model's batch.
                per_model = tf.reduce_sum(per_row * weights, axis=1) / tf.maximum(count, 1.0)
                if "regularizers" in key.options:
                    # Keras adds the layers' penalties to the loss (and to History's loss).
                    per_model += tf.reduce_sum(penalties[0] * tf.abs(params), axis=1)
                    per_model += tf.reduce_sum(penalties[1] * tf.square(params), axis=1)
                total = tf.reduce_sum(per_model)
            squared = None
            if lookups:
                looked_up = [rows for _, _, rows in lookups]
                gradient, *per_lookup = tape.gradient(total, [params, *looked_up])
                squared = layout.squared_gradient(gradient, lookups, per_lookup)
            else:
                gradient = tape.gradient(total, params)
            # This step's learning rate (a schedule's at Keras' iterations, else constant).
            step_settings = tf.concat([learning_rates[s][:, None], settings[:, 1:]], axis=1)
            new_params, new_slots, new_product = keras_update(
                gradient, params, (first, second, third), steps, product, optimizer,
                step_settings, key.optimizers, key.options, variables, squared,
            )  # fmt: skip
            new_params = with_moving_updates(new_params, moved)
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
        logits = forward_logits(params, tf.gather(features, rows), layout, activations)
        return predicted_outputs(key.loss, logits)

    # Traced here, not on first call: tracing once per shape is the design, not a warning.
    train.get_concrete_function()
    predict.get_concrete_function()
    return train, predict


def program_key(
    group: list[Trajectory],
    layout: Layout | GraphLayout,
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
        between=network.between,
        graph=network.graph,
    )


def group_program_key(
    group: list[Trajectory], layout: Layout | GraphLayout, activations: tuple[str, ...], n_rows: int
) -> ProgramKey:
    """A lone model gets an idle partner (MIN_STACKED_MODELS); the widest batch sets the width."""
    n_models = max(MIN_STACKED_MODELS, len(group))
    width = max(trajectory.batch for trajectory in group)
    return program_key(group, layout, activations, n_models, width, n_rows)


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
            network = group[0].network
            copies = len({views.key(t.fold.index, t.model) for t in group})  # stack_views
            layout = layout_of(network)
            key = group_program_key(group, layout, network.activations, n_rows * copies)
            if key in keys:
                continue
            try:
                compiled_programs(key)
            except Exception:  # noqa: BLE001 - the group's task run meets it and records it
                continue
            keys.append(key)
            if len(keys) == MAX_CACHED_PROGRAMS:  # more would push the first ones out
                return keys
    return keys
