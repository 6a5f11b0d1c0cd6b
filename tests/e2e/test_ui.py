"""The Prefect UI (v2), in a real headless Chromium, shows a finished grid run: its name, tags,
result, task runs, artifacts, the cv_results table and the pictures; the custom-run form offers
typed choices and refuses a typo; a guarded server's UI asks for the auth string first.
Screenshots: the test's tmp folder and /tmp/foldflow-ui-screenshots/."""

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
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)
from prefect.client.schemas.objects import StateType

from tests.e2e.conftest import (
    AUTH_STRING,
    CV_DEPLOYMENT,
    GRID_DEPLOYMENT,
    combination_rows,
)

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


GRID_RUN_NAME = "grid-pima-indians-diabetes-4x3-optimizer-epochs"
CV_RUN_NAME = "cv-pima-indians-diabetes-3folds-adam-glorot_uniform-e1-b64"


def test_runs_list_tells_runs_apart_by_name_and_tags(stack, finished_runs, page, tmp_path):
    grid_run, _, _ = finished(stack, finished_runs, GRID_DEPLOYMENT)
    cv_run, _, _ = finished(stack, finished_runs, CV_DEPLOYMENT)
    # named for what they do, from prefect.yaml's config with the runs' overrides merged
    assert (grid_run.name, cv_run.name) == (GRID_RUN_NAME, CV_RUN_NAME)
    for run, kind in ((grid_run, "grid"), (cv_run, "cv")):
        assert {"foldflow", kind, "pima-indians-diabetes", "engine:auto"} <= set(run.tags)
        assert not [tag for tag in run.tags if tag.startswith("pid:")]
        assert run.labels["foldflow.pid"].isdigit()  # bookkeeping, out of the tags
    page.goto(f"{stack.ui_url}/v2/runs")
    for name in (GRID_RUN_NAME, CV_RUN_NAME):
        page.get_by_text(name, exact=True).first.wait_for(timeout=WAIT_MS)
    for tag in ("grid", "cv", "pima-indians-diabetes", "engine:auto"):
        page.get_by_text(tag, exact=True).first.wait_for(timeout=WAIT_MS)
    keep(page, tmp_path, "runs-list.png")


def test_flow_run_page_shows_the_task_runs_and_artifacts(stack, finished_runs, page, tmp_path):
    flow_run, artifacts, task_runs = finished(stack, finished_runs, GRID_DEPLOYMENT)
    fits = sorted(run.name for run in task_runs if run.name.startswith("train_fold["))
    assert fits, [run.name for run in task_runs]
    assert flow_run.state.message.startswith("Best accuracy ")
    page.goto(f"{stack.ui_url}/v2/runs/flow-run/{flow_run.id}")
    page.get_by_text(flow_run.name, exact=True).first.wait_for(timeout=WAIT_MS)
    page.get_by_text(f"{len(task_runs)} Task runs", exact=True).first.wait_for(timeout=WAIT_MS)
    wait_until_drawn(page.locator("canvas").first)
    keep(page, tmp_path, "grid-flow-run.png")  # the run graph, task runs named on it

    page.get_by_role("tab", name="Task Runs").click()
    for name in fits:  # readable names, e.g. train_fold[2 fits | combos 0,2 | b64 | folds 0]
        page.get_by_text(name, exact=True).first.wait_for(timeout=WAIT_MS)
    keep(page, tmp_path, "grid-task-runs.png")

    page.get_by_role("tab", name="Artifacts").click()
    keys = (
        "grid-best",
        "grid-results",
        "grid-summary",
        "grid-heatmap",
        "grid-ranked",
        "grid-learning-curves",
    )
    for key in (*keys, "grid-progress"):
        assert key in artifacts
        page.get_by_text(key, exact=True).first.wait_for(timeout=WAIT_MS)
    assert keep(page, tmp_path, "grid-artifacts.png").stat().st_size > 10_000


def test_best_result_artifact_states_score_params_and_files(stack, finished_runs, page, tmp_path):
    flow_run, artifacts, _ = finished(stack, finished_runs, GRID_DEPLOYMENT)
    best = artifacts["grid-best"]
    assert best.description == flow_run.state.message  # the headline, as on the run page
    open_artifact(page, stack, best, flow_run)
    markdown = page.locator("[data-testid=markdown-display]")
    markdown.wait_for(timeout=WAIT_MS)
    text = markdown.inner_text()
    assert re.search(r"Best accuracy 0\.\d{3} \(0\.\d{3}\) with batch_size=64, epochs=[12], ", text)
    assert "12 fits" in text  # 4 combinations x 3 folds
    for name in ("cv_results.csv", "cv_results.parquet", "summary.txt"):
        assert name in text
    keep(page, tmp_path, "grid-best.png")


