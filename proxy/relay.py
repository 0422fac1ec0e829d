"""The streaming tee: relays upstream chunks to the client as they arrive and feeds the log."""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable

import httpx

from logs.capture import BodyCapture
from logs.models import Outcome


# Framed (Content-Length) answers up to this size are read whole, then sent in one piece.
SMALL_BODY_MAX = 64 * 1024


class UpstreamBroken(Exception):
    """Raised (after logging) when an upstream body broke off: the client connection must be cut.

    A body that simply ended would look complete to the client; the ASGI entry point catches
    this and returns without finishing the response, so the server drops the connection.
    """


class Exchange:
    """Timing and outcome of one proxied exchange, filled in as it runs."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.ttfb_ms: float | None = None
        self.ended_ms: float | None = None
        self.outcome = Outcome.COMPLETED
        self.error = ""
        self.usage_injected = False  # STREAM_USAGE=inject rewrote the request
        self.notes: list[str] = []  # log-side problems (e.g. a payload file not saved)
        self.shutting_down = False
        try:
            self.task: asyncio.Task | None = asyncio.current_task()
        except RuntimeError:
            self.task = None
        _INFLIGHT.add(self)

    def elapsed_ms(self) -> float:
        """Milliseconds since the exchange started (frozen once its end was seen)."""
        if self.ended_ms is not None:
            return self.ended_ms
        return round((time.monotonic() - self.started) * 1000, 2)

    def clock_stop(self) -> None:
        """Freeze the duration at the moment the end (or the fault) was seen."""
        if self.ended_ms is None:
            self.ended_ms = self.elapsed_ms()

    def fail(self, outcome: str, error: str) -> None:
        """Record how the exchange broke (the first cause wins)."""
        self.clock_stop()
        if self.outcome == Outcome.COMPLETED:
            self.outcome, self.error = outcome, error

    def cancelled_mark(self, where: str) -> None:
        """The exchange's task was cancelled: a client disconnect, or the shutdown grace ran out."""
        if self.shutting_down:
            self.fail(Outcome.INTERRUPTED, f"gateway shut down {where} (SHUTDOWN_GRACE_SECONDS ran out)")
        else:
            self.fail(Outcome.CLIENT_ABORTED, f"client disconnected {where}")

    def end(self) -> None:
        """The exchange's response record is submitted: it is no longer in flight."""
        _INFLIGHT.discard(self)


_INFLIGHT: set[Exchange] = set()


def exchanges_inflight() -> int:
    """How many exchanges of this process have not yet logged their response."""
    return len(_INFLIGHT)


def exchanges_interrupt() -> int:
    """Cancel every exchange still in flight (shutdown grace over); each logs itself interrupted."""
    count = 0
    for exchange in list(_INFLIGHT):
        exchange.shutting_down = True
        if exchange.task is not None and not exchange.task.done():
            exchange.task.cancel()
            count += 1
    return count


def sse_error_event(message: str) -> bytes:
    """A final SSE event telling a streaming client that the upstream failed."""
    data = json.dumps({"error": {"message": message, "type": "upstream_error"}})
    return f"event: error\ndata: {data}\n\n".encode()


def _error_tail_allowed(upstream: httpx.Response, is_sse: bool) -> bool:
    """An error event can only be appended to an unframed, uncompressed event stream."""
    encoding = upstream.headers.get("content-encoding", "").strip().lower()
    return is_sse and "content-length" not in upstream.headers and encoding in ("", "identity")


async def relay_stream(
    upstream: httpx.Response,
    exchange: Exchange,
    capture: BodyCapture,
    on_end: Callable[[], None],
    *,
    is_sse: bool,
    chunk_filter=None,
    idle_timeout: float | None = None,
) -> AsyncIterator[bytes]:
    """Yield upstream bytes unchanged, teeing them into the capture; log however it ends.

    Ends: completed; upstream error (reset, early close, read or idle timeout: SSE clients get a
    final `event: error`, other bodies have their connection cut via UpstreamBroken); client gone
    (CancelledError in the iterator, or the iterator closed unfinished). chunk_filter
    (STREAM_USAGE=inject only) drops the usage chunk the client did not ask for; the capture
    still sees every upstream byte.
    """
    chunks = upstream.aiter_raw()
    finished = broken = False
    try:
        while True:
            try:
                async with asyncio.timeout(idle_timeout or None):
                    chunk = await anext(chunks)
            except StopAsyncIteration:
                break
            except TimeoutError:
                exchange.fail(Outcome.UPSTREAM_ERROR,
                              f"upstream sent nothing for {idle_timeout:g} s (STREAM_IDLE_TIMEOUT)")
                broken = True
                break
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
        finished = True
        exchange.clock_stop()
    except asyncio.CancelledError:
        # Django 5 cancels the response task when the client goes away.
        exchange.cancelled_mark("before the response ended")
        raise
    except httpx.HTTPError as exc:
        exchange.fail(Outcome.UPSTREAM_ERROR, f"upstream failed mid-response: {type(exc).__name__}: {exc}".strip())
        finished = broken = True
    finally:
        if not finished:  # closed unfinished (GeneratorExit) or any other escape: the client left
            exchange.cancelled_mark("before the response ended")
        try:
            # Stop the upstream at once (no more tokens spent) before writing the log.
            await asyncio.shield(upstream.aclose())
        finally:  # logged even if a second cancellation lands while the upstream closes
            try:
                on_end()
            finally:
                exchange.end()
    if broken:
        if _error_tail_allowed(upstream, is_sse):
            yield sse_error_event(exchange.error)
        else:
            raise UpstreamBroken(exchange.error)


async def relay_collect(relay: AsyncIterator[bytes]) -> tuple[list[bytes], UpstreamBroken | None]:
    """Run a relay to its end (a small body): its chunks, and how the upstream broke off, if it did."""
    chunks: list[bytes] = []
    try:
        async for chunk in relay:
            chunks.append(chunk)
    except UpstreamBroken as exc:
        return chunks, exc
    return chunks, None


async def chunks_replay(chunks: list[bytes], broken: UpstreamBroken) -> AsyncIterator[bytes]:
    """What relay_collect read, as a stream that breaks off where the upstream's did."""
    for chunk in chunks:
        yield chunk
    raise broken
