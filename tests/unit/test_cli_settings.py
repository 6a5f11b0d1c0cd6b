"""The settings `foldflow cv|grid` run flows with on the embedded API, and on a real server."""

from __future__ import annotations

from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

from flows.runtime.runners import embedded_run_settings


def test_embedded_runs_send_no_heartbeats_and_the_default_comes_back_after():
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        default = get_current_settings().flows.heartbeat_frequency
        with embedded_run_settings():
            assert get_current_settings().flows.heartbeat_frequency is None
        assert get_current_settings().flows.heartbeat_frequency == default
    assert default is not None  # Prefect's default sends them


def test_runs_on_a_configured_server_keep_their_heartbeats():
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        configured = get_current_settings().flows.heartbeat_frequency
        with embedded_run_settings():
            assert get_current_settings().flows.heartbeat_frequency == configured
    assert configured is not None
