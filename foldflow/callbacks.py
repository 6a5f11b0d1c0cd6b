"""scikit-learn's callbacks (`sklearn.callback`, scikit-learn >= 1.9: `ProgressBar`,
`ScoringMonitor`, ...) set on a foldflow search with `set_callbacks`: told of the search, of
each (candidate, fold) fit as it ends in the flow, and of the refit, in the task tree
scikit-learn's own `BaseSearchCV.fit` builds (fit -> search -> candidate-split-evaluation,
then refit-with-best-params).

Without `sklearn.callback` (scikit-learn before 1.9) a search has no `set_callbacks` and
nothing here runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flows.progress import Display, ProgressState


def has_callbacks(search: Any) -> bool:
    return bool(getattr(search, "_skl_callbacks", None))


class CallbackDisplay:
    """A progress display that calls scikit-learn's callback hooks, and `inner`'s display."""

    def __init__(self, search: Any, root: Any, total_known: bool, inner: Display | None) -> None:
        self.search, self.root, self.total_known, self.inner = search, root, total_known, inner
        self.search_context: Any = None
        self.told = 0

    def show(self, state: ProgressState) -> None:
        if self.search_context is None:
            self.search_context = self.root.subcontext(
                task_name="search",
                max_subtasks=state.total if self.total_known else None,
                sequential_subtasks=False,
            ).call_on_fit_task_begin(estimator=self.search)
        while self.told < state.done:
            evaluation = self.search_context.subcontext(
                task_name="candidate-split-evaluation", task_id=self.told
            )
            evaluation.call_on_fit_task_begin(estimator=self.search)
            evaluation.call_on_fit_task_end(estimator=self.search)
            self.told += 1
        if self.inner is not None:
            self.inner.show(state)

    def close(self, state: ProgressState) -> None:
        if self.search_context is not None:
            self.search_context.call_on_fit_task_end(estimator=self.search)
        if self.inner is not None:
            self.inner.close(state)


@contextmanager
def search_callbacks(
    search: Any, X: Any, y: Any, inner: Display | None, total_known: bool = True
) -> Iterator[Display | None]:
    """The display a search's fit reports to: its scikit-learn callbacks (if any were set)
    around `inner`. The root task ends, and the callbacks are torn down, when the block ends."""
    if not has_callbacks(search):
        yield inner
        return
    from sklearn.callback._callback_support import callback_management_context

    with callback_management_context(search):
        refit = getattr(search, "refit", False)
        root = search._init_callback_context(max_subtasks=1 + (refit is not False))
        root.call_on_fit_task_begin(estimator=search, X=X, y=y)
        search._foldflow_callback_root = root
        try:
            yield CallbackDisplay(search, root, total_known, inner)
        finally:
            del search._foldflow_callback_root
        root.call_on_fit_task_end(estimator=search, X=X, y=y)


@contextmanager
def refit_told(search: Any, X: Any, y: Any) -> Iterator[None]:
    """The refit's task (`refit-with-best-params`) around loading the refitted model."""
    root = getattr(search, "_foldflow_callback_root", None)
    if root is None:
        yield
        return
    refit = root.subcontext(task_name="refit-with-best-params")
    refit.call_on_fit_task_begin(estimator=search, X=X, y=y)
    yield
    refit.call_on_fit_task_end(estimator=search, X=X, y=y)
