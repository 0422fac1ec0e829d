"""Forwarding rules, checked through the real ASGI app with respx in place of the upstream."""

import gzip
import json

import httpx
import pytest
import respx
from asgiref.sync import sync_to_async
from django.db import connections

import proxy.upstream
from gateway_project.asgi import application
from logs.models import Request, Response
from proxy.upstream import client_close, client_get

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.anyio]

UP = "http://upstream.test"


class RouterTransport(httpx.AsyncBaseTransport):
    """A respx router as the upstream transport, its answers' bodies still to be read, as off the wire.

    (httpx.MockTransport(router.async_handler) hands back answers respx has already read, whose
    raw stream the relay cannot iterate again.)
    """

    def __init__(self, router: respx.MockRouter) -> None:
        self.router = router

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        answer = await self.router.async_handler(request)
        return httpx.Response(answer.status_code, headers=answer.headers.raw, stream=answer.stream,
                              extensions=answer.extensions, request=request)


@pytest.fixture
def up(settings, monkeypatch):
    """respx router standing in for the OpenAI upstream, as the shared client's transport."""
    settings.UPSTREAM_URLS = {**settings.UPSTREAM_URLS, "openai": UP}
    router = respx.MockRouter(base_url=UP, assert_all_called=False)
    monkeypatch.setattr(proxy.upstream, "transport_build", lambda limits: RouterTransport(router))
    return router


class Answer:
    """What the client got: status, headers and the body bytes exactly as sent (not decoded)."""

    def __init__(self, response: httpx.Response, body: bytes) -> None:
        self.status_code, self.headers, self.body = response.status_code, response.headers, body

    def __getitem__(self, name: str) -> str:
        return self.headers[name]

    def __contains__(self, name: str) -> bool:
        return name in self.headers

    def json(self):
        return json.loads(self.body)


async def _call(method: str, path: str, *, data: bytes | None = None, content_type: str | None = None,
                headers: dict[str, str] | None = None) -> Answer:
    """One call to the gateway's ASGI app by a fresh client (no cookie jar shared between calls).

    The client sends only Host, Content-Length and the headers given: none of httpx's defaults.
    """
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://gw") as client:
        for name in list(client.headers):
            del client.headers[name]
        sent = dict(headers or {})
        if content_type:
            sent["Content-Type"] = content_type
        async with client.stream(method, path, content=data, headers=sent) as response:
            body = b"".join([chunk async for chunk in response.aiter_raw()])
    return Answer(response, body)


@pytest.fixture(autouse=True)
async def fresh_client():
    """The shared client belongs to one event loop, and to this test's fake upstream: each test gets its own."""
    await client_close()
    yield
    await client_close()
    # The async ORM calls ran on asgiref's executor thread: close its connection too, or
    # PostgreSQL cannot drop the test database at the end of the session.
    await sync_to_async(connections.close_all)()


async def test_request_forwarded_untouched(up, log_flush):
    route = up.post("/v1/chat/completions").respond(200, json={"ok": True})
    body = b'{"model": "gpt-4o", "messages": []}'
    resp = await _call(
        "POST", "/v1/chat/completions?api-version=2&x=1", data=body, content_type="application/json",
        headers={"Authorization": "Bearer sk-abc", "X-Custom": "kept", "Connection": "keep-alive, X-Drop",
                 "X-Drop": "hop", "Keep-Alive": "timeout=5", "TE": "trailers"})
    assert resp.status_code == 200 and resp.json() == {"ok": True}
    sent = route.calls.last.request
    assert sent.method == "POST" and sent.url.path == "/v1/chat/completions"
    assert sent.url.query == b"api-version=2&x=1"
    assert sent.content == body
    assert sent.headers["authorization"] == "Bearer sk-abc" and sent.headers["x-custom"] == "kept"
    for hop in ("x-drop", "keep-alive", "te", "connection"):
        assert hop not in sent.headers, hop
    assert sent.headers["host"] == "upstream.test"
    assert sent.headers["content-length"] == str(len(body))
    assert "user-agent" not in sent.headers  # the gateway adds nothing of its own


