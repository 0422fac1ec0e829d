"""STREAM_USAGE=inject: the request rewrite (provider.usage_inject, StreamUsageStep) and the usage-event filter."""

import asyncio
import gzip
import json
from types import SimpleNamespace

import pytest

import proxy.exchange
from providers import registry
from proxy.exchange import Exchange
from proxy.paths import Route
from proxy.request_body import BodySpool, body_reading
from proxy.steps import StreamUsageStep, TagsStep, relay_filter, steps_active, steps_run, usage_body as _usage_body
from wire.sse import EventFilter

CHUNK = 'data: {"id":"c","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}\n\n'
USAGE = 'data: {"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}\n\n'
DONE = "data: [DONE]\n\n"

OPENAI = registry().get("openai")


@pytest.fixture(autouse=True)
def inflight_clear():
    """Exchanges made by a test (never logged) must not leak into the next one."""
    yield
    proxy.exchange._INFLIGHT.clear()


def _exchange(body: bytes, *, method: str = "POST", path: str = "/v1/chat/completions",
              headers: list[tuple[str, str]] | None = None) -> Exchange:
    """An exchange for a request as the ASGI adapter hands it over (body read into its spool)."""
    spool = BodySpool("test.request")
    spool.write(body)
    request = SimpleNamespace(method=method, META={"QUERY_STRING": "", "CONTENT_TYPE": "application/json",
                                                   "REMOTE_ADDR": "127.0.0.1"},
                              scope={"headers": []}, gateway_body=spool, gateway_refusal=None)
    provider, upstream_path = registry().match(path)
    x = Exchange(request, Route(provider, path, upstream_path, "http://upstream.test"))
    x.forward_headers = list(headers or [])
    return x


def usage_body(provider, method: str, path: str, body: bytes) -> bytes | None:
    """The step's rewrite of a body, read as the steps read it (Exchange.body_reading)."""
    return _usage_body(provider, method, path, body_reading([], body, "application/json"))


def test_wanted_only_when_on_and_for_chunked_endpoints(settings):
    body = b'{"model": "m", "stream": true}'
    # Always on: the tag-header step (one look at the headers when none is there) and the response
    # cache, which any request may ask for (X-Gateway-Cache).
    assert not StreamUsageStep().enabled() and [s.name for s in steps_active()] == ["tags", "cache"]
    settings.STREAM_USAGE = "inject"
    assert StreamUsageStep().enabled() and [s.name for s in steps_active()] == ["tags", "cache", "stream_usage"]
    assert usage_body(OPENAI, "POST", "/v1/chat/completions", body) is not None
    assert usage_body(OPENAI, "POST", "/v1/completions", body) is not None
    assert usage_body(OPENAI, "POST", "/v1/responses", body) is None
    assert usage_body(OPENAI, "GET", "/v1/chat/completions", body) is None


@pytest.mark.parametrize("body, expected", [
    ({"model": "m", "stream": True}, {"include_usage": True}),
    ({"model": "m", "stream": True, "stream_options": {"x": 1}}, {"x": 1, "include_usage": True}),
    ({"model": "m", "stream": True, "stream_options": {"include_usage": False}}, {"include_usage": True}),
])
def test_body_rewritten(body, expected):
    out = json.loads(usage_body(OPENAI, "POST", "/v1/chat/completions", json.dumps(body).encode()))
    assert out["stream_options"] == expected and out["model"] == "m"


def test_body_rewritten_keeps_every_digit_of_its_numbers():
    """orjson reads an integer past 64 bits as a float: a seed of 2**64 went upstream as 1.8446744073709552e+19."""
    body = b'{"model": "m", "stream": true, "seed": 18446744073709551616, "n": -9223372036854775809, "t": 0.25}'
    out = usage_body(OPENAI, "POST", "/v1/chat/completions", body)
    assert b'"seed": 18446744073709551616' in out and b'"n": -9223372036854775809' in out
    assert json.loads(out)["stream_options"] == {"include_usage": True} and json.loads(out)["t"] == 0.25


@pytest.mark.parametrize("body", [b'{"model": "m"}', b'{"stream": true, "stream_options": {"include_usage": true}}',
                                  b"not json", b"[1]", b'{"stream": true, "stream_options": "x"}'])
