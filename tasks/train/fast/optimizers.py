"""A port of Keras' optimizers to stacked models: every model its own rule and settings, each
update computed in Keras' own op order (clipping, weight decay, then the rule's update_step)."""

from __future__ import annotations

import tensorflow as tf

from tasks.records import DenseNetwork

FAST_OPTIMIZERS = ("rmsprop", "adam", "sgd", "adagrad", "adadelta", "adamax", "nadam")


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


def setting_vector(network: DenseNetwork) -> list[float]:
    """The network's optimizer settings in SETTINGS order (unused ones are zero)."""
    settings = dict(network.settings)
    for name in ("rho", "beta_1", "beta_2"):
        if name in settings:
            settings[f"one_minus_{name}"] = 1.0 - settings[name]
    if settings.get("global_clipnorm"):
        settings["inverse_global_clipnorm"] = 1.0 / settings["global_clipnorm"]
    return [float(settings.get(name, 0.0)) for name in SETTINGS]


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


def keras_update(
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
    squared: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tuple[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]:
    """(params, slots, product) after one step, as Keras' optimizers compute them (same op
    order): clipping, then weight decay, then the optimizer's own update_step.

    `settings` is [M, len(SETTINGS)]: each model's own learning rate, rho, betas, epsilon...
    Only the `optimizers` and `options` named are computed (a model whose clipvalue or
    weight_decay is 0 is left exactly as without them). `variables` are the (start, stop) of
    each Keras variable (kernel, bias) in the flat vector, for clipnorm's norms.
    `squared`: what Keras' ops.square(gradient) sums to (an Embedding's sparse gradient is
    squared per lookup: tasks.train.fast.graph.GraphLayout.squared_gradient); default its square.
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
    square = tf.square(gradient) if squared is None else squared
    local_step = steps + 1.0
    results: dict[str, tuple] = {}
    if "rmsprop" in optimizers:
        # v = rho v + (1 - rho) g^2; centered: a = rho a + (1 - rho) g, denominator
        # v - a^2 + eps; increment = lr g / sqrt(denominator); momentum: m = mu m + increment.
        velocity = column["rho"] * second + column["one_minus_rho"] * square
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
        velocity = second + (square - second) * column["one_minus_beta_2"]
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
        accumulator = first + square
        delta = lr * gradient / tf.sqrt(accumulator + column["epsilon"])
        results["adagrad"] = (params - delta, (accumulator, second, third))
    if "adadelta" in optimizers:
        # ag = rho ag + (1 - rho) g^2; d = -(sqrt(ad + eps) g) / sqrt(ag + eps);
        # ad = rho ad + (1 - rho) d^2; w += lr d
        accumulated_grad = column["rho"] * first + column["one_minus_rho"] * square
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
        velocity = second + (square - second) * (1 - beta_2)[:, None]
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
