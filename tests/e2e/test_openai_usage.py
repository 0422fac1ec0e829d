"""End to end: usage, cost and STREAM_USAGE=inject with the official openai SDK."""

import json
from decimal import Decimal

import openai
import pytest

from logs.models import Request, Response

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "sk-" + "e2eTESTkey0123456789abcdefXYZ9"  # fake; split so no key-like literal
MESSAGES = [{"role": "user", "content": "count"}]


def _cost(inp: int, out: int) -> Decimal:
    """gpt-4o-mini in logs/pricing/prices.json: $0.15 input, $0.60 output per million tokens."""
    return ((Decimal(inp) * Decimal("0.15") + Decimal(out) * Decimal("0.60")) / 1_000_000).quantize(
        Decimal("0.00000001"))


@pytest.fixture
def client(gateway):
    return openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0)


def _only_exchange(log_flush) -> tuple[Request, Response]:
    log_flush()
    req = Request.objects.get()
    return req, Response.objects.get(request=req)


def test_plain_usage_and_cost(client, log_flush):
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    req, resp = _only_exchange(log_flush)
    assert req.model == "gpt-4o-mini" and resp.model == "gpt-4o-mini-2024-07-18"
    assert (resp.input_tokens, resp.output_tokens, resp.total_tokens) == (12, 9, 21)
    assert (resp.cached_tokens, resp.reasoning_tokens) == (0, 0)  # reported as zero by the upstream
    assert resp.cost_usd == _cost(12, 9)
    assert resp.ttft_ms is None and resp.usage_injected is False  # not a stream


def test_streamed_usage_when_client_asks(client, log_flush):
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    _, resp = _only_exchange(log_flush)
    assert (resp.input_tokens, resp.output_tokens, resp.total_tokens) == (12, 5, 17)
    assert resp.cost_usd == _cost(12, 5) and resp.usage_injected is False
    assert resp.ttft_ms is not None and resp.ttfb_ms <= resp.ttft_ms <= resp.duration_ms


def test_streamed_without_usage_stays_unknown(client, log_flush):
    list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    _, resp = _only_exchange(log_flush)
    assert resp.model == "gpt-4o-mini-2024-07-18"
    assert (resp.input_tokens, resp.output_tokens, resp.total_tokens, resp.cost_usd) == (None, None, None, None)


def test_stream_usage_inject(client, upstream, settings, log_flush):
    settings.STREAM_USAGE = "inject"
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    # The client gets the stream it asked for: content chunks only, no usage chunk.
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "tok0 tok1 tok2 tok3 tok4 "
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    sent = json.loads(upstream.received[-1].body)
    assert sent["stream_options"] == {"include_usage": True}

    req, resp = _only_exchange(log_flush)
    assert "stream_options" not in json.loads(req.body)  # the log shows what the client sent
    assert resp.usage_injected is True
    assert [d["step"] for d in resp.steps] == ["stream_usage"]  # which step changed what went upstream
    assert (resp.input_tokens, resp.output_tokens) == (12, 5) and resp.cost_usd == _cost(12, 5)
    # The raw upstream bytes in the log keep the usage chunk the client never saw.
    events = [e for e in resp.body.split("\n\n") if e.startswith("data: {")]
    last = json.loads(events[-1][len("data: "):])
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 5
    assert len(events) == len(chunks) + 1 and resp.body.rstrip().endswith("data: [DONE]")


def test_stream_usage_inject_leaves_a_client_that_asked_alone(client, upstream, settings, log_flush):
    settings.STREAM_USAGE = "inject"
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].usage.prompt_tokens == 12  # it asked, it gets the chunk
    _, resp = _only_exchange(log_flush)
    assert resp.usage_injected is False and resp.output_tokens == 5


def test_stream_usage_inject_off_by_default(client, upstream, log_flush):
    list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert "stream_options" not in json.loads(upstream.received[-1].body)


