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


def test_the_same_file_read_another_way_is_another_fit():
    """A spec's reading rules (missing_values, categorical:, positive_label, ...) change the
    arrays a fit trains on without changing the file's checksum: the key covers the arrays."""
    import numpy as np

    from tasks.data.dataset import DatasetHandle, shipped_to_workers
    from tasks.records import Fold
    from tasks.train.fit_cache import fit_key

    def handle(features, **fields):
        base = DatasetHandle(
            name="d", parquet_path="", sha256="f" * 64, feature_columns=["a"], target="y"
        ).model_copy(update=fields)
        labels = np.array([0, 1, 0, 1])
        from tasks.data import dataset as module

        arrays = module.ShippedArrays(
            features=module._npy_bytes(np.asarray(features, dtype=np.float32)),
            labels=module._npy_bytes(labels),
            sha256="",
        )
        digest = module._arrays_digest(arrays.features, arrays.labels)
        return base.model_copy(update={"arrays": arrays.model_copy(update={"sha256": digest})})

    job = FitJob(combination=0, fold=0, params={}, model=ModelParams(), engine="reference")
    fold = Fold(index=0, train=[0, 1], test=[2, 3])

    class Source:
        sha256, function, module = "s", "f", "m"

    def key(dataset):
        return fit_key(job, fold, dataset, Source(), 7, "code")

    numbers = handle([[1.0], [0.0], [2.0], [3.0]])
    zero_missing = handle([[1.0], [np.nan], [2.0], [3.0]])
    assert key(numbers) == key(handle([[1.0], [0.0], [2.0], [3.0]]))
    assert key(numbers) != key(zero_missing)
    assert key(numbers) != key(numbers.model_copy(update={"positive_label": 0}))
    assert shipped_to_workers  # the flow's handles carry their arrays' digest this way


def test_editing_a_module_the_model_file_imports_changes_fit_and_trajectory_keys(tmp_path):
    """Before, only the model file's bytes were keyed: a changed width in the helper.py it
    imports served the old fits and continued from the old checkpoints."""
    from tasks.model.sources import resolve_model_reference
    from tasks.records import Fold
    from tasks.train.fit_cache import fit_key, trajectory_key
    from tests.support import keyed_dataset

    (tmp_path / "helper.py").write_text("WIDTH = 4\n")
    model = tmp_path / "m.py"
    model.write_text("import helper\n\ndef f():\n    return helper.WIDTH\n")
    job = FitJob(combination=0, fold=0, params={}, model=ModelParams(epochs=2))
    fold = Fold(index=0, train=[0, 1], test=[2, 3])

    def keys():
        source = resolve_model_reference(f"{model}:f", tmp_path)
        arguments = (job, fold, keyed_dataset(), source, 7, "code")
        return fit_key(*arguments), trajectory_key(*arguments)

    before = keys()
    (tmp_path / "helper.py").write_text("WIDTH = 8\n")
    after = keys()
    assert before[0] != after[0] and before[1] != after[1]


def test_an_altered_fit_cache_entry_is_dropped_not_served(tmp_path):
    """Before: an entry with one edited digit was served (a fold at accuracy 0.952, F1 0.0)."""
    import logging

    job = FitJob(combination=0, params={}, model=ModelParams(epochs=1), fold=0)
    scores = {"accuracy": 0.651, "f1": 0.0}
    result = FitResult(
        combination=0, params={}, fold=0, accuracy=0.651, loss=0.7, scores=scores,
        train_scores=scores, n_train=10, n_test=5, fit_seconds=0.1, seed=1, engine="fast",
    )  # fmt: skip
    for key in ("aa" * 32, "bb" * 32):
        store_fit(tmp_path, key, result)
    assert load_fit(tmp_path, "aa" * 32, job).accuracy == 0.651
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger("foldflow.caches").addHandler(handler)
    try:
        for key in ("aa" * 32, "bb" * 32):
            path = tmp_path / "fits" / key[:2] / f"{key}.json"
            text = path.read_text()
            path.write_text(text.replace("0.651", "0.951"))  # one digit, same size
            assert len(path.read_text()) == len(text)
            assert load_fit(tmp_path, key, job) is None
            assert not path.exists()
    finally:
        logging.getLogger("foldflow.caches").removeHandler(handler)
    assert len(messages) == 1 and messages[0].startswith(f"fit cache {tmp_path / 'fits'}: ")


def test_a_fit_cache_entry_from_before_checksums_is_retrained(tmp_path):
    job = FitJob(combination=0, params={}, model=ModelParams(epochs=1), fold=0)
    scores = {"accuracy": 0.5}
    result = FitResult(
        combination=0, params={}, fold=0, accuracy=0.5, loss=0.7, scores=scores,
        train_scores=scores, n_train=10, n_test=5, fit_seconds=0.1, seed=1, engine="fast",
    )  # fmt: skip
    path = tmp_path / "fits" / "cc" / f"{'cc' * 32}.json"
    path.parent.mkdir(parents=True)
    path.write_text(result.model_dump_json())  # as written before entries carried a checksum
    assert load_fit(tmp_path, "cc" * 32, job) is None and not path.exists()
