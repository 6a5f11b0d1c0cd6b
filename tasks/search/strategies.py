"""Search strategies: which candidates to evaluate next, and nothing else.

As in scikit-learn's `BaseSearchCV._run_search(evaluate_candidates)`, a strategy only proposes
candidates and reads back their fold scores; fitting, caching, fan-out, aggregation and
refit belong to the evaluator the flow passes in (flows/evaluation.py). Pure Python: no Prefect,
so a unit test drives a strategy with a fake evaluator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from tasks.config import GridSpec
from tasks.errors import ConfigError
from tasks.search.halving import Rung, epochs_trained, halving_schedule, n_survivors
from tasks.search.spaces import SearchSpace, from_optuna, optuna_distributions


@dataclass(frozen=True)
class Evaluation:
    """One candidate evaluated on every fold (at one rung for halving): a cv_results row."""

    row: int  # the row's index in cv_results, in evaluation order
    candidate: int  # the candidate's own number (a halving survivor keeps it across rungs)
    params: dict[str, Any]
    fold_scores: tuple[float, ...]  # the refit metric, per fold (NaN: failed)
    iteration: int = 0
    epochs: int | None = None  # halving's resource at this rung

    @property
    def mean(self) -> float:
        scores = np.asarray(self.fold_scores, dtype=float)
        return float(scores.mean()) if len(scores) else math.nan

    @property
    def std(self) -> float:
        return float(np.asarray(self.fold_scores, dtype=float).std())


class Evaluate(Protocol):
    def __call__(
        self,
        candidates: list[dict[str, Any]],
        *,
        numbers: list[int] | None = None,
        iteration: int = 0,
        epochs: int | None = None,
    ) -> list[Evaluation]:
        """Fit every candidate on every fold; return every evaluation so far."""


class SearchStrategy:
    """Proposes candidates to an evaluator; `run` ends when the search is done."""

    kind = "base"

    def run(self, evaluate: Evaluate) -> None:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What the search-strategy artifact says of this strategy's settings."""
        return {"strategy": self.kind}


@dataclass
class GridStrategy(SearchStrategy):
    """Every combination of the grid at once, in scikit-learn's order, as
    `GridSearchCV._run_search` asks: the grid flow's strategy."""

    grid: GridSpec
    kind = "grid"

    def run(self, evaluate: Evaluate) -> None:
        candidates = self.grid.expand()
        evaluate(candidates, numbers=list(range(len(candidates))))

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.kind, "candidates": self.grid.n_combinations}


@dataclass
class RandomStrategy(SearchStrategy):
    """Every sampled candidate at once, as `RandomizedSearchCV` does."""

    candidates: list[dict[str, Any]]
    kind = "random"

    def run(self, evaluate: Evaluate) -> None:
        evaluate(self.candidates, numbers=list(range(len(self.candidates))))

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.kind, "candidates": len(self.candidates)}


def survivors(evaluations: list[Evaluation], factor: int) -> list[Evaluation]:
    """The best ceil(n / factor) of one rung by mean fold score; failed (NaN) last, ties to
    the lower candidate number, so the same scores always give the same survivors."""
    keep = n_survivors(len(evaluations), factor)
    ordered = sorted(
        evaluations,
        key=lambda e: (math.isnan(e.mean), -e.mean if not math.isnan(e.mean) else 0, e.candidate),
    )
    return sorted(ordered[:keep], key=lambda e: e.candidate)


@dataclass
class HalvingStrategy(SearchStrategy):
    """Successive halving over epochs, every fold of every survivor in lock-step.

    The rungs (epochs, candidates) are tasks.search.halving's schedule. Fits are seeded
    without their epochs (tasks.records.fit_seed), so a rung's scores are the exhaustive
    grid's scores at that many epochs, whether the engine continues the last rung's models
    or starts over.
    """

    candidates: list[dict[str, Any]]
    min_epochs: int
    max_epochs: int
    factor: int = 3
    schedule: list[Rung] = field(init=False)
    kind = "halving"

    def __post_init__(self) -> None:
        self.schedule = halving_schedule(
            len(self.candidates), self.min_epochs, self.max_epochs, self.factor
        )
        if any("epochs" in candidate for candidate in self.candidates):
            raise ConfigError(
                "halving searches over epochs itself (--min-epochs, --max-epochs): "
                "remove 'epochs' from the search space"
            )

    def run(self, evaluate: Evaluate) -> None:
        alive = list(range(len(self.candidates)))
        for iteration, rung in enumerate(self.schedule):
            evaluations = evaluate(
                [self.candidates[number] for number in alive],
                numbers=alive,
                iteration=iteration,
                epochs=rung.epochs,
            )
            this_rung = [e for e in evaluations if e.iteration == iteration]
            alive = [e.candidate for e in survivors(this_rung, self.factor)]

    def epochs_trained(self, continued: bool) -> int:
        """Epochs per fold summed over candidates (tasks.search.halving.epochs_trained)."""
        return epochs_trained(self.schedule, continued)

    def describe(self) -> dict[str, Any]:
        return {
            "strategy": self.kind,
            "candidates": len(self.candidates),
            "factor": self.factor,
            "rungs": [{"epochs": r.epochs, "candidates": r.n_candidates} for r in self.schedule],
            "epochs trained (each rung from scratch)": self.epochs_trained(continued=False),
            "epochs trained (rungs continued)": self.epochs_trained(continued=True),
            "epochs an exhaustive search trains": len(self.candidates) * self.max_epochs,
        }


@dataclass
class TPEStrategy(SearchStrategy):
    """Optuna's TPE through ask-and-tell, asked in batches so a batch's fits fan out.

    Seeded, so the same told values give the same asks: a rerun asks the same candidates,
    the fit cache answers the finished ones, and the study is rebuilt as it was.
    """

    space: SearchSpace
    n_candidates: int
    seed: int
    batch_size: int = 4
    n_startup_trials: int = 10
    on_batch: Callable[[list[Evaluation]], None] | None = None
    told: list[tuple[dict[str, Any], float | None]] = field(init=False, default_factory=list)
    kind = "tpe"

    def run(self, evaluate: Evaluate) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=self.n_startup_trials)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        distributions = optuna_distributions(self.space)
        asked = 0
        while asked < self.n_candidates:
            size = min(self.batch_size, self.n_candidates - asked)
            trials = [study.ask(distributions) for _ in range(size)]
            candidates = [from_optuna(self.space, trial.params) for trial in trials]
            numbers = list(range(asked, asked + size))
            evaluations = evaluate(candidates, numbers=numbers)
            by_number = {e.candidate: e for e in evaluations}
            for trial, number in zip(trials, numbers, strict=True):
                score = by_number[number].mean
                if math.isnan(score):
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    self.told.append((trial.params, None))
                else:
                    study.tell(trial, score)
                    self.told.append((trial.params, score))
            asked += size

    def describe(self) -> dict[str, Any]:
        return {
            "strategy": self.kind,
            "candidates": self.n_candidates,
            "batch size": self.batch_size,
            "random start-up trials": self.n_startup_trials,
            "sampler": f"optuna TPESampler(seed={self.seed})",
        }
