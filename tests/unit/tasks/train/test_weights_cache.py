"""Initial weights built once per process (tasks.train.weights_cache)."""

import numpy as np

from tasks.train.weights_cache import InitialWeights
from tests.support import PIMA_META, combinations


def test_initial_weights_are_built_once_per_arguments_and_seed(tmp_path):
    """Builds are serial and slow: the model factory's check build of each arguments gives
    their fits' initial weights for every seed (its recipe, tasks.model.initial_weights), fits that
    differ only in batch size share them, and callers get their own copies."""
    import sys
    import textwrap

    from tasks.model.sources import resolve_model_reference

    path = tmp_path / "counted.py"
    path.write_text(
        textwrap.dedent(
            """
            import collections
            import keras
            CALLS = collections.Counter()

            def create_model(units=2):
                CALLS[units] += 1
                model = keras.Sequential([
                    keras.Input((8,)),
                    keras.layers.Dense(units, activation="relu"),
                    keras.layers.Dense(1, activation="sigmoid"),
                ])
                model.compile(loss="binary_crossentropy", optimizer="adam")
                return model
            """
        )
    )
    source = resolve_model_reference(f"{path}:create_model", tmp_path)
    initial = InitialWeights(source, PIMA_META)
    [small, wide] = [c.model for c in combinations({"units": [2, 3]}, source)]
    first = initial(small, 11)
    again = initial(small.model_copy(update={"batch_size": 64}), 11)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    first[0][...] = 0.0  # a caller's copy, not the remembered weights
    assert not np.array_equal(initial(small, 11)[0], first[0])
    assert not np.array_equal(initial(small, 12)[0], again[0])
    initial(wide, 11)
    calls = sys.modules[f"foldflow_model_{source.sha256[:16]}"].CALLS
    # one check build per arguments; seeds 11 and 12 come from its recipe
    assert dict(calls) == {2: 1, 3: 1}
    # Another task run of the grid (a new InitialWeights in this process) builds nothing new;
    # what the function is told about the data is part of what it builds from.
    other_task = InitialWeights(source, PIMA_META)
    assert all(np.array_equal(a, b) for a, b in zip(other_task(small, 11), again, strict=True))
    assert dict(calls) == {2: 1, 3: 1}
    InitialWeights(source, {**PIMA_META, "n_features_in_": 8, "note": "other data"})(small, 11)
    assert dict(calls) == {2: 2, 3: 1}
