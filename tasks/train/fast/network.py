"""The stacked network's math: M dense networks' parameters as flat [M, P] vectors, the batched
forward pass, dropout masks, Keras' per-row losses and the outputs a model predicts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial

import numpy as np
import tensorflow as tf

from tasks.records import ChainLayer, DenseNetwork

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


# A chain layer's variables in Keras' order (those it has: gamma with scale, beta with center).
CHAIN_VARIABLES = {
    "batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance"),
    "layer_normalization": ("gamma", "beta"),
    "activation": (),
    "gaussian_noise": (),
    "gaussian_dropout": (),
}
# Noise draws of chain layers are keyed apart from Dropout's (keyed by Dense layer index).
NOISE_KEYS = 1 << 12
# Variables the optimizer never updates: the training pass computes their new values.
MOVING_VARIABLES = ("moving_mean", "moving_variance")


def chain_variables(layer: ChainLayer) -> tuple[str, ...]:
    """The variables a chain layer has, in Keras' order."""
    return tuple(
        name
        for name in CHAIN_VARIABLES[layer.kind]
        if (name != "gamma" or layer.scale) and (name != "beta" or layer.center)
    )


@dataclass(frozen=True)
class Layout:
    """Where each Keras variable sits in a model's flat parameter vector, in Keras' weight
    order: per Dense layer, the variables of the chain layers on its input, then its kernel
    and bias."""

    sizes: tuple[int, ...]  # n_features, units of each Dense layer (the output's last: 1)
    biases: tuple[bool, ...] = ()  # per Dense layer (default: all)
    between: tuple[tuple[ChainLayer, ...], ...] = ()  # per Dense layer (default: none)

    def has_bias(self, layer: int) -> bool:
        return self.biases[layer] if self.biases else True

    def chain(self, layer: int) -> tuple[ChainLayer, ...]:
        return self.between[layer] if self.between else ()

    @cached_property
    def _spans(self) -> list[tuple[int, str, int, int, int]]:
        """(Dense layer, variable name, chain position or -1, start, stop) of every variable
        in Keras' order."""
        spans, start = [], 0
        for layer, (fan_in, fan_out) in enumerate(
            zip(self.sizes[:-1], self.sizes[1:], strict=True)
        ):
            for position, chained in enumerate(self.chain(layer)):
                for name in chain_variables(chained):
                    spans.append((layer, name, position, start, start + fan_in))
                    start += fan_in
            spans.append((layer, "kernel", -1, start, start + fan_in * fan_out))
            start += fan_in * fan_out
            if self.has_bias(layer):
                spans.append((layer, "bias", -1, start, start + fan_out))
                start += fan_out
        return spans

    @property
    def slices(self) -> list[tuple[int, int, int, int]]:
        """(kernel_start, bias_start, fan_in, fan_out) per Dense layer; a layer without a bias
        has an empty bias slice (bias_start to bias_start)."""
        kernels = [span for span in self._spans if span[1] == "kernel"]
        return [
            (start, stop, fan_in, fan_out)
            for (_, _, _, start, stop), fan_in, fan_out in zip(
                kernels, self.sizes[:-1], self.sizes[1:], strict=True
            )
        ]

    def chain_slices(self, layer: int) -> list[dict[str, tuple[int, int]]]:
        """Per chain layer on Dense layer `layer`'s input: its variables' (start, stop)."""
        found: list[dict[str, tuple[int, int]]] = [{} for _ in self.chain(layer)]
        for dense, name, position, start, stop in self._spans:
            if dense == layer and position >= 0:
                found[position][name] = (start, stop)
        return found

    @property
    def variables(self) -> tuple[tuple[int, int], ...]:
        """(start, stop) of each trainable Keras variable in the flat vector (clipnorm's)."""
        return tuple(
            (start, stop) for _, name, _, start, stop in self._spans if name not in MOVING_VARIABLES
        )

    @property
    def n_params(self) -> int:
        return self._spans[-1][4]

    @classmethod
    def of(cls, network: DenseNetwork) -> Layout:
        return cls(network.sizes, network.biases, network.between)

    def flatten(self, weights: list[np.ndarray]) -> np.ndarray:
        """Keras' weight list (every variable, in the model's order) as one flat vector."""
        flat = np.zeros(self.n_params, dtype=np.float32)
        spans = self._spans
        if len(weights) != len(spans):
            raise ValueError(f"{len(weights)} weights for a layout of {len(spans)} variables")
        for (_, _, _, start, stop), array in zip(spans, weights, strict=True):
            flat[start:stop] = np.asarray(array).reshape(stop - start)
        return flat

    def unflatten(self, flat: np.ndarray) -> list[np.ndarray]:
        """The flat vector back in Keras' weight order, for `set_weights`."""
        weights = []
        for layer, name, _, start, stop in self._spans:
            values = flat[start:stop]
            if name == "kernel":
                values = values.reshape(self.sizes[layer], self.sizes[layer + 1])
            weights.append(values)
        return weights


