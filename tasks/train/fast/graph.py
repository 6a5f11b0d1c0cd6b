"""Functional graphs on the stacked engine: where each variable of a graph's layers sits in a
model's flat parameter vector, and the batched forward pass through the graph's nodes
(column slices, Embedding, Flatten, Concatenate, Add, Dense, Dropout and the chain layers).

A chain (tasks.train.fast.network.Layout) is the common case; a DenseNetwork with a `graph`
gets a GraphLayout instead, with the same interface, so programs and the trainer run either.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, partial
from math import prod

import numpy as np
import tensorflow as tf

from tasks.records import ChainLayer, DenseNetwork, GraphNode
from tasks.train.fast.network import (
    FAST_ACTIVATIONS,
    MOVING_VARIABLES,
    NOISE_KEYS,
    Layout,
    MovingUpdate,
    chain_layer,
    chain_variables,
    with_moving_updates,
)

# A variable of a graph: (node position, name, start, stop, shape in Keras).
Span = tuple[int, str, int, int, tuple[int, ...]]


def layout_for(
    sizes: tuple[int, ...],
    biases: tuple[bool, ...],
    between: tuple[tuple[ChainLayer, ...], ...],
    graph: tuple[GraphNode, ...],
) -> Layout | GraphLayout:
    """The layout of a chain, or of a graph when there is one."""
    return GraphLayout(sizes, biases, graph) if graph else Layout(sizes, biases, between)


def layout_of(network: DenseNetwork) -> Layout | GraphLayout:
    return layout_for(network.sizes, network.biases, network.between, network.graph)


@dataclass(frozen=True)
class GraphLayout:
    """Where each Keras variable of a graph sits in a model's flat parameter vector: node by
    node in Keras' order (the order of `model.weights`), each node's variables in its own."""

    sizes: tuple[int, ...]  # n_features, units of each Dense layer (the output's last)
    biases: tuple[bool, ...]  # per Dense layer
    graph: tuple[GraphNode, ...]
    between: tuple = ()  # a graph has no chain between Dense layers (Layout's field)

    def has_bias(self, layer: int) -> bool:
        return self.biases[layer]

    @cached_property
    def _spans(self) -> list[Span]:
        spans: list[Span] = []
        start = 0
        for position, node in enumerate(self.graph):
            for name, shape in self._variables_of(node):
                size = prod(shape)
                spans.append((position, name, start, start + size, shape))
                start += size
        return spans

    def _variables_of(self, node: GraphNode) -> list[tuple[str, tuple[int, ...]]]:
        if node.kind == "dense":
            fan_in, units = self.graph[node.inputs[0]].shape[0], node.shape[0]
            found = [("kernel", (fan_in, units))]
            return found + ([("bias", (units,))] if self.has_bias(node.dense) else [])
        if node.kind == "chain":
            assert node.chain is not None
            return [(name, node.shape) for name in chain_variables(node.chain)]
        if node.kind == "embedding":
            return [("embeddings", (node.vocabulary, node.shape[-1]))]
        return []

    def node_spans(self, position: int) -> dict[str, tuple[int, int]]:
        """A node's variables' (start, stop) by name."""
        return {name: (start, stop) for at, name, start, stop, _ in self._spans if at == position}

    @property
    def slices(self) -> list[tuple[int, int, int, int]]:
        """(kernel_start, bias_start, fan_in, fan_out) per Dense layer (Layout.slices)."""
        found = []
        for position, node in enumerate(self.graph):
            if node.kind == "dense":
                start, stop = self.node_spans(position)["kernel"]
                found.append((start, stop, self.graph[node.inputs[0]].shape[0], node.shape[0]))
        return found

    @property
    def variables(self) -> tuple[tuple[int, int], ...]:
        """(start, stop) of each trainable Keras variable in the flat vector (clipnorm's)."""
        return tuple(
            (start, stop) for _, name, start, stop, _ in self._spans if name not in MOVING_VARIABLES
        )

    @property
    def n_params(self) -> int:
        return self._spans[-1][3]

    def flatten(self, weights: list[np.ndarray]) -> np.ndarray:
        """Keras' weight list (every variable, in the model's order) as one flat vector."""
        if len(weights) != len(self._spans):
            raise ValueError(f"{len(weights)} weights for a layout of {len(self._spans)} variables")
        flat = np.zeros(self.n_params, dtype=np.float32)
        for (_, _, start, stop, _), array in zip(self._spans, weights, strict=True):
            flat[start:stop] = np.asarray(array).reshape(stop - start)
        return flat

    def unflatten(self, flat: np.ndarray) -> list[np.ndarray]:
        """The flat vector back in Keras' weight order, for `set_weights`."""
        return [flat[start:stop].reshape(shape) for _, _, start, stop, shape in self._spans]

    def forward(
        self,
        params: tf.Tensor,
        x: tf.Tensor,
        activations: tuple[str, ...],
        dropout: Callable[[int, tf.Tensor], tf.Tensor] | None,
        real: tf.Tensor | None,
        noise: Callable[[int, tf.Tensor], tf.Tensor] | None,
        lookups: list | None = None,
    ) -> tuple[tf.Tensor, list[MovingUpdate]]:
        """params [M, P], x [M, B, F] -> (the output Dense layer before its activation, new
        moving averages); training mode when `real` is given (network._forward's contract).
        `dropout(slot, inputs)` drops units of Dropout layer `slot`'s input; `lookups` gets
        (position, codes, rows looked up) per Embedding (squared_gradient)."""
        values: list[tf.Tensor] = []
        updates: list[MovingUpdate] = []
        last = len(self.graph) - 1
        for position, node in enumerate(self.graph):
            inputs = [values[at] for at in node.inputs]
            if node.kind == "chain":
                assert node.chain is not None
                draw = None if noise is None else partial(noise, NOISE_KEYS + 2 * position)
                spans = self.node_spans(position)
                value, moved = chain_layer(inputs[0], node.chain, spans, params, real, draw)
                updates += moved
            elif node.kind == "dense":
                value = self._dense(params, position, node, inputs[0])
                if position < last:
                    value = FAST_ACTIVATIONS[activations[node.dense]](value)
            elif node.kind == "dropout":
                value = inputs[0] if dropout is None else dropout(node.slot, inputs[0])
            else:
                value = self._reshaping(params, position, node, x, inputs, lookups)
            values.append(value)
        return values[-1], updates

    def _dense(
        self, params: tf.Tensor, position: int, node: GraphNode, inputs: tf.Tensor
    ) -> tf.Tensor:
        """Keras' Dense on [M, B, fan_in]: matmul by each model's kernel, then its bias."""
        spans = self.node_spans(position)
        start, stop = spans["kernel"]
        fan_in, units = self.graph[node.inputs[0]].shape[0], node.shape[0]
        kernel = tf.reshape(params[:, start:stop], tf.stack([tf.shape(params)[0], fan_in, units]))
        value = tf.matmul(inputs, kernel)
        if "bias" in spans:
            start, stop = spans["bias"]
            value = value + params[:, start:stop][:, None, :]
        return value

    def _reshaping(
        self,
        params: tf.Tensor,
        position: int,
        node: GraphNode,
        x: tf.Tensor,
        inputs: list[tf.Tensor],
        lookups: list | None = None,
    ) -> tf.Tensor:
        """The nodes that move values without a nonlinearity: input, column slices, Embedding
        lookups, Flatten, Concatenate and Add, as Keras computes them."""
        if node.kind == "input":
            return x
        if node.kind == "columns":
            source = inputs[0]
            return source[..., node.start] if node.squeeze else source[..., node.start : node.stop]
        if node.kind == "concatenate":
            return tf.concat(inputs, axis=-1)
        if node.kind == "add":
            # Keras' Add: inputs[0] + inputs[1] + ..., left to right.
            total = inputs[0]
            for other in inputs[1:]:
                total = total + other
            return total
        n_models, batch = tf.shape(x)[0], tf.shape(x)[1]
        if node.kind == "flatten":
            return tf.reshape(inputs[0], tf.stack([n_models, batch, prod(node.shape)]))
        if node.kind == "embedding":
            # Keras casts float codes to int32 (truncation), then takes rows of its table.
            start, stop = self.node_spans(position)["embeddings"]
            width = node.shape[-1]
            table = tf.reshape(params[:, start:stop], tf.stack([n_models, node.vocabulary, width]))
            codes = tf.reshape(tf.cast(inputs[0], tf.int32), tf.stack([n_models, -1]))
            looked_up = tf.gather(table, codes, batch_dims=1)
            if lookups is not None:
                lookups.append((position, codes, looked_up))
            shape = tf.concat([tf.stack([n_models, batch]), list(node.shape)], axis=0)
            return tf.reshape(looked_up, shape)
        raise ValueError(f"graph node kind {node.kind!r} is not one the fast engine computes")

    def check_codes(self, features: np.ndarray) -> None:
        """Refuse feature columns an Embedding would look up outside its table: Keras' fit
        fails on such a code, while a compiled gather would clamp it silently."""
        for node in self.graph:
            if node.kind != "embedding":
                continue
            source = self.graph[node.inputs[0]]
            start, stop = (source.start, source.stop) if source.kind == "columns" else (0, None)
            codes = features[:, start:stop]
            # Keras casts float codes to int32: truncation toward zero.
            bad = ~np.isfinite(codes) | (np.trunc(codes) < 0) | (np.trunc(codes) >= node.vocabulary)
            if bad.any():
                row, column = np.argwhere(bad)[0]
                raise ValueError(
                    f"an Embedding (input_dim {node.vocabulary}) reads column {start + column} "
                    f"of the model's input, whose row {row} holds {float(codes[row, column])}: "
                    f"Keras looks up codes 0 to {node.vocabulary - 1} only (a missing category is "
                    "coded as the column's category count)"
                )

    def squared_gradient(
        self, gradient: tf.Tensor, lookups: list, per_lookup: list[tf.Tensor]
    ) -> tf.Tensor:
        """What Keras' optimizers get from ops.square(gradient): the square of each parameter's
        gradient, except an Embedding table's, whose gradient reaches Keras' TensorFlow
        optimizer as IndexedSlices (one row per lookup) that ops.square squares row by row
        before they are summed: each table row gets the sum of its lookups' squared gradients,
        not the square of their sum (Adam's, RMSprop's, Adagrad's and Nadam's second moments).
        """
        squared = tf.square(gradient)
        n_models = tf.shape(gradient)[0]
        replaced: list[MovingUpdate] = []
        for (position, codes, _), rows in zip(lookups, per_lookup, strict=True):
            node = self.graph[position]
            width = node.shape[-1]
            # Model m's row v as segment m * vocabulary + v.
            segments = codes + tf.range(n_models)[:, None] * node.vocabulary
            sums = tf.math.unsorted_segment_sum(
                tf.reshape(tf.square(rows), [-1, width]),
                tf.reshape(segments, [-1]),
                n_models * node.vocabulary,
            )
            span = self.node_spans(position)["embeddings"]
            replaced.append((span, tf.reshape(sums, tf.stack([n_models, span[1] - span[0]]))))
        return with_moving_updates(squared, replaced)
