"""SSE parsing and reassembly of chat, completions and Responses API streams."""

import json

from providers.openai import OpenAI
from wire.jsonutil import json_or_none
from wire.sse import SSEEvent, sse_events

OPENAI = OpenAI()


def _sse(*payloads) -> str:
    return "".join(f"data: {json.dumps(p)}\n\n" for p in payloads) + "data: [DONE]\n\n"


def _events(text: str) -> list:
    """(event name, parsed data) of every event, as the ingest hands them to a provider."""
    return [(e.name, json_or_none(e.data)) for e in sse_events(text)]


def test_parse_handles_crlf_comments_and_multiline_data():
    text = ": keep-alive\r\n\r\nevent: delta\r\ndata: a\r\ndata: b\r\n\r\nid: 7\ndata: c\n\n"
    # The comment-only block is an event too (no fields), so event i matches arrival offset i.
    assert sse_events(text) == [SSEEvent(), SSEEvent("delta", "a\nb"), SSEEvent(None, "c", "7")]


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
    events = _events(text)
    assert len(events) == 7
    result = OPENAI.stream_reassemble(events)
    msg = result["choices"][0]["message"]
    assert msg["content"] == "Hello"
    assert msg["tool_calls"] == [{"id": "call_9", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]
    assert result["choices"][0]["finish_reason"] == "tool_calls"
    usage = OPENAI.usage(result)
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (3, 4, 7)


def test_legacy_completions_text_is_joined():
    text = _sse({"object": "text_completion", "choices": [{"index": 0, "text": "a"}]},
                {"object": "text_completion", "choices": [{"index": 0, "text": "b", "finish_reason": "stop"}]},
                {"object": "text_completion", "choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 2}})
    result = OPENAI.stream_reassemble(_events(text))
    # A text completion, as the same answer unstreamed: its conversation shows the text (no empty message).
    assert result["object"] == "text_completion"
    assert result["choices"] == [{"index": 0, "text": "ab", "finish_reason": "stop"}]
    [turn] = OPENAI.conversation("/v1/completions", {"prompt": "hello"}, result)[-1:]
    assert turn["role"] == "assistant" and turn["parts"][0]["text"] == "ab"
    assert OPENAI.usage(result).output_tokens == 2


def test_groq_reports_a_streams_usage_in_x_groq():
    text = _sse({"object": "chat.completion.chunk", "model": "llama-3.1-8b-instant",
                 "choices": [{"index": 0, "delta": {"content": "hi"}}]},
                {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                 "x_groq": {"id": "req_1", "usage": {"queue_time": 0.01, "prompt_tokens": 11, "completion_tokens": 4,
                                                     "total_tokens": 15}}})
    usage = OPENAI.usage(OPENAI.stream_reassemble(_events(text)))
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (11, 4, 15)


def test_an_error_inside_a_stream_is_kept_with_its_message():
    # OpenRouter: a 200 stream whose provider failed midway; a server's 503 answered as one SSE error event.
    midway = _sse({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "par"}}]},
                  {"object": "chat.completion.chunk", "error": {"code": "server_error", "message": "Provider returned error"},
                   "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]})
    result = OPENAI.stream_reassemble(_events(midway))
    assert OPENAI.error_text(result) == "Provider returned error"
    assert result["choices"][0]["message"]["content"] == "par"
    alone = OPENAI.stream_reassemble(_events(_sse({"error": {"message": "overloaded", "type": "server_error"}})))
    assert OPENAI.error_text(alone) == "overloaded"


def test_responses_stream_keeps_the_final_response_object():
    final = {"id": "resp_1", "output": [{"type": "message", "content": [{"type": "output_text", "text": "hi"}]}],
             "usage": {"input_tokens": 2, "output_tokens": 1, "total_tokens": 3}}
    text = (f"event: response.output_text.delta\ndata: {json.dumps({'type': 'response.output_text.delta', 'delta': 'hi'})}\n\n"
            f"event: response.completed\ndata: {json.dumps({'type': 'response.completed', 'response': final})}\n\n")
    assert OPENAI.stream_reassemble(_events(text)) == final
    assert OPENAI.usage(final).output_tokens == 1


def test_unknown_or_broken_stream_gives_no_result_and_no_error():
    text = "data: {not json\n\ndata"
    assert sse_events(text) == [SSEEvent(None, "{not json"), SSEEvent(None, "")]  # the unterminated tail is kept
    assert OPENAI.stream_reassemble(_events(text)) is None
    assert sse_events("") == [] and OPENAI.stream_reassemble(_events("")) is None


def test_json_or_none_reads_what_python_json_reads():
    big = 2**70
    assert json_or_none('{"a": [1, 2.5, "é"], "b": null}') == {"a": [1, 2.5, "é"], "b": None}
    assert json_or_none(f'{{"n": {big}}}') == {"n": big}  # over 64 bits: json takes over
    nan = json_or_none('{"x": NaN}')["x"]
    assert nan != nan
    assert json_or_none('"\\ud800"') == "\ufffd"  # a lone surrogate, which nothing could write, as U+FFFD
    assert json_or_none("[DONE]") is None and json_or_none("") is None and json_or_none("{") is None


def test_a_streamed_transcription_keeps_its_text_and_usage():
    text = _sse({"type": "transcript.text.delta", "delta": "hel"}, {"type": "transcript.text.delta", "delta": "lo"},
                {"type": "transcript.text.done", "text": "hello",
                 "usage": {"type": "tokens", "input_tokens": 14, "output_tokens": 4, "total_tokens": 18}})
    result = OPENAI.stream_reassemble(_events(text))
    assert result["text"] == "hello"
    usage = OPENAI.usage(result)
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (14, 4, 18)
    assert OPENAI.stream_requested("/v1/audio/transcriptions", {"model": "m", "stream": "true"})  # a form field
    assert not OPENAI.stream_requested("/v1/audio/transcriptions", {"model": "m", "stream": "false"})
