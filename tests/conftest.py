"""Shared fixtures: temporary payload store, the log writer, a mock upstream, a live gateway."""

import asyncio
import os
import socket
import subprocess
import threading
import time
import weakref

import pytest
import uvicorn
from hypothesis import settings as hypothesis_settings
from django.conf import settings
from django.db.backends.signals import connection_created

import logs.pipeline.pipe
import proxy.upstream
from logs.pipeline.ingest import ingest_run
from logs.pipeline.writer import writer_get, writer_stop
from testing.mock_upstream import MockUpstreamThread
from testing.scripted import ScriptedTransport


class IngestThread:
    """The ingest process's loop run in a thread of the test process, behind the same pipes.

    Only the test process knows the test database and each test's settings (payload store,
    prices...), so in-process gateways hand their lines to this instead of a child process;
    everything else (journal, pipe, acks, restarts) is the production code. Real gateway
    processes (tests/procs.py) run the real child process.
    """

    def __init__(self) -> None:
        read_in, write_in = os.pipe()
        read_out, write_out = os.pipe()
        self.stdin = os.fdopen(write_in, "wb")
        self.stdout = os.fdopen(read_out, "rb")
        self.returncode: int | None = None
        self._thread = threading.Thread(target=self._run, args=(read_in, os.fdopen(write_out, "wb")),
                                        name="ingest-thread", daemon=True)
        self._thread.start()

    def _run(self, fd_in: int, out) -> None:
        from django.db import connection

        try:
            ingest_run(fd_in, out)
            self.returncode = 0
        except Exception:
            self.returncode = 1
            raise
        finally:
            connection.close()
            out.close()
            os.close(fd_in)

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise subprocess.TimeoutExpired("ingest-thread", timeout)
        return self.returncode

    def kill(self) -> None:
        """A thread cannot be killed: closing its input ends it once it has written what it read."""
        try:
            self.stdin.close()
        except OSError:
            pass


# Hypothesis: few examples by default (the README's test command, CI); HYPOTHESIS_PROFILE=deep for many.
hypothesis_settings.register_profile("ci", max_examples=100, deadline=None)
hypothesis_settings.register_profile("deep", max_examples=2000, deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

DATABASE_FIXTURES = {"db", "transactional_db", "django_db_setup", "live_server"}


def pytest_collection_modifyitems(items) -> None:
    """Mark every test that touches the database, so the PostgreSQL pass runs exactly those."""
    for item in items:
        if item.get_closest_marker("django_db") or DATABASE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.database)


# The production spawner (a real child process), for tests that need one in this process.
REAL_INGEST_SPAWN = logs.pipeline.pipe.ingest_spawn
REAL_INGEST_PRIORITY_SET = logs.pipeline.pipe.ingest_priority_set


@pytest.fixture(autouse=True, scope="session")
def ingest_in_process():
    """In-process gateways write their log through IngestThread (a thread: its priority stays as it is)."""
    logs.pipeline.pipe.ingest_spawn = IngestThread
    logs.pipeline.pipe.ingest_priority_set = lambda proc, *, idle: True
    yield
    logs.pipeline.pipe.ingest_spawn = REAL_INGEST_SPAWN
    logs.pipeline.pipe.ingest_priority_set = REAL_INGEST_PRIORITY_SET


@pytest.fixture(scope="session")
def key_readers(django_db_setup):
    """Set up after the test databases, so torn down before them: the keys app's reader threads keep their
    connections (keys/refresh.py), which would keep PostgreSQL from dropping a test database."""
    yield
    from keys.refresh import readers_stop

    readers_stop()


@pytest.fixture(autouse=True)
def key_readers_closed_at_end(request):
    if request.node.get_closest_marker("database"):  # pytest_collection_modifyitems marks them
        request.getfixturevalue("key_readers")


def _server_connection(c) -> bool:
    """Open, and to a database server: Django keeps an in-memory SQLite test database open through close() (it
    would vanish), so on the SQLite pass nothing counts."""
    return c.connection is not None and not getattr(c, "is_in_memory_db", lambda: False)()


def shared_sync_thread_connections() -> list[str]:
    """The database connections left open in asgiref's shared sync thread (the aliases).

    sync_to_async outside a request (the hold queue's watch, the async ORM called from a test) runs
    in that one thread of the process, which lives as long as the process: a connection opened
    there stays open until that thread closes it. The gateway's lifespan shutdown does so
    (proxy/hold.py watch_stop); a test that runs the app without the lifespan, or calls the async
    ORM itself, must do it too.
    """
    from asgiref.sync import SyncToAsync
    from django.db import connections

    def opened() -> list[str]:
        return [c.alias for c in connections.all(initialized_only=True) if _server_connection(c)]

    return SyncToAsync.single_thread_executor.submit(opened).result(timeout=10)


# Every connection this process opens, with its thread. One still open when its thread has ended (a thread of
# asyncio's executor after its loop closed) is closed only when the garbage collector frees it, and never once
# a later in-process gateway's start has frozen it (gateway_project/asgi.py calls gc.freeze()).
_opened: list[tuple[weakref.ref, threading.Thread]] = []


