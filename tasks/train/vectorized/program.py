"""The vectorized path's compiled programs: copies of one Keras architecture as stacked
variables ([copies, ...] per variable), trained and evaluated together.

One copy (the template) is traced: Keras' own `stateless_call` and `stateless_compute_loss`
give its forward pass and its loss (regularization included), its own optimizer the update
(Keras' `stateless_apply`, made to work on TensorFlow: `stateless_optimizer`), and
`tf.vectorized_map` runs that step for every copy at once inside one
`tf.function(jit_compile=True)`: so the maths is Keras'.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras.src.optimizers.base_optimizer import BaseOptimizer

# (trainable variables, other model state (BatchNormalization statistics, seed states),
# optimizer variables (iterations, learning rate, slots)), each [copies, ...].
State = tuple[list[tf.Tensor], list[tf.Tensor], list[tf.Tensor]]

# TensorFlow's optimizer writes to tf.Variables directly (for tf.distribute), which a stateless
# scope cannot see (Keras refuses `stateless_apply` there): these backend-neutral methods of
# Keras' base optimizer write through Keras variables instead, so the scope collects them.
_STATELESS_METHODS = (
    "_var_key",
    "_backend_update_step",
    "_apply_weight_decay",
    "assign",
    "assign_add",
    "assign_sub",
)


class _QuietFallbacks(logging.Filter):
    """Drops pfor's `<op> uses a while_loop. Fix that!` warnings: a per-copy kernel's
    convolution gradient has no vectorized form in TensorFlow and runs as a loop inside the
    compiled program (measured and accepted: docs/engines.md), once per trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "uses a while_loop. Fix that!" not in record.getMessage()


logging.getLogger("tensorflow").addFilter(_QuietFallbacks())


