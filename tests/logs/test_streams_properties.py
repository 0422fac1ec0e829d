"""Property tests: the SSE parser and reassembly take any text without raising."""

import json

from hypothesis import given, settings as hsettings, strategies as st

from logs.streams import chat_chunks_reassemble, sse_parse, stream_reassemble, usage_read

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


@hsettings(max_examples=400, deadline=None)
@given(text=st.text(max_size=300))
def test_property_sse_parse_takes_any_text(text):
    events = sse_parse(text)
    assert all(isinstance(e, dict) and set(e) <= {"event", "data", "id", "retry"} for e in events)


@hsettings(max_examples=400, deadline=None)
@given(parts=st.lists(st.tuples(lines, separators), max_size=12))
def test_property_reassembly_never_raises_and_stays_json(parts):
    text = "".join(line + sep for line, sep in parts)
    out = stream_reassemble(text)
    assert out["events"] == len(sse_parse(text))
    json.dumps(out)  # what is stored must be JSON-serialisable
    usage_read(out.get("result"))


@hsettings(max_examples=300, deadline=None)
@given(chunks=st.lists(chunk_like, max_size=6))
def test_property_chat_reassembly_bounded(chunks):
    result = chat_chunks_reassemble(chunks)
    for choice in result["choices"]:
        assert len(choice["message"].get("tool_calls", [])) <= 256  # no huge list from a big index
