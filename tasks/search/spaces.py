"""Search spaces: routed key -> a list of choices or a distribution, read from YAML, checked
before any training, and sampled exactly as scikit-learn's `RandomizedSearchCV` samples.

A space file looks like a grid file whose values may also be distributions:

    learning_rate: {loguniform: [1.0e-4, 1.0e-1]}
    hidden_layers: [[12, 8], [32, 16]]       # a list is a choice (lists of widths allowed)
    batch_size: {randint: [8, 32]}           # both bounds included
    optimizer: {choice: [adam, rmsprop]}

`randint: [a, b]` includes `b`, like Python's `random.randint` and Optuna's `suggest_int`;
scikit-learn's scipy `randint(a, b + 1)` is what it becomes (scipy excludes its upper bound).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy import stats
from sklearn.model_selection import ParameterSampler
from yaml.nodes import MappingNode

from tasks.config import SearchConfig, shipped_file
from tasks.errors import ConfigError
from tasks.messages import bounded_repr
from tasks.model.routing import FunctionSignature, destination
from tasks.yaml_input import BoundedSafeLoader, parse_yaml, read_yaml_text

Kind = Literal["choice", "loguniform", "uniform", "randint"]
DISTRIBUTIONS: tuple[str, ...] = ("loguniform", "uniform", "randint", "choice")


class Dimension(BaseModel):
    """One searched key: its choices, or a distribution's bounds; `line` is where the file
    gives it (None for an inline space)."""

    model_config = ConfigDict(frozen=True)

    key: str
    kind: Kind
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    line: int | None = None

    def where(self, source: str) -> str:
        line = f", line {self.line}" if self.line is not None else ""
        return f"{source}{line}: key {self.key!r}"


class SearchSpace(BaseModel):
    """Every searched key of one search, in the file's order."""

    model_config = ConfigDict(frozen=True)

    source: str
    dimensions: tuple[Dimension, ...]

    @property
    def names(self) -> list[str]:
        return [dimension.key for dimension in self.dimensions]

    def dimension(self, key: str) -> Dimension:
        return next(d for d in self.dimensions if d.key == key)

    def size(self) -> float:
        """Distinct candidates: the product of choice counts and integer ranges; inf with
        a continuous distribution."""
        counts = []
        for d in self.dimensions:
            if d.kind == "choice":
                counts.append(len(d.choices))
            elif d.kind == "randint":
                counts.append(int(d.high) - int(d.low) + 1)
            else:
                return math.inf
        return float(math.prod(counts))


def _grid_value(value: Any) -> Any:
    """Lists become tuples (one argument, hashable), numpy scalars Python numbers."""
    if isinstance(value, list | tuple):
        return tuple(_grid_value(item) for item in value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_dimension(key: Any, value: Any, source: str, line: int | None = None) -> Dimension:
    """One key's value as a Dimension, or a ConfigError naming source, line, key and value."""
    where = f"{source}{'' if line is None else f', line {line}'}: key {bounded_repr(key)}"

    def refuse(problem: str) -> ConfigError:
        return ConfigError(f"{where}: {problem} (received {bounded_repr(value)})")

    if not isinstance(key, str) or not key:
        raise refuse("keys must be non-empty text")
    if isinstance(value, list):
        if not value:
            raise refuse("an empty list of choices")
        return Dimension(key=key, kind="choice", choices=_grid_value(value), line=line)
    if not isinstance(value, dict):
        raise refuse(
            "must be a list of choices or one distribution: "
            + ", ".join(f"{{{name}: [...]}}" for name in DISTRIBUTIONS)
        )
    if len(value) != 1:
        raise refuse(f"one distribution per key; use one of {', '.join(DISTRIBUTIONS)}")
    ((name, arguments),) = value.items()
    if name not in DISTRIBUTIONS:
        raise refuse(
            f"unknown distribution {bounded_repr(name)}; use one of {', '.join(DISTRIBUTIONS)}"
        )
    if name == "choice":
        if not isinstance(arguments, list) or not arguments:
            raise refuse("choice takes a non-empty list of values")
        return Dimension(key=key, kind="choice", choices=_grid_value(arguments), line=line)
    if not isinstance(arguments, list) or len(arguments) != 2:
        raise refuse(f"{name} takes two bounds [low, high]")
    low, high = arguments
    if not (_is_number(low) and _is_number(high)):
        raise refuse(f"{name} bounds must be numbers")
    if not all(math.isfinite(bound) for bound in (low, high)):
        raise refuse(f"{name} bounds must be finite")
    if name == "randint":
        if not (isinstance(low, int) and isinstance(high, int)):
            raise refuse("randint bounds must be integers")
        if low > high:
            raise refuse("randint needs low <= high (both included)")
    elif low >= high:
        raise refuse(f"{name} needs low < high")
    if name == "loguniform" and low <= 0:
        raise refuse("loguniform needs positive bounds (the log of a value <= 0 is undefined)")
    return Dimension(key=key, kind=name, low=low, high=high, line=line)


def space_from_mapping(
    raw: Any, source: str = "search space", lines: dict[str, int] | None = None
) -> SearchSpace:
    """A space from plain data (an inline flow parameter or a parsed file), every key checked."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(
            f"{source}: a search space is a non-empty mapping of keys to choices or "
            f"distributions, got {bounded_repr(raw)}"
        )
    lines = lines or {}
    return SearchSpace(
        source=source,
        dimensions=tuple(
            parse_dimension(key, value, source, lines.get(key)) for key, value in raw.items()
        ),
    )


def _key_lines(text: str, source: str) -> dict[str, int]:
    """Top-level key -> its line (1-based), for messages that point into the file."""
    loader = BoundedSafeLoader(text)
    loader.name = source
    try:
        node = loader.get_single_node()
    finally:
        loader.dispose()
    if not isinstance(node, MappingNode):
        return {}
    return {key.value: key.start_mark.line + 1 for key, _ in node.value}


def load_search_space(path: str | Path) -> SearchSpace:
    """Read a space YAML safely (tasks.yaml_input) and check it, naming file, line and key."""
    text = read_yaml_text(Path(path))
    raw = parse_yaml(text, str(path))
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to choices or distributions")
    return space_from_mapping(raw, str(path), _key_lines(text, str(path)))


def configured_space(config: SearchConfig) -> SearchSpace:
    """The search config's space, read and checked (a relative path: the user's, else a
    shipped file); halving's own resource, epochs, refused in it."""
    if isinstance(config.space, dict):
        space = space_from_mapping(config.space, "search space")
    else:
        path = Path(config.space).expanduser()
        space = load_search_space(path if path.is_absolute() else shipped_file(path))
    if config.strategy == "halving" and "epochs" in space.names:
        raise ConfigError(
            f"{space.dimension('epochs').where(space.source)}: halving searches over "
            "epochs itself (min_epochs to max_epochs): remove 'epochs' from the space"
        )
    return space


