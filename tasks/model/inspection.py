"""Reading a user's built model: does it fit the task and the data, and can the fast engine
train it exactly?

Everything here looks at one built, compiled model (built once per distinct set of arguments
on the driver); nothing trains.
"""

from __future__ import annotations

import json
import math
from typing import Any

import keras

from tasks.errors import ConfigError
from tasks.records import ChainLayer, DenseNetwork, GraphNode

# Activations the fast engine computes exactly as Keras 3 does
# (tasks.train.fast.network.FAST_ACTIVATIONS).
FAST_ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu", "selu", "softplus", "gelu", "linear")
OUTPUT_ACTIVATION = {"binary": "sigmoid", "multiclass": "softmax", "regression": "linear"}
# Optimizer settings that must keep their default (off) for the fast engine to apply
# (weight decay and the three clippings it reproduces; EMA and the others it does not).
_OPTIMIZER_OFF = {
    "use_ema": False,
    "loss_scale_factor": None,
    "gradient_accumulation_steps": None,
}
_DENSE_OFF = (
    "activity_regularizer",
    "kernel_constraint",
    "bias_constraint",
)
# Settings of a normalization layer that must be off for the fast engine to apply.
_NORMALIZATION_OFF = (
    "activity_regularizer",
    "gamma_regularizer",
    "beta_regularizer",
    "gamma_constraint",
    "beta_constraint",
)
# The learning-rate schedules Keras ships, pure functions of the step: the fast engine rebuilds
# them from their config (tasks.train.fast.rates).
KERAS_SCHEDULES = (
    "ExponentialDecay",
    "InverseTimeDecay",
    "PiecewiseConstantDecay",
    "PolynomialDecay",
    "CosineDecay",
    "CosineDecayRestarts",
)


def check_model(model: Any, meta: dict[str, Any], where: str) -> None:
    """A compiled keras.Model whose input width is the data's and whose output fits the task.

    `where` names the function and combination in every message.
    """
    if not isinstance(model, keras.Model):
        raise ConfigError(
            f"{where} returned {type(model).__name__}, not a keras.Model: "
            "build the model and return it"
        )
    if not getattr(model, "compiled", False):
        raise ConfigError(
            f"{where} returned a model that is not compiled: call "
            "model.compile(loss=..., optimizer=...) before returning it"
        )
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs:
        raise ConfigError(
            f"{where} returned a model without a defined input: start it with "
            "keras.Input(shape=(meta['n_features_in_'],)) (or input_dim=...)"
        )
    if len(inputs) != 1 or len(outputs) != 1:
        raise ConfigError(
            f"{where} returned a model with {len(inputs)} inputs and {len(outputs)} outputs; "
            "foldflow feeds one feature matrix and scores one output"
        )
    width = inputs[0].shape[-1]
    if len(inputs[0].shape) != 2 or width != meta["n_features_in_"]:
        raise ConfigError(
            f"{where} returned a model whose input shape is {tuple(inputs[0].shape)}, but the "
            f"dataset has {meta['n_features_in_']} features (take the width from "
            "meta['n_features_in_'])"
        )
    task = meta["task"]
    units = 1 if task != "multiclass" else meta["n_classes_"]
    expected = OUTPUT_ACTIVATION[task]
    shape = tuple(outputs[0].shape)
    activation = output_activation(model)
    if len(shape) != 2 or shape[-1] != units or activation != expected:
        what = {
            "binary": "one sigmoid unit",
            "multiclass": f"one softmax unit per class ({units})",
            "regression": "one linear unit",
        }[task]
        raise ConfigError(
            f"{where} returned a model whose output is {shape[-1]} unit(s) with activation "
            f"{activation or 'unknown'}; a {task} task needs {what}"
        )


def output_activation(model: keras.Model) -> str | None:
    """The name of the last layer's activation, when the last layer says it plainly."""
    last = model.layers[-1] if model.layers else None
    if isinstance(last, keras.layers.Softmax):
        return "softmax"
    activation = getattr(last, "activation", None)
    if activation is None:
        return None
    try:
        name = keras.activations.serialize(activation)
    except (ValueError, TypeError):
        return None
    return name if isinstance(name, str) else None


