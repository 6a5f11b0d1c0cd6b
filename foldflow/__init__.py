"""foldflow: scikit-learn's grid search and cross-validation of Keras model functions, every
fit run as a Prefect flow (`foldflow.GridSearchCV`, `cross_validate`, `cross_val_score`), and
the `foldflow` command (`foldflow.cli`)."""

from __future__ import annotations

from typing import Any

__all__ = ["GridSearchCV", "cross_val_score", "cross_validate"]


def __getattr__(name: str) -> Any:
    """Imported on first use: `import foldflow` stays quick (no TensorFlow, no Prefect)."""
    if name in __all__:
        from foldflow import search

        return getattr(search, name)
    raise AttributeError(f"module 'foldflow' has no attribute {name!r}")
