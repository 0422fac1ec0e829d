"""Fixtures of the end-to-end tests (the shared ones are in tests/conftest.py)."""

import socket
import threading

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


@pytest.fixture
def hung_redis():
    """A Redis that accepts connections and never answers (a stopped process, a full network buffer)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    server.close()
