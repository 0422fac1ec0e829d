"""Request limits enforced while the body is read, before Django spools it to disk.

A request over a limit is not answered here: its body is cut short and the reason is put in
the ASGI scope (REFUSAL_KEY), so the proxy view logs the request and answers a JSON error in
the provider's shape like any other exchange.
"""

import asyncio
from typing import Any

from django.conf import settings

REFUSAL_KEY = "gateway.refusal"
_END = {"type": "http.request", "body": b"", "more_body": False}


def _header_get(scope: dict, name: bytes) -> bytes | None:
    """First value of a request header in an ASGI scope."""
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            return v
    return None


class RequestGuard:
    """Wraps an HTTP connection's `receive`: enforces header size, body size and body idle time."""

    def __init__(self, scope: dict, receive: Any) -> None:
        self.scope, self._receive = scope, receive
        self.limit = settings.MAX_REQUEST_BODY_BYTES
        self.timeout = settings.REQUEST_BODY_TIMEOUT
        self.received = 0
        self.body_done = False
        self.disconnected = False
        length = _header_get(scope, b"content-length")
        try:
            self.declared = int(length) if length is not None else None
        except ValueError:
            self.declared = None
        chunked = b"chunked" in (_header_get(scope, b"transfer-encoding") or b"").lower()
        self.body_expected = bool(self.declared) or chunked
        header_bytes = sum(len(k) + len(v) + 4 for k, v in scope.get("headers", []))
        if header_bytes > settings.MAX_REQUEST_HEADER_BYTES:
            self.refuse(431, f"Request headers of {header_bytes} bytes exceed MAX_REQUEST_HEADER_BYTES "
                             f"({settings.MAX_REQUEST_HEADER_BYTES}).")
        elif self.declared is not None and self.declared > self.limit:
            self.refuse(413, self._too_large(self.declared))

    def _too_large(self, size: int) -> str:
        """The 413 message, naming the limit."""
        return f"Request body of {size} bytes exceeds MAX_REQUEST_BODY_BYTES ({self.limit})."

    def refuse(self, status: int, message: str, outcome: str = "gateway_error", *,
               body_size: int | None = None) -> None:
        """Record why this request is refused (the first reason wins)."""
        size = body_size if body_size is not None else (self.declared or self.received)
        self.scope.setdefault(REFUSAL_KEY, {"status": status, "message": message, "outcome": outcome,
                                            "body_size": size})

    def _end(self) -> dict:
        """End the body as Django sees it."""
        self.body_done = True
        return dict(_END)

    async def receive(self) -> dict:
        """The next ASGI message, with the limits applied."""
        if self.disconnected:
            # The view still runs to log the aborted request; Django cancels this wait when done.
            await asyncio.get_running_loop().create_future()
        if self.body_done:
            while True:  # the unread rest of a refused body is dropped, not spooled
                message = await self._receive()
                if message["type"] != "http.request":
                    return message
        if REFUSAL_KEY in self.scope:
            return self._end()
        try:
            async with asyncio.timeout(self.timeout):
                message = await self._receive()
        except TimeoutError:
            expected = self.declared if self.declared is not None else "an unknown number of"
            self.refuse(408, f"Request body incomplete: got {self.received} of {expected} bytes, then "
                             f"nothing for {self.timeout:g} s (REQUEST_BODY_TIMEOUT).", body_size=self.received)
            return self._end()
        if message["type"] == "http.disconnect":
            if not self.body_expected:
                return message
            self.disconnected = True
            expected = self.declared if self.declared is not None else "an unknown number of"
            self.refuse(400, f"Client closed the connection after {self.received} of {expected} body bytes.",
                        outcome="client_aborted", body_size=self.received)
            return self._end()
        self.received += len(message.get("body", b""))
        if self.received > self.limit:
            self.refuse(413, self._too_large(self.received) + " (counted while reading)")
            return self._end()
        if not message.get("more_body", False):
            self.body_done = True
        return message
