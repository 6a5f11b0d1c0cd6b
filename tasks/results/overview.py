"""The run's result where a user looks first: a tag on the flow run (the runs list shows tags,
not state messages; the score goes first, before the UI folds tags into "+2"), a
`<kind>-overview` artifact whose card says the result (the run page orders cards by id, and
ids are random UUIDs: no creation order puts a card first), and a per-dataset leaderboard that
every run updates.

Pure functions to text and rows, and thin Prefect calls (a failure to publish is logged, never
fails the run: the files and the other artifacts stand)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task
from prefect.artifacts import Artifact, create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run

from tasks.metrics import METRICS
from tasks.numbers import param_text, score_text
from tasks.results.aggregate import SearchSummary, baseline_lines, best_row, row_noise_mark
from tasks.results.noise import ALPHA
from tasks.results.plots import _logger, _short, best_first, picture_markdown, varying_keys

TOP = 10  # rows of the overview's table
LEADERBOARD_ROWS = 200  # newest first; older runs drop off the artifact (their own stay)
NOISE_NOTE = (
    f"`≈ best`: the corrected resampled t-test (Nadeau and Bengio) over the fold scores cannot "
    f"tell this combination from the best (two-sided p > {ALPHA}); another split of the data "
    "could rank them the other way. `worse`: the best is better beyond that noise. With "
    "`--repeats`, the same test over every repeat's folds (Bouckaert and Frank). Halving's "
    "earlier rungs are marked against their own rung's best: `≈ rung best` was kept or cut "
    "inside the noise."
)


def metric_name(metric: str) -> str:
    return METRICS[metric].label if metric in METRICS else metric


def result_tag(summary: SearchSummary) -> str:
    """`accuracy 0.750±0.017`: the best score, its fold std and the metric, as a tag the
    runs list shows without a click."""
    return f"{summary.refit_metric} {summary.best_score:.3f}±{summary.best_std:.3f}"


def params_text(params: dict[str, Any]) -> str:
    """`batch_size=10, learning_rate=0.001757`: keys with their values, floats rounded."""
    return ", ".join(f"{_short(k)}={param_text(v)}" for k, v in params.items()) or "defaults"


def top_table_markdown(table: pd.DataFrame, refit_metric: str, top: int = TOP) -> str:
    """The best `top` rows as a markdown table: rank, combination, the keys that vary, mean ±
    fold std of the refit metric, and the within-the-noise mark."""
    ordered = best_first(table).head(top)
    params = [json.loads(text) for text in table["params"]]
    keys = varying_keys(params) or sorted({k for p in params for k in p})
    best = best_row(table)
    header = ["rank", "combination", *(_short(k) for k in keys), f"{refit_metric} (± std)"]
    header += ["within the noise"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for index, row in ordered.iterrows():
        p = json.loads(row["params"])
        cells = [str(int(row["rank_test_score"])), str(int(row["combination"]))]
        cells += [param_text(p.get(k)) for k in keys]
        cells.append(f"{score_text(row['mean_test_score'])} ± {score_text(row['std_test_score'])}")
        cells.append(row_noise_mark(table, index, best))
        lines.append("| " + " | ".join(cells) + " |")
    if len(table) > top:
        lines.append(f"\n{len(table) - top} more in the `-results` table and cv_results.csv.")
    return "\n".join(lines) + "\n"


def overview_markdown(
    summary: SearchSummary,
    table: pd.DataFrame,
    kind: str,
    strategy: str,
    picture: bytes | None = None,
) -> str:
    """The overview card: headline, best params, baseline, top-10 table, the ranked picture."""
    what = f"{strategy} search" if kind == "search" else {"grid": "grid search", "cv": "CV"}[kind]
    lines = [
        f"## {metric_name(summary.refit_metric)} {summary.best_score:.3f} ± "
        f"{summary.best_std:.3f} ({what})",
        "",
        f"**{summary.headline}**",
        "",
        "| best parameter | value |",
        "| --- | --- |",
        *(f"| {_short(k)} | {param_text(v)} |" for k, v in summary.best_params.items()),
        "",
        *(f"{line}." for line in baseline_lines(summary)),
        "",
    ]
    if len(table) > 1:
        lines += [f"### Top {min(TOP, len(table))} of {len(table)}", ""]
        lines += [top_table_markdown(table, summary.refit_metric), NOISE_NOTE, ""]
    lines.append(f"Files: `{summary.output_dir}`")
    markdown = "\n".join(lines) + "\n"
    if picture is not None:
        title = (
            "Fold scores"
            if len(table) == 1
            else "Rung by rung"
            if strategy == "halving"
            else "Every combination, ranked"
        )
        markdown += "\n" + picture_markdown(picture, title)
    return markdown


def run_link(flow_run_id: str) -> str:
    """The run's page in the UI when the API names one, else its id."""
    from prefect.settings import PREFECT_UI_URL

    base = PREFECT_UI_URL.value()
    return f"{base}/runs/flow-run/{flow_run_id}" if base else f"flow run {flow_run_id}"