def inspect_network(model: keras.Model, task: str) -> DenseNetwork | str:
    """The Dense stack the fast engine reproduces, or why the reference engine must train it.

    The reason reads after `reference engine: `, e.g. `layer 'norm' (BatchNormalization) is
    not supported by the fast engine`.
    """
    if type(model) not in (keras.Sequential, _functional_class()):
        return f"model class {type(model).__name__} may train its own way (a subclass)"
    if _is_graph(model):
        return _graph_network(model, task)
    dense_layers, layers = [], []
    dropout: list[float | None] = []
    between: list[tuple[ChainLayer, ...]] = []
    pending: float | None = None  # the rate of a Dropout waiting for the next Dense layer
    chain: list[tuple[Any, ChainLayer]] = []  # chain layers waiting for the next Dense layer
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        layers.append(layer)
        kind = type(layer).__name__
        if type(layer) is keras.layers.Dropout:
            reason = _dropout_reason(layer, pending)
            if reason:
                return f"layer {layer.name!r} (Dropout): {reason}"
            pending = float(layer.rate)
            continue
        if type(layer) in _CHAIN_CLASSES:
            chained = _chain_layer(layer)
            if pending is not None:
                chained = "a Dropout right before it is not supported by the fast engine"
            if isinstance(chained, str):
                return f"layer {layer.name!r} ({kind}): {chained}"
            chain.append((layer, chained))
            continue
        if type(layer) is not keras.layers.Dense:
            return f"layer {layer.name!r} ({kind}) is not supported by the fast engine"
        reason = _dense_reason(layer)
        if reason:
            return f"layer {layer.name!r} (Dense): {reason}"
        dense_layers.append(layer)
        dropout.append(pending)
        between.append(tuple(chained for _, chained in chain))
        pending, chain = None, []
    if not dense_layers:
        return "the model has no Dense layer"
    if pending is not None:
        return "a Dropout after the output layer is not supported by the fast engine"
    if _call_chain(model) != layers:
        return "the layers are not one chain, each used once (the fast engine's only shape)"
    sizes = [int(model.inputs[0].shape[-1])]
    sizes += [int(layer.units) for layer in dense_layers]
    activations = tuple(keras.activations.serialize(layer.activation) for layer in dense_layers)
    if chain:
        # Dense(units) then Activation(...) computes what Dense(units, activation=...) does.
        [(last, chained), *more] = chain
        if more or chained.kind != "activation" or activations[-1] != "linear":
            kind = type(last).__name__
            return (
                f"layer {last.name!r} ({kind}) after the output layer is not supported by "
                "the fast engine"
            )
        activations = (*activations[:-1], chained.activation)
    return _network(
        model,
        task,
        dense_layers,
        sizes=tuple(sizes),
        activations=activations,
        dropout=tuple(dropout) if any(rate is not None for rate in dropout) else (),
        between=tuple(between) if any(between) else (),
    )


def _network(model: keras.Model, task: str, dense_layers: list, **found: Any) -> DenseNetwork | str:
    """The DenseNetwork of a model whose layers the fast engine computes (`found`: its sizes,
    activations, dropout, between or graph), once its output, loss and optimizer check out."""
    activations = found["activations"]
    if activations[-1] != OUTPUT_ACTIVATION[task]:
        return f"the output activation is {activations[-1]}, not {OUTPUT_ACTIVATION[task]}"
    if "softmax" in activations[:-1]:
        return "a softmax activation before the output is not supported by the fast engine"
    loss = _loss_plan(model, task)
    if loss not in _LOSS_NAMES:
        return loss
    regularizers = []
    for layer in dense_layers:
        factors = _regularizer_factors(layer)
        if isinstance(factors, str):
            return f"layer {layer.name!r} (Dense): {factors}"
        regularizers.append(factors)
    optimizer = _optimizer_plan(model.optimizer)
    if isinstance(optimizer, str):
        return optimizer
    name, settings, schedule = optimizer
    return DenseNetwork(
        biases=tuple(bool(layer.use_bias) for layer in dense_layers),
        optimizer=name,
        settings=settings,
        loss=loss,
        regularizers=tuple(regularizers) if any(map(any, regularizers)) else (),
        schedule=schedule,
        **found,
    )


