"""The fast engine reproduces the reference engine (one Keras fit per fold)."""

import numpy as np
import pandas as pd
import psutil
import pytest
import tensorflow as tf

from tasks.config import GridSpec
from tasks.data.dataset import DatasetHandle
from tasks.data.folds import plan_folds
from tasks.data.preprocess import FoldFeatures
from tasks.metrics import binary_scores
from tasks.model.factory import build_mlp
from tasks.records import fit_seed, split_validation
from tasks.train.dispatch import run_fit_jobs
from tasks.train.fast import network, programs, schedules, trainer
from tasks.train.fast.planning import fast_engine_applies, plan_groups
from tasks.train.reference import fit_and_score, score_fold_from
from tasks.train.refit import refit_on_all_rows
from tasks.train.weights_cache import InitialWeights
from tests.conftest import PIMA_CSV
from tests.support import BUILTIN, PIMA_META, combinations, jobs, reference_scores

TUTORIAL_GRID = GridSpec().param_grid


@pytest.fixture(scope="module")
def folds(pima_arrays):
    return {fold.index: fold for fold in plan_folds(pima_arrays[1], 3, 7)}


def grid_jobs(grid, folds, base=None):
    return jobs(combinations(grid, base=base), folds)


def train_stacked(features, labels, folds, jobs, run_seed):
    """The fast engine on foldflow's MLP, initial weights as the MLP builds them."""
    initial = InitialWeights(BUILTIN, PIMA_META)
    return trainer.train_stacked(features, labels, folds, jobs, run_seed, initial)


def checked_job(combination, fold, **routed):
    """One job of foldflow's MLP with these routed keys, on the engine inspection chose."""
    [checked] = combinations(None, base=routed)
    return jobs([checked], [fold])[0].model_copy(update={"combination": combination})


def scores(results):
    return [(r.combination, r.fold, r.accuracy, r.loss) for r in results]


def assert_matches_reference(features, labels, folds, jobs, results):
    for job, result in zip(jobs, results, strict=True):
        seed = fit_seed(7, job.model, job.fold)
        reference = reference_scores(features, labels, folds[job.fold], job.model, seed)
        accuracy, loss = reference["accuracy"], reference["log_loss"]
        assert (result.combination, result.fold, result.engine, result.seed) == (
            job.combination,
            job.fold,
            "fast",
            seed,
        )
        assert result.accuracy == accuracy, job
        assert result.loss == pytest.approx(loss, rel=1e-4, abs=1e-5), job


def test_fast_engine_matches_reference_fits_per_combination_and_fold(pima_arrays, folds):
    features, labels = pima_arrays
    # 512 training rows: batch 10 leaves a partial last batch, 64 does not.
    grid = {
        "model__optimizer": ["rmsprop", "adam"],
        "model__init": ["glorot_uniform", "uniform"],
        "epochs": [2],
        "batch_size": [10, 64],
    }
    jobs = grid_jobs(grid, [0, 2])  # two of the three folds keep the reference fits few
    results = train_stacked(features, labels, folds, jobs, run_seed=7)
    assert {r.n_train for r in results} == {512} and {r.n_test for r in results} == {256}
    assert_matches_reference(features, labels, folds, jobs, results)


def test_fast_engine_matches_reference_for_other_activations_initializers_and_sgd(
    pima_arrays, folds
):
    features, labels = pima_arrays
    cases = [
        ("tanh", "he_normal", "sgd", 64),
        ("elu", "lecun_uniform", "adam", 1000),  # batch above the training rows: one batch
        ("selu", "lecun_normal", "rmsprop", 96),
        ("softplus", "glorot_normal", "sgd", 128),
        ("gelu", "he_uniform", "adam", 100),
        ("sigmoid", "normal", "rmsprop", 64),
        ("linear", "ones", "adam", 128),
    ]
    fits = [
        checked_job(
            index,
            index % 3,
            activation=activation,
            init=init,
            optimizer=optimizer,
            epochs=2,
            batch_size=batch,
        )
        for index, (activation, init, optimizer, batch) in enumerate(cases)
    ]
    assert fast_engine_applies(fits)
    assert_matches_reference(
        features, labels, folds, fits, train_stacked(features, labels, folds, fits, 7)
    )


