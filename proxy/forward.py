"""One exchange end to end: record the request, call the upstream, relay and log the answer."""

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from gateway_project.limits import REFUSAL_KEY
from logs.capture import BodyCapture, content_type_is_text, payload_name, payload_open
from logs.ids import exchange_id_new
from logs.models import Outcome
from logs.redact import ScrubbingWriter, credentials_collect, headers_mask, key_fingerprint, query_mask, text_scrub
from logs.writer import writer_get
from proxy.access import AccessDenied, access_check, headers_label
from proxy.paths import PathRefused, path_normalise
from proxy.providers import Provider, openai_error, provider_match, provider_prefixes
from proxy.relay import SMALL_BODY_MAX, Exchange, chunks_replay, relay_collect, relay_stream
from proxy.request_body import body_chunks, body_copy, body_size
from proxy.stream_usage import UsageChunkFilter, body_usage_inject, usage_inject_wanted
from proxy.upstream import client_get, headers_forward, url_parse

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Gateway-Request-Id"
# TRACE would echo credentials back, CONNECT would open a tunnel: neither is an API call.
PROXY_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def json_error(status: int, body: bytes, request_id: str | None = None) -> HttpResponse:
    """A JSON error answer, tagged with the request id when there is one."""
    resp = HttpResponse(body, status=status, content_type="application/json")
    if request_id:
        resp[REQUEST_ID_HEADER] = request_id
    return resp


def _scope_headers(request: HttpRequest) -> list[tuple[str, str]]:
    """The request headers exactly as received (order, case, repeats)."""
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope.get("headers", [])]


def _credential(provider: Provider, pairs: list[tuple[str, str]], query: str = "") -> str:
    """The client's credential for the provider, used only to compute a fingerprint."""
    for k, v in pairs:
        if k.lower() in provider.credential_headers:
            return v.split(" ", 1)[-1].strip()
    if provider.credential_query and query:  # Gemini also accepts ?key=
        from urllib.parse import parse_qsl

        for k, v in parse_qsl(query):
            if k in provider.credential_query:
                return v
    return ""


