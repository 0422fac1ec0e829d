"""End to end: the official google-genai SDK through a live gateway to a mock Gemini upstream."""

import json
import re
from decimal import Decimal

import httpx
import pytest
from google import genai
from google.genai import types

from logs.models import Request, Response
from tests.keys.conftest import key_caches, make_key  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "AIza" + "E2ETESTkey0123456789abcdefXYZ5"  # fake; split so no key-like literal
# gemini-2.5-flash in genai-prices: $0.30 input, $2.50 output (thoughts included), $0.03 cache read (the
# hand-typed table this replaced said $0.075). The mock answers 8 prompt tokens (4 of them cached), 5
# candidate + 7 thought tokens.
EXPECTED_COST = ((Decimal(4) * Decimal("0.30") + Decimal(4) * Decimal("0.03") + Decimal(12) * Decimal("2.50"))
                 / 1_000_000).quantize(Decimal("0.00000001"))


@pytest.fixture
def client(gateway):
    """A genai client whose only change is the base URL."""
    return genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=f"{gateway.url}/gemini"))


def _only_exchange(log_flush) -> tuple[Request, Response]:
    log_flush()
    req = Request.objects.get()
    return req, Response.objects.get(request=req)


def _assert_usage_logged(resp: Response) -> None:
    assert resp.model == "gemini-2.5-flash"
    assert (resp.input_tokens, resp.cached_tokens, resp.output_tokens, resp.reasoning_tokens,
            resp.total_tokens) == (8, 4, 12, 7, 20)
    assert resp.cost_usd == EXPECTED_COST


def test_generate_content_plain(client, upstream, log_flush):
    answer = client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert answer.text == "Hello from Gemini!"
    assert answer.usage_metadata.total_token_count == 20

    req, resp = _only_exchange(log_flush)
    # The SDK picks the API version (v1 or v1beta, by release); the gateway passes its path on as is.
    sent_path = upstream.received[-1].path
    assert re.fullmatch(r"/v1(beta)?/models/gemini-2\.5-flash:generateContent", sent_path)
    assert req.provider == "gemini" and req.endpoint == "/gemini" + sent_path
    assert req.model == "gemini-2.5-flash" and not req.stream_requested
    assert upstream.received[-1].header("x-goog-api-key") == KEY
    assert KEY not in str(req.headers) and req.key_fingerprint
    _assert_usage_logged(resp)


def test_generate_content_streamed(client, upstream, log_flush):
    pieces = [c.text for c in client.models.generate_content_stream(model="gemini-2.5-flash", contents="hi")]
    assert "".join(pieces) == "Hello from Gemini!"

    req, resp = _only_exchange(log_flush)
    assert upstream.received[-1].query == "alt=sse"
    assert req.stream_requested and req.query_string == "alt=sse" and resp.is_stream
    result = resp.stream_result["result"]
    assert result["candidates"][0]["content"]["parts"] == [{"text": "Hello from Gemini!"}]
    assert result["candidates"][0]["finishReason"] == "STOP" and resp.stream_result["events"] == 3
    _assert_usage_logged(resp)
    assert len(resp.event_offsets_ms) == 3  # CRLF-framed events are timed too
    assert resp.ttft_ms is not None and resp.ttfb_ms <= resp.ttft_ms <= resp.duration_ms


def test_a_stream_ended_before_any_finish_reason_is_logged_cut(gateway, log_flush):
    # The upstream closes its body cleanly after the first chunk: no finishReason came. Relayed as sent; the
    # log says the answer may be incomplete instead of calling it whole.
    with httpx.stream("POST", f"{gateway.url}/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
                      json={"contents": [{"parts": [{"text": "hi"}]}]}, timeout=10,
                      headers={"x-goog-api-key": KEY, "x-mock-fault": "end-early"}) as r:
        got = b"".join(r.iter_raw())
    assert r.status_code == 200 and b"Hello" in got and b"finishReason" not in got
    _, resp = _only_exchange(log_flush)
    assert resp.body.encode() == got
    assert resp.outcome == "upstream_error" and resp.is_error
    assert "ended the stream before its final event" in resp.error_message


def test_a_stream_without_alt_sse_is_one_json_array_logged_with_its_usage(gateway, upstream, log_flush):
    """REST callers (curl) that leave out alt=sse get the chunks as one JSON array: read like the SSE form."""
    r = httpx.post(f"{gateway.url}/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent",
                   json={"contents": [{"parts": [{"text": "hi"}]}]}, headers={"x-goog-api-key": KEY})
    assert r.status_code == 200 and [c["candidates"][0]["content"]["parts"][0]["text"] for c in r.json()] == [
        "Hello ", "from ", "Gemini!"]
    _, resp = _only_exchange(log_flush)
    _assert_usage_logged(resp)


def test_an_error_as_one_json_array_is_logged_with_its_message(scripted, gateway, log_flush):
    """Without alt=sse, Gemini answers an error of :streamGenerateContent inside the JSON array too: the log's list
    showed such an exchange's status with no message."""
    error = {"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).",
                       "status": "RESOURCE_EXHAUSTED"}}
    scripted.answer = lambda request: (429, [("content-type", "application/json")], json.dumps([error]).encode())
    r = httpx.post(f"{gateway.url}/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent",
                   json={"contents": [{"parts": [{"text": "hi"}]}]}, headers={"x-goog-api-key": KEY})
    assert r.status_code == 429 and r.json() == [error]  # the client gets it as it came
    _, resp = _only_exchange(log_flush)
    assert resp.is_error and resp.error_message == "Resource has been exhausted (e.g. check quota)."


