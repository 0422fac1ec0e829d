"""Shared fixtures: temporary payload store, the log writer, a mock upstream, a live gateway."""

import asyncio
import socket
import threading
import time

import pytest
import uvicorn
from django.conf import settings

from bench.mock_upstream import MockUpstreamThread
from logs.writer import writer_get, writer_stop


@pytest.fixture(autouse=True)
def payload_dir(tmp_path, settings):
    """Every test gets its own payload store and journal folder."""
    settings.FILE_STORAGE_PATH = tmp_path / "files"
    settings.FILE_STORAGE_PATH.mkdir()
    settings.STORAGES = {**settings.STORAGES, "payloads": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(settings.FILE_STORAGE_PATH), "base_url": None}}}
    settings.JOURNAL_DIR = tmp_path / "journal"
    yield settings.FILE_STORAGE_PATH
    writer_stop(timeout=10)


@pytest.fixture
def anyio_backend():
    """Async tests run on asyncio (the loop uvicorn uses)."""
    return "asyncio"


@pytest.fixture
def log_flush():
    """Wait until every submitted log record is in the database."""
    def flush() -> None:
        assert writer_get().flush(timeout=10), "log writer did not drain"
    return flush


@pytest.fixture(scope="session")
def mock_upstream():
    """A real mock OpenAI upstream on 127.0.0.1 for the whole session."""
    server = MockUpstreamThread()
    yield server
    server.stop()


@pytest.fixture
def upstream(mock_upstream, settings):
    """The mock upstream, configured as every provider's upstream, with its record cleared."""
    mock_upstream.mock.received.clear()
    for name in ("OPENAI_UPSTREAM_URL", "ANTHROPIC_UPSTREAM_URL", "GEMINI_UPSTREAM_URL", "REPLICATE_UPSTREAM_URL"):
        setattr(settings, name, mock_upstream.url)
    return mock_upstream.mock


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveGateway:
    """The real ASGI app under uvicorn in a thread of this process (same settings, same DB)."""

    def __init__(self) -> None:
        from gateway_project.asgi import application

        self.port = _free_port()
        config = uvicorn.Config(application, host="127.0.0.1", port=self.port, lifespan="on",
                                log_level="warning", loop="asyncio")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    @property
    def url(self) -> str:
        """Base URL of the gateway."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Shut down uvicorn (runs the lifespan shutdown: client closed, log flushed)."""
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture
def gateway(upstream, transactional_db, log_flush, settings):
    """A live gateway in front of the mock upstream, on the production transport; log flushed after."""
    settings.UPSTREAM_TRANSPORT = "aiohttp"
    live = LiveGateway()
    yield live
    log_flush()
    live.stop()