async def test_upstream_cookies_go_to_the_client_and_are_never_kept(up, log_flush):
    route = up.get("/v1/models").respond(200, json={"data": []},
                                         headers={"Set-Cookie": "__cf_bm=user-a-session; path=/; HttpOnly"})
    first = await _call("GET", "/v1/models", headers={"Authorization": "Bearer sk-user-a"})
    assert "__cf_bm=user-a-session" in first["Set-Cookie"]  # relayed to the caller it was meant for
    assert not client_get().cookies  # the shared client kept nothing
    await _call("GET", "/v1/models", headers={"Authorization": "Bearer sk-user-b"})
    assert "user-a-session" not in route.calls.last.request.headers.get("cookie", "")  # nor does another caller
    with pytest.raises(AttributeError):
        client_get().cookies = {"a": "b"}
    await _flush(log_flush)


async def test_response_relayed_with_request_id(up, log_flush):
    up.get("/v1/models").respond(503, json={"error": {"message": "overloaded"}},
                                 headers={"x-ratelimit-remaining": "7", "Transfer-Encoding": "chunked"})
    resp = await _call("GET", "/openai/v1/models")
    assert resp.status_code == 503
    assert resp.json()["error"]["message"] == "overloaded"
    assert resp["x-ratelimit-remaining"] == "7"
    assert "transfer-encoding" not in resp
    rid = resp["X-Gateway-Request-Id"]
    await _flush(log_flush)
    row = await Response.objects.aget(request_id=rid)
    assert row.status_code == 503 and row.is_error and row.outcome == "completed"


async def _flush(log_flush) -> None:
    """Wait for the log writer without blocking the event loop."""
    await sync_to_async(log_flush)()