# A moving statistic's new value: its (start, stop) in the flat vector and [M, width] values.
MovingUpdate = tuple[tuple[int, int], tf.Tensor]


def forward_logits(
    params: tf.Tensor,
    x: tf.Tensor,
    layout: Layout,
    activations: tuple[str, ...],
    dropout: Callable[[int, tf.Tensor], tf.Tensor] | None = None,
) -> tf.Tensor:
    """Batched forward pass in inference mode: params [M, P], x [M, B, F] -> the output layer
    before its activation, [M, B, units] (Keras computes cross-entropy from those logits).
    BatchNormalization normalizes with its moving averages, as Keras predicts and evaluates.

    `dropout(layer, inputs)` (training steps only) drops units of a Dense layer's input.
    """
    return _forward(params, x, layout, activations, dropout, None)[0]


def training_forward(
    params: tf.Tensor,
    x: tf.Tensor,
    layout: Layout,
    activations: tuple[str, ...],
    real: tf.Tensor,
    dropout: Callable[[int, tf.Tensor], tf.Tensor] | None = None,
    noise: Callable[[int, tf.Tensor], tf.Tensor] | None = None,
    lookups: list | None = None,
) -> tuple[tf.Tensor, list[MovingUpdate]]:
    """The training step's forward pass: (logits, BatchNormalization's new moving averages).

    `real` [M, B] is 1 for a model's real batch rows, 0 for padding: each model's batch
    statistics are over its own real rows, as Keras computes them over its batch.
    `noise(key, inputs)`: standard normals shaped like `inputs` (GaussianNoise/Dropout).
    `lookups` collects a graph's Embedding lookups (tasks.train.fast.graph.GraphLayout).
    """
    return _forward(params, x, layout, activations, dropout, real, noise, lookups)


def _forward(
    params: tf.Tensor,
    x: tf.Tensor,
    layout: Layout,
    activations: tuple[str, ...],
    dropout: Callable[[int, tf.Tensor], tf.Tensor] | None,
    real: tf.Tensor | None,
    noise: Callable[[int, tf.Tensor], tf.Tensor] | None = None,
    lookups: list | None = None,
) -> tuple[tf.Tensor, list[MovingUpdate]]:
    graph_forward = getattr(layout, "forward", None)
    if graph_forward is not None:  # a functional graph (tasks.train.fast.graph.GraphLayout)
        return graph_forward(params, x, activations, dropout, real, noise, lookups)
    hidden = x
    n_models = tf.shape(params)[0]
    last = len(layout.slices) - 1
    updates: list[MovingUpdate] = []
    for index, (kernel_start, bias_start, fan_in, fan_out) in enumerate(layout.slices):
        chain = zip(layout.chain(index), layout.chain_slices(index), strict=True)
        for position, (chained, spans) in enumerate(chain):
            draw = None
            if noise is not None:
                draw = partial(noise, NOISE_KEYS + 64 * index + 2 * position)
            hidden, moved = chain_layer(hidden, chained, spans, params, real, draw)
            updates += moved
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
    return hidden, updates


