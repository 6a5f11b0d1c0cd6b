"""scikeras' Keras wrappers as scikit-learn 1.6+ sees them: FoldflowClassifier and
FoldflowRegressor, where foldflow is compared with the plain scikit-learn approach
(benchmarks). Their own module, as subclassing them imports TensorFlow: the model factory and
the flows import without it."""

from __future__ import annotations

from scikeras.wrappers import KerasClassifier, KerasRegressor
from sklearn.utils import ClassifierTags, RegressorTags, Tags


class FoldflowClassifier(KerasClassifier):
    """scikeras' KerasClassifier, tagged as a classifier for scikit-learn >= 1.6.

    scikeras 0.13 only sets `_estimator_type`, which scikit-learn 1.6+ no longer reads, so
    `is_classifier` is False and `GridSearchCV(cv=3)` silently uses unstratified KFold.
    Used where foldflow is compared with the plain scikit-learn approach (benchmarks).
    """

    _estimator_type = "classifier"

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.estimator_type = "classifier"
        if tags.classifier_tags is None:
            tags.classifier_tags = ClassifierTags()
        return tags


class FoldflowRegressor(KerasRegressor):
    """scikeras' KerasRegressor, tagged as a regressor for scikit-learn >= 1.6 (as above)."""

    _estimator_type = "regressor"

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.estimator_type = "regressor"
        if tags.regressor_tags is None:
            tags.regressor_tags = RegressorTags()
        return tags
