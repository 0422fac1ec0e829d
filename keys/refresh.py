"""One database read at a time per cached value: the requests that find it stale share the read in flight.

At 64 requests in flight, a value expiring would otherwise send 64 identical reads to the
database at once, every time it expires.
"""

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import connections

_inflight: dict[tuple[int, Any], asyncio.Future] = {}

# The threads that read for the keys app, for the life of the process (not an event loop's), each
# keeping its database connection between reads: closing it after each read, as a request's is
# with CONN_MAX_AGE=0, made every read open a new one (2 ms of CPU on SQLite against 0.1-0.5 ms for
# the read itself, docs/benchmark.md; on PostgreSQL a new connection for every request of a limited
# key, its window take). At most READERS connections a worker.
READERS = 4
_readers: list[ThreadPoolExecutor] = []
_readers_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    if not _readers:
        with _readers_lock:
            if not _readers:
                _readers.append(ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="key-read"))
    return _readers[0]


def readers_stop() -> None:
    """Close the reader threads' connections and end them (a test session's end, before its databases go)."""
    with _readers_lock:
        if not _readers:
            return
        executor = _readers.pop()
        # One job per thread (each waits for the others at the barrier, so no thread takes two): a
        # connection is closed by the thread that opened it.
        barrier = threading.Barrier(READERS)

        def close() -> None:
            barrier.wait(timeout=10)
            connections.close_all()

        for _ in range(READERS):
            executor.submit(close)
        executor.shutdown(wait=True)


def _in_thread(read: Callable, *args: Any) -> Any:
    """Run a database read in a reader thread; one that fails closes the thread's connections (the next
    read opens a new one)."""
    try:
        return read(*args)
    except Exception:
        for connection in connections.all(initialized_only=True):
            connection.close()
        raise


async def in_thread(read: Callable, *args: Any) -> Any:
    """A blocking database (or Redis) call, off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(_executor(), _in_thread, read, *args)


def refresh_start(name: Any, read: Callable, *args: Any) -> asyncio.Future:
    """The read of `name` in flight on this event loop, started in a thread if none is."""
    loop = asyncio.get_running_loop()
    key = (id(loop), name)
    future = _inflight.get(key)
    if future is None:
        future = _inflight[key] = asyncio.ensure_future(in_thread(read, *args))
        future.add_done_callback(lambda f: _read_done(key, f))
    return future


def _read_done(key: tuple[int, Any], future: asyncio.Future) -> None:
    _inflight.pop(key, None)
    if not future.cancelled():
        # Retrieved here: a read started ahead that nobody awaits would otherwise print "Task exception was
        # never retrieved" with a traceback when the database is away; a request that awaits it still gets it.
        future.exception()


async def refreshed(name: Any, read: Callable, *args: Any) -> Any:
    """Await the shared read of `name` (a cancelled caller does not cancel it for the others)."""
    return await asyncio.shield(refresh_start(name, read, *args))
