"""End to end: the official openai SDK through a live gateway to a local mock upstream."""

import base64
import json
from pathlib import Path

import httpx
import openai
import pytest

from testing.media import PNG
from logs.models import BinaryFile, Request, Response

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "sk-" + "e2eTESTkey0123456789abcdefXYZ9"  # fake; split so no key-like literal


@pytest.fixture
def client(gateway):
    """An OpenAI SDK client whose only change is the base URL."""
    return openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0)


def _only_exchange(log_flush, endpoint: str) -> tuple[Request, Response]:
    log_flush()
    req = Request.objects.get(endpoint=endpoint)
    return req, Response.objects.get(request=req)


def test_chat_plain(client, upstream, log_flush, payload_dir):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    result = raw.parse()
    assert result.choices[0].message.content == "Hello! How can I help you today?"
    rid = raw.headers["x-gateway-request-id"]

    req, resp = _only_exchange(log_flush, "/v1/chat/completions")
    assert req.id.hex == rid
    assert req.provider == "openai" and req.method == "POST" and req.model == "gpt-4o-mini"
    assert json.loads(req.body)["messages"] == [{"role": "user", "content": "hi"}]
    assert resp.status_code == 200 and resp.outcome == "completed" and not resp.is_error
    assert json.loads(resp.body)["choices"][0]["message"]["content"] == result.choices[0].message.content
    assert resp.model == "gpt-4o-mini-2024-07-18"
    assert (resp.input_tokens, resp.output_tokens, resp.total_tokens) == (12, 9, 21)
    assert resp.duration_ms > 0 and resp.ttfb_ms is not None
    # The upstream got the real key; the log only a masked one.
    assert upstream.received[-1].header("authorization") == f"Bearer {KEY}"
    logged_auth = dict((k.lower(), v) for k, v in req.headers)["authorization"]
    assert KEY not in logged_auth and logged_auth.endswith(KEY[-4:])


def test_chat_streamed(client, log_flush):
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "count"}], stream=True,
        stream_options={"include_usage": True})
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "tok0 tok1 tok2 tok3 tok4 "

    req, resp = _only_exchange(log_flush, "/v1/chat/completions")
    assert req.stream_requested and resp.is_stream
    assert resp.body.startswith("data: ") and resp.body.rstrip().endswith("data: [DONE]")
    result = resp.stream_result["result"]
    assert result["choices"][0]["message"]["content"] == text
    assert result["choices"][0]["finish_reason"] == "stop"
    assert resp.output_tokens == 5 and resp.input_tokens == 12
    assert len(resp.event_offsets_ms) == resp.stream_result["events"]


def test_chat_streamed_tool_call_reassembled(gateway, log_flush):
    c = openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0,
                      default_headers={"x-mock-tool-call": "1"})
    chunks = list(c.chat.completions.create(model="gpt-4o-mini", messages=[], stream=True))
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    _, resp = _only_exchange(log_flush, "/v1/chat/completions")
    call = resp.stream_result["result"]["choices"][0]["message"]["tool_calls"][0]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert call["id"] == "call_1"


def test_responses_api_streamed(client, log_flush):
    with client.responses.stream(model="gpt-4o-mini", input="hello") as stream:
        final = stream.get_final_response()
    assert final.output_text == "part0 part1 part2 "
    _, resp = _only_exchange(log_flush, "/v1/responses")
    assert resp.is_stream
    assert resp.stream_result["result"]["output"][0]["content"][0]["text"] == final.output_text
    assert (resp.input_tokens, resp.output_tokens) == (8, 4)


def test_embeddings(client, log_flush):
    out = client.embeddings.create(model="text-embedding-3-small", input="abc")
    assert out.data[0].embedding == [0.1, 0.2, 0.3]
    req, resp = _only_exchange(log_flush, "/v1/embeddings")
    assert req.model == "text-embedding-3-small" and resp.input_tokens == 3


def test_image_generation_b64_goes_to_a_file(client, log_flush, payload_dir):
    out = client.images.generate(model="gpt-image-1", prompt="a red square", response_format="b64_json")
    assert base64.b64decode(out.data[0].b64_json) == PNG  # the client gets the base64 untouched

    req, resp = _only_exchange(log_flush, "/v1/images/generations")
    files = list(BinaryFile.objects.filter(request=req))
    assert len(files) == 1
    f = files[0]
    assert f.response_id == resp.id and f.content_type == "image/png" and f.size == len(PNG)
    assert f.file.name.startswith("openai/") and f.file.name.endswith(".png")
    assert (payload_dir / f.file.name).read_bytes() == PNG
    stored = json.loads(resp.body)
    assert stored["data"][0]["b64_json"]["$gateway_file"] == f.file.name  # no base64 in the column
    assert base64.b64encode(PNG).decode() not in resp.body
    # The answer reports usage but names no model (as OpenAI's does): priced by the model asked for.
    assert (resp.model, resp.input_tokens, resp.output_tokens) == ("gpt-image-1", 5, 10)
    assert resp.cost_usd > 0 and resp.price_source.startswith("genai-prices")


