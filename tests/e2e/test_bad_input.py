"""Bad input from clients and upstreams: a clear JSON error or a faithful relay, always logged."""

import json
import socket
import time

import httpx
import pytest

from testing.mock_upstream import BROKEN_SSE
from logs.models import BinaryFile, Request, Response
from tests.keys.conftest import key_caches, make_key  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)

AUTH = {"Authorization": "Bearer sk-" + "bad" + "input0123456789abcdefgh"}


def raw_http(gateway, data: bytes, *, wait: float = 5.0, close_after_send: bool = False) -> bytes:
    """Send raw bytes to the live gateway and return what it answers (for malformed HTTP)."""
    with socket.create_connection(("127.0.0.1", gateway.port)) as s:
        s.sendall(data)
        if close_after_send:
            return b""
        s.settimeout(wait)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        return out


def status_and_json(raw: bytes) -> tuple[int, dict]:
    """Status code and JSON body of a raw HTTP/1.1 answer (chunked or not)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            n = int(size_line, 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        body = out
    return status, json.loads(body)


@pytest.fixture
def no_orphans(gateway, log_flush):
    """After the test: the gateway is healthy and every request row has its response row."""
    yield
    assert httpx.get(f"{gateway.url}/health").json()["status"] == "ok"
    log_flush()
    orphans = Request.objects.filter(response__isnull=True)
    assert not orphans.exists(), [(r.method, r.endpoint) for r in orphans]


def _logged(log_flush, rid: str) -> tuple[Request, Response]:
    log_flush()
    req = Request.objects.get(id=rid)
    return req, Response.objects.get(request=req)


@pytest.mark.parametrize("body,ctype", [
    (b"this is not json", "application/json"),
    (b"", "application/json"),
    (b'{"model": "m", "messages": [', "application/json"),
    (b"<xml/>", "text/xml"),
])
def test_odd_text_bodies_are_forwarded_faithfully(gateway, upstream, log_flush, no_orphans, body, ctype):
    r = httpx.post(f"{gateway.url}/v1/chat/completions", content=body, headers={**AUTH, "Content-Type": ctype})
    assert r.status_code == 200
    assert upstream.received[-1].body == body
    req, resp = _logged(log_flush, r.headers["x-gateway-request-id"])
    assert (req.body or "") == body.decode() and req.body_size == len(body) and resp.status_code == 200


def test_non_utf8_body_is_forwarded_and_kept_as_a_file(gateway, upstream, log_flush, no_orphans, payload_dir):
    body = b'{"model": "\xff\xfe"}'
    r = httpx.post(f"{gateway.url}/v1/chat/completions", content=body,
                   headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 200 and upstream.received[-1].body == body
    req, _ = _logged(log_flush, r.headers["x-gateway-request-id"])
    assert req.body is None
    f = BinaryFile.objects.get(request=req, role="request_body")
    assert (payload_dir / f.file.name).read_bytes() == body


def test_body_over_the_limit_is_a_413_naming_it(gateway, upstream, log_flush, no_orphans, settings):
    settings.MAX_REQUEST_BODY_BYTES = 1000
    r = httpx.post(f"{gateway.url}/v1/chat/completions", content=b"x" * 5000, headers=AUTH)
    assert r.status_code == 413
    assert "1000" in r.json()["error"]["message"] and "5000" in r.json()["error"]["message"]
    assert upstream.received == []
    req, resp = _logged(log_flush, r.headers["x-gateway-request-id"])
    assert req.body_size == 5000 and resp.status_code == 413 and resp.outcome == "gateway_error"


def test_chunked_body_over_the_limit_is_cut_while_reading(gateway, upstream, log_flush, no_orphans, settings):
    settings.MAX_REQUEST_BODY_BYTES = 1000

    def chunks():
        for _ in range(10):
            yield b"y" * 600
    r = httpx.post(f"{gateway.url}/v1/chat/completions", content=chunks(), headers=AUTH)
    assert r.status_code == 413 and "counted while reading" in r.json()["error"]["message"]
    assert upstream.received == []


def test_huge_declared_length_is_refused_before_the_body(gateway, upstream, log_flush, no_orphans):
    # 10 GB announced, 10 bytes sent: the answer comes at once, nothing is spooled.
    raw = raw_http(gateway, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 10000000000\r\n\r\n0123456789", wait=5)
    status, body = status_and_json(raw)
    assert status == 413 and "10000000000" in body["error"]["message"]
    assert b"\r\nconnection: close\r\n" in raw.partition(b"\r\n\r\n")[0].lower()
    assert upstream.received == []


def test_a_large_upload_without_a_key_is_refused_before_its_body(gateway, upstream, log_flush, no_orphans,
                                                               make_key):
    # Keys are required: 50 MB announced, 10 bytes sent, no key. The 401 comes at once (the body is never
    # read, so an unauthenticated client cannot make the gateway spool it); a keyed one is read as ever.
    _, secret = make_key("uploader")
    head = (b"POST /v1/files HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: 50000000\r\n")
    status, body = status_and_json(raw_http(gateway, head + b"\r\n0123456789", wait=5))
    assert status == 401 and "requires an access key" in body["error"]["message"]
    assert "before the request body was read" in body["error"]["message"]
    status, body = status_and_json(raw_http(gateway, head + b"X-Gateway-Key: gk-" + b"n" * 43 + b"\r\n\r\n0", wait=5))
    assert status == 401 and "Invalid gateway key" in body["error"]["message"]
    ok = httpx.post(f"{gateway.url}/v1/files", content=b"x" * 2_000_000, timeout=10,
                    headers={**AUTH, "X-Gateway-Key": secret, "Content-Type": "application/octet-stream"})
    assert ok.status_code == 200 and len(upstream.received) == 1
    log_flush()
    refused = Response.objects.filter(status_code=401).select_related("request")
    assert sorted(r.request.body_size for r in refused) == [50000000, 50000000]


def test_oversized_headers_are_a_431(gateway, upstream, log_flush, no_orphans, settings):
    settings.MAX_REQUEST_HEADER_BYTES = 4096
    r = httpx.get(f"{gateway.url}/v1/models", headers={**AUTH, "X-Big": "a" * 8000})
    assert r.status_code == 431 and "MAX_REQUEST_HEADER_BYTES" in r.json()["error"]["message"]
    assert upstream.received == []
    _, resp = _logged(log_flush, r.headers["x-gateway-request-id"])
    assert resp.status_code == 431


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "PROPFIND"])
def test_non_api_methods_are_a_405(gateway, upstream, log_flush, no_orphans, method):
    raw = raw_http(gateway, f"{method} /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    status, body = status_and_json(raw)
    assert status == 405 and method in body["error"]["message"]
    assert b"allow: delete, get, head, options, patch, post, put\r\n" in raw.lower()
    assert upstream.received == []


def test_unparsable_method_gets_no_stack_trace(gateway, no_orphans):
    # The HTTP parser refuses an unknown method before the app sees it.
    raw = raw_http(gateway, b"BREW /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400") and b"Traceback" not in raw


def test_truncated_multipart_is_forwarded_and_kept_raw(gateway, upstream, log_flush, no_orphans, payload_dir):
    body = (b"--BOUND\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ngpt-image-1\r\n"
            b"--BOUND\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\nhalf an ima")
    r = httpx.post(f"{gateway.url}/v1/images/edits", content=body,
                   headers={**AUTH, "Content-Type": "multipart/form-data; boundary=BOUND"})
    assert r.status_code == 200 and upstream.received[-1].body == body
    req, _ = _logged(log_flush, r.headers["x-gateway-request-id"])
    described = json.loads(req.body)
    assert described["complete"] is False and described["fields"] == {"model": "gpt-image-1"}
    raw_file = BinaryFile.objects.get(request=req, role="request_body")
    assert (payload_dir / raw_file.file.name).read_bytes() == body


def test_content_length_larger_than_body_times_out_as_408(gateway, upstream, log_flush, no_orphans, settings):
    settings.REQUEST_BODY_TIMEOUT = 0.5
    raw = raw_http(gateway, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 100\r\n\r\n{\"a\": 1}", wait=5)
    status, body = status_and_json(raw)
    assert status == 408 and "got 8 of 100 bytes" in body["error"]["message"]
    assert b"\r\nconnection: close\r\n" in raw.partition(b"\r\n\r\n")[0].lower()  # not left open for the rest
    assert upstream.received == []


def test_client_leaving_mid_body_is_logged_as_aborted(gateway, upstream, log_flush, no_orphans):
    raw_http(gateway, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"a\": 1}", close_after_send=True)
    deadline = time.monotonic() + 5
    while not Response.objects.filter(outcome="client_aborted").exists() and time.monotonic() < deadline:
        log_flush()
        time.sleep(0.05)
    resp = Response.objects.get(outcome="client_aborted")
    assert "after 8 of 100 body bytes" in resp.error_message and resp.request.body_size == 8
    assert upstream.received == []


def test_upstream_wrong_content_length_ends_as_upstream_error(gateway, upstream, log_flush, no_orphans):
    """A small framed answer is read whole before it is sent; cut short, the client is cut the same way."""
    got = bytearray()
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json={"model": "m"},
                          headers={**AUTH, "x-mock-fault": "wrong-length"}) as r:
            assert r.status_code == 200 and r.headers["x-gateway-request-id"]
            for part in r.iter_raw():
                got += part
    assert int(r.headers["content-length"]) == len(got) + 100  # every byte the upstream did send
    log_flush()
    resp = Response.objects.get(request__endpoint="/v1/chat/completions")
    assert resp.outcome == "upstream_error" and resp.is_error and "upstream failed" in resp.error_message
    assert resp.body == got.decode() and resp.status_code == 200


def test_upstream_invalid_json_is_relayed_and_stored_as_is(gateway, upstream, log_flush, no_orphans):
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "m"},
                   headers={**AUTH, "x-mock-fault": "bad-json"})
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    _, resp = _logged(log_flush, r.headers["x-gateway-request-id"])
    assert resp.body == r.text and resp.outcome == "completed" and resp.input_tokens is None
    assert "not valid JSON" in resp.error_message  # the row says what the body is, not a plain success


def test_upstream_html_page_labelled_json_is_noted(scripted, gateway, log_flush, no_orphans):
    page = b"<html><head><title>Just a moment...</title></head><body>checking your browser</body></html>"
    scripted.answer = lambda request: (200, [("content-type", "application/json")], page)
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "m"}, headers=AUTH)
    assert r.status_code == 200 and r.content == page  # the client gets the page as it came
    _, resp = _logged(log_flush, r.headers["x-gateway-request-id"])
    assert resp.body == page.decode() and resp.outcome == "completed"
    assert "not valid JSON" in resp.error_message


def test_upstream_broken_sse_is_relayed_byte_for_byte(gateway, upstream, log_flush, no_orphans):
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json={"model": "m", "stream": True},
                      headers={**AUTH, "x-mock-fault": "bad-sse"}) as r:
        got = b"".join(r.iter_raw())
        rid = r.headers["x-gateway-request-id"]
    assert got == "".join(BROKEN_SSE).encode()
    _, resp = _logged(log_flush, rid)
    assert resp.is_stream and resp.body == got.decode() and resp.outcome == "completed"
    assert resp.stream_result["events"] >= 1 and "parsing failed" not in resp.error_message


@pytest.mark.parametrize("path,ctype,text_column", [
    ("/v1/chat/completions", "image/png", False),        # JSON labelled as an image
    ("/v1/audio/speech", "application/json", False),     # audio bytes labelled as JSON
    ("/v1/chat/completions", "text/event-stream", True),  # JSON labelled as a stream
])
def test_upstream_wrong_content_type_is_relayed_and_stored_safely(gateway, upstream, log_flush, no_orphans,
                                                                 payload_dir, path, ctype, text_column):
    r = httpx.post(f"{gateway.url}{path}", json={"model": "m", "input": "x", "voice": "a"},
                   headers={**AUTH, "x-mock-content-type": ctype})
    assert r.status_code == 200 and r.headers["content-type"] == ctype
    _, resp = _logged(log_flush, r.headers["x-gateway-request-id"])
    if text_column:
        assert resp.body == r.text
    else:  # raw bytes never land in a TEXT column
        assert resp.body is None
        f = BinaryFile.objects.get(response=resp)
        assert (payload_dir / f.file.name).read_bytes() == r.content


@pytest.mark.parametrize("target", [b"/v1/../admin/", b"/v1/%2e%2e/admin/", b"/v1//models", b"/v1/models%2f..",
                                    b"/v1/%252e%252e/admin/"])
def test_path_escapes_are_a_json_400(gateway, upstream, no_orphans, target):
    raw = raw_http(gateway, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, body = status_and_json(raw)
    assert status == 400 and body["error"]["message"].startswith("Refused path")
    assert upstream.received == []


@pytest.mark.parametrize("target,status,shape", [
    (b"/replicate/v2/predictions", 404, "replicate"), (b"/replicate", 404, "replicate"),
    (b"/replicate/v1//predictions", 400, "replicate"), (b"/anthropic/messages", 404, "anthropic"),
    (b"/anthropic/v1/../admin/", 400, "anthropic"), (b"/gemini", 404, "gemini"), (b"/groq/chat", 404, "openai"),
    (b"/openai/models", 404, "openai"), (b"/v2/models", 404, "openai"), (b"/nobody/v1/x", 404, "openai"),
])
def test_a_path_under_a_providers_prefix_that_it_does_not_serve_is_answered_in_its_shape(
        gateway, upstream, no_orphans, settings, target, status, shape):
    """`/replicate/v2/...` got OpenAI's {"error": {...}}: Replicate's client read no detail from it, nor did
    Anthropic's SDK its error type. The first segment names whose shape answers."""
    settings.GATEWAY_PROVIDERS = ["groq=http://127.0.0.1:9"]
    raw = raw_http(gateway, b"POST " + target + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                                                b"Connection: close\r\n\r\n{}")
    got, body = status_and_json(raw)
    assert got == status
    message = "Refused path" if status == 400 else "No provider serves"
    if shape == "replicate":
        assert body["status"] == status and body["detail"].startswith(message)
    elif shape == "anthropic":
        assert body["type"] == "error" and body["error"]["message"].startswith(message)
        assert body["error"]["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    elif shape == "gemini":
        assert body["error"]["code"] == status and body["error"]["status"] == "NOT_FOUND"
    else:
        assert body["error"]["message"].startswith(message) and "param" in body["error"]
    assert upstream.received == []


def test_client_cannot_pick_the_upstream_host(gateway, upstream, log_flush, no_orphans):
    # Absolute-form target, Host and X-Forwarded-Host naming another server: all ignored.
    raw = raw_http(gateway, b"GET http://169.254.169.254/v1/models HTTP/1.1\r\nHost: 169.254.169.254\r\n"
                            b"X-Forwarded-Host: evil.example\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200") or raw.startswith(b"HTTP/1.1 400")
    for got in upstream.received:  # whatever reached an upstream reached the configured one
        assert got.path == "/v1/models"