def test_long_run_across_program_chunks_matches_reference(pima_arrays, folds):
    features, labels = pima_arrays
    # 256 steps per epoch: 5 epochs cross the 1024-step chunk of one program call.
    job = checked_job(0, 1, epochs=5, batch_size=2)
    assert 5 * 256 > schedules.CHUNK_STEPS
    results = train_stacked(features, labels, folds, [job], 7)
    assert_matches_reference(features, labels, folds, [job], results)


def test_epoch_checkpoints_equal_separate_shorter_runs_exactly(pima_arrays, folds):
    features, labels = pima_arrays
    grid = {"model__optimizer": ["adam", "rmsprop"], "batch_size": [2, 16]}
    together = train_stacked(
        features, labels, folds, grid_jobs({**grid, "epochs": [3, 5]}, folds), 7
    )
    for epochs in (3, 5):
        # Alone, 5 epochs of batch 2 are cut into program calls at other steps (1024, 1280).
        apart = train_stacked(
            features, labels, folds, grid_jobs({**grid, "epochs": [epochs]}, folds), 7
        )
        checkpoint = [r for r in together if r.params["epochs"] == epochs]
        assert [(r.fold, r.params, r.accuracy, r.loss) for r in checkpoint] == [
            (r.fold, r.params, r.accuracy, r.loss) for r in apart
        ]


def test_results_do_not_depend_on_how_jobs_are_grouped(pima_arrays, folds):
    """Observed: bit-identical. Each program holds one batch size (a wider padded batch sums
    in another order) and at least two models (XLA compiles a lone matmul differently)."""
    features, labels = pima_arrays
    grid = {"model__optimizer": ["rmsprop", "adam"], "epochs": [2, 3], "batch_size": [8, 20]}
    fits = grid_jobs(grid, folds)
    together = train_stacked(features, labels, folds, fits, 7)
    alone = [train_stacked(features, labels, folds, [job], 7)[0] for job in fits[::5]]
    assert scores(alone) == scores(together[::5])
    groups = plan_groups(fits, workers=4)
    assert len(groups) > 2
    planned = [r for g in groups for r in train_stacked(features, labels, folds, g, 7)]
    assert sorted(scores(planned)) == sorted(scores(together))


def test_plan_groups_for_the_tutorial_grid_and_ten_fold_cv(pima_arrays):
    grid = grid_jobs(TUTORIAL_GRID, range(3), {"model__optimizer": "rmsprop"})
    groups = plan_groups(grid, workers=2)
    # one group per batch size (equal loop lengths, no padding), longest first
    assert [{job.model.batch_size for job in g} for g in groups] == [{5}, {10}, {20}]
    assert sorted((j.combination, j.fold) for g in groups for j in g) == sorted(
        (j.combination, j.fold) for j in grid
    )
    group_of = {
        (job.fold, str(job.model.trajectory_key())): index
        for index, group in enumerate(groups)
        for job in group
    }
    for index, group in enumerate(groups):
        for job in group:
            assert group_of[(job.fold, str(job.model.trajectory_key()))] == index
    cv = grid_jobs({"epochs": [150], "batch_size": [10]}, range(10))
    assert [len(g) for g in plan_groups(cv, workers=2)] == [5, 5]
    assert [len(g) for g in plan_groups(cv, workers=1)] == [10]
    assert plan_groups([], workers=2) == []