def test_image_edit_upload_is_kept_as_file(client, upstream, log_flush, payload_dir):
    upload = PNG + b"\x00" * 1000
    out = client.images.edit(model="gpt-image-1", image=("in.png", upload, "image/png"), prompt="bluer")
    assert out.data[0].b64_json
    assert upstream.received[-1].body.count(upload) == 1  # the multipart body went through intact

    req, _ = _only_exchange(log_flush, "/v1/images/edits")
    part = BinaryFile.objects.get(request=req, role="request_part")
    assert part.field_name == "image" and part.filename == "in.png" and part.content_type == "image/png"
    assert (payload_dir / part.file.name).read_bytes() == upload and part.size == len(upload)
    body = json.loads(req.body)
    assert body["fields"]["prompt"] == "bluer" and body["fields"]["model"] == "gpt-image-1"
    assert req.model == "gpt-image-1"


def test_speech_binary(client, log_flush, payload_dir):
    audio = client.audio.speech.create(model="tts-1", voice="alloy", input="hello")
    data = audio.read()
    assert len(data) == 4096

    req, resp = _only_exchange(log_flush, "/v1/audio/speech")
    assert resp.body is None and resp.body_size == 4096
    f = BinaryFile.objects.get(response=resp)
    assert f.content_type == "audio/mpeg" and f.file.name.endswith(".mp3")
    assert (payload_dir / f.file.name).read_bytes() == data
    assert len(f.sha256) == 64


def test_models_list(client, log_flush):
    assert [m.id for m in client.models.list()] == ["gpt-4o-mini"]
    req, resp = _only_exchange(log_flush, "/v1/models")
    assert req.method == "GET" and resp.status_code == 200


def test_upstream_401_passes_through(gateway, log_flush):
    c = openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0,
                      default_headers={"x-mock-status": "401"})
    with pytest.raises(openai.AuthenticationError) as err:
        c.models.list()
    assert err.value.status_code == 401
    assert err.value.body["code"] == "invalid_api_key"
    _, resp = _only_exchange(log_flush, "/v1/models")
    assert resp.status_code == 401 and resp.is_error and resp.outcome == "completed"
    assert "invalid_api_key" in resp.body


def test_openai_prefix_alias(gateway, upstream, log_flush):
    c = openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/openai/v1", max_retries=0)
    c.models.list()
    assert upstream.received[-1].path == "/v1/models"
    log_flush()
    assert Request.objects.get().endpoint == "/openai/v1/models"


def test_gzip_upstream_body_matches_headers_and_log_is_decoded(gateway, log_flush):
    r = httpx.post(f"{gateway.url}/v1/embeddings", json={"model": "m", "input": "x"},
                   headers={"x-mock-gzip": "1", "accept-encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip"
    assert r.json()["data"][0]["embedding"] == [0.1, 0.2, 0.3]  # httpx decodes per the headers
    assert int(r.headers["content-length"]) == r.num_bytes_downloaded  # framing matches the gzip bytes
    _, resp = _only_exchange(log_flush, "/v1/embeddings")
    assert json.loads(resp.body)["object"] == "list"


def test_health_and_json_404(gateway):
    assert httpx.get(f"{gateway.url}/health").json()["status"] == "ok"
    assert httpx.head(f"{gateway.url}/health").status_code == 200
    for method in ("POST", "DELETE"):  # JSON, not Django's CSRF page
        r = httpx.request(method, f"{gateway.url}/health")
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD" and "use GET or HEAD" in r.json()["detail"]
    r = httpx.get(f"{gateway.url}/nowhere")
    assert r.status_code == 404 and "/v1/" in r.json()["error"]["message"]


def test_sse_events_arrive_before_the_stream_ends(gateway):
    """Each event reaches the client while the upstream is still producing the next ones."""
    import time

    body = {"model": "m", "stream": True, "messages": []}
    headers = {"x-mock-events": "3", "x-mock-delay-ms": "300"}
    with httpx.stream("POST", f"{gateway.url}/v1/chat/completions", json=body, headers=headers) as r:
        start = time.monotonic()
        arrivals = []
        for line in r.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic() - start)
    # 6 events spaced 300 ms apart: the first must not wait for the last.
    assert arrivals[0] < arrivals[-1] - 0.9


def test_health_says_an_unmigrated_database_is_not_ready(tmp_path):
    # It answered ok while every proxied call failed with "no such table".
    import subprocess
    import sys
    import time

    from tests.procs import ROOT, free_port, proc_env

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "gateway_project.asgi:application", "--port", str(port),
                             "--log-level", "warning"], cwd=ROOT, env=proc_env(tmp_path, "http://127.0.0.1:9"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline, r = time.monotonic() + 30, None
        while time.monotonic() < deadline and r is None:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
            except httpx.HTTPError:
                time.sleep(0.1)
        assert r.status_code == 503 and "not migrated" in r.json()["detail"] and "manage.py migrate" in r.json()["detail"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _raw(port: int, request: bytes) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    return raw


def test_header_bytes_and_a_bodiless_post_reach_the_upstream_as_sent(gateway, upstream):
    # Through the real HTTP client: UTF-8 header bytes were a 500 (httpx encodes str as ASCII), and
    # a bodiless POST got a Content-Length: 0 the client never sent (httpx adds one).
    raw = _raw(gateway.port, b"POST /v1/models HTTP/1.1\r\nHost: x\r\nX-Title: J\xc3\xbcrgen\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 ")
    head = upstream.received[-1].head
    assert b"J\xc3\xbcrgen" in head and b"content-length" not in head.lower()

