"""Checkpoints are kept per trajectory, found only by their own key, and survive the process."""

import numpy as np
import pytest

from tasks.records import Checkpoint, FitJob, Fold
from tasks.train import checkpoints
from tasks.train.checkpoints import CheckpointStore, epochs_to_train
from tasks.train.fit_cache import fit_key, trajectory_key
from tests.support import BUILTIN, TUTORIAL, combinations, jobs, keyed_dataset, mlp_params

DATA = keyed_dataset()
FOLD = Fold(index=0, train=[0, 1, 2], test=[3])


def state(epochs, value=1.0, engine="fast"):
    arrays = {name: np.full(3, value, dtype=np.float32) for name in ("params", "first", "second")}
    return Checkpoint(
        engine=engine, epochs=epochs, arrays={**arrays, "steps": np.array(9.0, dtype=np.float32)}
    )


def job(**routed):
    return FitJob(combination=0, params=routed, model=mlp_params(**routed), fold=0)


def key(fit=None, fold=FOLD, data=DATA, source=BUILTIN, seed=7, code="code"):
    return trajectory_key(fit or job(epochs=3), fold, data, source, seed, code)


def test_trajectory_key_ignores_epochs_only():
    assert key(job(epochs=3)) == key(job(epochs=10))
    assert key(job(epochs=3)) != fit_key(job(epochs=3), FOLD, DATA, BUILTIN, 7, "code")
    others = [
        key(job(epochs=3, batch_size=5)),
        key(job(epochs=3, optimizer="sgd")),
        key(fold=Fold(index=1, train=[0, 1, 2], test=[3])),
        key(data=DATA.model_copy(update={"sha256": "b" * 64})),
        key(source=TUTORIAL),
        key(seed=8),
        key(code="other"),
        key(job(epochs=3).model_copy(update={"network": combinations(None)[0].network})),
    ]
    assert len({key(), *others}) == len(others) + 1


def test_store_finds_the_longest_earlier_state_after_the_process_forgot_it(tmp_path):
    store = CheckpointStore(tmp_path)
    for epochs in (2, 5, 9):
        store.put("k1", state(epochs, value=epochs))
    store.put("k2", state(7))
    checkpoints._MEMORY.clear()  # as a new process: from disk only
    found = CheckpointStore(tmp_path).latest_before("k1", 9)
    assert (found.engine, found.epochs) == ("fast", 5)
    assert np.array_equal(found.arrays["params"], np.full(3, 5.0, dtype=np.float32))
    assert float(found.arrays["steps"]) == 9.0
    assert store.latest_before("k1", 2) is None
    assert store.latest_before("k3", 100) is None
    files = (tmp_path / "checkpoints").rglob("*.npz")
    assert sorted(str(p.relative_to(tmp_path)) for p in files) == [
        "checkpoints/k1/k1-e2.npz",
        "checkpoints/k1/k1-e5.npz",
        "checkpoints/k1/k1-e9.npz",
        "checkpoints/k2/k2-e7.npz",
    ]


def test_an_unreadable_checkpoint_counts_as_missing(tmp_path):
    store = CheckpointStore(tmp_path)
    store.put("k1", state(2))
    store.put("k1", state(4))
    checkpoints._MEMORY.clear()
    (tmp_path / "checkpoints" / "k1" / "k1-e4.npz").write_bytes(b"half a file")
    assert store.latest_before("k1", 6).epochs == 2


def test_an_altered_checkpoint_is_dropped_with_one_warning_naming_the_folder(tmp_path):
    """Before: a checkpoint whose weights were changed (and re-saved) was trained on from."""
    import logging
    import zipfile

    store = CheckpointStore(tmp_path)
    for epochs in (2, 4, 6):
        store.put("k1", state(epochs, value=epochs))
    checkpoints._MEMORY.clear()
    folder = tmp_path / "checkpoints" / "k1"
    with np.load(folder / "k1-e6.npz") as stored:  # other weights, a consistent file
        arrays = {name: stored[name] for name in stored.files}
    arrays["params"] = arrays["params"] + 1
    np.savez(folder / "k1-e6.npz", **arrays)
    flipped = bytearray((folder / "k1-e4.npz").read_bytes())  # one byte, same size
    position = flipped.index(np.full(3, 4.0, dtype=np.float32).tobytes())
    flipped[position] ^= 0x01
    (folder / "k1-e4.npz").write_bytes(bytes(flipped))
    assert zipfile.is_zipfile(folder / "k1-e4.npz")
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger("foldflow.caches").addHandler(handler)
    try:
        found = store.latest_before("k1", 8)
    finally:
        logging.getLogger("foldflow.caches").removeHandler(handler)
    assert found.epochs == 2 and float(found.arrays["params"][0]) == 2.0
    assert sorted(p.name for p in folder.iterdir()) == ["k1-e2.npz"]
    assert len(messages) == 1 and messages[0].startswith(
        f"checkpoint cache {tmp_path / 'checkpoints'}: "
    )


@pytest.mark.parametrize("engine", ["auto", "reference"])
def test_epochs_to_train_counts_a_fast_trajectory_once(engine):
    [checked] = combinations(None, base={"batch_size": 32})
    fits = [
        j.model_copy(update={"model": j.model.model_copy(update={"epochs": e})})
        for e in (4, 6)
        for j in jobs([checked], [0], engine)
    ]
    assert epochs_to_train(fits) == (6 if engine == "auto" else 10)
    started = [j.model_copy(update={"start": state(3)}) for j in fits]
    assert epochs_to_train(started) == (3 if engine == "auto" else 4)


def test_a_fresh_run_continues_only_from_states_it_kept_itself(tmp_path):
    """Seen in the halving benchmark: `fresh` ignored every checkpoint, also the rungs the
    same run had just trained, so each rung retrained from epoch 0."""
    store, trajectory = CheckpointStore(tmp_path), key()
    store.put(trajectory, state(3), run="earlier")
    assert store.latest_before(trajectory, 9, run="this") is None
    assert store.latest_before(trajectory, 9).epochs == 3  # not fresh: any run's state
    store.put(trajectory, state(5), run="this")
    assert store.latest_before(trajectory, 9, run="this").epochs == 5
    assert CheckpointStore(tmp_path).latest_before(trajectory, 5, run="this") is None
