"""One Prefect test harness (temporary server and database) for the whole flow tier."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def prefect_harness():
    os.environ.pop("PREFECT_API_URL", None)
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    # Flow heartbeats off: tests run flows in-process, nothing needs crash detection.
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        with prefect_test_harness(server_startup_timeout=60):
            assert get_current_settings().flows.heartbeat_frequency is None
            yield
