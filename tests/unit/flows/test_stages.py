"""flows.stages' helpers, without a Prefect API."""

import pytest
from prefect.utilities.engine import collect_task_run_inputs_sync, resolve_inputs_sync

from flows.stages import as_given
from tasks.records import FitResult


class Unwalkable(FitResult):
    """A fit record that fails if Prefect walks it (it reads a pydantic model as dict(model))."""

    def __iter__(self):
        raise AssertionError("Prefect walked a fit record")


def records(count: int = 3) -> list[FitResult]:
    fields = dict(
        combination=0, params={}, accuracy=0.5, loss=0.5, n_train=2, n_test=1,
        fit_seconds=0.0, seed=1, engine="fast",
    )  # fmt: skip
    return [Unwalkable(fold=fold, **fields) for fold in range(count)]


def test_records_passed_as_given_reach_the_task_as_they_are_without_prefect_walking_them():
    results = records()
    with pytest.raises(AssertionError, match="walked"):  # what a task run's start does
        collect_task_run_inputs_sync(results)
    given = as_given(results)
    assert collect_task_run_inputs_sync(given) == set()
    assert resolve_inputs_sync({"results": given})["results"] is results