# Layers only a functional graph has (a model holding one is read as a graph).
_GRAPH_CLASSES = (
    keras.layers.Concatenate,
    keras.layers.Add,
    keras.layers.Embedding,
    keras.layers.Flatten,
)


def _operations(model: keras.Model) -> list[Any]:
    """The model's operations (layers and ops such as x[:, 3]) in Keras' topological order."""
    functional = (
        getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else model
    )
    return list(getattr(functional, "_operations", None) or model.layers)


def _is_graph(model: keras.Model) -> bool:
    """Whether the model is more than a chain of layers: branches, merges, column slices,
    embeddings."""
    operations = _operations(model)
    if any(not isinstance(operation, keras.layers.Layer) for operation in operations):
        return True
    if any(type(layer) in _GRAPH_CLASSES for layer in model.layers):
        return True
    return _call_chain(model) is None


def _graph_network(model: keras.Model, task: str) -> DenseNetwork | str:
    """A functional graph's DenseNetwork (GraphNodes in Keras' order), or why not."""
    nodes: list[GraphNode] = []
    dense_layers: list[Any] = []
    rates: list[float] = []
    position: dict[int, int] = {}
    for operation in _operations(model):
        kind = type(operation).__name__
        what = f"{'layer' if isinstance(operation, keras.layers.Layer) else 'operation'} "
        what += f"{getattr(operation, 'name', kind)!r} ({kind})"
        if len(operation._inbound_nodes) != 1:
            return f"{what} is called more than once: not supported by the fast engine"
        node = operation._inbound_nodes[0]
        sources = [getattr(t, "_keras_history", (None,))[0] for t in node.input_tensors]
        if any(id(source) not in position for source in sources):
            return f"{what} reads a tensor from outside the model: not supported by the fast engine"
        inputs = tuple(position[id(source)] for source in sources)
        outputs = node.output_tensors
        shape = tuple(outputs[0].shape[1:]) if len(outputs) == 1 else (None,)
        if any(size is None for size in shape):
            return f"{what}: an output shape {shape} is not supported by the fast engine"
        made = _graph_node(operation, node, inputs, [nodes[i].shape for i in inputs], shape)
        if isinstance(made, str):
            return f"{what}{made}"
        if made.kind == "embedding" and nodes[inputs[0]].kind not in ("input", "columns"):
            # Its codes are then feature columns, checked against input_dim before training.
            return f"{what}: an Embedding of anything but input columns{_NOT_SUPPORTED}"
        if made.kind == "dense":
            made = made.model_copy(update={"dense": len(dense_layers)})
            dense_layers.append(operation)
        elif made.kind == "dropout":
            made = made.model_copy(update={"slot": len(rates)})
            rates.append(float(operation.rate))
        position[id(operation)] = len(nodes)
        nodes.append(made)
    if not dense_layers or nodes[-1].kind != "dense":
        return "a graph whose output is not a Dense layer is not supported by the fast engine"
    network = _network(
        model,
        task,
        dense_layers,
        sizes=(nodes[0].shape[0], *(int(layer.units) for layer in dense_layers)),
        activations=tuple(keras.activations.serialize(layer.activation) for layer in dense_layers),
        dropout=tuple(rates),
        graph=tuple(nodes),
    )
    embedded = [op for op in _operations(model) if type(op) is keras.layers.Embedding]
    if isinstance(network, DenseNetwork) and embedded:
        # Keras' TensorFlow optimizers get an Embedding's gradient as one row per lookup:
        # clipping and Adamax's / Adadelta's updates then act on each lookup apart.
        clipped = [
            key for key in ("clipvalue", "clipnorm", "global_clipnorm") if key in network.settings
        ]
        if clipped or network.optimizer in ("adamax", "adadelta"):
            setting = clipped[0] if clipped else f"optimizer {type(model.optimizer).__name__}"
            return (
                f"layer {embedded[0].name!r} (Embedding) with {setting} is not supported by "
                "the fast engine"
            )
    return network


