"""The fast engine reproduces the reference engine (one scikeras fit per fold)."""

import numpy as np
import psutil
import pytest

from tasks import engine
from tasks.config import GridSpec, ModelParams
from tasks.dataset import DatasetHandle
from tasks.engine import fast_engine_applies, plan_groups, train_stacked
from tasks.training import FitJob, fit_and_score, fit_seed, plan_folds, run_fit_jobs
from tests.unit.conftest import SHARED_CSV


@pytest.fixture(scope="module")
def folds(pima_arrays):
    folds = plan_folds(pima_arrays[1], 3, 7)
    return {fold.index: fold for fold in folds}


def grid_jobs(grid, folds, base=ModelParams()):
    combinations = GridSpec(param_grid=grid).combinations(base)
    return [
        FitJob(combination=index, params=params, model=model, fold=fold)
        for index, (params, model) in enumerate(combinations)
        for fold in folds
    ]


def test_fast_engine_matches_reference_fits_per_combination_and_fold(pima_arrays, folds):
    features, labels = pima_arrays
    # batch 10 leaves a partial last batch (512 rows); sgd, adam and rmsprop; two initializers
    grid = {
        "model__optimizer": ["rmsprop", "adam", "sgd"],
        "model__init": ["glorot_uniform", "uniform"],
        "epochs": [2],
        "batch_size": [10, 64],
    }
    jobs = grid_jobs(grid, folds)
    fast = train_stacked(features, labels, folds, jobs, run_seed=7)
    for job, result in zip(jobs, fast, strict=True):
        seed = fit_seed(7, job.model, job.fold)
        accuracy, loss = fit_and_score(features, labels, folds[job.fold], job.model, seed)
        assert (result.combination, result.fold, result.engine) == (
            job.combination,
            job.fold,
            "fast",
        )
        assert result.accuracy == accuracy
        assert result.loss == pytest.approx(loss, rel=1e-4, abs=1e-5)


def test_epoch_checkpoints_equal_separate_shorter_runs_exactly(pima_arrays, folds):
    features, labels = pima_arrays
    together = grid_jobs(
        {"model__optimizer": ["adam"], "epochs": [1, 3], "batch_size": [16]}, folds
    )
    apart = grid_jobs({"model__optimizer": ["adam"], "epochs": [1], "batch_size": [16]}, folds)
    checkpointed = [
        r for r in train_stacked(features, labels, folds, together, 7) if r.params["epochs"] == 1
    ]
    separate = train_stacked(features, labels, folds, apart, 7)
    assert [(r.accuracy, r.loss) for r in checkpointed] == [(r.accuracy, r.loss) for r in separate]


def test_results_do_not_depend_on_how_jobs_are_grouped(pima_arrays, folds):
    features, labels = pima_arrays
    jobs = grid_jobs(
        {"model__optimizer": ["rmsprop", "adam"], "epochs": [2], "batch_size": [8, 32]}, folds
    )
    together = train_stacked(features, labels, folds, jobs, 7)
    alone = [train_stacked(features, labels, folds, [job], 7)[0] for job in jobs[:4]]
    for grouped, single in zip(together[:4], alone, strict=True):
        assert grouped.accuracy == single.accuracy
        assert grouped.loss == pytest.approx(single.loss, abs=1e-6)


def test_plan_groups_keeps_trajectories_together_and_covers_every_job(folds):
    jobs = grid_jobs(
        {
            "model__optimizer": ["rmsprop", "adam"],
            "model__init": ["glorot_uniform", "normal", "uniform"],
            "epochs": [50, 100, 150],
            "batch_size": [5, 10, 20],
        },
        folds,
    )
    groups = plan_groups(jobs, workers=2)
    assert len(groups) == 2
    assert sorted((j.combination, j.fold) for g in groups for j in g) == sorted(
        (j.combination, j.fold) for j in jobs
    )
    for group in groups:
        other = [j for g in groups if g is not group for j in g]
        for job in group:
            same_trajectory = [
                o
                for o in other
                if o.fold == job.fold and o.model.trajectory_key() == job.model.trajectory_key()
            ]
            assert not same_trajectory


def test_unsupported_models_fall_back_to_the_reference_engine(tmp_path, pima_arrays, folds):
    features, labels = pima_arrays
    unsupported = ModelParams(optimizer="adagrad", epochs=1, batch_size=64)
    job = FitJob(combination=0, params={}, model=unsupported, fold=0)
    assert not fast_engine_applies([job])
    assert plan_groups([job, job.model_copy(update={"fold": 1})], workers=2) == [
        [job],
        [job.model_copy(update={"fold": 1})],
    ]
    import pandas as pd

    columns = ["a", "b", "c", "d", "e", "f", "g", "h"]
    frame = pd.DataFrame(features, columns=columns).assign(outcome=labels)
    frame.to_parquet(tmp_path / "data.parquet")
    handle = DatasetHandle(
        name="pima",
        parquet_path=str(tmp_path / "data.parquet"),
        sha256="test",
        feature_columns=columns,
        target="outcome",
    )
    [result] = run_fit_jobs(handle, list(folds.values()), [job], run_seed=7, engine="auto")
    assert result.engine == "reference" and 0 < result.accuracy < 1


def test_repeated_runs_reuse_the_compiled_program_and_keep_memory_flat(pima_arrays, folds):
    features, labels = pima_arrays
    jobs = grid_jobs(
        {"model__optimizer": ["adam", "rmsprop"], "epochs": [1], "batch_size": [32]}, folds
    )
    train_stacked(features, labels, folds, jobs, 7)
    traces = dict(engine.TRACE_COUNT)
    process = psutil.Process()
    before = process.memory_info().rss
    for seed in range(20):
        train_stacked(features, labels, folds, jobs, seed)
    grown_mib = (process.memory_info().rss - before) / 2**20
    assert engine.TRACE_COUNT == traces
    assert grown_mib < 50


def test_shared_data_path_is_the_real_file():
    assert SHARED_CSV.name == "pima-indians-diabetes.csv" and SHARED_CSV.exists()


def test_fast_refit_on_all_rows_matches_the_reference_refit(pima_arrays):
    from tasks.training import refit_on_all_rows

    features, labels = pima_arrays
    model = ModelParams(optimizer="rmsprop", init="normal", epochs=2, batch_size=20)
    fast = refit_on_all_rows(features, labels, model, seed=3, engine="auto")
    reference = refit_on_all_rows(features, labels, model, seed=3, engine="reference")
    for fast_weights, reference_weights in zip(
        fast.get_weights(), reference.get_weights(), strict=True
    ):
        np.testing.assert_allclose(fast_weights, reference_weights, rtol=1e-4, atol=1e-6)
    fast_classes = fast.predict(features, verbose=0) > 0.5
    reference_classes = reference.predict(features, verbose=0) > 0.5
    assert (fast_classes == reference_classes).all()
