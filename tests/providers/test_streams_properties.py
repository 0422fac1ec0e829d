"""Property tests: the SSE parser and reassembly take any text without raising."""

import json

from hypothesis import given, settings as hsettings, strategies as st

from providers.openai import OpenAI, chat_chunks_reassemble
from wire.jsonutil import json_or_none
from wire.sse import SSEEvent, SSEFramer, sse_events

OPENAI = OpenAI()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
# Chunk-shaped JSON with every field possibly of the wrong type.
chunk_like = st.fixed_dictionaries({}, optional={
    "object": json_values | st.just("chat.completion.chunk"),
    "type": json_values | st.sampled_from(["response.completed", "response.output_text.delta"]),
    "response": json_values,
    "usage": json_values,
    "choices": st.lists(st.fixed_dictionaries({}, optional={
        "index": json_values | st.integers(-5, 5) | st.just(10**15),
        "delta": json_values | st.fixed_dictionaries({}, optional={
            "content": json_values, "role": json_values, "refusal": json_values,
            "tool_calls": st.lists(json_values | st.fixed_dictionaries({}, optional={
                "index": json_values | st.just(10**12), "id": json_values, "function": json_values}),
                max_size=3)}),
        "text": json_values, "finish_reason": json_values}) | json_values, max_size=3) | json_values,
})
lines = st.one_of(
    st.text(max_size=40),
    chunk_like.map(lambda d: "data: " + json.dumps(d)),
    st.sampled_from(["data: [DONE]", "event: response.completed", ":comment", "id: 1", "retry: x", "data:"]),
)
separators = st.sampled_from(["\n", "\n\n", "\r\n", "\r\n\r\n", "\r", ""])


@hsettings(deadline=None)
@given(text=st.text(max_size=300))
def test_property_sse_parse_takes_any_text(text):
    events = sse_events(text)
    assert all(isinstance(e, SSEEvent) for e in events)
    assert all(f is None or isinstance(f, str) for e in events for f in (e.name, e.data, e.id))


@hsettings(deadline=None)
@given(parts=st.lists(st.tuples(lines, separators), max_size=12))
def test_property_reassembly_never_raises_and_stays_json(parts):
    text = "".join(line + sep for line, sep in parts)
    parsed = sse_events(text)
    raw = text.encode("utf-8", "surrogatepass")
    ends = SSEFramer().ends(raw)
    # One event per framed end (what the capture stamps an offset for), plus a cut-off tail.
    assert len(parsed) == len(ends) + (1 if raw[ends[-1] if ends else 0:].strip() else 0)
    events = [(e.name, json_or_none(e.data)) for e in parsed]
    result = OPENAI.stream_reassemble(events)
    json.dumps(result)  # what is stored must be JSON-serialisable
    OPENAI.usage(result)
    for name, payload in events:
        OPENAI.event_has_content(name, payload)


@hsettings(deadline=None)
@given(chunks=st.lists(chunk_like, max_size=6))
def test_property_chat_reassembly_bounded(chunks):
    result = chat_chunks_reassemble(chunks)
    for choice in result["choices"]:  # a legacy completion's choice (text alone) has no message
        assert len((choice.get("message") or {}).get("tool_calls", [])) <= 256  # no huge list from a big index
