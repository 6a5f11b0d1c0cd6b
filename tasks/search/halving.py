"""Successive halving's schedule over epochs, worked out in one place: the epochs and the
number of candidates of every rung, for the search flow's halving strategy
(tasks.search.strategies) and for foldflow's halving searches (foldflow.halving), which
choose the first and last rungs' epochs as scikit-learn's halving searches choose them.

Pure arithmetic: no fitting, no Prefect. A rung keeps the best ceil(n / factor) of the one
before, so the whole schedule is known before the first fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tasks.errors import ConfigError


@dataclass(frozen=True)
class Rung:
    """One rung: every candidate still alive trained for `epochs` on every fold."""

    epochs: int
    n_candidates: int


def halving_rungs(min_epochs: int, max_epochs: int, factor: int) -> list[int]:
    """Epochs of each rung: min_epochs * factor**k below max_epochs, then max_epochs."""
    if min_epochs < 1 or max_epochs < min_epochs:
        raise ConfigError(
            f"halving needs 1 <= min_epochs <= max_epochs, got {min_epochs} and {max_epochs}"
        )
    if factor < 2:
        raise ConfigError(f"halving needs factor >= 2, got {factor}")
    rungs = []
    epochs = min_epochs
    while epochs < max_epochs:
        rungs.append(epochs)
        epochs *= factor
    return [*rungs, max_epochs]


def n_survivors(n_candidates: int, factor: int) -> int:
    """How many of a rung's candidates go on to the next: ceil(n / factor), at least one."""
    return max(1, math.ceil(n_candidates / factor))


def halving_schedule(
    n_candidates: int, min_epochs: int, max_epochs: int, factor: int
) -> list[Rung]:
    """Every rung the search trains, with its candidates: halving_rungs' epochs, the survivors
    of each rung on the next; once one candidate is left it goes straight to the last rung."""
    rungs = halving_rungs(min_epochs, max_epochs, factor)
    schedule = []
    alive = n_candidates
    for index, epochs in enumerate(rungs):
        if alive == 1 and index < len(rungs) - 1:
            continue
        schedule.append(Rung(epochs=epochs, n_candidates=alive))
        alive = n_survivors(alive, factor)
    return schedule


def epochs_trained(schedule: list[Rung], continued: bool) -> int:
    """Epochs per fold summed over candidates: from scratch at every rung, or continued from
    the last rung's weights (warm start)."""
    total, previous = 0, 0
    for rung in schedule:
        total += rung.n_candidates * (rung.epochs - previous if continued else rung.epochs)
        previous = rung.epochs
    return total


@dataclass(frozen=True)
class ScikitLearnHalving:
    """scikit-learn's halving attributes for epochs as the resource, and the rungs run."""

    n_candidates: int
    min_resources: int
    max_resources: int
    n_required: int  # n_required_iterations_
    n_possible: int  # n_possible_iterations_
    rungs: list[Rung]

    @property
    def resources(self) -> list[int]:
        """n_resources_: the epochs of every iteration."""
        return [rung.epochs for rung in self.rungs]


def scikit_learn_halving(
    n_candidates: int | None,
    min_resources: int | str,
    max_resources: int,
    factor: int,
    aggressive_elimination: bool = False,
) -> ScikitLearnHalving:
    """scikit-learn's `_check_input_parameters` and `_run_search` choice of min and max
    resources and of the iterations for a parameter resource (here epochs); the rungs are
    then `halving_schedule`'s from the first iteration's epochs to the last's.

    `min_resources`: epochs, 'smallest' (1) or 'exhaust'; `n_candidates` None is
    HalvingRandomSearchCV's n_candidates='exhaust'. Repeating the first iteration's epochs
    (aggressive elimination with more iterations needed than possible) is refused: each of
    foldflow's rungs trains longer than the last.
    """
    if min_resources in ("smallest", "exhaust"):
        minimum = 1  # scikit-learn's smallest for a parameter resource
    else:
        minimum = int(min_resources)
    if minimum > max_resources:
        raise ConfigError(
            f"min_resources_={minimum} is greater than max_resources_={max_resources}"
        )
    if n_candidates is None:
        n_candidates = max_resources // minimum
    n_required = 1 + math.floor(math.log(n_candidates, factor))
    if min_resources == "exhaust":
        minimum = max(minimum, max_resources // factor ** (n_required - 1))
    n_possible = 1 + math.floor(math.log(max_resources // minimum, factor))
    if aggressive_elimination and n_required > n_possible:
        raise ConfigError(
            "aggressive_elimination=True would repeat the first iteration's epochs "
            f"({n_required} iterations needed, {n_possible} possible), which foldflow's "
            "halving (each rung longer than the last) does not do; leave it False, or "
            "lower factor or min_resources, or raise max_resources"
        )
    if aggressive_elimination:  # scikit-learn's powers: the last ones possible
        powers = list(range(n_possible - n_required, n_possible))
    else:
        powers = list(range(min(n_possible, n_required)))
    first, last = (min(factor**power * minimum, max_resources) for power in (powers[0], powers[-1]))
    return ScikitLearnHalving(
        n_candidates=n_candidates,
        min_resources=minimum,
        max_resources=max_resources,
        n_required=n_required,
        n_possible=n_possible,
        rungs=halving_schedule(n_candidates, first, last, factor),
    )
