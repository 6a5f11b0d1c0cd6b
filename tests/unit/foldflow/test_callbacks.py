"""scikit-learn 1.9's callbacks on a foldflow search (foldflow.callbacks): told of the search,
of each fit as the flow reports it, and of the refit, in scikit-learn's own task tree."""

import numpy as np
import pytest

sklearn_callback = pytest.importorskip("sklearn.callback")  # scikit-learn >= 1.9

from flows.progress import ProgressState  # noqa: E402
from foldflow import GridSearchCV  # noqa: E402
from foldflow.callbacks import refit_told, search_callbacks  # noqa: E402


class Recorder:
    """A FitCallback that records the task of every hook call."""

    def __init__(self):
        self.calls = []

    def setup(self, estimator, context):
        self.calls.append(("setup", context.task_name))

    def on_fit_task_begin(self, estimator, context, **kwargs):
        self.calls.append(("begin", context.task_name))

    def on_fit_task_end(self, estimator, context, **kwargs):
        self.calls.append(("end", context.task_name))

    def teardown(self, estimator, context):
        self.calls.append(("teardown", context.task_name))


def model():
    raise AssertionError("not built: no flow runs here")


def test_callbacks_hear_the_search_each_fit_and_the_refit_in_scikit_learns_tree():
    recorder = Recorder()
    search = GridSearchCV(model, {"epochs": [1, 2]}, cv=2).set_callbacks(recorder)
    X, y = np.zeros((8, 2)), np.array([0, 1] * 4)
    with search_callbacks(search, X, y, inner=None) as display:
        display.show(ProgressState(done=0, total=4))
        display.show(ProgressState(done=3, total=4))  # three fits ended at once (a group)
        display.show(ProgressState(done=4, total=4))
        display.close(ProgressState(done=4, total=4))
        with refit_told(search, X, y):
            pass
    evaluation = [("begin", "candidate-split-evaluation"), ("end", "candidate-split-evaluation")]
    assert recorder.calls == [
        ("setup", "fit"),
        ("begin", "fit"),
        ("begin", "search"),
        *evaluation * 4,
        ("end", "search"),
        ("begin", "refit-with-best-params"),
        ("end", "refit-with-best-params"),
        ("end", "fit"),
        ("teardown", "fit"),
    ]


def test_without_callbacks_the_display_is_the_one_given():
    search = GridSearchCV(model, {"epochs": [1]}, cv=2)
    with search_callbacks(search, None, None, inner=None) as display:
        assert display is None
