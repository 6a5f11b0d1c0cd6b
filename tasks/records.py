"""Records shared by the engines and the flows: folds, fit jobs, fit results, network plans,
and the seeds and batch orders every engine follows.

Kept apart so the dependency runs one way: the reference engine (tasks.train.reference), the
fast engine (tasks.train.fast) and the flows import from here, never from each other.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tasks.config import ModelParams


def plain_value(value: Any) -> Any:
    """A numpy scalar as its Python value (anything else as it is): labels and sampled values
    compare, hash and serialize (flow parameters are JSON) as the Python values they stand for."""
    return value.item() if isinstance(value, np.generic) else value


class Fold(BaseModel):
    """One train/test split, by row index."""

    model_config = ConfigDict(frozen=True)

    index: int
    train: list[int]
    test: list[int]


class ChainLayer(BaseModel):
    """A layer between two Dense layers (or before the first) that the fast engine computes
    as Keras does: BatchNormalization, LayerNormalization, Activation, GaussianNoise or
    GaussianDropout, with the settings that shape its computation (compiled into its
    program: part of the architecture)."""

    model_config = ConfigDict(frozen=True)

    # "batch_normalization", "layer_normalization", "activation", "gaussian_noise" or
    # "gaussian_dropout"
    kind: str
    activation: str = ""  # an Activation layer's (one of FAST_ACTIVATIONS)
    stddev: float = 0.0  # GaussianNoise's; GaussianDropout's sqrt(rate / (1 - rate))
    momentum: float = 0.0  # BatchNormalization's moving-average momentum
    epsilon: float = 0.0  # either normalization's
    center: bool = True  # a beta variable
    scale: bool = True  # a gamma variable


class GraphNode(BaseModel):
    """One operation of a functional model the fast engine computes (DenseNetwork.graph), in
    Keras' topological order; `inputs` are the positions of the nodes it reads."""

    model_config = ConfigDict(frozen=True)

    # "input", "columns" (x[:, i] or x[:, a:b]), "dense", "dropout", "chain" (a ChainLayer),
    # "embedding", "flatten", "concatenate" or "add"
    kind: str
    inputs: tuple[int, ...] = ()
    shape: tuple[int, ...] = ()  # the output's shape per row (Keras' shape without the batch)
    start: int = 0  # columns: the first column taken
    stop: int = 0  # columns: past the last one
    squeeze: bool = False  # columns: x[:, i] drops the feature axis
    dense: int = -1  # dense: its position among the Dense layers (DenseNetwork.sizes[1:])
    slot: int = -1  # dropout: its position among the Dropout layers (DenseNetwork.dropout)
    chain: ChainLayer | None = None
    vocabulary: int = 0  # embedding: input_dim


class DenseNetwork(BaseModel):
    """What inspection found in a user's model when the fast engine can train it exactly:
    a chain of Dense layers, its loss and its optimizer with every setting that shapes a step.
    """

    model_config = ConfigDict(frozen=True)

    sizes: tuple[int, ...]  # input width, then the units of each Dense layer
    activations: tuple[str, ...]  # one per Dense layer, the output's last
    biases: tuple[bool, ...]  # one per Dense layer
    optimizer: str  # one of tasks.train.fast.optimizers.FAST_OPTIMIZERS ("adam", "nadam", ...)
    settings: dict[str, float]  # learning_rate, rho, ... (tasks.train.fast.optimizers.SETTINGS)
    loss: str = "binary_crossentropy"  # one of tasks.train.fast.network.FAST_LOSSES
    # Per Dense layer: (kernel l1, kernel l2, bias l1, bias l2), as Keras' L1/L2/L1L2 add
    # them to the loss; empty: no regularizer anywhere.
    regularizers: tuple[tuple[float, float, float, float], ...] = ()
    # Per Dense layer: the rate of the Dropout on its input (the features for the first),
    # None where there is none; empty: no Dropout anywhere. Rates are per model (a grid over
    # them shares a program); where Dropout sits is architecture.
    dropout: tuple[float | None, ...] = ()
    # Per Dense layer: the layers on its input, in call order, after the previous Dense layer
    # and before any Dropout; empty: none anywhere.
    between: tuple[tuple[ChainLayer, ...], ...] = ()
    # A Keras learning-rate schedule (keras.optimizers.schedules.serialize, as JSON), else
    # "": settings' learning_rate is then its initial rate. Per model, not architecture.
    schedule: str = ""
    # A functional graph (Concatenate, Add, Embedding, column slices) in Keras' order; empty:
    # the chain above. With a graph, `sizes`/`activations`/`biases`/`regularizers` are per
    # Dense layer in the graph's order and `dropout` per Dropout layer (GraphNode.slot).
    graph: tuple[GraphNode, ...] = ()

    @property
    def architecture(self) -> tuple:
        """What a compiled program depends on: shapes, loss, the optimizer's update rule and
        the options it computes (their settings are per model), and where Dropout sits. Fits
        of one architecture share programs, so a fit's program never depends on its
        neighbours."""
        return (
            self.sizes,
            self.activations,
            self.biases,
            self.loss,
            self.rules,
            self.options,
            self.dropout_layers,
            self.between,
            *((self.graph,) if self.graph else ()),
        )

    @property
    def dropout_layers(self) -> tuple[bool, ...]:
        """Per Dense layer: whether a Dropout sits on its input (empty: none anywhere)."""
        return tuple(rate is not None for rate in self.dropout)

    @property
    def rules(self) -> tuple[str, ...]:
        """The update rules compiled into this network's program: SGD, RMSprop and Adam share
        one (grids mix them; a model picks its own rule), any other optimizer has its own."""
        common = ("rmsprop", "adam", "sgd")
        return common if self.optimizer in common else (self.optimizer,)

    @property
    def options(self) -> tuple[str, ...]:
        """Step options the program must compute: clipping, weight decay, regularizers."""
        names = ("clipvalue", "clipnorm", "global_clipnorm", "weight_decay")
        present = [name for name in names if self.settings.get(name)]
        return (*present, "regularizers") if self.regularizers else tuple(present)

    @property
    def task(self) -> str:
        """binary, multiclass or regression, from the loss."""
        if self.loss == "binary_crossentropy":
            return "binary"
        return "multiclass" if "categorical" in self.loss else "regression"


