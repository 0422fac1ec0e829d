"""Blocking calls off the event loop: parked threads fed by a job queue, cheaper than asyncio.to_thread.

asyncio.to_thread wraps an executor future in an asyncio future and copies the context; a job
queue read by parked threads, with the loop's own wake-up (call_soon_threadsafe), costs about half
as much per call (docs/benchmark.md, "Request hooks and the hold queue"). The gateway hands such
calls over on every request with a sync hook, a cache entry to store or a large body, so the hop
is worth its own small pool.

Each pool starts threads as calls wait for one, up to THREADS_MAX, so a slow call holds one
thread and the others go on; they are daemons, parked between calls. Pools are separate by
whose code runs: a slow request hook (user code) must never delay the gateway's own file work.

A thread cannot be stopped: a call its caller gave up on (a hook past HOOK_TIMEOUT_SECONDS, a
client gone) runs on. Such a thread leaves the pool's count, so a fresh one serves the next calls
(else THREADS_MAX hung calls stopped every later one), and ends when its call returns. At most
ABANDONED_MAX of them at once: past that, a given-up call keeps its place in the count (the pool
shrinks, logged), so a hook that always hangs cannot pile up threads without end.
"""

import asyncio
import contextvars
import itertools
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# A call's state, changed under its pool's lock: by its thread (taken, done) and by its caller (given up).
_QUEUED, _RUNNING, _DONE, _DROPPED, _ABANDONED = range(5)  # given up before it ran (dropped), or while (abandoned)


class _Call:
    __slots__ = ("loop", "done", "ctx", "fn", "args", "state")

    def __init__(self, loop: asyncio.AbstractEventLoop, done: asyncio.Future, fn: Callable, args: tuple) -> None:
        self.loop, self.done, self.ctx, self.fn, self.args = loop, done, contextvars.copy_context(), fn, args
        self.state = _QUEUED


class ParkedThreads:
    """One pool: run(fn, *args) awaits fn(*args) run in one of its threads, in the caller's context."""

    THREADS_MAX = 32  # as many as asyncio's default executor has on a large machine
    ABANDONED_MAX = 128  # threads still running calls nobody waits for, beside THREADS_MAX (see the module's doc)

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0  # those counted against THREADS_MAX: parked, or running a call someone waits for
        self._idle = 0  # threads free for the next calls, less the calls queued for them (< 0: calls wait)
        self._abandoned = 0
        self._numbers = itertools.count(1)

    async def run(self, fn: Callable, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        call = _Call(loop, loop.create_future(), fn, args)
        with self._lock:
            if self._idle <= 0 and self._threads < self.THREADS_MAX:
                self._start()
            else:
                self._idle -= 1
        self._jobs.put(call)
        try:
            return await call.done
        except asyncio.CancelledError:  # the caller stopped waiting (a hook's timeout, a client gone)
            self._give_up(call)
            raise

    def _start(self) -> None:
        """One more counted thread (under the lock): its first job is the next queued call."""
        self._threads += 1
        threading.Thread(target=self._work, name=f"{self.name}-{next(self._numbers)}", daemon=True).start()

    def _give_up(self, call: _Call) -> None:
        with self._lock:
            if call.state == _QUEUED:  # its thread will drop it, unrun, and park again
                call.state = _DROPPED
                return
            if call.state != _RUNNING:
                return
            if self._abandoned >= self.ABANDONED_MAX:
                full = self._abandoned
            else:
                full = 0
                call.state = _ABANDONED  # its thread ends after the call instead of parking
                self._abandoned += 1
                self._threads -= 1
                if self._idle < 0:  # calls wait for the thread it held: a fresh one takes the next
                    self._start()
                    self._idle += 1
        if full:
            log.warning("%s threads: %d already run calls nobody waits for (ABANDONED_MAX): this given-up call keeps "
                        "its thread counted among the %d (THREADS_MAX) until it returns", self.name, full,
                        self.THREADS_MAX)

    def _work(self) -> None:
        while True:
            call: _Call = self._jobs.get()
            with self._lock:
                run = call.state == _QUEUED
                if run:
                    call.state = _RUNNING
            result, error = None, None
            if run:
                try:
                    result = call.ctx.run(call.fn, *call.args)
                except BaseException as exc:  # noqa: BLE001  (given back to the awaiting caller)
                    error = exc
            with self._lock:
                if call.state == _ABANDONED:  # no longer counted: replaced already, so it ends
                    self._abandoned -= 1
                    return
                call.state = _DONE
                self._idle += 1
            if not run:
                continue
            try:
                call.loop.call_soon_threadsafe(_settle, call.done, result, error)
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
