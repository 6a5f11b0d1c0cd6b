"""How far a run is, for the person who started it: one live bar in a terminal or a notebook,
plain lines in a log (CI), nothing on a deployment's worker (the UI shows its artifact).

The flows report into whatever watches this process (`watching`): train_all as fits end, the
evaluator as a strategy asks for candidates. Nobody watching costs nothing. Prefect's own
INFO lines (one per task run) stay in the run's log in the UI; `prefect_console_at` keeps them
off the terminal unless asked (`--verbose`, `verbose=2`), warnings and errors always show.
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from tasks.metrics import METRICS
from tasks.records import FitJob, FitResult

LINE_EVERY_SECONDS = 10.0


@dataclass
class ProgressState:
    """What the display shows: fits done of the total, speed, the best so far, the stage."""

    done: int = 0
    total: int = 0
    trained: int = 0  # fits trained in this run
    cached: int = 0  # fits found in the fit cache (done at once)
    seconds: float = 0.0  # since the first fit was asked for
    metric: str = ""
    best_score: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    stage: str = ""

    @property
    def rate(self) -> float | None:
        """Fits trained per second; None before the first one ends."""
        return self.trained / self.seconds if self.trained and self.seconds > 0 else None

    @property
    def seconds_left(self) -> float | None:
        rate = self.rate
        return None if rate is None else max(0, self.total - self.done) / rate


def params_text(params: dict[str, Any]) -> str:
    """`batch_size=5, epochs=150`: every value with its key, in a stable order."""
    return ", ".join(
        f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"
        for key, value in sorted(params.items())
    )


def duration_text(seconds: float) -> str:
    """`42 s`, `3 min 05 s`, `1 h 02 min`."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def details_text(state: ProgressState) -> str:
    """Everything after the count: speed, time left, the best so far, the strategy's stage."""
    parts = [f"{state.cached} from the cache"] if state.cached else []
    if state.rate is not None:
        parts.append(f"{state.rate:.2f} fits/s")
        if state.done < state.total and state.seconds_left is not None:
            parts.append(f"{duration_text(state.seconds_left)} left")
    if state.best_score is not None:
        best = f"best {state.metric} {state.best_score:.4f}"
        parts.append(f"{best} ({params_text(state.best_params)})" if state.best_params else best)
    if state.stage:
        parts.append(state.stage)
    return ", ".join(parts)


def progress_line(state: ProgressState) -> str:
    """One plain line: `fits 12/162 (7%), 3.10 fits/s, 45 s left, best accuracy 0.7474 (...)`."""
    percent = 100 * state.done // state.total if state.total else 0
    details = details_text(state)
    return f"fits {state.done}/{state.total} ({percent}%)" + (f", {details}" if details else "")


class Display(Protocol):
    def show(self, state: ProgressState) -> None: ...

    def close(self, state: ProgressState) -> None: ...


class LineDisplay:
    """Plain lines for a log: the first, then one every `every` seconds, and the last."""

    def __init__(self, stream: TextIO, every: float = LINE_EVERY_SECONDS) -> None:
        self.stream, self.every = stream, every
        self.last_shown: float | None = None
        self.last_line = ""

    def show(self, state: ProgressState) -> None:
        now = time.monotonic()
        complete = state.total and state.done >= state.total
        if self.last_shown is not None and now - self.last_shown < self.every and not complete:
            return
        line = progress_line(state)
        if line != self.last_line:
            # Not print(): inside a flow, log_prints makes print a log line.
            self.stream.write(line + "\n")
            self.stream.flush()
            self.last_shown, self.last_line = now, line

    def close(self, state: ProgressState) -> None:
        """The last count, unless it was the last line shown."""
        if state.total and not self.last_line.startswith(f"fits {state.done}/{state.total} "):
            self.last_shown = None
            self.show(state)


class BarDisplay:
    """One live tqdm bar (`tqdm.tqdm` in a terminal, `tqdm.auto.tqdm` in a notebook)."""

    def __init__(self, bar_class: Any, stream: TextIO | None = None) -> None:
        self.bar_class, self.stream = bar_class, stream
        self.bar: Any = None

    def show(self, state: ProgressState) -> None:
        if self.bar is None:
            self.bar = self.bar_class(
                total=state.total,
                unit="fit",
                file=self.stream,
                dynamic_ncols=True,
                leave=True,
                bar_format="fits {n_fmt}/{total_fmt} |{bar}| {percentage:3.0f}%{postfix}",
            )
        details = details_text(state)
        room = shutil.get_terminal_size((100, 20)).columns - 45
        if _is_terminal(self.stream) and len(details) > room > 10:  # one line, or \r fails
            details = details[: room - 1] + "…"
        self.bar.total = state.total
        self.bar.n = state.done
        self.bar.set_postfix_str(f" {details}" if details else "", refresh=False)
        self.bar.refresh()

    def clear(self) -> None:
        """Before another line is written to the terminal (a warning): it goes above the bar."""
        if self.bar is not None:
            self.bar.clear()

    def close(self, state: ProgressState) -> None:
        if self.bar is not None:
            self.show(state)
            self.bar.close()
            self.bar = None