def leaderboard_key(dataset: str) -> str:
    """`leaderboard-pima-indians-diabetes` (artifact keys: lower-case letters, digits, '-')."""
    slug = re.sub(r"[^a-z0-9]+", "-", dataset.lower()).strip("-") or "dataset"
    return f"leaderboard-{slug}"[:100]


def leaderboard_row(
    summary: SearchSummary, kind: str, strategy: str, model: str, when: datetime, link: str
) -> dict[str, Any]:
    return {
        "date": when.strftime("%Y-%m-%d %H:%M UTC"),
        "kind": kind,
        "strategy": strategy,
        "model function": model,
        "metric": summary.refit_metric,
        "best ± std": f"{score_text(summary.best_score)} ± {score_text(summary.best_std)}",
        "best params": params_text(summary.best_params),
        "fits": summary.n_fits,
        "run": link,
    }


def merged_leaderboard(
    earlier: list[dict[str, Any]], row: dict[str, Any], limit: int = LEADERBOARD_ROWS
) -> list[dict[str, Any]]:
    """This run's row first, then the earlier rows, newest first, at most `limit`."""
    return [row, *earlier][:limit]


def _rows_of(artifact) -> list[dict[str, Any]]:
    data = artifact.data
    rows = json.loads(data) if isinstance(data, str) else data
    return [row for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []


def update_leaderboard(dataset: str, row: dict[str, Any]) -> str:
    """Read the dataset's leaderboard, put this run's row on top, publish it again (a new
    version of the same key, linked to this run). Two runs ending in the same second may
    each miss the other's row; their own cards still hold it."""
    key = leaderboard_key(dataset)
    latest = Artifact.get(key)
    earlier = _rows_of(latest) if latest is not None else []
    create_table_artifact(
        key=key,
        table=merged_leaderboard(earlier, row),
        description=f"Every foldflow run on {dataset}, newest first",
    )
    return key


def overview_picture(run_dir: Path, strategy: str) -> bytes | None:
    """The picture the overview shows, from the run folder (tasks.results.plots wrote it):
    halving's rungs, else every combination ranked, else a CV's fold scores."""
    names = ["rungs.png"] if strategy == "halving" else []
    for name in [*names, "ranked.png", "fold-scores.png"]:
        if (run_dir / name).exists():
            return (run_dir / name).read_bytes()
    return None


@task(name="publish_overview")
def publish_overview(
    summary: SearchSummary,
    kind: str,
    strategy: str,
    model: str,
    dataset: str,
) -> str:
    """At the end of a run: put it on the dataset's leaderboard, make its overview card (from
    the run folder's cv_results and picture) and tag the flow run with its score. Returns the
    tag."""
    tag = result_tag(summary)
    model = model.rpartition(":")[2]
    description = f"Result: {metric_name(summary.refit_metric)} {tag.partition(' ')[2]}"

    def fill() -> None:
        run_dir = Path(summary.output_dir)
        table = pd.read_parquet(run_dir / "cv_results.parquet")
        picture = overview_picture(run_dir, strategy)
        markdown = overview_markdown(summary, table, kind, strategy, picture)
        create_markdown_artifact(key=f"{kind}-overview", markdown=markdown, description=description)

    steps = [
        ("leaderboard", lambda: _leaderboard(summary, kind, strategy, model, dataset)),
        ("overview", fill),
        ("tag", lambda: _add_tag(tag)),
    ]
    for name, step in steps:
        try:
            step()
        except Exception as error:  # publishing must never fail the run
            _logger().warning("no %s: %s: %s", name, type(error).__name__, error)
    return tag


def _add_tag(tag: str) -> None:
    run_id = flow_run.get_id()
    if not run_id:
        return
    with get_client(sync_client=True) as client:
        tags = client.read_flow_run(run_id).tags
        kept = [t for t in tags if t != tag]
        client.update_flow_run(run_id, tags=[tag, *kept])  # first: lists fold the last ones


def _leaderboard(summary: SearchSummary, kind: str, strategy: str, model: str, dataset: str):
    run_id = str(flow_run.get_id() or "")
    link = run_link(run_id) if run_id else "-"
    row = leaderboard_row(summary, kind, strategy, model, datetime.now(UTC), link)
    update_leaderboard(dataset, row)
