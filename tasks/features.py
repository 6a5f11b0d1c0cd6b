"""The feature columns' kinds, and the input width a model gets after its preprocessing: shared
vocabulary, since the model factory (which builds the model) and the data layer (which encodes
the features) must agree on it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from tasks.config import ModelParams

# The key of the model's `meta` that describes the feature columns (FeatureKinds) when the
# model's input width depends on the preprocessing; model_input_meta resolves it per fit.
FEATURE_KINDS_META = "feature_kinds_"


class FeatureKinds(BaseModel):
    """What per-fold preprocessing needs to know of the feature columns: their kinds and
    which hold missing cells anywhere in the data. Structure only, never a statistic: the
    encoded width it gives is the same for every fold (tasks.data.preprocess says why)."""

    model_config = ConfigDict(frozen=True)

    n_features: int
    categorical: tuple[int, ...] = ()  # positions among the features
    category_counts: tuple[int, ...] = ()  # in `categorical` order
    zero_coded: tuple[int, ...] = ()  # the spec's impossible_zero_columns
    with_missing: tuple[int, ...] = ()  # columns with a missing cell somewhere

    @property
    def numeric(self) -> tuple[int, ...]:
        return tuple(c for c in range(self.n_features) if c not in self.categorical)

    @property
    def plain(self) -> bool:
        """Numbers only, none missing: the input width never depends on the preprocessing."""
        return not self.categorical and not self.with_missing

    def encoded_width(self, model: ModelParams) -> int:
        """The model's input width after `model`'s preprocessing."""
        numeric = len(self.numeric)
        if model.missing_indicator:
            numeric += sum(1 for c in self.with_missing if c not in self.categorical)
        if model.categorical_encoding == "ordinal":
            return numeric + len(self.categorical)
        extra = 1 if model.min_frequency is not None else 0  # the rare categories' column
        for column, count in zip(self.categorical, self.category_counts, strict=True):
            own_missing = model.categorical_impute == "missing" and column in self.with_missing
            numeric += count + extra + (1 if own_missing else 0)
        return numeric


def model_input_meta(meta: dict[str, Any], model: ModelParams) -> dict[str, Any]:
    """`meta` as the model function sees it for `model`: `n_features_in_` is the width after
    its preprocessing (one-hot columns, indicators), as scikeras' meta is after a Pipeline's
    transformers. Without feature kinds in `meta` it is returned as it is."""
    kinds = meta.get(FEATURE_KINDS_META)
    if model.transformer is not None:  # the user's own transformer: its output width
        resolved = {key: value for key, value in meta.items() if key != FEATURE_KINDS_META}
        if model.transformer_width is not None:
            resolved["n_features_in_"] = model.transformer_width
        return resolved
    if kinds is None:
        return meta
    resolved = {key: value for key, value in meta.items() if key != FEATURE_KINDS_META}
    resolved["n_features_in_"] = FeatureKinds.model_validate(kinds).encoded_width(model)
    return resolved