def test_body_left_alone(body):
    assert usage_body(OPENAI, "POST", "/v1/chat/completions", body) is None


def test_step_forwards_the_rewritten_body_uncompressed_and_filters_the_stream(settings):
    settings.STREAM_USAGE = "inject"
    body = b'{"model": "m", "stream": true}'
    x = _exchange(body, headers=[("Authorization", "Bearer sk-x"), ("accept-encoding", "gzip, br")])
    assert asyncio.run(steps_run(x, steps_active())) is None  # the step never answers itself
    assert x.usage_injected and json.loads(x.forward_body)["stream_options"] == {"include_usage": True}
    assert x.forward_headers == [("Authorization", "Bearer sk-x"), ("Accept-Encoding", "identity")]
    assert x.body.in_memory() == body  # the log keeps what the client sent
    assert isinstance(relay_filter(x, steps_active(), True), EventFilter)
    assert relay_filter(x, steps_active(), False) is None  # only event streams are filtered


def test_a_stream_field_in_another_case_is_forwarded_as_it_came_without_a_counting_key(settings):
    """STREAM_USAGE=inject alone: the provider module cannot tell whether it streams; nothing is refused, the log
    says why the usage was not asked for (a key counting spend or tokens is refused it: test_gateway_keys)."""
    settings.STREAM_USAGE = "inject"
    x = _exchange(b'{"model": "m", "Stream": true}', headers=[("accept-encoding", "gzip")])
    assert asyncio.run(steps_run(x, steps_active())) is None
    assert not x.usage_injected and x.forward_body is None
    assert x.decisions == [{"step": "stream_usage", "decision": "not asked for usage: this request names 'Stream' (a "
                                                                 "server matching field names in any case may read it "
                                                                 "as 'stream' or 'stream_options', and stream without "
                                                                 "its usage)"}]


@pytest.mark.parametrize("body, path", [
    (b'{"model": "m", "stream": true, "stream_options": {"include_usage": true}}', "/v1/chat/completions"),
    (b'{"model": "m", "stream": true}', "/v1/responses"),
])
def test_step_leaves_other_requests_alone(settings, body, path):
    settings.STREAM_USAGE = "inject"
    x = _exchange(body, path=path, headers=[("accept-encoding", "gzip")])
    assert asyncio.run(steps_run(x, steps_active())) is None
    assert not x.usage_injected and x.forward_body is None and x.forward_headers == [("accept-encoding", "gzip")]
    assert relay_filter(x, steps_active(), True) is None


def test_the_usage_option_goes_into_the_body_a_hook_or_the_operator_changed(settings):
    # A hook (the PII mask, the model policy's max_tokens ceiling) or the hold queue's edit set the body
    # that goes upstream; the step rewrote the client's own body instead, and sent that: a streamed
    # request went upstream unmasked, over the ceiling, or without the operator's edit.
    settings.STREAM_USAGE = "inject"
    x = _exchange(b'{"model": "m", "stream": true, "max_tokens": 5000, "messages": "mail a@b.example"}')
    x.forward_body = b'{"model": "m", "stream": true, "max_tokens": 50, "messages": "mail [EMAIL_1]"}'
    assert asyncio.run(steps_run(x, steps_active())) is None
    sent = json.loads(x.forward_body)
    assert sent == {"model": "m", "stream": True, "max_tokens": 50, "messages": "mail [EMAIL_1]",
                    "stream_options": {"include_usage": True}}


def test_a_compressed_streamed_body_is_asked_for_its_usage_and_sent_plain(settings):
    settings.STREAM_USAGE = "inject"
    body = gzip.compress(b'{"model": "m", "stream": true}')
    x = _exchange(body, headers=[("Content-Encoding", "gzip"), ("Accept-Encoding", "gzip")])
    assert asyncio.run(steps_run(x, steps_active())) is None
    assert x.usage_injected and json.loads(x.forward_body)["stream_options"] == {"include_usage": True}
    assert x.forward_headers == [("Accept-Encoding", "identity")]  # the body is no longer gzip
    assert x.body.in_memory() == body  # the log keeps what the client sent