_NOT_SUPPORTED = " is not supported by the fast engine"


def _graph_node(
    operation: Any, node: Any, inputs: tuple[int, ...], shapes: list[tuple], shape: tuple
) -> GraphNode | str:
    """What the fast engine computes for one operation of a graph, else why not (a sentence
    that follows the operation's name)."""
    made = GraphNode(kind="", inputs=inputs, shape=tuple(int(size) for size in shape))
    flat = all(len(given) == 1 for given in shapes)
    if isinstance(operation, keras.layers.InputLayer):
        return made.model_copy(update={"kind": "input"}) if len(shape) == 1 else _NOT_SUPPORTED
    if type(operation).__name__ == "GetItem":
        return _columns(made, node.arguments.args, shapes)
    if not isinstance(operation, keras.layers.Layer) or len(inputs) < 1:
        return _NOT_SUPPORTED
    if type(operation) is keras.layers.Embedding:
        reason = _embedding_reason(operation)
        update = {"kind": "embedding", "vocabulary": int(operation.input_dim)}
        return f": {reason}" if reason else made.model_copy(update=update)
    if type(operation) is keras.layers.Flatten:
        return made.model_copy(update={"kind": "flatten"})
    if not flat:
        return ": an input with more than one axis per row is not supported by the fast engine"
    if type(operation) in (keras.layers.Concatenate, keras.layers.Add):
        if type(operation) is keras.layers.Concatenate and operation.axis not in (-1, 1):
            return f": axis {operation.axis}{_NOT_SUPPORTED}"
        return made.model_copy(update={"kind": type(operation).__name__.lower()})
    if len(inputs) != 1:
        return _NOT_SUPPORTED
    if type(operation) is keras.layers.Dense:
        reason = _dense_reason(operation)
        return f": {reason}" if reason else made.model_copy(update={"kind": "dense"})
    if type(operation) is keras.layers.Dropout:
        reason = _dropout_reason(operation, None)
        return f": {reason}" if reason else made.model_copy(update={"kind": "dropout"})
    if type(operation) in _CHAIN_CLASSES:
        chained = _chain_layer(operation)
        if isinstance(chained, str):
            return f": {chained}"
        return made.model_copy(update={"kind": "chain", "chain": chained})
    return _NOT_SUPPORTED


def _columns(made: GraphNode, args: Any, shapes: list[tuple]) -> GraphNode | str:
    """x[:, i] or x[:, a:b] of a [rows, features] tensor (Keras' GetItem), else why not."""
    refused = ": only x[:, i] and x[:, a:b] of the features are supported by the fast engine"
    if len(args) != 2 or len(shapes) != 1 or len(shapes[0]) != 1:
        return refused
    key = args[1]
    if not isinstance(key, tuple) or len(key) != 2 or key[0] != slice(None):
        return refused
    columns = range(shapes[0][0])
    if (
        isinstance(key[1], int)
        and not isinstance(key[1], bool)
        and -len(columns) <= key[1] < len(columns)
    ):
        start = columns[key[1]]
        return made.model_copy(
            update={"kind": "columns", "start": start, "stop": start + 1, "squeeze": True}
        )
    if not isinstance(key[1], slice) or key[1].step not in (None, 1) or not columns[key[1]]:
        return refused
    taken = columns[key[1]]
    return made.model_copy(update={"kind": "columns", "start": taken.start, "stop": taken.stop})


def _embedding_reason(layer: keras.layers.Embedding) -> str | None:
    """Why the fast engine cannot look up this Embedding as Keras does, or None."""
    config = layer.get_config()
    for key in ("embeddings_regularizer", "activity_regularizer", "embeddings_constraint"):
        if config.get(key) is not None:
            return f"{key} is not supported by the fast engine"
    if config.get("mask_zero"):
        return "mask_zero is not supported by the fast engine"
    return _weights_reason(layer, config)