def _opened_note(sender, connection, **kwargs) -> None:
    _opened.append((weakref.ref(connection), threading.current_thread()))


connection_created.connect(_opened_note, weak=False)


def orphaned_connections() -> list:
    """The connections still open whose thread has ended."""
    _opened[:] = [(ref, thread) for ref, thread in _opened if ref() is not None]
    return [(c, thread.name) for ref, thread in _opened
            if (c := ref()) is not None and not thread.is_alive() and _server_connection(c)]


@pytest.fixture(autouse=True)
def connections_closed(request):
    """A database test leaves no connection open in asgiref's shared sync thread, nor in a thread that ended.

    Such a connection outlives the test: on PostgreSQL it kept the session's test database from
    being dropped ("database ... is being accessed by other users"), a warning at the end of the
    run that named whatever test ran last, not the one that opened it. This names that one.
    """
    yield
    if not request.node.get_closest_marker("database"):
        return
    problems = []
    if left := shared_sync_thread_connections():
        from asgiref.sync import SyncToAsync
        from django.db import connections

        SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)
        problems.append(f"{left} in asgiref's shared sync thread (sync_to_async outside a request: close it "
                        "there, as the lifespan's shutdown does)")
    if orphans := orphaned_connections():
        for c, _ in orphans:
            c.inc_thread_sharing()  # its thread is gone: closed from this one
            c.close()
        problems.append(f"{[f'{c.alias} of thread {name}' for c, name in orphans]} whose thread ended without "
                        "closing it (close it in that thread before it ends)")
    if problems:
        pytest.fail("database connection(s) left open: " + "; ".join(problems))


@pytest.fixture(autouse=True)
def payload_dir(tmp_path, settings):
    """Every test gets its own payload store and journal folder."""
    settings.FILE_STORAGE_PATH = tmp_path / "files"
    settings.FILE_STORAGE_PATH.mkdir()
    settings.STORAGES = {**settings.STORAGES, "payloads": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(settings.FILE_STORAGE_PATH), "base_url": None}}}
    settings.JOURNAL_DIR = tmp_path / "journal"
    settings.SPOOL_DIR = tmp_path / "spool"
    yield settings.FILE_STORAGE_PATH
    writer_stop(timeout=10)


@pytest.fixture
def s3_server():
    """An S3-compatible server (moto) on 127.0.0.1 with an empty bucket; stopped at the end."""
    from tests.s3 import MotoServer

    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def s3_store(s3_server, payload_dir, settings):
    """This process's payload store is the moto bucket (under the prefix "t"), as FILE_STORAGE_URL makes it."""
    from django.core.files.storage import storages

    from tests.s3 import CREDENTIALS

    settings.STORAGES = {**settings.STORAGES, "payloads": {
        "BACKEND": "logs.s3_storage.PayloadS3Storage",
        "OPTIONS": {"bucket_name": s3_server.bucket, "location": "t", "endpoint_url": s3_server.url,
                    "region_name": "us-east-1", "access_key": CREDENTIALS["AWS_ACCESS_KEY_ID"],
                    "secret_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"], "file_overwrite": True,
                    "querystring_auth": False, "default_acl": None}}}
    return storages["payloads"]


@pytest.fixture
def anyio_backend():
    """Async tests run on asyncio (the loop uvicorn uses)."""
    return "asyncio"


@pytest.fixture
def log_flush():
    """Wait until every submitted log record is in the database (a generous bound: CI machines are busy)."""
    def flush() -> None:
        assert writer_get().flush(timeout=30), "log writer did not drain"
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
    mock_upstream.mock.together_most = 0
    settings.UPSTREAM_URLS = {name: mock_upstream.url for name in settings.UPSTREAM_URLS}
    return mock_upstream.mock


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveGateway:
    """The real ASGI app under uvicorn in a thread of this process (same settings, same DB)."""

    def __init__(self, http: str = "auto") -> None:
        from gateway_project.asgi import application

        # Bound here and handed to uvicorn: a port only picked here was now and then taken (by another
        # worker's outgoing connection) before uvicorn bound it, and the test failed on "address already in use".
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        # As the gateway is run (README, Dockerfile): uvicorn adds no Date or Server of its own.
        config = uvicorn.Config(application, host="127.0.0.1", port=self.port, lifespan="on",
                                log_level="warning", loop="asyncio", date_header=False, server_header=False,
                                http=http)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.socket]))

    @property
    def url(self) -> str:
        """Base URL of the gateway."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Shut down uvicorn (runs the lifespan shutdown: client closed, log flushed)."""
        self.server.should_exit = True
        self.thread.join(15)
        self.socket.close()


@pytest.fixture
def scripted(monkeypatch):
    """Put a scripted upstream under the gateway: set `.answer`; list `.requests` (ask for it before `gateway`)."""
    transport = ScriptedTransport(lambda request: (200, [("content-type", "application/json")], b"{}"))
    monkeypatch.setattr(proxy.upstream, "transport_build", lambda limits: transport)
    return transport


@pytest.fixture
def gateway(upstream, transactional_db, log_flush):
    """A live gateway in front of the mock upstream; log flushed after."""
    live = LiveGateway()
    yield live
    log_flush()
    live.stop()
