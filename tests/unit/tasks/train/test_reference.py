"""The reference engine (tasks.train.reference): seeded Keras fits in foldflow's batch order,
the same in threads, continued from checkpoints, on text labels as on their codes."""

import threading

import numpy as np

from tasks.data.folds import plan_folds
from tasks.model.factory import model_meta
from tasks.records import epoch_order, fit_seed
from tasks.train.reference import score_fold_from
from tasks.train.weights_cache import InitialWeights
from tests.support import (
    BUILTIN,
    DROPOUT,
    PIMA_META,
    combinations,
    jobs,
    mlp_params,
    params,
    reference_scores,
)


def test_fit_seed_depends_on_run_seed_params_and_fold_but_not_epochs():
    model = mlp_params()
    assert fit_seed(7, model, 0) == fit_seed(7, model.model_copy(update={"epochs": 3}), 0)
    assert fit_seed(7, model, 0) != fit_seed(7, model, 1)
    assert fit_seed(7, model, 0) != fit_seed(8, model, 0)
    assert fit_seed(7, model, 0) != fit_seed(7, mlp_params(optimizer="rmsprop"), 0)


def test_epoch_order_is_a_seeded_permutation():
    order = epoch_order(3, 0, 20)
    assert sorted(order.tolist()) == list(range(20))
    assert np.array_equal(order, epoch_order(3, 0, 20))
    assert not np.array_equal(order, epoch_order(3, 1, 20))


def test_reference_fit_gives_the_same_score_twice_and_in_parallel_threads(pima_arrays):
    features, labels = pima_arrays
    fold = plan_folds(labels, 3, 7)[1]
    model = mlp_params(epochs=2, batch_size=32, init="uniform")
    seed = fit_seed(7, model, fold.index)
    alone = reference_scores(features, labels, fold, model, seed)
    assert 0.0 <= alone["accuracy"] <= 1.0 and alone["log_loss"] > 0
    threaded: list[dict[str, float]] = []
    threads = [
        threading.Thread(
            target=lambda: threaded.append(reference_scores(features, labels, fold, model, seed))
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert threaded == [alone, alone]


def test_text_labels_score_as_their_codes_on_both_engines(pima_arrays):
    from tasks.train.fast.trainer import train_stacked

    features, labels = pima_arrays
    text = np.where(labels == 1, "pos", "neg")  # sorted order keeps neg=0, pos=1
    folds = {fold.index: fold for fold in plan_folds(text, 3, 7)}
    assert folds == {fold.index: fold for fold in plan_folds(labels, 3, 7)}
    fits = jobs(combinations(None, base={"epochs": 1, "batch_size": 64}), (0, 1))
    assert all(job.network is not None for job in fits)
    text_meta = model_meta("binary", 8, ["neg", "pos"])
    on_text = train_stacked(features, text, folds, fits, 7, InitialWeights(BUILTIN, text_meta))
    on_codes = train_stacked(features, labels, folds, fits, 7, InitialWeights(BUILTIN, PIMA_META))
    assert [r.scores for r in on_text] == [r.scores for r in on_codes]
    model = fits[0].model
    seed = fit_seed(7, model, 0)
    assert reference_scores(
        features, text, folds[0], model, seed, meta=text_meta
    ) == reference_scores(features, labels, folds[0], model, seed)


def test_a_reference_fit_continued_from_its_checkpoint_equals_the_uninterrupted_fit(pima_arrays):
    """Observed: bit-equal scores (weights, Adam's slots and the dropout seed restored)."""
    features, labels = pima_arrays
    source = DROPOUT
    fold = plan_folds(labels, 3, 7)[0]
    short, longer = (params(source, epochs=e, batch_size=64) for e in (2, 4))
    seed = fit_seed(7, longer, fold.index)
    _, state = score_fold_from(source, features, labels, fold, short, PIMA_META, seed)
    assert state.engine == "reference" and state.epochs == 2
    direct, direct_state = score_fold_from(source, features, labels, fold, longer, PIMA_META, seed)
    resumed, resumed_state = score_fold_from(
        source, features, labels, fold, longer, PIMA_META, seed, state
    )
    assert resumed == direct
    assert resumed_state.curve == direct_state.curve and len(direct_state.curve.train_loss) == 4
    halved = {
        name: array / 2 if name == "model_0" else array for name, array in state.arrays.items()
    }
    other = state.model_copy(update={"arrays": halved})
    tampered, _ = score_fold_from(source, features, labels, fold, longer, PIMA_META, seed, other)
    assert tampered != direct  # the state is really used
