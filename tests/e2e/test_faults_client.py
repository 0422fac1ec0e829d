"""Client faults: the client goes away mid-exchange; the upstream is dropped and the log says so."""

import time

import httpx
import pytest

from tests.e2e.faults import AUTH, CHAT, exchange_get, response_files, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def _upstream_hangup_delay(upstream, left_at: float) -> float:
    """Seconds between the client leaving and the gateway closing the upstream connection."""
    closed = wait_until(lambda: upstream.received[-1].peer_closed_at, 3)
    assert closed, "the gateway never closed the upstream connection"
    return closed - left_at


def test_client_leaves_mid_stream(fast_gateway, upstream, log_flush):
    body = {**CHAT, "stream": True}
    headers = {**AUTH, "x-mock-events": "20", "x-mock-delay-ms": "150"}  # ~3.3 s of stream
    started = time.monotonic()
    with httpx.stream("POST", f"{fast_gateway.url}/v1/chat/completions", json=body, headers=headers,
                      timeout=10) as r:
        rid = r.headers["x-gateway-request-id"]
        seen = []
        for line in r.iter_lines():
            if line.startswith("data: "):
                seen.append(line)
            if len(seen) == 3:
                break
    left_at = time.monotonic()  # leaving the block closed the half-read connection
    assert _upstream_hangup_delay(upstream, left_at) < 1.0  # no more tokens are spent
    _, resp = exchange_get(log_flush, rid)
    assert resp.outcome == "client_aborted" and resp.is_error and resp.status_code == 200
    assert "client disconnected" in resp.error_message
    events = [e for e in resp.body.split("\n\n") if e]
    assert 3 <= len(events) < 23 and "[DONE]" not in resp.body  # all that had arrived, no more
    assert all(resp.body.count(s) == 1 for s in seen)
    assert resp.duration_ms <= (left_at - started) * 1000 + 1000  # measured up to the disconnect


def test_client_leaves_while_upstream_works_unstreamed(fast_gateway, upstream, log_flush):
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{fast_gateway.url}/v1/chat/completions", json=CHAT, timeout=httpx.Timeout(10, read=0.5),
                   headers={**AUTH, "x-mock-fault": "stall", "x-mock-stall-s": "10"})
    left_at = time.monotonic()
    assert _upstream_hangup_delay(upstream, left_at) < 1.0
    req, resp = exchange_get(log_flush, _only_request_id())
    assert resp.outcome == "client_aborted" and resp.is_error and resp.status_code is None
    assert "while waiting for the upstream" in resp.error_message
    assert 400 <= resp.duration_ms <= (left_at - started) * 1000 + 1000
    assert req.body and req.model == "gpt-4o-mini"  # the request itself is complete in the log


def _only_request_id() -> str:
    from logs.models import Request

    return Request.objects.get().id.hex


def test_client_leaves_mid_binary_download(fast_gateway, upstream, log_flush, payload_dir):
    size = 64 << 20  # far more than socket buffers hold: the gateway is still relaying when we leave
    got = 0
    with httpx.stream("POST", f"{fast_gateway.url}/v1/audio/speech", timeout=10,
                      json={"model": "tts-1", "input": "x", "voice": "alloy"},
                      headers={**AUTH, "x-mock-size": str(size)}) as r:
        rid = r.headers["x-gateway-request-id"]
        for part in r.iter_raw():
            got += len(part)
            if got >= 256 << 10:
                break
    left_at = time.monotonic()
    assert _upstream_hangup_delay(upstream, left_at) < 1.0
    _, resp = exchange_get(log_flush, rid)
    assert resp.outcome == "client_aborted" and resp.is_error
    assert "client disconnected before the response ended" in resp.error_message  # not "started": bytes went
    assert got <= resp.body_size < size
    [f] = response_files(resp)  # what passed through is kept
    assert f.size == resp.body_size == (payload_dir / f.file.name).stat().st_size


def test_client_leaves_while_its_large_body_is_kept(fast_gateway, upstream, log_flush, payload_dir, monkeypatch):
    """Keeping a large body (its masked copy) takes a while: a client that hung up meanwhile went unlogged, its
    copy left in the spool. Now the request is logged with its body and the exchange as client_aborted."""
    import socket

    from proxy.request_body import BodySpool

    keep, started = BodySpool.keep, []

    def slow_keep(self, *args, **kwargs):
        started.append(time.monotonic())
        time.sleep(0.5)  # the client is gone by the time the copy is made
        return keep(self, *args, **kwargs)

    monkeypatch.setattr(BodySpool, "keep", slow_keep)
    body = b"\x00binary" * (256 << 10)  # not text: kept as a file
    host, port = fast_gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: " + AUTH["authorization"].encode()
                     + b"\r\nContent-Type: application/octet-stream\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert wait_until(lambda: started, 5)
    req, resp = exchange_get(log_flush, wait_until(lambda: _request_id_logged(), 10))
    assert resp.outcome == "client_aborted" and "while its request body was being saved" in resp.error_message
    assert req.body_size == len(body) and upstream.received == []


def _request_id_logged() -> str | None:
    from logs.models import Request, Response

    req = Request.objects.first()
    return req.id.hex if req is not None and Response.objects.filter(request=req).exists() else None
