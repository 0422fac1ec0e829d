"""Fixtures of the end-to-end tests (the shared ones are in tests/conftest.py)."""

import pytest

from tests.conftest import LiveGateway


@pytest.fixture
def fast_gateway(upstream, transactional_db, log_flush, settings):
    """A live gateway whose upstream timeouts are short enough to trip in a test."""
    settings.UPSTREAM_CONNECT_TIMEOUT = 0.5
    settings.UPSTREAM_READ_TIMEOUT = 1.5
    settings.STREAM_IDLE_TIMEOUT = 0.6
    live = LiveGateway()
    yield live
    log_flush()
    live.stop()
