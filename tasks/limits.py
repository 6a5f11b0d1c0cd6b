"""How big a run is, counted from list lengths alone, and refused before anything is built."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence, Sized

from tasks.errors import ConfigError

DEFAULT_MAX_FITS = 100_000
# Folds a run has at least: a grid whose combinations alone exceed the limit is refused even
# before the number of folds is known.
MIN_SPLITS = 2


def count_combinations(grid: Mapping[str, Sized] | Sequence[Mapping[str, Sized]]) -> int:
    """Combinations scikit-learn's ParameterGrid would yield: product of list lengths (summed
    over the grids of a list of grids), computed without expanding any of them."""
    grids = [grid] if isinstance(grid, Mapping) else list(grid)
    return sum(math.prod(len(values) for values in one.values()) for one in grids)


def check_fit_count(combinations: int, n_splits: int, max_fits: int, source: str) -> int:
    """The run's fits (combinations x folds), or a ConfigError when they exceed `max_fits`."""
    fits = combinations * n_splits
    if fits > max_fits:
        raise ConfigError(
            f"{source}: {combinations:,} combination(s) x {n_splits} folds = {fits:,} fits, "
            f"more than max_fits={max_fits:,}: shrink the grid (or the folds), or raise "
            "--max-fits if you mean it"
        )
    return fits
