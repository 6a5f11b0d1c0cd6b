"""The Prefect UI (v2), in a real headless Chromium, shows a finished grid run: its name, tags,
result, task runs, artifacts, the cv_results table and the pictures; every run's score in the
runs list, its overview card first, the pictures chosen for a TPE and a halving search, the
dataset's leaderboard; the custom-run form offers typed choices and refuses a typo; a guarded
server's UI asks for the auth string first. Screenshots: the test's tmp folder and
/tmp/ui-shots/."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
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

from tests.conftest import PIMA_CSV
from tests.e2e.conftest import (
    AUTH_STRING,
    CV_DEPLOYMENT,
    GRID_DEPLOYMENT,
    REPO,
    combination_rows,
    table_rows,
)

pytestmark = pytest.mark.e2e
SCREENSHOTS = Path("/tmp/ui-shots")
WAIT_MS = 60_000
WIDE = {"width": 1600, "height": 1000}


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
CV_RUN_NAME = (
    "cv-pima-indians-diabetes-folds_3-optimizer_adam-init_glorot_uniform-epochs_1-batch_size_64"
)


def test_runs_list_tells_runs_apart_by_name_and_tags(stack, finished_runs, page, tmp_path):
    grid_run, _, _ = finished(stack, finished_runs, GRID_DEPLOYMENT)
    cv_run, _, _ = finished(stack, finished_runs, CV_DEPLOYMENT)
    # named for what they do, from prefect.yaml's config with the runs' overrides merged
    assert (grid_run.name, cv_run.name) == (GRID_RUN_NAME, CV_RUN_NAME)
    for run, kind in ((grid_run, "grid"), (cv_run, "cv")):
        assert {"foldflow", kind, "pima-indians-diabetes", "engine:auto"} <= set(run.tags)
        assert not [tag for tag in run.tags if tag.startswith("pid:")]
        assert run.labels["foldflow.pid"].isdigit()  # bookkeeping, out of the tags
    page.set_viewport_size(WIDE)
    page.goto(f"{stack.ui_url}/v2/runs")
    for name in (GRID_RUN_NAME, CV_RUN_NAME):
        page.get_by_text(name, exact=True).first.wait_for(timeout=WAIT_MS)
    keep(page, tmp_path, "runs-list.png")
    # The list fits what tags it can beside a run's name and folds the rest into "+N" (its
    # title names them): the long CV name leaves room for its first tag, the score, only.
    for tag in ("grid", "pima-indians-diabetes"):  # a visible one (the CV row folds its own)
        page.get_by_text(tag, exact=True).filter(visible=True).first.wait_for(timeout=WAIT_MS)
    for tag in ("cv", "engine:auto"):
        assert page.get_by_text(tag, exact=True).count() > 0


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
        "grid-overview",
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
    # The overview's card says the result. Cards come in id order, and ids are random UUIDs
    # (UI v2 sorts them ID_DESC; Prefect 3.9's server makes uuid4 ids): no order to assert.
    page.get_by_text(artifacts["grid-overview"].description, exact=True).first.wait_for(
        timeout=WAIT_MS
    )
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
    assert headers[:9] == [
        "combination",
        "param_batch_size",
        "param_epochs",
        "param_model__init",
        "param_model__optimizer",
        "mean_test_accuracy",
        "std_test_accuracy",
        "rank_test_accuracy",
        "within_noise",
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
    # scores with three significant digits; the best marked, the others said against it
    assert all(re.fullmatch(r"0\.\d{3}", row[5]) for row in shown), [row[5] for row in shown]
    marks = [row[headers.index("within_noise")] for row in shown]
    assert marks[0] == "best" and set(marks[1:]) <= {"≈ best", "worse"}
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


# A TPE and a halving search, run against the stack's server from a process of their own (as
# `foldflow search` would with PREFECT_API_URL set): the deployments are the CV and the grid.
SEARCHES = """
import json, sys
from flows.search import search_flow
from tasks.config import SearchConfig

out, csv = sys.argv[1], sys.argv[2]
run = {"source": csv, "cache_dir": out + "/cache", "output_dir": out + "/runs", "n_splits": 3}
tpe = SearchConfig(
    strategy="tpe", n_candidates=6, ask_batch=3, run=run, refit=False,
    space={"model__learning_rate": {"loguniform": [1e-3, 1e-1]},
           "model__hidden_layers": [[4], [8, 4]]},
    base_params={"batch_size": 64, "epochs": 2},
)
halving = SearchConfig(
    strategy="halving", n_candidates=4, min_epochs=1, max_epochs=4, factor=2, run=run,
    refit=False, space={"model__hidden_layers": [[4], [8, 4], [8], [2]]},
    base_params={"batch_size": 64},
)
ids = {c.strategy: str(search_flow(c, return_state=True).state_details.flow_run_id)
       for c in (tpe, halving)}
