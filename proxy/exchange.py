"""One proxied exchange as it runs: what was asked, what the steps did, how it ends, and the log records it writes.

Every stage of the request path (proxy/forward.py) reads and fills this one object; it is also
what the policy steps see. It writes exactly two journal records: the request, before anything
goes upstream, and the response, however the exchange ends.
"""

import asyncio
import sys
import time

from django.http import HttpRequest, HttpResponse, HttpResponseBase

from logs.ids import exchange_id_new
from logs.outcomes import Outcome
from logs.pipeline.writer import writer_get
from logs.records import FileRecord, FrameRecord, RequestRecord, ResponseRecord, record_line
from logs.redaction.echoes import echo_prints
from logs.redaction.redact import (credentials_collect, header_is_secret, headers_mask, key_fingerprint, path_mask,
                                    query_mask, url_credentials)
from logs.redaction.scrub import Scrubber, text_scrub
from proxy.paths import Route
from proxy.request_body import BodyReading, body_reading
from proxy.threads import off_loop

REQUEST_ID_HEADER = "X-Gateway-Request-Id"

_INFLIGHT: set["Exchange"] = set()


def exchanges_inflight() -> int:
    """How many exchanges of this process have not yet logged their response."""
    return len(_INFLIGHT)


# The message of the cancellation exchanges_interrupt sends: the exchange's task ends quietly
# on it (proxy/asgi.py), as on its client's departure, instead of raising to the server.
SHUTDOWN_CANCEL = "gateway shutting down: grace period over"


# Calls still receiving their request body (no exchange yet): cut at the grace's end too (proxy/asgi.py).
RECEIVING: set[asyncio.Task] = set()


def exchanges_interrupt() -> int:
    """Cancel every exchange still in flight (shutdown grace over); each logs itself interrupted."""
    count = 0
    for exchange in list(_INFLIGHT):
        exchange.shutting_down = True
        if exchange.task is not None and not exchange.task.done():
            exchange.task.cancel(SHUTDOWN_CANCEL)
            count += 1
    for task in list(RECEIVING):
        if not task.done():
            task.cancel(SHUTDOWN_CANCEL)
            count += 1
    return count


def json_error(status: int, body: bytes, request_id: str | None = None) -> HttpResponse:
    """A JSON error answer, tagged with the request id when there is one."""
    resp = HttpResponse(body, status=status, content_type="application/json")
    if request_id:
        resp[REQUEST_ID_HEADER] = request_id
    return resp


def response_header_pairs(response: HttpResponseBase) -> list[tuple[str, str]]:
    """The headers a Django response of the gateway's own goes out with: its own, then one Set-Cookie per cookie
    (Django keeps cookies apart from its headers: they are sent, and logged, from here)."""
    return [*response.items(), *(("Set-Cookie", c.output(header="").strip()) for c in response.cookies.values())]


