"""One database read at a time per cached value: the requests that find it stale share the read in flight.

At 64 requests in flight, a value expiring would otherwise send 64 identical reads to the
database at once, every time it expires.
"""

import asyncio
from collections.abc import Callable
from typing import Any

from django.db import close_old_connections

_inflight: dict[tuple[int, Any], asyncio.Future] = {}


def _in_thread(read: Callable, *args: Any) -> Any:
    """Run a database read in a worker thread, then treat its connection as a request's would be
    (closed with CONN_MAX_AGE=0, the default; kept for reuse up to CONN_MAX_AGE otherwise)."""
    try:
        return read(*args)
    finally:
        close_old_connections()


async def in_thread(read: Callable, *args: Any) -> Any:
    """A blocking database (or Redis) call, off the event loop."""
    return await asyncio.to_thread(_in_thread, read, *args)


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
