"""The proxy's ASGI entry (gateway_project/asgi.py -> proxy/asgi.py): routing, answers and log, aborts, errors."""

import gc
import re
import socket
import uuid

import httpx
import pytest

from gateway_project.asgi import serves_django
from logs.models import Request, Response
from proxy import views
from tests.hold.conftest import until

pytestmark = pytest.mark.django_db(transaction=True)


def test_only_proxied_paths_reach_the_proxy():
    assert not serves_django("/v1/chat/completions")
    assert not serves_django("/nowhere")  # the proxy view answers its JSON 404
    assert serves_django("/health")
    assert serves_django("/admin/")
    assert serves_django("/static/admin/css/base.css")


def test_answer_and_log(gateway, upstream, log_flush):
    r = httpx.post(f"{gateway.url}/v1/chat/completions?x=1", json={"model": "gpt-4o-mini", "messages": []},
                   headers={"Authorization": "Bearer sk-fastpath-0123456789"})
    assert r.status_code == 200 and r.json()["object"] == "chat.completion"
    assert r.headers["x-request-id"] == "mock-req-1" and r.headers["content-type"] == "application/json"
    assert upstream.received[-1].query == "x=1"
    log_flush()
    req = Request.objects.get()
    assert req.id.hex == r.headers["x-gateway-request-id"] and req.query_string == "x=1"
    assert Response.objects.get(request=req).outcome == "completed"


def _stream_read_until(gateway, mark: bytes, events: int, delay_ms: int, query: str = "",
                       then=None) -> tuple[bytes, str]:
    """A streamed chat on a raw socket, read until `mark` (then `then()`, the stream still open), then the
    connection closed: (what came, request id)."""
    body = b'{"model": "m", "stream": true, "messages": []}'
    head = (f"POST /v1/chat/completions{'?' + query if query else ''} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nx-mock-events: {events}\r\nx-mock-delay-ms: {delay_ms}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        s.sendall(head + body)
        got = b""
        while mark not in got:
            chunk = s.recv(65536)
            assert chunk, f"connection closed before {mark!r}: {got!r}"  # else this loop would spin
            got += chunk
        if then is not None:
            then()
    # This exchange's row, by its id: a record another test left in flight must not be taken for it.
    return got, re.search(rb"x-gateway-request-id: (\w+)", got, re.IGNORECASE).group(1).decode()


def test_client_leaving_mid_stream_is_logged_as_aborted(gateway, log_flush):
    _, rid = _stream_read_until(gateway, b"data: ", events=50, delay_ms=50)
    log_flush()  # waits for the aborted exchange's response record, then for the database
    resp = Response.objects.get(request_id=rid)
    assert resp.outcome == "client_aborted" and resp.duration_ms < 2000
    assert resp.body.startswith("data: ")


def test_client_hanging_up_at_the_last_event_is_logged_completed(gateway, log_flush):
    """openai-python closes the connection as soon as it reads `data: [DONE]`; the upstream's end of
    body trails that event (here by the mock's 20 ms pause): the exchange is complete, not aborted."""
    _, rid = _stream_read_until(gateway, b"data: [DONE]", events=3, delay_ms=20)
    log_flush()
    resp = Response.objects.get(request_id=rid)
    assert resp.outcome == "completed" and not resp.is_error and resp.body.endswith("data: [DONE]\n\n")


def test_unexpected_error_is_a_json_500(gateway, monkeypatch, log_flush):
    async def broken(request):
        raise RuntimeError("boom secret detail")
    monkeypatch.setattr(views, "exchange_forward", broken)
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={})
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "gateway_error" and "boom" not in r.text


def test_repeated_upstream_headers_reach_the_client_as_sent(scripted, gateway, log_flush):
    headers = [("content-type", "application/json"), ("set-cookie", "a=1; Path=/"), ("x-dup", "one"),
               ("set-cookie", "b=2; Path=/"), ("x-dup", "two")]
    scripted.answer = lambda request: (200, headers, b'{"ok": true}')
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    head = raw.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")[1:]
    got = [tuple(line.split(": ", 1)) for line in head]
    assert [(k, v) for k, v in got if k in ("set-cookie", "x-dup")] == headers[1:]  # both cookies, in order


def test_a_header_value_beyond_ascii_goes_upstream_as_sent(scripted, gateway, log_flush):
    # httpx encodes str header values as ASCII: X-Title: Jürgen was a 500 "Gateway failed to forward".
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Title: J\xc3\xbcrgen\r\n"
                  b"X-Gateway-Request-Id: forged\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    assert raw.startswith(b"HTTP/1.1 200")
    sent = scripted.requests[-1].headers.raw
    assert (b"x-title", b"J\xc3\xbcrgen") in [(k.lower(), v) for k, v in sent] and not any(k.lower() == b"x-gateway-request-id" for k, _ in sent)


def test_an_upstreams_gateway_headers_never_reach_the_client(scripted, gateway):
    # They are the gateway's own: an upstream saying X-Gateway-Cache: HIT or another request id is forging them.
    scripted.answer = lambda request: (200, [("content-type", "application/json"), ("X-Gateway-Cache", "HIT"),
                                             ("X-Gateway-Request-Id", "e" * 32), ("x-gateway-cache-source", "f" * 32),
                                             ("x-upstream-own", "kept")], b'{"ok": true}')
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={}, headers={"X-Gateway-Cache": "60"})
    assert r.headers.get_list("x-gateway-cache") == ["MISS"] and "x-gateway-cache-source" not in r.headers
    assert r.headers.get_list("x-gateway-request-id") != ["e" * 32] and len(r.headers.get_list("x-gateway-request-id")) == 1
    assert r.headers["x-upstream-own"] == "kept"