class LearningCurve(BaseModel):
    """Per-epoch records of one fit, for epochs first_epoch + 1 ... first_epoch + len.

    `train_loss` is Keras' History `loss`: the epoch's batch losses weighted by their rows.
    With a validation part (`fit__validation_split`): its loss and accuracy after each epoch
    (accuracy: None for a regression).
    """

    first_epoch: int = 0
    train_loss: list[float]
    val_loss: list[float] = []
    val_accuracy: list[float | None] = []

    CURVE_ARRAYS: ClassVar[tuple[str, ...]] = ("train_loss", "val_loss", "val_accuracy")

    def up_to(self, epochs: int) -> LearningCurve:
        """The curve of the same run stopped after `epochs` epochs (a shorter job's)."""
        keep = max(0, epochs - self.first_epoch)
        return LearningCurve(
            first_epoch=self.first_epoch,
            **{name: getattr(self, name)[:keep] for name in self.CURVE_ARRAYS},
        )

    def after(self, earlier: LearningCurve | None) -> LearningCurve:
        """This continued run's curve with the curve of the run it continued in front."""
        if earlier is None or earlier.first_epoch + len(earlier.train_loss) != self.first_epoch:
            return self
        return LearningCurve(
            first_epoch=earlier.first_epoch,
            **{name: [*getattr(earlier, name), *getattr(self, name)] for name in self.CURVE_ARRAYS},
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """As checkpoint arrays (NaN for a missing value), so a continued fit's curve starts
        at epoch 1 too."""
        return {
            f"curve_{name}": np.array(
                [np.nan if v is None else v for v in getattr(self, name)], dtype=np.float64
            )
            for name in self.CURVE_ARRAYS
        } | {"curve_first_epoch": np.array(self.first_epoch)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> LearningCurve | None:
        if "curve_train_loss" not in arrays:
            return None
        accuracy = [None if np.isnan(v) else float(v) for v in arrays["curve_val_accuracy"]]
        return cls(
            first_epoch=int(arrays["curve_first_epoch"]),
            train_loss=[float(v) for v in arrays["curve_train_loss"]],
            val_loss=[float(v) for v in arrays["curve_val_loss"]],
            val_accuracy=accuracy,
        )


class Checkpoint(BaseModel):
    """A fit's training state after `epochs` epochs, by value (workers may not share a file
    system with the flow): enough to continue exactly as an uninterrupted run would.

    Fast engine (`engine="fast"`): `params`, `first`, `second` (flat vectors) and `steps`
    (Adam's step count). Reference engine: `model_0`, ... (every Keras model variable, the
    dropout seed state included) and `optimizer_0`, ... (iteration count and slots).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    engine: str
    epochs: int
    arrays: dict[str, np.ndarray]

    @property
    def curve(self) -> LearningCurve | None:
        """The learning curve of the run so far, carried so a continued fit's starts at 1."""
        return LearningCurve.from_arrays(self.arrays)

    def numbered(self, prefix: str) -> list[np.ndarray]:
        """`prefix_0`, `prefix_1`, ... in order."""
        count = sum(1 for name in self.arrays if name.startswith(f"{prefix}_"))
        return [self.arrays[f"{prefix}_{index}"] for index in range(count)]


class FitJob(BaseModel):
    """One (combination, fold) pair to train.

    `network` is set when inspection found a Dense stack the fast engine reproduces; None
    sends the fit to the reference engine. `start` continues the fit from a checkpoint of
    the same trajectory (same params but fewer epochs, fold, seed) instead of epoch 0.
    """

    model_config = ConfigDict(frozen=True)

    combination: int
    params: dict[str, Any]  # as the user spelled them, shown in cv_results (`model__optimizer`)
    model: ModelParams
    fold: int
    network: DenseNetwork | None = None
    start: Checkpoint | None = None
    # Without a network: the vectorized path's program key when copies of this model train
    # together (tasks.model.vectorizable, tasks.train.vectorized); "": the reference engine.
    vectorized: str = ""

    @property
    def start_epoch(self) -> int:
        return 0 if self.start is None else self.start.epochs


class FitResult(BaseModel):
    """What one fit leaves behind: scores and sizes, never the model.

    `scores` holds every metric of the task (tasks.metrics); `accuracy` and `loss` (log loss,
    or MSE for a regression) are kept as fields for the tutorial's two numbers.
    """

    combination: int
    params: dict[str, Any]
    fold: int
    accuracy: float | None
    loss: float | None
    scores: dict[str, float] = {}
    # The same metrics on the rows it trained on (the fold's training rows less any
    # validation rows): scikit-learn's return_train_score.
    train_scores: dict[str, float] = {}
    n_train: int
    n_test: int
    fit_seconds: float
    seed: int
    engine: str
    error: str | None = None
    cached: bool = False  # reused from the fit cache (tasks.train.fit_cache), not trained this run
    start_epoch: int = 0  # continued from a checkpoint at this epoch (0: trained from scratch)
    curve: LearningCurve | None = None  # per-epoch losses (tasks.records.LearningCurve)
    stopped_epoch: int | None = None  # early stopping: epochs it trained (None: not used)
    # The state at the end of training, for the flow to keep (tasks.train.checkpoints); never
    # written into the fit cache's JSON.
    checkpoint: Checkpoint | None = Field(default=None, exclude=True)


def fit_seed(run_seed: int, model: ModelParams, fold: int) -> int:
    """Seed of one fit from (run seed, the arguments the model function receives, fold).

    Independent of worker, order and how a grid key was spelled (`optimizer` and
    `model__optimizer` bind the same argument). Epochs are left out on purpose: a 50-epoch fit
    is then exactly the first 50 epochs of the 150-epoch fit, so checkpoints stand in for
    shorter runs. Batch size, fit options and preprocessing are left out too: fits that differ
    only in those start from the same weights, so comparing them measures that difference.
    """
    key = json.dumps([run_seed, model.seed_key(), fold], sort_keys=True, default=repr)
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % (2**31 - 1)


def epoch_order(seed: int, epoch: int, n_rows: int, shuffle: bool = True) -> np.ndarray:
    """The order in which one epoch visits the training rows (independent of TF internals)."""
    if not shuffle:
        return np.arange(n_rows)
    return np.random.default_rng([seed, epoch]).permutation(n_rows)


def split_validation(
    train: list[int], fraction: float, seed: int, labels: np.ndarray | None = None
) -> tuple[list[int], list[int]]:
    """(rows to train on, validation rows) carved from a fold's training rows only, seeded.

    Keras' `validation_split` takes the last rows of the arrays it is given; the fold's rows
    are in file order, so they are shuffled first (seeded), and the test rows are never seen.
    With `labels` (every row's class; a classification), the validation part keeps each
    class's share of the training rows, as the folds do.
    """
    if fraction <= 0:
        return list(train), []
    order = np.random.default_rng([seed, 104729]).permutation(len(train))
    n_validation = max(1, int(round(len(train) * fraction)))
    if n_validation >= len(train):
        raise ValueError(f"validation_split {fraction} leaves no training rows out of {len(train)}")
    if labels is not None:
        order = _stratified_order(order, np.asarray(labels)[np.asarray(train)], n_validation)
    kept = sorted(train[i] for i in order[: len(train) - n_validation])
    held = sorted(train[i] for i in order[len(train) - n_validation :])
    return kept, held


def _stratified_order(order: np.ndarray, classes: np.ndarray, n_validation: int) -> np.ndarray:
    """`order` rearranged so its last `n_validation` positions hold each class in proportion
    (largest remainders), every class's rows in their shuffled order."""
    values, counts = np.unique(classes, return_counts=True)
    exact = counts * n_validation / len(classes)
    share = np.floor(exact).astype(int)
    for index in np.argsort(-(exact - share), kind="stable")[: n_validation - share.sum()]:
        share[index] += 1
    kept, held = [], []
    for value, count in zip(values, share, strict=True):
        rows = order[classes[order] == value]
        kept.append(rows[: len(rows) - count])
        held.append(rows[len(rows) - count :])
    return np.concatenate([*kept, *held])