def _weights_reason(layer: Any, config: dict[str, Any]) -> str | None:
    """Why the fast engine cannot hold this layer's weights as Keras does (LoRA, quantized,
    not float32, frozen), or None: the checks every layer with weights shares."""
    if getattr(layer, "lora_enabled", False) or config.get("lora_rank"):
        return "LoRA is not supported by the fast engine"
    if config.get("quantization_config") or getattr(layer, "quantization_mode", None):
        return "quantization is not supported by the fast engine"
    if layer.dtype_policy.name != "float32":
        return f"dtype policy {layer.dtype_policy.name} (the fast engine computes in float32)"
    if not layer.trainable:
        return "frozen (trainable=False) layers are not supported by the fast engine"
    return None


_CHAIN_CLASSES = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.Activation,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
)


def _chain_layer(layer: Any) -> ChainLayer | str:
    """What the fast engine computes for a normalization or Activation layer, else why not."""
    if layer.dtype_policy.name != "float32":
        return f"dtype policy {layer.dtype_policy.name} (the fast engine computes in float32)"
    if not layer.trainable:
        return "frozen (trainable=False) layers are not supported by the fast engine"
    config = layer.get_config()
    if isinstance(layer, keras.layers.Activation):
        activation = config.get("activation")
        if not isinstance(activation, str) or activation not in FAST_ACTIVATIONS:
            return f"activation {activation!r} is not supported by the fast engine"
        return ChainLayer(kind="activation", activation=activation)
    if isinstance(layer, keras.layers.GaussianNoise):
        if not float(layer.stddev) >= 0:
            return f"stddev {layer.stddev} is not supported by the fast engine"
        return ChainLayer(kind="gaussian_noise", stddev=float(layer.stddev))
    if isinstance(layer, keras.layers.GaussianDropout):
        rate = float(layer.rate)
        if not 0 <= rate < 1:
            return f"rate {rate} is not supported by the fast engine (only 0 <= rate < 1)"
        # Keras' stddev, computed in doubles.
        return ChainLayer(kind="gaussian_dropout", stddev=math.sqrt(rate / (1.0 - rate)))
    for key in _NORMALIZATION_OFF:
        if config.get(key) is not None:
            return f"{key} is not supported by the fast engine"
    for key in ("renorm", "synchronized", "rms_scaling"):
        if config.get(key) or getattr(layer, key, False):
            return f"{key} is not supported by the fast engine"
    axis = config.get("axis")
    if axis not in (-1, 1, [-1], [1]):
        return f"axis {axis} is not supported by the fast engine (only the features' axis)"
    common = {
        "epsilon": float(config["epsilon"]),
        "center": bool(config["center"]),
        "scale": bool(config["scale"]),
    }
    if isinstance(layer, keras.layers.LayerNormalization):
        return ChainLayer(kind="layer_normalization", **common)
    return ChainLayer(kind="batch_normalization", momentum=float(config["momentum"]), **common)


def _dropout_reason(layer: keras.layers.Dropout, pending: float | None) -> str | None:
    """Why the fast engine cannot apply this Dropout as Keras does in training (inverted
    dropout of independent units, none at prediction), or None."""
    if pending is not None:
        return "two Dropout layers in a row are not supported by the fast engine"
    if layer.noise_shape is not None:
        return "noise_shape is not supported by the fast engine"
    if not 0 <= float(layer.rate) < 1:
        return f"rate {layer.rate} is not supported by the fast engine (only 0 <= rate < 1)"
    if layer.dtype_policy.name != "float32":
        return f"dtype policy {layer.dtype_policy.name} (the fast engine computes in float32)"
    return None


def _call_chain(model: keras.Model) -> list[Any] | None:
    """The layers from the input to the output, walking back from the output tensor; None
    when some step takes more than one input."""
    chain = []
    tensor = model.outputs[0]
    for _ in range(10_000):
        history = getattr(tensor, "_keras_history", None)
        if history is None:
            return None
        operation, node_index, _ = history
        if isinstance(operation, keras.layers.InputLayer):
            return chain[::-1]
        chain.append(operation)
        inputs = operation._inbound_nodes[node_index].input_tensors
        if len(inputs) != 1:
            return None
        tensor = inputs[0]
    return None


