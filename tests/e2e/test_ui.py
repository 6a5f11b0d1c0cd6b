"""The Prefect UI (v2), in a real headless Chromium, shows a finished grid run: its task runs,
its artifacts, the cv_results table and the pictures; a guarded server's UI asks for the auth
string first. Screenshots: the test's tmp folder and /tmp/foldflow-ui-screenshots/."""

from __future__ import annotations

import base64
import io
import re
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)
from prefect.client.schemas.objects import StateType

from tests.e2e.conftest import AUTH_STRING, CV_DEPLOYMENT, GRID_DEPLOYMENT, table_rows

pytestmark = pytest.mark.e2e
SCREENSHOTS = Path("/tmp/foldflow-ui-screenshots")
WAIT_MS = 60_000


def finished(stack, finished_runs, deployment: str):
    flow_run, _ = finished_runs[deployment]
    assert flow_run.state.type == StateType.COMPLETED, flow_run.state.message
    with stack.client() as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
        )
        task_runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run.id]))
        )
    return flow_run, {artifact.key: artifact for artifact in artifacts}, task_runs


def wait_until_drawn(element, timeout_s: float = 60) -> None:
    """Poll a canvas (the run graph) until it shows more than a blank or skeleton fill."""
    deadline = time.monotonic() + timeout_s
    while len(set(Image.open(io.BytesIO(element.screenshot())).convert("RGB").getdata())) < 50:
        assert time.monotonic() < deadline, "the run graph was never drawn"
        time.sleep(0.25)


def open_artifact(page, stack, artifact, flow_run) -> None:
    """An artifact's page, fully loaded: its description and its flow run's name are shown."""
    page.goto(f"{stack.ui_url}/v2/artifacts/artifact/{artifact.id}")
    page.get_by_text(artifact.description, exact=True).first.wait_for(timeout=WAIT_MS)
    page.get_by_text(flow_run.name, exact=True).first.wait_for(timeout=WAIT_MS)


def keep(page, tmp_path: Path, name: str) -> Path:
    """A full-page screenshot in the test's folder, copied to SCREENSHOTS for people to look at."""
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SCREENSHOTS / name)
    return path


def test_flow_run_page_shows_the_task_runs_and_artifacts(stack, finished_runs, page, tmp_path):
    flow_run, artifacts, task_runs = finished(stack, finished_runs, GRID_DEPLOYMENT)
    fits = sorted(run.name for run in task_runs if run.name.startswith("train_fold["))
    assert fits, [run.name for run in task_runs]
    page.goto(f"{stack.ui_url}/v2/runs/flow-run/{flow_run.id}")
    page.get_by_text(flow_run.name, exact=True).first.wait_for(timeout=WAIT_MS)
    page.get_by_text(f"{len(task_runs)} Task runs", exact=True).first.wait_for(timeout=WAIT_MS)
    wait_until_drawn(page.locator("canvas").first)
    keep(page, tmp_path, "grid-flow-run.png")  # the run graph, task runs named on it

    page.get_by_role("tab", name="Task Runs").click()
    for name in fits:  # readable names, e.g. train_fold[6 fits | combos 0,2 | b64 | folds 0-2]
        page.get_by_text(name, exact=True).first.wait_for(timeout=WAIT_MS)
    keep(page, tmp_path, "grid-task-runs.png")

    page.get_by_role("tab", name="Artifacts").click()
    for key in ("grid-cv-results", "grid-summary", "grid-grid-heatmap", "fits-progress"):
        assert key in artifacts
        page.get_by_text(key, exact=True).first.wait_for(timeout=WAIT_MS)
    assert keep(page, tmp_path, "grid-artifacts.png").stat().st_size > 10_000


def test_cv_results_table_is_in_the_dom(stack, finished_runs, page, tmp_path):
    flow_run, artifacts, _ = finished(stack, finished_runs, GRID_DEPLOYMENT)
    rows = table_rows(artifacts["grid-cv-results"])
    open_artifact(page, stack, artifacts["grid-cv-results"], flow_run)
    table = page.locator("[data-testid=table-display] table")
    table.wait_for(timeout=WAIT_MS)
    text = table.inner_text()
    for column in ("rank_test_score", "mean_test_score", "std_test_score", "params"):
        assert column in text
    for row in rows:  # every combination's score, as the API holds it, is on the page
        assert str(row["mean_test_score"]) in text
    assert text.count("rmsprop") == text.count("adam") == 2
    keep(page, tmp_path, "grid-cv-results.png")


@pytest.mark.parametrize(
    ("deployment", "key"),
    [(GRID_DEPLOYMENT, "grid-grid-heatmap"), (CV_DEPLOYMENT, "cv-fold-scores")],
    ids=["grid-heatmap", "cv-fold-scores"],
)
def test_picture_loads_on_its_artifact_page(stack, finished_runs, page, tmp_path, deployment, key):
    flow_run, artifacts, _ = finished(stack, finished_runs, deployment)
    encoded = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", artifacts[key].data).group(1)
    sent = Image.open(io.BytesIO(base64.b64decode(encoded)))
    open_artifact(page, stack, artifacts[key], flow_run)
    picture = page.locator("[data-testid=markdown-display] img")
    picture.wait_for(timeout=WAIT_MS)
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0",
        arg=picture.element_handle(),
        timeout=WAIT_MS,
    )
    size = picture.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert size == [sent.width, sent.height]  # the browser decoded the very PNG we published
    assert picture.bounding_box()["width"] > 200  # and shows it at a readable size
    keep(page, tmp_path, f"{key}.png")


def test_ui_of_a_guarded_server_asks_for_the_auth_string(guarded_stack, page, tmp_path):
    page.goto(f"{guarded_stack.ui_url}/v2/deployments")
    password = page.locator("input[type=password]")
    password.wait_for(timeout=WAIT_MS)
    assert "/login" in page.url
    keep(page, tmp_path, "guarded-login.png")
    password.fill(AUTH_STRING)  # the whole 'user:password' string
    password.press("Enter")
    page.get_by_text("cv-nightly", exact=True).first.wait_for(timeout=WAIT_MS)
    page.get_by_text("grid-weekly", exact=True).first.wait_for(timeout=WAIT_MS)
    keep(page, tmp_path, "guarded-deployments.png")