def test_unsupported_models_fall_back_to_the_reference_engine(tmp_path, pima_arrays, folds):
    features, labels = pima_arrays
    # What inspection leaves without a network (the MLP itself is always a Dense stack).
    job = checked_job(0, 0, dropout=0.2, epochs=1, batch_size=64).model_copy(
        update={"network": None}
    )
    other_fold = job.model_copy(update={"fold": 1})
    assert not fast_engine_applies([job])
    assert not fast_engine_applies([checked_job(1, 0), job])
    assert plan_groups([job, other_fold], workers=2) == [[job], [other_fold]]
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
    [result] = run_fit_jobs(handle, list(folds.values()), [job], run_seed=7, source=BUILTIN)
    assert result.engine == "reference" and 0 < result.accuracy < 1


def test_repeated_runs_reuse_the_compiled_program_and_keep_memory_flat(pima_arrays, folds):
    features, labels = pima_arrays
    fits = grid_jobs(
        {"model__optimizer": ["adam", "rmsprop"], "epochs": [1], "batch_size": [32]}, folds
    )
    train_stacked(features, labels, folds, fits, 7)
    traces, hits = dict(programs.TRACE_COUNT), programs.CACHE_STATS["hits"]
    process = psutil.Process()
    before = process.memory_info().rss
    for seed in range(20):
        train_stacked(features, labels, folds, fits, seed)
    grown_mib = (process.memory_info().rss - before) / 2**20
    assert programs.TRACE_COUNT == traces
    assert programs.CACHE_STATS["hits"] == hits + 20
    assert grown_mib < 50


def test_programs_traced_ahead_are_the_ones_training_runs(pima_arrays, folds):
    """What the flow traces before fanning out (trace_programs) must be what each group's
    training then asks for, with preprocessing copies and validation parts too."""
    features, labels = pima_arrays
    grid = {
        "model__optimizer": ["adam", "sgd"],
        "preprocess__scaling": ["none", "standard"],
        "fit__validation_split": [0.0, 0.2],
        "epochs": [1],
        "batch_size": [32, 64],
    }
    groups = plan_groups(grid_jobs(grid, folds), workers=2)
    views = FoldFeatures(features, (1, 2))
    keys = programs.trace_programs(folds, groups, 7, labels, views)
    assert len(keys) == len(set(keys)) == 2  # one per batch size
    traces = dict(programs.TRACE_COUNT)
    initial = InitialWeights(BUILTIN, PIMA_META)
    for group in groups:
        trainer.train_stacked(features, labels, folds, group, 7, initial, (1, 2))
    assert programs.TRACE_COUNT == traces


def test_no_more_programs_are_traced_ahead_than_the_process_keeps(pima_arrays, folds, monkeypatch):
    features, labels = pima_arrays
    monkeypatch.setattr(programs, "MAX_CACHED_PROGRAMS", 2)
    grid = {"model__optimizer": ["adam"], "epochs": [1], "batch_size": [16, 32, 64]}
    groups = plan_groups(grid_jobs(grid, folds), workers=3)
    views = FoldFeatures(features)
    keys = programs.trace_programs(folds, groups, 7, labels, views)
    assert len(keys) == 2
    assert all(key in programs._PROGRAMS for key in keys)


def test_a_program_that_fails_to_trace_is_left_to_its_group(pima_arrays, folds, monkeypatch):
    """Tracing ahead must not turn one group's failure into the whole flow's."""
    features, labels = pima_arrays
    grid = {"model__optimizer": ["adam"], "epochs": [1], "batch_size": [24, 48]}
    groups = plan_groups(grid_jobs(grid, folds), workers=2)
    build = programs._build_programs

    def failing_for_24(key):
        if key.width == 24:
            raise tf.errors.ResourceExhaustedError(None, None, "out of memory")
        return build(key)

    monkeypatch.setattr(programs, "_build_programs", failing_for_24)
    views = FoldFeatures(features)
    keys = programs.trace_programs(folds, groups, 7, labels, views)
    assert [key.width for key in keys] == [48]


def test_a_trace_starts_its_names_at_a_block_boundary():
    from tensorflow.python.framework import ops

    tf.constant(1.0)  # moves TensorFlow's name counter on
    programs.align_trace_names()
    assert ops.uid() % programs.NAME_BLOCK == 0


