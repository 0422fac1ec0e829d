"""Helpers for hold tests: a call run in the background, and waiting for it to be held."""

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import proxy.hold
from hold.services import held_decide, switch_set
from tests.sqlite_writes import locked_retry


class Background:
    """A blocking call (an SDK call, an HTTP request) run in a thread; its result or exception kept."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.done_at: float | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.result = fn()
        except BaseException as exc:  # the test inspects it
            self.error = exc
        self.done_at = time.monotonic()

    def wait(self, timeout: float = 15) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the call did not finish"
        return self.result

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()


def until(check: Callable[[], Any], timeout: float = 10, what: str = "condition") -> Any:
    """Poll check() until it returns something truthy; its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def held_ids(gateway, n: int = 1) -> list[str]:
    """The ids of the requests the in-process gateway holds, once there are n (oldest first).

    Read from the gateway's own waits, not by polling the table: the test database is SQLite in
    memory with a shared cache, where a read racing the gateway's insert fails with "table is locked".
    """
    def ids() -> list[str]:
        watch = proxy.hold._watch
        # This test's gateway's watch only (an earlier test's gateway may still be shutting down).
        ours = watch is not None and getattr(watch.loop, "_thread_id", None) == gateway.thread.ident
        waiting = list(watch.waiters) if ours else []
        return waiting if len(waiting) >= n else []
    return until(ids, what=f"{n} held request(s)")


def decide(request_id: str, decision: str, **kwargs) -> Any:
    """held_decide from the test thread (see locked_retry)."""
    return locked_retry(held_decide, request_id, decision, **kwargs)


def switch(**kwargs) -> Any:
    """switch_set from the test thread (see locked_retry)."""
    return locked_retry(switch_set, **kwargs)


def switch_seen(**kwargs) -> None:
    """Set the switch and wait until the in-process gateway's worker has read it (bounded: within a second)."""
    state = switch(by="test", **kwargs)
    watch = proxy.hold._watch  # a watch of an earlier test's loop is replaced on the first request
    until(lambda: watch is None or watch.loop.is_closed() or watch.switch == state, timeout=3, what="the switch read")


@pytest.fixture
def background():
    return Background
