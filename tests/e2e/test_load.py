"""A grid of more than 500 tiny fits goes through Prefect with bounded memory.

A load test: it runs beside the unit and flow tests with the other end-to-end tests (make
test), on the process's temporary Prefect API (tests/conftest.py)."""

import psutil
import pytest

from flows.grid_search import grid_search_flow
from tasks.config import GridSearchConfig, GridSpec, RunSettings
from tests.conftest import PIMA_CSV

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def on_the_temporary_api(prefect_api):
    yield


@pytest.fixture
def run_settings(tmp_path):
    return {
        "source": str(PIMA_CSV),
        "cache_dir": str(tmp_path / "cache"),
        "output_dir": str(tmp_path / "runs"),
    }


LOAD_GRID = {
    "model__hidden_layers": [[4], [8], [12, 8], [16, 8]],
    "model__optimizer": ["rmsprop", "adam"],
    "model__init": ["glorot_uniform", "normal", "uniform"],
    "epochs": [1],
    "batch_size": [8, 16, 32, 64, 128, 256],
}


def run_load(settings, run_name):
    config = GridSearchConfig(
        grid=GridSpec.from_mapping(LOAD_GRID),
        run=RunSettings(**settings, n_splits=4, run_name=run_name, fresh=True),
        refit=False,
    )
    return grid_search_flow(config)


def test_576_fits_complete_with_bounded_memory(run_settings):
    process = psutil.Process()
    first = run_load(run_settings, "load-1")
    after_first = process.memory_info().rss
    second = run_load(run_settings, "load-2")
    grown_mib = (process.memory_info().rss - after_first) / 2**20
    assert first.n_fits == second.n_fits == 576
    assert first.n_combinations == 144 and first.n_failed_fits == 0
    assert first.lines == second.lines
    # Allocator noise is 10-60 MiB a run here; a per-fit leak (a Keras fit leaks ~5 MB) would
    # show as gigabytes over these 576 fits.
    assert grown_mib < 200, f"memory grew by {grown_mib:.0f} MiB over one more run of 576 fits"
