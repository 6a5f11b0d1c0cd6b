"""The run's progress card in the Prefect UI: one per flow run and key, however many times the
fits are fanned out in it (a halving search's rungs, TPE's batches each call train_all), so a
search shows one `search-progress` card, not one identical card per call.

The card counts fits done of the fits asked for so far: a new rung adds its fits to the total
(so the bar steps back when a rung starts, then fills again)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.runtime import flow_run


@dataclass
class ProgressCard:
    artifact_id: UUID
    asked_before: int = 0  # fits of the earlier calls, all done when a new call starts
    asked: int = 0  # fits asked for so far, this call's included

    def update(self, done_in_this_call: int) -> None:
        done = self.asked_before + done_in_this_call
        update_progress_artifact(
            self.artifact_id,
            progress=100.0 * done / max(1, self.asked),
            description=f"{done} of {self.asked} fits asked for so far",
        )


_cards: dict[tuple[str, str], ProgressCard] = {}
_lock = threading.Lock()


def progress_card(key: str, n_jobs: int, done: int) -> ProgressCard:
    """This flow run's `key` card, created on the first call and grown by `n_jobs` fits on
    each later one; `done` of this call's fits are done already (the fit cache's)."""
    run_id = str(flow_run.get_id() or "")
    with _lock:
        card = _cards.get((run_id, key))
        if card is None:
            # Only this run's cards are kept: a long-lived process runs many flows.
            for other in [k for k in _cards if k[0] != run_id]:
                del _cards[other]
            artifact_id = create_progress_artifact(
                progress=100.0 * done / max(1, n_jobs), key=key, description=f"{n_jobs} fits"
            )
            card = _cards[(run_id, key)] = ProgressCard(artifact_id, 0, n_jobs)
            return card
        card.asked_before, card.asked = card.asked, card.asked + n_jobs
    card.update(done)
    return card
