"""Records shared by the engines and the flows: folds, fit jobs, fit results, network plans,
and the seeds and batch orders every engine follows.

Kept apart so the dependency runs one way: `training` (the reference engine and the task
wrappers) and `engine` (the fast engine) both import from here, never from each other.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from tasks.config import ModelParams


class Fold(BaseModel):
    """One train/test split, by row index."""

    model_config = ConfigDict(frozen=True)

    index: int
    train: list[int]
    test: list[int]


class DenseNetwork(BaseModel):
    """What inspection found in a user's model when the fast engine can train it exactly:
    a chain of Dense layers, its loss and its optimizer with every setting that shapes a step.
    """

    model_config = ConfigDict(frozen=True)

    sizes: tuple[int, ...]  # input width, then the units of each Dense layer
    activations: tuple[str, ...]  # one per Dense layer, the output's last
    biases: tuple[bool, ...]  # one per Dense layer
    optimizer: str  # one of tasks.engine.FAST_OPTIMIZERS ("adam", "nadam", ...)
    settings: dict[str, float]  # learning_rate, rho, beta_1, ... (tasks.engine.SETTINGS)
    loss: str = "binary_crossentropy"  # one of tasks.engine.FAST_LOSSES
    # Per Dense layer: (kernel l1, kernel l2, bias l1, bias l2), as Keras' L1/L2/L1L2 add
    # them to the loss; empty: no regularizer anywhere.
    regularizers: tuple[tuple[float, float, float, float], ...] = ()

    @property
    def architecture(self) -> tuple:
        """What a compiled program depends on: shapes, loss, the optimizer's update rule and
        the options it computes (their settings are per model). Fits of one architecture
        share programs, so a fit's program never depends on its neighbours."""
        return (self.sizes, self.activations, self.biases, self.loss, self.rules, self.options)

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


class FitJob(BaseModel):
    """One (combination, fold) pair to train.

    `network` is set when inspection found a Dense stack the fast engine reproduces; None
    sends the fit to the reference engine.
    """

    model_config = ConfigDict(frozen=True)

    combination: int
    params: dict[str, Any]  # as the user spelled them, shown in cv_results (`model__optimizer`)
    model: ModelParams
    fold: int
    network: DenseNetwork | None = None


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
    n_train: int
    n_test: int
    fit_seconds: float
    seed: int
    engine: str
    error: str | None = None
    cached: bool = False  # reused from the fit cache (tasks.fit_cache), not trained this run


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


def split_validation(train: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(rows to train on, validation rows) carved from a fold's training rows only, seeded.

    Keras' `validation_split` takes the last rows of the arrays it is given; the fold's rows
    are in file order, so they are shuffled first (seeded), and the test rows are never seen.
    """
    if fraction <= 0:
        return list(train), []
    order = np.random.default_rng([seed, 104729]).permutation(len(train))
    n_validation = max(1, int(round(len(train) * fraction)))
    if n_validation >= len(train):
        raise ValueError(f"validation_split {fraction} leaves no training rows out of {len(train)}")
    kept = sorted(train[i] for i in order[: len(train) - n_validation])
    held = sorted(train[i] for i in order[len(train) - n_validation :])
    return kept, held