async def exchange_forward(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    """Forward one request to its provider and stream the answer back, logging both."""
    raw_path = request.scope.get("raw_path", b"").decode("latin-1") or request.path
    try:
        path = path_normalise(raw_path)
    except PathRefused as exc:
        return json_error(400, openai_error(f"Refused path: {exc}", kind="invalid_request_error"))
    match = provider_match(path)
    if match is None:
        known = ", ".join(provider_prefixes())
        return json_error(404, openai_error(f"No provider serves {path}. Known prefixes: {known}",
                                            kind="not_found"))
    provider, upstream_path = match
    rid = exchange_id_new()
    exchange = Exchange(rid)
    pairs = _scope_headers(request)
    content_type = request.META.get("CONTENT_TYPE", "")
    size = body_size(request)
    query = request.META.get("QUERY_STRING", "")
    refusal = request.scope.get(REFUSAL_KEY)  # set by gateway_project/limits.py while reading
    try:
        gateway_key = access_check(pairs)
    except AccessDenied as exc:
        gateway_key = None
        refusal = refusal or {"status": 401, "message": str(exc), "kind": "authentication_error"}
    record = {
        "t": "req", "id": rid, "provider": provider.name, "endpoint": path, "method": request.method,
        "query": query_mask(query), "headers": headers_label(headers_mask(pairs), gateway_key), "body": None,
        "body_size": size, "content_type": content_type, "client": request.META.get("REMOTE_ADDR", ""),
        "created": exchange.started_wall, "instance": writer_get().instance,
        "key_fp": key_fingerprint(_credential(provider, pairs, query)), "wire": provider.wire,
        "gateway_key": gateway_key.label if gateway_key else "",
    }
    # Every record of this exchange loses the request's credentials, wherever they echo.
    writer = ScrubbingWriter(writer_get(), credentials_collect(pairs, query))
    if refusal is None and request.method not in PROXY_METHODS:
        refusal = {"status": 405, "message": f"Method {request.method} is not supported by the gateway."}
    if refusal is None and size > settings.MAX_REQUEST_BODY_BYTES:
        refusal = {"status": 413, "message": f"Request body of {size} bytes exceeds MAX_REQUEST_BODY_BYTES "
                                             f"({settings.MAX_REQUEST_BODY_BYTES})."}
    if refusal is not None:  # logged without its body, answered in the provider's error shape
        record["body_size"] = refusal.get("body_size", size)
        writer.submit(record)
        resp = _answer_gateway_error(refusal["status"], refusal["message"], provider, exchange, writer,
                                     kind=refusal.get("kind", "invalid_request_error"),
                                     outcome=refusal.get("outcome"))
        if refusal["status"] == 405:
            resp["Allow"] = ", ".join(sorted(PROXY_METHODS))
        return resp
    content: bytes | AsyncIterator[bytes] = b""
    if size and (size > settings.LOG_BODY_INLINE_MAX_BYTES or not content_type_is_text(content_type)
                 or content_type.lower().startswith("multipart/")):
        name = payload_name(provider.name, content_type)
        try:
            sha = await asyncio.to_thread(body_copy, request, name)
            record["body_file"] = {"name": name, "size": size, "sha256": sha}
            # From Django's spool, not the payload copy: the log writer may move or delete that
            # copy (multipart split) while the upstream is still reading.
            content = body_chunks(request)
        except OSError as exc:  # payload store full or unwritable: forward anyway, say so in the log
            await asyncio.to_thread(_payload_discard, name)
            exchange.notes.append(f"request body file not saved: {exc}")
            content = body_chunks(request)
    elif size:
        content = request.read()
        try:
            record["body"] = content.decode("utf-8")
        except UnicodeDecodeError:
            name = payload_name(provider.name, "application/octet-stream")
            try:
                with payload_open(name) as f:
                    f.write(content)
                record["body_file"] = {"name": name, "size": size, "sha256": ""}
            except OSError as exc:
                _payload_discard(name)
                exchange.notes.append(f"request body file not saved: {exc}")
    writer.submit(record)  # durable before the upstream sees anything

    headers = headers_forward(pairs, request=True)
    if isinstance(content, bytes) and size and provider.wire == "openai" and usage_inject_wanted(
            request.method, upstream_path):
        injected = body_usage_inject(content)
        if injected is not None:  # the log keeps what the client sent; the flag says what changed
            content, size, exchange.usage_injected = injected, len(injected), True
            # The usage chunk is cut out of the plain text stream: ask for it uncompressed.
            headers = [(k, v) for k, v in headers if k.lower() != "accept-encoding"]
            headers.append(("Accept-Encoding", "identity"))
    if size:
        headers.append(("Content-Length", str(size)))
    url = provider.upstream_url + upstream_path + (f"?{query}" if query else "")
    client = client_get()
    try:
        # A bare httpx.Request: client.build_request would add httpx's own default headers.
        upstream_req = httpx.Request(request.method, url_parse(url),
                                     headers=headers, content=content,
                                     extensions={"timeout": client.timeout.as_dict()})
        upstream = await client.send(upstream_req, stream=True)
    except asyncio.CancelledError:
        # Django cancels the view task when the client goes away; httpx closes the upstream socket.
        exchange.cancelled_mark("while waiting for the upstream")
        _response_log(writer, provider, exchange, None, None, None)
        raise
    except httpx.TimeoutException as exc:
        return _answer_gateway_error(504, _timeout_message(exc), provider, exchange, writer)
    except httpx.HTTPError as exc:
        return _answer_gateway_error(502, f"Upstream unreachable: {type(exc).__name__}: {exc}", provider,
                                     exchange, writer)
    except Exception as exc:  # anything else still ends in a clear answer and a finished log entry
        log.exception("exchange %s failed before the upstream answered", rid)
        return _answer_gateway_error(500, f"Gateway failed to forward the request: {type(exc).__name__}: {exc}",
                                     provider, exchange, writer)

    resp_headers = headers_forward([(k.decode("latin-1"), v.decode("latin-1"))
                                    for k, v in upstream.headers.raw], request=False)
    resp_type = upstream.headers.get("content-type", "")
    is_sse = resp_type.lower().startswith("text/event-stream")
    capture = BodyCapture(provider=provider.name, content_type=resp_type,
                          content_encoding=upstream.headers.get("content-encoding", ""), stream=is_sse)

    def on_end() -> None:
        _response_log(writer, provider, exchange, upstream, resp_headers, capture)

    chunk_filter = UsageChunkFilter() if exchange.usage_injected and is_sse else None
    relay = relay_stream(upstream, exchange, capture, on_end, is_sse=is_sse, chunk_filter=chunk_filter,
                         idle_timeout=settings.STREAM_IDLE_TIMEOUT)
    length = upstream.headers.get("content-length", "")
    if not is_sse and length.isdigit() and int(length) <= SMALL_BODY_MAX:
        # A small framed answer goes out in one piece once it is all here (it came in one or two
        # reads anyway): the per-chunk streaming machinery was ~9% of a chat call's CPU.
        chunks, broken = await relay_collect(relay)
        response = (HttpResponse(b"".join(chunks), status=upstream.status_code) if broken is None
                    else StreamingHttpResponse(chunks_replay(chunks, broken), status=upstream.status_code))
    else:
        response = StreamingHttpResponse(relay, status=upstream.status_code)
    headers_apply(response, resp_headers)
    response[REQUEST_ID_HEADER] = rid
    return response


def headers_apply(response: HttpResponse | StreamingHttpResponse, pairs: list[tuple[str, str]]) -> None:
    """Copy upstream headers onto a Django response (repeats joined, Set-Cookie: first kept)."""
    del response["Content-Type"]  # Django's default; the upstream's own (if any) replaces it
    for k, v in pairs:
        if k in response.headers and k.lower() != "set-cookie":
            response.headers[k] = f"{response.headers[k]}, {v}"
        elif k not in response.headers:
            response.headers[k] = v


def _response_log(writer, provider: Provider, exchange: Exchange, upstream: httpx.Response | None,
                  resp_headers: list[tuple[str, str]] | None, capture: BodyCapture | None) -> None:
    """Submit the response record for an exchange, however it ended."""
    record = {
        "t": "resp", "id": exchange_id_new(), "request_id": exchange.request_id, "provider": provider.name,
        "status": upstream.status_code if upstream is not None else None,
        "headers": headers_mask(resp_headers or []),
        "content_type": upstream.headers.get("content-type", "") if upstream is not None else "",
        "is_stream": bool(capture and capture.stream), "duration_ms": exchange.elapsed_ms(),
        "ttfb_ms": exchange.ttfb_ms, "outcome": exchange.outcome, "error": exchange.error,
        "created": exchange.started_wall, "wire": provider.wire, "usage_injected": exchange.usage_injected,
    }
    if capture is not None:
        # Stream event offsets count from the capture's start; this places them on the exchange clock.
        record["offsets_base_ms"] = round((capture.started - exchange.started) * 1000, 2)
        record.update(capture.finish())
    notes = [n for n in [*exchange.notes, record.get("capture_error", "")] if n]
    if notes:
        record["capture_error"] = "; ".join(notes)
    writer.submit(record)
    exchange.end()


def _timeout_message(exc: httpx.TimeoutException) -> str:
    """Name the timeout that fired and the setting behind it."""
    if isinstance(exc, httpx.ConnectTimeout):
        return f"Upstream connect timed out after {settings.UPSTREAM_CONNECT_TIMEOUT:g} s (UPSTREAM_CONNECT_TIMEOUT)"
    if isinstance(exc, httpx.PoolTimeout):
        return f"No free upstream connection within {settings.UPSTREAM_CONNECT_TIMEOUT:g} s (UPSTREAM_MAX_CONNECTIONS)"
    if isinstance(exc, httpx.ReadTimeout):
        return f"Upstream sent no answer within {settings.UPSTREAM_READ_TIMEOUT:g} s (UPSTREAM_READ_TIMEOUT)"
    return f"Upstream timed out: {type(exc).__name__}"


def _payload_discard(name: str) -> None:
    """Remove a partly written payload file (it has no row and would be an orphan)."""
    try:
        (settings.FILE_STORAGE_PATH / name).unlink(missing_ok=True)
    except OSError:
        pass


def _answer_gateway_error(status: int, message: str, provider: Provider, exchange: Exchange, writer,
                          *, kind: str = "gateway_error", outcome: str | None = None) -> HttpResponse:
    """Answer and log an exchange the gateway itself ended."""
    message = text_scrub(message, getattr(writer, "secrets", []))
    body = provider.error_body(message, kind=kind, status=status)
    exchange.outcome = outcome or (
        Outcome.GATEWAY_ERROR if status != 504 and status != 502 else Outcome.UPSTREAM_ERROR)
    exchange.error = message
    exchange.clock_stop()
    record = {
        "t": "resp", "id": exchange_id_new(), "request_id": exchange.request_id, "provider": provider.name,
        "status": status, "headers": [["Content-Type", "application/json"]], "content_type": "application/json",
        "body": body.decode(), "body_size": len(body), "duration_ms": exchange.elapsed_ms(),
        "outcome": exchange.outcome, "error": message, "created": exchange.started_wall,
        "wire": provider.wire, "usage_injected": exchange.usage_injected,
    }
    if exchange.notes:
        record["capture_error"] = "; ".join(exchange.notes)
    writer.submit(record)
    exchange.end()
    return json_error(status, body, exchange.request_id)
