"""Successive halving's schedule, worked out once for the flow's strategy and the Python API."""

import pytest

from tasks.errors import ConfigError
from tasks.search.halving import (
    Rung,
    epochs_trained,
    halving_schedule,
    n_survivors,
    scikit_learn_halving,
)


def test_each_rung_keeps_a_factors_share_and_one_left_goes_to_the_last_rung():
    assert halving_schedule(27, 2, 30, 3) == [Rung(2, 27), Rung(6, 9), Rung(18, 3), Rung(30, 1)]
    assert halving_schedule(2, 1, 27, 3) == [Rung(1, 2), Rung(27, 1)]
    assert halving_schedule(1, 1, 9, 3) == [Rung(9, 1)]
    assert [n_survivors(n, 3) for n in (1, 2, 3, 4, 10)] == [1, 1, 1, 2, 4]


def test_epochs_trained_from_scratch_and_continued():
    schedule = halving_schedule(4, 1, 4, 2)
    assert epochs_trained(schedule, continued=False) == 4 * 1 + 2 * 2 + 1 * 4
    assert epochs_trained(schedule, continued=True) == 4 * 1 + 2 * 1 + 1 * 2


@pytest.mark.parametrize(
    ("n_candidates", "min_resources", "max_resources", "factor", "aggressive", "rungs"),
    [
        (8, 1, 9, 3, False, [(1, 8), (3, 3)]),
        (8, "exhaust", 9, 3, False, [(3, 8), (9, 3)]),
        (30, 1, 4, 3, False, [(1, 30), (3, 10)]),
        (3, 2, 18, 3, True, [(6, 3), (18, 1)]),
        (6, 1, 3, 3, False, [(1, 6), (3, 2)]),
    ],
)
def test_scikit_learns_iterations_are_the_flows_rungs(
    n_candidates, min_resources, max_resources, factor, aggressive, rungs
):
    """The Python API's schedule is the flow's schedule between its first and last epochs."""
    schedule = scikit_learn_halving(n_candidates, min_resources, max_resources, factor, aggressive)
    assert [(rung.epochs, rung.n_candidates) for rung in schedule.rungs] == rungs
    first, last = schedule.resources[0], schedule.resources[-1]
    assert schedule.rungs == halving_schedule(schedule.n_candidates, first, last, factor)


def test_a_repeated_first_rung_and_min_above_max_are_refused():
    with pytest.raises(ConfigError, match="repeat the first iteration"):
        scikit_learn_halving(8, 5, 9, 3, aggressive_elimination=True)
    with pytest.raises(ConfigError, match="greater than max_resources_"):
        scikit_learn_halving(8, 10, 9, 3)