def test_shared_data_path_is_the_real_file():
    assert PIMA_CSV.name == "pima-indians-diabetes.csv" and PIMA_CSV.exists()


@pytest.mark.parametrize(
    "stopping",
    [{}, {"early_stopping__patience": 0, "early_stopping__restore_best_weights": True}],
    ids=["plain", "early-stopping"],
)
def test_fast_refit_on_all_rows_matches_the_reference_refit(pima_arrays, stopping):
    features, labels = pima_arrays
    base = {"optimizer": "rmsprop", "init": "normal", "epochs": 2, "batch_size": 20}
    [checked] = combinations(None, base={**base, **stopping})
    assert checked.network is not None
    fast = refit_on_all_rows(
        BUILTIN, features, labels, checked.model, checked.network, PIMA_META, seed=3
    )
    reference = refit_on_all_rows(BUILTIN, features, labels, checked.model, None, PIMA_META, 3)
    for fast_weights, reference_weights in zip(
        fast.get_weights(), reference.get_weights(), strict=True
    ):
        np.testing.assert_allclose(fast_weights, reference_weights, rtol=1e-4, atol=1e-6)
    fast_classes = fast.predict(features, verbose=0) > 0.5
    reference_classes = reference.predict(features, verbose=0) > 0.5
    assert (fast_classes == reference_classes).all()


def continued(jobs, results):
    """Each job again, continuing from the state its shorter fit ended with."""
    states = {(r.combination, r.fold): r.checkpoint for r in results}
    return [job.model_copy(update={"start": states[(job.combination, job.fold)]}) for job in jobs]


def test_a_fit_continued_from_a_checkpoint_equals_the_uninterrupted_fit_bit_for_bit(
    pima_arrays, folds
):
    features, labels = pima_arrays
    # Nadam keeps a running product and Adagrad starts its accumulator off zero: both are
    # part of the state too.
    grid = {"model__optimizer": ["adam", "rmsprop", "sgd", "nadam", "adagrad"], "batch_size": [32]}
    # Dropout masks hash the global step: a continued run must draw the same ones.
    dropout = {"model__optimizer": ["adam", "sgd"], "batch_size": [32], "model__dropout": [0.3]}

    def both(epochs):
        return grid_jobs({**grid, "epochs": [epochs]}, [0, 2]) + grid_jobs(
            {**dropout, "epochs": [epochs]}, [0, 2]
        )

    short = train_stacked(features, labels, folds, both(3), 7)
    assert {(r.checkpoint.engine, r.checkpoint.epochs) for r in short} == {("fast", 3)}
    longer = both(7)
    assert longer[-1].network.dropout == (None, 0.3, 0.3)
    direct = train_stacked(features, labels, folds, longer, 7)
    resumed = train_stacked(features, labels, folds, continued(longer, short), 7)
    assert [r.start_epoch for r in resumed] == [3] * len(longer)
    assert [(r.fold, r.params, r.scores, r.curve) for r in resumed] == [
        (r.fold, r.params, r.scores, r.curve) for r in direct
    ]
    assert [len(r.curve.train_loss) for r in resumed] == [7] * len(longer)
    for one, other in zip(resumed, direct, strict=True):
        for name, array in one.checkpoint.arrays.items():
            assert np.array_equal(array, other.checkpoint.arrays[name]), name


def test_a_continued_run_still_scores_its_shorter_jobs_at_their_epochs(pima_arrays, folds):
    features, labels = pima_arrays
    grid = {"model__optimizer": ["adam"], "batch_size": [64]}
    [start] = [
        r.checkpoint
        for r in train_stacked(features, labels, folds, grid_jobs({**grid, "epochs": [2]}, [1]), 7)
    ]
    fits = grid_jobs({**grid, "epochs": [4, 6]}, [1])
    direct = train_stacked(features, labels, folds, fits, 7)
    from_start = [job.model_copy(update={"start": start}) for job in fits]
    assert len(plan_groups(from_start, workers=2)) == 1
    resumed = train_stacked(features, labels, folds, from_start, 7)
    assert scores(resumed) == scores(direct)
    assert [r.checkpoint is not None for r in resumed] == [False, True]
    halved = {
        name: array / 2 if name == "params" else array for name, array in start.arrays.items()
    }
    tampered = [fits[0].model_copy(update={"start": start.model_copy(update={"arrays": halved})})]
    assert scores(train_stacked(features, labels, folds, tampered, 7)) != scores(resumed[:1])
    with pytest.raises(ValueError, match="reference"):
        trainer._fast_state(
            start.model_copy(update={"engine": "reference"}), network.Layout((8, 1))
        )


