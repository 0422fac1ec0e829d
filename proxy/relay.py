"""The streaming tee: relays upstream chunks to the client as they arrive and feeds the log."""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable

import httpx

from logs.capture import BodyCapture
from logs.models import Outcome


class Exchange:
    """Timing and outcome of one proxied exchange, filled in as it runs."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.ttfb_ms: float | None = None
        self.outcome = Outcome.COMPLETED
        self.error = ""
        self.usage_injected = False  # STREAM_USAGE=inject rewrote the request

    def elapsed_ms(self) -> float:
        """Milliseconds since the exchange started."""
        return round((time.monotonic() - self.started) * 1000, 2)


def sse_error_event(message: str) -> bytes:
    """A final SSE event telling a streaming client that the upstream failed."""
    data = json.dumps({"error": {"message": message, "type": "upstream_error"}})
    return f"event: error\ndata: {data}\n\n".encode()


async def relay_stream(
    upstream: httpx.Response,
    exchange: Exchange,
    capture: BodyCapture,
    on_end: Callable[[], None],
    *,
    is_sse: bool,
    chunk_filter=None,
) -> AsyncIterator[bytes]:
    """Yield upstream bytes unchanged, teeing them into the capture; log however it ends.

    chunk_filter (STREAM_USAGE=inject only) drops the usage chunk the client did not ask for;
    the capture still sees every upstream byte.
    """
    try:
        async for chunk in upstream.aiter_raw():
            if exchange.ttfb_ms is None:
                exchange.ttfb_ms = exchange.elapsed_ms()
            capture.feed(chunk)
            if chunk_filter is not None:
                chunk = chunk_filter.feed(chunk)
                if not chunk:
                    continue
            yield chunk
        if chunk_filter is not None and (rest := chunk_filter.flush()):
            yield rest
    except asyncio.CancelledError:
        # Django 5 cancels the response task when the client goes away.
        exchange.outcome = Outcome.CLIENT_ABORTED
        exchange.error = "client disconnected before the response ended"
        raise
    except httpx.HTTPError as exc:
        exchange.outcome = Outcome.UPSTREAM_ERROR
        exchange.error = f"upstream failed mid-response: {type(exc).__name__}: {exc}".strip()
        if is_sse:
            yield sse_error_event(exchange.error)
    finally:
        # Stop the upstream at once (no more tokens spent) before writing the log.
        await asyncio.shield(upstream.aclose())
        on_end()
