import pytest
from prefect.settings import PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW, temporary_settings
from prefect.testing.utilities import prefect_test_harness


@pytest.fixture(scope="session")
def prefect_task_api():
    """A temporary Prefect API (SQLite), for the tests that run a task to exercise its retries
    (outside a flow, so their logs stay local)."""
    with (
        prefect_test_harness(server_startup_timeout=120),
        temporary_settings({PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore"}),
    ):
        yield
