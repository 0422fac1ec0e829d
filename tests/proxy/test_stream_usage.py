"""STREAM_USAGE=inject: the request rewrite and the usage-chunk filter."""

import json

import pytest

from proxy.stream_usage import UsageChunkFilter, body_usage_inject, usage_inject_wanted

CHUNK = 'data: {"id":"c","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}\n\n'
USAGE = 'data: {"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}\n\n'
DONE = "data: [DONE]\n\n"


def test_wanted_only_when_on_and_for_chunked_endpoints(settings):
    assert not usage_inject_wanted("POST", "/v1/chat/completions")
    settings.STREAM_USAGE = "inject"
    assert usage_inject_wanted("POST", "/v1/chat/completions") and usage_inject_wanted("POST", "/v1/completions")
    assert not usage_inject_wanted("POST", "/v1/responses") and not usage_inject_wanted("GET", "/v1/chat/completions")


@pytest.mark.parametrize("body, expected", [
    ({"model": "m", "stream": True}, {"include_usage": True}),
    ({"model": "m", "stream": True, "stream_options": {"x": 1}}, {"x": 1, "include_usage": True}),
    ({"model": "m", "stream": True, "stream_options": {"include_usage": False}}, {"include_usage": True}),
])
def test_body_rewritten(body, expected):
    out = json.loads(body_usage_inject(json.dumps(body).encode()))
    assert out["stream_options"] == expected and out["model"] == "m"


@pytest.mark.parametrize("body", [b'{"model": "m"}', b'{"stream": true, "stream_options": {"include_usage": true}}',
                                  b"not json", b"[1]", b'{"stream": true, "stream_options": "x"}'])
def test_body_left_alone(body):
    assert body_usage_inject(body) is None


def _run(pieces: list[bytes]) -> bytes:
    f = UsageChunkFilter()
    return b"".join(f.feed(p) for p in pieces) + f.flush()


def test_filter_drops_only_the_usage_chunk():
    raw = (CHUNK + CHUNK + USAGE + DONE).encode()
    assert _run([raw]) == (CHUNK + CHUNK + DONE).encode()


def test_filter_works_across_any_chunk_boundary():
    raw = (CHUNK + USAGE + DONE).encode()
    for cut in range(1, len(raw)):
        assert _run([raw[:cut], raw[cut:]]) == (CHUNK + DONE).encode(), cut
    assert _run([bytes([b]) for b in raw]) == (CHUNK + DONE).encode()


def test_filter_never_holds_a_complete_event_back():
    f = UsageChunkFilter()
    assert f.feed(CHUNK.encode()) == CHUNK.encode()
    assert f.feed(b'data: {"partial') == b""


def test_filter_passes_crlf_framing_through_untouched():
    raw = CHUNK.replace("\n", "\r\n").encode()
    assert _run([raw]) == raw
