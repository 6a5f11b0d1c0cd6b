"""The progress a run shows (flows.progress): its line, its throttle, the best so far in the
metric's own direction, and the fits a config will train."""

import io

from flows.progress import (
    LineDisplay,
    ProgressState,
    RunProgress,
    duration_text,
    expected_fits,
    progress_line,
)
from tasks.config import CVConfig, GridSearchConfig, GridSpec, RunSettings, SearchConfig


def test_the_line_says_count_speed_time_left_best_with_its_keys_and_stage():
    state = ProgressState(
        done=12, total=162, trained=12, seconds=4.0, metric="accuracy", best_score=0.74739,
        best_params={"epochs": 150, "batch_size": 5, "lr": 0.036294229783964016},
        stage="rung 2 (45 epochs, 6 candidates)",
    )  # fmt: skip
    assert progress_line(state) == (
        "fits 12/162 (7%), 3.00 fits/s, 50 s left, best accuracy 0.7474 "
        "(batch_size=5, epochs=150, lr=0.0362942), rung 2 (45 epochs, 6 candidates)"
    )


def test_before_any_fit_ends_the_line_is_the_count_alone():
    assert progress_line(ProgressState(total=10)) == "fits 0/10 (0%)"


def test_durations_read_as_a_person_says_them():
    assert [duration_text(s) for s in (42, 185, 3720)] == ["42 s", "3 min 05 s", "1 h 02 min"]


class Shown:
    def __init__(self):
        self.states = []

    def show(self, state):
        self.states.append(progress_line(state))

    def close(self, state):
        pass


def test_the_best_so_far_follows_the_metrics_direction():
    shown = Shown()
    progress = RunProgress(shown, expected_fits=6)
    progress.planned(6, 0, "log_loss")  # lower is better
    progress.fits_ended(2, (0.60, {"lr": 0.1}))
    progress.fits_ended(2, (0.70, {"lr": 0.5}))
    progress.fits_ended(2, (0.55, {"lr": 0.01}))
    assert progress.state.best_score == 0.55 and progress.state.best_params == {"lr": 0.01}
    assert shown.states[-1].startswith("fits 6/6 (100%), ")


def test_cached_fits_count_as_done_and_the_total_grows_when_a_run_asks_for_more():
    progress = RunProgress(Shown(), expected_fits=4)
    progress.planned(4, 3, "accuracy")
    progress.planned(2, 0, "accuracy")  # a strategy asked for more than expected
    assert (progress.state.done, progress.state.total) == (3, 6)
    assert "3 from the cache" in progress_line(progress.state)


def test_halving_shows_its_rung_and_tpe_its_trials():
    halving, tpe = RunProgress(Shown(), strategy="halving"), RunProgress(Shown(), strategy="tpe")
    halving.candidates_asked([0, 3, 5], iteration=1, epochs=15)
    tpe.candidates_asked([4, 5, 6, 7])
    assert halving.state.stage == "rung 2 (15 epochs, 3 candidates)"
    assert tpe.state.stage == "trials 5-8"


def test_plain_lines_are_throttled_but_the_first_and_the_last_always_show():
    out = io.StringIO()
    display = LineDisplay(out, every=3600)
    for done in range(5):
        display.show(ProgressState(done=done, total=4))
    display.close(ProgressState(done=4, total=4))
    assert out.getvalue().splitlines() == ["fits 0/4 (0%)", "fits 4/4 (100%)"]


def test_expected_fits_count_what_each_strategy_trains():
    run = RunSettings(n_splits=3)
    assert expected_fits(CVConfig(run=run)) == 3
    grid = GridSpec(param_grid={"epochs": [1, 2], "batch_size": [5, 10, 20]})
    assert expected_fits(GridSearchConfig(grid=grid, run=run)) == 18
    assert expected_fits(SearchConfig(strategy="random", n_candidates=7, run=run)) == 21
    halving = SearchConfig(
        strategy="halving", n_candidates=9, min_epochs=1, max_epochs=9, factor=3, run=run
    )
    assert expected_fits(halving) == (9 + 3 + 1) * 3  # rungs of 9, 3 and 1 candidates


def test_a_run_refused_before_any_fit_prints_no_progress():
    out = io.StringIO()
    RunProgress(LineDisplay(out), expected_fits=10).close()
    assert out.getvalue() == ""


def test_prefects_console_keeps_warnings_and_drops_info_lines_only_inside_the_block():
    import logging

    from flows.progress import _console_handlers, prefect_console_at

    def record(level):
        return logging.LogRecord("prefect.task_runs", level, __file__, 1, "line", None, None)

    with prefect_console_at(logging.WARNING):
        handlers = _console_handlers()
        assert handlers  # Prefect's console handler, set up by the block
        for handler in handlers:
            assert not handler.filter(record(logging.INFO))
            assert handler.filter(record(logging.WARNING))
    assert all(handler.filter(record(logging.INFO)) for handler in _console_handlers())
