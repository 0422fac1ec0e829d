"""The answer's way back: relays upstream chunks to the client as they arrive, tees them into the log."""

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import httpx
from django.conf import settings
from django.http import HttpResponse, HttpResponseBase, StreamingHttpResponse

from logs.outcomes import Outcome
from logs.pipeline.capture import BodyCapture
from logs.pipeline.progress import AnswerProgress
from logs.pipeline.writer import writer_get
from logs.records import ResponseRecord
from proxy.exchange import REQUEST_ID_HEADER, Exchange, json_error
from proxy.key_policy import STEP as KEY_STEP
from proxy.links import links_apply, links_in_body, links_in_body_possible, links_in_headers
from proxy.threads import off_loop
from proxy.upstream import headers_forward, headers_sendable
from wire.sse import EVENT_ENDS, event_end

logger = logging.getLogger(__name__)

# Framed (Content-Length) answers up to this size are read whole, then sent in one piece.
SMALL_BODY_MAX = 64 * 1024
# The largest answer taken whole to point its links at the gateway (a page of a batch list is far smaller).
LINKS_BODY_MAX = 4 * 1024 * 1024


class AnswerFilter(Protocol):
    """A step's change to the answer on its way to the client (wire.sse.EventFilter, key_policy.EchoMask);
    the log still gets the answer as the upstream sent it."""

    def headers(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The answer's headers as the client gets them."""

    def __call__(self, chunk: bytes) -> bytes:
        """Bytes to send now."""

    def rest(self) -> bytes:
        """Whatever is left when the upstream ends."""


class AnswerFilters:
    """Several steps' filters as one, each taking what the one before it let through."""

    def __init__(self, filters: list[AnswerFilter]) -> None:
        self.filters = filters

    def headers(self, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        for f in self.filters:
            pairs = f.headers(pairs)
        return pairs

    def __call__(self, chunk: bytes) -> bytes:
        for f in self.filters:
            chunk = f(chunk)
        return chunk

    def rest(self) -> bytes:
        out = b""
        for f in self.filters:  # what each held back, through the filters after it
            out = f(out) + f.rest() if out else f.rest()
        return out


class UpstreamBroken(Exception):
    """Raised (after logging) when an upstream body broke off: the client connection must be cut.

    A body that simply ended would look complete to the client; the proxy's ASGI adapter catches
    this and returns without finishing the response, so the server drops the connection.
    """


def _error_tail_allowed(upstream: httpx.Response, is_sse: bool) -> bool:
    """An error event can only be appended to an unframed, uncompressed event stream."""
    encoding = upstream.headers.get("content-encoding", "").strip().lower()
    return is_sse and "content-length" not in upstream.headers and encoding in ("", "identity")


# An event's start held back longer than this is sent as it is: a client reading lines, not events,
# from a server that never ends its events must not wait for the whole answer.
HELD_EVENT_MAX = 64 * 1024

class _WholeEvents:
    """An event stream's bytes with each event's start held until its end arrives (or HELD_EVENT_MAX):
    where an error event may end the stream, a break inside an event would glue it to a torn line
    that no SDK can parse. The log's capture still gets every byte as it came."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = b""

    def __call__(self, chunk: bytes) -> bytes:
        """Bytes to send now."""
        if not self.held and chunk.endswith(EVENT_ENDS):  # nearly every chunk: whole events
            return chunk
        chunk = self.held + chunk
        cut = event_end(chunk)
        if len(chunk) - cut > HELD_EVENT_MAX:
            cut = len(chunk)
        chunk, self.held = chunk[:cut], chunk[cut:]
        return chunk

    def rest(self) -> bytes:
        """An unfinished event the stream ended on, as it came."""
        return self.held


class _IdleWatch:
    """STREAM_IDLE_TIMEOUT for one relay: the wait for each upstream chunk may last at most `idle` seconds.

    One timer for the stream's life, re-armed only when it fires: an asyncio.timeout around each
    wait made and cancelled a timer (and its context manager) for every chunk, and held them while
    the stream waited (docs/benchmark.md, "the idle timeout as one timer a stream"). When the timer
    finds the current wait older than `idle`, it cancels the waiting task and the wait raises
    TimeoutError; a cancellation of its own (the client left) stays a CancelledError, as with
    asyncio.timeout, by counting the task's cancellations.
    """

    __slots__ = ("idle", "loop", "task", "since", "handle", "fired")

    def __init__(self, idle: float | None) -> None:
        self.idle = idle or None
        self.loop = asyncio.get_running_loop()
        self.task: asyncio.Task | None = None  # set while a chunk is awaited
        self.since = 0.0  # when that wait began (loop time)
        self.handle: asyncio.TimerHandle | None = None
        self.fired = False

    async def chunk_next(self, chunks: AsyncIterator[bytes]) -> bytes | None:
        """The next upstream chunk, None at the end; TimeoutError after `idle` seconds of silence."""
        if self.idle is None:
            try:
                return await anext(chunks)
            except StopAsyncIteration:
                return None
        self.task, self.since = asyncio.current_task(), self.loop.time()
        if self.handle is None:
            self.handle = self.loop.call_at(self.since + self.idle, self._check)
        try:
            return await anext(chunks)
        except StopAsyncIteration:
            return None
        except asyncio.CancelledError:
            if self.fired and self.task is not None and self.task.uncancel() == 0:
                raise TimeoutError from None
            raise
        finally:
            self.task = None

    def _check(self) -> None:
        self.handle = None
        if self.task is None:  # not waiting now: the next wait arms the timer again
            return
        due = self.since + self.idle
        if self.loop.time() >= due - 0.001:  # a loop may run a timer slightly early
            self.fired = True
            self.task.cancel()
        else:
            self.handle = self.loop.call_at(due, self._check)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


class RelayEnd:
    """The end of one relay, done once however the relay ends (or if it never starts):
    the upstream is closed at once (no more tokens spent), then the exchange is logged."""

    __slots__ = ("upstream", "exchange", "log", "done", "sent")

    def __init__(self, upstream: httpx.Response, exchange: Exchange, log: Callable[[], Awaitable[None]]) -> None:
        self.upstream, self.exchange, self.log = upstream, exchange, log
        self.done = False
        self.sent = False  # the relay gave the client a first chunk

    async def abandon(self) -> None:
        """The ASGI adapter's end of a response the client left: before its relay began, or during it
        (the server may close the response before the relay's own end runs)."""
        await self(False, "before the response ended" if self.sent else "before the response started")

    async def __call__(self, finished: bool, where: str = "before the response ended") -> None:
        if self.done:
            return
        self.done = True
        if not finished:  # closed unfinished, cancelled, or never started: the client left
            self.exchange.cancelled_mark(where)
        try:
            await asyncio.shield(self.upstream.aclose())
        finally:  # logged even if a second cancellation lands while the upstream closes
            await asyncio.shield(self.log())


class _AnswerLog:
    """How a relayed answer is logged when it ends (its RelayEnd calls it): the captured body finished, decoded and
    masked off the event loop when it is big, and the response journaled. An object with slots, not a closure in
    relay_response: every stream in flight holds it, and the closure held a cell for each of these."""

    __slots__ = ("x", "upstream", "headers", "content_type", "is_sse", "capture", "links", "observer", "observed",
                 "progress", "handed")

    def __init__(self, x: Exchange, upstream: httpx.Response, headers: list[tuple[str, str]], content_type: str,
                 is_sse: bool, capture: BodyCapture, links: "_Links") -> None:
        self.x, self.upstream, self.headers, self.content_type, self.is_sse = x, upstream, headers, content_type, is_sse
        self.capture, self.links = capture, links
        self.observer = x.answer_observer
        self.observed = _Observed() if self.observer is not None else None
        self.progress = AnswerProgress(capture, x.scrubber, self.head)
        self.handed = False  # the answer went to the server: its status and headers are what the client got

    def head(self) -> ResponseRecord:
        """The response record as the answer stands (a progress file starts with it)."""
        return self.x.response_record(status=self.upstream.status_code, headers=self.headers,
                                      content_type=self.content_type, is_stream=self.is_sse)

    async def __call__(self) -> None:
        x, upstream, headers, capture = self.x, self.upstream, self.headers, self.capture
        cut = x.shutting_down and not self.handed  # collected whole, cut by the shutdown: the client gets the 503
        if cut:
            x.notes.append(f"the upstream's answer ({upstream.status_code}) was still arriving when the gateway shut "
                           "down; the client got a 503")
        if self.links.on and capture.spool is None:  # read as the answer is logged, so its steps say so
            self.links.answer = links_in_body(x, b"".join(capture.parts), headers)
        if self.observer is not None:
            await self.observed.run(self.observer, x, upstream.status_code, headers)
        if x.cache_fill is not None:  # a cache miss: stored before the exchange ends, so readable at once
            await x.cache_fill.finish(x, upstream.status_code, headers, is_sse=self.is_sse,
                                      replaced=self.observed is not None and self.observed.result is not None)
        record = self.head()
        if cut:
            record.status = 503
        try:
            if capture.blocking():
                await off_loop(capture.finish, record, x.scrubber)
            else:
                capture.finish(record, x.scrubber)
        finally:
            x.response_log(record)
            self.progress.close()  # not when the record could not be journaled: the file is then the log's one trace


def _final_event_sent(exchange: Exchange, capture: BodyCapture, sent: bytes) -> bool:
    """Whether the client had the stream's final event (sent: the last bytes it took), so that only the
    upstream's end of body was still on its way: then the exchange is complete, ended with that event.
    A stream the shutdown cut is not: the client's body was cut short, its final event sent or not."""
    if exchange.shutting_down or not exchange.provider.stream_ended(sent):
        return False
    if capture.event_offsets:  # it ended with that event, not when the leaving or the silence was seen
        exchange.ended_ms = capture.event_offsets[-1]
    exchange.clock_stop()
    return True


def _read_on(exchange: Exchange, capture: BodyCapture, sent: bytes) -> None:
    """The client left an exchange whose key counts its usage: an abort as any other (unless it had the
    stream's final event), whose answer the relay reads on to the end, so its tokens and cost are counted."""
    if not _departure(exchange, capture, sent):
        exchange.decisions.append({"step": KEY_STEP, "decision": "answer read to its end after the client left",
                                   "why": "the key counts this answer's tokens or spend"})


def _departure(exchange: Exchange, capture: BodyCapture, sent: bytes) -> bool:
    """The client went away: an abort, unless it had the stream's final event."""
    if _final_event_sent(exchange, capture, sent):
        return True
    exchange.cancelled_mark("before the response ended")
    return False


def _upstream_broke(exchange: Exchange, capture: BodyCapture, sent: bytes, exc: Exception,
                    idle_timeout: float | None) -> bool:
    """The upstream went silent or failed mid-answer: whether the answer broke off. Silence or a reset after
    the stream's final event (data: [DONE]) loses nothing: no error event after it, the exchange complete."""
    if _final_event_sent(exchange, capture, sent):
        return False
    exchange.fail(Outcome.UPSTREAM_ERROR, f"upstream sent nothing for {idle_timeout:g} s (STREAM_IDLE_TIMEOUT)"
                  if isinstance(exc, TimeoutError) else
                  f"upstream failed mid-response: {type(exc).__name__}: {exc}".strip())
    return True


async def relay_stream(upstream: httpx.Response, exchange: Exchange, capture: BodyCapture, end: RelayEnd,
                       *, is_sse: bool, chunk_filter: AnswerFilter | None = None,
                       idle_timeout: float | None = None, progress: AnswerProgress | None = None) -> AsyncIterator[bytes]:
    """Yield upstream bytes unchanged, teeing them into the capture; log however it ends.

    Ends: completed; upstream error (reset, early close, read or idle timeout: SSE clients get a
    final `event: error`, other bodies have their connection cut via UpstreamBroken); client gone
    (CancelledError in the iterator, or the iterator closed unfinished). A chunk_filter (a step's)
    changes what the client gets; the capture still sees every upstream byte. A progress (a streamed
    answer's) hears of each chunk the client took, so that a crash leaves what it had.
    """
    # The answer's byte stream itself, not httpx's aiter_raw: its generator, request context and chunker were
    # held by every stream in flight and passed every chunk on unchanged (RelayEnd closes the answer).
    chunks = aiter(upstream.stream)
    watch = _IdleWatch(idle_timeout)
    finished = broken = False
    whole_events = _WholeEvents() if _error_tail_allowed(upstream, is_sse) else None
    sent = b""  # the last bytes the client took: whether one that hangs up had the stream's end
    gone = False  # the client's departure is marked (a key counting usage: the answer is read on)
    try:
        while (chunk := await watch.chunk_next(chunks)) is not None:
            if exchange.ttfb_ms is None:
                exchange.ttfb_ms = exchange.elapsed_ms()
            capture.feed(chunk)
            if exchange.client_gone:  # read to the end for its usage, sent to no one
                if not gone:
                    gone = True
                    _read_on(exchange, capture, sent if is_sse else b"")
                continue
            if chunk_filter is not None:
                chunk = chunk_filter(chunk)
            if whole_events is not None and chunk:
                chunk = whole_events(chunk)
            if chunk:
                if exchange.cache_fill is not None:
                    exchange.cache_fill.feed(chunk)
                yield chunk
                if not sent:
                    end.sent = True
                sent = chunk
                if progress is not None:
                    progress.tick()
        if exchange.client_gone and not gone:
            _read_on(exchange, capture, sent if is_sse else b"")
        rest = (whole_events.rest() if whole_events is not None else b"") + (
            chunk_filter.rest() if chunk_filter is not None else b"")
        if rest and not exchange.client_gone:
            if exchange.cache_fill is not None:
                exchange.cache_fill.feed(rest)
            yield rest
        finished = True
        exchange.clock_stop()
    except (TimeoutError, httpx.HTTPError) as exc:
        finished = True
        broken = _upstream_broke(exchange, capture, sent if is_sse else b"", exc, idle_timeout)
    except asyncio.CancelledError:  # Django 5 cancels the response task when the client goes away
        finished = _departure(exchange, capture, sent if is_sse else b"")
        raise
    finally:
        watch.close()
        await end(finished)
    if broken:
        if whole_events is not None:
            yield exchange.provider.stream_error_event(exchange.error)  # a final event: the upstream failed
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


async def relay_collect_upto(relay: AsyncIterator[bytes], chunks: list[bytes],
                             cap: int) -> tuple[bool, UpstreamBroken | None]:
    """Run a relay into `chunks` until it ends (True) or holds more than cap bytes (False, relay left running)."""
    size = 0
    try:
        async for chunk in relay:
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                return False, None
    except UpstreamBroken as exc:
        return True, exc
    return True, None


async def chunks_then(chunks: list[bytes], relay: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """What was collected, then the rest of the relay."""
    for chunk in chunks:
        yield chunk
    chunks.clear()
    async for chunk in relay:
        yield chunk


async def chunks_replay(chunks: list[bytes], broken: UpstreamBroken) -> AsyncIterator[bytes]:
    """What relay_collect read, as a stream that breaks off where the upstream's did."""
    for chunk in chunks:
        yield chunk
    raise broken


class _Links:
    """An answer's links to point at the gateway: whether that may still happen, and the answer changed."""

    __slots__ = ("on", "answer")

    def __init__(self, on: bool) -> None:
        self.on, self.answer = on, None


async def _relay_links(x: Exchange, status: int, relay: AsyncIterator[bytes], end: RelayEnd,
                       headers: list[tuple[str, str]], links: _Links) -> HttpResponseBase:
    """An answer that may hold links for the gateway (proxy/links.py): taken whole, up to LINKS_BODY_MAX, and
    its links replaced in the client's copy (the log keeps it as it came); a larger one goes as it comes."""
    chunks: list[bytes] = []
    ended, broken = await relay_collect_upto(relay, chunks, LINKS_BODY_MAX)
    if not ended:
        links.on = False  # before the relay ends and logs: its steps must not say the links were changed
        response = StreamingHttpResponse(chunks_then(chunks, relay), status=status)
        response.gateway_abandon = end.abandon
        return response
    if broken is not None:
        return StreamingHttpResponse(chunks_replay(chunks, broken), status=status)
    response = HttpResponse(b"".join(chunks), status=status)
    if links.answer is not None:
        body, sent = links_apply(links.answer, headers, x.echo_mask)
        response.content = body
        response.gateway_headers = [*sent, *x.answer_headers, (REQUEST_ID_HEADER, x.request_id)]
    return response


def _answer_headers(x: Exchange, upstream: httpx.Response,
                    chunk_filter: AnswerFilter | None) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The answer's headers as the log and the cache keep them (the upstream's, a step's filter applied), and
    as the client gets them: their links to the upstream pointed at the gateway (proxy/links.py), those the
    server cannot send left out."""
    headers = headers_forward([(k.decode("latin-1"), v.decode("latin-1")) for k, v in upstream.headers.raw],
                              request=False)
    if chunk_filter is not None:
        headers = chunk_filter.headers(headers)
    sent = links_in_headers(x, headers) if x.provider.link_headers else headers
    return headers, headers_sendable(x, sent)


async def _shutdown_cut(x: Exchange, end: RelayEnd) -> HttpResponse:
    """The grace ran out while a small answer was collected whole: nothing was sent, so the client, still
    there, gets a 503 in its provider's shape (uvicorn's own would be a bare 500), as the log says."""
    await end(False)
    asyncio.current_task().uncancel()
    message = "The gateway shut down while the upstream's answer was arriving: retry the request."
    return json_error(503, x.provider.error_body(message, status=503), x.request_id)


async def relay_response(x: Exchange, upstream: httpx.Response,
                         filter_for: Callable[[bool], AnswerFilter | None]) -> HttpResponse | StreamingHttpResponse:
    """The client's answer: the upstream's status, headers and body as they come; logged when it ends."""
    content_type = upstream.headers.get("content-type", "")
    is_sse = content_type.lower().startswith("text/event-stream")
    chunk_filter = filter_for(is_sse)
    headers, sent_headers = _answer_headers(x, upstream, chunk_filter)
    capture = BodyCapture(spool_name=f"{x.request_id}.response", content_type=content_type,
                          content_encoding=upstream.headers.get("content-encoding", ""), stream=is_sse,
                          started=x.started)

    links = _Links(x.answer_observer is None and links_in_body_possible(x, upstream.status_code, content_type, is_sse))
    log = _AnswerLog(x, upstream, headers, content_type, is_sse, capture, links)
    end = RelayEnd(upstream, x, log)
    relay = relay_stream(upstream, x, capture, end, is_sse=is_sse, chunk_filter=chunk_filter,
                         idle_timeout=settings.STREAM_IDLE_TIMEOUT, progress=log.progress)
    try:
        response = await _answer(x, upstream, relay, end, is_sse, log.observed, links, sent_headers)
    except asyncio.CancelledError:
        if not x.shutting_down:  # the client left: logged by the relay's end, and goes on up
            raise
        return await _shutdown_cut(x, end)
    log.handed = True
    if isinstance(response, StreamingHttpResponse) and not end.done:
        # Streamed on from here: what the client gets must outlive this process (logs/pipeline/progress.py).
        log.progress.start(directory=settings.JOURNAL_DIR, instance=writer_get().instance)
    # The upstream's headers exactly, repeats and order kept (Django's header dict would join
    # repeats and keep one Set-Cookie): the ASGI adapter sends these.
    if getattr(response, "gateway_headers", None) is None:
        response.gateway_headers = [*sent_headers, *x.answer_headers, (REQUEST_ID_HEADER, x.request_id)]
    x.answer_headers = []  # in the answer's headers now, which the ASGI adapter lets go once sent
    return response


async def _answer(x: Exchange, upstream: httpx.Response, relay: AsyncIterator[bytes], end: RelayEnd, is_sse: bool,
                  observed: "_Observed | None", links: _Links,
                  sent_headers: list[tuple[str, str]]) -> HttpResponse | StreamingHttpResponse:
    """How the answer goes out: whole (for a hook, for its links, or small and framed) or streamed."""
    length = upstream.headers.get("content-length", "")
    if observed is not None and not is_sse and (not length.isdigit() or int(length) <= settings.HOOKS_RESPONSE_MAX_BYTES):
        return await _relay_observed(x, upstream, relay, end, observed, sent_headers)
    if links.on:
        return await _relay_links(x, upstream.status_code, relay, end, sent_headers, links)
    if not is_sse and length.isdigit() and int(length) <= SMALL_BODY_MAX:
        # A small framed answer goes out in one piece once it is all here (it came in one or two
        # reads anyway): the per-chunk streaming machinery costs more (docs/benchmark.md).
        chunks, broken = await relay_collect(relay)
        return (HttpResponse(b"".join(chunks), status=upstream.status_code) if broken is None
                else StreamingHttpResponse(chunks_replay(chunks, broken), status=upstream.status_code))
    response = StreamingHttpResponse(relay, status=upstream.status_code)
    # If the client leaves before the relay ends its own way (before its first byte, or as the
    # server closes the response), the ASGI adapter ends it: the upstream closes, the exchange is logged.
    response.gateway_abandon = end.abandon
    return response


class _Observed:
    """An answer collected whole for the exchange's answer observer (request hooks' on_response)."""

    def __init__(self) -> None:
        self.collecting = False
        self.chunks: list[bytes] = []
        self.result: bytes | HttpResponseBase | None = None

    async def run(self, observer, x: Exchange, status: int, headers: list[tuple[str, str]]) -> None:
        """Show the observer the answer: its whole body if it was collected and complete, else None."""
        body = b"".join(self.chunks) if self.collecting and x.outcome == Outcome.COMPLETED else None
        try:
            self.result = await observer(status, headers, body)
        except Exception:  # the observer reports its own failures; this is a bug in it
            logger.exception("answer observer failed on %s", x.request_id)


async def _relay_observed(x: Exchange, upstream: httpx.Response, relay: AsyncIterator[bytes], end: RelayEnd,
                          observed: _Observed, headers: list[tuple[str, str]]) -> HttpResponseBase:
    """An answer an observer wants whole: collected up to HOOKS_RESPONSE_MAX_BYTES, then maybe replaced.

    Past the cap it is streamed on (the observer then sees it at its end, without a body).
    """
    observed.collecting = True
    complete, broken = await relay_collect_upto(relay, observed.chunks, settings.HOOKS_RESPONSE_MAX_BYTES)
    if not complete:
        observed.collecting = False
        response = StreamingHttpResponse(chunks_then(observed.chunks, relay), status=upstream.status_code)
        response.gateway_abandon = end.abandon
        return response
    if broken is not None:
        return StreamingHttpResponse(chunks_replay(observed.chunks, broken), status=upstream.status_code)
    result = observed.result
    if isinstance(result, HttpResponseBase):  # a hook failed on the answer: its 500 instead
        # With its own headers, not the upstream's: their length and encoding describe another body.
        own = [(k, v) for k, v in result.items() if k.lower() != REQUEST_ID_HEADER.lower()]
        result.gateway_headers = [*own, ("Content-Length", str(len(result.content))), *x.answer_headers,
                                  (REQUEST_ID_HEADER, x.request_id)]
        return result
    if result is None:
        return HttpResponse(b"".join(observed.chunks), status=upstream.status_code)
    response = HttpResponse(result, status=upstream.status_code)
    # The new body goes out as it is: the upstream's encoding and length no longer describe it.
    kept = [(k, v) for k, v in headers if k.lower() not in ("content-length", "content-encoding")]
    response.gateway_headers = [*kept, ("Content-Length", str(len(result))), *x.answer_headers,
                                (REQUEST_ID_HEADER, x.request_id)]
    return response