def test_fast_and_reference_learning_curves_agree(pima_arrays, folds):
    features, labels = pima_arrays
    base = {"optimizer": "adam", "epochs": 3, "batch_size": 32, "fit__validation_split": 0.25}
    fits = [checked_job(0, 1, **base), checked_job(1, 1, **{**base, "epochs": 2})]
    fast = train_stacked(features, labels, folds, fits, 7)
    seed = fit_seed(7, fits[0].model, 1)
    _, state = score_fold_from(BUILTIN, features, labels, folds[1], fits[0].model, PIMA_META, seed)
    reference = state.curve
    assert fast[1].curve == fast[0].curve.up_to(2)
    curve = fast[0].curve
    assert (curve.first_epoch, len(curve.train_loss), len(curve.val_loss)) == (0, 3, 3)
    assert curve.train_loss[-1] < curve.train_loss[0]
    np.testing.assert_allclose(curve.train_loss, reference.train_loss, rtol=1e-4)
    np.testing.assert_allclose(curve.val_loss, reference.val_loss, rtol=1e-4)
    assert curve.val_accuracy == reference.val_accuracy
    assert fast[0].n_train == 384 and all(0 < a < 1 for a in curve.val_accuracy)


def test_fast_and_reference_train_scores_agree_on_the_rows_each_fit_trained_on(pima_arrays, folds):
    """return_train_score: every fit also scores its own training rows (less validation)."""
    features, labels = pima_arrays
    fits = [
        checked_job(0, 1, optimizer="adam", epochs=2, batch_size=32, fit__validation_split=0.25),
        checked_job(1, 0, optimizer="sgd", epochs=2, batch_size=64),
    ]
    fast = train_stacked(features, labels, folds, fits, 7)
    for job, result in zip(fits, fast, strict=True):
        seed = fit_seed(7, job.model, job.fold)
        test, train, _ = fit_and_score(
            BUILTIN, features, labels, folds[job.fold], job.model, PIMA_META, seed
        )
        assert set(result.train_scores) == set(result.scores) == set(train), job
        assert result.scores["accuracy"] == test["accuracy"], job
        assert result.train_scores["accuracy"] == train["accuracy"], job
        assert result.train_scores["f1"] == train["f1"], job
        assert result.train_scores["log_loss"] == pytest.approx(train["log_loss"], rel=1e-4)
        assert result.train_scores["roc_auc"] == pytest.approx(train["roc_auc"], abs=1e-6)
        assert result.train_scores != result.scores  # other rows, other numbers
    assert [r.n_train for r in fast] == [384, 512]


def test_early_stopping_stops_each_stacked_model_where_keras_does(pima_arrays, folds):
    """Observed on these fits: both engines stop after 2 and 3 epochs."""
    features, labels = pima_arrays
    base = {"optimizer": "adam", "epochs": 12, "batch_size": 32, "fit__validation_split": 0.25}
    stopping = {**base, "early_stopping__patience": 1, "early_stopping__monitor": "val_accuracy"}
    fits = [checked_job(0, 0, **stopping), checked_job(0, 1, **stopping)]
    going_on = checked_job(1, 1, **{**base, "model__init": "uniform"})
    fast = train_stacked(features, labels, folds, [*fits, going_on], 7)
    assert len(plan_groups([*fits, going_on], workers=1)) == 1  # one stacked program
    assert [r.stopped_epoch for r in fast] == [2, 3, None]
    assert [len(r.curve.train_loss) for r in fast] == [2, 3, 12]
    for job, result in zip(fits, fast[:2], strict=True):
        seed = fit_seed(7, job.model, job.fold)
        reference, state = score_fold_from(
            BUILTIN, features, labels, folds[job.fold], job.model, PIMA_META, seed
        )
        assert len(state.curve.train_loss) == result.stopped_epoch
        assert result.accuracy == reference["accuracy"]


