"""Cache entries are checked before they are served: an altered one is recomputed, and the run
gives what a fresh computation gives (issue 27)."""

from pathlib import Path

from flows.cv import cv_flow
from tasks.config import CVConfig, RunSettings
from tests.flows.conftest import logs_of


def test_an_altered_fit_cache_entry_is_retrained_to_the_fresh_scores(run_settings):
    def run(name):
        config = CVConfig(
            params={"epochs": 1, "batch_size": 64},
            run=RunSettings(**run_settings, n_splits=2, engine="fast", run_name=name),
        )
        return cv_flow(config, return_state=True)

    first = run("first").result()
    fits = sorted((Path(run_settings["cache_dir"]) / "fits").rglob("*.json"))
    assert len(fits) == 2
    for path in fits:  # one character, same size: a digit of the record's JSON
        text = path.read_text()
        at = text.index('\\"accuracy\\":') + len('\\"accuracy\\":') + 3
        digit = "1" if text[at] != "1" else "2"
        path.write_text(text[:at] + digit + text[at + 1 :])
    state = run("second")
    second = state.result()
    assert second.n_cached_fits == 0
    assert second.best_metrics == first.best_metrics
    warnings = [
        log.message
        for log in logs_of(state.state_details.flow_run_id)
        if log.message.startswith("fit cache ")
    ]
    assert warnings == [
        f"fit cache {Path(run_settings['cache_dir']) / 'fits'}: an entry does not match its "
        "checksum; it was dropped and is recomputed (further such entries in this folder are "
        "dropped without another warning)"
    ]
