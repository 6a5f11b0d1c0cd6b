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
# The key that tells the model function where each categorical column sits in its input.
CATEGORICAL_META = "categorical_features_"


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
    names: tuple[str, ...] = ()  # the feature columns' names, when known

    @property
    def numeric(self) -> tuple[int, ...]:
        return tuple(c for c in range(self.n_features) if c not in self.categorical)

    @property
    def plain(self) -> bool:
        """Numbers only, none missing: the input width never depends on the preprocessing."""
        return not self.categorical and not self.with_missing

    def categorical_layout(self, model: ModelParams) -> list[dict[str, Any]]:
        """Where each categorical column sits in the model's input after `model`'s
        preprocessing (numbers, their missing indicators, then the categories in order):
        its name, its category count, its columns [start, stop) and, for an Embedding of its
        ordinal code, the input_dim that holds every code (0..k-1, and k for missing)."""
        start = self._numeric_width(model)
        extra = 1 if model.min_frequency is not None else 0  # the rare categories' column
        layout = []
        for column, count in zip(self.categorical, self.category_counts, strict=True):
            if model.categorical_encoding == "ordinal":
                width = 1
            else:
                own_missing = model.categorical_impute == "missing" and column in self.with_missing
                width = count + extra + (1 if own_missing else 0)
            name = self.names[column] if self.names else f"x{column}"
            layout.append(
                {
                    "name": name,
                    "categories": count,
                    "columns": [start, start + width],
                    "input_dim": count + 1,
                }
            )
            start += width
        return layout

    def encoded_width(self, model: ModelParams) -> int:
        """The model's input width after `model`'s preprocessing."""
        layout = self.categorical_layout(model)
        return layout[-1]["columns"][1] if layout else self._numeric_width(model)

    def _numeric_width(self, model: ModelParams) -> int:
        """The numbers' columns, then their missing indicators: the input before the
        categories."""
        width = len(self.numeric)
        if model.missing_indicator:
            width += sum(1 for c in self.with_missing if c not in self.categorical)
        return width


def model_input_meta(meta: dict[str, Any], model: ModelParams) -> dict[str, Any]:
    """`meta` as the model function sees it for `model`: `n_features_in_` is the width after
    its preprocessing (one-hot columns, indicators), as scikeras' meta is after a Pipeline's
    transformers, and `categorical_features_` says where each categorical column went (an
    Embedding's position and input_dim). Without feature kinds in `meta` it is returned as it
    is."""
    kinds = meta.get(FEATURE_KINDS_META)
    if model.transformer is not None:  # the user's own transformer: its output width
        resolved = {key: value for key, value in meta.items() if key != FEATURE_KINDS_META}
        if model.transformer_width is not None:
            resolved["n_features_in_"] = model.transformer_width
        return resolved
    if kinds is None:
        return meta
    resolved = {key: value for key, value in meta.items() if key != FEATURE_KINDS_META}
    kinds = FeatureKinds.model_validate(kinds)
    resolved["n_features_in_"] = kinds.encoded_width(model)
    if kinds.categorical:
        resolved[CATEGORICAL_META] = kinds.categorical_layout(model)
    return resolved
