"""Writes of a test's own thread while an in-process gateway runs on the shared test database."""

import time
from collections.abc import Callable
from typing import Any

from django.db import OperationalError


def locked_retry(write: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A write of the test thread, retried while the in-memory test database says "table is locked".

    The in-process gateway reads keys, the hold switch and the held rows on every request; on SQLite in
    memory with a shared cache (the test database) a write racing such a read fails at once
    instead of waiting, as it would on the gateway's real database (a file in WAL mode, with a
    busy timeout).
    """
    deadline = time.monotonic() + 10
    while True:
        try:
            return write(*args, **kwargs)
        except OperationalError as exc:
            if "table is locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
