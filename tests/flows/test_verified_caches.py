"""Cache entries are checked before they are served: an altered one is recomputed, and the run
gives what a fresh computation gives (issue 27)."""

import logging
from pathlib import Path

import pytest

from flows.cv import cv_flow
from tasks.config import CVConfig, RunSettings


@pytest.fixture
def flow_run_warnings():
    """The flow runs' log messages, as the run logger emits them (not as the API stores them
    later: its log worker sends them in batches)."""
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = logging.getLogger("prefect.flow_runs")
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


def test_an_altered_fit_cache_entry_is_retrained_to_the_fresh_scores(
    run_settings, flow_run_warnings
):
    def run(name):
        config = CVConfig(
            params={"epochs": 1, "batch_size": 64},
            run=RunSettings(**run_settings, n_splits=2, engine="fast", run_name=name),
        )
        return cv_flow(config)

    first = run("first")
    fits = sorted((Path(run_settings["cache_dir"]) / "fits").rglob("*.json"))
    assert len(fits) == 2
    for path in fits:  # one character, same size: a digit of the record's JSON
        text = path.read_text()
        at = text.index('\\"accuracy\\":') + len('\\"accuracy\\":') + 3
        digit = "1" if text[at] != "1" else "2"
        path.write_text(text[:at] + digit + text[at + 1 :])
    second = run("second")
    assert second.n_cached_fits == 0
    assert second.best_metrics == first.best_metrics
    warnings = [message for message in flow_run_warnings if message.startswith("fit cache ")]
    assert warnings == [
        f"fit cache {Path(run_settings['cache_dir']) / 'fits'}: an entry does not match its "
        "checksum; it was dropped and is recomputed (further such entries in this folder are "
        "dropped without another warning)"
    ]
