"""SSE parsing and reassembly of chat, completions and Responses API streams."""

import json

from logs.streams import sse_parse, stream_reassemble, usage_read


def _sse(*payloads) -> str:
    return "".join(f"data: {json.dumps(p)}\n\n" for p in payloads) + "data: [DONE]\n\n"


def test_parse_handles_crlf_comments_and_multiline_data():
    text = ": keep-alive\r\n\r\nevent: delta\r\ndata: a\r\ndata: b\r\n\r\nid: 7\ndata: c\n\n"
    assert sse_parse(text) == [{"event": "delta", "data": "a\nb"}, {"id": "7", "data": "c"}]


def test_chat_stream_reassembles_content_tools_finish_and_usage():
    base = {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o"}
    text = _sse(
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]},
        {**base, "choices": [{"index": 0, "delta": {"content": "lo"}}]},
        {**base, "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_9", "type": "function", "function": {"name": "f", "arguments": "{\"a\""}}]}}]},
        {**base, "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": ": 1}"}}]}}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {**base, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}},
    )
    out = stream_reassemble(text)
    assert out["events"] == 7
    result = out["result"]
    msg = result["choices"][0]["message"]
    assert msg["content"] == "Hello"
    assert msg["tool_calls"] == [{"id": "call_9", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]
    assert result["choices"][0]["finish_reason"] == "tool_calls"
    assert usage_read(result) == {"input_tokens": 3, "output_tokens": 4, "total_tokens": 7}


def test_legacy_completions_text_is_joined():
    text = _sse({"object": "text_completion", "choices": [{"index": 0, "text": "a"}]},
                {"object": "text_completion", "choices": [{"index": 0, "text": "b", "finish_reason": "stop"}]})
    assert stream_reassemble(text)["result"]["choices"][0]["text"] == "ab"


def test_responses_stream_keeps_the_final_response_object():
    final = {"id": "resp_1", "output": [{"type": "message", "content": [{"type": "output_text", "text": "hi"}]}],
             "usage": {"input_tokens": 2, "output_tokens": 1, "total_tokens": 3}}
    text = (f"event: response.output_text.delta\ndata: {json.dumps({'type': 'response.output_text.delta', 'delta': 'hi'})}\n\n"
            f"event: response.completed\ndata: {json.dumps({'type': 'response.completed', 'response': final})}\n\n")
    assert stream_reassemble(text)["result"] == final
    assert usage_read(final)["output_tokens"] == 1


def test_unknown_or_broken_stream_gives_no_result_and_no_error():
    assert stream_reassemble("data: {not json\n\ndata")["result"] is None
    assert stream_reassemble("")["events"] == 0


def test_json_or_none_reads_what_python_json_reads():
    from logs.streams import json_or_none

    big = 2**70
    assert json_or_none('{"a": [1, 2.5, "é"], "b": null}') == {"a": [1, 2.5, "é"], "b": None}
    assert json_or_none(f'{{"n": {big}}}') == {"n": big}  # over 64 bits: json takes over
    nan = json_or_none('{"x": NaN}')["x"]
    assert nan != nan
    assert json_or_none('"\\ud800"') == "\ud800"
    assert json_or_none("[DONE]") is None and json_or_none("") is None and json_or_none("{") is None