def test_ttft_is_the_first_content_event_not_the_first_byte(gateway, log_flush):
    c = openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0,
                      default_headers={"x-mock-events": "2", "x-mock-delay-ms": "200"})
    list(c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    _, resp = _only_exchange(log_flush)
    # The first event (role only, empty content) is followed 200 ms later by the first token.
    assert resp.ttft_ms - resp.ttfb_ms >= 150
    assert resp.ttft_ms < resp.duration_ms


def test_responses_api_cost(client, log_flush):
    client.responses.create(model="gpt-4o-mini", input="hi")
    _, resp = _only_exchange(log_flush)
    assert (resp.input_tokens, resp.output_tokens, resp.cached_tokens, resp.reasoning_tokens) == (8, 4, 0, 0)
    assert resp.cost_usd == _cost(8, 4)


# Usage an upstream should never report: a count that is negative, or past any context window (and past the log's
# 32-bit token columns on PostgreSQL). It made a negative or absurd cost, or a row the database refused.
ABSURD = [({"prompt_tokens": 10**15}, "input_tokens (over 1,000,000,000)"),
          ({"prompt_tokens": -5}, "input_tokens (negative)"),
          ({"completion_tokens": -1}, "output_tokens (negative)")]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("usage, said", ABSURD)
def test_absurd_usage_is_unknown_and_the_exchange_logged_whole(gateway, log_flush, usage, said, stream):
    client = openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0,
                           default_headers={"x-mock-usage": json.dumps(usage)})
    if stream:
        list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True,
                                            stream_options={"include_usage": True}))
    else:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    _, resp = _only_exchange(log_flush)
    assert resp.body and "chatcmpl-mock" in resp.body and resp.model == "gpt-4o-mini-2024-07-18"
    refused = "input_tokens" if "prompt_tokens" in usage else "output_tokens"
    assert getattr(resp, refused) is None  # the other counts stay as reported
    assert resp.cost_usd is None and resp.price_source is None
    assert f"cost unknown: the answer's usage has counts that are not token counts: {said}" in resp.error_message


def test_a_cost_past_the_log_column_is_unknown_with_a_note(gateway, log_flush, tmp_path, settings, admin_client):
    """cost_usd holds under $1,000,000: a dearer exchange (an operator's $2,000 per million tokens, 900 million
    tokens) was refused by PostgreSQL (numeric field overflow), so it was missing from the log."""
    table = tmp_path / "prices.json"
    table.write_text(json.dumps({"openai": {"gpt-4o-mini": {"input": 2000, "output": 1}}}))
    settings.PRICE_TABLE_PATH = str(table)
    client = openai.OpenAI(api_key=KEY, base_url=f"{gateway.url}/v1", max_retries=0,
                           default_headers={"x-mock-usage": json.dumps({"prompt_tokens": 900_000_000})})
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    req, resp = _only_exchange(log_flush)
    assert resp.body and (resp.input_tokens, resp.output_tokens) == (900_000_000, 9)
    assert resp.cost_usd is None and resp.price_source is None
    said = "cost unknown: 1,800,000.00 USD by PRICE_TABLE_PATH is past what the log stores (under 1,000,000 USD)"
    assert said in resp.error_message
    # The exchange's page says why, not that the model has no price.
    html = admin_client.get(f"/admin/logs/request/{req.pk.hex}/change/").content.decode()
    assert said in html and "· cost unknown (see its status)" in html.split("<th>Tokens</th>")[1].split("</tr>")[0]


def test_an_absurd_price_in_the_table_is_skipped_and_the_library_prices(gateway, client, log_flush, tmp_path,
                                                                          settings):
    """A price of 1e30 made pricing raise (Decimal's InvalidOperation): each exchange of the provider was logged
    without its body, usage or cost."""
    table = tmp_path / "prices.json"
    table.write_text('{"openai": {"gpt-4o-mini": {"input": 1e30, "output": 1}}}')
    settings.PRICE_TABLE_PATH = str(table)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    _, resp = _only_exchange(log_flush)
    assert resp.body and (resp.input_tokens, resp.output_tokens) == (12, 9)
    assert resp.cost_usd == _cost(12, 9) and resp.price_source.startswith("genai-prices")