def _functional_class() -> type:
    from keras.src.models.functional import Functional

    return Functional


def _dense_reason(layer: keras.layers.Dense) -> str | None:
    config = layer.get_config()
    for key in _DENSE_OFF:
        if config.get(key) is not None:
            return f"{key} is not supported by the fast engine"
    if (reason := _weights_reason(layer, config)) is not None:
        return reason
    activation = config.get("activation")
    if not isinstance(activation, str) or activation not in (*FAST_ACTIVATIONS, "softmax"):
        return f"activation {activation!r} is not supported by the fast engine"
    return None


# Loss names Keras accepts, by the fast engine's name for the loss
# (tasks.train.fast.network.FAST_LOSSES).
_LOSS_NAMES = {
    "binary_crossentropy": ("binary_crossentropy", "BinaryCrossentropy"),
    "sparse_categorical_crossentropy": (
        "sparse_categorical_crossentropy",
        "SparseCategoricalCrossentropy",
    ),
    "categorical_crossentropy": ("categorical_crossentropy", "CategoricalCrossentropy"),
    "mean_squared_error": ("mean_squared_error", "mse", "MSE", "MeanSquaredError"),
    "mean_absolute_error": ("mean_absolute_error", "mae", "MAE", "MeanAbsoluteError"),
}
_TASK_LOSSES = {
    "binary": ("binary_crossentropy",),
    "multiclass": ("sparse_categorical_crossentropy", "categorical_crossentropy"),
    "regression": ("mean_squared_error", "mean_absolute_error"),
}


def _loss_plan(model: keras.Model, task: str) -> str:
    """The fast engine's name for the model's loss (tasks.train.fast.network.FAST_LOSSES), else the
    reason it cannot reproduce it (a sentence starting with `loss`)."""
    loss = model.loss
    if isinstance(loss, str):
        name, config = loss, {}
    elif isinstance(loss, keras.losses.Loss):
        config = loss.get_config()
        # A Loss class (MeanSquaredError...) by its class name; a plain wrapper by its function.
        name = type(loss).__name__
        if type(loss) is _loss_wrapper_class():
            name = getattr(getattr(loss, "fn", None), "__name__", name)
    elif callable(loss):
        name, config = getattr(loss, "__name__", repr(loss)), {}
    else:
        return f"loss {loss!r} is not supported by the fast engine"
    found = next((key for key, names in _LOSS_NAMES.items() if name in names), None)
    if found is None or found not in _TASK_LOSSES[task]:
        return f"loss {name!r} is not supported by the fast engine for a {task} task"
    if config.get("from_logits") or config.get("label_smoothing"):
        return "loss with from_logits or label_smoothing is not supported by the fast engine"
    if config.get("ignore_class") is not None or config.get("axis", -1) != -1:
        return "loss with ignore_class or axis is not supported by the fast engine"
    if config.get("reduction", "sum_over_batch_size") != "sum_over_batch_size":
        return f"loss reduction {config['reduction']!r} is not supported by the fast engine"
    if getattr(model, "_compile_loss", None) is not None and getattr(
        model._compile_loss, "_user_loss_weights", None
    ):
        return "loss_weights are not supported by the fast engine"
    return found


def _regularizer_factors(layer: keras.layers.Dense) -> tuple[float, float, float, float] | str:
    """(kernel l1, kernel l2, bias l1, bias l2) of Keras' L1 / L2 / L1L2 regularizers."""
    factors = []
    for attribute in ("kernel_regularizer", "bias_regularizer"):
        regularizer = getattr(layer, attribute, None)
        if regularizer is None:
            factors += [0.0, 0.0]
        elif type(regularizer) in (
            keras.regularizers.L1,
            keras.regularizers.L2,
            keras.regularizers.L1L2,
        ):
            factors += [
                float(getattr(regularizer, "l1", 0.0) or 0.0),
                float(getattr(regularizer, "l2", 0.0) or 0.0),
            ]
        else:
            return f"{attribute} {type(regularizer).__name__} is not supported by the fast engine"
    return (factors[0], factors[1], factors[2], factors[3])