def best_epoch(values):
    """The epoch Keras' EarlyStopping keeps as best for an accuracy: the first maximum."""
    return int(np.argmax(values)) + 1


def test_restore_best_weights_scores_the_best_epoch(pima_arrays, folds):
    features, labels = pima_arrays
    base = {"optimizer": "adam", "batch_size": 32, "fit__validation_split": 0.2}
    restoring = checked_job(
        0, 1, **base, epochs=12, early_stopping__patience=12,
        early_stopping__monitor="val_accuracy", early_stopping__restore_best_weights=True,
    )  # fmt: skip
    [restored] = train_stacked(features, labels, folds, [restoring], 7)
    kept = best_epoch(restored.curve.val_accuracy)
    assert kept < 12 == restored.stopped_epoch  # the restore changes the weights scored
    [at_best] = train_stacked(features, labels, folds, [checked_job(0, 1, **base, epochs=kept)], 7)
    assert restored.scores == at_best.scores
    seed = fit_seed(7, restoring.model, 1)
    reference, state = score_fold_from(
        BUILTIN, features, labels, folds[1], restoring.model, PIMA_META, seed
    )
    assert len(state.curve.train_loss) == restored.stopped_epoch
    assert reference["accuracy"] == restored.accuracy


# ---------------------------------------------------------------------------------------------
# Dropout (training steps only, masks hashed from fit seed and global step)


def with_dropout_layers(job, rates):
    """The same job with Dropout(rate) of `rates` on its Dense layers' inputs (None: none)."""
    network = job.network.model_copy(update={"dropout": rates})
    return job.model_copy(update={"network": network})


def outcome(results):
    return [
        (r.combination, r.fold, r.scores, r.train_scores, r.curve, r.checkpoint.arrays["params"])
        for r in results
    ]


def assert_same_outcomes(one, other):
    for left, right in zip(outcome(one), outcome(other), strict=True):
        assert left[:5] == right[:5]
        assert np.array_equal(left[5], right[5])


def test_dropout_rate_zero_gives_exactly_the_no_dropout_result(pima_arrays, folds):
    features, labels = pima_arrays
    grid = {"model__optimizer": ["adam", "sgd"], "epochs": [2], "batch_size": [32]}
    plain = grid_jobs({**grid, "fit__validation_split": [0.0, 0.25]}, [0, 1])
    assert all(job.network.dropout == () for job in plain)
    zero = [with_dropout_layers(job, (0.0, 0.0, 0.0)) for job in plain]
    assert zero[0].network.architecture != plain[0].network.architecture  # another program
    assert_same_outcomes(
        train_stacked(features, labels, folds, zero, 7),
        train_stacked(features, labels, folds, plain, 7),
    )
    dropped = [with_dropout_layers(job, (0.1, None, 0.2)) for job in plain]  # input too
    assert scores(train_stacked(features, labels, folds, dropped, 7)) != scores(
        train_stacked(features, labels, folds, plain, 7)
    )


def test_a_dropout_fit_does_not_depend_on_the_models_sharing_its_program(pima_arrays, folds):
    features, labels = pima_arrays
    grid = {
        "model__dropout": [0.2, 0.5],
        "model__optimizer": ["adam", "rmsprop"],
        "epochs": [2],
        "batch_size": [16],
    }
    fits = grid_jobs(grid, folds)
    assert len({job.network.architecture for job in fits}) == 1  # rates share one program
    together = train_stacked(features, labels, folds, fits, 7)
    alone = [train_stacked(features, labels, folds, [job], 7)[0] for job in fits[::4]]
    assert_same_outcomes(alone, together[::4])
    reversed_stack = train_stacked(features, labels, folds, fits[::-1], 7)
    assert_same_outcomes(reversed_stack[::-1], together)