class RunProgress:
    """The fits of one run as they end, told to a display (thread-safe: the flow reports from
    its own thread)."""

    def __init__(self, display: Display, expected_fits: int = 0, strategy: str = "") -> None:
        self.display, self.strategy = display, strategy
        self.state = ProgressState(total=expected_fits)
        self.greater_is_better = True
        self.asked = 0
        self.started: float | None = None
        self.lock = threading.Lock()

    def _show(self) -> None:
        if self.started is not None:
            self.state.seconds = time.monotonic() - self.started
        self.display.show(self.state)

    def planned(self, n_jobs: int, n_cached: int, metric: str) -> None:
        """A batch of fits starts: the total grows if the run asks for more than expected."""
        with self.lock:
            if self.started is None:
                self.started = time.monotonic()
            self.asked += n_jobs
            self.state.total = max(self.state.total, self.asked)
            self.state.done += n_cached
            self.state.cached += n_cached
            self.state.metric = metric
            known = METRICS.get(metric)
            self.greater_is_better = known.greater_is_better if known is not None else True
            self._show()

    def fits_ended(self, count: int, best: tuple[float, dict[str, Any]] | None) -> None:
        with self.lock:
            self.state.done += count
            self.state.trained += count
            if best is not None and not math.isnan(best[0]):
                score, params = best
                current = self.state.best_score
                if current is None or (
                    score > current if self.greater_is_better else score < current
                ):
                    self.state.best_score, self.state.best_params = score, params
            self._show()

    def candidates_asked(
        self, numbers: list[int], iteration: int = 0, epochs: int | None = None
    ) -> None:
        """What the strategy is at: halving's rung, TPE's trials."""
        with self.lock:
            if epochs is not None:
                self.state.stage = (
                    f"rung {iteration + 1} ({epochs} epochs, {len(numbers)} candidates)"
                )
            elif self.strategy == "tpe" and numbers:
                self.state.stage = f"trials {min(numbers) + 1}-{max(numbers) + 1}"

    def close(self) -> None:
        with self.lock:  # the speed as of the last fit; nothing if no fit was asked for
            if self.started is not None:
                self.display.close(self.state)


_watching: RunProgress | None = None


@contextmanager
def watching(progress: RunProgress | None) -> Iterator[RunProgress | None]:
    """Report this process's fits to `progress` while the block runs (None: nobody watches)."""
    global _watching
    previous, _watching = _watching, progress
    try:
        yield progress
    finally:
        _watching = previous
        if progress is not None:
            progress.close()


def current_progress() -> RunProgress | None:
    """What watches this process's run, if anything (train_all and the evaluator report to it)."""
    return _watching


def best_candidate(
    results: Iterable[FitResult], jobs: list[FitJob], n_folds: int, metric: str
) -> tuple[float, dict[str, Any]] | None:
    """The mean score and params of the best combination whose every fold is done."""
    from tasks.results.aggregate import _metric_value, best_so_far

    results = list(results)
    best = best_so_far(results, n_folds, metric)
    if best is None:
        return None
    scores = [_metric_value(r, metric) for r in results if r.combination == best]
    params = next((job.params for job in jobs if job.combination == best), {})
    return float(sum(scores) / len(scores)), dict(params)


def expected_fits(config: Any) -> int:
    """The fits a run will train, counted from its config (0: not known before it runs)."""
    from tasks.config import CVConfig, GridSearchConfig, SearchConfig
    from tasks.search.halving import halving_schedule

    n_splits = config.run.n_folds  # repeated k-fold: r x k fits per candidate
    if isinstance(config, CVConfig):
        return n_splits
    if isinstance(config, GridSearchConfig):
        return config.grid.n_combinations * n_splits
    if isinstance(config, SearchConfig):
        if config.outer_folds:
            return 0
        if config.strategy == "halving":
            schedule = halving_schedule(
                config.n_candidates, config.min_epochs, config.max_epochs, config.factor
            )
            return sum(rung.n_candidates for rung in schedule) * n_splits
        return config.n_candidates * n_splits
    return 0


def strategy_of(config: Any) -> str:
    return str(getattr(config, "strategy", ""))


def _console_handlers() -> list[logging.Handler]:
    """Prefect's console handlers (the root logger's and its server loggers')."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    return [
        handler
        for logger in loggers
        for handler in logger.handlers
        if isinstance(handler, PrefectConsoleHandler)
    ]


class _ConsoleFilter(logging.Filter):
    """Drops Prefect's console lines below `level`, and clears the live bar before a line is
    written, so the line stays whole. A filter, not the handler's level: Prefect's server start
    reconfigures logging incrementally, which resets handler levels but keeps filters."""

    def __init__(self, level: int, bar: BarDisplay | None) -> None:
        super().__init__()
        self.level, self.bar = level, bar

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level:
            return False
        if self.bar is not None:
            self.bar.clear()
        return True


@contextmanager
def prefect_console_at(level: int, bar: BarDisplay | None = None) -> Iterator[None]:
    """Prefect's console lines at `level` and above while the block runs (its API handler, the
    run's log in the UI, still gets every line)."""
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()
    handlers = _console_handlers()
    console_filter = _ConsoleFilter(level, bar)
    for handler in handlers:
        handler.addFilter(console_filter)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(console_filter)


def terminal_display(out: TextIO, err: TextIO) -> Display:
    """A live bar on stderr when the output is a terminal, else plain lines on stderr (the
    output stays the results alone)."""
    if _is_terminal(out) and _is_terminal(err):
        from tqdm import tqdm

        return BarDisplay(tqdm, err)
    return LineDisplay(err)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def notebook_display() -> Display:
    """tqdm's notebook bar (a widget) in Jupyter with ipywidgets installed, else tqdm's text
    bar on stderr, which a notebook renders in place too (tqdm.auto would warn first)."""
    if _in_jupyter():
        try:
            import ipywidgets  # noqa: F401
            from tqdm.notebook import tqdm as notebook_tqdm

            return BarDisplay(notebook_tqdm, sys.stderr)
        except ImportError:
            pass
    from tqdm import tqdm

    return BarDisplay(tqdm, sys.stderr)


def _in_jupyter() -> bool:
    ipython = sys.modules.get("IPython")
    try:
        shell = ipython.get_ipython() if ipython is not None else None
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:
        return False