def stateless_optimizer(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """`optimizer` (a private copy's, built) with Keras' backend-neutral updates, so
    `BaseOptimizer.stateless_apply` returns new values instead of assigning variables."""
    if not optimizer.built:
        raise ValueError("build the optimizer before making it stateless")
    for name in _STATELESS_METHODS:
        setattr(optimizer, name, types.MethodType(getattr(BaseOptimizer, name), optimizer))
    # Slots are found by variable key: rekeyed after the key changed.
    optimizer._trainable_variables_indices = {
        optimizer._var_key(variable): index
        for index, variable in enumerate(optimizer._trainable_variables)
    }
    return optimizer


def model_state(model: keras.Model) -> tuple[list[np.ndarray], ...]:
    """One copy's variables as numpy: trainable, other model state, optimizer (built here)."""
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    return tuple(
        [np.array(variable.numpy()) for variable in variables]
        for variables in (
            model.trainable_variables,
            model.non_trainable_variables,
            model.optimizer.variables,
        )
    )


def assign_state(model: keras.Model, state: tuple[list[np.ndarray], ...]) -> None:
    """Put one copy's values back into its own Keras model and optimizer."""
    targets = (model.trainable_variables, model.non_trainable_variables, model.optimizer.variables)
    for variables, values in zip(targets, state, strict=True):
        for variable, value in zip(variables, values, strict=True):
            variable.assign(value)


def stack_states(states: Sequence[tuple[list[np.ndarray], ...]]) -> State:
    return tuple(
        [tf.constant(np.stack(values)) for values in zip(*(s[part] for s in states), strict=True)]
        for part in range(3)
    )  # type: ignore[return-value]


def unstack_state(state: State, index: int) -> tuple[list[np.ndarray], ...]:
    return tuple([np.array(value[index]) for value in part] for part in state)


def draws_random_numbers(model: keras.Model) -> bool:
    """True when training steps draw random numbers (Dropout, noise layers: a seed state
    among the non-trainable variables). XLA's random bit generator is not TensorFlow's
    kernels', so such a step compiled with XLA draws other masks than Keras' `fit`."""
    weights = {id(variable) for variable in model.non_trainable_weights}
    return any(id(variable) not in weights for variable in model.non_trainable_variables)


class StackedModels:
    """Copies of one architecture trained together; `template` (one of them, built and
    compiled) is the copy whose calls are traced. `mode`: "vmap" (tf.vectorized_map, the
    path foldflow uses) or "loop" (the step written once per copy: measured, slower).
    `jit_compile`: training steps compiled by XLA (False: TensorFlow's graph runtime, whose
    random kernels Keras' `fit` uses too); evaluation and prediction never are."""

    def __init__(
        self, template: keras.Model, copies: int, mode: str = "vmap", jit_compile: bool = True
    ):
        self.template, self.copies, self.mode = template, copies, mode
        if not template.optimizer.built:
            template.optimizer.build(template.trainable_variables)
        self.optimizer = stateless_optimizer(template.optimizer)
        self.metrics_values = [v.value for v in template.metrics_variables]
        self._train = tf.function(self._train_body, jit_compile=jit_compile, autograph=False)
        # Called once per epoch or once: not worth an XLA compilation.
        self._evaluate = tf.function(self._evaluate_body, autograph=False)
        self._predict = tf.function(self._predict_body, autograph=False)

    def _loss(self, trainable, others, x, y, weights, training):
        """(outputs, loss, new other state) of one copy, as Keras' JAX trainer computes them
        statelessly: the losses the call adds (activity and weight regularization) are handed
        to compute_loss, which would not see them otherwise."""
        model = self.template
        y_pred, others, losses = model.stateless_call(
            trainable, others, x, return_losses=True, training=training
        )
        if losses:
            model._losses_override = losses
        try:
            loss, (_, others, _) = model.stateless_compute_loss(
                trainable, others, self.metrics_values, x=x, y=y, y_pred=y_pred,
                sample_weight=weights, training=training,
            )  # fmt: skip
        finally:
            model._losses_override = []
        return y_pred, loss, others

    def _step(self, trainable, others, slots, x, y, weights):
        """One Keras train step of one copy (TensorFlow's train_step, statelessly)."""
        with tf.GradientTape() as tape:
            tape.watch(trainable)
            _, loss, others = self._loss(trainable, others, x, y, weights, training=True)
        gradients = tape.gradient(loss, trainable)
        trainable, slots = BaseOptimizer.stateless_apply(
            self.optimizer, slots, gradients, trainable
        )
        return list(trainable), list(others), list(slots), loss

    def _stacked_step(self, state: State, x, y, weights) -> tuple[State, tf.Tensor]:
        trainable, others, slots = state
        if self.mode == "vmap":
            trainable, others, slots, loss = tf.vectorized_map(
                lambda args: self._step(*args),
                (trainable, others, slots, x, y, weights),
                fallback_to_while_loop=True,
            )
            return (list(trainable), list(others), list(slots)), loss
        outputs = [
            self._step(
                [t[i] for t in trainable],
                [o[i] for o in others],
                [s[i] for s in slots],
                x[i],
                y[i],
                weights[i],
            )  # fmt: skip
            for i in range(self.copies)
        ]
        stacked = tuple(
            [tf.stack(values) for values in zip(*(output[part] for output in outputs), strict=True)]
            for part in range(3)
        )
        return stacked, tf.stack([output[3] for output in outputs])  # type: ignore[return-value]

    def _train_body(self, state, x, y, weights, batches, active):
        """Steps over batches [steps, copies, rows] (row indices into each copy's own x
        [copies, n, ...], y and sample weights); copies not `active` keep their state."""

        def body(step, trainable, others, slots, losses):
            rows = batches[step]
            (trainable, others, slots), loss = self._stacked_step(
                (trainable, others, slots),
                tf.gather(x, rows, batch_dims=1),
                tf.gather(y, rows, batch_dims=1),
                tf.gather(weights, rows, batch_dims=1),
            )
            return step + 1, trainable, others, slots, losses.write(step, loss)

        steps = tf.shape(batches)[0]
        losses = tf.TensorArray(tf.float32, size=steps)
        _, *new, losses = tf.while_loop(
            lambda step, *_: step < steps, body, (tf.constant(0), *state, losses)
        )
        kept = tuple(
            [_select(active, n, o) for n, o in zip(new_part, old_part, strict=True)]
            for new_part, old_part in zip(new, state, strict=True)
        )
        return kept, losses.stack()

    def train(self, state: State, x, y, weights, batches, active) -> tuple[State, np.ndarray]:
        """(new state, losses [steps, copies]) after the steps of `batches`."""
        state, losses = self._train(
            state, x, y, weights, tf.constant(batches, tf.int32), tf.constant(active)
        )
        return state, losses.numpy()

    def _evaluate_body(self, trainable, others, x, y):
        def one(args):
            trainable, others, x, y = args
            y_pred, loss, _ = self._loss(trainable, others, x, y, None, training=False)
            return y_pred, loss

        return tf.vectorized_map(one, (trainable, others, x, y), fallback_to_while_loop=True)

    def evaluate(self, state: State, x, y) -> tuple[np.ndarray, np.ndarray]:
        """(outputs, loss with regularization) of every copy on its own rows x [copies, n]
        in inference mode, as Keras' evaluate computes them."""
        outputs, losses = self._evaluate(state[0], state[1], x, y)
        return outputs.numpy(), losses.numpy()

    def _predict_body(self, trainable, others, x):
        def one(args):
            trainable, others, x = args
            return self.template.stateless_call(trainable, others, x, training=False)[0]

        return tf.vectorized_map(one, (trainable, others, x), fallback_to_while_loop=True)

    def predict(self, state: State, x: np.ndarray) -> np.ndarray:
        """Every copy's outputs on its own rows x [copies, n, ...] (padding rows harmless:
        inference computes each row on its own)."""
        return self._predict(state[0], state[1], tf.constant(x)).numpy()


def _select(active: tf.Tensor, new: tf.Tensor, old: tf.Tensor) -> tf.Tensor:
    mask = tf.reshape(active, [-1] + [1] * (len(new.shape) - 1))
    return tf.where(mask, new, old)