def test_dropout_drops_about_its_rate_of_units_with_fresh_masks_per_step_and_layer():
    seeds = tf.constant([3, 1_234_567, 2**31 - 2], tf.int32)
    steps = tf.constant([0.0, 0.0, 41.0])
    uniform = network.dropout_uniform(seeds, steps, 1, 64, 200).numpy()  # 12,800 units each
    assert uniform.shape == (3, 64, 200) and 0 <= uniform.min() and uniform.max() < 1
    for rate in (0.1, 0.5, 0.8):
        assert np.abs((uniform < rate).mean(axis=(1, 2)) - rate).max() < 0.015
    # Independent of its neighbours; another step, layer or seed draws another mask.
    alone = network.dropout_uniform(seeds[1:2], steps[1:2], 1, 64, 200).numpy()
    assert np.array_equal(alone[0], uniform[1])
    later = network.dropout_uniform(seeds, steps + 1, 1, 64, 200).numpy()
    other_layer = network.dropout_uniform(seeds, steps, 2, 64, 200).numpy()
    for other in (later, other_layer, uniform[[1, 2, 0]]):
        agree = ((other < 0.5) == (uniform < 0.5)).mean()
        assert 0.45 < agree < 0.55  # unrelated masks agree on about half the units
    inputs = tf.ones([3, 64, 200])
    rates, scales = tf.constant([0.0, 0.5, 0.8]), tf.constant([1.0, 2.0, 5.0])
    out = network.apply_dropout(inputs, tf.constant(uniform), rates, scales).numpy()
    assert np.array_equal(out[0], np.ones((64, 200)))  # rate 0: untouched
    assert set(np.unique(out[1])) == {0.0, 2.0} and set(np.unique(out[2])) == {0.0, 5.0}
    assert np.array_equal(out[1] == 0, uniform[1] < 0.5)


def test_dropout_fits_predict_and_score_without_dropout(pima_arrays, folds):
    """Test and train scores come from the trained weights with every unit kept, as Keras'
    predict does; only the training loss (History's) is the dropout-mode loss."""
    features, labels = pima_arrays
    # Scaled features keep the sigmoid off 0 and 1, where float32 probabilities lose the loss.
    grid = {"model__dropout": [0.5], "epochs": [3], "batch_size": [32]}
    grid |= {"fit__validation_split": [0.25], "preprocess__scaling": ["standard"]}
    [job] = grid_jobs(grid, [2])
    [result] = train_stacked(features, labels, folds, [job], 7)
    keras_model = build_mlp(PIMA_META, dropout=0.5)
    keras_model.set_weights(
        network.Layout.of(job.network).unflatten(result.checkpoint.arrays["params"])
    )
    trained, held = split_validation(folds[2].train, 0.25, result.seed, labels)
    features = FoldFeatures(features).of(2, trained, job.model)  # as the engine scaled them
    for rows, expected in ((folds[2].test, result.scores), (trained, result.train_scores)):
        predicted = keras_model.predict(features[rows], verbose=0)[:, 0]
        observed = binary_scores(labels[rows], predicted)
        assert observed["accuracy"] == expected["accuracy"]
        assert observed["log_loss"] == pytest.approx(expected["log_loss"], rel=1e-5)
    validation = binary_scores(labels[held], keras_model.predict(features[held], verbose=0)[:, 0])
    assert result.curve.val_accuracy[-1] == validation["accuracy"]
    assert result.curve.val_loss[-1] == pytest.approx(validation["log_loss"], rel=1e-4)
    # The dropout-mode training loss is above the loss of the same weights without dropout.
    assert result.curve.train_loss[-1] > result.train_scores["log_loss"]