async def test_gzip_relayed_compressed_logged_decoded(up, log_flush):
    raw = json.dumps({"data": "x" * 500}).encode()
    up.post("/v1/embeddings").respond(200, content=gzip.compress(raw),
                                      headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    resp = await _call("POST", "/v1/embeddings", data=b"{}", content_type="application/json")
    wire = resp.body
    assert resp["Content-Encoding"] == "gzip" and gzip.decompress(wire) == raw
    await _flush(log_flush)
    row = await Response.objects.aget(request_id=resp["X-Gateway-Request-Id"])
    assert row.body == raw.decode() and row.body_size == len(raw)


async def test_connect_error_is_a_json_502(up, log_flush):
    up.post("/v1/chat/completions").mock(side_effect=httpx.ConnectError("refused"))
    resp = await _call("POST", "/v1/chat/completions", data=b"{}", content_type="application/json")
    assert resp.status_code == 502
    assert "Upstream unreachable" in resp.json()["error"]["message"]
    await _flush(log_flush)
    row = await Response.objects.aget(request_id=resp["X-Gateway-Request-Id"])
    assert row.status_code == 502 and row.is_error and row.outcome == "upstream_error"


async def test_read_timeout_is_a_json_504(up, log_flush):
    up.get("/v1/models").mock(side_effect=httpx.ReadTimeout("slow"))
    resp = await _call("GET", "/v1/models")
    assert resp.status_code == 504 and resp.json()["error"]["type"] == "gateway_error"


async def test_body_over_limit_is_a_json_413_and_logged(up, settings, log_flush):
    settings.MAX_REQUEST_BODY_BYTES = 10
    route = up.post("/v1/chat/completions").respond(200, json={})
    resp = await _call("POST", "/v1/chat/completions", data=b"x" * 11, content_type="application/json")
    assert resp.status_code == 413 and "10" in resp.json()["error"]["message"]
    assert not route.called
    await _flush(log_flush)
    req = await Request.objects.aget(id=resp["X-Gateway-Request-Id"])
    assert req.body_size == 11 and (await Response.objects.aget(request=req)).status_code == 413


async def test_unknown_prefix_json_404(up):
    resp = await _call("GET", "/v2/models")
    assert resp.status_code == 404 and "/v1/" in resp.json()["error"]["message"]


async def test_non_text_request_body_goes_to_a_file(up, log_flush, payload_dir):
    route = up.post("/v1/files").respond(200, json={"id": "file-1"})
    data = bytes(range(256)) * 10
    resp = await _call("POST", "/v1/files", data=data, content_type="application/octet-stream")
    assert resp.status_code == 200 and resp.json() == {"id": "file-1"}
    assert route.calls.last.request.content == data
    await _flush(log_flush)
    req = await Request.objects.aget(id=resp["X-Gateway-Request-Id"])
    assert req.body is None and req.body_size == len(data)
    f = await req.files.aget()
    assert (payload_dir / f.file.name).read_bytes() == data and f.role == "request_body"


@pytest.mark.parametrize("encoding,compress", [
    ("gzip", gzip.compress),
    ("br", lambda data: __import__("brotli").compress(data)),
    ("zstd", lambda data: __import__("zstandard").ZstdCompressor().compress(data)),
])
async def test_compressed_request_forwarded_as_sent_logged_decoded_and_masked(up, log_flush, encoding, compress):
    # Logged as answers are: the text decoded. It was a file of compressed bytes: no prompt to read or
    # search, no model on the row, and a credential field stored in clear.
    route = up.post("/v1/chat/completions").respond(200, json={"ok": True})
    secret = "sk-" + "field" + "0123456789abcdefghij"
    raw = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}],
                      "api_key": secret}).encode()
    wire = compress(raw)
    resp = await _call("POST", "/v1/chat/completions", data=wire, content_type="application/json",
                       headers={"Authorization": "Bearer sk-abc", "Content-Encoding": encoding})
    assert resp.status_code == 200
    sent = route.calls.last.request
    assert sent.content == wire and sent.headers["content-encoding"] == encoding  # untouched upstream
    await _flush(log_flush)
    req = await Request.objects.aget(id=resp["X-Gateway-Request-Id"])
    assert req.model == "gpt-4o-mini" and req.body_size == len(wire)
    logged = json.loads(req.body)
    assert logged["messages"][0]["content"] == "hello" and logged["api_key"] != secret
    assert secret not in req.body and await req.files.acount() == 0


async def test_a_compressed_request_that_grows_a_thousandfold_is_kept_as_received(up, log_flush, payload_dir):
    # 1 MiB of JSON in ~1 KB of gzip: logged decoded, any client (a refused key's too) could write a MiB of
    # text to the log per KB sent. Kept as the bytes received instead; it still goes upstream as sent.
    import gzip

    up.post("/v1/chat/completions").respond(200, json={"ok": True})
    wire = gzip.compress(b'{"model": "m", "pad": "' + b"a" * (1024 * 1024 - 40) + b'"}')
    resp = await _call("POST", "/v1/chat/completions", data=wire, content_type="application/json",
                       headers={"Content-Encoding": "gzip"})
    assert resp.status_code == 200 and up.calls[-1].request.content == wire and len(wire) < 5000
    await _flush(log_flush)
    req = await Request.objects.aget(id=resp["X-Gateway-Request-Id"])
    assert req.body is None and req.body_size == len(wire)
    assert (payload_dir / (await req.files.aget()).file.name).read_bytes() == wire


async def test_a_compressed_request_that_does_not_decode_is_kept_as_received(up, log_flush, payload_dir):
    up.post("/v1/chat/completions").respond(200, json={"ok": True})
    wire = b'{"model": "m"}'  # says gzip, is not
    resp = await _call("POST", "/v1/chat/completions", data=wire, content_type="application/json",
                       headers={"Content-Encoding": "gzip"})
    assert resp.status_code == 200
    await _flush(log_flush)
    req = await Request.objects.aget(id=resp["X-Gateway-Request-Id"])
    assert req.body is None  # the text column never holds a body its Content-Encoding says is encoded
    assert (payload_dir / (await req.files.aget()).file.name).read_bytes() == wire
