"""Upstream faults, made to happen for real against the mock: what the client gets, what the log holds."""

import json
import socket
import time

import httpx
import openai
import pytest

from testing.mock_upstream import BLOCK
from tests.e2e.faults import AUTH, CHAT, KEY, closed_port, exchange_get, only_exchange, response_files, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def _assert_gateway_error(r: httpx.Response, status: int) -> dict:
    """The client got an OpenAI-shaped JSON error with the request id header."""
    assert r.status_code == status
    assert r.headers["content-type"] == "application/json"
    assert len(r.headers["x-gateway-request-id"]) == 32
    # Sized, not chunked: a client can tell a whole error from a cut one.
    assert r.headers["content-length"] == str(len(r.content)) and "transfer-encoding" not in r.headers
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"} and err["type"] == "gateway_error"
    return err


def _assert_logged_error(log_flush, r: httpx.Response, status: int, outcome: str, words: str):
    """The log holds the same status, flagged as an error, with the reason."""
    _, resp = exchange_get(log_flush, r.headers["x-gateway-request-id"])
    assert resp.status_code == status and resp.is_error and resp.outcome == outcome
    assert words in resp.error_message
    return resp


def test_connection_refused_is_502(fast_gateway, settings, log_flush):
    settings.UPSTREAM_URLS = {**settings.UPSTREAM_URLS, "openai": f"http://127.0.0.1:{closed_port()}"}
    r = httpx.post(f"{fast_gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH, timeout=10)
    err = _assert_gateway_error(r, 502)
    assert "unreachable" in err["message"]
    resp = _assert_logged_error(log_flush, r, 502, "upstream_error", "ConnectError")
    assert json.loads(resp.body)["error"]["message"] == err["message"]  # the log has what the client got


def test_dns_failure_is_502(fast_gateway, settings, log_flush, monkeypatch):
    real = socket.getaddrinfo

    def no_such_host(host, *args, **kwargs):
        if host == "upstream.invalid":  # fail here: a real lookup would leave the machine
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    settings.UPSTREAM_URLS = {**settings.UPSTREAM_URLS, "openai": "http://upstream.invalid:9"}
    r = httpx.post(f"{fast_gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH, timeout=10)
    _assert_gateway_error(r, 502)
    _assert_logged_error(log_flush, r, 502, "upstream_error", "Name or service not known")


def test_connect_timeout_is_504(fast_gateway, settings, log_flush):
    # A listening socket that never accepts, its backlog filled: further SYNs go unanswered.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []
    port = server.getsockname()[1]
    try:
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            fillers.append(s)
        time.sleep(0.1)
        settings.UPSTREAM_URLS = {**settings.UPSTREAM_URLS, "openai": f"http://127.0.0.1:{port}"}
        r = httpx.post(f"{fast_gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH, timeout=10)
    finally:
        for s in fillers:
            s.close()
        server.close()
    if r.status_code == 502:
        pytest.skip("this kernel refuses connections to a full backlog instead of dropping them")
    err = _assert_gateway_error(r, 504)
    assert "UPSTREAM_CONNECT_TIMEOUT" in err["message"]
    _assert_logged_error(log_flush, r, 504, "upstream_error", "UPSTREAM_CONNECT_TIMEOUT")


def test_read_timeout_is_504_and_upstream_closed(fast_gateway, upstream, log_flush):
    started = time.monotonic()
    r = httpx.post(f"{fast_gateway.url}/v1/chat/completions", json=CHAT, timeout=10,
                   headers={**AUTH, "x-mock-fault": "stall", "x-mock-stall-s": "8"})
    err = _assert_gateway_error(r, 504)
    assert "UPSTREAM_READ_TIMEOUT" in err["message"]
    resp = _assert_logged_error(log_flush, r, 504, "upstream_error", "UPSTREAM_READ_TIMEOUT")
    assert 1400 <= resp.duration_ms < 5000
    # The gateway hung up on the upstream (no answer is being paid for any more).
    assert wait_until(lambda: upstream.received[-1].peer_closed_at, 2)
    assert upstream.received[-1].peer_closed_at - started < 4


def test_upstream_reset_before_answer_is_502(fast_gateway, log_flush):
    r = httpx.post(f"{fast_gateway.url}/v1/chat/completions", json=CHAT, timeout=10,
                   headers={**AUTH, "x-mock-fault": "reset"})
    _assert_gateway_error(r, 502)
    _assert_logged_error(log_flush, r, 502, "upstream_error", "Upstream unreachable")


def _sse_read(url: str, headers: dict, body: dict) -> tuple[httpx.Response, list[str]]:
    """Read an SSE answer line by line until the server ends it."""
    lines = []
    with httpx.stream("POST", url, json=body, headers=headers, timeout=10) as r:
        for line in r.iter_lines():
            lines.append(line)
    return r, lines


def test_stream_idle_timeout_ends_with_error_event(fast_gateway, upstream, log_flush):
    body = {**CHAT, "stream": True}
    r, lines = _sse_read(f"{fast_gateway.url}/v1/chat/completions", {**AUTH, "x-mock-delay-ms": "3000"}, body)
    assert r.status_code == 200
    data = [ln for ln in lines if ln.startswith("data: ")]
    assert json.loads(data[0][6:])["object"] == "chat.completion.chunk"  # what had arrived
    assert lines[-3] == "event: error" and "STREAM_IDLE_TIMEOUT" in json.loads(data[-1][6:])["error"]["message"]
    _, resp = exchange_get(log_flush, r.headers["x-gateway-request-id"])
    assert resp.status_code == 200 and resp.is_error and resp.outcome == "upstream_error"
    assert "STREAM_IDLE_TIMEOUT" in resp.error_message
    assert resp.body == data[0] + "\n\n"  # the partial upstream body, without the gateway's event
    assert 500 <= resp.duration_ms < 2900  # cut by the idle timeout, before the next event (3 s)
    assert wait_until(lambda: upstream.received[-1].peer_closed_at, 2)


@pytest.mark.parametrize("fault", ["close-mid-stream", "close-mid-event"])
def test_upstream_closes_mid_stream_sdk_sees_error(fast_gateway, log_flush, fault):
    # close-mid-event breaks inside an event: its half is never sent (glued to the gateway's error
    # event it made one line the SDK could not parse: a JSON error instead of the APIError).
    client = openai.OpenAI(api_key=KEY, base_url=f"{fast_gateway.url}/v1", max_retries=0,
                           default_headers={"x-mock-fault": fault, "x-mock-events": "6"})
    received = []
    with pytest.raises(openai.APIError) as err:
        for chunk in client.chat.completions.create(**CHAT, stream=True):
            received.append(chunk.choices[0].delta.content if chunk.choices else None)
    assert "upstream failed mid-response" in str(err.value)
    assert received == ["", "tok0 ", "tok1 ", "tok2 "]  # everything before the break arrived
    _, resp = only_exchange(log_flush)
    assert resp.outcome == "upstream_error" and resp.is_error and resp.status_code == 200
    assert "RemoteProtocolError" in resp.error_message
    half = fault == "close-mid-event"  # the log keeps the half event
    assert resp.body.count("data: ") == 4 + half and resp.body.endswith("\n\n") != half
    assert "[DONE]" not in resp.body
    assert resp.stream_result["result"]["choices"][0]["message"]["content"] == "tok0 tok1 tok2 "


def _raw_stream(url: str, fault: str) -> tuple[httpx.Response, bytes]:
    """A chat stream's bytes as the client got them, with a mock fault."""
    with httpx.stream("POST", f"{url}/v1/chat/completions", json={**CHAT, "stream": True}, timeout=10,
                      headers={**AUTH, "x-mock-fault": fault, "x-mock-events": "6"}) as r:
        return r, b"".join(r.iter_raw())


def test_stream_ended_cleanly_mid_answer_is_logged_cut(fast_gateway, log_flush):
    # The upstream closes its body properly, but before any finish_reason and before `data: [DONE]`: no fault
    # the relay can see. The client gets exactly what was sent; the log must not call it a whole answer.
    r, got = _raw_stream(fast_gateway.url, "end-early")
    assert r.status_code == 200 and got.count(b"data: ") == 4 and b"[DONE]" not in got
    _, resp = exchange_get(log_flush, r.headers["x-gateway-request-id"])
    assert resp.body.encode() == got  # relayed unchanged: no error event added
    assert resp.outcome == "upstream_error" and resp.is_error and resp.status_code == 200
    assert "ended the stream before its final event" in resp.error_message
    assert resp.stream_result["result"]["choices"][0]["finish_reason"] is None


def test_stream_with_finish_reason_but_no_done_is_completed(fast_gateway, log_flush):
    # Some OpenAI-compatible servers never send [DONE]: a finish_reason ended the answer.
    r, got = _raw_stream(fast_gateway.url, "no-done")
    assert r.status_code == 200 and b"[DONE]" not in got and b'"finish_reason": "stop"' in got
    _, resp = exchange_get(log_flush, r.headers["x-gateway-request-id"])
    assert resp.body.encode() == got
    assert resp.outcome == "completed" and not resp.is_error and resp.error_message == ""


def test_upstream_closes_mid_binary_body_cuts_the_client(fast_gateway, log_flush, payload_dir):
    size = 1 << 20
    got = bytearray()
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("POST", f"{fast_gateway.url}/v1/audio/speech", timeout=10,
                          json={"model": "tts-1", "input": "x", "voice": "alloy"},
                          headers={**AUTH, "x-mock-fault": "close-mid-stream", "x-mock-size": str(size)}) as r:
            assert r.status_code == 200 and r.headers["content-length"] == str(size)
            rid = r.headers["x-gateway-request-id"]
            for part in r.iter_raw():
                got += part
    assert size // 2 <= len(got) < size and bytes(got) == (BLOCK * 16)[: len(got)]
    _, resp = exchange_get(log_flush, rid)
    assert resp.outcome == "upstream_error" and resp.is_error and "RemoteProtocolError" in resp.error_message
    assert resp.body_size == len(got)
    [f] = response_files(resp)  # the partial body is kept, byte for byte
    assert f.size == len(got) and (payload_dir / f.file.name).read_bytes() == bytes(got)


def test_upstream_stalls_mid_json_body_cuts_the_client(fast_gateway, upstream, log_flush):
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("POST", f"{fast_gateway.url}/v1/chat/completions", json=CHAT, timeout=10,
                          headers={**AUTH, "x-mock-fault": "stall-body", "x-mock-stall-s": "8"}) as r:
            rid = r.headers["x-gateway-request-id"]
            r.read()
    _, resp = exchange_get(log_flush, rid)
    assert resp.outcome == "upstream_error" and "STREAM_IDLE_TIMEOUT" in resp.error_message
    assert resp.body.startswith('{"id": "chatcmpl-mock"') and 0 < resp.body_size < 600
    assert wait_until(lambda: upstream.received[-1].peer_closed_at, 2)


def test_healthy_stream_still_completes(fast_gateway, log_flush):
    """The idle timeout only trips on silence: slow but steady events pass."""
    body = {**CHAT, "stream": True}
    r, lines = _sse_read(f"{fast_gateway.url}/v1/chat/completions", {**AUTH, "x-mock-delay-ms": "200"}, body)
    assert lines[-2] == "data: [DONE]"
    _, resp = exchange_get(log_flush, r.headers["x-gateway-request-id"])
    assert resp.outcome == "completed" and not resp.is_error


def test_a_client_that_leaves_after_the_last_event_had_a_complete_stream(fast_gateway, upstream, log_flush):
    # openai-python stops at data: [DONE] and closes; this upstream's end of body comes 2 s later.
    # The client had the whole answer: completed (and cached), not client_aborted.
    client = openai.OpenAI(api_key=KEY, base_url=f"{fast_gateway.url}/v1", max_retries=0,
                           default_headers={"x-mock-fault": "linger-end", "x-mock-stall-s": "2",
                                            "X-Gateway-Cache": "60"})
    with client.chat.completions.with_streaming_response.create(**CHAT, stream=True) as answer:
        rid = answer.headers["x-gateway-request-id"]
        text = "".join(c.choices[0].delta.content or "" for c in answer.parse() if c.choices)
    assert text
    _, resp = exchange_get(log_flush, rid)
    assert resp.outcome == "completed" and not resp.is_error and resp.cache_hit is False
    assert resp.duration_ms < 1000  # ended with its last event, not when the client's leaving was seen
    again = client.chat.completions.create(**CHAT, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in again if c.choices) == text
    assert len(upstream.received) == 1  # the second call was a hit of the first


def test_silence_after_the_streams_final_event_is_no_failure(fast_gateway, upstream, log_flush):
    # The upstream sent data: [DONE], then held its connection open past STREAM_IDLE_TIMEOUT (or reset
    # it). A client reading to the end had the whole answer: no error event after [DONE], and the log
    # says completed, ending with the last event.
    body = {**CHAT, "stream": True}
    r, lines = _sse_read(f"{fast_gateway.url}/v1/chat/completions",
                         {**AUTH, "x-mock-fault": "linger-end", "x-mock-stall-s": "2"}, body)
    assert [line for line in lines if line][-1] == "data: [DONE]"
    assert not any("error" in line for line in lines)
    _, resp = exchange_get(log_flush, r.headers["x-gateway-request-id"])
    assert resp.outcome == "completed" and not resp.is_error and not resp.error_message
    assert resp.duration_ms < 600  # ended with its last event, not when the idle timer fired


def test_unexpected_failure_while_forwarding_still_ends_the_log_entry(fast_gateway, log_flush, monkeypatch):
    import proxy.upstream

    def unreadable(url):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(proxy.upstream, "url_parse", unreadable)
    r = httpx.post(f"{fast_gateway.url}/v1/images/edits", headers=AUTH, timeout=10,
                   files={"image": ("a.png", b"\x89PNG" + b"\x00" * 100, "image/png")}, data={"prompt": "x"})
    err = _assert_gateway_error(r, 500)
    assert "Input/output error" in err["message"]
    _assert_logged_error(log_flush, r, 500, "gateway_error", "Input/output error")


def test_a_broken_stream_ends_with_each_providers_own_error(fast_gateway, upstream):
    """The last event says the upstream failed in the provider's shape, so each SDK raises its usual error
    (google-genai could not read an `event:` line, and raised a JSON error instead)."""
    import anthropic
    from google import genai
    from google.genai import errors, types

    slow = {"x-mock-delay-ms": "3000"}  # the idle timeout (0.6 s) cuts the stream after its first event
    claude = anthropic.Anthropic(api_key="sk-ant-" + "f" * 30, base_url=f"{fast_gateway.url}/anthropic",
                                 max_retries=0, default_headers=slow)
    with pytest.raises(anthropic.APIStatusError) as caught:
        with claude.messages.stream(model="claude-sonnet-4-5", max_tokens=10,
                                    messages=[{"role": "user", "content": "hi"}]) as stream:
            for _ in stream:
                pass
    assert "STREAM_IDLE_TIMEOUT" in str(caught.value)
    gemini = genai.Client(api_key="AIza" + "f" * 35, http_options=types.HttpOptions(
        base_url=f"{fast_gateway.url}/gemini", headers=slow))
    with pytest.raises(errors.APIError) as raised:
        for _ in gemini.models.generate_content_stream(model="gemini-2.0-flash", contents="hi"):
            pass
    assert raised.value.code == 502 and "STREAM_IDLE_TIMEOUT" in str(raised.value)


@pytest.mark.parametrize("stream", [False, True])
def test_a_status_http_does_not_have_is_a_502_in_the_providers_shape(scripted, gateway, log_flush, stream):
    """The HTTP client reads any three digits (999); answered on, the client got a bare 500 and a streamed
    exchange was never logged."""
    scripted.answer = lambda request: (999, [("content-type", "text/event-stream" if stream else "application/json")],
                                       b'data: {"choices": []}\n\n' if stream else b'{"choices": []}')
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json={**CHAT, "stream": stream}, headers=AUTH)
    assert r.status_code == 502 and "status 999, which HTTP does not have" in r.json()["error"]["message"]
    _, resp = exchange_get(log_flush, r.headers["x-gateway-request-id"])
    assert resp.status_code == 502 and resp.outcome == "upstream_error"


def test_an_upstream_header_the_server_cannot_send_is_left_out_and_said(scripted, gateway, log_flush):
    """A control character in a value (aiohttp reads it): sent on, the server raised and the client got nothing."""
    scripted.answer = lambda request: (200, [("content-type", "application/json"), ("x-ctl", "a\x01b"),
                                             ("x-kept", "yes")], b'{"choices": []}')
    r = httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 200 and r.json() == {"choices": []}
    assert "x-ctl" not in r.headers and r.headers["x-kept"] == "yes"
    _, resp = exchange_get(log_flush, r.headers["x-gateway-request-id"])
    assert resp.outcome == "completed" and "upstream header(s) x-ctl not passed on" in resp.error_message
    assert ["x-ctl", "a\x01b"] in resp.headers  # the log keeps what the upstream sent