def test_client_gone_before_the_first_byte_still_ends_the_exchange(scripted, transactional_db, log_flush):
    """The answer's start is where the client's disconnect lands: the relay never starts, yet the
    upstream is closed and the exchange is logged as aborted."""
    import asyncio

    from gateway_project.asgi import application
    from proxy.hold import watch_stop
    from proxy.upstream import client_close

    closed = []

    class Body(httpx.AsyncByteStream):
        async def __aiter__(self):
            yield b"data: {}\n\n"

        async def aclose(self):
            closed.append(True)

    scripted.answer = lambda request: (200, [("content-type", "text/event-stream")], b"")
    real_handle = scripted.handle_async_request

    async def handle(request):
        answer = await real_handle(request)
        return httpx.Response(answer.status_code, headers=answer.headers, stream=Body(), request=request)
    scripted.handle_async_request = handle

    async def run() -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
                 "query_string": b"", "root_path": "", "headers": [(b"host", b"x"), (b"content-length", b"2")],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
        messages = [{"type": "http.request", "body": b"{}", "more_body": False}]

        async def receive():
            if messages:
                return messages.pop(0)
            await asyncio.Event().wait()  # the client is still there, as far as receive knows

        async def send(message):
            if message["type"] == "http.response.start":
                raise asyncio.CancelledError  # the disconnect lands while the answer's start is sent

        try:
            await application(scope, receive, send)
        except asyncio.CancelledError:
            pass
        # What the lifespan's shutdown does, which this call without a server skips: the upstream client
        # closed, and the hold queue's watch (started by the request) stopped with its database connection.
        await client_close()
        await watch_stop()
    asyncio.run(run())
    log_flush()
    resp = Response.objects.get()
    assert resp.outcome == "client_aborted" and "before the response started" in resp.error_message
    assert closed == [True]


def test_a_client_that_leaves_mid_upload_is_logged_without_a_status(gateway, upstream, log_flush):
    # It never got an answer: its row said 400 (counted among client errors) where other departures say none.
    head = (b"POST /v1/files?upload=left HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: 100000\r\n\r\n")
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        s.sendall(head + b"x" * 40000)
    log_flush()

    def logged():
        return Response.objects.filter(request__query_string="upload=left").select_related("request").first()

    resp = until(logged, what="the abandoned upload's row")
    assert resp.outcome == "client_aborted" and resp.status_code is None
    assert "after 40000 of 100000 body bytes" in resp.error_message and resp.request.body_size == 40000
    assert upstream.received == []


def test_a_page_the_upstream_answers_can_read_the_gateways_headers(scripted, gateway, tmp_path, settings):
    # The upstream exposes its own headers, not the gateway's: a browser app could not read the request id
    # the README points at, nor the cache's HIT/MISS.
    settings.DATA_DIR = tmp_path
    scripted.answer = lambda request: (200, [("content-type", "application/json"),
                                             ("access-control-allow-origin", "*"),
                                             ("access-control-expose-headers", "x-request-id")], b'{"ok": true}')
    page = {"Origin": "http://localhost:5173", "X-Gateway-Cache": "60"}
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={}, headers=page)
    exposed = [v for k, v in r.headers.multi_items() if k == "access-control-expose-headers"]
    assert exposed[0] == "x-request-id"  # the upstream's, as sent
    assert {n.strip().lower() for n in exposed[1].split(",")} == {"x-gateway-request-id", "x-gateway-cache"}
    # Not for a call from no page, nor for an answer the upstream did not open to the page.
    assert len(httpx.post(f"{gateway.url}/v1/chat/completions", json={"a": 1}).headers
               .get_list("access-control-expose-headers")) == 1
    scripted.answer = lambda request: (200, [("content-type", "application/json")], b'{"ok": true}')
    assert "access-control-expose-headers" not in httpx.post(f"{gateway.url}/v1/chat/completions", json={"b": 1},
                                                             headers=page).headers


def test_a_control_character_in_a_header_value_is_a_400_under_h11(upstream, transactional_db, log_flush):
    # uvicorn --http h11 passes \x01 or DEL in a header value, which the upstream client refuses to write:
    # every such request was a 500 and a traceback on the console. Now the client's mistake: a 400, logged.
    from tests.conftest import LiveGateway

    live = LiveGateway(http="h11")
    try:
        with socket.create_connection(("127.0.0.1", live.port)) as s:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"X-Title: a\x01b\x7f\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
    finally:
        log_flush()
        live.stop()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b'"type": "invalid_request_error"' in body and b"control character" in body
    assert upstream.received == []
    rid = re.search(rb"(?i)x-gateway-request-id: (\w+)", head).group(1).decode()
    resp = until(lambda: (log_flush(), Response.objects.filter(request_id=rid).first())[1], 5)
    assert resp.status_code == 400 and "x-title" in resp.error_message.lower()


def test_a_stream_in_flight_holds_neither_request_object(gateway, log_flush):
    """Once the answer streams, the call's Django request and httpx's copy of the upstream request are let go: every
    stream in flight held both for as long as it lasted (docs/benchmark.md, "slow streams' memory")."""
    from django.core.handlers.asgi import ASGIRequest

    from proxy.exchange import _INFLIGHT

    query = f"m={uuid.uuid4().hex}"

    def check() -> None:
        gc.collect()
        assert any(x.query == query for x in list(_INFLIGHT))  # the stream is still going
        held = [o for o in gc.get_objects() if (isinstance(o, ASGIRequest) and o.META.get("QUERY_STRING") == query)
                or (isinstance(o, httpx.Request) and query in str(o.url))]
        assert held == []
    _stream_read_until(gateway, b"data: ", events=100, delay_ms=50, query=query, then=check)
