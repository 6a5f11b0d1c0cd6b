import math

import pytest

from tasks.errors import ConfigError
from tasks.search.halving import halving_rungs
from tasks.search.spaces import space_from_mapping
from tasks.search.strategies import (
    Evaluation,
    GridStrategy,
    HalvingStrategy,
    RandomStrategy,
    TPEStrategy,
    survivors,
)


class FakeEvaluator:
    """Scores a candidate by a formula (no training) and keeps every evaluation, as the
    flow's evaluator does."""

    def __init__(self, score):
        self.score = score
        self.evaluations = []
        self.calls = []

    def __call__(self, candidates, *, numbers=None, iteration=0, epochs=None):
        self.calls.append((list(numbers), iteration, epochs))
        for number, params in zip(numbers, candidates, strict=True):
            value = self.score(params, epochs)
            self.evaluations.append(
                Evaluation(
                    row=len(self.evaluations),
                    candidate=number,
                    params=params,
                    fold_scores=(value, value),
                    iteration=iteration,
                    epochs=epochs,
                )
            )
        return list(self.evaluations)


def test_rungs_multiply_by_factor_and_end_at_max_epochs():
    assert halving_rungs(4, 300, 3) == [4, 12, 36, 108, 300]
    assert halving_rungs(10, 90, 3) == [10, 30, 90]
    assert halving_rungs(5, 5, 2) == [5]
    with pytest.raises(ConfigError, match="factor >= 2"):
        halving_rungs(1, 10, 1)
    with pytest.raises(ConfigError, match="min_epochs <= max_epochs"):
        halving_rungs(20, 10, 3)


def test_survivors_are_the_top_third_failed_last_ties_to_lower_number():
    rung = [
        Evaluation(row=i, candidate=i, params={}, fold_scores=(s,))
        for i, s in enumerate([0.5, math.nan, 0.7, 0.7, 0.6, 0.1, 0.9])
    ]
    assert [e.candidate for e in survivors(rung, 3)] == [2, 3, 6]
    assert [e.candidate for e in survivors(rung, 2)] == [2, 3, 4, 6]
    assert [e.candidate for e in survivors(rung[1:2], 3)] == [1]


def test_halving_bookkeeping_rungs_survivors_and_epochs():
    candidates = [{"x": i} for i in range(27)]
    strategy = HalvingStrategy(candidates, min_epochs=2, max_epochs=30, factor=3)
    evaluator = FakeEvaluator(lambda p, epochs: p["x"] / 100 + epochs / 1000)
    strategy.run(evaluator)
    assert [(len(n), it, e) for n, it, e in evaluator.calls] == [
        (27, 0, 2),
        (9, 1, 6),
        (3, 2, 18),
        (1, 3, 30),
    ]
    assert evaluator.calls[1][0] == list(range(18, 27))
    assert evaluator.calls[-1][0] == [26]
    assert strategy.epochs_trained(continued=False) == 27 * 2 + 9 * 6 + 3 * 18 + 30
    assert strategy.epochs_trained(continued=True) == 27 * 2 + 9 * 4 + 3 * 12 + 12
    assert strategy.describe()["epochs an exhaustive search trains"] == 27 * 30


def test_halving_with_one_candidate_left_goes_straight_to_the_last_rung():
    strategy = HalvingStrategy([{"x": 0}, {"x": 1}], min_epochs=1, max_epochs=27, factor=3)
    evaluator = FakeEvaluator(lambda p, epochs: p["x"])
    strategy.run(evaluator)
    assert [(n, it, e) for n, it, e in evaluator.calls] == [([0, 1], 0, 1), ([1], 1, 27)]


def test_halving_refuses_epochs_in_the_space():
    with pytest.raises(ConfigError, match="remove 'epochs'"):
        HalvingStrategy([{"epochs": 5}], min_epochs=1, max_epochs=9)


def test_random_strategy_asks_once_for_every_candidate():
    evaluator = FakeEvaluator(lambda p, epochs: 0.5)
    RandomStrategy([{"x": 1}, {"x": 2}]).run(evaluator)
    assert evaluator.calls == [([0, 1], 0, None)]


def test_tpe_seeded_twice_asks_the_same_candidates_in_batches():
    space = space_from_mapping(
        {"learning_rate": {"loguniform": [1e-4, 1e-1]}, "hidden_layers": [[4], [8, 4]]}
    )

    def score(p, epochs):
        return (
            math.nan
            if p["hidden_layers"] == (4,) and p["learning_rate"] > 0.05
            else (-abs(math.log10(p["learning_rate"]) + 2))
        )

    runs = []
    for _ in range(2):
        evaluator = FakeEvaluator(score)
        strategy = TPEStrategy(space, n_candidates=14, seed=5, batch_size=4, n_startup_trials=4)
        strategy.run(evaluator)
        runs.append((evaluator, strategy))
    (first, s1), (second, s2) = runs
    assert [len(n) for n, _, _ in first.calls] == [4, 4, 4, 2]
    assert [e.params for e in first.evaluations] == [e.params for e in second.evaluations]
    assert s1.told == s2.told
    assert all(isinstance(e.params["hidden_layers"], tuple) for e in first.evaluations)


def test_grid_strategy_asks_once_for_the_whole_grid_in_scikit_learns_order():
    from tasks.config import GridSpec

    evaluator = FakeEvaluator(lambda p, epochs: 0.5)
    grid = GridSpec(param_grid={"units": [4, 8], "optimizer": ["adam"]})
    GridStrategy(grid).run(evaluator)
    assert evaluator.calls == [([0, 1], 0, None)]
    assert [e.params for e in evaluator.evaluations] == [
        {"optimizer": "adam", "units": 4},
        {"optimizer": "adam", "units": 8},
    ]