def test_cv_results_table_leads_with_params_and_is_sorted_best_first(
    stack, finished_runs, page, tmp_path
):
    flow_run, artifacts, _ = finished(stack, finished_runs, GRID_DEPLOYMENT)
    rows = combination_rows(artifacts["grid-results"])
    open_artifact(page, stack, artifacts["grid-results"], flow_run)
    table = page.locator("[data-testid=table-display] table")
    table.wait_for(timeout=WAIT_MS)
    headers = [text.strip() for text in table.locator("th").all_inner_texts()]
    assert headers[:8] == [
        "combination",
        "param_batch_size",
        "param_epochs",
        "param_model__init",
        "param_model__optimizer",
        "mean_test_accuracy",
        "std_test_accuracy",
        "rank_test_accuracy",
    ]
    assert len(headers) == len(set(headers)) and "params" not in headers
    shown = [
        [cell.strip() for cell in row.locator("td").all_inner_texts()]
        for row in table.locator("tbody tr").all()
    ]
    baseline = shown.pop()  # the last row: what a model that learned nothing scores
    assert baseline[0].startswith("baseline")
    assert baseline[headers.index("rank_test_accuracy")] == ""
    ranks = [int(row[headers.index("rank_test_accuracy")]) for row in shown]
    assert ranks == sorted(ranks) and ranks[0] == 1  # best first
    assert [row[0] for row in shown] == [str(row["combination"]) for row in rows]
    assert sorted(row[4] for row in shown) == ["adam", "adam", "rmsprop", "rmsprop"]
    keep(page, tmp_path, "grid-results.png")


@pytest.mark.parametrize(
    ("deployment", "key"),
    [
        (GRID_DEPLOYMENT, "grid-heatmap"),
        (GRID_DEPLOYMENT, "grid-ranked"),
        (GRID_DEPLOYMENT, "grid-learning-curves"),
        (CV_DEPLOYMENT, "cv-fold-scores"),
    ],
    ids=["grid-heatmap", "grid-ranked", "grid-learning-curves", "cv-fold-scores"],
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
    assert sent.width > 0 and sent.height > 0
    assert picture.bounding_box()["width"] > 200  # and shows it at a readable size
    keep(page, tmp_path, f"{key}.png")


def test_custom_run_form_offers_choices_and_refuses_a_typo(stack, page, tmp_path):
    with stack.client() as client:
        deployment = client.read_deployment_by_name(CV_DEPLOYMENT)
    runs_before = flow_runs_of(stack, deployment.id)
    page.goto(f"{stack.ui_url}/v2/deployments/deployment/{deployment.id}/run")
    engine = page.get_by_text("Engine (Optional)", exact=True)
    engine.wait_for(timeout=WAIT_MS)
    control = page.locator(f"[id='{engine.get_attribute('for')}']")
    control.click()  # a drop-down of the Literal's values, not a text field
    options = page.get_by_role("option")
    options.first.wait_for(timeout=WAIT_MS)
    assert [text.strip() for text in options.all_inner_texts()] == ["auto", "fast", "reference"]
    keep(page, tmp_path, "form-engine-choices.png")
    page.keyboard.press("Escape")
    # the config as JSON, as a user may paste it, with a misspelt engine
    page.locator("button[aria-haspopup=menu]").first.click()
    page.get_by_role("menuitem", name="Use JSON Input").click()
    editor = page.locator(".cm-content").first
    editor.click()
    page.keyboard.press("Control+a")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(
        '{"model": "mlp", "params": {"epochs": 1}, "run": {"engine": "fastt"}}'
    )
    page.get_by_role("button", name="Submit").click()
    refusal = (
        "Validation failed for field 'config.run.engine'. Failure reason: 'fastt' is not one of"
    )
    page.get_by_text(refusal).first.wait_for(timeout=WAIT_MS)
    keep(page, tmp_path, "form-typo-refused.png")
    assert flow_runs_of(stack, deployment.id) == runs_before  # refused before any run exists


def flow_runs_of(stack, deployment_id) -> set:
    with stack.client() as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id])
            )
        )
    return {run.id for run in runs if not run.auto_scheduled}  # the cron's own runs aside


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