def test_key_query_parameter_is_a_masked_credential(gateway, upstream, log_flush):
    url = f"{gateway.url}/gemini/v1beta/models/gemini-2.5-flash:generateContent?key={KEY}"
    r = httpx.post(url, json={"contents": [{"parts": [{"text": "hi"}]}]})
    assert r.status_code == 200 and r.json()["modelVersion"] == "gemini-2.5-flash"
    assert upstream.received[-1].query == f"key={KEY}"  # the upstream still gets the key

    req, resp = _only_exchange(log_flush)
    assert KEY not in req.query_string and req.query_string.endswith(KEY[-4:])
    assert req.key_fingerprint  # requests with this key can be grouped without storing it
    _assert_usage_logged(resp)


def test_gateway_error_uses_google_error_shape(gateway, settings):
    settings.UPSTREAM_URLS = {**settings.UPSTREAM_URLS, "gemini": "http://127.0.0.1:9"}  # nothing listens there
    r = httpx.post(f"{gateway.url}/gemini/v1beta/models/gemini-2.5-flash:generateContent", json={})
    assert r.status_code == 502
    err = r.json()["error"]
    assert err["code"] == 502 and err["status"] == "UNAVAILABLE" and "unreachable" in err["message"]


def test_a_file_upload_sends_its_bytes_through_the_gateway(scripted, gateway, log_flush, settings):
    """files.upload is resumable: the start call answers with the URL the bytes go to. Pointing at the upstream,
    it sent them around the gateway (never logged; with a gateway key holding the credential, the key went to
    Google); pointed at the gateway, that call is proxied and logged like any other."""
    import io
    import json

    upstream = settings.UPSTREAM_URLS["gemini"].rstrip("/")
    marker = b"MARKER-of-the-uploaded-file"

    def answer(request: httpx.Request):
        if request.headers.get("x-goog-upload-command") == "start":
            return 200, [("x-goog-upload-url", f"{upstream}/upload/v1beta/files?upload_id=U1&upload_protocol=resumable"),
                         ("x-goog-upload-status", "active")], b""
        file = {"name": "files/abc", "mimeType": "text/plain", "sizeBytes": str(len(request.content)), "state": "ACTIVE"}
        return 200, [("content-type", "application/json"), ("x-goog-upload-status", "final")], \
            json.dumps({"file": file}).encode()

    scripted.answer = answer
    client = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=f"{gateway.url}/gemini"))
    uploaded = client.files.upload(file=io.BytesIO(marker), config=types.UploadFileConfig(mime_type="text/plain"))
    assert uploaded.name == "files/abc"
    start, upload = scripted.requests
    assert upload.url.path == "/upload/v1beta/files" and upload.url.params["upload_id"] == "U1"
    assert upload.content == marker  # the bytes came through the gateway
    log_flush()
    rows = list(Request.objects.order_by("created_at"))
    assert rows[0].endpoint.startswith("/gemini/upload/") and rows[1].endpoint == "/gemini/upload/v1beta/files"
    first = Response.objects.get(request=rows[0])
    assert {"step": "links", "decision": "x-goog-upload-url points at the gateway",
            "upstream": f"{upstream}/upload/v1beta/files?upload_id=U1&upload_protocol=resumable"} in first.steps
    assert dict(first.headers)["x-goog-upload-url"].startswith(f"{upstream}/upload/")  # the log: as the upstream sent it
    assert rows[1].body == marker.decode() and rows[1].query_string.startswith("upload_id=U1")

    # A Host that is no host of ours (userinfo, a path) is never written into the link; an upload is never
    # served from the response cache (its link names this client's Host, and a session made for another call).
    bad = httpx.post(f"{gateway.url}/gemini/upload/v1beta/files", headers={
        "x-goog-api-key": KEY, "x-goog-upload-command": "start", "Host": "gw.example@evil.example"})
    assert bad.headers["x-goog-upload-url"].startswith(f"{upstream}/upload/")
    cached = httpx.post(f"{gateway.url}/gemini/upload/v1beta/files", headers={
        "x-goog-api-key": KEY, "x-goog-upload-command": "start", "X-Gateway-Cache": "60"})
    assert cached.headers["x-goog-upload-url"].startswith(f"{gateway.url}/gemini/upload/")
    again = httpx.post(f"{gateway.url}/gemini/upload/v1beta/files", headers={
        "x-goog-api-key": KEY, "x-goog-upload-command": "start", "X-Gateway-Cache": "60"})
    assert cached.headers["x-gateway-cache"] == again.headers["x-gateway-cache"] == "BYPASS"


def test_the_openai_compatible_endpoint_is_read_as_openai(gateway, upstream, log_flush, make_key):
    """Google's OpenAI-compatible endpoints (/v1beta/openai/...) name the model in the body, as OpenAI's do:
    logged, priced, and held to a key's model list like any other call."""
    import openai

    client = openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/gemini/v1beta/openai", max_retries=0)
    answer = client.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}])
    streamed = client.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}],
                                              stream=True, stream_options={"include_usage": True})
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert upstream.received[-1].path == "/v1beta/openai/chat/completions" and text
    log_flush()
    for req in Request.objects.all():
        resp = Response.objects.get(request=req)
        assert req.provider == "gemini" and req.model == "gemini-2.5-flash"
        assert resp.input_tokens and resp.output_tokens and resp.cost_usd > 0
    assert Request.objects.filter(stream_requested=True).count() == 1 and answer.usage.total_tokens
    _, secret = make_key("mini-only", models=["gpt-4o-mini"])
    with pytest.raises(openai.PermissionDeniedError, match="gemini-2.5-flash"):
        openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/gemini/v1beta/openai", max_retries=0,
                      default_headers={"X-Gateway-Key": secret}).chat.completions.create(
            model="gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}])
    assert len(upstream.received) == 2
