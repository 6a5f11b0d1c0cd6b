"""A fit's model is built from its seed alone: other threads drawing from Python's global
`random` (Prefect names runs with it) cannot change the weights of an unseeded initializer."""

import random
import threading

import numpy as np

from tasks.model.factory import build_model, model_meta
from tasks.model.sources import load_model_function
from tests.support import TUTORIAL

META = model_meta("binary", 8, [0, 1])


def weights(seed):
    model = build_model(load_model_function(TUTORIAL), {"init": "uniform"}, META, seed)
    return model.get_weights()


def test_other_threads_drawing_random_numbers_do_not_change_a_built_model():
    quiet = weights(11)
    stop = threading.Event()

    def draw():
        while not stop.is_set():
            random.random()

    noisy_threads = [threading.Thread(target=draw)]
    for thread in noisy_threads:
        thread.start()
    try:
        noisy = [weights(11) for _ in range(3)]
    finally:
        stop.set()
        for thread in noisy_threads:
            thread.join()
    for built in noisy:
        for expected, got in zip(quiet, built, strict=True):
            np.testing.assert_array_equal(expected, got)
    assert not all(np.array_equal(a, b) for a, b in zip(quiet, weights(12), strict=True))


def test_a_build_is_what_plain_keras_gives_after_set_random_seed():
    """Users can reproduce a fit's initial weights outside foldflow."""
    import keras

    keras.utils.set_random_seed(5)
    plain = load_model_function(TUTORIAL)(init="uniform").get_weights()
    for expected, got in zip(plain, weights(5), strict=True):
        np.testing.assert_array_equal(expected, got)
