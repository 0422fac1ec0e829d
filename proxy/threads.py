"""Blocking calls off the event loop: parked threads fed by a job queue, cheaper than asyncio.to_thread.

asyncio.to_thread wraps an executor future in an asyncio future and copies the context; a job
queue read by parked threads, with the loop's own wake-up (call_soon_threadsafe), costs about half
as much per call (docs/benchmark.md, "Request hooks and the hold queue"). The gateway hands such
calls over on every request with a sync hook, a cache entry to store or a large body, so the hop
is worth its own small pool.

Each pool starts threads as calls wait for one, up to THREADS_MAX, so a slow call holds one
thread and the others go on; they are daemons, parked between calls. Pools are separate by
whose code runs: a slow request hook (user code) must never delay the gateway's own file work.
"""

import asyncio
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any


class ParkedThreads:
    """One pool: run(fn, *args) awaits fn(*args) run in one of its threads, in the caller's context."""

    THREADS_MAX = 32  # as many as asyncio's default executor has on a large machine

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0

    async def run(self, fn: Callable, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        with self._lock:
            if self._idle <= 0 and self._threads < self.THREADS_MAX:
                self._threads += 1
                threading.Thread(target=self._work, name=f"{self.name}-{self._threads}", daemon=True).start()
            else:
                self._idle -= 1
        self._jobs.put((loop, done, contextvars.copy_context(), fn, args))
        return await done

    def _work(self) -> None:
        while True:
            loop, done, ctx, fn, args = self._jobs.get()
            if done.cancelled():  # its caller stopped waiting (a hook's timeout) before a thread was free: not run
                result, error = None, None
            else:
                try:
                    result, error = ctx.run(fn, *args), None
                except BaseException as exc:  # noqa: BLE001  (given back to the awaiting caller)
                    result, error = None, exc
            with self._lock:
                self._idle += 1
            try:
                loop.call_soon_threadsafe(_settle, done, result, error)
            except RuntimeError:  # the loop closed while the call ran: nobody waits for it
                pass


def _settle(done: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if done.cancelled():  # the caller went away while the call ran
        return
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(result)


# The gateway's own blocking work on the request path (cache entries, body files): short calls.
IO_THREADS = ParkedThreads("gateway-io")


async def off_loop(fn: Callable, *args: Any) -> Any:
    """fn(*args) in one of the gateway's own threads (for disk or network calls on the request path)."""
    return await IO_THREADS.run(fn, *args)
