"""Helpers shared by the fault tests: a test key, log lookups, waits (the fixtures are in conftest.py)."""

import socket
import time

from logs.models import BinaryFile, Request, Response

KEY = "sk-" + "faultTESTkey0123456789abcdefXYZ9"  # fake; split so no key-like literal
AUTH = {"authorization": f"Bearer {KEY}"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def exchange_get(log_flush, request_id: str) -> tuple[Request, Response]:
    """The logged request and response for a gateway request id (after the log drained)."""
    log_flush()
    req = Request.objects.get(id=request_id)
    return req, Response.objects.get(request=req)


def only_exchange(log_flush) -> tuple[Request, Response]:
    """The single logged exchange of a test."""
    log_flush()
    req = Request.objects.get()
    return req, Response.objects.get(request=req)


def response_files(resp: Response) -> list[BinaryFile]:
    """The files kept for a response."""
    return list(BinaryFile.objects.filter(response=resp))


def closed_port() -> int:
    """A local port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float = 5.0, step: float = 0.02):
    """Poll `check` until it returns something truthy; that value, or None after the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(step)
    return None