class Exchange:
    """State of one exchange, filled in as it runs."""

    # Slots, not a __dict__: an exchange lives as long as its stream, and a dict of these 35
    # attributes held 1.5 KiB for each stream in flight.
    __slots__ = ("answer_headers", "answer_observer", "body", "cache_fill", "cache_hit", "cache_source", "client",
                 "content_type", "decisions", "ended_ms", "error", "forward_body", "forward_headers", "forwarded",
                 "forwarded_body_file", "gateway_key", "headers", "held_ms", "method", "notes", "outcome",
                 "provider", "query", "refusal", "request_changed", "request_id", "route", "scrubber",
                 "scheme", "sent", "shutting_down", "started", "started_wall", "task", "ttfb_ms", "usage_injected",
                 "websocket", "echo_mask", "usage_counted", "client_gone", "session_model_judges", "_reading")

    def __init__(self, request: HttpRequest, route: Route) -> None:
        self.request_id = exchange_id_new()
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.route = route
        self.provider = route.provider
        self.method = request.method or ""
        self.scheme = request.scope.get("scheme", "http")  # for links an answer points at the gateway
        self.query = request.META.get("QUERY_STRING", "")
        # The request headers exactly as received (order, case, repeats).
        # Names interned: every request repeats the same few, and a stream holds its headers while it lasts.
        self.headers = [(sys.intern(k.decode("latin-1")), v.decode("latin-1"))
                        for k, v in request.scope.get("headers", [])]
        self.content_type = request.META.get("CONTENT_TYPE", "")
        self.client = request.META.get("REMOTE_ADDR", "")
        self.body = request.gateway_body  # proxy/request_body.BodySpool
        self.websocket = False  # a WebSocket upgrade (proxy/websocket.py): a realtime session, no body
        self.session_model_judges: tuple = ()  # judges of the models a realtime session asks for (session_policy)
        self.refusal = request.gateway_refusal
        # What goes upstream; the steps may change it (the log keeps what was received).
        self.forward_headers: list[tuple[str, str]] = []
        self.forward_body: bytes | None = None  # set by a step that rewrote the body
        self.usage_injected = False
        # What the policy steps did, for the log ({"step": name, "decision": ..., ...} each), and
        # headers they add to the client's answer, whoever answers (RateLimit-*, X-Gateway-Cache).
        self.decisions: list[dict] = []
        self.answer_headers: list[tuple[str, str]] = []
        self.forwarded: dict | None = None  # what went upstream, when a step changed the request
        self.request_changed = False  # a step changed method, path, query, headers or body: log x.forwarded
        self.forwarded_body_file = None  # that body as a spool file (logs.records.FileRef), when large or binary
        # Called with the answer before it is logged (request hooks' on_response): may replace a
        # whole answer's body, or answer instead. None: the relay never waits for a whole body.
        self.answer_observer = None
        self.cache_hit: bool | None = None
        self.cache_fill = None  # proxy/cache.CacheFill: a cache miss's answer, stored if it ends complete
        self.cache_source = ""
        self.echo_mask = None  # proxy/key_policy.EchoMask: a stored provider credential, kept from the answer
        self.held_ms: float | None = None
        self.gateway_key = None  # proxy/access.AccessKey, once checked
        # Every record and body file of this exchange loses the request's credentials, wherever they echo, and
        # the one the upstream's URL holds (httpx sends it as basic auth).
        self.scrubber = Scrubber(credentials_collect(self.headers, self.query, self.route.path)
                                 + url_credentials(self.route.upstream_base))
        self.ttfb_ms: float | None = None
        self.ended_ms: float | None = None
        self.outcome = Outcome.COMPLETED
        self.error = ""
        self.notes: list[str] = []  # what the log could not keep (a file not saved)
        self.shutting_down = False
        self.sent = False  # handed to an upstream connection (until then the upstream cannot have it)
        # A gateway key counts this answer's tokens or spend (proxy/key_policy.py): once sent, a client that
        # leaves does not end the exchange; its answer is read to the end for its usage (client_gone).
        self.usage_counted = False
        self.client_gone = False  # the client left while such an answer was on its way (proxy/asgi.py)
        self._reading: tuple | None = None  # body_reading's last: (body, Content-Encoding, Content-Type, reading)
        try:
            self.task: asyncio.Task | None = asyncio.current_task()
        except RuntimeError:
            self.task = None
        _INFLIGHT.add(self)

    @property
    def preflight(self) -> bool:
        """A browser's CORS preflight: OPTIONS naming an Origin and the method it asks for, with no credential.

        The Fetch standard has browsers send it before any call that carries an Authorization or
        custom header, and never with credentials: a gateway key cannot be asked of it (the call
        that follows is checked like any other), and nothing the steps decide by key, model or body
        applies to it. One that carries a credential header, or a body (browsers send none), is no browser's,
        and is treated as any request: else anyone could have the gateway forward and log, without a key, a
        body of 1 KiB of gzip that the log keeps as 1 MiB of text.
        """
        if self.method != "OPTIONS" or self.body.size:
            return False
        names = {k.lower() for k, _ in self.headers}
        # Any header the log masks: a provider's, the gateway key, a cookie.
        return {"origin", "access-control-request-method"} <= names and not any(map(header_is_secret, names))

    # --- the body as the steps read it
    async def body_reading(self) -> BodyReading:
        """The body that goes upstream now, read (proxy/request_body.body_reading) once for every step that asks:
        again only after a step replaced it or its encoding (a hook, an operator's edit in the hold queue). A body
        spooled to disk or compressed is read off the event loop."""
        edited = self.forward_body is not None
        encoding = ",".join(v for k, v in self.forward_headers if k.lower() == "content-encoding")
        content_type = next((v for k, v in self.forward_headers if k.lower() == "content-type"),
                            self.content_type) if edited else self.content_type
        memo = self._reading
        if memo is not None and memo[0] is self.forward_body and memo[1:3] == (encoding, content_type):
            return memo[3]
        body = self.forward_body if edited else self.body.in_memory()
        if body is None and self.body.size or encoding:
            reading = await off_loop(self._body_read, body, content_type)
        else:
            reading = body_reading(self.forward_headers, body, content_type)
        self._reading = (self.forward_body, encoding, content_type, reading)
        return reading

    def body_reading_drop(self) -> None:
        """The steps are done with it: a stream's exchange lives as long as the stream, and the reading (a parsed
        body, decoded up to 16 MiB) is not kept that long."""
        self._reading = None

    def _body_read(self, body: bytes | None, content_type: str) -> BodyReading:
        return body_reading(self.forward_headers, self.body.read_all() if body is None else body, content_type)

    def body_refusal(self, step: str, why: str, needs: str, **noted: str) -> HttpResponse:
        """The answer to a request whose body a step must read and cannot read for sure (body_reading's `unread`):
        bad input, a 400 in the provider's error shape naming the problem, logged as that step's decision (one: a
        step may say more of it in `noted`, its own "decision" too), never forwarded. Every step refuses such a
        body here (it was a 403 from the key step, the same body's 400 from the upstream without a key). `needs`:
        what the step reads it for."""
        message = f"Request refused: {why}, and the gateway must read it for {needs}."
        self.decisions.append({"step": step, "decision": "refused: the body cannot be read", **noted, "reason": message})
        self.outcome, self.error = Outcome.GATEWAY_ERROR, message
        return json_error(400, self.provider.error_body(message, kind="invalid_request_error", status=400))

    # --- the clock and the outcome
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

    # --- the log
    def frame_log(self, record: FrameRecord) -> None:
        """Journal one frame of a realtime session as it passes."""
        self._submit(record)

    def file_log(self, record: FileRecord) -> None:
        """Journal a file a realtime session completed."""
        self._submit(record)

    def _submit(self, record: RequestRecord | ResponseRecord | FrameRecord | FileRecord) -> None:
        """Journal a record, the request's credentials masked wherever they show up in it."""
        writer_get().submit(self.scrubber.line(record_line(record)), record.kind)

    def request_record(self) -> RequestRecord:
        """The request as received, credentials masked (the caller adds its body)."""
        headers = headers_mask(self.headers)
        if self.gateway_key is not None:
            headers = self.gateway_key.headers_label(headers)
        return RequestRecord(
            id=self.request_id, provider=self.provider.name, endpoint=path_mask(self.route.path), method=self.method,
            query=query_mask(self.query), headers=headers, body_size=self.body.size, content_type=self.content_type,
            client=self.client, created=self.started_wall, instance=writer_get().instance,
            key_fp=key_fingerprint(self.provider.credential(self.headers, self.query)),
            gateway_key=self.gateway_key.label if self.gateway_key else "")

    def request_log(self, record: RequestRecord) -> None:
        """Journal the request: durable before the upstream sees anything."""
        self._submit(record)

    def response_record(self, *, status: int | None, headers: list[tuple[str, str]], content_type: str,
                        is_stream: bool = False) -> ResponseRecord:
        """The response record as the exchange stands now (the caller adds the body)."""
        return ResponseRecord(
            id=exchange_id_new(), request_id=self.request_id, provider=self.provider.name, status=status,
            headers=headers_mask(headers), content_type=content_type, is_stream=is_stream,
            duration_ms=self.elapsed_ms(), ttfb_ms=self.ttfb_ms, outcome=self.outcome, error=self.error,
            notes="; ".join(self.notes), created=self.started_wall, usage_injected=self.usage_injected,
            steps=self.decisions or None, forwarded=self.forwarded, cache_hit=self.cache_hit,
            cache_source=self.cache_source, held_ms=self.held_ms, forwarded_body_file=self.forwarded_body_file,
            echo_prints=echo_prints(self.scrubber.secrets) if is_stream else None)

    def response_log(self, record: ResponseRecord) -> None:
        """Journal the response: the exchange is over as far as this process is concerned."""
        try:
            self._submit(record)
        finally:
            self.end()

    def end(self) -> None:
        """No longer in flight (shutdown stops waiting for it); identical requests waiting on its cache fill go on."""
        _INFLIGHT.discard(self)
        if self.cache_fill is not None:
            self.cache_fill.release()

    def gateway_answer(self, status: int, message: str, *, kind: str = "gateway_error",
                       outcome: str | None = None) -> HttpResponse:
        """End the exchange with the gateway's own error answer, in the provider's shape, and log it."""
        message = text_scrub(message, self.scrubber.secrets)
        body = self.provider.error_body(message, kind=kind, status=status)
        self.outcome = outcome or (Outcome.UPSTREAM_ERROR if status in (502, 504) else Outcome.GATEWAY_ERROR)
        self.error = message
        self.clock_stop()
        record = self.response_record(status=status, headers=[("Content-Type", "application/json")],
                                      content_type="application/json")
        record.body, record.body_size = body.decode(), len(body)
        self.response_log(record)
        response = json_error(status, body, self.request_id)
        for name, value in self.answer_headers:
            response[name] = value
        return response
