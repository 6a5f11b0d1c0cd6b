import pickle

import numpy as np
import pandas as pd
import pytest

from tasks.data.dataset import DatasetHandle, load_arrays, shipped_to_workers
from tasks.errors import DataError


def handle_for(tmp_path, labels) -> DatasetHandle:
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [0.5, 0.0, 1.5, 2.0], "y": labels})
    path = tmp_path / "data.parquet"
    frame.to_parquet(path, index=False)
    task = "multiclass" if isinstance(labels[0], str) else "binary"
    return DatasetHandle(
        name="tiny", parquet_path=str(path), sha256="0" * 64,
        feature_columns=["a", "b"], target="y", task=task,
    )  # fmt: skip


@pytest.mark.parametrize("labels", [[0, 1, 0, 1], ["cat", "dog", "ant", "cat"]])
def test_shipped_handle_carries_the_arrays_and_no_path(tmp_path, labels):
    handle = handle_for(tmp_path, labels)
    shipped = pickle.loads(pickle.dumps(shipped_to_workers(handle)))  # as a worker gets it
    (tmp_path / "data.parquet").unlink()  # a worker cannot read the flow's files
    assert shipped.parquet_path == ""
    features, targets = load_arrays(shipped)
    np.testing.assert_array_equal(features, [[1, 0.5], [2, 0], [3, 1.5], [4, 2]])
    assert features.dtype == np.float32
    assert targets.tolist() == labels


def test_shipped_arrays_leave_the_cache_identity_alone(tmp_path):
    handle = handle_for(tmp_path, [0, 1, 0, 1])
    shipped = shipped_to_workers(handle)
    assert shipped.model_dump() == {**handle.model_dump(), "parquet_path": ""}
    assert "arrays" not in shipped.model_dump_json()


def test_damaged_arrays_are_refused(tmp_path):
    # Labels no other test uses: arrays already verified in this process are not decoded again.
    shipped = shipped_to_workers(handle_for(tmp_path, [1, 1, 0, 0]))
    damaged = shipped.arrays.features[:-1] + b"\x01"
    bad = shipped.model_copy(
        update={"arrays": shipped.arrays.model_copy(update={"features": damaged})}
    )
    with pytest.raises(DataError, match="arrived damaged"):
        load_arrays(bad)


def test_shipped_arrays_are_decoded_once_per_process_by_their_checksum(tmp_path):
    shipped = shipped_to_workers(handle_for(tmp_path, [0, 0, 1, 1]))
    again = pickle.loads(pickle.dumps(shipped))  # the same arrays, arriving a second time
    first, second = load_arrays(shipped), load_arrays(again)
    assert first[0] is second[0] and first[1] is second[1]
    assert not first[0].flags.writeable  # shared between fits, so read-only
