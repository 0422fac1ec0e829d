"""The ASGI fast path for proxied calls: same answers and log as through Django's handler."""

import re
import socket
import time

import httpx
import pytest

from logs.models import Request, Response
from proxy import views
from proxy.fastpath import fastpath_applies

pytestmark = pytest.mark.django_db(transaction=True)


def _scope(path: str) -> dict:
    return {"type": "http", "path": path, "raw_path": path.encode(), "method": "POST", "headers": []}


def test_only_proxied_paths_take_the_fast_path(settings):
    assert fastpath_applies(_scope("/v1/chat/completions"))
    assert fastpath_applies(_scope("/nowhere"))  # the proxy view answers its JSON 404
    assert not fastpath_applies(_scope("/health"))
    assert not fastpath_applies(_scope("/admin/"))
    assert not fastpath_applies(_scope("/static/admin/css/base.css"))


def test_fast_path_steps_aside_for_added_middleware_or_when_off(settings):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "django.middleware.common.CommonMiddleware"]
    assert not fastpath_applies(_scope("/v1/chat/completions"))  # it would skip that middleware
    settings.MIDDLEWARE = settings.MIDDLEWARE[:1]
    settings.PROXY_FAST_PATH = False
    assert not fastpath_applies(_scope("/v1/chat/completions"))


@pytest.fixture(params=[True, False], ids=["fast", "django"])
def either_path(request, settings):
    """Run a test through the fast path and through Django's own handler."""
    settings.PROXY_FAST_PATH = request.param
    return request.param


def test_same_answer_and_log_on_both_paths(either_path, gateway, upstream, log_flush):
    r = httpx.post(f"{gateway.url}/v1/chat/completions?x=1", json={"model": "gpt-4o-mini", "messages": []},
                   headers={"Authorization": "Bearer sk-fastpath-0123456789"})
    assert r.status_code == 200 and r.json()["object"] == "chat.completion"
    assert r.headers["x-request-id"] == "mock-req-1" and r.headers["content-type"] == "application/json"
    assert upstream.received[-1].query == "x=1"
    log_flush()
    req = Request.objects.get()
    assert req.id.hex == r.headers["x-gateway-request-id"] and req.query_string == "x=1"
    assert Response.objects.get(request=req).outcome == "completed"


def test_client_leaving_mid_stream_is_logged_as_aborted(either_path, gateway, log_flush):
    body = b'{"model": "m", "stream": true, "messages": []}'
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"x-mock-events: 50\r\nx-mock-delay-ms: 50\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", gateway.port)) as s:
        s.sendall(head + body)
        got = b""
        while b"data: " not in got:
            got += s.recv(65536)
    # This exchange's row, by its id: a record another test left in flight must not be taken for it.
    rid = re.search(rb"x-gateway-request-id: (\w+)", got, re.IGNORECASE).group(1).decode()
    deadline = time.monotonic() + 5
    while not Response.objects.filter(request_id=rid).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    log_flush()
    resp = Response.objects.get(request_id=rid)
    assert resp.outcome == "client_aborted" and resp.duration_ms < 2000
    assert resp.body.startswith("data: ")


def test_unexpected_error_is_a_json_500(gateway, monkeypatch, log_flush):
    async def broken(request):
        raise RuntimeError("boom secret detail")
    monkeypatch.setattr(views, "exchange_forward", broken)
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={})
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "gateway_error" and "boom" not in r.text
