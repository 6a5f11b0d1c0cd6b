"""The fit cache never answers a fit with an entry that lacks what fits now record."""

from tasks.config import ModelParams
from tasks.records import FitJob, FitResult
from tasks.train.fit_cache import load_fit, store_fit


def test_an_entry_without_train_scores_is_a_miss(tmp_path):
    job = FitJob(combination=3, params={"epochs": 1}, model=ModelParams(epochs=1), fold=0)
    scores = {"accuracy": 0.5, "log_loss": 0.7}
    result = FitResult(
        combination=0, params={}, fold=0, accuracy=0.5, loss=0.7, scores=scores,
        n_train=10, n_test=5, fit_seconds=0.1, seed=1, engine="fast",
    )  # fmt: skip
    store_fit(tmp_path, "ab" * 32, result)
    assert load_fit(tmp_path, "ab" * 32, job) is None  # written before train scores existed
    store_fit(tmp_path, "cd" * 32, result.model_copy(update={"train_scores": scores}))
    loaded = load_fit(tmp_path, "cd" * 32, job)
    assert loaded is not None and loaded.train_scores == scores and loaded.combination == 3


def test_an_entry_without_a_scorer_this_run_asks_for_is_a_miss(tmp_path):
    job = FitJob(combination=0, params={}, model=ModelParams(epochs=1), fold=0)
    scores = {"accuracy": 0.5, "log_loss": 0.7}
    result = FitResult(
        combination=0, params={}, fold=0, accuracy=0.5, loss=0.7, scores=scores,
        train_scores=scores, n_train=10, n_test=5, fit_seconds=0.1, seed=1, engine="fast",
    )  # fmt: skip
    store_fit(tmp_path, "ef" * 32, result)
    assert load_fit(tmp_path, "ef" * 32, job, required=["accuracy"]) is not None
    assert load_fit(tmp_path, "ef" * 32, job, required=["accuracy", "recall"]) is None