def _loss_wrapper_class() -> type:
    from keras.src.losses.losses import LossFunctionWrapper

    return LossFunctionWrapper


def _optimizer_plan(optimizer: Any) -> tuple[str, dict[str, float], str] | str:
    """(name, settings, schedule) of an optimizer the fast engine reproduces, else the reason
    (schedule: a Keras learning-rate schedule as JSON, or "")."""
    kinds = {
        keras.optimizers.RMSprop: "rmsprop",
        keras.optimizers.Adam: "adam",
        keras.optimizers.AdamW: "adam",  # Adam's update_step plus weight_decay
        keras.optimizers.SGD: "sgd",
        keras.optimizers.Adagrad: "adagrad",
        keras.optimizers.Adadelta: "adadelta",
        keras.optimizers.Adamax: "adamax",
        keras.optimizers.Nadam: "nadam",
    }
    name = kinds.get(type(optimizer))
    if name is None:
        return f"optimizer {type(optimizer).__name__} is not supported by the fast engine"
    rate = getattr(optimizer, "_learning_rate", None)
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        kind = type(rate).__name__
        if kind not in KERAS_SCHEDULES or not type(rate).__module__.startswith("keras.src."):
            # Checked first: a schedule of one's own may not serialize (get_config).
            return f"learning-rate schedule {kind} is not supported by the fast engine"
    config = optimizer.get_config()
    for key, off in _OPTIMIZER_OFF.items():
        if config.get(key, off) != off:
            return f"optimizer setting {key}={config[key]!r} is not supported by the fast engine"
    if getattr(optimizer, "_exclude_from_weight_decay", None) or getattr(
        optimizer, "_exclude_from_weight_decay_pattern", None
    ):
        return "exclude_from_weight_decay is not supported by the fast engine"
    plan = _learning_rate_plan(optimizer, config)
    if isinstance(plan, str):
        return plan
    learning_rate, schedule = plan
    settings = {"learning_rate": learning_rate}
    for key in ("weight_decay", "clipvalue", "clipnorm", "global_clipnorm"):
        if config.get(key):
            settings[key] = float(config[key])
    if name in ("rmsprop", "adadelta"):
        settings.update(rho=float(config["rho"]), epsilon=float(config["epsilon"]))
    if name == "rmsprop":
        # Only when on: settings are part of what identifies a network.
        if config.get("momentum"):
            settings["momentum"] = float(config["momentum"])
        if config.get("centered"):
            settings["centered"] = 1.0
    elif name in ("adam", "adamax", "nadam"):
        settings.update(
            beta_1=float(config["beta_1"]),
            beta_2=float(config["beta_2"]),
            epsilon=float(config["epsilon"]),
        )
        if name == "adam" and config.get("amsgrad"):
            settings["amsgrad"] = 1.0
    elif name == "adagrad":
        settings.update(
            initial_accumulator_value=float(config["initial_accumulator_value"]),
            epsilon=float(config["epsilon"]),
        )
    elif name == "sgd":
        settings.update(
            momentum=float(config.get("momentum", 0.0)),
            nesterov=float(bool(config.get("nesterov", False))),
        )
    return name, settings, schedule


def _learning_rate_plan(optimizer: Any, config: dict[str, Any]) -> tuple[float, str] | str:
    """(the initial learning rate, a Keras schedule (checked) as JSON or ""), else the reason."""
    rate = getattr(optimizer, "_learning_rate", None)
    if not isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        learning_rate = config["learning_rate"]
        if not isinstance(learning_rate, int | float):
            return "a learning rate that is not a number is not supported by the fast engine"
        return float(learning_rate), ""
    initial = getattr(rate, "initial_learning_rate", None)
    if initial is None:
        initial = rate.values[0]  # PiecewiseConstantDecay's first value
    serialized = keras.optimizers.schedules.serialize(rate)
    return float(initial), json.dumps(serialized, sort_keys=True, default=float)
