"""The aiohttp upstream transport (the default), through a live gateway and the mock upstream."""

import hashlib
import socket

import httpx
import pytest

from logs.models import Request, Response

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def short_read_timeout(settings):
    """A read timeout short enough to test, set before the gateway builds its client."""
    settings.UPSTREAM_READ_TIMEOUT = 0.2


def test_read_timeout_is_a_504(short_read_timeout, gateway, log_flush):
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "m"},
                   headers={"x-mock-fault": "stall", "x-mock-stall-s": "0.5"}, timeout=10)
    assert r.status_code == 504
    log_flush()
    assert "UPSTREAM_READ_TIMEOUT" in Response.objects.get().error_message  # a read timeout, not a connect one


def test_request_headers_reach_upstream_exactly(gateway, upstream, log_flush):
    sent = [("Authorization", "Bearer sk-transport-test-0001"), ("X-Custom-Case", "Kept"), ("x-dup", "one"),
            ("X-Dup", "two"), ("Content-Type", "application/json"), ("Cookie", "a=1"), ("Cookie", "b=2")]
    body = b'{"model": "gpt-4o-mini", "messages": []}'
    with httpx.Client() as client:  # httpx adds Host, Accept, Accept-Encoding, Connection, User-Agent
        r = client.post(f"{gateway.url}/v1/chat/completions", content=body, headers=sent)
    assert r.status_code == 200
    got = upstream.received[-1]
    assert got.body == body
    names = [k for k, _ in got.headers]
    # Repeats stay separate and in order, nothing is merged (names arrive lower-case: ASGI).
    mine = {n.lower() for n, _ in sent}
    assert [(k.lower(), v) for k, v in got.headers if k.lower() in mine] == [(k.lower(), v) for k, v in sent]
    # Only what the client sent (minus hop-by-hop) plus Host and the recomputed Content-Length.
    client_sent = {k.lower() for k in r.request.headers.keys()} - {"connection"}
    assert {n.lower() for n in names} == client_sent | {"host", "content-length"}
    assert got.header("user-agent").startswith("python-httpx")  # the client's own, not aiohttp's
    assert got.header("host") == upstream.url.removeprefix("http://")
    log_flush()


def test_large_upload_streams_through_intact(gateway, upstream, log_flush, settings):
    body = bytes(range(256)) * (3 * 4096 + 7)  # 3 MB: above LOG_BODY_INLINE_MAX_BYTES, so streamed from file
    r = httpx.post(f"{gateway.url}/v1/files", content=body, timeout=30,
                   headers={"Content-Type": "application/octet-stream", "Authorization": "Bearer sk-x"})
    assert r.status_code == 200
    assert r.json()["bytes"] == len(body) and r.json()["sha256"] == hashlib.sha256(body).hexdigest()
    got = upstream.received[-1]
    assert got.header("content-length") == str(len(body)) and got.header("transfer-encoding") is None
    log_flush()
    assert Request.objects.get(endpoint="/v1/files").body_size == len(body)


def test_a_large_json_request_still_names_its_model_user_and_stream(gateway, upstream, log_flush, settings):
    settings.LOG_BODY_INLINE_MAX_BYTES = 1024  # the body is kept as a file, not inline
    body = {"model": "gpt-4o", "stream": True, "user": "carol-big", "metadata": {"feature": "big"},
            "messages": [{"role": "user", "content": "word " * 1000}]}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, timeout=30,
                      headers={"Authorization": "Bearer sk-x"}) as r:
        r.read()
    log_flush()
    req = Request.objects.get(pk=r.headers["x-gateway-request-id"])
    assert req.body is None and req.body_size > 1024  # in a file
    assert (req.model, req.stream_requested, req.end_user) == ("gpt-4o", True, "carol-big")
    assert req.metadata == {"feature": "big"}


def test_expect_100_continue_is_answered_here_not_forwarded(gateway, upstream, settings):
    """curl sends Expect: 100-continue with larger uploads: the gateway answers it and holds the body, so the
    upstream is not asked (the call waited for an upstream's 100 that the mock, like most servers, never sends)."""
    settings.UPSTREAM_READ_TIMEOUT = 3  # the failure's wait, kept short
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": []}, timeout=10,
                   headers={"Authorization": "Bearer sk-x", "Expect": "100-continue"})
    assert r.status_code == 200 and r.json()["choices"]
    assert upstream.received[-1].header("expect") is None


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused_is_a_502(gateway, settings, log_flush):
    settings.UPSTREAM_URLS = {**settings.UPSTREAM_URLS, "openai": f"http://127.0.0.1:{_closed_port()}"}
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "m"})
    message = r.json()["error"]["message"]
    assert r.status_code == 502 and "unreachable" in message
    assert "Cannot connect to host 127.0.0.1:" in message and "ssl" not in message  # aiohttp's "ssl:default"
    log_flush()
    resp = Response.objects.get()
    assert resp.outcome == "upstream_error" and resp.is_error and "ConnectError" in resp.error_message


def test_upstream_reset_is_a_502(gateway, log_flush):
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "m"}, headers={"x-mock-fault": "reset"})
    assert r.status_code == 502
    log_flush()
    assert Response.objects.get().outcome == "upstream_error"


def test_upstream_closing_mid_stream_ends_with_an_error_event(gateway, log_flush):
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", headers={"x-mock-fault": "close-mid-stream"},
                      json={"model": "m", "stream": True}) as r:
        text = b"".join(r.iter_raw()).decode()
    assert text.startswith("data: ") and text.rstrip().splitlines()[-2] == "event: error"
    log_flush()
    resp = Response.objects.get()
    assert resp.outcome == "upstream_error" and "RemoteProtocolError" in resp.error_message
    assert resp.body.startswith("data: ")  # the partial body is kept
