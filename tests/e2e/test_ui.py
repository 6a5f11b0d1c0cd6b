"""The Prefect UI, in a real headless Chromium, shows a grid run's task runs, table and picture."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.e2e.conftest import tiny_grid_parameters

pytestmark = pytest.mark.e2e
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path("/tmp/foldflow-ui-screenshots")


@pytest.fixture(scope="module")
def completed_grid_run(stack, tmp_path_factory):
    with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
        flow_run = run_deployment(
            name="foldflow-grid-search/grid-weekly",
            parameters=tiny_grid_parameters(tmp_path_factory.mktemp("ui-run")),
            timeout=300,
            poll_interval=1,
        )
    assert flow_run.state.type == StateType.COMPLETED, flow_run.state.message
    with stack.client() as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
        )
    return flow_run, {artifact.key: artifact for artifact in artifacts}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.route("**/*amplitude.com/**", lambda route: route.abort())
    page = context.new_page()
    yield page
    context.close()


def keep(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SCREENSHOTS / name)
    return path


def test_flow_run_page_lists_the_mapped_task_runs(stack, completed_grid_run, page, tmp_path):
    flow_run, _ = completed_grid_run
    page.goto(f"{stack.ui_url}/v2/runs/flow-run/{flow_run.id}")
    page.get_by_text(flow_run.name).first.wait_for(timeout=60_000)
    page.get_by_text("train_fold[", exact=False).first.wait_for(timeout=60_000)
    assert page.get_by_text("rmsprop·glorot_uniform·e2·b64", exact=False).count() >= 1
    assert keep(page, tmp_path, "flow-run.png").stat().st_size > 10_000


def test_cv_results_table_is_in_the_dom(stack, completed_grid_run, page, tmp_path):
    _, artifacts = completed_grid_run
    page.goto(f"{stack.ui_url}/v2/artifacts/artifact/{artifacts['grid-cv-results'].id}")
    table = page.locator("[data-testid=table-display] table")
    table.wait_for(timeout=60_000)
    text = table.inner_text()
    assert "mean_test_score" in text and "model__optimizer" in text
    assert text.count("rmsprop") >= 2
    keep(page, tmp_path, "cv-results-table.png")


def test_grid_heatmap_picture_loads(stack, completed_grid_run, page, tmp_path):
    _, artifacts = completed_grid_run
    page.goto(f"{stack.ui_url}/v2/artifacts/artifact/{artifacts['grid-grid-heatmap'].id}")
    picture = page.locator("[data-testid=markdown-display] img")
    picture.wait_for(timeout=60_000)
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=picture.element_handle()
    )
    assert picture.evaluate("img => img.naturalWidth") > 300
    keep(page, tmp_path, "grid-heatmap.png")
