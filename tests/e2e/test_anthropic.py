"""End to end: the official anthropic SDK through a live gateway to a mock Anthropic upstream."""

import json
from decimal import Decimal

import anthropic
import httpx
import pytest

from logs.models import Request, Response

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "sk-ant-" + "e2eTESTkey0123456789abcdefXYZ7"  # fake; split so no key-like literal
TOOLS = [{"name": "get_weather", "description": "Weather for a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
# claude-sonnet-4 in logs/pricing/prices.json: $3 input, $15 output, $0.30 cache reads per million tokens.
# The mock answers 25 uncached + 10 cache-read input tokens and 15 output tokens.
EXPECTED_COST = (Decimal(25) * 3 + Decimal(10) * Decimal("0.30") + Decimal(15) * 15) / 1_000_000


@pytest.fixture
def client(gateway):
    """An Anthropic SDK client whose only change is the base URL."""
    return anthropic.Anthropic(api_key=KEY, base_url=f"{gateway.url}/anthropic", max_retries=0)


def _only_exchange(log_flush) -> tuple[Request, Response]:
    log_flush()
    req = Request.objects.get(endpoint="/anthropic/v1/messages")
    return req, Response.objects.get(request=req)


def _assert_usage_logged(resp: Response) -> None:
    assert resp.model == "claude-sonnet-4-20250514"
    # input_tokens counts every prompt token (Anthropic reports cache reads apart); cached is the subset.
    assert (resp.input_tokens, resp.cached_tokens, resp.output_tokens, resp.total_tokens) == (35, 10, 15, 50)
    assert resp.reasoning_tokens is None  # not reported: unknown, not 0
    assert resp.cost_usd == EXPECTED_COST.quantize(Decimal("0.00000001"))


def test_message_plain(client, upstream, log_flush):
    msg = client.messages.create(model="claude-sonnet-4", max_tokens=100,
                                 messages=[{"role": "user", "content": "hi"}])
    assert msg.content[0].text == "Hello from Claude!" and msg.usage.output_tokens == 15

    req, resp = _only_exchange(log_flush)
    assert req.provider == "anthropic" and req.model == "claude-sonnet-4" and not req.stream_requested
    assert upstream.received[-1].path == "/v1/messages"
    # Depending on its version the SDK sends the key as x-api-key or as a Bearer token: both pass.
    sent = upstream.received[-1].header("x-api-key") or upstream.received[-1].header("authorization")
    assert sent.endswith(KEY)
    logged = {k.lower(): v for k, v in req.headers}
    assert KEY not in json.dumps(req.headers) and req.key_fingerprint
    assert (logged.get("x-api-key") or logged["authorization"]).endswith(KEY[-4:])
    assert resp.status_code == 200 and not resp.is_stream and resp.ttft_ms is None
    _assert_usage_logged(resp)


def test_message_streamed(client, log_flush):
    with client.messages.stream(model="claude-sonnet-4", max_tokens=100,
                                messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from Claude!" and final.stop_reason == "end_turn"

    req, resp = _only_exchange(log_flush)
    assert req.stream_requested and resp.is_stream
    assert "event: message_start" in resp.body and "event: message_delta" in resp.body
    result = resp.stream_result["result"]
    assert result["content"] == [{"type": "text", "text": text}] and result["stop_reason"] == "end_turn"
    _assert_usage_logged(resp)
    assert resp.ttft_ms is not None and resp.ttfb_ms <= resp.ttft_ms <= resp.duration_ms


def test_stream_ended_before_message_stop_is_logged_cut(gateway, log_flush):
    # The upstream closes its body cleanly halfway, before message_delta and message_stop: the client gets
    # what was sent as it was; the log says the answer may be incomplete instead of calling it whole.
    with httpx.stream("POST", f"{gateway.url}/anthropic/v1/messages", timeout=10,
                      json={"model": "claude-sonnet-4", "max_tokens": 100, "stream": True,
                            "messages": [{"role": "user", "content": "hi"}]},
                      headers={"x-api-key": KEY, "anthropic-version": "2023-06-01", "x-mock-fault": "end-early"}) as r:
        got = b"".join(r.iter_raw())
    assert r.status_code == 200 and b"message_start" in got and b"message_stop" not in got
    _, resp = _only_exchange(log_flush)
    assert resp.body.encode() == got  # relayed unchanged: no error event added
    assert resp.outcome == "upstream_error" and resp.is_error
    assert "ended the stream before its final event" in resp.error_message


def test_tool_use_streamed(client, log_flush):
    with client.messages.stream(model="claude-sonnet-4", max_tokens=100, tools=TOOLS,
                                messages=[{"role": "user", "content": "weather in Paris?"}]) as stream:
        final = stream.get_final_message()
    call = [b for b in final.content if b.type == "tool_use"][0]
    assert (call.name, call.input, final.stop_reason) == ("get_weather", {"city": "Paris"}, "tool_use")

    _, resp = _only_exchange(log_flush)
    blocks = resp.stream_result["result"]["content"]
    assert blocks[1] == {"type": "tool_use", "id": "toolu_mock1", "name": "get_weather", "input": {"city": "Paris"}}
    _assert_usage_logged(resp)


def test_tool_use_plain(client, log_flush):
    msg = client.messages.create(model="claude-sonnet-4", max_tokens=100, tools=TOOLS,
                                 messages=[{"role": "user", "content": "weather in Paris?"}])
    assert msg.content[1].type == "tool_use" and msg.content[1].input == {"city": "Paris"}
    req, resp = _only_exchange(log_flush)
    assert json.loads(req.body)["tools"][0]["name"] == "get_weather"
    _assert_usage_logged(resp)


def test_unpriced_model_has_null_cost(client, log_flush):
    client.messages.create(model="claude-imaginary-9", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    _, resp = _only_exchange(log_flush)
    assert resp.model == "claude-imaginary-9-20250514" and resp.input_tokens == 35
    assert resp.cost_usd is None


def test_batch_results_are_downloaded_through_the_gateway(scripted, gateway, log_flush, settings):
    """A batch names its results by an absolute URL of the upstream, which batches.results() downloads from:
    around the gateway (never logged; a gateway key sent to Anthropic). Pointed at the gateway, the download is
    proxied and logged. The answer came compressed: the client gets it decoded, the log keeps it as it came."""
    import gzip

    import httpx

    upstream = settings.UPSTREAM_URLS["anthropic"].rstrip("/")
    results_url = f"{upstream}/v1/messages/batches/msgbatch_1/results"
    batch = {"id": "msgbatch_1", "type": "message_batch", "processing_status": "ended",
             "request_counts": {"processing": 0, "succeeded": 1, "errored": 0, "canceled": 0, "expired": 0},
             "created_at": "2026-12-01T00:00:00Z", "ended_at": "2026-12-01T00:01:00Z",
             "expires_at": "2026-12-02T00:00:00Z", "archived_at": None, "cancel_initiated_at": None,
             "results_url": results_url}
    line = {"custom_id": "a", "result": {"type": "succeeded", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-20250514",
        "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 1}}}}

    def answer(request: httpx.Request):
        if request.url.path.endswith("/results"):
            return 200, [("content-type", "application/binary")], (json.dumps(line) + "\n").encode()
        # Escaped slashes, as some JSON writers put them: the link is still found and replaced.
        return 200, [("content-type", "application/json"), ("content-encoding", "gzip")], \
            gzip.compress(json.dumps(batch).replace("/", "\\/").encode())

    scripted.answer = answer
    client = anthropic.Anthropic(api_key=KEY, base_url=f"{gateway.url}/anthropic", max_retries=0)
    got = client.messages.batches.retrieve("msgbatch_1")
    assert got.results_url == f"{gateway.url}/anthropic/v1/messages/batches/msgbatch_1/results"
    results = list(client.messages.batches.results("msgbatch_1"))
    assert results[0].custom_id == "a" and results[0].result.message.content[0].text == "hi"
    # results() retrieves the batch again, then downloads from its results_url: through the gateway.
    assert [r.url.path for r in scripted.requests] == ["/v1/messages/batches/msgbatch_1"] * 2 + [
        "/v1/messages/batches/msgbatch_1/results"]
    log_flush()
    retrieve = Response.objects.filter(request__endpoint="/anthropic/v1/messages/batches/msgbatch_1").first()
    assert json.loads(retrieve.body)["results_url"] == results_url  # the log: the answer as it came
    assert {"step": "links", "decision": "results_url points at the gateway", "upstream": results_url} in retrieve.steps
    assert Request.objects.filter(endpoint="/anthropic/v1/messages/batches/msgbatch_1/results").count() == 1


def test_a_batch_answer_too_large_or_a_bomb_goes_as_it_came(scripted, gateway, log_flush, settings, monkeypatch):
    import gzip

    import httpx

    import proxy.links
    import proxy.relay

    upstream = settings.UPSTREAM_URLS["anthropic"].rstrip("/")
    results_url = f"{upstream}/v1/messages/batches/msgbatch_2/results"
    big = json.dumps({"id": "msgbatch_2", "results_url": results_url, "pad": "x" * 5000}).encode()
    bomb = gzip.compress(json.dumps({"id": "msgbatch_3", "results_url": results_url, "pad": " " * 200_000}).encode())
    scripted.answer = lambda request: (200, [("content-type", "application/json")], big) \
        if request.url.path.endswith("_2") else (200, [("content-type", "application/json"),
                                                      ("content-encoding", "gzip")], bomb)
    monkeypatch.setattr(proxy.relay, "LINKS_BODY_MAX", 1000)  # taken whole only up to this
    monkeypatch.setattr(proxy.links, "DECODED_MAX", 100_000)  # decoded only up to this
    for batch in ("msgbatch_2", "msgbatch_3"):
        r = httpx.get(f"{gateway.url}/anthropic/v1/messages/batches/{batch}", headers={"x-api-key": KEY})
        assert r.status_code == 200 and r.json()["results_url"] == results_url  # as it came
        log_flush()
        resp = Response.objects.get(request_id=r.headers["x-gateway-request-id"])
        assert not any(s.get("step") == "links" for s in resp.steps or [])  # and the log does not say otherwise