print("RUNS " + json.dumps(ids))
"""
TPE_RUN_NAME = "search-pima-indians-diabetes-tpe-candidates_6-folds_3"
HALVING_RUN_NAME = "search-pima-indians-diabetes-halving-candidates_4-folds_3-epochs_1-4-factor_2"
SCORE_TAG = re.compile(r"accuracy 0\.\d{3}±0\.\d{3}")


@pytest.fixture(scope="module")
def search_runs(stack, finished_runs, tmp_path_factory) -> dict:
    """strategy -> (flow run, artifacts by key, every artifact) of the two searches."""
    out = tmp_path_factory.mktemp("search-runs")
    done = subprocess.run(
        [sys.executable, "-c", SEARCHES, str(out), str(PIMA_CSV)],
        env={**os.environ, **stack.environment},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    found = re.search(r"^RUNS (.*)$", done.stdout, re.MULTILINE)
    assert done.returncode == 0 and found, done.stdout[-3000:] + done.stderr[-3000:]
    runs = {}
    with stack.client() as client:
        for strategy, run_id in json.loads(found.group(1)).items():
            flow_run = client.read_flow_run(run_id)
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )
            runs[strategy] = (flow_run, {a.key: a for a in artifacts}, artifacts)
    return runs


def test_runs_list_shows_every_runs_score_without_a_click(
    stack, finished_runs, search_runs, page, tmp_path
):
    grid_run, _, _ = finished(stack, finished_runs, GRID_DEPLOYMENT)
    cv_run, _, _ = finished(stack, finished_runs, CV_DEPLOYMENT)
    runs = [grid_run, cv_run, search_runs["tpe"][0], search_runs["halving"][0]]
    # names pair keys with values; a halving run names the candidates it had
    assert [run.name for run in runs[2:]] == [TPE_RUN_NAME, HALVING_RUN_NAME]
    tags = []
    for run in runs:
        [tag] = [tag for tag in run.tags if SCORE_TAG.fullmatch(tag)]
        best = run.state.message.removeprefix("Best accuracy ").split(" ")[0]
        assert tag.startswith(f"accuracy {best}±")  # the state's best, as a tag
        tags.append(tag)
    page.set_viewport_size(WIDE)  # the width the issue was checked at
    page.goto(f"{stack.ui_url}/v2/runs")
    for run in runs:
        page.get_by_text(run.name, exact=True).first.wait_for(timeout=WAIT_MS)
    keep(page, tmp_path, "runs-list-scores.png")
    for tag in tags:
        page.get_by_text(tag, exact=True).filter(visible=True).first.wait_for(timeout=WAIT_MS)


def wait_for_picture(page) -> dict:
    picture = page.locator("[data-testid=markdown-display] img").first
    picture.wait_for(timeout=WAIT_MS)
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0",
        arg=picture.element_handle(),
        timeout=WAIT_MS,
    )
    return picture.bounding_box()


def test_the_overview_card_holds_best_params_top_table_baseline_and_picture(
    stack, finished_runs, page, tmp_path
):
    flow_run, artifacts, _ = finished(stack, finished_runs, GRID_DEPLOYMENT)
    overview = artifacts["grid-overview"]
    assert overview.description.startswith("Result: Accuracy ")
    open_artifact(page, stack, overview, flow_run)
    assert wait_for_picture(page)["width"] > 200  # the ranked picture, loaded
    text = page.locator("[data-testid=markdown-display]").first.inner_text()
    assert re.search(r"Accuracy 0\.\d{3} ± 0\.\d{3} \(grid search\)", text)
    for words in ("best parameter", "optimizer", "Baseline (majority class)", "Top 4 of 4",
                  "within the noise", "Nadeau and Bengio"):  # fmt: skip
        assert words in text, words
    keep(page, tmp_path, "grid-overview.png")


@pytest.mark.parametrize(
    ("strategy", "keys", "absent"),
    [
        ("tpe", ["search-overview", "search-history", "search-parallel", "search-importance",
                 "search-scores"],
         ["search-heatmap", "search-rungs"]),
        ("halving", ["search-overview", "search-rungs", "search-ranked", "search-scores"],
         ["search-heatmap", "search-history"]),
    ],
    ids=["tpe", "halving"],
)  # fmt: skip
def test_each_strategy_gets_its_own_pictures(
    stack, search_runs, page, tmp_path, strategy, keys, absent
):
    flow_run, artifacts, every = search_runs[strategy]
    assert flow_run.state.type == StateType.COMPLETED, flow_run.state.message
    assert not set(absent) & set(artifacts), sorted(artifacts)
    assert [a.key for a in every].count("search-progress") == 1  # one card, not one per rung
    assert "search-strategy" in artifacts and "search-summary" in artifacts  # keys of their own
    for key in keys:
        assert "failed" not in artifacts[key].data.split("data:image")[0]
        open_artifact(page, stack, artifacts[key], flow_run)
        assert wait_for_picture(page)["width"] > 200
        keep(page, tmp_path, f"{strategy}-{key}.png")


def test_halving_marks_every_rung_against_its_own_best(stack, search_runs, page, tmp_path):
    """Issue 28: within-the-noise marks across rungs, not only the last rung's."""
    flow_run, artifacts, _ = search_runs["halving"]
    rows = table_rows(artifacts["search-results"])
    rungs = [row for row in rows if row.get("iter") not in (None, "")]  # the baseline row: none
    last = max(int(row["iter"]) for row in rungs)
    earlier = [row for row in rungs if int(row["iter"]) < last]
    assert earlier and {row["within_noise"] for row in earlier} <= {
        "rung best", "≈ rung best", "below rung best",
    }  # fmt: skip
    for rung in {int(row["iter"]) for row in earlier}:  # each rung has its own best
        assert "rung best" in [row["within_noise"] for row in earlier if int(row["iter"]) == rung]
    final = {row["within_noise"] for row in rungs if int(row["iter"]) == last}
    assert "best" in final and final <= {"best", "≈ best", "worse"}
    page.set_viewport_size(WIDE)
    open_artifact(page, stack, artifacts["search-results"], flow_run)
    table = page.locator("[data-testid=table-display] table")
    table.wait_for(timeout=WAIT_MS)
    assert "rung best" in table.inner_text()
    # the marks sit right of the refit metric's rank: scrolled into view for the screenshot
    table.get_by_text("rung best", exact=True).first.scroll_into_view_if_needed()
    keep(page, tmp_path, "halving-results-rung-marks.png")