def chain_layer(
    hidden: tf.Tensor,
    layer: ChainLayer,
    spans: dict[str, tuple[int, int]],
    params: tf.Tensor,
    real: tf.Tensor | None,
    draw: Callable[[tf.Tensor], tf.Tensor] | None = None,
) -> tuple[tf.Tensor, list[MovingUpdate]]:
    """One chain layer on [M, B, F] inputs, in Keras' op order; training mode when `real` is
    given (BatchNormalization: batch statistics and new moving averages; `draw(inputs)`:
    standard normals for GaussianNoise and GaussianDropout, which act in training only)."""
    if layer.kind == "activation":
        return FAST_ACTIVATIONS[layer.activation](hidden), []
    if layer.kind in ("gaussian_noise", "gaussian_dropout"):
        if real is None or draw is None:
            return hidden, []
        # Keras: inputs + normal(0, stddev); inputs * normal(1, stddev) (mean + stddev z).
        scaled = draw(hidden) * layer.stddev
        if layer.kind == "gaussian_noise":
            return hidden + scaled, []
        return hidden * (scaled + 1.0), []

    def variable(name: str) -> tf.Tensor | None:
        if name not in spans:
            return None
        start, stop = spans[name]
        return params[:, start:stop][:, None, :]

    gamma, beta = variable("gamma"), variable("beta")
    if layer.kind == "layer_normalization":
        # keras.ops.layer_normalization: moments over the features, then x * inv + res.
        mean, variance = tf.nn.moments(hidden, axes=[2], keepdims=True)
        inv = tf.math.rsqrt(variance + layer.epsilon)
        if gamma is not None:
            inv = inv * gamma
        res = -mean * inv
        if beta is not None:
            res = res + beta
        return hidden * inv + res, []
    moving_mean, moving_variance = variable("moving_mean"), variable("moving_variance")
    moved: list[MovingUpdate] = []
    if real is None:
        mean, variance = moving_mean, moving_variance
    else:
        # tf.nn.moments over the model's real rows (Keras' ops.moments over its batch).
        weights = real[:, :, None]
        count = tf.maximum(tf.reduce_sum(weights, axis=1, keepdims=True), 1.0)
        mean = tf.reduce_sum(hidden * weights, axis=1, keepdims=True) / count
        squared = tf.math.squared_difference(hidden, tf.stop_gradient(mean))
        variance = tf.reduce_sum(squared * weights, axis=1, keepdims=True) / count
        # Keras: moving * momentum + batch * (1.0 - momentum), 1 - momentum in doubles.
        keep, take = layer.momentum, 1.0 - layer.momentum
        moved = [
            (spans["moving_mean"], (moving_mean * keep + mean * take)[:, 0, :]),
            (spans["moving_variance"], (moving_variance * keep + variance * take)[:, 0, :]),
        ]
    outputs = tf.nn.batch_normalization(hidden, mean, variance, beta, gamma, layer.epsilon)
    return outputs, moved


def with_moving_updates(params: tf.Tensor, updates: list[MovingUpdate]) -> tf.Tensor:
    """params with each moving statistic's span replaced by its new values (the optimizer's
    step leaves them alone in Keras: they are not trainable)."""
    if not updates:
        return params
    pieces, at = [], 0
    for (start, stop), values in sorted(updates, key=lambda update: update[0][0]):
        pieces += [params[:, at:start], values]
        at = stop
    pieces.append(params[:, at:])
    return tf.concat(pieces, axis=1)


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


def standard_normal(first: tf.Tensor, second: tf.Tensor) -> tf.Tensor:
    """Standard normals from two uniforms in [0, 1) (Box-Muller; 1 - first is in (0, 1], so
    the logarithm is finite): statistically what Keras' normal draws are, not bit for bit."""
    radius = tf.sqrt(-2.0 * tf.math.log(1.0 - first))
    return radius * tf.cos((2.0 * np.pi) * second)


def apply_dropout(
    inputs: tf.Tensor, uniform: tf.Tensor, rate: tf.Tensor, scale: tf.Tensor
) -> tf.Tensor:
    """Keras' inverted dropout (tf.nn.experimental.stateless_dropout): a unit is kept when
    its uniform >= rate and then scaled by 1 / (1 - rate) (`scale`, computed in doubles);
    `rate` and `scale` are [M] (rate 0, scale 1 leave the inputs exactly as they are)."""
    keep = tf.cast(uniform >= rate[:, None, None], tf.float32)
    return inputs * scale[:, None, None] * keep


def dropout_slots(sizes: tuple[int, ...], dropout: tuple) -> int:
    """How many dropout rates a program takes per model: one per Dense layer of a chain, one
    per Dropout layer of a graph (DenseNetwork.dropout)."""
    return max(len(sizes) - 1, len(dropout))


def dropout_vectors(network: DenseNetwork) -> np.ndarray:
    """[2, slots]: each Dense layer's input dropout rate (a graph's: each Dropout layer's) and
    1 / (1 - rate) (0 and 1: none)."""
    vectors = np.zeros((2, dropout_slots(network.sizes, network.dropout)), dtype=np.float64)
    vectors[1] = 1.0
    for layer, rate in enumerate(network.dropout):
        if rate is not None:
            vectors[:, layer] = (rate, 1.0 / (1.0 - rate))
    return vectors.astype(np.float32)


def per_row_loss(loss: str, logits: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
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


def predicted_outputs(loss: str, logits: tf.Tensor) -> tf.Tensor:
    """What the model predicts from its logits: P(class 1), class probabilities, or values."""
    if loss == "binary_crossentropy":
        return tf.math.sigmoid(logits)
    if "categorical" in loss:
        return tf.nn.softmax(logits, axis=-1)
    return logits


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


def penalty_terms(params: tf.Tensor, factors: np.ndarray) -> np.ndarray:
    """Each model's L1 + L2 regularization term (zero without regularizers)."""
    if not factors.any():
        return np.zeros(factors.shape[1])
    params = params.numpy()
    return (factors[0] * np.abs(params)).sum(axis=1) + (factors[1] * np.square(params)).sum(axis=1)
