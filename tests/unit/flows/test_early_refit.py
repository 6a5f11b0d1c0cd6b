"""The early refit's bets (flows.evaluation.EarlyRefit), without Prefect: a bet placed when a
worker idles is kept if it stays the best; if the last fits change the best, the new best's
refit starts as they end (not after the aggregation), and only the run's best is ever kept."""

from types import SimpleNamespace

import pytest

from flows import evaluation
from flows.evaluation import EarlyRefit
from flows.stages import refit_may_start
from tasks.records import FitResult

N_FOLDS = 3


def record(combination: int, fold: int, accuracy: float) -> FitResult:
    return FitResult(
        combination=combination, params={}, fold=fold, accuracy=accuracy, loss=0.5,
        n_train=512, n_test=256, fit_seconds=0.0, seed=1, engine="fast",
    )  # fmt: skip


class Done:
    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


@pytest.fixture
def submitted(monkeypatch):
    """Every refit submitted, by combination; its 'result' names the combination refitted."""
    calls: list[str] = []

    def submit(dataset, source, model, network, seed, vectorized):
        calls.append(model)
        return Done(f"refit of {model}")

    monkeypatch.setattr(evaluation.refit_best, "submit", submit, raising=False)
    monkeypatch.setattr(evaluation, "refit_network", lambda combination, run: None)
    monkeypatch.setattr(evaluation, "refit_vectorized", lambda combination, run: "")
    messages: list[str] = []
    logger = SimpleNamespace(info=lambda text, *args: messages.append(text % args))
    monkeypatch.setattr(evaluation, "get_run_logger", lambda: logger)
    return calls, messages


def early_refit(n_combinations: int = 2) -> EarlyRefit:
    prepared = SimpleNamespace(
        folds=list(range(N_FOLDS)), refit_metric="accuracy", dataset="the data"
    )
    combinations = [SimpleNamespace(model=f"combination {i}") for i in range(n_combinations)]
    return EarlyRefit(prepared, "source", combinations, SimpleNamespace(seed=7))


def every_fold(combination: int, accuracy: float) -> list[FitResult]:
    return [record(combination, fold, accuracy) for fold in range(N_FOLDS)]


def test_a_bet_that_stays_the_best_is_the_only_refit(submitted):
    calls, _ = submitted
    early = early_refit()
    early(every_fold(0, 0.9) + [record(1, 0, 0.5)])  # a worker idles: bet on 0
    early(every_fold(0, 0.9) + every_fold(1, 0.5))  # the last fits end: 0 is still the best
    assert calls == ["combination 0"]
    assert early.refit_of(0) == "refit of combination 0"


def test_when_the_last_fits_change_the_best_its_refit_starts_as_they_end(submitted):
    calls, messages = submitted
    early = early_refit()
    early(every_fold(0, 0.8) + [record(1, 0, 0.9)])
    assert calls == ["combination 0"]
    early(every_fold(0, 0.8) + every_fold(1, 0.9))  # every fit done: 1 is the best now
    assert calls == ["combination 0", "combination 1"]  # before the aggregation asks
    assert "the last fits made combination 1 the best, not 0: refitting 1 now" in messages
    early(every_fold(0, 0.8) + every_fold(1, 0.9))  # heard again: nothing more
    assert len(calls) == 2
    assert early.refit_of(1) == "refit of combination 1"  # the run's best: kept
    assert early.combination == 0  # the first bet is still named


def test_no_second_refit_while_fits_are_left_and_none_kept_that_is_not_the_best(submitted):
    calls, _ = submitted
    early = early_refit(n_combinations=3)
    early(every_fold(0, 0.8))
    early(every_fold(0, 0.8) + every_fold(1, 0.9))  # combination 2 still trains: no re-bet
    assert calls == ["combination 0"]
    assert early.refit_of(2) is None  # the usual refit after the fits makes the best's


def test_no_bet_before_a_combination_has_every_fold(submitted):
    calls, _ = submitted
    early = early_refit()
    early([record(0, 0, 0.9), record(1, 1, 0.9)])
    assert calls == [] and early.refit_of(0) is None


def test_the_bet_is_placed_once_a_worker_idles_or_a_lone_worker_runs_the_last_group():
    """Two workers: when one has nothing left to take. One worker (foldflow.GridSearchCV's
    default) never idles before the end: the bet then starts beside its last group, in the
    flow's own threads."""
    assert [refit_may_start(left, workers=2) for left in (3, 2, 1, 0)] == [
        False, False, True, True,
    ]  # fmt: skip
    assert [refit_may_start(left, workers=1) for left in (2, 1, 0)] == [False, True, True]