def test_sqlite_server_answers_heartbeats_beside_writes(stack, search_runs):
    """Issue 28: worker heartbeats met "database is locked" on the stack's SQLite (Prefect 3.9
    answers 503 for it). Heartbeats from four threads beside flow-run writes from two, 8 s."""
    import threading

    import httpx

    from flows.runtime.stack import WORK_POOL

    headers = {}
    if stack.auth_string:
        headers["Authorization"] = "Basic " + base64.b64encode(stack.auth_string.encode()).decode()
    api, pool = stack.api_url, WORK_POOL
    with httpx.Client(base_url=api, headers=headers, timeout=120) as client:
        flow_id = client.post("/flows/", json={"name": "heartbeat-load"}).json()["id"]
    statuses: list[int] = []
    made_runs: list[str] = []
    end = time.monotonic() + 8

    def heartbeats(n: int) -> None:
        with httpx.Client(base_url=api, headers=headers, timeout=120) as client:
            while time.monotonic() < end:
                body = {"name": f"load-{n}", "heartbeat_interval_seconds": 30}
                statuses.append(
                    client.post(f"/work_pools/{pool}/workers/heartbeat", json=body).status_code
                )

    def writes() -> None:
        with httpx.Client(base_url=api, headers=headers, timeout=120) as client:
            while time.monotonic() < end:
                made = client.post("/flow_runs/", json={"flow_id": flow_id, "name": "load"})
                statuses.append(made.status_code)
                if made.status_code < 300:
                    state = {"state": {"type": "RUNNING"}}
                    run = made.json()["id"]
                    made_runs.append(run)
                    statuses.append(
                        client.post(f"/flow_runs/{run}/set_state", json=state).status_code
                    )

    threads = [threading.Thread(target=heartbeats, args=(n,)) for n in range(4)]
    threads += [threading.Thread(target=writes) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with httpx.Client(base_url=api, headers=headers, timeout=120) as client:
        for run in made_runs:  # the load's runs leave the runs list as they came
            client.delete(f"/flow_runs/{run}")
    assert len(statuses) > 50 and not [s for s in statuses if s >= 500], sorted(set(statuses))


def test_the_leaderboard_lists_the_runs_on_the_dataset(stack, search_runs, page, tmp_path):
    flow_run, artifacts, _ = search_runs["halving"]
    board = artifacts["leaderboard-pima-indians-diabetes"]
    rows = table_rows(board)
    assert [row["strategy"] for row in rows[:2]] == ["halving", "tpe"]  # newest first
    assert {"date", "kind", "model function", "best ± std", "best params", "fits", "run"} <= set(
        rows[0]
    )
    assert str(flow_run.id) in rows[0]["run"]
    open_artifact(page, stack, board, flow_run)
    table = page.locator("[data-testid=table-display] table")
    table.wait_for(timeout=WAIT_MS)
    assert "halving" in table.inner_text()
    keep(page, tmp_path, "leaderboard.png")


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
    typed = '{"model": "mlp", "params": {"epochs": 1}, "run": {"engine": "fastt"}}'
    deadline = time.monotonic() + WAIT_MS / 1000
    # Under load the editor may still be filling in the form's JSON when typed into (seen:
    # the defaults were submitted and a run created): type until it holds only our text.
    while editor.inner_text().strip() != typed:
        assert time.monotonic() < deadline, editor.inner_text()
        editor.click()
        page.keyboard.press("Control+a")
        page.keyboard.press("Delete")
        page.keyboard.insert_text(typed)
        page.wait_for_timeout(500)
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