def check_space_keys(space: SearchSpace, signature: FunctionSignature) -> None:
    """Every key must route (tasks.model.routing) as a grid key would: unknown keys are refused."""
    for d in space.dimensions:
        try:
            destination(d.key, signature)
        except ConfigError as error:
            raise ConfigError(f"{d.where(space.source)}: {error}") from None


def scipy_distributions(space: SearchSpace) -> dict[str, Any]:
    """What `ParameterSampler` and `RandomizedSearchCV(param_distributions=...)` take."""
    distributions: dict[str, Any] = {}
    for d in space.dimensions:
        if d.kind == "choice":
            distributions[d.key] = list(d.choices)
        elif d.kind == "loguniform":
            distributions[d.key] = stats.loguniform(d.low, d.high)
        elif d.kind == "uniform":
            distributions[d.key] = stats.uniform(loc=d.low, scale=d.high - d.low)
        else:  # scipy's randint excludes its upper bound; ours includes it
            distributions[d.key] = stats.randint(int(d.low), int(d.high) + 1)
    return distributions


def sample_candidates(space: SearchSpace, n_candidates: int, seed: int) -> list[dict[str, Any]]:
    """`n_candidates` draws (fewer when a space of choices only is smaller: then every
    candidate once), the very ones `RandomizedSearchCV(random_state=seed)` draws."""
    sampler = ParameterSampler(scipy_distributions(space), n_candidates, random_state=seed)
    if space.size() < n_candidates:
        sampler.n_iter = int(space.size())  # scikit-learn would warn and do the same
    return [{key: _grid_value(value) for key, value in draw.items()} for draw in sampler]


def covering_candidates(space: SearchSpace) -> list[dict[str, Any]]:
    """A few candidates that hold every choice and both bounds of every distribution: checked
    against the model function before a search that samples as it goes (TPE) trains."""
    count = max(2, *(len(d.choices) for d in space.dimensions if d.kind == "choice"), 2)
    candidates = []
    for index in range(count):
        candidate = {}
        for d in space.dimensions:
            if d.kind == "choice":
                candidate[d.key] = d.choices[index % len(d.choices)]
            else:
                bound = d.low if index % 2 == 0 else d.high
                candidate[d.key] = int(bound) if d.kind == "randint" else float(bound)
        candidates.append(candidate)
    return candidates


def _optuna_choice(value: Any) -> Any:
    """Optuna stores None, bool, int, float or str: other choices travel as JSON text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value if not isinstance(value, tuple) else list(value))


def optuna_distributions(space: SearchSpace) -> dict[str, Any]:
    """The same space for Optuna's ask-and-tell (`study.ask(distributions)`)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    distributions: dict[str, Any] = {}
    for d in space.dimensions:
        if d.kind == "choice":
            distributions[d.key] = CategoricalDistribution([_optuna_choice(v) for v in d.choices])
        elif d.kind == "randint":
            distributions[d.key] = IntDistribution(int(d.low), int(d.high))
        else:
            distributions[d.key] = FloatDistribution(d.low, d.high, log=d.kind == "loguniform")
    return distributions


def from_optuna(space: SearchSpace, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's params back in the space's terms (JSON-coded choices decoded, lists as
    tuples), in the space's key order."""
    candidate = {}
    for d in space.dimensions:
        value = params[d.key]
        if d.kind == "choice" and value not in d.choices:
            value = next(c for c in d.choices if _optuna_choice(c) == value)
        candidate[d.key] = _grid_value(value)
    return candidate