def test_a_key_that_counts_usage_asks_every_stream_for_it(settings, monkeypatch):
    # With STREAM_USAGE off, a key with a budget or a token limit counts a stream only if the stream reports
    # its usage: a client leaving include_usage out spent nothing.
    monkeypatch.setattr("proxy.steps.keys_exist_known", lambda: True)
    x = _exchange(b'{"model": "m", "stream": true}')
    assert StreamUsageStep().enabled()
    asyncio.run(StreamUsageStep().request(x))
    assert not x.usage_injected and x.forward_body is None  # a key that counts nothing: as sent
    x.usage_counted = True
    asyncio.run(StreamUsageStep().request(x))
    assert x.usage_injected and json.loads(x.forward_body)["stream_options"] == {"include_usage": True}
    # The path as the upstream routes it: a letter percent-encoded is still chat completions.
    x = _exchange(b'{"model": "m", "stream": true}', path="/v1/chat/completion%73")
    x.usage_counted = True
    asyncio.run(StreamUsageStep().request(x))
    assert x.usage_injected


def _run(pieces: list[bytes]) -> bytes:
    f = EventFilter(OPENAI.injected_event)
    return b"".join(f(p) for p in pieces) + f.rest()


def test_filter_drops_only_the_usage_chunk():
    raw = (CHUNK + CHUNK + USAGE + DONE).encode()
    assert _run([raw]) == (CHUNK + CHUNK + DONE).encode()


def test_filter_works_across_any_chunk_boundary():
    raw = (CHUNK + USAGE + DONE).encode()
    for cut in range(1, len(raw)):
        assert _run([raw[:cut], raw[cut:]]) == (CHUNK + DONE).encode(), cut
    assert _run([bytes([b]) for b in raw]) == (CHUNK + DONE).encode()


def test_filter_never_holds_a_complete_event_back():
    f = EventFilter(OPENAI.injected_event)
    assert f(CHUNK.encode()) == CHUNK.encode()
    assert f(b'data: {"partial') == b""


def test_filter_passes_crlf_framing_through_untouched():
    raw = CHUNK.replace("\n", "\r\n").encode()
    assert _run([raw]) == raw


def test_tags_step_removes_the_gateway_tag_headers_and_says_so():
    x = _exchange(b"{}", headers=[("authorization", "Bearer k"), ("x-gateway-user", "u"),
                                  ("X-Gateway-Meta-Team", "t"), ("x-gateway-metadata", "kept: not a tag header")])
    assert asyncio.run(TagsStep().request(x)) is None
    assert x.forward_headers == [("authorization", "Bearer k"), ("x-gateway-metadata", "kept: not a tag header")]
    assert x.request_changed
    assert x.decisions == [{"step": "tags", "decision": "kept the gateway's tag headers from the upstream",
                            "changed": ["removed header x-gateway-user", "removed header X-Gateway-Meta-Team"]}]


def test_tags_step_leaves_untagged_requests_alone():
    x = _exchange(b"{}", headers=[("authorization", "Bearer k")])
    assert asyncio.run(TagsStep().request(x)) is None
    assert not x.request_changed and x.decisions == []


def test_a_body_with_an_escaped_lone_surrogate_still_gets_its_usage_option():
    # Valid JSON the upstream takes; re-encoded as UTF-8 it raised, and the step answered 500.
    body = b'{"model": "m", "stream": true, "messages": [{"role": "user", "content": "x \\ud800 y"}]}'
    injected = usage_body(OPENAI, "POST", "/v1/chat/completions", body)
    assert json.loads(injected)["stream_options"] == {"include_usage": True}
    assert b"\\ud800" in injected  # escaped as it came


def test_hook_and_page_handle_an_escaped_lone_surrogate():
    from providers.turns import args_text
    from proxy.hook_exchange import HookExchange

    assert "\\ud800" in args_text('{"q": "\\ud800"}')  # shown as its escape; writable as UTF-8
    args_text('{"q": "\\ud800"}').encode("utf-8")
    hook = HookExchange.__new__(HookExchange)
    hook.headers = [("Content-Type", "application/json")]  # the json setter labels the body it writes
    hook.json = {"content": "mail \ud800"}  # what a hook assigns after reading such a body
    assert json.loads(hook.body) == {"content": "mail \ud800"}
