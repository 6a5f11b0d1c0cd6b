"""Task-run names a reader can scan in the UI: which combination, fold or group a run trains.
Pure Python (no TensorFlow): the flow names its task runs before training."""

from __future__ import annotations

from typing import Any

from tasks.config import ModelParams
from tasks.numbers import param_text
from tasks.records import FitJob


def describe_jobs(jobs: list[FitJob]) -> str:
    """A readable task-run name: `adam | uniform | e150 | b5 | fold2`, or what a group holds.

    ASCII separators: the UI's run graph draws names in a font that drops `·`."""
    folds = _span(sorted({job.fold for job in jobs}))
    combinations = sorted({job.combination for job in jobs})
    first = jobs[0]
    if len(combinations) == 1:
        words = [_word(value) for key, value in first.params.items() if key not in _SHOWN_APART]
        words += [f"e{first.model.epochs}", f"b{first.model.batch_size}"]
        words += _preprocessing_words(first.model)
        name = SEPARATOR.join([*words, f"fold{folds}"])
        return name if len(jobs) == 1 else f"{name} ({len(jobs)} fits)"
    batch_sizes = "/".join(str(size) for size in sorted({job.model.batch_size for job in jobs}))
    return SEPARATOR.join(
        [f"{len(jobs)} fits", f"combos {_span(combinations)}", f"b{batch_sizes}", f"folds {folds}"]
    )


SEPARATOR = " | "
# `transformer`: a Python Pipeline's pickled transformers (tasks.data.user_transformer).
_SHOWN_APART = (
    "epochs", "batch_size", "preprocess__scaling", "preprocess__impute_zeros", "transformer",
)  # fmt: skip


def _word(value: Any) -> str:
    """A value as the results table and pictures show it: floats rounded (tasks.numbers)."""
    return param_text(value)[:24]


def _preprocessing_words(model: ModelParams) -> list[str]:
    """`standard`, `impute0`: only what differs from the tutorial's raw features."""
    words = [model.scaling] if model.scaling != "none" else []
    return words + (["impute0"] if model.impute_zeros else [])


def _span(numbers: list[int]) -> str:
    """`3` or `0-9` for a contiguous run, else `0,2,5`."""
    if len(numbers) == 1:
        return str(numbers[0])
    if numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"{numbers[0]}-{numbers[-1]}"
    return ",".join(map(str, numbers))
