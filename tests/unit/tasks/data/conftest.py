import pytest
from prefect.settings import PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW, temporary_settings


@pytest.fixture
def prefect_task_api(prefect_api):
    """The process's temporary Prefect API (tests/conftest.py), for the tests that run a task to
    exercise its retries (outside a flow, so their logs stay local)."""
    with temporary_settings({PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore"}):
        yield
